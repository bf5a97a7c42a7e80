"""A second read of the issue 12/13/16 landing: where its branches meet (the platform id kept while a record is being
sent, refunds and cancellations made on the platform, the fabric duplicate answer, the 429 budget of refunds, the
numbers in a webhook). Each test failed on the merged main (db5685b) before its fix."""

from decimal import Decimal

import pytest
import requests
import responses
from django.conf import settings
from django.utils import timezone

from django_points_earn import corrections, lifecycle, reversal_lifecycle, webhooks
from django_points_earn.conf import get_settings
from django_points_earn.models import EarningRecord, Reversal, ReversalStatus, Status
from django_points_earn.providers import get_backend
from django_points_earn.providers import results as r
from django_points_earn.providers.results import EarnResult
from django_points_earn.signals import order_refunded
from tests.conftest import FABRIC_TOKEN_URL, POINTS_URL, settle
from tests.shop.models import Order
from tests.test_fabric_client import EARN_URL, TXN_URL, calls_to, earn, token_answer, transactions
from tests.test_points_flow import first_call_lost, make_due, post

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/loyalty/webhooks/points/main/"


def platform_events(sandbox, number, event):
    return [
        e["payload"]
        for e in sandbox.events_since(0)
        if e["payload"]["order"]["order_number"] == number and e["payload"]["event"] == event
    ]


def dashboard_refund(uuid, amount=None):
    """A refund made by the merchant in the Points dashboard (not through us)."""
    body = {"reason": "refunded in the Points dashboard"} | ({"amount": amount} if amount is not None else {})
    answer = requests.post(
        f"{POINTS_URL}/orders/{uuid}/refund", json=body, headers={"x-api-key": settings.POINTS_API_KEY}, timeout=5
    )
    assert answer.status_code == 200, answer.text


def lost_answer(place_order, points_api, number):
    """Points created (and credited) the order, our client timed out: the record is queued, outcome unknown."""
    place_order(number, lines=[("Oud", "100.00", 1)])
    record = first_call_lost(number, points_api)
    [approved] = platform_events(points_api, number, "approved")
    return record, approved


def resend_in_flight(record):
    """The drain's resend of ``record`` has been claimed and its call is in flight."""
    make_due(record)
    claimed = lifecycle.claim(record.pk, lease_seconds=60)
    assert claimed is not None
    return claimed


# -- the platform id kept while the record was being sent ------------------------------------------------------
def test_a_lost_resend_after_the_approved_webhook_settles_the_record(place_order, points_api, client):
    """Failed on db5685b: the approved webhook came while the resend was in flight (id kept, "stays sending"); the
    resend then timed out too, and the record went back to ``queued`` holding the platform's id, the webhook used
    up. It was sent yet again (and could end failed or rejected though Points had credited it)."""
    record, approved = lost_answer(place_order, points_api, "SO-RV1")
    claimed = resend_in_flight(record)
    webhooks.process(post(client, approved).pk)
    lifecycle.complete(claimed, None, EarnResult(r.UNAVAILABLE, "read timed out", outcome_unknown=True))
    record.refresh_from_db()
    assert (record.status, record.remote_id) == (Status.AWARDED, approved["order"]["id"])


def test_a_pending_answer_after_the_approved_webhook_settles_the_record(place_order, points_api, client):
    """Failed on db5685b: an answer ``pending_activation`` recorded after the approved webhook had given the id left
    the record pending for ever (the webhook was used up, no redelivery applies to a record holding an id), and a
    refund waited for a webhook that had already come."""
    place_order("SO-RV2")
    record = EarningRecord.objects.get()
    claimed = lifecycle.claim(record.pk, lease_seconds=60)
    approved = {
        "event": "approved",
        "order": {"id": "uuid-rv2", "order_number": "SO-RV2", "type": "earning", "order_status": "approved"},
    }
    webhooks.process(post(client, approved).pk)
    lifecycle.complete(claimed, None, EarnResult(r.PENDING_ACTIVATION, "customer not activated"))
    record.refresh_from_db()
    assert (record.status, record.remote_id) == (Status.AWARDED, "uuid-rv2")


# -- refunds and cancellations made on the platform ---------------------------------------------------------------
def test_a_platform_refund_of_a_queued_record_holding_its_id_is_not_lost(place_order, points_api, client):
    """Failed on db5685b: a record back in ``queued`` that holds the platform id (kept while it was sent) was not
    settled by the ``refunded`` webhook (only a record without an id is), so the platform's full refund was kept
    on a reversal row but never applied: the resend's duplicate answer then made it ``awarded``, all points shown
    as earned though Points had taken them back."""
    record, approved = lost_answer(place_order, points_api, "SO-RV3")
    uuid = approved["order"]["id"]
    # The id came while a resend was in flight (kept on the record), and the record is queued again.
    EarningRecord.objects.filter(pk=record.pk).update(remote_id=uuid)
    dashboard_refund(uuid)
    [refunded] = platform_events(points_api, "SO-RV3", "refunded")
    webhooks.process(post(client, refunded).pk)
    make_due(record)
    settle()
    record.refresh_from_db()
    assert record.status == Status.REVERSED
    assert record.reversal_set.get().status == ReversalStatus.REVERSED


def test_a_platform_refund_while_the_record_is_being_sent_is_applied_once_awarded(place_order, points_api, client):
    """Failed on db5685b: the ``refunded`` webhook processed while the record was ``sending`` kept the reversal as
    done, but the earning (not awarded yet) could not be reversed; once the call's answer awarded it, nothing
    applied the refund again: ``awarded`` for good, with its points taken back on the platform."""
    record, approved = lost_answer(place_order, points_api, "SO-RV4")
    claimed = resend_in_flight(record)
    dashboard_refund(approved["order"]["id"])
    [refunded] = platform_events(points_api, "SO-RV4", "refunded")
    delivery = post(client, refunded)
    webhooks.process(delivery.pk)
    lifecycle.complete(claimed, None, EarnResult(r.DUPLICATE, "order number already exists"))
    webhooks.process_pending(older_than_seconds=0)  # the worker's sweep
    record.refresh_from_db()
    assert record.status == Status.REVERSED
    delivery.refresh_from_db()
    assert delivery.processed_at is not None


def test_a_cancellation_while_the_record_is_being_sent_is_applied_once_it_is_awarded(place_order, points_api, client):
    """Failed on db5685b: the ``cancelled`` webhook met a ``sending`` record, changed nothing and was marked done
    ("earning cancelled on the platform"); the call's answer then made it ``awarded``."""
    place_order("SO-RV5")
    record = EarningRecord.objects.get()
    claimed = lifecycle.claim(record.pk, lease_seconds=60)
    cancelled = {
        "event": "cancelled",
        "order": {"id": "uuid-rv5", "order_number": "SO-RV5", "type": "earning", "order_status": "cancelled"},
    }
    webhooks.process(post(client, cancelled).pk)
    lifecycle.complete(claimed, None, EarnResult(r.AWARDED, remote_id="uuid-rv5", points=Decimal("7")))
    webhooks.process_pending(older_than_seconds=0)
    record.refresh_from_db()
    assert record.status == Status.REVERSED


# -- fabric: no webhook will ever settle an "accepted" record ----------------------------------------------------
@pytest.fixture
def fabric_backend():
    return get_backend(get_settings().account("fabric"))


@responses.activate
def test_fabric_duplicate_that_get_transaction_cannot_find_is_asked_again_not_accepted(fabric_backend):
    """Failed on db5685b: the answer stayed ``duplicate``, which the lifecycle records as ``accepted`` "awaiting its
    approved webhook", a Points webhook fabric never sends: the earning (and any refund of it) waited for ever."""
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    responses.get(TXN_URL, json=transactions())
    responses.post(EARN_URL, status=409, json={"status": 409, "message": "Duplicate transaction"})
    responses.get(TXN_URL, json=transactions())  # fabric's search has not caught up yet
    result = earn(fabric_backend, outcome_unknown=True)
    assert (result.status, result.outcome_unknown) == (r.UNAVAILABLE, True)
    assert "duplicate" in result.message and "get-transaction" in result.message
    assert len(calls_to(EARN_URL)) == 1


# -- refunds answered 429 ------------------------------------------------------------------------------------------
def test_a_refund_answered_429_for_ever_ends_failed(place_order, points_api):
    """Failed on db5685b: a refund's 429 had no budget (earnings have RETRY["MAX_RATE_LIMITED"]): a refund that
    Points keeps rate-limiting was queued again for ever, one attempt row each time, never failed for a human."""
    order = place_order("SO-RV6")
    settle()
    order_refunded.send(sender=Order, order=order, amount=None, reason="returned", refund_id="R-429")
    reversal = Reversal.objects.get()
    assert reversal.status == ReversalStatus.QUEUED
    policy = get_settings().retry
    budget = int(policy["MAX_RATE_LIMITED"]) + int(policy["MAX_ATTEMPTS"])
    for _ in range(budget + 5):
        Reversal.objects.filter(pk=reversal.pk, status=ReversalStatus.QUEUED).update(next_attempt_at=timezone.now())
        claimed = reversal_lifecycle.claim(reversal.pk, lease_seconds=60)
        if claimed is None:
            break
        attempt = reversal_lifecycle.start_attempt(claimed, {"reason": "x"}, trigger="worker")
        reversal_lifecycle.complete(
            claimed, attempt, EarnResult(r.RATE_LIMITED, "busy", http_status=429, retry_after=0)
        )
    reversal.refresh_from_db()
    assert reversal.status == ReversalStatus.FAILED
    assert reversal.attempt_set.count() <= budget


# -- numbers in a webhook that no column can hold ----------------------------------------------------------------
@pytest.mark.parametrize("points", ["NaN", "1e400", 10**15, "-Infinity"])
def test_an_approved_webhook_with_unusable_points_still_settles_the_record(place_order, points_api, client, points):
    """Failed on db5685b: ``total_points`` was taken as any Decimal (NaN, 1E+400, 10^15): the UPDATE failed, the
    delivery's job failed with it (on PostgreSQL inside an aborted transaction), the record stayed unsettled."""
    place_order("SO-RV7")
    record = EarningRecord.objects.get()
    EarningRecord.objects.filter(pk=record.pk).update(status=Status.ACCEPTED, outcome_unknown=True)
    approved = {
        "event": "approved",
        "order": {"id": "uuid-rv7", "order_number": "SO-RV7", "type": "earning", "total_points": points},
    }
    delivery = post(client, approved)
    webhooks.process(delivery.pk)
    record.refresh_from_db()
    assert (record.status, record.remote_id, record.points) == (Status.AWARDED, "uuid-rv7", None)
    delivery.refresh_from_db()
    assert delivery.processed_at is not None


# -- fabric pro rata: "the rest" after partial reversals -----------------------------------------------------------
def test_fabric_pro_rata_rest_after_a_partial_reversal_takes_only_what_is_left(place_order, fabric_api):
    """Failed on db5685b: fabric's refund body ignored the explicit amount (what is left) and built "the rest" from
    the refund's own empty amount, i.e. the whole order: after 50 of 200 taken back, it asked fabric to take back
    all 200 again (250 in all, more than was awarded)."""
    from tests.test_fabric_refunds import fabric_ledger, fabric_options, refund, sent_reversals

    fabric_api.partial_reversals = True
    with fabric_options(PARTIAL_REVERSALS="pro_rata"):
        order = place_order("SO-RV8", account="fabric", lines=[("Bakhoor", "200.00", 1)])
        settle()
        refund(order, Decimal("50"), refund_id="P-1")
        settle()
        refund(order, None, refund_id="REST")
        settle()
    record = EarningRecord.objects.get()
    assert record.status == Status.REVERSED
    assert [body["totalAmountPaid"] for body in sent_reversals(record)] == [-50.0, -150.0]
    assert fabric_ledger(fabric_api)["orders"]["SO-RV8"]["reversed_points"] == record.points


# -- personal data in the reconcile report -------------------------------------------------------------------------
@pytest.mark.parametrize("as_json", [False, True])
def test_the_reconcile_report_masks_a_phone_quoted_in_a_reason(place_order, as_json):
    """Failed on db5685b: the admin masks Saudi mobiles wherever they sit in stored text (issue 13 item 11), but
    ``points_reconcile`` printed the reason as stored: a platform refusal quoting the customer's phone went in full
    to the cron mail or log that collects the report."""
    from tests.test_reconcile_command import reconcile_cmd

    place_order("SO-RV9")
    record = EarningRecord.objects.get()
    EarningRecord.objects.filter(pk=record.pk).update(
        status=Status.REJECTED, status_reason="Points refused the data: customer 0551234567 is blocked"
    )
    code, out = reconcile_cmd(*(["--json"] if as_json else []))
    assert code == 1
    assert "0551234567" not in out and "551234567" not in out
    assert "5*****567" in out


# -- refunds left waiting for an earning that will never be awarded by this app -----------------------------------
def test_a_partial_refund_waiting_for_an_unsent_earning_ends_when_a_full_refund_cancels_it(place_order):
    """Failed on db5685b: a partial refund of an order not sent yet waits for the award; a full refund then cancels
    the earning (nothing is ever sent), but the partial one stayed ``waiting`` for ever, on a cancelled earning."""
    order = place_order("SO-RV10", lines=[("Oud", "100.00", 1)])
    order_refunded.send(sender=Order, order=order, amount=Decimal("30"), reason="one bottle", refund_id="PART")
    assert Reversal.objects.get(refund_id="PART").status == ReversalStatus.WAITING
    order_refunded.send(sender=Order, order=order, amount=None, reason="all of it", refund_id="ALL")
    assert EarningRecord.objects.get().status == Status.CANCELLED
    part = Reversal.objects.get(refund_id="PART")
    assert part.status == ReversalStatus.CANCELLED
    assert "cancelled" in part.status_reason


@pytest.mark.parametrize("state", [Status.ACCEPTED, Status.FAILED])
def test_a_refund_waiting_for_an_earning_resolved_by_hand_ends_and_says_why(place_order, state):
    """Failed on db5685b: an ``accepted`` earning with no webhook for days (or a failed one) resolved by hand kept
    its refund ``waiting`` for ever, for an approved webhook or award that can no longer change it, and nothing
    listed it: reconcile and the admin look at earnings, and the earning was resolved."""
    order = place_order("SO-RV11", lines=[("Oud", "100.00", 1)])
    record = EarningRecord.objects.get()
    EarningRecord.objects.filter(pk=record.pk).update(status=state, outcome_unknown=True)
    order_refunded.send(sender=Order, order=order, amount=None, reason="returned", refund_id="R-1")
    assert Reversal.objects.get().status == ReversalStatus.WAITING
    record.refresh_from_db()
    assert corrections.resolve(record, actor="ops", note="checked in the Points dashboard")
    reversal = Reversal.objects.get()
    assert reversal.status == ReversalStatus.CANCELLED
    assert "resolved by hand" in reversal.status_reason and "by hand too" in reversal.status_reason
    order_refunded.send(sender=Order, order=order, amount=None, reason="again", refund_id="R-2")  # after: the same
    assert Reversal.objects.get(refund_id="R-2").status_reason == reversal.status_reason
