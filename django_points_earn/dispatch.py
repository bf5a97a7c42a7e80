"""Claim -> account lock -> provider call -> lifecycle. The drain job's work, for one account.

A drain job owns one account at a time (a Redis lock), so at most one call (an earning's or a refund's) is in flight
per account across all workers and machines. A job that finds the lock taken returns at once instead of waiting: the
holder picks up every due row, and re-checks after releasing the lock, so nothing committed meanwhile is left behind.
One earning's call is :mod:`~django_points_earn.earning_calls`, one refund's :mod:`~django_points_earn.refund_calls`.
"""

from __future__ import annotations

import logging
import time
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
from .models import Trigger
from .providers import get_backend
from .providers.base import UNAUTHORIZED, EarnResult

log = logging.getLogger("django_points_earn")

__all__ = ["DrainReport", "Sent", "call_in_flight", "drain_account", "has_due"]


def drain_account(account_name: str, *, trigger: str = Trigger.WORKER, actor: str = "") -> DrainReport:
    """Send every due earning of one account, one call at a time."""
    settings = get_settings()
    report = DrainReport(account=account_name)
    conn = queueing.connection()
    queueing.clear_drain_request(account_name, conn)
    if accounts.is_paused(account_name):
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


def _drain_locked(account_name, backend, lock, report, deadline, max_wait, trigger, actor, heartbeat) -> None:
    """Send the account's due work, one call at a time; the bookkeeping around a call overlaps the next call.

    While one earning's call is in flight (in the call thread), this thread claims the next record and writes its
    attempt row; when the answer arrives, the next call starts at once, and the answer is recorded while that call
    runs. Refunds and waits (backoff, cooldown, a paused account) take the plain path, with no call in flight.
    """
    settings = get_settings()
    lease = float(settings.lease_seconds)
    cooldown = float(settings.drain["COOLDOWN_AFTER_TIMEOUT"])
    inflight: earning_calls.InFlight | None = None
    ctx = earning_calls.Context(backend, lock, lease, trigger, actor, report, heartbeat)
    with CallThread(account_name, partial(earning_calls.earn, backend), earning_calls.may_follow) as calls:
        try:
            while True:
                if inflight is not None:
                    following = None
                    if time.monotonic() < deadline:
                        following = earning_calls.prepare_next(account_name, ctx)
                    current, inflight = inflight, None  # from here on, _overlap answers for it
                    inflight = earning_calls.overlap(
                        current, following, calls, lock, lease, report, cooldown, trigger, heartbeat
                    )
                    if report.paused:
                        return
                    continue
                if time.monotonic() >= deadline:
                    return
                prepared = earning_calls.claim_next_due(account_name, ctx)  # PostgreSQL: None when it cannot say
                if prepared is False:
                    return  # the account lock is gone
                if prepared is not None:
                    inflight = earning_calls.InFlight(prepared, calls.start(prepared))
                    continue
                gate = accounts.account_gate(account_name)
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
                    if wait is None or wait > max_wait or time.monotonic() + wait >= deadline:
                        return
                    if queueing.jobs_waiting():
                        return  # other accounts' jobs are queued: free this worker, the sweep brings us back when due
                    time.sleep(wait)  # a short backoff (429, first retry) and an idle queue: cheaper to wait here
                    if not still_ours(lock):
                        return
                    continue
                prepared = earning_calls.claim_and_prepare(due, ctx)
                if prepared is False:
                    return  # the account lock is gone
                if prepared is not None:
                    prepared.resend = resend
                    inflight = earning_calls.InFlight(prepared, calls.start(prepared))
        finally:
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
