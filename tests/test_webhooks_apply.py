"""The core side of webhooks: what a platform's parser read is applied through the modules that own the state
(``settlement`` for the earning, ``reversal_lifecycle`` for refunds); ``webhooks.py`` stores, dedupes and routes,
and knows no platform."""

import ast
import json
from pathlib import Path

import pytest
import requests
from django.conf import settings

from django_points_earn import reversal_lifecycle, reversals, webhooks
from django_points_earn.admin_tools.delivery_admin import reapply
from django_points_earn.conf import get_settings
from django_points_earn.models import EarningRecord, Reversal, ReversalStatus, Status, WebhookDelivery
from django_points_earn.providers import base as results
from django_points_earn.providers import get_backend
from django_points_earn.providers.base import EarnResult
from django_points_earn.providers.points_webhooks import parse
from django_points_earn.signals import order_refunded
from tests.conftest import POINTS_URL, settle
from tests.shop.models import Order
from tests.test_points_flow import post

pytestmark = pytest.mark.django_db(transaction=True)
R = ReversalStatus
WEBHOOKS = Path(webhooks.__file__)


def our_refund_lands_but_its_answer_is_lost(place_order, number, refund_id):
    """An awarded earning of 100, refunded 40 by the shop: the drain's refund call reaches Points (which takes
    the points back and sends ``refunded``) but its answer is lost. Returns the claimed reversal and the webhook."""
    order = place_order(number, lines=[("Oud", "100.00", 1)])
    settle()
    order_refunded.send(sender=Order, order=order, amount="40.00", reason="returned", refund_id=refund_id)
    reversal = Reversal.objects.get(refund_id=refund_id)
    claimed = reversal_lifecycle.claim(reversal.pk, lease_seconds=60)
    assert claimed is not None and claimed.status == R.SENDING
    record = claimed.record
    body = get_backend(get_settings().account("main")).refund_body(record, claimed, reversals.amount_to_take(claimed))
    landed = requests.post(
        f"{POINTS_URL}/orders/{record.remote_id}/refund",
        json=body,
        headers={"x-api-key": settings.POINTS_API_KEY},
        timeout=5,
    )
    assert landed.status_code == 200
    return claimed


def refunded_webhook(points_api, number):
    [payload] = [
        e["payload"]
        for e in points_api.events_since(0)
        if e["event"] == "refunded" and e["payload"]["order"]["order_number"] == number
    ]
    return payload


def test_a_refund_webhook_settles_our_reversal_whose_answer_was_lost_through_reversals(place_order, points_api, client):
    claimed = our_refund_lands_but_its_answer_is_lost(place_order, "SO-LOSTANS", "RMA-LOST")
    reversal_lifecycle.complete(claimed, None, EarnResult(results.UNAVAILABLE, "read timed out", outcome_unknown=True))
    assert Reversal.objects.get(pk=claimed.pk).status == R.QUEUED  # to be looked up before a resend

    payload = refunded_webhook(points_api, "SO-LOSTANS")
    delivery = post(client, payload)
    assert (
        webhooks.process(delivery.pk)
        == f"refund RMA-LOST settled by webhook ({payload['order']['refund_points']} points)"
    )

    reversal = Reversal.objects.get(pk=claimed.pk)
    assert (reversal.status, reversal.status_reason) == (R.REVERSED, "confirmed by the platform's refunded webhook")
    assert reversal.points == payload["order"]["refund_points"] and reversal.completed_at is not None
    record = EarningRecord.objects.get(pk=claimed.record_id)
    assert record.status == Status.PARTIALLY_REVERSED
    [event] = record.event_set.filter(to_status=Status.PARTIALLY_REVERSED)
    assert (event.from_status, event.trigger) == (Status.AWARDED, "worker")
    assert event.note.startswith("refund RMA-LOST: points taken back")

    settle()  # the retry that was due is not sent: the reversal is settled
    assert [(r.refund_id, r.status) for r in Reversal.objects.all()] == [("RMA-LOST", R.REVERSED)]
    assert points_api.ledger()["merchants"]["main"]["orders"]["SO-LOSTANS"]["refunded_amount"] == 40.0

    # Applied again from the admin: the platform's word confirmed, nothing moves twice.
    assert reapply(WebhookDelivery.objects.get(pk=delivery.pk)).startswith("refund RMA-LOST confirmed (")
    assert record.event_set.filter(to_status=Status.PARTIALLY_REVERSED).count() == 1
    assert Reversal.objects.count() == 1


def test_a_refund_webhook_for_a_call_still_in_flight_takes_its_lease_and_the_late_answer_changes_nothing(
    place_order, points_api, client
):
    claimed = our_refund_lands_but_its_answer_is_lost(place_order, "SO-INFLIGHT", "RMA-FLY")
    delivery = post(client, refunded_webhook(points_api, "SO-INFLIGHT"))
    assert "settled by webhook" in webhooks.process(delivery.pk)
    reversal = Reversal.objects.get(pk=claimed.pk)
    assert (reversal.status, reversal.lease_token, reversal.lease_expires_at) == (R.REVERSED, "", None)

    late = reversal_lifecycle.complete(
        claimed, None, EarnResult(results.AWARDED, "refunded (order now partially_refunded)")
    )
    assert (late.status, late.status_reason) == (R.REVERSED, "confirmed by the platform's refunded webhook")
    record = EarningRecord.objects.get(pk=claimed.record_id)
    assert record.status == Status.PARTIALLY_REVERSED
    assert record.event_set.filter(to_status=Status.PARTIALLY_REVERSED).count() == 1


def test_a_cancelled_reversal_is_not_revived_by_the_platforms_word(place_order, points_api, client):
    claimed = our_refund_lands_but_its_answer_is_lost(place_order, "SO-CANC", "RMA-C")
    Reversal.objects.filter(pk=claimed.pk).update(status=R.CANCELLED)  # e.g. cancelled by hand meanwhile
    assert reversal_lifecycle.confirm_by_platform(Reversal.objects.get(pk=claimed.pk), points=None, note="x") is False
    assert Reversal.objects.get(pk=claimed.pk).status == R.CANCELLED
    assert EarningRecord.objects.get(pk=claimed.record_id).status == Status.AWARDED


def test_an_account_whose_platform_sends_no_webhooks_is_refused_like_an_unknown_one(client, settings):
    accounts = settings.POINTS_EARN["ACCOUNTS"]
    fabric = accounts["fabric"] | {"WEBHOOK_SECRET": "a-secret-for-fabric"}
    settings.POINTS_EARN = settings.POINTS_EARN | {"ACCOUNTS": accounts | {"fabric": fabric}}
    response = client.post(
        "/loyalty/webhooks/points/fabric/",
        data=json.dumps({"event": "approved", "order": {"id": "u", "order_number": "SO-1"}}),
        content_type="application/json",
        headers={"X-Webhook-Secret": "a-secret-for-fabric"},
    )
    assert response.status_code == 403 and not WebhookDelivery.objects.exists()


@pytest.mark.parametrize(
    ("payload", "stored_before"),
    [
        (
            {
                "event": "refunded",
                "timestamp": "2026-01-01T00:00:00Z",
                "order": {
                    "id": "9b2f-uuid",
                    "order_number": "SO-1",
                    "order_status": "partially_refunded",
                    "updated_at": "2026-01-01T10:00:00Z",
                    "refund_amount": 25,
                    "refund_points": 250,
                    "left_points": 750,
                    "left_amount": 75.5,
                },
            },
            "4d592efaa16a4647dbc470e402467bb3f7c85d2a1d5d469edbdfabb627951949",
        ),
        (
            {"event": "approved", "order": "not a dict"},
            "ff7989f719686deb6f948f7caf521a3675967d65d133fe4ba7790b5edf1f3ddc",
        ),
    ],
)
def test_dedupe_keys_are_those_stored_before_the_parser_moved(payload, stored_before):
    """Keys computed by webhooks.py before the parser moved to the provider (5d7abcc): a redelivery of a delivery
    stored then is still counted, not applied a second time."""
    assert webhooks.dedupe_key("main", payload, parse(payload)) == stored_before


def test_webhooks_py_names_no_platform_and_writes_no_earning_or_reversal():
    """Its imports reach no platform's module (only the neutral events), and no call on an earning or a reversal
    writes one: settlement and the reversals' modules do."""
    platform_modules = {p.stem for p in (WEBHOOKS.parent / "providers").glob("*.py")} - {"__init__", "base", "events"}
    tree = ast.parse(WEBHOOKS.read_text(encoding="utf-8"))
    imported = {
        part
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        for part in f"{node.module or ''}.{alias.name}".split(".")
    }
    assert imported & platform_modules == set()
    assert "events" in imported  # the neutral vocabulary is what it applies
    writes = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("update", "save", "create", "delete", "bulk_update", "get_or_create")
        and any(name in ast.unparse(node.func.value) for name in ("Reversal", "EarningRecord", "record", "ours"))
    ]
    assert writes == []
