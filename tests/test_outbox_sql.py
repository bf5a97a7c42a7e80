"""PostgreSQL's hot path (``django_points_earn.outbox_sql``) writes what the ORM path writes, in fewer statements.

The ORM path is the reference (what every other database runs): each comparison sends one order through it and
another the way the drain takes it (the hot path first, the general path when the hot path says ``None``), under the
same frozen clock and the same jitter, and compares what the database holds. On SQLite the drain's way *is* the ORM
path, so these tests hold of the reference there; on PostgreSQL they also check that the hot path was taken.
"""

from __future__ import annotations

import random
import threading
import time
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_points_earn import accounts, lifecycle, outbox_sql, reversals
from django_points_earn.attempts import payload_digest
from django_points_earn.dispatch import drain_account
from django_points_earn.earning_states import EARNINGS
from django_points_earn.models import (
    AccountState,
    EarningAttempt,
    EarningEvent,
    EarningRecord,
    Reversal,
    ReversalStatus,
    Status,
    Trigger,
)
from django_points_earn.outbox import SENDING, Audit
from django_points_earn.providers.base import (
    AWARDED,
    PENDING_ACTIVATION,
    RATE_LIMITED,
    REJECTED,
    UNAUTHORIZED,
    UNAVAILABLE,
    EarnResult,
)

pytestmark = pytest.mark.django_db
ON_PG = connection.vendor == "postgresql"
pg_only = pytest.mark.skipif(not ON_PG, reason="the hot path is PostgreSQL's")

# What differs between two orders whatever the path: their identity, their bodies, their random lease tokens.
OWN_RECORD = {"id", "order_number", "order_id", "request", "payload", "lease_token"}
OWN_ATTEMPT = {"id", "record_id", "request_id", "request_body", "request_sha256"}

ANSWERS = {
    "awarded": EarnResult(
        AWARDED,
        http_status=200,
        remote_id="3f0c7c2e-uuid",
        remote_reference="REF-1",
        remote_status="approved",
        points=Decimal("37.5"),
        body={"uuid": "3f0c7c2e-uuid", "points": 37.5},
        raw_text='{"uuid": "3f0c7c2e-uuid", "points": 37.5}',
        duration_ms=21,
    ),
    "pending": EarnResult(
        PENDING_ACTIVATION,
        message="the customer has not activated their account",
        http_status=200,
        remote_reference="REF-2",
        points=Decimal("12"),
        body={"status": "pending_client_activation"},
        raw_text='{"status": "pending_client_activation"}',
        duration_ms=19,
    ),
    "retry": EarnResult(
        UNAVAILABLE, message="HTTP 503", http_status=503, outcome_unknown=True, raw_text="busy", duration_ms=7
    ),
    "429": EarnResult(RATE_LIMITED, message="HTTP 429", http_status=429, retry_after=0.2, raw_text="", duration_ms=3),
    "rejected": EarnResult(
        REJECTED,
        message="mobile: invalid",
        http_status=422,
        body={"errors": {"mobile": ["invalid"]}},
        raw_text='{"errors": {"mobile": ["invalid"]}}',
        duration_ms=9,
    ),
    "blocked": EarnResult(UNAUTHORIZED, message="bad key", http_status=400, raw_text="{}", duration_ms=4),
}


@pytest.fixture
def clock(monkeypatch):
    """``timezone.now()`` frozen (as both paths read it); ``clock.forward(seconds)`` moves it on."""

    class Clock:
        now = timezone.now().replace(microsecond=0)

        def forward(self, seconds: float) -> None:
            self.now += timedelta(seconds=seconds)

    frozen = Clock()
    monkeypatch.setattr(timezone, "now", lambda: frozen.now)
    return frozen


@pytest.fixture
def reference(monkeypatch):
    """A block run on the ORM path, as on every database but PostgreSQL: the behaviour the hot path matches."""

    @contextmanager
    def orm_path():
        with monkeypatch.context() as patched:
            patched.setattr(outbox_sql, "in_use", lambda: False)
            yield

    return orm_path


def drain_claim(account: str = "main", *, hot: bool = True, actor: str = ""):
    """Claim as the drain does: the hot path first, the general path (the next due record) when it says None.
    ``hot``: on PostgreSQL, the hot path must have been the one that claimed."""
    claimed = lifecycle.claim_next_due(account, lease_seconds=30, trigger=Trigger.WORKER, actor=actor)
    assert (claimed is not None) == (ON_PG and hot)
    if claimed is None:
        due = EARNINGS.due(account).first()
        claimed = lifecycle.claim_and_start_attempt(due, lease_seconds=30, trigger=Trigger.WORKER, actor=actor)
    return claimed


def reference_claim(pk: int, actor: str = ""):
    return lifecycle.claim_and_start_attempt(pk, lease_seconds=30, trigger=Trigger.WORKER, actor=actor)


def columns(instance, skip=frozenset()) -> dict:
    return {
        f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields if f.attname not in skip
    }


def timeline(record) -> list[tuple]:
    """The record's attempts (but their own ids and bodies) and its audit entries."""
    attempts = [columns(a, OWN_ATTEMPT) for a in EarningAttempt.objects.filter(record_id=record.pk).order_by("number")]
    events = list(
        EarningEvent.objects.filter(record_id=record.pk)
        .order_by("id")
        .values_list("from_status", "to_status", "trigger", "actor", "note", "at", "reversal_id")
    )
    return [attempts, events]


def assert_same_writes(a: EarningRecord, b: EarningRecord) -> None:
    """Two records went through the two paths: the database holds the same for both (but what is their own)."""
    a_row, b_row = EarningRecord.objects.get(pk=a.pk), EarningRecord.objects.get(pk=b.pk)
    assert columns(b_row, OWN_RECORD) == columns(a_row, OWN_RECORD)
    assert bool(b_row.lease_token) == bool(a_row.lease_token)
    assert timeline(b) == timeline(a)


# -- the claim ---------------------------------------------------------------------------------------------------------
def test_the_claim_writes_and_returns_what_the_orm_claim_does(place_order, clock, reference):
    place_order("SO-A")
    place_order("SO-B")
    a_pk = EarningRecord.objects.get(order_number="SO-A").pk
    with reference():
        a, _ = reference_claim(a_pk, actor="ops")
    b, b_attempt = drain_claim(actor="ops")
    assert b.order_number == "SO-B"
    assert_same_writes(a, b)
    # What the hot path returns is the rows as written, not read again: the same as a fresh read.
    assert columns(b) == columns(EarningRecord.objects.get(pk=b.pk))
    assert columns(b_attempt) == columns(EarningAttempt.objects.get(pk=b_attempt.pk))
    assert columns(b, OWN_RECORD) == columns(a, OWN_RECORD)
    assert (b_attempt.number, b_attempt.request_body, b_attempt.started_at) == (1, b.payload, clock.now)
    assert b_attempt.request_sha256 == payload_digest(b.payload)
    assert b.lease_expires_at == clock.now + timedelta(seconds=30)


@pytest.mark.parametrize("answer", list(ANSWERS))
def test_an_answer_is_written_as_the_orm_path_writes_it(answer, place_order, clock, reference):
    """The record's fields, the attempt (number, body, digest, outcome), the audit entry: for every kind of answer."""
    place_order("SO-A")
    place_order("SO-B")
    a_pk = EarningRecord.objects.get(order_number="SO-A").pk
    with reference():
        a, a_attempt = reference_claim(a_pk)
    b, b_attempt = drain_claim()  # before A's answer: a blocked one pauses the account
    assert b.order_number == "SO-B"
    with reference():
        random.seed(11)  # the backoff's jitter: the same draw for both
        a_saved = lifecycle.complete(a, a_attempt, ANSWERS[answer])
    random.seed(11)
    b_saved = lifecycle.complete(b, b_attempt, ANSWERS[answer])
    assert_same_writes(a, b)
    assert columns(b_saved, OWN_RECORD) == columns(a_saved, OWN_RECORD)
    assert columns(b_attempt, OWN_ATTEMPT) == columns(a_attempt, OWN_ATTEMPT)  # the instances are closed too
    assert b_attempt.outcome == ANSWERS[answer].status and b_attempt.finished_at == clock.now
    expected = {"awarded": Status.AWARDED, "pending": Status.PENDING_ACTIVATION, "rejected": Status.REJECTED}
    expected |= {"retry": Status.QUEUED, "429": Status.QUEUED, "blocked": Status.BLOCKED}
    assert b_saved.status == expected[answer]


def test_resends_are_numbered_on_the_timeline_and_store_an_unchanged_body_once(place_order, clock, reference):
    place_order("SO-A")
    place_order("SO-B")
    a_pk = EarningRecord.objects.get(order_number="SO-A").pk
    b_pk = EarningRecord.objects.get(order_number="SO-B").pk
    for round_ in range(3):
        if round_ == 2:  # a corrected body is stored whole again
            for pk in (a_pk, b_pk):
                record = EarningRecord.objects.get(pk=pk)
                EarningRecord.objects.filter(pk=pk).update(payload={**record.payload, "branch": "Olaya"})
        with reference():
            a, a_attempt = reference_claim(a_pk)
            random.seed(round_)
            lifecycle.complete(a, a_attempt, ANSWERS["429"])
        b, b_attempt = drain_claim()
        assert b.pk == b_pk
        random.seed(round_)
        lifecycle.complete(b, b_attempt, ANSWERS["429"])
        clock.forward(5)  # both due again
    assert_same_writes(a, b)
    attempts = EarningAttempt.objects.filter(record_id=b_pk).order_by("number")
    stored = [(x.number, x.request_body is not None) for x in attempts]
    assert stored == [(1, True), (2, False), (3, True)]
    assert attempts[2].request_body["branch"] == "Olaya"


def test_oldest_due_first_and_nothing_before_its_time(place_order, clock):
    for number in ("SO-1", "SO-2", "SO-3", "SO-LATER"):
        place_order(number)
    due = EarningRecord.objects.filter
    due(order_number="SO-3").update(next_attempt_at=clock.now - timedelta(seconds=5))
    due(order_number="SO-LATER").update(next_attempt_at=clock.now + timedelta(seconds=5))
    claimed = [drain_claim()[0].order_number for _ in range(3)]
    assert claimed == ["SO-3", "SO-1", "SO-2"]  # by next attempt, then by id
    assert lifecycle.claim_next_due("main", lease_seconds=30, trigger=Trigger.WORKER) is None
    assert EarningRecord.objects.get(order_number="SO-LATER").status == Status.QUEUED


GATES = {
    "paused": {"paused": True, "reason": "bad key"},
    "busy": {"busy_until": "future"},
    "resend owed": {"resend_first": "SO-2"},
}


@pytest.mark.parametrize("gate", list(GATES))
def test_a_closed_gate_claims_nothing_and_touches_nothing(gate, place_order, clock):
    place_order("SO-1")
    place_order("SO-2")
    values = dict(GATES[gate])
    if "busy_until" in values:
        values["busy_until"] = clock.now + timedelta(seconds=1)
    if "resend_first" in values:
        values["resend_first"] = EarningRecord.objects.get(order_number="SO-2").pk
    AccountState.objects.create(account="main", **values)
    before = [columns(r) for r in EarningRecord.objects.order_by("id")]
    assert lifecycle.claim_next_due("main", lease_seconds=30, trigger=Trigger.WORKER) is None
    assert [columns(r) for r in EarningRecord.objects.order_by("id")] == before
    assert not EarningAttempt.objects.exists()
    # The general path is what says why (and what to do): the gate the drain reads there.
    read = accounts.account_gate("main")
    assert read.paused or read.wait > 0 or read.resend_first is not None


@pytest.mark.parametrize("state", ["no row", "all clear", "busy until just now"])
def test_an_open_gate_claims(state, place_order, clock):
    place_order("SO-1")
    if state == "all clear":
        AccountState.objects.create(account="main", paused=False, resumed_by="ops")
    elif state == "busy until just now":
        AccountState.objects.create(account="main", busy_until=clock.now)
    record, _ = drain_claim()
    assert record.status == Status.SENDING


def test_a_record_without_a_body_is_left_to_the_general_path_which_rejects_it(place_order, clock):
    place_order("SO-1")
    place_order("SO-2")
    EarningRecord.objects.filter(order_number="SO-1").update(payload=None)
    before = [columns(r) for r in EarningRecord.objects.order_by("id")]
    # The oldest due has no body: not passed over (the order stays the ORM's), not claimed either.
    assert lifecycle.claim_next_due("main", lease_seconds=30, trigger=Trigger.WORKER) is None
    assert [columns(r) for r in EarningRecord.objects.order_by("id")] == before
    assert not EarningAttempt.objects.exists()


# -- the answer --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["reference", "drain"])
def test_a_lost_lease_moves_nothing_but_the_attempt_keeps_the_answer(path, place_order, clock, reference):
    place_order("SO-1")
    with reference() if path == "reference" else nullcontext():
        record, attempt = drain_claim(hot=path == "drain")
        EarningRecord.objects.filter(pk=record.pk).update(lease_token="taken-over")  # e.g. by a sweep
        fields = {"lease_token": "", "lease_expires_at": None, "status_reason": "awarded", "completed_at": clock.now}
        move = EARNINGS.finish_and_move(
            record,
            attempt,
            ANSWERS["awarded"],
            SENDING,
            Status.AWARDED,
            fields,
            lease_token=record.lease_token,
            audit=Audit(Trigger.WORKER, "", "awarded"),
        )
    assert not move and move.moved is False and move.waited_on is None
    row = EarningRecord.objects.get(pk=record.pk)
    assert (row.status, row.lease_token, row.completed_at) == (Status.SENDING, "taken-over", None)
    assert not EarningEvent.objects.exists()
    attempt = EarningAttempt.objects.get()
    assert (attempt.outcome, attempt.finished_at, attempt.http_status) == (AWARDED, clock.now, 200)


def test_an_award_after_the_sweep_took_the_lease_still_wins(place_order, clock, reference):
    """The platform confirmed after a sweep gave the record up for dead: its word wins, on either path."""
    place_order("SO-A")
    place_order("SO-B")
    a_pk = EarningRecord.objects.get(order_number="SO-A").pk
    with reference():
        a, a_attempt = reference_claim(a_pk)
    b, b_attempt = drain_claim()
    clock.forward(60)  # past both leases: the sweep takes them back (due again, outcome unknown)
    assert lifecycle.recover_expired_leases() == 2
    with reference():
        a_saved = lifecycle.complete(a, a_attempt, ANSWERS["awarded"])
    b_saved = lifecycle.complete(b, b_attempt, ANSWERS["awarded"])
    assert (a_saved.status, b_saved.status) == (Status.AWARDED, Status.AWARDED)
    assert_same_writes(a, b)


def test_a_queued_move_needs_a_body_on_either_path(place_order, clock, reference):
    """The machine's guard (nothing without a body is queued to be sent) holds in the hot path's statement too."""
    place_order("SO-A")
    place_order("SO-B")
    a_pk = EarningRecord.objects.get(order_number="SO-A").pk
    with reference():
        a, a_attempt = reference_claim(a_pk)
    b, b_attempt = drain_claim()
    EarningRecord.objects.filter(pk__in=[a.pk, b.pk]).update(payload=None)
    with reference():
        a_saved = lifecycle.complete(a, a_attempt, ANSWERS["429"])
    b_saved = lifecycle.complete(b, b_attempt, ANSWERS["429"])
    assert (a_saved.status, b_saved.status) == (Status.SENDING, Status.SENDING)  # kept on the attempt only
    assert_same_writes(a, b)


def test_a_refund_waiting_for_the_call_is_released_by_its_award(place_order, clock):
    place_order("SO-1")
    record, attempt = drain_claim()
    reversal, _ = reversals.create(record, refund_id="R-1", amount=None, reason="returned")
    assert reversal.status == ReversalStatus.WAITING
    lifecycle.complete(record, attempt, ANSWERS["awarded"])
    reversal.refresh_from_db()
    assert reversal.status == ReversalStatus.QUEUED


def test_no_refund_is_looked_for_when_none_waits(place_order, clock):
    """On PostgreSQL the answer's one statement says whether a refund waits: none does, so none is read."""
    place_order("SO-1")
    record, attempt = drain_claim()
    with CaptureQueriesContext(connection) as queries:
        saved = lifecycle.complete(record, attempt, ANSWERS["awarded"])
    assert saved.status == Status.AWARDED
    reads = [q["sql"] for q in queries if q["sql"].startswith("SELECT") and Reversal._meta.db_table in q["sql"]]
    if ON_PG:
        assert reads == []
        statements = [q["sql"] for q in queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
        assert len(statements) == 1 and statements[0].startswith("WITH")
    else:
        assert len(reads) == 1  # the ORM path asks


# -- concurrency and cost (real transactions) --------------------------------------------------------------------------
@pg_only
@pytest.mark.django_db(transaction=True)
def test_two_claimants_never_get_the_same_earning(place_order):
    for n in range(30):
        place_order(f"SO-{n:02d}")
    start = threading.Barrier(2)
    got: dict[str, list[int]] = {"one": [], "two": []}

    def claimant(name: str) -> None:
        try:
            start.wait()
            while claimed := lifecycle.claim_next_due("main", lease_seconds=30, trigger=Trigger.WORKER):
                got[name].append(claimed[0].pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=claimant, args=(name,)) for name in got]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not set(got["one"]) & set(got["two"])
    assert sorted(got["one"] + got["two"]) == sorted(EarningRecord.objects.values_list("pk", flat=True))
    assert EarningAttempt.objects.count() == 30 and set(EarningAttempt.objects.values_list("number", flat=True)) == {1}
    assert set(EarningRecord.objects.values_list("status", flat=True)) == {Status.SENDING}


@pg_only
@pytest.mark.django_db(transaction=True)
def test_an_earning_another_claimant_holds_is_skipped_not_waited_for(place_order):
    """One claimant's transaction holds the oldest due earning (not committed yet): the next claimant takes the
    one after it at once, rather than waiting for that transaction (or giving up when it commits)."""
    place_order("SO-1")
    place_order("SO-2")
    holding, release = threading.Event(), threading.Event()
    held: list[str] = []

    def first_claimant() -> None:
        try:
            with transaction.atomic():
                claimed = lifecycle.claim_next_due("main", lease_seconds=30, trigger=Trigger.WORKER)
                held.append(claimed[0].order_number)
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=first_claimant)
    thread.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        claimed = lifecycle.claim_next_due("main", lease_seconds=30, trigger=Trigger.WORKER)
        waited = time.monotonic() - started
    finally:
        release.set()
        thread.join(10)
    assert held == ["SO-1"]
    assert claimed is not None and claimed[0].order_number == "SO-2" and waited < 2
    assert set(EarningRecord.objects.values_list("status", flat=True)) == {Status.SENDING}


@pg_only
@pytest.mark.django_db(transaction=True)
def test_a_drain_takes_at_most_four_statements_per_earning(place_order, points_api):
    """Issue 15: nine statements per earning before the hot path (gate, next due, claim, previous attempt, attempt,
    close the attempt, move, audit entry, waiting refunds)."""
    for n in range(20):
        place_order(f"SO-{n:02d}")
    statements: list[str] = []

    def count(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):
        report = drain_account("main")
    assert report.sent == 20 and report.outcomes == {Status.AWARDED: 20}
    assert all(points_api.awards(f"SO-{n:02d}") == 1 for n in range(20))
    assert len(statements) / 20 <= 4, f"{len(statements) / 20:.1f} statements per earning"
