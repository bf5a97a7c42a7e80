"""A third platform, defined only under tests/third_platform/ and registered from a settings override, goes the
whole way through the package unchanged: it earns, retries after a 5xx, is refunded, has its own system checks,
shows in the admin (its label in the platform filter) and in ``points_reconcile`` (docs/adding-platforms.md)."""

import ast
import json
from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
import responses as responses_lib
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from django_points_earn import providers
from django_points_earn.conf import get_settings
from django_points_earn.models import EarningRecord, ReversalStatus, Status
from django_points_earn.signals import order_refunded
from tests.admin_helpers import CHANGELIST, page
from tests.conftest import settle
from tests.shop.models import Order
from tests.third_platform.backend import StampsBackend
from tests.third_platform.fake import StampsFake, mount

pytestmark = pytest.mark.django_db(transaction=True)

STAMPS_URL = "https://api.stamps.test/v1"
STAMPS_TOKEN = "test-stamps-token-9Lm3"
BACKEND = "tests.third_platform.backend.StampsBackend"


def with_stamps(**account):
    conf = {**settings.POINTS_EARN, "PLATFORMS": {"stamps": BACKEND}}
    conf["ACCOUNTS"] = {**conf["ACCOUNTS"], "stamps": {"PROVIDER": "stamps", "TOKEN": STAMPS_TOKEN, **account}}
    return override_settings(POINTS_EARN=conf)


@pytest.fixture
def stamps():
    fake = StampsFake(token=STAMPS_TOKEN)
    with with_stamps(), responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        mount(rsps, fake, STAMPS_URL)
        yield fake


def test_it_earns_once_with_the_platform_ids(place_order, stamps):
    place_order("SO-S1", account="stamps")  # 2 x 18.50
    settle()
    record = EarningRecord.objects.get()
    assert (record.provider, record.status) == ("stamps", Status.AWARDED)
    earn = stamps.by_reference("SO-S1")
    assert (record.remote_id, record.points, record.remote_status) == (earn["id"], 37, "earned")
    assert record.payload == {"reference": "SO-S1", "phone": "0512345678", "amount": 37.0, "channel": "web"}
    attempt = record.attempt_set.get()
    assert (attempt.outcome, attempt.http_status) == ("awarded", 201)
    assert STAMPS_TOKEN not in json.dumps(attempt.request_body) + attempt.response_body  # a declared secret


def test_it_retries_after_a_5xx_and_looks_before_sending_again(place_order, stamps):
    stamps.fail_next(503)
    place_order("SO-S2", account="stamps")
    settle()
    record = EarningRecord.objects.get()
    assert record.status == Status.AWARDED
    assert list(record.attempt_set.values_list("outcome", flat=True)) == ["unavailable", "awarded"]
    assert stamps.calls == [("POST", "earns"), ("GET", "earns"), ("POST", "earns")]
    assert len(stamps.earns) == 1


def test_it_is_refunded_in_part_then_in_full(place_order, stamps):
    order = place_order("SO-S3", account="stamps", lines=[("Dates", "50.00", 2)])
    settle()
    order_refunded.send(sender=Order, order=order, amount=Decimal("30"), reason="one box back", refund_id="R-1")
    settle()
    record = EarningRecord.objects.get()
    assert record.status == Status.PARTIALLY_REVERSED
    assert stamps.by_reference("SO-S3")["reversed_points"] == 30
    order_refunded.send(sender=Order, order=order, amount=None, reason="the rest", refund_id="R-2")
    settle()
    record.refresh_from_db()
    assert record.status == Status.REVERSED
    assert set(record.reversal_set.values_list("status", flat=True)) == {ReversalStatus.REVERSED}
    earn = stamps.by_reference("SO-S3")
    assert (earn["state"], earn["reversed_points"], earn["reversals"]) == ("reversed", 100, ["R-1", "R-2"])


def test_it_shows_in_the_admin_list_its_filter_and_its_page(place_order, stamps, admin_client):
    place_order("SO-S4", account="stamps")
    settle()
    response = admin_client.get(CHANGELIST + "?platform=stamps")
    assert response.status_code == 200
    assert [r.order_number for r in response.context["cl"].result_list] == ["SO-S4"]
    platform_filter = next(
        f for f in response.context["cl"].filter_specs if getattr(f, "parameter_name", "") == "platform"
    )
    assert ("stamps", "Stamps Club") in platform_filter.lookup_choices
    assert [r.order_number for r in admin_client.get(CHANGELIST + "?platform=points").context["cl"].result_list] == []
    assert "Stamps Club" in admin_client.get(page(EarningRecord.objects.get(order_number="SO-S4"))).content.decode()


def test_it_shows_in_points_reconcile(place_order, stamps):
    place_order("SO-S5", account="stamps")
    place_order("SO-S6", account="stamps")
    settle()
    stamps.reverse_in_dashboard(stamps.by_reference("SO-S6")["id"])
    out = StringIO()
    with pytest.raises(SystemExit) as exit_code:
        call_command("points_reconcile", "--verify-remote", stdout=out, stderr=out)
    assert exit_code.value.code == 1  # a drift needs a human
    text = out.getvalue()
    assert "Remote verification: 2 checked, 1 agree, 1 differ" in text
    assert "stamps/SO-S6: " in text and "reversed" in text
    assert EarningRecord.objects.get(order_number="SO-S6").status == Status.AWARDED  # reported, never fixed


def messages_for(account: str) -> list[tuple[str, str]]:
    return [m for m in all_messages() if f'["{account}"]' in m[1]]


def all_messages() -> list[tuple[str, str]]:
    from django_points_earn.checks import check_settings

    return [(m.id, m.msg) for m in check_settings()]


def test_its_own_keys_and_check_run_in_manage_py_check():
    with with_stamps(TOKEN="", CHANEL="web", CHANNEL="post", BASE_URL="http://api.stamps.test/v1"):
        found = messages_for("stamps")
    path = 'POINTS_EARN["ACCOUNTS"]["stamps"]'
    assert ("points_earn.E004", f'{path}["TOKEN"] is missing or empty.') in found
    assert ("points_earn.W003", f'{path} has an unknown key "CHANEL": did you mean "CHANNEL"?') in found
    assert ("stamps.E001", f'{path}["CHANNEL"] must be web or store.') in found
    assert (
        "points_earn.W001",
        f'{path}["BASE_URL"] uses plain http:// outside DEBUG: the token would travel unencrypted.',
    ) in found


def test_an_account_of_an_unregistered_platform_is_named_not_a_key_error():
    conf = {**settings.POINTS_EARN, "ACCOUNTS": {"x": {"PROVIDER": "stamps", "TOKEN": STAMPS_TOKEN}}}
    with override_settings(POINTS_EARN=conf):
        assert (
            "points_earn.E003",
            'POINTS_EARN["ACCOUNTS"]["x"]["PROVIDER"] is \'stamps\'; expected one of points, fabric.',
        ) in messages_for("x")


def test_a_platform_path_that_cannot_be_imported_is_named():
    conf = {**settings.POINTS_EARN, "PLATFORMS": {"stamps": "tests.third_platform.backend.Nope"}}
    with override_settings(POINTS_EARN=conf):
        found = [m for m in all_messages() if m[0] == "points_earn.E003"]
    assert len(found) == 1  # once, not once per account
    assert found[0][1].startswith(
        'POINTS_EARN["PLATFORMS"]["stamps"] = \'tests.third_platform.backend.Nope\' cannot be imported'
    )


def test_register_from_an_app_config_works_like_the_setting():
    conf = {**settings.POINTS_EARN, "ACCOUNTS": {"s": {"PROVIDER": "stamps", "TOKEN": STAMPS_TOKEN}}}
    providers.register("stamps", StampsBackend)
    try:
        with override_settings(POINTS_EARN=conf):
            assert isinstance(providers.get_backend(get_settings().account("s")), StampsBackend)
            assert messages_for("s") == []
            assert get_settings().account("s").secrets == {"TOKEN": STAMPS_TOKEN}  # never among the options
    finally:
        providers.unregister("stamps")
    assert providers.platform("stamps") is None


PACKAGE = Path(__file__).resolve().parent.parent / "django_points_earn"


def test_no_module_outside_providers_and_sandbox_names_a_platform():
    """The registry is the only list: no module outside providers/ and sandbox/ (and the sandbox's command) holds
    a platform's name as a value, or compares anything with one ("points" alone is also the model field's name)."""
    named = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        if parts[0] in ("providers", "sandbox", "migrations") or path.name == "points_sandbox.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in ("fabric", "stamps"):
                named.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value!r}")
            if isinstance(node, ast.Compare) and any(
                isinstance(c, ast.Constant) and c.value == "points" for c in [node.left, *node.comparators]
            ):
                named.append(f"{path.relative_to(PACKAGE)}:{node.lineno} compares with 'points'")
    assert named == []
