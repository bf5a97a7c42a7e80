"""Points webhooks: the secret, storage before processing, duplicates, reordering, refunds made on the platform."""

import json

import pytest
import requests
from django.conf import settings

from django_points_earn.models import EarningRecord, Reversal, ReversalStatus, Status, WebhookDelivery
from django_points_earn.reconcile import sweep
from tests.conftest import POINTS_URL, run_worker, settle

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/loyalty/webhooks/points/main/"


def post(client, payload, secret="default"):  # noqa: S107 ("default" means: the configured secret)
    headers = {"X-Webhook-Event": str(payload.get("event"))}
    if secret is not None:
        headers["X-Webhook-Secret"] = settings.POINTS_WEBHOOK_SECRET if secret == "default" else secret
    return client.post(URL, data=json.dumps(payload), content_type="application/json", headers=headers)


def events(sandbox):
    return [e["payload"] for e in sandbox.events_since(0)]


def dashboard_refund(record, amount=None):
    """A refund made by the merchant on the Points side (not through us)."""
    body = {"reason": "refunded in the Points dashboard"} | ({"amount": amount} if amount is not None else {})
    answer = requests.post(
        f"{POINTS_URL}/orders/{record.remote_id}/refund",
        json=body,
        headers={"x-api-key": settings.POINTS_API_KEY},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("secret", [None, "", "wrong-secret", settings.POINTS_WEBHOOK_SECRET[:-1]])
def test_forged_or_missing_secret_is_403_and_changes_nothing(client, place_order, points_api, secret):
    place_order("SO-1", phone="0500000003")
    settle()
    forged = {
        "event": "approved",
        "order": {
            "id": "evil-uuid",
            "order_number": "SO-1",
            "type": "earning",
            "order_status": "approved",
            "total_points": 999999,
        },
    }
    assert post(client, forged, secret=secret).status_code == 403
    assert not WebhookDelivery.objects.exists()
    run_worker()
    record = EarningRecord.objects.get()
    assert (record.status, record.remote_id) == (Status.PENDING_ACTIVATION, "")


def test_redelivered_event_is_applied_once(client, place_order, points_api):
    place_order("SO-ACT", phone="0500000003")
    settle()
    points_api.activate("0500000003")
    [approved] = events(points_api)
    assert post(client, approved).json() == {"ok": True}
    assert post(client, approved).json() == {"ok": True, "duplicate": True}
    run_worker()
    delivery = WebhookDelivery.objects.get()
    assert delivery.redeliveries == 1 and delivery.processed_at is not None
    record = EarningRecord.objects.get()
    assert record.status == Status.AWARDED
    assert record.remote_id == approved["order"]["id"]
    assert record.event_set.filter(to_status=Status.AWARDED).count() == 1


def test_two_partial_refunds_on_the_platform_are_both_applied(client, place_order, points_api):
    place_order("SO-DASH", lines=[("Oud", "100.00", 1)])
    settle()
    record = EarningRecord.objects.get()
    dashboard_refund(record, 25)
    dashboard_refund(record, 25)
    refunds = [e for e in events(points_api) if e["event"] == "refunded"]
    assert len(refunds) == 2 and refunds[0]["order"]["id"] == refunds[1]["order"]["id"]
    for payload in refunds + refunds:  # and every one delivered twice
        assert post(client, payload).status_code == 200
    run_worker()
    assert WebhookDelivery.objects.count() == 2
    reversals = Reversal.objects.filter(source="platform").order_by("id")
    assert [(r.amount, r.points, r.status) for r in reversals] == [(25, 250, ReversalStatus.REVERSED)] * 2
    record.refresh_from_db()
    assert record.status == Status.PARTIALLY_REVERSED

    dashboard_refund(record)  # the rest
    post(client, [e for e in events(points_api) if e["event"] == "refunded"][-1])
    run_worker()
    record.refresh_from_db()
    assert record.status == Status.REVERSED


def test_reordered_stream_refund_before_approval(client, place_order, points_api):
    place_order("SO-ORDER", phone="0500000003", lines=[("Tea", "40.00", 1)])
    settle()
    points_api.activate("0500000003")
    record_uuid = events(points_api)[0]["order"]["id"]
    requests.post(
        f"{POINTS_URL}/orders/{record_uuid}/refund",
        json={"amount": 10, "reason": "dashboard"},
        headers={"x-api-key": settings.POINTS_API_KEY},
        timeout=5,
    )
    approved, refunded = events(points_api)
    post(client, refunded)  # arrives first
    post(client, approved)
    run_worker()
    record = EarningRecord.objects.get()
    assert (record.status, record.remote_id) == (Status.PARTIALLY_REVERSED, record_uuid)
    assert Reversal.objects.get().points == refunded["order"]["refund_points"]


def test_unknown_and_irrelevant_events_are_stored_and_ignored(client, place_order, points_api):
    # A merchant-level event we do not know (the two we know become balance alerts: test_balance_alerts.py)
    merchant_event = {"event": "balance_topped_up", "merchant": {"id": 1}, "data": {"current_balance": 5}}
    assert post(client, merchant_event).status_code == 200
    assert post(client, {"event": "shipping_status_updated", "order": {"id": "x"}}).status_code == 200
    run_worker()
    assert sorted(WebhookDelivery.objects.values_list("result", flat=True)) == [
        "ignored: balance_topped_up is not about earning",
        "ignored: shipping_status_updated is not about earning",
    ]


def test_bad_body_is_400_and_not_stored(client):
    response = client.post(
        URL,
        data="not json",
        content_type="application/json",
        headers={"X-Webhook-Secret": settings.POINTS_WEBHOOK_SECRET},
    )
    assert response.status_code == 400
    assert not WebhookDelivery.objects.exists()


def test_delivery_stored_while_redis_is_down_is_processed_by_the_sweep(client, place_order, points_api):
    from datetime import timedelta

    from django.utils import timezone

    place_order("SO-LATE", phone="0500000003")
    settle()
    points_api.activate("0500000003")
    good = settings.RQ_QUEUES["default"]["URL"]
    settings.RQ_QUEUES["default"]["URL"] = "redis://127.0.0.1:1/0"
    try:
        assert post(client, events(points_api)[0]).status_code == 200  # stored, not enqueued
    finally:
        settings.RQ_QUEUES["default"]["URL"] = good
    WebhookDelivery.objects.update(received_at=timezone.now() - timedelta(minutes=1))
    sweep()
    assert EarningRecord.objects.get().status == Status.AWARDED


def test_register_webhook_keeps_the_secret_off_the_screen(points_api, tmp_path):
    from io import StringIO

    from django.core.management import call_command

    secret_file = tmp_path / "points_webhook_secret"
    out = StringIO()
    call_command(
        "points_webhook_register",
        "--account",
        "main",
        "--url",
        "https://shop.example/loyalty/webhooks/points/main/",
        "--secret-file",
        str(secret_file),
        stdout=out,
    )
    secret = secret_file.read_text()
    assert len(secret) == 60
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600"
    assert secret not in out.getvalue() and "Registered webhook" in out.getvalue()
    listed = StringIO()
    call_command("points_webhook_register", "--account", "main", "--list", stdout=listed)
    assert "https://shop.example/loyalty/webhooks/points/main/" in listed.getvalue()
    assert secret not in listed.getvalue()


def test_sandbox_delivers_duplicated_and_reordered_with_its_secret(client, place_order, points_api, settings):
    """The whole loop: register with the sandbox, use its secret, receive its webhooks shuffled and twice."""
    from django_points_earn.conf import clear_cache
    from django_points_earn.providers import get_backend
    from django_points_earn.sandbox.webhook_sender import WebhookSender

    hook = get_backend(settings_account()).register_webhook("tests", "http://testserver" + URL)
    accounts = {**settings.POINTS_EARN["ACCOUNTS"]}
    accounts["main"] = {**accounts["main"], "WEBHOOK_SECRET": hook["secret"]}
    settings.POINTS_EARN = {**settings.POINTS_EARN, "ACCOUNTS": accounts}
    clear_cache()

    def via_test_client(url, body, headers):
        return client.post(
            url.removeprefix("http://testserver"),
            data=body,
            content_type="application/json",
            headers={k: v for k, v in headers.items() if k != "Content-Type"},
        ).status_code

    place_order("SO-W1", phone="0500000003", lines=[("Kahwa", "60.00", 1)])
    place_order("SO-W2", lines=[("Dates", "100.00", 1)])
    settle()
    points_api.activate("0500000003")
    w2 = EarningRecord.objects.get(order_number="SO-W2")
    dashboard_refund(w2, 30)
    dashboard_refund(w2, 20)
    deliveries = WebhookSender(points_api, transport=via_test_client, seed=3).deliver(duplicate=True, reorder=True)
    # approved (SO-W2 on award), approved (SO-W1 on activation), two refunds: each delivered twice
    assert len(deliveries) == 8 and {d.status for d in deliveries} == {200}
    run_worker()
    assert WebhookDelivery.objects.count() == 4
    assert sum(WebhookDelivery.objects.values_list("redeliveries", flat=True)) == 4
    w1 = EarningRecord.objects.get(order_number="SO-W1")
    assert (w1.status, bool(w1.remote_id)) == (Status.AWARDED, True)
    w2.refresh_from_db()
    assert w2.status == Status.PARTIALLY_REVERSED
    assert sorted(w2.reversal_set.values_list("points", flat=True)) == [200, 300]


def settings_account():
    from django_points_earn.conf import get_settings

    return get_settings().account("main")
