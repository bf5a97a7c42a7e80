"""Sweeps that bring the database and Redis back into agreement. Used by the worker tick, the command and admin."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.utils import timezone
from redis.exceptions import LockError
from redis.lock import Lock

from . import lifecycle, queueing
from .conf import get_settings
from .models import AccountState, EarningRecord, Status, Trigger

log = logging.getLogger("django_points_earn")

BATCH = 500


@dataclass
class SweepReport:
    recovered_leases: int = 0
    drains_requested: list[str] = field(default_factory=list)
    redis_error: str = ""

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def recover_expired_leases(*, limit: int | None = None, dry_run: bool = False) -> int:
    """Records ``sending`` past their lease (their worker was killed): due again, outcome unknown."""
    count = 0
    qs = EarningRecord.objects.filter(status=Status.SENDING, lease_expires_at__lt=timezone.now()).order_by("id")
    for record in qs.iterator(chunk_size=BATCH):
        if limit is not None and count >= limit:
            break
        if dry_run or lifecycle.recover_expired_lease(record, trigger=Trigger.RECONCILE):
            count += 1
    if count and not dry_run:
        log.warning("recovered %d earnings whose worker stopped mid-call", count)
    return count


def accounts_with_due_work() -> list[str]:
    paused = AccountState.objects.filter(paused=True).values_list("account", flat=True)
    return list(
        EarningRecord.objects.filter(status=Status.QUEUED, next_attempt_at__lte=timezone.now())
        .exclude(account__in=paused)
        .values_list("account", flat=True)
        .distinct()
        .order_by()
    )


def enqueue_due(*, dry_run: bool = False) -> list[str]:
    """Accounts with due records and no drain job queued or running get one (lost jobs, retries come due)."""
    requested = []
    conn = queueing.connection()
    for account in accounts_with_due_work():
        if queueing.drain_active(account, conn):
            continue
        if dry_run or queueing.request_drain(account, conn):
            requested.append(account)
    return requested


def sweep() -> SweepReport:
    report = SweepReport(recovered_leases=recover_expired_leases())
    try:
        report.drains_requested = enqueue_due()
    except Exception as exc:  # Redis down: the records are safe in the database; the next sweep tries again
        report.redis_error = f"{type(exc).__name__}: {exc}"
        log.warning("sweep could not reach Redis: %s", report.redis_error)
    return report


@contextmanager
def exclusive_run(ttl: int = 600) -> Iterator[bool]:
    """Only one reconcile at a time (command, admin button or periodic job); yields False to the second."""
    lock = Lock(queueing.connection(), f"{get_settings().redis_prefix}:reconcile", timeout=ttl, thread_local=False)
    if not lock.acquire(blocking=False):
        yield False
        return
    try:
        yield True
    finally:
        try:
            lock.release()
        except LockError:
            pass
