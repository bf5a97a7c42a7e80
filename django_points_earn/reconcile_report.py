"""What ``points_reconcile`` reports: its options, its report, and what needs a human (earnings and refunds that
are rejected, blocked, failed, stuck or drifted, and paused accounts). The dashboard and the admin's "needs
attention" filter ask the same queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, F, Q
from django.utils import timezone

from . import merchant_alerts
from .models import NEEDS_ATTENTION, AccountState, EarningRecord, Reversal, ReversalStatus, Status, Trigger
from .phones import mask_phone, mask_phones_in_text
from .providers.scrubbing import scrub


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
    # Refunds a human must act on (failed, rejected, overdue), and of them the ones not reported before.
    refunds_needing_attention_total: int = 0
    new_refund_attention_total: int = 0
    refunds_needing_attention: list[dict[str, Any]] = field(default_factory=list)
    # Each account's latest balance alert while unresolved (merchant_alerts): shown, not counted in the exit code.
    balance_alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def needs_a_human(self) -> bool:
        return bool(self.needs_attention_total or self.refunds_needing_attention_total or self.paused_accounts)

    @property
    def new_for_a_human(self) -> int:
        """What ``--fail-on new`` alerts on: earnings and refunds not reported before."""
        return self.new_attention_total + self.new_refund_attention_total

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
            "refunds_needing_attention_total": self.refunds_needing_attention_total,
            "new_refund_attention_total": self.new_refund_attention_total,
            "refunds_needing_attention": self.refunds_needing_attention,
        }


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


def refund_attention_queryset(options: Options | None = None):
    """Refunds a human must act on: failed, rejected by the platform or refused here, queued and overdue."""
    options = options or Options()
    now = timezone.now()
    q = Q(status__in=(ReversalStatus.FAILED, ReversalStatus.REJECTED)) | Q(
        status=ReversalStatus.QUEUED, next_attempt_at__lt=now - options.stale_after
    )
    qs = Reversal.objects.filter(q).select_related("record")
    if options.account:
        qs = qs.filter(record__account=options.account)
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


def summarise(report: Report, options: Options) -> None:
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
    refunds = refund_attention_queryset(options)
    report.refunds_needing_attention_total = refunds.count()
    new_refunds = not_yet_reported(refunds)
    report.new_refund_attention_total = new_refunds.count()
    if options.mark_reported and not options.dry_run and report.new_refund_attention_total:
        new_refunds.filter(updated_at__lte=cutoff).update(attention_reported_at=cutoff)
    report.refunds_needing_attention = [
        {
            "account": r.record.account,
            "order_number": r.record.order_number,
            "refund_id": r.refund_id,
            "status": r.status,
            "reason": mask_phones_in_text(scrub(r.status_reason))[:200],
        }
        for r in refunds.order_by("-updated_at")[: options.attention_list]
    ]
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
