"""Dispatch end to end in one process: real Redis queue, real database, the sandbox behind `responses`.

The drain's mechanics, true of any platform (they run on the Points sandbox); Points' own answers are in
test_points_flow.py."""

import itertools

import pytest
import responses as responses_lib

from django_points_earn import corrections, lifecycle
from django_points_earn.models import AccountState, EarningAttempt, EarningRecord, Status
from django_points_earn.reconcile import sweep
from tests.conftest import POINTS_URL, run_worker, settle

pytestmark = pytest.mark.django_db(transaction=True)


def test_rate_limited_calls_are_retried_without_using_attempts(place_order, points_api):
    points_api.script("429", "429", "429")
    place_order("SO-429")
    settle()
    record = EarningRecord.objects.get()
    assert record.status == Status.AWARDED
    assert (record.attempts, record.rate_limited) == (0, 3)
    assert list(record.attempt_set.values_list("outcome", flat=True)) == [
        "rate_limited",
        "rate_limited",
        "rate_limited",
        "awarded",
    ]
    assert points_api.awards("SO-429") == 1


def test_transient_failures_back_off_then_fail_and_can_be_retried(place_order, points_api, settings):
    points_api.script(*["500"] * 5)  # MAX_ATTEMPTS is 5 in the test settings
    place_order("SO-FAIL")
    settle()
    record = EarningRecord.objects.get()
    assert (record.status, record.attempts) == (Status.FAILED, 5)
    assert "gave up after 5 attempts" in record.status_reason
    times = list(record.attempt_set.order_by("number").values_list("started_at", flat=True))
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(gap >= settings.POINTS_EARN["RETRY"]["MIN_DELAY"] for gap in gaps)

    assert corrections.requeue(record, trigger="admin", actor="support")
    settle()
    record.refresh_from_db()
    assert record.status == Status.AWARDED
    assert points_api.awards("SO-FAIL") == 1


def test_every_attempt_is_committed_before_its_call(place_order, sandbox, monkeypatch):
    """What the platform sees in flight is already in the database as an open attempt."""
    seen = []
    original = sandbox.handle

    def spy(method, path, headers, body):
        seen.append(list(EarningAttempt.objects.values_list("number", "finished_at")))
        return original(method, path, headers, body)

    monkeypatch.setattr(sandbox, "handle", spy)
    from django_points_earn.sandbox import register_responses

    with responses_lib.RequestsMock() as rsps:
        register_responses(rsps, sandbox, POINTS_URL)
        place_order("SO-WAL")
        run_worker()
    assert seen == [[(1, None)]]
    assert EarningRecord.objects.get().status == Status.AWARDED


def test_a_claimed_record_cannot_be_claimed_twice(place_order):
    place_order("SO-CLAIM")
    record = EarningRecord.objects.get()
    first = lifecycle.claim(record.pk, lease_seconds=30)
    second = lifecycle.claim(record.pk, lease_seconds=30)
    assert first is not None and first.status == Status.SENDING
    assert second is None


def test_a_record_read_before_another_claim_and_release_cannot_be_claimed_from_that_read(place_order):
    """The drain claims the row it read, not just its id: if the row changed since (claimed and given back by
    another drain, say), the claim fails and the drain reads again."""
    from django_points_earn.earning_states import EARNINGS

    def next_due_record(account):
        return EARNINGS.due(account).first()

    place_order("SO-STALE")
    stale = next_due_record("main")
    other = lifecycle.claim(stale.pk, lease_seconds=30)
    assert lifecycle.release(other, "account lock lost")
    assert EarningRecord.objects.get().status == Status.QUEUED  # due again, yet not the row we read
    assert lifecycle.claim(stale, lease_seconds=30) is None
    fresh = next_due_record("main")
    claimed = lifecycle.claim(fresh, lease_seconds=30)
    assert claimed is fresh and claimed.status == Status.SENDING
    assert EarningRecord.objects.get().lease_token == claimed.lease_token


def test_expired_lease_is_recovered_as_unknown_outcome(place_order):
    from datetime import timedelta

    from django.utils import timezone

    place_order("SO-LEASE")
    record = lifecycle.claim(EarningRecord.objects.get().pk, lease_seconds=30)
    lifecycle.start_attempt(record, trigger="worker")
    assert sweep().recovered_leases == 0  # lease still valid
    EarningRecord.objects.filter(pk=record.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert sweep().recovered_leases == 1
    record.refresh_from_db()
    assert (record.status, record.outcome_unknown, record.attempts) == (Status.QUEUED, True, 1)
    assert record.attempt_set.get().outcome == "abandoned"


def test_each_order_goes_to_its_account_and_accounts_do_not_wait_for_each_other(place_order, sandbox, settings):
    from django_points_earn.sandbox import register_responses

    sandbox.add_merchant(settings.POINTS_EARN["ACCOUNTS"]["branch"]["API_KEY"], "branch")
    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        register_responses(rsps, sandbox, POINTS_URL)
        sandbox.forbid("main")  # one account refused...
        place_order("SO-M1", account="main")
        place_order("SO-B1", account="branch")
        place_order("SO-B2", account="branch")
        run_worker()
    # ...does not hold up the other
    assert dict(EarningRecord.objects.values_list("order_number", "status")) == {
        "SO-M1": Status.BLOCKED,
        "SO-B1": Status.AWARDED,
        "SO-B2": Status.AWARDED,
    }
    assert sandbox.total_awards("branch") == 2
    assert sandbox.total_awards("main") == 0
    assert not AccountState.objects.filter(account="branch", paused=True).exists()


def test_output_signals_tell_the_shop(place_order, points_api):
    from django_points_earn.signals import earning_awarded, earning_failed

    heard = []

    def awarded(sender, record, **kwargs):
        heard.append(("awarded", record.order_number, record.status))

    def failed(sender, record, **kwargs):
        heard.append(("failed", record.order_number, record.status))

    earning_awarded.connect(awarded)
    earning_failed.connect(failed)
    try:
        points_api.revoke(settings_key())
        place_order("SO-SIG-1")
        run_worker()
        points_api.add_merchant(settings_key(), "main")
        corrections.resume_account("main")
        settle()
    finally:
        earning_awarded.disconnect(awarded)
        earning_failed.disconnect(failed)
    assert heard == [("failed", "SO-SIG-1", Status.BLOCKED), ("awarded", "SO-SIG-1", Status.AWARDED)]


def settings_key():
    from django.conf import settings

    return settings.POINTS_API_KEY


def test_resolve_and_correct_are_audited(place_order, points_api):
    place_order("SO-FIX", phone="12345")
    record = EarningRecord.objects.get()
    with pytest.raises(Exception, match="not a Saudi mobile"):
        corrections.correct_and_requeue(record, {"phone": "0412345678"}, actor="agent")
    record.refresh_from_db()
    assert record.status == Status.REJECTED  # a bad correction changes nothing

    record = corrections.correct_and_requeue(record, {"phone": "+966 55 123 4567"}, actor="agent")
    assert (record.status, record.phone, record.payload["phone_number"]) == (Status.QUEUED, "551234567", "551234567")
    event = record.event_set.get()
    assert event.actor == "agent"
    assert "phone: '***45' → '5*****567'" in event.note
    settle()
    assert points_api.awards("SO-FIX") == 1

    place_order("SO-GONE", phone="")
    gone = EarningRecord.objects.get(order_number="SO-GONE")
    with pytest.raises(ValueError, match="needs a note"):
        corrections.resolve(gone, actor="agent", note=" ")
    assert corrections.resolve(gone, actor="agent", note="awarded by hand in the Points dashboard")
    gone.refresh_from_db()
    assert gone.status == Status.RESOLVED
    assert gone.status_reason == "resolved by agent: awarded by hand in the Points dashboard"


def test_a_live_claim_elsewhere_stops_a_drain_even_if_redis_forgot_the_lock(place_order, points_api, clean_redis):
    """Redis flushed while worker A is mid-call: worker B gets the lock, but the database shows A's live lease."""
    from datetime import timedelta

    from django.utils import timezone

    from django_points_earn.dispatch import drain_account

    place_order("SO-A")
    place_order("SO-B")
    in_flight = lifecycle.claim(EarningRecord.objects.get(order_number="SO-A").pk, lease_seconds=30)
    clean_redis.flushall()  # A's lock key is gone
    report = drain_account("main")
    assert report.busy and report.sent == 0
    assert points_api.ledger()["merchants"]["main"]["calls"] == 0

    EarningRecord.objects.filter(pk=in_flight.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    settle()  # A's lease expires: recovered, resent with the same order number; B's goes too
    assert set(EarningRecord.objects.values_list("status", flat=True)) == {Status.AWARDED}
    assert points_api.overlaps("main") == 0


def test_the_next_call_is_prepared_while_one_is_in_flight_yet_calls_never_overlap(place_order, points_api):
    """The drain claims the next record and writes its attempt during the current call, and sends it only after."""
    points_api.set_faults(latency_ms=15)  # every call really takes a while, in the call thread
    for n in range(6):
        place_order(f"SO-P{n}")
    run_worker()
    assert set(EarningRecord.objects.values_list("status", flat=True)) == {Status.AWARDED}
    attempts = list(EarningAttempt.objects.order_by("started_at").values_list("started_at", "finished_at"))
    assert len(attempts) == 6  # one attempt per order: nothing prepared was left behind
    # Each attempt after the first was written before its predecessor's answer was recorded...
    assert all(later[0] < earlier[1] for earlier, later in itertools.pairwise(attempts))
    # ...yet the platform never had two calls of the account at once, and credited each order once.
    assert points_api.overlaps("main") == 0
    assert [points_api.awards(f"SO-P{n}") for n in range(6)] == [1] * 6


def test_no_call_follows_a_timeout_until_the_cooldown(place_order, points_api, settings):
    """A call with no answer may still run on the platform: the record prepared meanwhile waits, unsent."""
    points_api.script("slow")  # the first call times out (the platform created the order all the same)
    place_order("SO-T1")
    place_order("SO-T2")
    settle()
    first = EarningRecord.objects.get(order_number="SO-T1")
    second = EarningRecord.objects.get(order_number="SO-T2")
    assert (first.status, second.status) == (Status.ACCEPTED, Status.AWARDED)
    timed_out = first.attempt_set.get(number=1)
    assert timed_out.outcome == "unavailable" and timed_out.outcome_unknown
    sent = second.attempt_set.get()  # the attempt prepared during the timed-out call was given back, not kept
    assert sent.number == 1 and sent.outcome == "awarded"
    gap = (sent.started_at - timed_out.finished_at).total_seconds()
    assert gap >= settings.POINTS_EARN["DRAIN"]["COOLDOWN_AFTER_TIMEOUT"]
    assert points_api.overlaps("main") == 0
    assert (points_api.awards("SO-T1"), points_api.awards("SO-T2")) == (1, 1)


def test_an_unexpected_error_in_a_call_ends_that_attempt_and_the_drain_goes_on(place_order, sandbox):
    """Issue 13 item 2: an exception while handling one record (here the transport raising something no one
    foresaw) ends that record's attempt with the error; the drain goes on with the next record, and never dies."""
    from django_points_earn.dispatch import drain_account
    from django_points_earn.sandbox import register_responses

    place_order("SO-E1")
    place_order("SO-E2")
    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.post(f"{POINTS_URL}/orders/earning", body=RuntimeError("the transport broke in an unforeseen way"))
        register_responses(rsps, sandbox, POINTS_URL)
        report = drain_account("main")  # does not raise
        failed = EarningRecord.objects.get(order_number="SO-E1")
        assert failed.status in (Status.QUEUED, Status.AWARDED)  # retried with backoff (or already, if it was due)
        first = failed.attempt_set.get(number=1)
        assert first.finished_at is not None and first.outcome == "unavailable" and first.outcome_unknown
        assert "RuntimeError: the transport broke in an unforeseen way" in first.error
        assert EarningRecord.objects.get(order_number="SO-E2").status == Status.AWARDED  # the drain went on
        assert report.outcomes.get(Status.AWARDED, 0) >= 1
        settle()
    assert set(EarningRecord.objects.values_list("status", flat=True)) == {Status.AWARDED}
    assert (sandbox.awards("SO-E1"), sandbox.awards("SO-E2")) == (1, 1)


class JobTimeout(Exception):
    """Stands for rq.timeouts.JobTimeoutException, which RQ raises in the job's thread from SIGALRM."""


def test_a_job_timeout_while_a_call_is_in_flight_still_records_its_answer(place_order, points_api):
    """The call thread finishes the call whatever happens to the drain's thread (the account lock is held until it
    has): its answer, with the only uuid Points will ever give for it, must be recorded, not left to the lease."""
    import signal

    from django_points_earn.dispatch import drain_account

    points_api.set_faults(latency_ms=400)
    place_order("SO-I1")
    place_order("SO-I2")

    def on_alarm(signum, frame):
        raise JobTimeout("Task exceeded maximum timeout value")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.2)  # SO-I1's call in flight, SO-I2 prepared behind it
    try:
        with pytest.raises(JobTimeout):
            drain_account("main")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    first = EarningRecord.objects.get(order_number="SO-I1")
    assert points_api.awards("SO-I1") == 1
    assert first.status == Status.AWARDED and first.remote_id  # a resend would only get "duplicate", no uuid
    second = EarningRecord.objects.get(order_number="SO-I2")
    assert (second.status, second.attempt_set.count()) == (Status.QUEUED, 0)  # prepared, given back unsent


def _during_call(sandbox, order_number, action):
    """A sandbox that runs ``action()`` (in the call thread) when ``order_number``'s first earning call arrives."""
    import json

    original = sandbox.handle
    pending = [action]

    def handle(method, path, headers, body):
        if pending and body and json.loads(body).get("order_number") == order_number:
            pending.pop()()
        return original(method, path, headers, body)

    return handle


def _wait_until_sending(order_number: str) -> None:
    """From the call thread: give the drain's thread time to prepare ``order_number`` behind the call in flight,
    then check that it did. (Not a polling loop: on SQLite's shared in-memory test database, reads from this
    thread while the drain's thread writes would make that write fail with "table is locked".)"""
    import time

    from django.db import connection

    time.sleep(0.5)  # preparing takes a few milliseconds
    try:
        status = EarningRecord.objects.get(order_number=order_number).status
        assert status == Status.SENDING, f"{order_number} was not prepared behind the call: {status}"
    finally:
        connection.close()  # this thread's own connection


def test_redis_gone_between_an_answer_and_the_next_call_loses_neither(place_order, sandbox, settings):
    """A call that took over a second makes the drain confirm its account lock before starting the record it
    prepared meanwhile. Redis is gone by then: the answer in hand is recorded, the prepared record given back."""
    from django_points_earn.dispatch import drain_account
    from django_points_earn.redis_server import start_redis
    from django_points_earn.sandbox import register_responses

    doomed = start_redis()
    good_url = settings.RQ_QUEUES["default"]["URL"]
    settings.RQ_QUEUES["default"]["URL"] = doomed.url
    sandbox.set_faults(latency_ms=1100)  # longer than LOCK_REFRESH_AFTER

    def redis_dies():
        _wait_until_sending("SO-R2")
        doomed.stop()

    try:
        place_order("SO-R1")
        place_order("SO-R2")
        with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            sandbox.handle = _during_call(sandbox, "SO-R1", redis_dies)
            register_responses(rsps, sandbox, POINTS_URL)
            with pytest.raises(Exception, match=r"(?i)connect"):
                drain_account("main")
    finally:
        doomed.stop()
        settings.RQ_QUEUES["default"]["URL"] = good_url
    first = EarningRecord.objects.get(order_number="SO-R1")
    second = EarningRecord.objects.get(order_number="SO-R2")
    assert first.status == Status.AWARDED and first.remote_id
    assert (second.status, second.attempt_set.count()) == (Status.QUEUED, 0)  # not sent: no lock to prove it
    assert (sandbox.awards("SO-R1"), sandbox.awards("SO-R2")) == (1, 0)


def test_a_full_refund_of_an_earning_prepared_then_given_back_cancels_it(place_order, sandbox):
    """SO-B is claimed behind SO-A's call (sending, yet never sent) when the shop refunds it in full; SO-A then
    times out, so SO-B goes back unsent. Nothing went out for SO-B: cancelled, never sent, like any full refund
    of an unsent earning (not awarded and then reversed)."""
    from django_points_earn.sandbox import register_responses
    from django_points_earn.signals import order_refunded
    from tests.shop.models import Order

    sandbox.script("slow")  # SO-A's call times out (the platform created it all the same)
    place_order("SO-A")
    b = place_order("SO-B")

    def refund_b():
        _wait_until_sending("SO-B")
        order_refunded.send(sender=Order, order=b, amount=None, reason="returned", refund_id="R-B")
        from django.db import connection

        connection.close()

    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        sandbox.handle = _during_call(sandbox, "SO-A", refund_b)
        register_responses(rsps, sandbox, POINTS_URL)
        settle()
    record = EarningRecord.objects.get(order_number="SO-B")
    assert record.status == Status.CANCELLED
    assert record.reversal_set.get().status == "cancelled"
    assert (sandbox.awards("SO-A"), sandbox.awards("SO-B")) == (1, 0)


def test_a_record_prepared_behind_a_long_call_has_its_lease_renewed_before_it_goes(place_order, sandbox, settings):
    """Behind a call that took over a second, the prepared record is started by the drain's thread, which first
    confirms the account lock and renews the record's lease: the lease covers its whole call, not what is left."""
    from django.db import connection
    from django.utils import timezone

    from django_points_earn.dispatch import drain_account
    from django_points_earn.sandbox import register_responses

    sandbox.set_faults(latency_ms=1200)  # longer than LOCK_REFRESH_AFTER
    place_order("SO-L1")
    place_order("SO-L2")
    lease = settings.POINTS_EARN["LEASE_SECONDS"]
    left = []

    def note_lease():
        record = EarningRecord.objects.get(order_number="SO-L2")
        left.append((record.lease_expires_at - timezone.now()).total_seconds())
        connection.close()

    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        sandbox.handle = _during_call(sandbox, "SO-L2", note_lease)
        register_responses(rsps, sandbox, POINTS_URL)
        drain_account("main")
    assert set(EarningRecord.objects.values_list("status", flat=True)) == {Status.AWARDED}
    assert left and left[0] > lease - 0.5  # renewed when sent, not claimed 1.2 s before
    assert sandbox.overlaps("main") == 0
