"""What each admin action does, independent of how it was asked for (bulk from the list, or a button on the page).

Every change goes through the lifecycle's conditional updates, so a double-click, a second tab or a second agent
acting on the same earning at the same moment changes it once and sends it once; the others are told it changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext as _

from .. import corrections, earning_states, holds, outbox, queueing, reversals, verify
from ..models import AccountState, EarningRecord, Kind, Status, Trigger

RETRYABLE = (Status.REJECTED, Status.BLOCKED, Status.FAILED)
RESOLVABLE = tuple(s for s, targets in earning_states.ALLOWED.items() if Status.RESOLVED in targets)
CORRECTABLE = (Status.REJECTED,)
HELD = (Status.HELD,)
REVERSIBLE = (
    Status.HELD,
    Status.AWARDED,
    Status.PARTIALLY_REVERSED,
    Status.PENDING_ACTIVATION,
    Status.ACCEPTED,
    Status.SENDING,
    Status.QUEUED,
)
CORRECTABLE_FIELDS = ("phone", "customer_name")
# Lookups are HTTP calls made while the agent waits: a bulk verify handles at most this many.
MAX_VERIFY = 20


@dataclass
class Report:
    """What an action did: the records it changed, and why it left the others alone."""

    done: list[EarningRecord] = field(default_factory=list)
    refused: list[tuple[EarningRecord, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def refuse(self, record: EarningRecord, why: str) -> None:
        self.refused.append((record, why))


def changed_meanwhile() -> str:
    return _("it changed meanwhile (another agent or a worker got there first); reload to see its state")


def eligible(records: Iterable[EarningRecord], states: tuple[str, ...]) -> tuple[list, list]:
    ok, not_ok = [], []
    for record in records:
        (ok if record.status in states else not_ok).append(record)
    return ok, not_ok


def retry(records: Iterable[EarningRecord], *, actor: str) -> Report:
    report = Report()
    ready, others = eligible(records, RETRYABLE)
    for record in others:
        report.refuse(record, _("only rejected, blocked or failed earnings can be sent again"))
    for record in ready:
        note = f"sent again from the admin by {actor}"
        if why := corrections.cannot_resend(record):
            report.refuse(record, why)  # no request body: only a correction can send it
        elif corrections.requeue(record, trigger=Trigger.ADMIN, actor=actor, note=note):
            report.done.append(record)
        else:
            report.refuse(record, changed_meanwhile())
    accounts = sorted({r.account for r in report.done})
    paused = set(AccountState.objects.filter(account__in=accounts, paused=True).values_list("account", flat=True))
    for account in accounts:
        if account in paused:
            report.notes.append(
                _("Account %(account)s is paused: its earnings wait until it is resumed on the dashboard.")
                % {"account": account}
            )
        else:
            queueing.request_drain_safely(account)
    return report


def verify_with_platform(records: Iterable[EarningRecord], *, actor: str) -> Report:
    report = Report()
    for n, record in enumerate(records):
        if n >= MAX_VERIFY:
            report.refuse(record, _("not checked: at most %(n)d earnings are checked at once") % {"n": MAX_VERIFY})
            continue
        outcome = verify.verify_record(record, actor=actor, trigger=Trigger.ADMIN)
        if outcome.kind == verify.CHECKED:
            report.done.append(record)
            if outcome.drift:
                report.notes.append(
                    _("%(order)s differs from the platform: %(drift)s")
                    % {"order": record.order_number, "drift": outcome.drift}
                )
            else:
                report.notes.append(
                    _("%(order)s agrees with the platform (%(seen)s).")
                    % {"order": record.order_number, "seen": outcome.seen_status}
                )
        elif outcome.kind == verify.BUSY:
            report.refuse(record, _("the account is busy with another call; try again in a moment"))
        elif outcome.kind == verify.NO_REMOTE_ID:
            report.refuse(record, _("no platform id to look up yet (the platform has not confirmed one)"))
        else:
            report.refuse(record, _("the platform could not be asked: %(error)s") % {"error": outcome.message})
    return report


def resolve(records: Iterable[EarningRecord], *, actor: str, note: str) -> Report:
    report = Report()
    ready, others = eligible(records, RESOLVABLE)
    for record in others:
        report.refuse(record, _("only earnings waiting for a human can be marked resolved"))
    for record in ready:
        if corrections.resolve(record, actor=actor, note=note):
            report.done.append(record)
        else:
            report.refuse(record, changed_meanwhile())
    return report


def correct(record: EarningRecord, changes: dict[str, Any], *, actor: str) -> Report:
    """Fix a rejected earning's customer data and send it again. Raises ``InvalidEarningRequest`` when the
    corrected data is still not valid (nothing is changed then)."""
    report = Report()
    changes = {k: v for k, v in changes.items() if k in CORRECTABLE_FIELDS and v not in (None, "")}
    if record.status not in CORRECTABLE:
        report.refuse(record, _("only rejected earnings can be corrected"))
        return report
    if not changes:
        report.refuse(record, _("nothing was changed"))
        return report
    try:
        corrections.correct_and_requeue(record, changes, actor=actor)
    except outbox.TransitionError:
        report.refuse(record, changed_meanwhile())
        return report
    report.done.append(record)
    queueing.request_drain_safely(record.account)
    return report


def resume(account: str, *, actor: str) -> int:
    """Unpause the account, send its blocked earnings again, and wake a worker for it."""
    count = corrections.resume_account(account, actor=actor)
    queueing.request_drain_safely(account)
    return count


def reverse(record: EarningRecord, *, amount: Any, reason: str, refund_id: str, actor: str) -> Report:
    """Take points back for a refund made outside the shop's own flow (the same path as ``order_refunded``)."""
    report = Report()
    if record.kind != Kind.PURCHASE:
        report.refuse(record, _("a rating's points are never taken back by this app (Points does not either)"))
        return report
    if record.status not in REVERSIBLE:
        report.refuse(
            record, _("nothing to take back: the earning is %(state)s") % {"state": record.get_status_display()}
        )
        return report
    before = (record.status, record.total)
    reversal, created = reversals.create(record, refund_id=refund_id, amount=amount, reason=f"{reason} (by {actor})")
    if not created:
        report.refuse(record, _("this refund was already recorded (submitted twice?)"))
        return report
    if reversal.status in ("rejected", "cancelled"):
        now = EarningRecord.objects.filter(pk=record.pk).values_list("status", "total").first()
        if reversal.status == "rejected" or now == before:
            report.refuse(record, reversal.status_reason)
            return report
        # Nothing to take back from the platform, but the earning was lowered or cancelled before it was sent: done
        # (told as "not changed", the agent might enter the same refund again under another reference).
        report.done.append(record)
        report.notes.append(f"{record.order_number}: {reversal.status_reason}")
        return report
    report.done.append(record)
    if reversal.status == "waiting":
        report.notes.append(
            _("%(order)s: the refund waits: %(why)s") % {"order": record.order_number, "why": reversal.status_reason}
        )
    else:
        queueing.request_drain_safely(record.account)
    return report


def send_now(records: Iterable[EarningRecord], *, actor: str) -> Report:
    """Held earnings go to the queue now, before their hold ends (audited with the agent's name)."""
    report = Report()
    ready, others = eligible(records, HELD)
    for record in others:
        report.refuse(record, _("only held earnings can be sent before their hold ends"))
    for record in ready:
        if holds.send_now(record, actor=actor):
            report.done.append(record)
        else:
            report.refuse(record, changed_meanwhile())
    for account in sorted({r.account for r in report.done}):
        queueing.request_drain_safely(account)
    return report


def extend_hold(records: Iterable[EarningRecord], *, actor: str, days: int) -> Report:
    """Held earnings are held ``days`` longer (from their current end, or from now when they wait for delivery)."""
    report = Report()
    ready, others = eligible(records, HELD)
    for record in others:
        report.refuse(record, _("only held earnings can be held longer"))
    now = timezone.now()
    for record in ready:
        until = max(record.send_after or now, now) + timedelta(days=days)
        if holds.extend(record, until, actor=actor):
            report.done.append(record)
        else:
            report.refuse(record, changed_meanwhile())
    return report
