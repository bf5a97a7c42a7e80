"""Issue 13, items 1-5: one bad record or one slow platform never stalls an account.

Each test fails on the commit before the fix (90d0d4b): a payload-less record resent, a Retry-After that crashed
the drain or made it spin, 429s without end and a copy of the body in every attempt, an oversized order accepted,
another record sent into the platform's work on a timed-out one, a lease that lapsed under a live call.
"""

from __future__ import annotations

import json
import math
import time
from datetime import timedelta

import pytest
import responses as responses_lib
from django.db import DataError, connection
from django.utils import timezone

from django_points_earn import backoff, corrections, lifecycle
from django_points_earn.admin_tools import operations
from django_points_earn.attempts import attempt_body
from django_points_earn.dispatch import drain_account
from django_points_earn.models import AccountState, EarningAttempt, EarningRecord, Status
from django_points_earn.reconcile import sweep
from django_points_earn.sandbox import register_responses
from tests.admin_helpers import page
from tests.conftest import POINTS_URL, settle

pytestmark = pytest.mark.django_db(transaction=True)


def with_settings(settings, **changes) -> None:
    """POINTS_EARN with some keys merged (dict settings) or replaced."""
    merged = dict(settings.POINTS_EARN)
    for key, value in changes.items():
        merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    settings.POINTS_EARN = merged


# -- 1. "send again" on a record rejected before any call --------------------------------------------------------
def test_send_again_is_refused_for_an_earning_rejected_before_any_call(place_order, admin_client, points_api):
    place_order("SO-NOBODY", phone="12345")  # refused at checkout: no request body was ever built
    record = EarningRecord.objects.get()
    assert (record.status, record.payload) == (Status.REJECTED, None)

    assert corrections.requeue(record, trigger="admin", actor="support") is False
    assert corrections.cannot_resend(record).startswith("it was rejected before anything was sent")
    report = operations.retry([record], actor="support")
    assert report.done == [] and "no request to send again" in report.refused[0][1]
    # The admin says why, on the confirmation page and after the click, and changes nothing.
    question = admin_client.get(f"{page(record)[: -len('change/')]}retry/").content.decode()
    assert "no request to send again" in question and "not applicable" in question
    after = admin_client.post(f"{page(record)[: -len('change/')]}retry/", {"confirm": "yes"}, follow=True)
    assert "no request to send again" in after.content.decode()
    record.refresh_from_db()
    assert record.status == Status.REJECTED and record.attempt_set.count() == 0
    assert points_api.ledger()["merchants"].get("main", {}).get("calls", 0) == 0  # nothing (no empty body) sent


def test_a_due_earning_without_a_body_is_rejected_and_the_account_goes_on(place_order, fabric_api):
    """Defence in depth: were a body-less record ever due, the drain rejects it (it crashed on fabric, leaving the
    record ``sending`` for a whole lease) and sends the account's next order."""
    place_order("SO-F1", account="fabric")
    place_order("SO-F2", account="fabric")
    EarningRecord.objects.filter(order_number="SO-F1").update(payload=None)  # as an old "send again" left it

    report = drain_account("fabric")
    bodyless = EarningRecord.objects.get(order_number="SO-F1")
    assert bodyless.status == Status.REJECTED
    assert bodyless.status_reason.startswith("no request body to send (the earning was rejected before any call)")
    assert bodyless.attempt_set.count() == 0  # no call was made for it
    assert EarningRecord.objects.get(order_number="SO-F2").status == Status.AWARDED
    assert report.outcomes == {Status.REJECTED: 1, Status.AWARDED: 1}


# -- 2. a Retry-After the drain cannot use ------------------------------------------------------------------------
@pytest.mark.parametrize("retry_after", ["inf", "1e30", "nan", "-5", "0", "-inf"])
def test_a_retry_after_of_any_value_is_clamped_and_never_stops_the_drain(place_order, sandbox, settings, retry_after):
    policy = settings.POINTS_EARN["RETRY"]
    place_order("SO-RA1")
    place_order("SO-RA2")
    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.post(
            f"{POINTS_URL}/orders/earning",
            status=429,
            json={"message": "Too many requests"},
            headers={"Retry-After": retry_after},
        )
        register_responses(rsps, sandbox, POINTS_URL)
        before = timezone.now()
        drain_account("main")  # does not raise (OverflowError for inf and 1e30)
        limited = EarningRecord.objects.get(order_number="SO-RA1")
        assert limited.rate_limited >= 1
        assert EarningRecord.objects.get(order_number="SO-RA2").status == Status.AWARDED
        waited = limited.attempt_set.get(number=1)
        assert waited.outcome == "rate_limited"
        if limited.status == Status.QUEUED:
            delay = (limited.next_attempt_at - before).total_seconds()
            assert delay <= policy["MAX_DELAY"] + 1  # never past MAX_DELAY (inf, 1e30)
        settle()
    limited = EarningRecord.objects.get(order_number="SO-RA1")
    assert limited.status == Status.AWARDED
    first, second = limited.attempt_set.order_by("number")
    # never at once (a hot loop under "Retry-After: 0"), never later than MAX_DELAY (and a sweep) allow
    assert policy["MIN_DELAY"] <= (second.started_at - first.finished_at).total_seconds() <= policy["MAX_DELAY"] + 3


def test_every_delay_from_a_platform_is_within_min_and_max_delay(settings):
    policy = settings.POINTS_EARN["RETRY"]
    for value in (math.inf, -math.inf, math.nan, 1e30, -5.0, 0.0, None):
        delay = backoff.rate_limit_delay(value)
        assert policy["MIN_DELAY"] <= delay <= policy["MAX_DELAY"], value
    from django_points_earn.providers.transport import parse_retry_after

    assert [parse_retry_after(v) for v in ("inf", "nan", "-5", "2.5", "Wed, 21 Oct 2015 07:28:00 GMT", "")] == [
        None,
        None,
        0.0,
        2.5,
        None,
        None,
    ]


@pytest.mark.parametrize("error", [OverflowError, DataError])
def test_an_error_while_recording_one_answer_ends_that_attempt_and_the_drain_goes_on(
    place_order, points_api, monkeypatch, error
):
    """Any exception while handling one record (here: recording its 429; a value the database refuses is one
    record's problem too) is recorded on its attempt and on the record; the record is retried, and the account's
    other orders are sent by the same drain."""
    points_api.script("429")

    def broken(*args, **kwargs):
        raise error("date value out of range")

    monkeypatch.setattr(backoff, "rate_limit_delay", broken)
    place_order("SO-X1")
    place_order("SO-X2")
    drain_account("main")  # does not raise
    first = EarningRecord.objects.get(order_number="SO-X1")
    attempt = first.attempt_set.get(number=1)
    assert attempt.finished_at is not None and f"{error.__name__}: date value out of range" in attempt.error
    # On the record's timeline (its reason may since say "awarded": a short retry can be waited out in place)
    notes = list(first.event_set.values_list("note", flat=True))
    assert any(f"{error.__name__}: date value out of range" in note for note in notes), notes
    assert first.status in (Status.QUEUED, Status.AWARDED) and first.outcome_unknown  # never left ``sending``
    assert EarningRecord.objects.get(order_number="SO-X2").status == Status.AWARDED
    monkeypatch.undo()
    settle()
    assert points_api.awards("SO-X1") == 1


def test_an_error_in_a_refund_call_ends_its_attempt_and_the_drain_goes_on(place_order, points_api, monkeypatch):
    from django_points_earn.providers.points import PointsBackend
    from django_points_earn.signals import order_refunded
    from tests.shop.models import Order

    order = place_order("SO-REF")
    settle()
    original, calls = PointsBackend.reverse, []

    def reverse_once_broken(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyError("points_refunded")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PointsBackend, "reverse", reverse_once_broken)
    order_refunded.send(sender=Order, order=order, amount=None, reason="returned", refund_id="R-1")
    place_order("SO-AFTER")
    drain_account("main")  # does not raise
    reversal = EarningRecord.objects.get(order_number="SO-REF").reversal_set.get()
    broken = reversal.attempt_set.order_by("number").first()
    assert broken.finished_at is not None and "KeyError: 'points_refunded'" in broken.error
    assert EarningRecord.objects.get(order_number="SO-AFTER").status == Status.AWARDED
    settle()
    assert EarningRecord.objects.get(order_number="SO-REF").status == Status.REVERSED


# -- 3. bounded storage under a 429 storm -------------------------------------------------------------------------
def test_a_429_storm_uses_a_bounded_budget_then_attempts_then_fails(place_order, points_api, settings):
    with_settings(settings, RETRY={"MAX_RATE_LIMITED": 3, "MAX_ATTEMPTS": 2})
    points_api.script(*["429"] * 20)
    place_order("SO-STORM")
    settle()
    record = EarningRecord.objects.get()
    assert record.status == Status.FAILED
    assert (record.rate_limited, record.attempts) == (5, 2)  # 3 free 429s, then 2 that used up the attempts
    assert "gave up after 2 attempts: rate-limited 5 times, more than RETRY['MAX_RATE_LIMITED']" in (
        record.status_reason
    )
    assert record.attempt_set.count() == 5
    assert points_api.awards("SO-STORM") == 0


def test_the_body_is_stored_once_and_every_attempt_still_shows_what_it_sent(place_order, points_api, admin_client):
    points_api.script("429", "429")
    place_order("SO-BODY")
    settle()
    record = EarningRecord.objects.get()
    attempts = list(record.attempt_set.order_by("number"))
    assert [a.outcome for a in attempts] == ["rate_limited", "rate_limited", "awarded"]
    assert attempts[0].request_body == record.payload
    assert [a.request_body for a in attempts[1:]] == [None, None]  # not a copy per attempt
    assert len({a.request_sha256 for a in attempts}) == 1 and len(attempts[0].request_sha256) == 64
    assert attempt_body(attempts[2]) == (record.payload, 1)
    timeline = admin_client.get(page(record)).content.decode().split('id="pe-attempts"')[1]
    shown = [part.split("</pre>")[0] for part in timeline.split("the same body as attempt 1")[1:]]
    assert len(shown) == 2
    assert all("&quot;order_number&quot;: &quot;SO-BODY&quot;" in body for body in shown)  # and the body itself


def test_a_changed_body_is_stored_again(place_order, points_api):
    points_api.script("500")
    place_order("SO-CHG")
    settle()
    record = EarningRecord.objects.get()
    assert record.attempt_set.get(number=2).request_body is None
    EarningRecord.objects.filter(pk=record.pk).update(
        status=Status.QUEUED, next_attempt_at=timezone.now(), payload={**record.payload, "total_price": 1}
    )
    settle()
    third = record.attempt_set.get(number=3)
    assert third.request_body["total_price"] == 1


def test_an_order_over_the_line_or_metadata_limit_is_rejected_at_checkout(place_order, settings, monkeypatch):
    from tests.shop.adapters import ShopAdapter

    with_settings(settings, LIMITS={"MAX_LINES": 3, "MAX_METADATA_BYTES": 1000})
    place_order("SO-LINES", lines=[("Tea", "5.00", 1)] * 4)
    many = EarningRecord.objects.get(order_number="SO-LINES")
    assert (many.status, many.payload) == (Status.REJECTED, None)
    assert many.status_reason == 'order has more than 3 lines, the limit set by POINTS_EARN["LIMITS"]["MAX_LINES"]'

    monkeypatch.setattr(ShopAdapter, "get_metadata", lambda self, order: {"notes": "x" * 3_000_000}, raising=False)
    place_order("SO-META")
    big = EarningRecord.objects.get(order_number="SO-META")
    assert big.status == Status.REJECTED
    assert big.status_reason.startswith("metadata is 3000012 bytes as JSON, more than the 1000 allowed by")
    assert len(json.dumps(big.request)) < 5000  # the 3 MB are not stored
    with pytest.raises(Exception, match="metadata is 3000012 bytes"):  # nor sent without them by a correction
        corrections.correct_and_requeue(big, {"phone": "0551234567"}, actor="agent")

    monkeypatch.undo()
    place_order("SO-FITS", lines=[("Tea", "5.00", 1)] * 3)
    assert EarningRecord.objects.get(order_number="SO-FITS").status == Status.QUEUED


# -- 4. the first call after a timeout ---------------------------------------------------------------------------
def test_the_first_call_after_a_timeout_is_the_resend_of_the_timed_out_record(place_order, points_api, settings):
    points_api.script("slow")  # SO-T1 times out; the platform created it all the same
    for n in (1, 2, 3):
        place_order(f"SO-T{n}")
    settle()
    statuses = dict(EarningRecord.objects.values_list("order_number", "status"))
    # SO-T1's resend got "duplicate": Points holds it (accepted, until its approved webhook).
    assert statuses == {"SO-T1": Status.ACCEPTED, "SO-T2": Status.AWARDED, "SO-T3": Status.AWARDED}
    calls = list(EarningAttempt.objects.order_by("started_at").values_list("record__order_number", "outcome"))
    assert calls[:2] == [("SO-T1", "unavailable"), ("SO-T1", "duplicate")]  # nothing went in between
    timed_out, resend = EarningAttempt.objects.filter(record__order_number="SO-T1").order_by("number")
    cooldown = settings.POINTS_EARN["DRAIN"]["COOLDOWN_AFTER_TIMEOUT"]
    assert (resend.started_at - timed_out.finished_at).total_seconds() >= cooldown
    assert AccountState.objects.get(account="main").resend_first is None  # settled: the account is free
    assert [points_api.awards(f"SO-T{n}") for n in (1, 2, 3)] == [1, 1, 1]
    assert points_api.overlaps("main") == 0


def test_a_429_to_the_resend_means_still_working_and_the_resend_stays_first(place_order, sandbox, settings):
    """The platform is still working on the timed-out call when the cooldown ends: it answers the resend 429, and
    the drain asks again (the same record) until the answer comes: no other order runs into that work."""
    from django_points_earn.sandbox import SandboxServer

    sandbox.script("slow")
    sandbox.set_faults(slow_seconds=3.2)  # read timeout 2 s + cooldown 0.6 s: still working at the resend
    with SandboxServer(sandbox) as server:
        accounts = {**settings.POINTS_EARN["ACCOUNTS"]}
        accounts["main"] = {**accounts["main"], "BASE_URL": server.points_base_url}
        with_settings(settings, ACCOUNTS=accounts)
        place_order("SO-W1")
        place_order("SO-W2")
        drain_account("main")
    first = EarningRecord.objects.get(order_number="SO-W1")
    second = EarningRecord.objects.get(order_number="SO-W2")
    assert (first.status, second.status) == (Status.ACCEPTED, Status.AWARDED)  # SO-W1: a duplicate answer
    outcomes = list(first.attempt_set.order_by("number").values_list("outcome", flat=True))
    assert outcomes[0] == "unavailable" and outcomes[-1] == "duplicate"
    assert set(outcomes[1:-1]) == {"rate_limited"}  # "still working": asked again, the same record
    assert list(second.attempt_set.values_list("outcome", flat=True)) == ["awarded"]  # never refused
    assert second.attempt_set.get().started_at > first.attempt_set.latest("number").finished_at
    assert (sandbox.awards("SO-W1"), sandbox.awards("SO-W2")) == (1, 1)


# -- 5. a worker that dies mid-call ------------------------------------------------------------------------------
def test_a_live_call_longer_than_the_lease_keeps_its_claim(place_order, sandbox, settings):
    """The lease is short (a killed worker's expires within seconds) and renewed while the call is in flight: a
    call that outlasts it is never taken for a dead worker's, and the account lock is kept as long."""
    from django_points_earn import queueing
    from django_points_earn.conf import get_settings

    with_settings(settings, LEASE_SECONDS=4, HTTP_TIMEOUT=(1.0, 9.0))
    sandbox.set_faults(latency_ms=6000)  # 1.5 leases
    place_order("SO-LONG")
    seen = {}
    original = sandbox.handle

    def handle(method, path, headers, body):
        response = original(method, path, headers, body)  # returns after the latency: the call is still ours
        seen["recovered"] = sweep().recovered_leases
        record = EarningRecord.objects.get()
        seen["status"] = record.status
        seen["lease_left"] = (record.lease_expires_at - timezone.now()).total_seconds()
        seen["lock"] = queueing.drain_active("main")
        connection.close()
        return response

    sandbox.handle = handle
    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        register_responses(rsps, sandbox, POINTS_URL)
        drain_account("main")
    assert seen["recovered"] == 0 and seen["status"] == Status.SENDING
    assert seen["lease_left"] > 0 and seen["lock"]
    record = EarningRecord.objects.get()
    assert record.status == Status.AWARDED and list(record.attempt_set.values_list("outcome", flat=True)) == ["awarded"]
    assert get_settings().lease_seconds == 4


def test_an_abandoned_claim_expires_within_the_lease(place_order):
    """What a killed worker leaves: a claim nobody renews is recovered once its (short) lease is over."""
    from django_points_earn.conf import DEFAULTS

    assert DEFAULTS["LEASE_SECONDS"] <= 8  # with SWEEP_INTERVAL (5 s): a dead worker costs its account <= 15 s
    place_order("SO-DEAD")
    record = lifecycle.claim(EarningRecord.objects.get().pk, lease_seconds=DEFAULTS["LEASE_SECONDS"])
    assert sweep().recovered_leases == 0
    EarningRecord.objects.filter(pk=record.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=0.1))
    assert sweep().recovered_leases == 1


def test_a_long_wait_asked_by_the_platform_frees_the_worker_and_the_sweep_brings_the_account_back(
    place_order, settings
):
    """A resend after a timeout answered 429 with Retry-After 3 (longer than DRAIN["MAX_WAIT"], 2 s): the drain job
    used to sleep it out in place until DRAIN["MAX_SECONDS"] (60 s in production), a worker idle while other
    accounts' jobs queued. Now the job ends at once, the resend stays first, and the sweep brings the account back
    when the record is due."""
    import requests

    from django_points_earn.reconcile import sweep
    from tests.conftest import POINTS_URL, run_worker

    with_settings(settings, RETRY={**settings.POINTS_EARN["RETRY"], "MAX_DELAY": 120.0})
    url = f"{POINTS_URL}/orders/earning"
    awarded = {"status": True, "data": {"uuid": "uuid-hold", "order_number": "SO-HOLD", "total_points": 370}}
    with responses_lib.RequestsMock() as rsps:
        rsps.post(url, body=requests.ReadTimeout("read timed out"))
        rsps.post(url, status=429, json={"message": "busy"}, headers={"Retry-After": "3"})
        rsps.post(url, json=awarded)
        place_order("SO-HOLD")
        started = time.monotonic()
        run_worker()
        held_for = time.monotonic() - started
        record = EarningRecord.objects.get()
        state = AccountState.objects.get(account="main")
        assert held_for < 2.5, held_for  # not 30 s (the test settings' MAX_SECONDS) of an idle worker
        assert (record.status, state.resend_first) == (Status.QUEUED, record.pk)
        deadline = time.monotonic() + 15
        while record.status != Status.AWARDED and time.monotonic() < deadline:
            time.sleep(0.5)
            sweep()
            run_worker()
            record.refresh_from_db()
    assert record.status == Status.AWARDED
    outcomes = list(record.attempt_set.order_by("number").values_list("outcome", flat=True))
    assert outcomes == ["unavailable", "rate_limited", "awarded"]  # nothing went in between, nothing twice
