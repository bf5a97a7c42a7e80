"""Issue 16.8 and 16.9: `manage.py check` names typos inside an account and a missing django_rq; a short phone is
called short, not "N digits after the country code"."""

import copy

import pytest
from django.conf import settings
from django.test import override_settings

from django_points_earn.checks import check_settings
from django_points_earn.phones import InvalidPhone, normalize_ksa_mobile


def messages(accounts=None, **overrides):
    conf = copy.deepcopy(settings.POINTS_EARN)
    if accounts is not None:
        conf["ACCOUNTS"] = accounts
    with override_settings(POINTS_EARN=conf, **overrides):
        return [(m.id, m.msg, m.hint or "") for m in check_settings()]


def test_a_typo_inside_an_account_is_named_with_the_close_match():
    found = messages({"main": {"PROVIDER": "points", "APIKEY": "k"}})
    missing = [m for m in found if m[0] == "points_earn.E004"]
    assert missing and 'did you mean "API_KEY"' in missing[0][2] and '"APIKEY"' in missing[0][2]
    assert (
        "points_earn.W003",
        'POINTS_EARN["ACCOUNTS"]["main"] has an unknown key "APIKEY": did you mean "API_KEY"?',
    ) in [(i, msg) for i, msg, _ in found]


def test_unknown_keys_inside_an_account_are_flagged():
    found = messages(
        {
            "main": {"PROVIDER": "points", "API_KEY": "k", "WEBHOOK_SECRET": "s", "BASE_URLL": "https://x", "FOO": 1},
            "boutique": {
                **settings.POINTS_EARN["ACCOUNTS"].get("boutique", {}),
                "PROVIDER": "fabric",
                "BASE_URL": "https://t-loyalty.fabric.zone/api",
                "TOKEN_URL": "https://t.login.fabric.inc/oauth2/x/v1/token",
                "CLIENT_ID": "c",
                "CLIENT_SECRET": "s",
                "ENTITY_REFERENCE": "Store",
                "TRANSACTION_TYPE": "PURCHASE",
                "MISSING_MEMBERS": "skipped",
            },
        }
    )
    warnings = {msg for i, msg, _ in found if i == "points_earn.W003"}
    assert warnings == {
        'POINTS_EARN["ACCOUNTS"]["main"] has an unknown key "BASE_URLL": did you mean "BASE_URL"?',
        'POINTS_EARN["ACCOUNTS"]["main"] has an unknown key "FOO".',
        'POINTS_EARN["ACCOUNTS"]["boutique"] has an unknown key "MISSING_MEMBERS": did you mean "MISSING_MEMBER"?',
    }


def test_the_known_keys_of_both_platforms_pass():
    assert not [m for m in messages() if m[0] == "points_earn.W003"]


def test_django_rq_missing_from_installed_apps_fails_check():
    apps = [a for a in settings.INSTALLED_APPS if a != "django_rq"]
    with override_settings(INSTALLED_APPS=apps):
        found = [(m.id, m.msg, m.level) for m in check_settings()]
    assert [f for f in found if f[0] == "points_earn.E010"]
    assert "django_rq" in found[[f[0] for f in found].index("points_earn.E010")][1]


@pytest.mark.parametrize("raw", ["12345", "05512", "+966 5512", "9665512"])
def test_a_short_number_is_called_short(raw):
    with pytest.raises(InvalidPhone) as caught:
        normalize_ksa_mobile(raw)
    message = str(caught.value)
    assert "after the country code" not in message
    assert "too short" in message and "a Saudi mobile has 9 digits" in message


@pytest.mark.parametrize("raw", ["0551234567890", "5512345678"])
def test_a_long_number_is_called_long(raw):
    with pytest.raises(InvalidPhone, match="too long"):
        normalize_ksa_mobile(raw)
