"""`manage.py check` names the exact key that is missing or wrong."""

import copy

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from django_points_earn.checks import check_settings
from tests.test_fabric_client import fabric_settings


def points_earn(**changes):
    conf = copy.deepcopy(settings.POINTS_EARN)
    conf.update(changes)
    return conf


def ids(conf=None, **overrides):
    with override_settings(POINTS_EARN=conf, **overrides) if conf is not None else override_settings(**overrides):
        return {(m.id, m.msg) for m in check_settings()}


def test_the_test_settings_are_clean():
    assert check_settings() == []


def test_missing_setting():
    with override_settings():
        del settings.POINTS_EARN
        assert [m.id for m in check_settings()] == ["points_earn.E001"]


def test_missing_accounts():
    assert ("points_earn.E002", 'POINTS_EARN["ACCOUNTS"] is missing or empty.') in ids(points_earn(ACCOUNTS={}))


def test_unknown_provider():
    found = ids(points_earn(ACCOUNTS={"b": {"PROVIDER": "pointz", "API_KEY": "k"}}))
    assert (
        "points_earn.E003",
        'POINTS_EARN["ACCOUNTS"]["b"]["PROVIDER"] is \'pointz\'; expected one of points, fabric.',
    ) in (found)


def test_missing_api_key():
    found = ids(points_earn(ACCOUNTS={"riyadh": {"PROVIDER": "points", "API_KEY": ""}}))
    assert ("points_earn.E004", 'POINTS_EARN["ACCOUNTS"]["riyadh"]["API_KEY"] is missing or empty.') in found


@pytest.mark.parametrize(
    ("path", "words"),
    [
        (None, 'POINTS_EARN["ORDER_ADAPTER"] is missing.'),
        ("shop.nope.Adapter", "cannot be imported"),
        ("tests.shop.models.Order", "is not an OrderAdapter subclass"),
    ],
)
def test_bad_adapter_path(path, words):
    found = ids(points_earn(ORDER_ADAPTER=path))
    assert any(i == "points_earn.E005" and words in msg for i, msg in found)


def test_bad_signal_path():
    found = ids(points_earn(ORDER_PAID_SIGNAL="shop.signals.nope"))
    assert any(i == "points_earn.E006" for i, _ in found)


def test_queue_must_exist():
    assert any(i == "points_earn.E007" for i, _ in ids(points_earn(QUEUE="loyalty")))


def test_lease_must_outlast_a_few_missed_renewals():
    """The lease is renewed while a call is in flight (it need not outlast the HTTP timeouts), but not too short."""
    found = ids(points_earn(LEASE_SECONDS=2, HTTP_TIMEOUT=(3, 10)))
    assert any(i == "points_earn.E008" and "must be at least 4s" in msg for i, msg in found)
    assert not any(i == "points_earn.E008" for i, _ in ids(points_earn(LEASE_SECONDS=8, HTTP_TIMEOUT=(3, 10))))


@pytest.mark.parametrize(
    "drain, words",
    [
        ({"ACCOUNTS_PER_PROCESS": 0}, '"ACCOUNTS_PER_PROCESS"] = 0 must be a whole number from 1 up'),
        ({"ACCOUNTS_PER_PROCESS": "32"}, "must be a whole number from 1 up"),
        ({"ACCOUNTS_PER_PROCESS": 2.5}, "must be a whole number from 1 up"),
        ({"TURN_SECONDS": 0}, '"TURN_SECONDS"] = 0 must be a number of seconds above 0'),
        ({"TURN_SECONDS": "soon"}, "must be a number of seconds above 0"),
        ("fast", 'POINTS_EARN["DRAIN"] must be a dict'),
    ],
)
def test_how_many_accounts_a_worker_serves_is_checked(drain, words):
    found = ids(points_earn(DRAIN=drain))
    assert any(i == "points_earn.E015" and words in msg for i, msg in found), found


def test_sensible_drain_settings_pass():
    drain = {"ACCOUNTS_PER_PROCESS": 1, "TURN_SECONDS": 0.5, "MAX_SECONDS": 30}
    assert not any(i == "points_earn.E015" for i, _ in ids(points_earn(DRAIN=drain)))


def test_plain_http_outside_debug_warns():
    accounts = {"main": {"PROVIDER": "points", "API_KEY": "k", "BASE_URL": "http://points.example/api/v1"}}
    assert any(i == "points_earn.W001" for i, _ in ids(points_earn(ACCOUNTS=accounts), DEBUG=False))
    assert not any(i == "points_earn.W001" for i, _ in ids(points_earn(ACCOUNTS=accounts), DEBUG=True))


@pytest.mark.django_db  # Django 6 also runs database checks in `check`
def test_manage_py_check_fails_loudly():
    with (
        override_settings(POINTS_EARN=points_earn(ORDER_ADAPTER=None)),
        pytest.raises(SystemCheckError, match="ORDER_ADAPTER"),
    ):
        call_command("check")


# -- fabric's account keys and choices ----------------------------------------------------------------------------
def check_ids(**options):
    with override_settings(POINTS_EARN=fabric_settings(**options)):
        return {(m.id, m.msg) for m in check_settings()}


def test_missing_fabric_settings_are_named():
    found = check_ids(TOKEN_URL="", CLIENT_SECRET=None, ENTITY_REFERENCE="")
    for key in ("TOKEN_URL", "CLIENT_SECRET", "ENTITY_REFERENCE"):
        assert ("points_earn.E004", f'POINTS_EARN["ACCOUNTS"]["fabric"]["{key}"] is missing or empty.') in found


def test_bad_fabric_choices_are_named():
    found = check_ids(GRANT_STYLE="header", DISCOUNT_VALUE_AS="float", MISSING_MEMBER="ignore", SHIPPING="free")
    messages = {msg for i, msg in found if i == "points_earn.E009"}
    assert 'POINTS_EARN["ACCOUNTS"]["fabric"]["GRANT_STYLE"] is \'header\'; expected one of basic, form, json.' in (
        messages
    )
    assert len(messages) == 4


def test_reverse_identities_that_fabric_would_refuse_are_named_at_check_time():
    """Issue 12 item 9: /v2/earn/reverse takes 3 to 15 characters; they were silently cut to 15."""
    path = 'POINTS_EARN["ACCOUNTS"]["fabric"]'
    found = check_ids(ENTITY_REFERENCE="Company LIBERTY CENTER")
    assert (
        "points_earn.E012",
        f"{path}[\"ENTITY_REFERENCE\"] is 'Company LIBERTY CENTER' (22 characters) and is also the reversal's "
        "entityReference, where fabric's /v2/earn/reverse takes 3 to 15: set "
        f'{path}["REVERSE_ENTITY_REFERENCE"] to the entity fabric uses for returns.',
    ) in found
    assert not [
        i
        for i, _ in check_ids(ENTITY_REFERENCE="Company LIBERTY CENTER", REVERSE_ENTITY_REFERENCE="LIBERTY")
        if i == "points_earn.E012"
    ]
    for key, value in (("REVERSE_ENTITY_REFERENCE", "LI"), ("REVERSE_TRANSACTION_TYPE", "RETURN-FROM-WEBSHOP")):
        messages = [m for i, m in check_ids(**{key: value}) if i == "points_earn.E012"]
        assert messages == [
            f'{path}["{key}"] is {value!r} ({len(value)} characters); fabric\'s /v2/earn/reverse takes 3 to 15.'
        ]
    assert not [i for i, _ in check_ids() if i == "points_earn.E012"]  # the test account is fine


def test_plain_http_token_url_warns():
    found = check_ids(TOKEN_URL="http://login.fabric.test/token")
    assert any(i == "points_earn.W001" and "the client secret would travel unencrypted" in m for i, m in found)
