"""Issue 18, item 2: the merchant's balance events (Points' ``low_balance_warning`` and ``debt_exceeded`` webhooks)
and 403 answers to earning calls become balance alerts: kept once, mailed once, announced with
``merchant_balance_low``, shown as a banner on the dashboard and the earnings list until a person resolves them."""

import json
from decimal import Decimal

import pytest
from django.conf import settings
from django.core import mail
from django.test import override_settings
from django.utils import translation

from django_points_earn import webhooks
from django_points_earn.admin_tools.delivery_admin import reapply
from django_points_earn.conf import get_settings
from django_points_earn.models import AccountState, AlertKind, EarningRecord, MerchantAlert, Status, WebhookDelivery
from django_points_earn.providers import get_backend
from django_points_earn.providers.events import Ignored, MerchantBalance
from django_points_earn.providers.points_webhooks import parse
from django_points_earn.sandbox.webhook_sender import WebhookSender
from django_points_earn.signals import merchant_balance_low
from tests.admin_helpers import CHANGELIST, DASHBOARD, staff
from tests.conftest import settle
from tests.test_points_flow import URL, post

pytestmark = pytest.mark.django_db(transaction=True)
ADMINS = [("Ops", "ops@example.com")]
RESOLVE = f"{DASHBOARD}resolve-alert/main/"


def low_balance(**data):
    figures = {"current_balance": 120.5, "order_points": 500, "balance_after_order": -379.5, "max_debt_allowed": 0}
    return {
        "event": "low_balance_warning",
        "merchant": {"id": 42, "name": "Qahwa House", "created_at": "2026-01-01T00:00:00Z", "updated_at": "x"},
        "data": {**figures, **data},
        "timestamp": "2026-12-01T10:00:00Z",
    }


@pytest.fixture
def heard():
    calls = []

    def receiver(sender, alert, **kwargs):
        calls.append(alert)

    merchant_balance_low.connect(receiver)
    yield calls
    merchant_balance_low.disconnect(receiver)


def test_the_parser_reads_both_merchant_events_into_one_neutral_event():
    [event] = parse(low_balance()).events
    assert event == MerchantBalance(
        kind="low_balance_warning",
        current_balance=Decimal("120.5"),
        order_points=Decimal(500),
        balance_after_order=Decimal("-379.5"),
        max_debt_allowed=Decimal(0),
        merchant_id="42",
        merchant_name="Qahwa House",
        at="2026-12-01T10:00:00Z",
    )
    debt = parse({**low_balance(), "event": "debt_exceeded"})
    assert debt.events[0].kind == "debt_exceeded" and debt.order_number == ""
    # Garbage in the envelope is read as "not given", never raised
    odd = parse({"event": "low_balance_warning", "merchant": [1], "data": {"current_balance": "NaN"}})
    assert odd.events == (MerchantBalance(kind="low_balance_warning"),)
    assert isinstance(parse({"event": "balance_topped_up"}).events[0], Ignored)
    # A redelivery keeps its key; the next warning (other figures or time) gets another
    assert parse(low_balance()).key == parse(low_balance()).key != parse(low_balance(current_balance=80)).key


@override_settings(ADMINS=ADMINS)
def test_a_low_balance_webhook_is_kept_mailed_and_announced_once_whatever_comes_again(client, heard):
    delivery = post(client, low_balance())
    assert (delivery.event, delivery.order_number, delivery.order_uuid) == ("low_balance_warning", "", "")
    result = webhooks.process(delivery.pk)
    [alert] = MerchantAlert.objects.all()
    assert result == f"balance alert {alert.pk} kept: low_balance_warning, balance 120.5"
    assert (alert.account, alert.kind, alert.current_balance, alert.balance_after_order) == (
        "main",
        AlertKind.LOW_BALANCE,
        Decimal("120.50"),
        Decimal("-379.50"),
    )
    assert (alert.merchant_name, alert.resolved_at) == ("Qahwa House", None)
    [message] = mail.outbox
    assert message.to == ["ops@example.com"] and "Low balance on account main" in message.subject
    assert "current balance 120.50" in message.body and "balance after the order -379.50" in message.body
    assert heard == [alert]

    # Redelivered by Points: counted, not applied; applied again from the admin: the same alert, no second mail
    answer = client.post(
        URL,
        data=json.dumps(low_balance()),
        content_type="application/json",
        headers={"X-Webhook-Secret": settings.POINTS_WEBHOOK_SECRET},
    )
    assert answer.json() == {"ok": True, "duplicate": True}
    again = reapply(WebhookDelivery.objects.get(pk=delivery.pk))
    assert again == f"balance alert {alert.pk} already kept (low_balance_warning)"
    assert MerchantAlert.objects.count() == 1 and len(mail.outbox) == 1 and len(heard) == 1

    # The next warning is a new alert
    webhooks.process(post(client, low_balance(current_balance=20)).pk)
    assert MerchantAlert.objects.count() == 2 and len(mail.outbox) == 2


def test_a_failing_receiver_or_mail_server_never_leaves_the_delivery_unprocessed(client, settings):
    settings.ADMINS = ADMINS
    settings.EMAIL_BACKEND = "tests.test_balance_alerts.BrokenMail"

    def broken(sender, alert, **kwargs):
        raise RuntimeError("the shop's receiver fails")

    merchant_balance_low.connect(broken)
    try:
        delivery = post(client, {**low_balance(), "event": "debt_exceeded"})
        assert webhooks.process(delivery.pk).startswith("balance alert")
    finally:
        merchant_balance_low.disconnect(broken)
    assert WebhookDelivery.objects.get(pk=delivery.pk).processed_at is not None
    assert MerchantAlert.objects.get().kind == AlertKind.DEBT_EXCEEDED


class BrokenMail:
    """A mail server that is down (honouring fail_silently, as Django's own backends do)."""

    def __init__(self, fail_silently=False, **kwargs):
        self.fail_silently = fail_silently

    def send_messages(self, messages):
        if not self.fail_silently:
            raise OSError("no mail server")
        return 0


@override_settings(ADMINS=ADMINS)
def test_a_403_answer_pauses_the_account_as_before_and_shows_the_same_banner_once(
    place_order, points_api, heard, admin_client
):
    points_api.forbid("main", "Merchant is not allowed to create earning orders")
    first = place_order("SO-403A")
    settle()
    record = EarningRecord.objects.get(order_number=first.number)
    assert record.status == Status.BLOCKED  # the state machine's decision is unchanged
    assert AccountState.objects.get(pk="main").paused
    [alert] = MerchantAlert.objects.all()
    assert (alert.kind, alert.message) == (
        AlertKind.ACCOUNT_REFUSED,
        "Points refused the merchant: Merchant is not allowed to create earning orders",
    )
    assert len(mail.outbox) == 1 and heard == [alert]

    # Resumed while still refused: another 403, but the account's alert is still open, so no second one
    from django_points_earn.admin_tools import operations

    operations.resume("main", actor="ops")
    settle()
    assert EarningRecord.objects.get(pk=record.pk).status == Status.BLOCKED
    assert MerchantAlert.objects.count() == 1 and len(mail.outbox) == 1

    page = admin_client.get(DASHBOARD).content.decode()
    assert 'id="pe-balance-banner"' in page and "the platform refused the merchant" in page
    assert "Merchant is not allowed to create earning orders" in page


@override_settings(ADMINS=ADMINS)
def test_a_disabled_rating_channel_shows_the_banner_once_and_pauses_nothing(points_api, heard, admin_client):
    """Failed on c83502d: a rating's 403 ("channel disabled") became a plain rejection, so the merchant heard of it
    nowhere (no banner, no mail, no signal) while every review's earning was refused."""
    from tests.test_ratings import approve

    points_api.disable_rating_channel("main", "store")
    approve("review-off-1")
    approve("review-off-2")
    settle()
    assert set(EarningRecord.objects.values_list("status", flat=True)) == {Status.REJECTED}
    assert not AccountState.objects.filter(account="main", paused=True).exists()  # purchases go on
    [alert] = MerchantAlert.objects.all()  # two refused reviews, one open alert
    assert alert.kind == AlertKind.ACCOUNT_REFUSED and "store-rating channel" in alert.message
    assert len(mail.outbox) == 1 and heard == [alert]
    page = admin_client.get(DASHBOARD).content.decode()
    assert 'id="pe-balance-banner"' in page and "store-rating channel" in page


def test_the_banner_shows_on_the_dashboard_and_the_earnings_list_until_someone_allowed_resolves_it(
    client, django_user_model
):
    webhooks.process(post(client, low_balance()).pk)
    viewer = staff(django_user_model, "viewer")
    client.force_login(viewer)
    for url in (DASHBOARD, CHANGELIST):
        page = client.get(url).content.decode()
        assert "Account main: the merchant's balance on the platform is low." in page, url
        assert "120.50" in page and "Mark resolved" not in page  # no permission, no button
    assert client.post(RESOLVE).status_code == 403
    assert MerchantAlert.objects.get().resolved_at is None

    resolver = staff(django_user_model, "resolver", "resolve_merchantalert")
    client.force_login(resolver)
    assert "Mark resolved" in client.get(DASHBOARD).content.decode()
    assert client.get(RESOLVE).status_code == 405
    answer = client.post(RESOLVE, follow=True)
    assert "Balance alerts of account main marked resolved: 1." in answer.content.decode()
    alert = MerchantAlert.objects.get()
    assert alert.resolved_at is not None and alert.resolved_by == "resolver"
    for url in (DASHBOARD, CHANGELIST):
        assert 'id="pe-balance-banner"' not in client.get(url).content.decode()

    # A new warning shows the banner again
    webhooks.process(post(client, low_balance(current_balance=5)).pk)
    assert 'id="pe-balance-banner"' in client.get(DASHBOARD).content.decode()


def test_one_accounts_many_warnings_never_hide_another_accounts_banner(admin_client):
    """Failed on c83502d: the banner read the 200 newest unresolved alerts and kept each account's latest; Points
    warns about a low balance order by order, so one busy account's warnings pushed another account's open alert
    out of the banner."""
    from django_points_earn import merchant_alerts

    merchant_alerts.from_refusal("branch", "Points refused the merchant: not funded")
    MerchantAlert.objects.bulk_create(
        MerchantAlert(account="main", kind=AlertKind.LOW_BALANCE, current_balance=n, dedupe_key=f"k{n}")
        for n in range(201)
    )
    assert {alert.account for alert in merchant_alerts.open_alerts()} == {"main", "branch"}
    page = admin_client.get(DASHBOARD).content.decode()
    assert 'data-account="branch"' in page and 'data-account="main"' in page


def test_the_alerts_page_resolves_by_its_action_for_people_with_the_permission(admin_client, client):
    webhooks.process(post(client, low_balance()).pk)
    alert = MerchantAlert.objects.get()
    url = "/admin/django_points_earn/merchantalert/"
    listing = admin_client.get(url).content.decode()
    assert "Low balance" in listing and "120.50" in listing
    answer = admin_client.post(url, {"action": "resolve_selected", "_selected_action": [alert.pk]}, follow=True)
    assert answer.status_code == 200
    assert MerchantAlert.objects.get().resolved_by == "admin"


def test_the_banner_speaks_arabic(client, admin_client):
    webhooks.process(post(client, {**low_balance(), "event": "debt_exceeded"}).pk)
    with translation.override("ar"):
        page = admin_client.get(DASHBOARD, headers={"Accept-Language": "ar"}).content.decode()
    assert "تجاوز" in page  # "exceeded"


def test_the_sandbox_sends_a_low_balance_webhook_on_request(points_api, client, settings):
    sandbox = points_api
    hook = get_backend(get_settings().account("main")).register_webhook("tests", "http://testserver" + URL)
    accounts = {**settings.POINTS_EARN["ACCOUNTS"]}
    accounts["main"] = {**accounts["main"], "WEBHOOK_SECRET": hook["secret"]}
    settings.POINTS_EARN = {**settings.POINTS_EARN, "ACCOUNTS": accounts}

    def transport(url, body, headers):
        headers = {k: v for k, v in headers.items() if k != "Content-Type"}
        return client.post(URL, data=body, content_type="application/json", headers=headers).status_code

    assert sandbox.balance_event("low_balance_warning", current_balance=75) == ["main"]
    [sent] = WebhookSender(sandbox, transport=transport).deliver()
    assert (sent.event, sent.status) == ("low_balance_warning", 200)
    delivery = WebhookDelivery.objects.get()
    webhooks.process(delivery.pk)
    alert = MerchantAlert.objects.get()
    assert (alert.kind, alert.current_balance, alert.balance_after_order) == (
        AlertKind.LOW_BALANCE,
        Decimal("75.00"),
        Decimal("-425.00"),
    )
    with pytest.raises(ValueError):
        sandbox.balance_event("balance_topped_up")


def test_points_reconcile_json_lists_the_open_balance_alerts(client):
    from io import StringIO

    from django.core.management import call_command

    webhooks.process(post(client, low_balance()).pk)
    out = StringIO()
    call_command("points_reconcile", "--json", stdout=out)  # exit 0: a balance alert is not in the exit code
    [alert] = json.loads(out.getvalue())["balance_alerts"]
    assert (alert["account"], alert["kind"]) == ("main", "low_balance_warning")
    MerchantAlert.objects.update(resolved_at="2026-12-01T12:00:00Z")
    out = StringIO()
    call_command("points_reconcile", "--json", stdout=out)
    assert json.loads(out.getvalue())["balance_alerts"] == []


def test_points_sandbox_low_balance_asks_a_running_sandbox(sandbox, sandbox_server):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    port = sandbox_server.url.rsplit(":", 1)[1].split("/")[0]
    call_command("points_sandbox", "--low-balance", "--balance", "40", "--port", port, stdout=out)
    assert out.getvalue().strip() == "low_balance_warning sent for: main"
    call_command("points_sandbox", "--debt-exceeded", "main", "--port", port, stdout=out)
    events = [e["payload"] for e in sandbox.events_since(0)]
    assert [(e["event"], e["data"]["current_balance"]) for e in events] == [
        ("low_balance_warning", 40.0),
        ("debt_exceeded", 120.0),
    ]
    assert events[0]["merchant"]["name"] == "main" and events[0]["data"]["balance_after_order"] == -460.0
