"""Sweeps that bring the database, Redis and the platforms back into agreement.

Used by the worker tick (:func:`sweep`: the two cheap steps, every few seconds), by ``manage.py points_reconcile``
and the admin's "run reconcile now" (:func:`run`: every step, with counts). Every step streams in batches, so
memory and the number of queries grow with the work found, not with the size of the table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone
from redis.exceptions import LockError
from redis.lock import Lock

from . import corrections, holds, metrics, queueing, reversal_lifecycle
from .conf import get_settings
from .kinds import MACHINES
from .models import AccountState, EarningRecord, Kind, Reversal, ReversalStatus, Status
from .reconcile_report import (
    Options,
    Report,
    summarise,
)

log = logging.getLogger("django_points_earn")

BATCH = 500
Progress = Callable[[str, int], None]  # (step, items done so far)


@dataclass
class SweepReport:
    recovered_leases: int = 0
    released_holds: int = 0
    drains_requested: list[str] = field(default_factory=list)
    redis_error: str = ""

    def as_dict(self) -> dict:
        return self.__dict__.copy()


# -- the cheap sweep (worker tick, cron) -------------------------------------------------------------------------
def recover_expired_leases(
    *, account: str | None = None, limit: int | None = None, dry_run: bool = False, progress: Progress | None = None
) -> int:
    """Outbox rows (earnings, refunds) ``sending`` past their lease (their worker was killed): due again, outcome
    unknown; ``limit`` counts them all together."""
    if dry_run:
        count = sum(machine.expired_leases(account).count() for machine in MACHINES)
        return min(count, limit) if limit is not None else count
    count = 0
    for machine in MACHINES:
        while limit is None or count < limit:
            size = BATCH if limit is None else min(BATCH, limit - count)
            moved = machine.recover_expired_leases(account=account, batch=size)
            if not moved:
                break
            count += moved
            if progress:
                progress("expired leases", count)
    if count:
        log.warning("recovered %d earnings and refunds whose worker stopped mid-call", count)
    return count


def accounts_with_due_work(account: str | None = None) -> list[str]:
    """Accounts, not paused, with an earning or a refund due now."""
    paused = set(AccountState.objects.filter(paused=True).values_list("account", flat=True))
    names = {name for machine in MACHINES for name in machine.accounts_with_due_work(account)}
    return sorted(names - paused)


def enqueue_due(*, account: str | None = None, dry_run: bool = False) -> list[str]:
    """Accounts with due records and no drain job queued or running get one (lost jobs, retries come due)."""
    conn = queueing.connection()
    names = queueing.without_drain(accounts_with_due_work(account), conn)
    return names if dry_run else queueing.request_drains(names, conn)


def sweep() -> SweepReport:
    from .webhooks import process_pending

    try:
        report = SweepReport(recovered_leases=recover_expired_leases(), released_holds=holds.release_due())
        processed = process_pending()
    except BaseException:
        metrics.sweep(None, error=True)
        raise
    try:
        report.drains_requested = enqueue_due()
    except Exception as exc:  # Redis down: the records are safe in the database; the next sweep tries again
        report.redis_error = f"{type(exc).__name__}: {exc}"
        log.warning("sweep could not reach Redis: %s", report.redis_error)
    metrics.sweep(report, webhooks_processed=processed)
    return report


# -- the full run ------------------------------------------------------------------------------------------------
def run(options: Options, progress: Progress | None = None) -> Report:
    """Every step, in order, each reported with counts. Raises :class:`AlreadyRunning` if another run holds on."""
    with exclusive_run() as got_it:
        if not got_it:
            raise AlreadyRunning("another points_reconcile is running; this one stops")
        report = Report(dry_run=options.dry_run)
        report.steps["missed_orders"] = backfill_missed_orders(options, progress)
        recovered = recover_expired_leases(
            account=options.account, limit=options.limit, dry_run=options.dry_run, progress=progress
        )
        report.steps["expired_leases"] = {"recovered": recovered}
        released = 0 if options.dry_run else holds.release_due()
        report.steps["held"] = {"released": released, **holds.summary()}
        if options.retry_failed:
            report.steps["retry_failed"] = {"requeued": requeue_failed(options, progress)}
        report.steps["lost_jobs"] = {"accounts_enqueued": enqueue_due(account=options.account, dry_run=options.dry_run)}
        report.steps["pending_customers"] = pending_customers(options)
        if options.verify_remote:
            report.steps["remote_verification"] = verify_remote(options, progress)
        summarise(report, options)
    return report


class AlreadyRunning(Exception):
    pass


def backfill_missed_orders(options: Options, progress: Progress | None = None) -> dict[str, Any]:
    """Paid orders the signal never saw (e.g. a queryset ``update()``) get their record now.

    Only when the shop's adapter offers ``paid_orders_since`` and a ``since`` date is given.
    """
    from .adapters import get_adapter
    from .receivers import record_paid_order

    if options.since is None:
        return {"skipped": "no --since given"}
    adapter = get_adapter()
    try:
        orders = iter(adapter.paid_orders_since(options.since))
    except NotImplementedError:
        return {"skipped": "the order adapter does not implement paid_orders_since()"}
    found: list[str] = []
    created = checked = 0
    for batch in _batches(orders, BATCH):
        keys = {}
        for order in batch:
            try:
                account, number = adapter.get_account(order), str(adapter.get_order_number(order)).strip()
            except Exception as exc:  # one bad order must not stop the others
                log.warning("backfill: could not read order %r: %s", getattr(order, "pk", order), exc)
                continue
            if options.account and account != options.account:
                continue
            keys[(account, number)] = order
        checked += len(batch)
        existing = set(
            EarningRecord.objects.filter(
                kind=Kind.PURCHASE, order_number__in=[n for _, n in keys], account__in={a for a, _ in keys}
            ).values_list("account", "order_number")
        )
        for key, order in keys.items():
            if key in existing:
                continue
            if options.limit is not None and len(found) >= options.limit:
                break
            found.append(f"{key[0]}/{key[1]}")
            if not options.dry_run:
                record = record_paid_order(order)
                if record is not None and record.status == Status.QUEUED:
                    created += 1
                    queueing.request_drain_safely(record.account)
        if progress:
            progress("missed orders", checked)
    if found and not options.dry_run:
        log.warning("backfilled %d paid orders that had no earning", len(found))
    return {
        "checked": checked,
        "missing": len(found),
        "recorded": 0 if options.dry_run else len(found),
        "queued": created,
        "orders": found[:200],
    }


def requeue_failed(options: Options, progress: Progress | None = None) -> int:
    qs = EarningRecord.objects.filter(status=Status.FAILED)
    if options.account:
        qs = qs.filter(account=options.account)
    count = 0
    accounts = set()
    for record in qs.order_by("id").iterator(chunk_size=BATCH):
        if options.limit is not None and count >= options.limit:
            break
        if options.dry_run or corrections.requeue(
            record, trigger=options.trigger, actor=options.actor, note="retried by points_reconcile --retry-failed"
        ):
            count += 1
            accounts.add(record.account)
            if progress:
                progress("retry failed", count)
    refunds = Reversal.objects.filter(status=ReversalStatus.FAILED).select_related("record")
    if options.account:
        refunds = refunds.filter(record__account=options.account)
    for reversal in refunds.order_by("id").iterator(chunk_size=BATCH):
        if options.limit is not None and count >= options.limit:
            break
        note = "retried by points_reconcile --retry-failed"
        if options.dry_run or reversal_lifecycle.requeue(
            reversal, actor=options.actor, note=note, trigger=options.trigger
        ):
            count += 1
            accounts.add(reversal.record.account)
    for account in accounts if not options.dry_run else ():
        queueing.request_drain_safely(account)
    return count


def pending_customers(options: Options) -> dict[str, Any]:
    """Points has no lookup for a pending earning (no uuid): its approved webhook settles it. Old ones need a human."""
    limit = timezone.now() - options.pending_after
    counts: dict[str, Any] = {}
    # Accepted: the platform holds the order (a duplicate answer) but never said it was credited; also settled by
    # its approved webhook.
    for key, status in (("pending", Status.PENDING_ACTIVATION), ("accepted", Status.ACCEPTED)):
        qs = EarningRecord.objects.filter(status=status)
        if options.account:
            qs = qs.filter(account=options.account)
        counts[key] = qs.count()
        counts[f"{key}_older_than_limit"] = qs.filter(updated_at__lt=limit).count()
    counts["older_than_limit"] = counts.pop("pending_older_than_limit")
    return counts


def verify_remote(options: Options, progress: Progress | None = None) -> dict[str, Any]:
    """Ask the platform about awarded earnings, one account at a time, under the account's lock; record drift."""
    from .verify import verify_record

    since = options.since or timezone.now() - timedelta(days=7)
    qs = EarningRecord.objects.filter(status=Status.AWARDED, completed_at__gte=since).exclude(remote_id="")
    if options.account:
        qs = qs.filter(account=options.account)
    counts = {"checked": 0, "agree": 0, "drift": 0, "errors": 0, "unconfirmed": 0, "drifted": []}
    counts["unconfirmed"] = (
        EarningRecord.objects.filter(status=Status.ACCEPTED, created_at__gte=since)
        .filter(Q(account=options.account) if options.account else Q())
        .count()
    )
    if options.dry_run:
        counts["would_check"] = qs.count()
        return counts
    for record in qs.order_by("account", "id").iterator(chunk_size=BATCH):
        if options.limit is not None and counts["checked"] >= options.limit:
            break
        outcome = verify_record(record, actor=options.actor or "reconcile", trigger=options.trigger, wait=True)
        counts["checked"] += 1
        if outcome.error:
            counts["errors"] += 1
        elif outcome.drift:
            counts["drift"] += 1
            counts["drifted"].append(f"{record.account}/{record.order_number}: {outcome.drift}")
        else:
            counts["agree"] += 1
        if progress:
            progress("remote verification", counts["checked"])
    counts["drifted"] = counts["drifted"][:200]
    return counts


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@contextmanager
def exclusive_run(ttl: int = 3600) -> Iterator[bool]:
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
