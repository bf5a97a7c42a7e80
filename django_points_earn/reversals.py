"""Refunds: when points can be taken back, and how much. A refund becomes a :class:`Reversal`, an outbox row like an
earning: written in the shop's transaction, sent by the account's drain job under the account lock through the same
machine (:mod:`django_points_earn.reversal_lifecycle` says what its answers mean), its attempts and state changes on
the earning's timeline. Its first state depends on the earning's:

- not sent yet, full refund        -> the earning is cancelled and nothing is ever sent;
- in flight, pending activation, or awarded without a platform id -> ``waiting`` (released when that changes);
- awarded                          -> ``queued``;
- nothing was or will be awarded   -> ``cancelled``.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from . import announce, holds, reversal_lifecycle, settlement
from .adapters import InvalidEarningRequest, to_money
from .conf import get_settings
from .earning_states import EARNINGS, SETTLED_HOOKS
from .models import EarningRecord, Reversal, ReversalStatus, Status, Trigger
from .outbox import Audit
from .providers import get_backend
from .reversal_lifecycle import REVERSALS

log = logging.getLogger("django_points_earn")
R = ReversalStatus

NOT_SENT = (Status.QUEUED, Status.REJECTED, Status.FAILED, Status.BLOCKED)
NOTHING_TO_TAKE = (Status.SKIPPED, Status.RESOLVED, Status.CANCELLED, Status.REVERSED)
RESOLVED_BY_HAND = (
    "the earning was resolved by hand, outside this app: nothing is taken back here; if its points were awarded "
    "by hand, take them back by hand too"
)


def reserved_amount(record: EarningRecord, *, exclude: int | None = None) -> Decimal:
    """What earlier reversals of this earning already take back (a full one takes everything)."""
    live = record.reversal_set.exclude(status__in=[R.CANCELLED, R.REJECTED])
    if exclude:
        live = live.exclude(pk=exclude)
    if live.filter(amount__isnull=True).exists():
        return record.total or Decimal("0")
    return live.aggregate(s=Sum("amount"))["s"] or Decimal("0")


def amount_to_take(reversal: Reversal) -> Decimal | None:
    """What this refund takes back, explicitly: its amount, or for "the rest" the total less what the earning's
    other refunds take. ``None`` only when the earning's total is unknown."""
    if reversal.amount is not None:
        return reversal.amount
    record = reversal.record
    if record.total is None:
        return None
    return max(Decimal("0"), record.total - reserved_amount(record, exclude=reversal.pk))


def create(
    record: EarningRecord, *, refund_id: str, amount: Any, reason: str, source: str = "shop"
) -> tuple[Reversal, bool]:
    """Record a refund of ``record`` (inside the caller's transaction). A repeated ``refund_id`` finds the first."""
    existing = Reversal.objects.filter(record=record, refund_id=refund_id).first()
    if existing:
        return existing, False
    if record.status == Status.HELD:
        held = _refund_while_held(record, refund_id=refund_id, amount=amount, reason=reason, source=source)
        if held is not None:
            return held
        record.refresh_from_db()  # released meanwhile (or a refund it cannot take): the ordinary path
    status, why = _first_state(record, amount)
    refused = status in (R.QUEUED, R.WAITING) and _platform_refuses(record, amount)
    if refused:  # e.g. fabric reverses whole earns: a partial refund goes to a human, nothing is sent
        status, why = R.REJECTED, refused
    if status == R.REJECTED and not refused:
        money = None
    else:
        money = None if amount is None else to_money(amount, "refund amount")
    try:
        with transaction.atomic():
            reversal = Reversal.objects.create(
                record=record,
                refund_id=refund_id[:100],
                source=source,
                amount=money,
                reason=(reason or "")[:400],
                status=status,
                status_reason=why,
                next_attempt_at=timezone.now() if status == R.QUEUED else None,
                completed_at=timezone.now() if status in (R.CANCELLED, R.REJECTED) else None,
            )
            if status == R.CANCELLED and record.status in NOT_SENT and amount is None:
                if settlement.cancel_unsent(record, note=f"refunded before it was sent (refund {refund_id})"):
                    release_waiting(record)  # partial refunds that waited for the award: nothing to take back
    except IntegrityError:
        return Reversal.objects.get(record=record, refund_id=refund_id), False
    log.info("refund %s of %s/%s recorded as %s: %s", refund_id, record.account, record.order_number, status, why)
    return reversal, True


def _refund_while_held(
    record: EarningRecord, *, refund_id: str, amount: Any, reason: str, source: str
) -> tuple[Reversal, bool] | None:
    """A refund of an earning still held: nothing was sent, so nothing is taken back from the platform. A full
    refund cancels the earning (it is never sent); a partial one lowers what will be sent. ``None``: the earning
    left ``held`` meanwhile (the sweep released it), or the amount is not one to apply (the ordinary path says
    why)."""
    try:
        money = None if amount is None else to_money(amount, "refund amount")
    except InvalidEarningRequest:
        return None
    if money is not None and (money <= 0 or record.total is None or money > record.total):
        return None
    try:
        with transaction.atomic():
            if money is None or money >= record.total:
                note = f"refunded while held (refund {refund_id}): cancelled, nothing is ever sent"
                if not settlement.cancel_unsent(record, note=note):
                    return None
                release_waiting(record)  # a refund that waited for the sending: nothing to take back now
                why = "the earning was held and never sent: it is cancelled, nothing is sent"
            else:
                try:
                    taken = holds.take_off(record, money, refund_id=refund_id)
                except Exception:  # e.g. the lowered order no longer builds: the refund waits for the sending
                    log.exception("refund %s: could not lower held earning %s", refund_id, record.pk)
                    return None
                if taken is None:
                    return None
                why = f"taken off the held earning before it was sent: {taken}"
            reversal = Reversal.objects.create(
                record=record,
                refund_id=refund_id[:100],
                source=source,
                amount=money,
                reason=(reason or "")[:400],
                status=R.CANCELLED,
                status_reason=why,
                completed_at=timezone.now(),
            )
    except IntegrityError:
        return Reversal.objects.get(record=record, refund_id=refund_id), False
    log.info("refund %s of held %s/%s: %s", refund_id, record.account, record.order_number, why)
    return reversal, True


def _platform_refuses(record: EarningRecord, amount: Any) -> str:
    """Why the account's platform cannot take back this partial refund (a provider capability), else ""."""
    if amount is None or record.total is None or to_money(amount, "refund amount") >= record.total:
        return ""
    try:
        backend = get_backend(get_settings().account(record.account))
    except ImproperlyConfigured:
        return ""
    return backend.partial_reversal_refusal(to_money(amount, "refund amount"), record.total)


def _first_state(record: EarningRecord, amount: Any) -> tuple[str, str]:
    if amount is not None:
        try:
            money = to_money(amount, "refund amount")
        except InvalidEarningRequest as exc:
            return R.REJECTED, str(exc)
        if money <= 0:
            return R.REJECTED, f"refund amount must be positive, not {money}"
        remaining = (record.total or Decimal("0")) - reserved_amount(record)
        if money > remaining:
            return R.REJECTED, f"refund of {money} exceeds what is left to take back ({remaining})"
    elif record.total is not None and reserved_amount(record) >= record.total:
        return R.REJECTED, "everything earned has already been taken back"
    if record.status in NOT_SENT:
        if record.outcome_unknown:
            # An earlier call's answer was lost: the platform may hold (and have credited) the order already.
            return R.WAITING, (
                "an earlier attempt's outcome is unknown, so the platform may have awarded this earning: waits "
                "for its outcome, then takes back what was awarded"
            )
        if amount is None:
            return R.CANCELLED, "the earning had not been sent: it is cancelled and nothing is sent"
        return R.WAITING, "waits until the earning is awarded, then takes back its share"
    if record.status == Status.HELD:
        # Only when the held earning could not simply be lowered (holds.take_off): take its share back once sent.
        return R.WAITING, "the earning is held and could not be lowered: its share is taken back once it is sent"
    if record.status == Status.SENDING:
        return R.WAITING, "the earning is being sent right now: waits for its outcome"
    if record.status == Status.ACCEPTED:
        return R.WAITING, (
            "the platform holds this order but has not confirmed it or given its id yet: waits for its approved webhook"
        )
    if record.status == Status.PENDING_ACTIVATION:
        return R.WAITING, (
            "the customer has not activated their Points account, so the platform has no id for this earning yet: "
            "waits for the approved webhook (or reconcile) to give it"
        )
    if record.status in (Status.AWARDED, Status.PARTIALLY_REVERSED):
        if not record.remote_id:
            return R.WAITING, "the platform id of this earning is unknown: waits for the webhook that gives it"
        return R.QUEUED, ""
    if record.status == Status.RESOLVED:
        return R.CANCELLED, RESOLVED_BY_HAND
    return R.CANCELLED, f"nothing to take back: the earning is {record.status}"


def release_waiting(record: EarningRecord) -> int:
    """The earning moved on: queue (or cancel) the reversals that waited for it. Returns how many were queued."""
    waiting = list(Reversal.objects.filter(record=record, status=R.WAITING))
    if not waiting:
        return 0
    queued = 0
    for reversal in waiting:
        if record.status in (Status.AWARDED, Status.PARTIALLY_REVERSED) and record.remote_id:
            queued += reversal_lifecycle.move_unsent(reversal, R.QUEUED, f"the earning is {record.status}: sent now")
        elif record.status in NOTHING_TO_TAKE:
            why = (
                RESOLVED_BY_HAND
                if record.status == Status.RESOLVED
                else f"nothing to take back: the earning is {record.status}"
            )
            reversal_lifecycle.move_unsent(reversal, R.CANCELLED, why)
        elif (
            record.status in (Status.REJECTED, Status.FAILED) and reversal.amount is None and not record.outcome_unknown
        ):
            # A fully refunded order must not be awarded by a later retry of its earning.
            if settlement.cancel_unsent(
                record, note=f"refunded while it could not be sent (refund {reversal.refund_id})"
            ):
                why = "the earning was never awarded; it is cancelled, nothing is sent"
                reversal_lifecycle.move_unsent(reversal, R.CANCELLED, why)
    return queued


def release_after_settled(record: EarningRecord) -> None:
    """The lifecycle's hook after an earning moved on: its waiting refunds are queued (or cancelled), and a drain
    job is asked for once the transaction commits."""
    if release_waiting(record):
        from .queueing import request_drain_safely

        account = record.account
        transaction.on_commit(lambda: request_drain_safely(account))


def register_lifecycle_hooks() -> None:
    """Called once when the app is ready (apps.py)."""
    if release_after_settled not in SETTLED_HOOKS:
        SETTLED_HOOKS.append(release_after_settled)
    if cancel_if_refunded_unsent not in EARNINGS.given_back_hooks:
        EARNINGS.given_back_hooks.append(cancel_if_refunded_unsent)


def cancel_if_refunded_unsent(record: EarningRecord) -> bool:
    """The earning went back to the queue without its call being made (prepared during another call, then given
    back): a full refund that waited for that call cancels it now, as it would have had it found it queued."""
    if record.outcome_unknown:
        return False  # an earlier attempt may have landed: the refund must wait for the outcome
    full = Reversal.objects.filter(record=record, status=R.WAITING, amount__isnull=True).first()
    if full is None:
        return False
    if not settlement.cancel_unsent(record, note=f"refunded before it was sent (refund {full.refund_id})"):
        return False
    reversal_lifecycle.move_unsent(
        full, R.CANCELLED, "the earning had not been sent: it is cancelled and nothing is sent"
    )
    release_waiting(record)  # any other reversal that waited: nothing to take back now
    return True


def record_platform_refund(
    record: EarningRecord,
    *,
    key: str,
    amount: Decimal | None,
    points: Decimal | None,
    reason: str,
    remote_status: str,
    fully: bool,
) -> bool:
    """A refund made on the platform itself (its dashboard) that we did not send: kept on the earning as a reversal
    born ``reversed`` (there is nothing for us to send), and the earning becomes (partially) reversed, or reversed
    when ``fully`` (the platform says every point is back; its webhook parser reads that from ``remote_status``).
    A second delivery of the same refund (same ``key``) changes nothing. Returns whether it was new."""
    why = f"refunded on the platform ({remote_status})"
    fields = {
        "source": "platform",
        "amount": amount,
        "points": points,
        "reason": (reason or "")[:400],
        "status": R.REVERSED,
        "status_reason": why,
        "completed_at": timezone.now(),
    }
    try:
        with transaction.atomic():
            reversal, created = Reversal.objects.get_or_create(record=record, refund_id=key[:100], defaults=fields)
            if created:  # its own history starts here (its earning's follows below)
                REVERSALS.record_event(
                    reversal, "", R.REVERSED, Audit(Trigger.WORKER, "", f"refund {key[:100]}: {why}")
                )
    except IntegrityError:
        return False
    if created:
        settlement.apply_reversal(record, note=why, trigger=Trigger.WORKER, fully=fully)
        announce.reversal_reversed(reversal)
    return created
