"""Claim -> account lock -> provider call -> lifecycle. Used by the job, the admin and reconcile alike.

A drain job owns one account at a time (a Redis lock), so at most one earning call is in flight per account across
all workers and machines. A job that finds the lock taken returns at once instead of waiting: the holder picks up
every due record, and re-checks after releasing the lock, so nothing committed meanwhile is left behind.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple

from django.core.exceptions import ImproperlyConfigured
from django.db import InterfaceError, OperationalError
from django.db.models import Min
from django.utils import timezone
from redis.exceptions import LockError, RedisError

from . import lifecycle, queueing, reversals
from .call_thread import Answer, CallThread
from .conf import get_settings
from .heartbeat import Heartbeat
from .models import EarningAttempt, EarningRecord, Reversal, Status, Trigger
from .phones import mask_phone
from .providers import get_backend
from .providers.base import (
    RATE_LIMITED,
    REJECTED,
    UNAUTHORIZED,
    UNAVAILABLE,
    BaseBackend,
    EarnResult,
    PlatformError,
    scrub,
)

log = logging.getLogger("django_points_earn")


class Sent(NamedTuple):
    """What one call did: the record's (or reversal's) new status, and whether the platform may still be working
    on it (no answer within the timeout: its side of the call can outlive ours); the record as saved."""

    status: str
    platform_may_be_busy: bool = False
    record: EarningRecord | None = None


@dataclass
class DrainReport:
    account: str
    sent: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    busy: bool = False  # another job held the account
    paused: bool = False
    continued: bool = False  # time was up; a successor job was enqueued
    held: bool = False  # the account must wait longer than a worker should idle (the sweep brings it back when due)

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def _due(account: str):
    return EarningRecord.objects.filter(
        account=account, status=Status.QUEUED, next_attempt_at__lte=timezone.now()
    ).order_by("next_attempt_at", "id")


def next_due(account: str) -> int | None:
    return _due(account).values_list("id", flat=True).first()


def next_due_record(account: str) -> EarningRecord | None:
    """The next due record, whole: the drain claims this very instance (no second read)."""
    return _due(account).first()


def seconds_until_next(account: str) -> float | None:
    soonest = EarningRecord.objects.filter(account=account, status=Status.QUEUED).aggregate(t=Min("next_attempt_at"))[
        "t"
    ]
    if soonest is None:
        return None
    return max(0.0, (soonest - timezone.now()).total_seconds())


def drain_account(account_name: str, *, trigger: str = Trigger.WORKER, actor: str = "") -> DrainReport:
    """Send every due earning of one account, one call at a time."""
    settings = get_settings()
    report = DrainReport(account=account_name)
    conn = queueing.connection()
    queueing.clear_drain_request(account_name, conn)
    if lifecycle.is_paused(account_name):
        report.paused = True
        return report
    try:
        account = settings.account(account_name)
        backend = get_backend(account)
    except ImproperlyConfigured as exc:
        _block_next(account_name, str(exc), trigger)
        report.paused = True
        return report

    drain = settings.drain
    deadline = time.monotonic() + float(drain["MAX_SECONDS"])
    lease = float(settings.lease_seconds)
    lock = queueing.account_lock(account, conn, ttl=lease)  # short, renewed by the heartbeat while we live
    while True:
        if not lock.acquire(blocking=False):
            report.busy = True
            return report
        try:
            if call_in_flight(account_name):
                # We got the lock, yet a call of this account is in flight: Redis lost the holder's lock (flush,
                # failover). The database says so; step back. (A holder that keeps its lock needs no such check:
                # it re-checks its own lock before every call.)
                report.busy = True
                return report
            with Heartbeat(account_name, lock, lease_seconds=lease) as heartbeat:
                _drain_locked(
                    account_name, backend, lock, report, deadline, float(drain["MAX_WAIT"]), trigger, actor, heartbeat
                )
        finally:
            try:
                lock.release()
            except LockError:
                log.warning("account %s: lock had already expired when released", account_name)
        if report.paused or report.busy or report.held:
            return report  # busy: a live claim elsewhere; its worker (or the sweep after its lease) carries on
        if time.monotonic() >= deadline:
            if has_due(account_name):
                queueing.request_drain(account_name, conn)
                report.continued = True
            return report
        # A record committed while we held the lock had its own job bounce off the lock: look once more.
        if not has_due(account_name):
            return report


@dataclass
class _Prepared:
    """A claimed record with its attempt row committed: ready to go out the moment the account is free."""

    record: EarningRecord
    attempt: EarningAttempt
    lock_refreshed: float = 0.0  # time.monotonic() when the account lock was last extended for this call
    resend: bool = False  # the resend the account owes after a timeout (AccountState.resend_first)


# A call prepared while the previous one was in flight starts when that one returns. If that took longer than this,
# the account lock is extended again first, so it still outlives the whole call.
LOCK_REFRESH_AFTER = 1.0


@dataclass
class _InFlight:
    prepared: _Prepared
    answer: Future[Answer[_Prepared, EarnResult]]


def _drain_locked(account_name, backend, lock, report, deadline, max_wait, trigger, actor, heartbeat) -> None:
    """Send the account's due work, one call at a time; the bookkeeping around a call overlaps the next call.

    While one earning's call is in flight (in the call thread), this thread claims the next record and writes its
    attempt row; when the answer arrives, the next call starts at once, and the answer is recorded while that call
    runs. Refunds and waits (backoff, cooldown, a paused account) take the plain path, with no call in flight.
    """
    settings = get_settings()
    lease = float(settings.lease_seconds)
    cooldown = float(settings.drain["COOLDOWN_AFTER_TIMEOUT"])
    inflight: _InFlight | None = None
    ctx = _Context(backend, lock, lease, trigger, actor, report, heartbeat)
    with CallThread(account_name, partial(_earn, backend), _may_follow) as calls:
        try:
            while True:
                if inflight is not None:
                    following = None
                    if time.monotonic() < deadline:
                        following = _prepare_next(account_name, ctx)
                    current, inflight = inflight, None  # from here on, _overlap answers for it
                    inflight = _overlap(current, following, calls, lock, lease, report, cooldown, trigger, heartbeat)
                    if report.paused:
                        return
                    continue
                if time.monotonic() >= deadline:
                    return
                gate = lifecycle.account_gate(account_name)
                if gate.paused:
                    report.paused = True
                    return
                if gate.wait:
                    if gate.wait > max_wait or time.monotonic() + gate.wait >= deadline:
                        # The platform asked for a long wait (Retry-After on a resend, a long cooldown): no worker
                        # idles it out (only waits within MAX_WAIT are); the sweep enqueues us when it is due.
                        report.held = True
                        return
                    time.sleep(gate.wait)  # a timed-out call may still run on the platform's side
                    if not _still_ours(lock):
                        return
                    continue
                due, resend = _first_due(account_name, gate)
                if due is None and (reversal_id := reversals.next_due(account_name)) is not None:
                    reversal = reversals.claim(reversal_id, lease_seconds=lease)
                    if reversal is not None and not _still_ours(lock):
                        reversals.release(reversal)
                        return
                    if reversal is not None:
                        sent = _send_reversal_safely(reversal, backend, trigger, actor, heartbeat)
                        key = f"reversal_{sent.status}"
                        report.outcomes[key] = report.outcomes.get(key, 0) + 1
                        if sent.platform_may_be_busy:
                            lifecycle.mark_account_busy(account_name, cooldown)
                    continue
                if due is None:
                    wait = seconds_until_next(account_name)
                    if wait is None or wait > max_wait or time.monotonic() + wait >= deadline:
                        return
                    if queueing.jobs_waiting():
                        return  # other accounts' jobs are queued: free this worker, the sweep brings us back when due
                    time.sleep(wait)  # a short backoff (429, first retry) and an idle queue: cheaper to wait here
                    if not _still_ours(lock):
                        return
                    continue
                prepared = _claim_and_prepare(due, ctx)
                if prepared is False:
                    return  # the account lock is gone
                if prepared is not None:
                    prepared.resend = resend
                    inflight = _InFlight(prepared, calls.start(prepared))
        finally:
            if inflight is not None:  # an error while a call was in flight: wait for it, record it if we can
                _record_after_error(inflight, report, trigger, cooldown, heartbeat)


@dataclass
class _Context:
    """What claiming and preparing a record needs, for one drain."""

    backend: BaseBackend
    lock: object
    lease: float
    trigger: str
    actor: str
    report: DrainReport
    heartbeat: Heartbeat


def _first_due(account_name: str, gate: lifecycle.Gate) -> tuple[EarningRecord | None, bool]:
    """The record the account's next call is for, and whether it is the resend owed after a timeout.

    After a timeout the account owes the timed-out record's resend: it is due when the account's wait ends, and
    goes before any other. If it is no longer waiting to be sent (settled meanwhile, or on a long backoff past its
    429 budget), the account is let go and carries on with its other records.
    """
    if gate.resend_first is not None:
        owed = _due(account_name).filter(pk=gate.resend_first).first()
        if owed is not None:
            return owed, True
        lifecycle.let_go_resend(account_name, gate.resend_first)
    return next_due_record(account_name), False


def _prepare_next(account_name: str, ctx: _Context) -> _Prepared | None:
    """While a call is in flight: get the next due earning ready, if the account is free to go on."""
    gate = lifecycle.account_gate(account_name)
    if gate.paused or gate.wait or gate.resend_first is not None:
        return None  # a resend owed after a timeout goes by itself, first, on the plain path
    due = next_due_record(account_name)
    if due is None:
        return None  # nothing due, or only refunds: the plain path takes over once the call is in
    prepared = _claim_and_prepare(due, ctx)
    return prepared or None


def _overlap(inflight, following, calls, lock, lease, report, cooldown, trigger, heartbeat) -> _InFlight | None:
    """Collect the call in flight with the following one queued behind it (the call thread starts it the moment
    the answer allows), then record the answer while the following call runs.

    Whatever interrupts this (RQ's job timeout, a Redis or database error), the call in flight runs to its end in the
    call thread, and so does one the call thread started after it: their answers are recorded on the way out, not
    dropped and left to the lease."""
    if following is not None:
        calls.queue_next(following)
    answer: Answer[_Prepared, EarnResult] | None = None
    started: _InFlight | None = None
    try:
        answer = _await_answer(inflight, calls, lock)
        result = answer.result
        if answer.following is not None:
            started = _InFlight(*answer.following)
        elif (leftover := calls.take_back()) is not None:
            # Not started by the call thread: the answer came before it was queued, or did not allow it.
            if not lifecycle.next_call_may_follow(result):
                note = f"not sent after the previous answer ({result.status})"
                lifecycle.release(leftover.record, note, leftover.attempt)
            elif _lock_is_stale(leftover) and not (
                _still_ours(lock) and lifecycle.extend_lease(leftover.record, lease_seconds=lease)
            ):
                # Prepared a while ago: the lock and the record's lease must still cover a whole call.
                lifecycle.release(leftover.record, "account lock lost", leftover.attempt)
            else:
                started = _InFlight(leftover, calls.start(leftover))
    except BaseException:
        if (leftover := calls.take_back()) is not None:
            lifecycle.release(leftover.record, "the drain stopped before sending it", leftover.attempt)
        # also the call the call thread started after it
        _record_after_error(inflight, report, trigger, cooldown, heartbeat)
        if started is not None and (answer is None or answer.following is None):
            _record_after_error(started, report, trigger, cooldown, heartbeat)  # started by this thread
        raise
    try:
        _record(inflight.prepared, result, report, trigger, cooldown, heartbeat)
    except BaseException:
        if started is not None:
            _record_after_error(started, report, trigger, cooldown, heartbeat)
        raise
    return started


def _await_answer(inflight: _InFlight, calls: CallThread, lock) -> Answer[_Prepared, EarnResult]:
    """The answer of the call in flight, keeping the account lock alive for as long as it takes (a fabric earn
    may make several requests). If the lock cannot be kept, the call queued behind this one is taken back."""
    while True:
        try:
            return inflight.answer.result(timeout=lock.timeout / 3)
        except FutureTimeout:
            if not _still_ours(lock) and (leftover := calls.take_back()) is not None:
                lifecycle.release(leftover.record, "account lock lost", leftover.attempt)


def _may_follow(following: _Prepared, result: EarnResult) -> bool:
    """For the call thread: start the queued call at once? Only on an answer that allows it, and only while the
    account lock extended when it was prepared is surely still ours (otherwise the drain's thread checks first)."""
    return lifecycle.next_call_may_follow(result) and not _lock_is_stale(following)


def _lock_is_stale(prepared: _Prepared) -> bool:
    return time.monotonic() - prepared.lock_refreshed > LOCK_REFRESH_AFTER


def _claim_and_prepare(due: EarningRecord, ctx: _Context) -> _Prepared | bool | None:
    """Claim the record and write its attempt row (one transaction). None: nothing to send (taken, or settled
    without a call); False: the account lock is gone, so this drain must stop."""
    try:
        ctx.lock.reacquire()  # our lock must outlive the call; if it is gone, someone else may be sending
    except RedisError:  # LockError, or Redis unreachable: we cannot tell it is still ours
        log.warning("account %s: lock lost before sending %s; handing over", due.account, due.order_number)
        return False
    locked_at = time.monotonic()
    problem = NO_BODY if due.payload is None else _credentials_problem(ctx.backend)
    if problem is not None:
        record = lifecycle.claim(due, lease_seconds=ctx.lease)
        if record is not None:
            _count(ctx.report, _settle_unsendable(record, problem, ctx.trigger))
        return None
    claimed = lifecycle.claim_and_start_attempt(due, lease_seconds=ctx.lease, trigger=ctx.trigger, actor=ctx.actor)
    if claimed is None:
        return None  # an admin action or another claimant got it first
    ctx.heartbeat.hold(claimed[0].lease_token)
    return _Prepared(*claimed, lock_refreshed=locked_at)


# Defence in depth: nothing queues a record without a body (lifecycle.requeue refuses it), but one that is due
# anyway is never sent as it is; it is rejected, and the account goes on.
NO_BODY = "no request body to send (the earning was rejected before any call): correct it to send it again"


def _earn(backend: BaseBackend, prepared: _Prepared) -> EarnResult:
    """The call, in the call thread. Never raises: whatever goes wrong in it is this record's answer (its attempt
    ends with the error, the record is retried with backoff as outcome unknown), not the end of the drain."""
    record = prepared.record
    try:
        return backend.earn(
            record.payload, request_id=str(prepared.attempt.request_id), outcome_unknown=record.outcome_unknown
        )
    except Exception as exc:
        log.exception("earning %s/%s: the call failed inside this app", record.account, record.order_number)
        return local_error("the call failed inside this app", exc)


def local_error(what: str, exc: BaseException) -> EarnResult:
    """An error of ours, not an answer: retried with backoff; unknown whether anything reached the platform."""
    message = f"{what}: {type(exc).__name__}: {scrub(str(exc))}"[:1000]
    return EarnResult(UNAVAILABLE, message=message, outcome_unknown=True, local_error=True)


def _record(
    prepared: _Prepared, result: EarnResult, report: DrainReport, trigger: str, cooldown: float, heartbeat=None
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
            heartbeat.drop(token)
    _count(report, sent)  # a blocked answer marks the report paused
    account = prepared.record.account
    if sent.platform_may_be_busy:
        lifecycle.mark_account_busy(account, cooldown, resend=sent.record)
    elif prepared.resend:
        if result.status == RATE_LIMITED and sent.record is not None:
            lifecycle.hold_for_resend(account, sent.record)  # still working on the timed-out call: ask again
        else:
            lifecycle.let_go_resend(account, prepared.record.pk)


def _record_local_error(prepared: _Prepared, result: EarnResult, exc: Exception, token: str, trigger: str) -> Sent:
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


def _record_after_error(
    inflight: _InFlight, report: DrainReport, trigger: str, cooldown: float, heartbeat=None
) -> None:
    """The drain is failing with a call in flight: wait for its answer and try to record it (and the call's that
    followed it, if any). If that fails too, the record stays ``sending`` until its lease expires, and the sweep
    sends it again as outcome unknown."""
    try:
        answer = inflight.answer.result()
        _record(inflight.prepared, answer.result, report, trigger, cooldown, heartbeat)
    except Exception:
        log.exception("earning %s: could not record the answer of the call in flight", inflight.prepared.record.pk)
        return
    if answer.following is not None:
        _record_after_error(_InFlight(*answer.following), report, trigger, cooldown, heartbeat)


def _count(report: DrainReport, sent: Sent) -> None:
    report.sent += 1
    report.outcomes[sent.status] = report.outcomes.get(sent.status, 0) + 1
    if sent.status == Status.BLOCKED:
        report.paused = True


def prepare(record: EarningRecord, backend: BaseBackend, *, trigger: str, actor: str = "") -> _Prepared | Sent:
    """Everything before the call, for a claimed record: its credentials checked, its attempt row committed.

    A missing credential is an account problem found before any call: the record is settled (blocked) at once and
    the :class:`Sent` returned instead.
    """
    problem = NO_BODY if record.payload is None else _credentials_problem(backend)
    if problem is not None:
        return _settle_unsendable(record, problem, trigger)
    return _Prepared(record, lifecycle.start_attempt(record, trigger=trigger, actor=actor))


def _credentials_problem(backend: BaseBackend) -> str | None:
    try:
        backend.auth_headers()
    except ImproperlyConfigured as exc:
        return str(exc)
    return None


def _settle_unsendable(record: EarningRecord, problem: str, trigger: str) -> Sent:
    status = REJECTED if problem == NO_BODY else UNAUTHORIZED
    saved = lifecycle.complete(record, None, EarnResult(status, message=problem), trigger=trigger)
    return Sent(saved.status, record=saved)


def finish(prepared: _Prepared, result: EarnResult, *, trigger: str) -> Sent:
    """Record a call's answer (lifecycle decides what it means) and log it."""
    record, attempt = prepared.record, prepared.attempt
    saved = lifecycle.complete(record, attempt, result, trigger=trigger)
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


def send_claimed(record: EarningRecord, backend: BaseBackend, *, trigger: str, actor: str = "") -> Sent:
    """One attempt for a record this process has claimed, start to end (the admin's and reconcile's path)."""
    prepared = prepare(record, backend, trigger=trigger, actor=actor)
    if isinstance(prepared, Sent):
        return prepared
    return finish(prepared, _earn(backend, prepared), trigger=trigger)


def call_in_flight(account: str) -> bool:
    """A call of this account is in flight somewhere (a live lease), whatever Redis remembers.

    The Redis lock is the fast guard; this is the one that survives Redis losing its data: a drain job that got the
    lock only because a flush erased the holder's key still finds the holder's claimed record and steps back.
    """
    now = timezone.now()
    return (
        EarningRecord.objects.filter(account=account, status=Status.SENDING, lease_expires_at__gt=now).exists()
        or Reversal.objects.filter(record__account=account, status="sending", lease_expires_at__gt=now).exists()
    )


def _still_ours(lock) -> bool:
    """Extend the account lock after a wait; False if it is gone (expired, or Redis lost it): stop draining."""
    try:
        lock.reacquire()
        return True
    except RedisError:  # LockError, or Redis unreachable: not provably ours, so no call
        return False


def has_due(account: str) -> bool:
    return next_due(account) is not None or reversals.next_due(account) is not None


def send_reversal(reversal: Reversal, backend: BaseBackend, *, trigger: str, actor: str = "") -> Sent:
    """One refund call for a claimed reversal: read the order first (once), then ask the platform to refund."""
    record = reversal.record
    if not backend.supports_refunds:
        result = EarnResult(REJECTED, f"taking points back is not supported on {backend.provider} yet")
        return Sent(reversals.complete(reversal, None, result, trigger=trigger).status)
    amount = reversals.amount_to_take(reversal)
    if amount is not None and amount <= 0:
        result = EarnResult(REJECTED, "nothing is left to take back: the earning's other refunds took it all")
        return Sent(reversals.complete(reversal, None, result, trigger=trigger).status)
    if reversal.remote_before is None:
        try:
            reversals.remember_remote_before(reversal, backend.snapshot(record))
        except PlatformError as exc:
            result = EarnResult(UNAVAILABLE, f"could not read the order before refunding it: {exc}")
            return Sent(reversals.complete(reversal, None, result, trigger=trigger).status)
    # After the snapshot: fabric's may give the member's profileId.
    body = backend.refund_body(record, reversal, amount)
    attempt = reversals.start_attempt(reversal, body, trigger=trigger, actor=actor)
    result = backend.reverse(
        record,
        body,
        request_id=str(attempt.request_id),
        before=reversal.remote_before,
        outcome_unknown=reversal.outcome_unknown,
    )
    saved = reversals.complete(reversal, attempt, result, trigger=trigger)
    log.info(
        "refund %s of %s/%s attempt=%s -> %s (HTTP %s)%s",
        reversal.refund_id,
        record.account,
        record.order_number,
        attempt.number,
        saved.status,
        result.http_status,
        f": {result.message}" if result.message else "",
    )
    return Sent(saved.status, lifecycle.platform_may_be_busy(result))


def _send_reversal_safely(reversal: Reversal, backend: BaseBackend, trigger: str, actor: str, heartbeat) -> Sent:
    """:func:`send_reversal` under the heartbeat; an exception of ours ends the refund's attempt with the error
    (retried with backoff, outcome unknown) instead of ending the drain."""
    token = reversal.lease_token
    heartbeat.hold(token, reversal=True)
    try:
        return send_reversal(reversal, backend, trigger=trigger, actor=actor)
    except (OperationalError, InterfaceError):
        raise  # the database itself is failing, not this refund: the drain stops, the lease brings it back
    except Exception as exc:
        log.exception("refund %s: the call failed inside this app", reversal.pk)
        attempt = EarningAttempt.objects.filter(reversal=reversal, finished_at__isnull=True).order_by("-number")
        result = local_error("the refund failed inside this app", exc)
        reversal.lease_token = token
        return Sent(reversals.complete(reversal, attempt.first(), result, trigger=trigger).status)
    finally:
        heartbeat.drop(token, reversal=True)


def _block_next(account_name: str, message: str, trigger: str) -> None:
    """The account cannot be used at all (e.g. removed from settings): block one record to show why, pause."""
    record_id = next_due(account_name)
    record = lifecycle.claim(record_id, lease_seconds=60) if record_id else None
    if record is not None:
        lifecycle.complete(record, None, EarnResult(UNAUTHORIZED, message=message), trigger=trigger)
    else:
        lifecycle.pause_account(account_name, message)
    log.error("account %s cannot send: %s", account_name, message)
