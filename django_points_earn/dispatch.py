"""Claim -> account lock -> provider call -> lifecycle. The drain job's work, for one account or for many at once.

Each account a drain serves is a lane (:mod:`~django_points_earn.lanes`) that holds the account's lock (Redis), so at
most one call (an earning's or a refund's) is in flight per account across all workers and machines. A lane that
finds the lock taken ends at once instead of waiting: the holder picks up every due row, and re-checks after releasing
the lock, so nothing committed meanwhile is left behind. A drain job serves its own account and, while it has free
slots (``DRAIN["ACCOUNTS_PER_PROCESS"]``), the accounts waiting longest for a drain: one process keeps a call in
flight for each. One earning's call is :mod:`~django_points_earn.earning_calls`, one refund's
:mod:`~django_points_earn.refund_calls`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import LockError

from . import accounts, earning_calls, lifecycle, queueing, refund_calls
from .call_thread import CallThread
from .conf import get_settings
from .drain_common import DrainReport, Sent, still_ours
from .earning_states import EARNINGS
from .heartbeat import Heartbeat
from .kinds import MACHINES
from .lanes import Lane, Pause, Scheduler
from .models import Trigger
from .providers import get_backend
from .providers.base import UNAUTHORIZED, EarnResult

log = logging.getLogger("django_points_earn")

__all__ = ["DrainReport", "Sent", "call_in_flight", "drain_account", "drain_accounts", "has_due"]


# A wait this short (a lock-busy 429's retry, RETRY["LOCK_BUSY_DELAY"]) is waited out in place even when other work
# waits for the worker: handing the account to the sweep would turn a tenth of a second into seconds.
SHORT_WAIT = 0.5


@dataclass
class Turn:
    """When a lane must stop: the drain's time is up, or its turn is over while another account waits for a slot.
    ``crowded()`` says whether other work waits for this worker (then a lane does not idle on a short backoff)."""

    deadline: float
    crowded: Callable[[], bool]
    turn_seconds: float | None = None  # None: no turns (a drain of one account)
    started: float = 0.0

    def over(self) -> bool:
        now = time.monotonic()
        if now >= self.deadline:
            return True
        return self.turn_seconds is not None and now - self.started >= self.turn_seconds and self.crowded()


def drain_account(account_name: str, *, trigger: str = Trigger.WORKER, actor: str = "") -> DrainReport:
    """Send every due earning (and refund) of one account, one call at a time; no other account."""
    return _drain(account_name, trigger=trigger, actor=actor, many=False)[account_name]


def drain_accounts(account_name: str, *, trigger: str = Trigger.WORKER) -> dict[str, DrainReport]:
    """The drain job: ``account_name``'s lane and, while slots are free, the lanes of the accounts that have waited
    longest for a drain. Returns each account's report (the first is ``account_name``'s)."""
    return _drain(account_name, trigger=trigger, actor="", many=True)


def _drain(first: str, *, trigger: str, actor: str, many: bool) -> dict[str, DrainReport]:
    settings = get_settings()
    drain = settings.drain
    deadline = time.monotonic() + float(drain["MAX_SECONDS"])
    slots = int(drain["ACCOUNTS_PER_PROCESS"]) if many else 1
    reports: dict[str, DrainReport] = {first: DrainReport(account=first)}
    scheduler: Scheduler
    crowd = _Crowd(lambda: scheduler) if many else None

    def lane(account: str) -> Lane:
        report = reports.setdefault(account, DrainReport(account=account))
        if crowd is None:
            turn = Turn(deadline, queueing.jobs_waiting)
        else:
            turn = Turn(deadline, crowd.waiting, float(drain["TURN_SECONDS"]), time.monotonic())
        return _account_lane(account, report, turn, trigger, actor, heartbeat)

    def adopt(free: int, held: frozenset[str]) -> Iterable[tuple[str, Lane]]:
        if time.monotonic() >= deadline - 1:
            return []  # about to stop: leave them to the next job
        # Not one held elsewhere: its holder serves it, and its lane here would end at once, the slot wasted.
        return [(account, lane(account)) for account in queueing.wanted(free, exclude=held, unlocked=True)]

    with Heartbeat(first, lease_seconds=float(settings.lease_seconds)) as heartbeat:
        scheduler = Scheduler(slots=slots, adopt=adopt if many else None, isolate=many)
        scheduler.add(first, lane(first))
        scheduler.run()
    return reports


class _Crowd:
    """Whether another account waits for a slot of this (full) drain: looked up in Redis at most once a second."""

    def __init__(self, scheduler: Callable[[], Scheduler]) -> None:
        self._scheduler = scheduler
        self._checked = 0.0
        self._waiting = False

    def waiting(self) -> bool:
        scheduler = self._scheduler()
        if not scheduler.full:
            return False
        if time.monotonic() - self._checked >= 1.0:
            self._checked = time.monotonic()
            self._waiting = bool(queueing.wanted(1, exclude=scheduler.accounts, unlocked=True))
        return self._waiting


def _account_lane(account_name: str, report: DrainReport, turn: Turn, trigger: str, actor: str, heartbeat) -> Lane:
    settings = get_settings()
    conn = queueing.connection()
    queueing.clear_drain_request(account_name, conn)
    if accounts.is_paused(account_name):
        report.paused = True
        return
    try:
        account = settings.account(account_name)
        backend = get_backend(account)
    except ImproperlyConfigured as exc:
        _block_next(account_name, str(exc), trigger)
        report.paused = True
        return

    lease = float(settings.lease_seconds)
    lock = queueing.account_lock(account, conn, ttl=lease)  # short, renewed by the heartbeat while we live
    while True:
        if not lock.acquire(blocking=False):
            report.busy = True
            return
        try:
            if call_in_flight(account_name):
                # We got the lock, yet a call of this account is in flight: Redis lost the holder's lock (flush,
                # failover). The database says so; step back. (A holder that keeps its lock needs no such check:
                # it re-checks its own lock before every call.)
                report.busy = True
                return
            heartbeat.add_lock(account_name, lock)
            try:
                yield from _drain_locked(account_name, backend, lock, report, turn, trigger, actor, heartbeat)
            finally:
                heartbeat.remove_lock(account_name)
        finally:
            try:
                lock.release()
            except LockError:
                log.warning("account %s: lock had already expired when released", account_name)
        if report.paused or report.busy or report.held:
            return  # busy: a live claim elsewhere; its worker (or the sweep after its lease) carries on
        if turn.over():
            if has_due(account_name):
                queueing.request_drain(account_name, conn)
                report.continued = True
            return
        # A record committed while we held the lock had its own job bounce off the lock: look once more.
        if not has_due(account_name):
            return


def _drain_locked(account_name, backend, lock, report, turn, trigger, actor, heartbeat) -> Lane:
    """Send the account's due work, one call at a time; the bookkeeping around a call overlaps the next call.

    While one earning's call is in flight (in the call thread), the next one is claimed, its attempt row written,
    and it is queued to start the moment the answer is in; the answer is then recorded, and the one after claimed,
    in one transaction, while that next call runs. Refunds and waits (backoff, cooldown, a paused account) take the
    plain path, with no call in flight.
    """
    settings = get_settings()
    lease = float(settings.lease_seconds)
    cooldown = float(settings.drain["COOLDOWN_AFTER_TIMEOUT"])
    max_wait = float(settings.drain["MAX_WAIT"])
    inflight: earning_calls.InFlight | None = None
    following: earning_calls.Prepared | None = None
    ctx = earning_calls.Context(backend, lock, lease, trigger, actor, report, heartbeat, turn.over)
    with CallThread(account_name, partial(earning_calls.earn, backend), earning_calls.may_follow) as calls:
        try:
            while True:
                if inflight is not None:
                    # From here on, overlap answers for both: the call in flight and the one prepared to follow it.
                    current, queued, inflight, following = inflight, following, None, None
                    inflight, following = yield from earning_calls.overlap(current, queued, calls, ctx, cooldown)
                    if report.paused:
                        return
                    continue
                if turn.over():
                    return
                prepared = earning_calls.claim_next_due(account_name, ctx)  # PostgreSQL: None when it cannot say
                if prepared is False:
                    return  # the account lock is gone
                if prepared is not None:
                    inflight = earning_calls.InFlight(prepared, calls.start(prepared))
                    following = None if turn.over() else earning_calls.prepare_next(account_name, ctx)
                    continue
                gate = accounts.account_gate(account_name)
                if gate.paused:
                    report.paused = True
                    return
                if gate.wait:
                    if gate.wait > max_wait or time.monotonic() + gate.wait >= turn.deadline:
                        # The platform asked for a long wait (Retry-After on a resend, a long cooldown): no worker
                        # idles it out (only waits within MAX_WAIT are); the sweep enqueues us when it is due.
                        report.held = True
                        return
                    yield Pause(seconds=gate.wait)  # a timed-out call may still run on the platform's side
                    if not still_ours(lock):
                        return
                    continue
                due, resend = earning_calls.first_due(account_name, gate)
                if due is None:
                    refund = refund_calls.send_next_refund(
                        account_name,
                        backend,
                        lock,
                        lease=lease,
                        cooldown=cooldown,
                        report=report,
                        trigger=trigger,
                        actor=actor,
                        heartbeat=heartbeat,
                    )
                    if refund is False:
                        return
                    if refund:
                        continue
                if due is None:
                    wait = EARNINGS.seconds_until_next(account_name)
                    if wait is None or wait > max_wait or time.monotonic() + wait >= turn.deadline:
                        return
                    if wait > SHORT_WAIT and turn.crowded():
                        return  # other work waits for this worker: the sweep brings us back when due
                    yield Pause(seconds=wait)  # a short backoff (429, first retry) and nothing else to do
                    if not still_ours(lock):
                        return
                    continue
                prepared = earning_calls.claim_and_prepare(due, ctx)
                if prepared is False:
                    return  # the account lock is gone
                if prepared is not None:
                    prepared.resend = resend
                    inflight = earning_calls.InFlight(prepared, calls.start(prepared))
                    following = None if turn.over() else earning_calls.prepare_next(account_name, ctx)
        finally:
            if following is not None:  # claimed, never handed to the call thread (the drain stopped in between)
                lifecycle.release(following.record, "the drain stopped before sending it", following.attempt)
            if inflight is not None:  # an error while a call was in flight: wait for it, record it if we can
                earning_calls.record_after_error(inflight, report, trigger, cooldown, heartbeat)


def call_in_flight(account: str) -> bool:
    """A call of this account is in flight somewhere (a live lease on any of its outbox rows), whatever Redis
    remembers.

    The Redis lock is the fast guard; this is the one that survives Redis losing its data: a drain job that got the
    lock only because a flush erased the holder's key still finds the holder's claimed row and steps back.
    """
    return any(machine.call_in_flight(account) for machine in MACHINES)


def has_due(account: str) -> bool:
    return any(machine.next_due(account) is not None for machine in MACHINES)


def _block_next(account_name: str, message: str, trigger: str) -> None:
    """The account cannot be used at all (e.g. removed from settings): block one record to show why, pause."""
    record_id = EARNINGS.next_due(account_name)
    record = lifecycle.claim(record_id, lease_seconds=60) if record_id else None
    if record is not None:
        lifecycle.complete(record, None, EarnResult(UNAUTHORIZED, message=message), trigger=trigger)
    else:
        accounts.pause_account(account_name, message)
    log.error("account %s cannot send: %s", account_name, message)
