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
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, F, Q
from django.utils import timezone
from redis.exceptions import LockError
from redis.lock import Lock

from . import corrections, holds, merchant_alerts, metrics, queueing
from .conf import get_settings
from .kinds import MACHINES
from .models import NEEDS_ATTENTION, AccountState, EarningRecord, Status, Trigger
from .phones import mask_phone, mask_phones_in_text
from .providers.scrubbing import scrub

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


@dataclass
class Options:
    account: str | None = None
    dry_run: bool = False
    verify_remote: bool = False
    retry_failed: bool = False
    since: datetime | None = None  # backfill and remote verification look this far back
    limit: int | None = None  # at most this many items per step
    stale_after: timedelta = timedelta(minutes=30)  # queued and overdue this long = stuck (needs a human)
    pending_after: timedelta = timedelta(days=7)  # pending_activation this old = needs a human
    attention_list: int = 50
    trigger: str = Trigger.RECONCILE
    actor: str = ""
    # Record what this run reports as needing a human, so that the next ``--fail-on new`` run knows it was told.
    mark_reported: bool = False


@dataclass
class Report:
    dry_run: bool = False
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_state: list[dict[str, Any]] = field(default_factory=list)
    needs_attention_total: int = 0
    needs_attention: list[dict[str, Any]] = field(default_factory=list)
    # Of needs_attention_total: not reported by an earlier ``--fail-on new`` run, or changed state since.
    new_attention_total: int = 0
    # Paused accounts send nothing until a person resumes them: they always need a human.
    paused_accounts: list[dict[str, Any]] = field(default_factory=list)
    # Each account's latest balance alert while unresolved (merchant_alerts): shown, not counted in the exit code.
    balance_alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def needs_a_human(self) -> bool:
        return bool(self.needs_attention_total or self.paused_accounts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "steps": self.steps,
            "by_state": self.by_state,
            "paused_accounts": self.paused_accounts,
            "balance_alerts": self.balance_alerts,
            "needs_attention_total": self.needs_attention_total,
            "new_attention_total": self.new_attention_total,
            "needs_attention": self.needs_attention,
        }


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
    names = {name for machine in MACHINES for name in machine.accounts_with_due_work()}
    return sorted(name for name in names - paused if not account or name == account)


def enqueue_due(*, account: str | None = None, dry_run: bool = False) -> list[str]:
    """Accounts with due records and no drain job queued or running get one (lost jobs, retries come due)."""
    requested = []
    conn = queueing.connection()
    for name in accounts_with_due_work(account):
        if queueing.drain_active(name, conn):
            continue
        if dry_run or queueing.request_drain(name, conn):
            requested.append(name)
    return requested


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
        _summarise(report, options)
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
                order_number__in=[n for _, n in keys], account__in={a for a, _ in keys}
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


def attention_queryset(options: Options | None = None):
    """What needs a human: rejected, blocked, failed, stuck (queued and overdue), old pending, drifted."""
    options = options or Options()
    now = timezone.now()
    q = (
        Q(status__in=NEEDS_ATTENTION)
        | Q(status=Status.QUEUED, next_attempt_at__lt=now - options.stale_after)
        | Q(status__in=(Status.PENDING_ACTIVATION, Status.ACCEPTED), updated_at__lt=now - options.pending_after)
        | Q(status=Status.AWARDED) & ~Q(drift="")
    )
    qs = EarningRecord.objects.filter(q)
    if options.account:
        qs = qs.filter(account=options.account)
    return qs


def not_yet_reported(attention: Any) -> Any:
    """Of ``attention``: never reported by ``--fail-on new``, or moved to a state needing a human since."""
    return attention.filter(Q(attention_reported_at__isnull=True) | Q(attention_reported_at__lt=F("updated_at")))


def paused_accounts(account: str | None = None) -> list[dict[str, Any]]:
    qs = AccountState.objects.filter(paused=True).order_by("account")
    if account:
        qs = qs.filter(account=account)
    return [
        {"account": s.account, "reason": mask_phones_in_text(scrub(s.reason))[:200], "paused_at": s.paused_at}
        for s in qs
    ]


def _summarise(report: Report, options: Options) -> None:
    cutoff = timezone.now()
    qs = EarningRecord.objects.all()
    if options.account:
        qs = qs.filter(account=options.account)
    report.by_state = list(qs.values("account", "status").annotate(n=Count("id")).order_by("account", "status"))
    report.paused_accounts = paused_accounts(options.account)
    alerts = [a for a in merchant_alerts.open_alerts() if options.account in (None, a.account)]
    report.balance_alerts = [{"account": a.account, "kind": a.kind, "since": a.received_at} for a in alerts]
    attention = attention_queryset(options)
    report.needs_attention_total = attention.count()
    new = not_yet_reported(attention)
    report.new_attention_total = new.count()
    if options.mark_reported and not options.dry_run and report.new_attention_total:
        new.filter(updated_at__lte=cutoff).update(attention_reported_at=cutoff)  # not updated_at: no state change
    report.needs_attention = [
        {
            "account": r.account,
            "order_number": r.order_number,
            "status": r.status,
            "phone": mask_phone(r.phone),
            "reason": mask_phones_in_text(scrub(r.drift or r.status_reason))[:200],  # as the admin shows it
        }
        for r in attention.order_by("-updated_at")[: options.attention_list]
    ]


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
