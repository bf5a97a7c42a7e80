"""One earning's call, from claim to recorded answer, and the overlap that keeps an account's calls back to back.

While one earning's call is in flight (in the call thread), the drain's thread has the next due earning claimed with
its attempt row committed; when the answer arrives that next call starts at once, and while it runs the answer is
recorded and the call after it claimed, in one transaction. Used by the drain (:mod:`django_points_earn.dispatch`)
only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.db import InterfaceError, OperationalError, transaction
from redis.exceptions import RedisError

from . import accounts, lifecycle, metrics
from .call_thread import Answer, CallThread
from .drain_common import DrainReport, Sent, count, local_error, still_ours
from .earning_states import EARNINGS
from .heartbeat import Heartbeat
from .lanes import Pause
from .models import RATING_KINDS, EarningAttempt, EarningRecord, Status
from .phones import mask_phone
from .providers.base import RATE_LIMITED, REJECTED, UNAUTHORIZED, BaseBackend, EarnResult

log = logging.getLogger("django_points_earn")


@dataclass
class Prepared:
    """A claimed record with its attempt row committed: ready to go out the moment the account is free."""

    record: EarningRecord
    attempt: EarningAttempt
    lock_refreshed: float = 0.0  # time.monotonic() when the account lock was last extended for this call
    resend: bool = False  # the resend the account owes after a timeout (AccountState.resend_first)


# A call prepared while the previous one was in flight starts when that one returns. If that took longer than this,
# the account lock is extended again first, so it still outlives the whole call.
LOCK_REFRESH_AFTER = 1.0


@dataclass
class InFlight:
    prepared: Prepared
    answer: Future[Answer[Prepared, EarnResult]]


@dataclass
class Context:
    """What claiming and preparing a record needs, for one drain."""

    backend: BaseBackend
    lock: object
    lease: float
    trigger: str
    actor: str
    report: DrainReport
    heartbeat: Heartbeat
    stop: Callable[[], bool] = lambda: False  # the drain's turn is over: prepare no further call
    lock_refreshed: float = 0.0  # time.monotonic() when this drain last extended the account lock


def first_due(account_name: str, gate: accounts.Gate) -> tuple[EarningRecord | None, bool]:
    """The record the account's next call is for, and whether it is the resend owed after a timeout.

    After a timeout the account owes the timed-out record's resend: it is due when the account's wait ends, and
    goes before any other. If it is no longer waiting to be sent (settled meanwhile, or on a long backoff past its
    429 budget), the account is let go and carries on with its other records.
    """
    if gate.resend_first is not None:
        owed = EARNINGS.due(account_name).filter(pk=gate.resend_first).first()
        if owed is not None:
            return owed, True
        accounts.let_go_resend(account_name, gate.resend_first)
    return EARNINGS.due(account_name).first(), False


def prepare_next(account_name: str, ctx: Context) -> Prepared | None:
    """While a call is in flight: get the next due earning ready, if the account is free to go on."""
    hot = claim_next_due(account_name, ctx, behind_call=True)
    if hot is not None:
        return hot or None
    gate = accounts.account_gate(account_name)
    if gate.paused or gate.wait or gate.resend_first is not None:
        return None  # a resend owed after a timeout goes by itself, first, on the plain path
    due = EARNINGS.due(account_name).first()
    if due is None:
        return None  # nothing due, or only refunds: the plain path takes over once the call is in
    prepared = claim_and_prepare(due, ctx, behind_call=True)
    return prepared or None


def overlap(
    inflight: InFlight, following: Prepared | None, calls: CallThread, ctx: Context, cooldown: float
) -> Generator[Pause, None, tuple[InFlight | None, Prepared | None]]:
    """Collect the call in flight with the following one queued behind it (the call thread starts it the moment
    the answer allows), then, while the following call runs, record the answer and prepare the call after it (one
    transaction). Returns the call now in flight and the one prepared to follow it (either may be None).

    Whatever interrupts this (RQ's job timeout, a Redis or database error, the drain closing the lane), the call in
    flight runs to its end in the call thread, and so does one the call thread started after it: their answers are
    recorded on the way out, not dropped and left to the lease."""
    report, trigger, heartbeat, lock, lease = ctx.report, ctx.trigger, ctx.heartbeat, ctx.lock, ctx.lease
    if following is not None:
        calls.queue_next(following)
    answer: Answer[Prepared, EarnResult] | None = None
    started: InFlight | None = None
    try:
        answer = yield from _await_answer(inflight, calls, lock)
        result = answer.result
        if answer.following is not None:
            started = InFlight(*answer.following)
        elif (leftover := calls.take_back()) is not None:
            # Not started by the call thread: the answer came before it was queued, or did not allow it.
            if not lifecycle.next_call_may_follow(result):
                note = f"not sent after the previous answer ({result.status})"
                lifecycle.release(leftover.record, note, leftover.attempt)
            elif _lock_is_stale(leftover) and not (
                still_ours(lock) and lifecycle.extend_lease(leftover.record, lease_seconds=lease)
            ):
                # Prepared a while ago: the lock and the record's lease must still cover a whole call.
                lifecycle.release(leftover.record, "account lock lost", leftover.attempt)
            else:
                started = InFlight(leftover, calls.start(leftover))
    except BaseException:
        if (leftover := calls.take_back()) is not None:
            lifecycle.release(leftover.record, "the drain stopped before sending it", leftover.attempt)
        # also the call the call thread started after it
        record_after_error(inflight, report, trigger, cooldown, heartbeat)
        if started is not None and (answer is None or answer.following is None):
            record_after_error(started, report, trigger, cooldown, heartbeat)  # started by this thread
        raise
    try:
        following = record_and_prepare_next(inflight.prepared, result, ctx, cooldown, prepare=started is not None)
    except BaseException:
        if started is not None:
            record_after_error(started, report, trigger, cooldown, heartbeat)
        raise
    return started, following


def record_and_prepare_next(
    prepared: Prepared, result: EarnResult, ctx: Context, cooldown: float, *, prepare: bool
) -> Prepared | None:
    """Record a call's answer and, if ``prepare`` (a call is in flight after it), claim the next due earning and write
    its attempt row: in one transaction, so an earning costs one commit. An answer that changes what the account may
    do next (a resend owed, the platform maybe still busy, a refusal) is recorded first, by itself."""
    account = prepared.record.account
    if not (prepare and not prepared.resend and lifecycle.next_call_may_follow(result)):
        record(prepared, result, ctx.report, ctx.trigger, cooldown, ctx.heartbeat)
        return prepare_next(account, ctx) if prepare and not ctx.stop() else None
    token = prepared.record.lease_token
    try:
        with transaction.atomic():
            sent = finish(prepared, result, trigger=ctx.trigger)
            following = None if ctx.stop() else prepare_next(account, ctx)
    except (OperationalError, InterfaceError):
        ctx.heartbeat.drop(EARNINGS, token)
        raise  # the database itself is failing: the drain stops, the lease brings the record back
    except Exception:
        # A bug of ours, and both were rolled back: record the answer by itself, the careful way (its attempt ends
        # with the error); the next call is claimed on the plain path once the one in flight is in.
        log.exception("earning %s: recording the answer with the next claim failed; recorded alone", prepared.record.pk)
        # The rolled-back write had already set the instance to what it wrote (status, no lease, counters): read
        # the row back as the rollback left it, under our claim, or the answer would be recorded against nothing.
        prepared.record.refresh_from_db()
        prepared.record.status, prepared.record.lease_token = Status.SENDING, token
        record(prepared, result, ctx.report, ctx.trigger, cooldown, ctx.heartbeat)
        return None
    ctx.heartbeat.drop(EARNINGS, token)
    count(ctx.report, sent)
    return following


def _await_answer(inflight: InFlight, calls: CallThread, lock) -> Generator[Pause, None, Answer[Prepared, EarnResult]]:
    """The answer of the call in flight, keeping the account lock alive for as long as it takes (a fabric earn
    may make several requests). If the lock cannot be kept, the call queued behind this one is taken back."""
    while True:
        if not inflight.answer.done():
            yield Pause(future=inflight.answer, seconds=lock.timeout / 3)
        if inflight.answer.done():
            return inflight.answer.result()
        if not still_ours(lock) and (leftover := calls.take_back()) is not None:
            lifecycle.release(leftover.record, "account lock lost", leftover.attempt)


def may_follow(following: Prepared, result: EarnResult) -> bool:
    """For the call thread: start the queued call at once? Only on an answer that allows it, and only while the
    account lock extended when it was prepared is surely still ours (otherwise the drain's thread checks first)."""
    return lifecycle.next_call_may_follow(result) and not _lock_is_stale(following)


def _lock_is_stale(prepared: Prepared) -> bool:
    return time.monotonic() - prepared.lock_refreshed > LOCK_REFRESH_AFTER


def claim_next_due(account_name: str, ctx: Context, *, behind_call: bool = False) -> Prepared | bool | None:
    """The hot path (PostgreSQL, :func:`lifecycle.claim_next_due`): the account's next due earning claimed with its
    attempt row in two statements, if the account's gate is clear. None: take the general path, which says why
    nothing qualified; False: the account lock is gone, so this drain must stop."""
    if not lifecycle.hot_path() or credentials_problem(ctx.backend) is not None:
        return None
    locked_at = refresh_lock(ctx, behind_call=behind_call)
    if locked_at is None:
        log.warning("account %s: lock lost before claiming its next earning; handing over", account_name)
        return False
    claimed = lifecycle.claim_next_due(account_name, lease_seconds=ctx.lease, trigger=ctx.trigger, actor=ctx.actor)
    if claimed is None:
        return None
    ctx.heartbeat.hold(EARNINGS, claimed[0].lease_token)
    return Prepared(*claimed, lock_refreshed=locked_at)


def claim_and_prepare(due: EarningRecord, ctx: Context, *, behind_call: bool = False) -> Prepared | bool | None:
    """Claim the record and write its attempt row (one transaction). None: nothing to send (taken, or settled
    without a call); False: the account lock is gone, so this drain must stop."""
    locked_at = refresh_lock(ctx, behind_call=behind_call)
    if locked_at is None:
        log.warning("account %s: lock lost before sending %s; handing over", due.account, due.order_number)
        return False
    problem = NO_BODY if due.payload is None else credentials_problem(ctx.backend)
    if problem is not None:
        record = lifecycle.claim(due, lease_seconds=ctx.lease)
        if record is not None:
            count(ctx.report, settle_unsendable(record, problem, ctx.trigger))
        return None
    claimed = lifecycle.claim_and_start_attempt(due, lease_seconds=ctx.lease, trigger=ctx.trigger, actor=ctx.actor)
    if claimed is None:
        return None  # an admin action or another claimant got it first
    ctx.heartbeat.hold(EARNINGS, claimed[0].lease_token)
    return Prepared(*claimed, lock_refreshed=locked_at)


# A claim made while one of the account's calls is in flight uses a lock extended this recently without asking Redis
# again: it still has nearly a whole lease to run, and the call in flight's live claim in the database keeps any
# other drain off the account even if Redis lost the lock (dispatch checks it when it takes the lock).
LOCK_FRESH_ENOUGH = 0.5


def refresh_lock(ctx: Context, *, behind_call: bool = False) -> float | None:
    """Extend the account lock before a claim: our lock must outlive the call; if it is gone, someone else may be
    sending. Returns when it was last extended, or None if it is not provably ours (gone, or Redis unreachable)."""
    now = time.monotonic()
    if behind_call and now - ctx.lock_refreshed < LOCK_FRESH_ENOUGH:
        return ctx.lock_refreshed
    try:
        ctx.lock.reacquire()
    except RedisError:  # LockError, or Redis unreachable: we cannot tell it is still ours
        return None
    ctx.lock_refreshed = now
    return now


# Defence in depth: nothing queues a record without a body (corrections.requeue refuses it), but one that is due
# anyway is never sent as it is; it is rejected, and the account goes on.
NO_BODY = "no request body to send (the earning was rejected before any call): correct it to send it again"


def earn(backend: BaseBackend, prepared: Prepared) -> EarnResult:
    """The call, in the call thread. Never raises: whatever goes wrong in it is this record's answer (its attempt
    ends with the error, the record is retried with backoff as outcome unknown), not the end of the drain."""
    record = prepared.record
    request_id = str(prepared.attempt.request_id)
    try:
        if record.kind in RATING_KINDS:  # a review's earning: the platform's rating channel
            return backend.earn_rating(
                record.kind, record.payload, request_id=request_id, outcome_unknown=record.outcome_unknown
            )
        return backend.earn(record.payload, request_id=request_id, outcome_unknown=record.outcome_unknown)
    except Exception as exc:
        log.exception("earning %s/%s: the call failed inside this app", record.account, record.order_number)
        return local_error("the call failed inside this app", exc)


def record(
    prepared: Prepared, result: EarnResult, report: DrainReport, trigger: str, cooldown: float, heartbeat=None
) -> None:
    token = prepared.record.lease_token
    try:
        sent = finish(prepared, result, trigger=trigger)
    except (OperationalError, InterfaceError):
        raise  # the database itself is failing, not this record: the drain stops, the lease brings it back
    except Exception as exc:
        log.exception("earning %s: could not record the answer %s", prepared.record.pk, result.status)
        sent = _record_local_error(prepared, result, exc, token, trigger)
    finally:
        if heartbeat is not None:
            heartbeat.drop(EARNINGS, token)
    count(report, sent)  # a blocked answer marks the report paused
    account = prepared.record.account
    if sent.platform_may_be_busy:
        accounts.mark_account_busy(account, cooldown, resend=sent.record)
    elif prepared.resend:
        if result.status == RATE_LIMITED and sent.record is not None:
            accounts.hold_for_resend(account, sent.record)  # still working on the timed-out call: ask again
        else:
            accounts.let_go_resend(account, prepared.record.pk)


def _record_local_error(prepared: Prepared, result: EarnResult, exc: Exception, token: str, trigger: str) -> Sent:
    """Recording an answer failed with a bug of ours (never the platform's doing). If the record is still ours,
    its attempt ends with that error and it is retried as outcome unknown (a resend of what may have been awarded
    answers "duplicate"); if it moved on (e.g. a receiver of earning_awarded failed after the commit), it stays."""
    record = prepared.record
    current = EarningRecord.objects.filter(pk=record.pk).first()
    if current is None or current.status != Status.SENDING or current.lease_token != token:
        return Sent(current.status if current else "", record=current)
    record.status, record.lease_token = Status.SENDING, token
    error = local_error(f"the answer ({result.status}, HTTP {result.http_status}) could not be recorded", exc)
    return finish(prepared, error, trigger=trigger)


def record_after_error(inflight: InFlight, report: DrainReport, trigger: str, cooldown: float, heartbeat=None) -> None:
    """The drain is failing with a call in flight: wait for its answer and try to record it (and the call's that
    followed it, if any). If that fails too, the record stays ``sending`` until its lease expires, and the sweep
    sends it again as outcome unknown."""
    try:
        answer = inflight.answer.result()
        record(inflight.prepared, answer.result, report, trigger, cooldown, heartbeat)
    except Exception:
        log.exception("earning %s: could not record the answer of the call in flight", inflight.prepared.record.pk)
        return
    if answer.following is not None:
        record_after_error(InFlight(*answer.following), report, trigger, cooldown, heartbeat)


def credentials_problem(backend: BaseBackend) -> str | None:
    try:
        backend.auth_headers()
    except ImproperlyConfigured as exc:
        return str(exc)
    return None


def settle_unsendable(record: EarningRecord, problem: str, trigger: str) -> Sent:
    status = REJECTED if problem == NO_BODY else UNAUTHORIZED
    saved = lifecycle.complete(record, None, EarnResult(status, message=problem), trigger=trigger)
    return Sent(saved.status, record=saved)


def finish(prepared: Prepared, result: EarnResult, *, trigger: str) -> Sent:
    """Record a call's answer (lifecycle decides what it means) and log it."""
    record, attempt = prepared.record, prepared.attempt
    saved = lifecycle.complete(record, attempt, result, trigger=trigger)
    metrics.call(record.account, "earning", result.status, result.http_status, result.duration_ms)
    log.info(
        "earning %s/%s phone=%s attempt=%s -> %s (HTTP %s, %s ms)%s",
        record.account,
        record.order_number,
        mask_phone(record.phone),
        attempt.number,
        saved.status,
        result.http_status,
        result.duration_ms,
        f": {result.message}" if result.message else "",
    )
    return Sent(saved.status, lifecycle.platform_may_be_busy(result), saved)
