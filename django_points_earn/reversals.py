"""Refunds: the only writer of ``Reversal.status``, and the rules for when points can be taken back.

A reversal is an outbox row like an earning: written in the shop's transaction, sent by the account's drain job
under the account lock, with its attempts on the earning's timeline. Its first state depends on the earning's:

- not sent yet, full refund        -> the earning is cancelled and nothing is ever sent;
- in flight, pending activation, or awarded without a platform id -> ``waiting`` (released when that changes);
- awarded                          -> ``queued``;
- nothing was or will be awarded   -> ``cancelled``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Sum
from django.utils import timezone

from . import lifecycle
from .adapters import InvalidEarningRequest, to_money
from .conf import get_settings
from .models import EarningAttempt, EarningRecord, Reversal, ReversalStatus, Status, Trigger
from .providers import base as results
from .providers import get_backend
from .providers.base import EarnResult

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
                if lifecycle.cancel_unsent(record, note=f"refunded before it was sent (refund {refund_id})"):
                    release_waiting(record)  # partial refunds that waited for the award: nothing to take back
    except IntegrityError:
        return Reversal.objects.get(record=record, refund_id=refund_id), False
    log.info("refund %s of %s/%s recorded as %s: %s", refund_id, record.account, record.order_number, status, why)
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
    now = timezone.now()
    queued = 0
    for reversal in waiting:
        if record.status in (Status.AWARDED, Status.PARTIALLY_REVERSED) and record.remote_id:
            queued += _move(reversal, R.WAITING, R.QUEUED, next_attempt_at=now, status_reason="")
        elif record.status in NOTHING_TO_TAKE:
            _move(
                reversal,
                R.WAITING,
                R.CANCELLED,
                completed_at=now,
                status_reason=RESOLVED_BY_HAND
                if record.status == Status.RESOLVED
                else f"nothing to take back: the earning is {record.status}",
            )
        elif (
            record.status in (Status.REJECTED, Status.FAILED) and reversal.amount is None and not record.outcome_unknown
        ):
            # A fully refunded order must not be awarded by a later retry of its earning.
            if lifecycle.cancel_unsent(
                record, note=f"refunded while it could not be sent (refund {reversal.refund_id})"
            ):
                _move(
                    reversal,
                    R.WAITING,
                    R.CANCELLED,
                    completed_at=now,
                    status_reason="the earning was never awarded; it is cancelled, nothing is sent",
                )
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
    if release_after_settled not in lifecycle.SETTLED_HOOKS:
        lifecycle.SETTLED_HOOKS.append(release_after_settled)
    if cancel_if_refunded_unsent not in lifecycle.GIVEN_BACK_HOOKS:
        lifecycle.GIVEN_BACK_HOOKS.append(cancel_if_refunded_unsent)


def cancel_if_refunded_unsent(record: EarningRecord) -> bool:
    """The earning went back to the queue without its call being made (prepared during another call, then given
    back): a full refund that waited for that call cancels it now, as it would have had it found it queued."""
    if record.outcome_unknown:
        return False  # an earlier attempt may have landed: the refund must wait for the outcome
    full = Reversal.objects.filter(record=record, status=R.WAITING, amount__isnull=True).first()
    if full is None:
        return False
    if not lifecycle.cancel_unsent(record, note=f"refunded before it was sent (refund {full.refund_id})"):
        return False
    _move(
        full,
        R.WAITING,
        R.CANCELLED,
        completed_at=timezone.now(),
        status_reason="the earning had not been sent: it is cancelled and nothing is sent",
    )
    release_waiting(record)  # any other reversal that waited: nothing to take back now
    return True


# -- the worker's path -----------------------------------------------------------------------------------------
def claim(reversal_id: int, *, lease_seconds: float) -> Reversal | None:
    now = timezone.now()
    token = lifecycle.new_token()
    won = Reversal.objects.filter(pk=reversal_id, status=R.QUEUED, next_attempt_at__lte=now).update(
        status=R.SENDING, lease_expires_at=now + timedelta(seconds=lease_seconds), lease_token=token, updated_at=now
    )
    return Reversal.objects.select_related("record").get(pk=reversal_id) if won else None


def release(reversal: Reversal) -> bool:
    """Give back a claim without having called the platform (the account lock was lost)."""
    return _move(reversal, R.SENDING, R.QUEUED, claimed_by=reversal.lease_token, lease_token="", lease_expires_at=None)


def start_attempt(reversal: Reversal, body: dict[str, Any], *, trigger: str, actor: str = "") -> EarningAttempt:
    number = EarningAttempt.objects.filter(record_id=reversal.record_id).count() + 1
    return EarningAttempt.objects.create(
        record_id=reversal.record_id,
        reversal=reversal,
        number=number,
        trigger=trigger,
        actor=actor[:150],
        request_body=body,
        started_at=timezone.now(),
    )


def remember_remote_before(reversal: Reversal, snapshot: dict[str, Any]) -> None:
    Reversal.objects.filter(pk=reversal.pk).update(remote_before=snapshot)
    reversal.remote_before = snapshot


def complete(
    reversal: Reversal, attempt: EarningAttempt | None, result: EarnResult, *, trigger: str = Trigger.WORKER
) -> Reversal:
    """Record the platform's answer to a refund call and move the reversal (and its earning) on."""
    now = timezone.now()
    policy = get_settings().retry
    fields: dict[str, Any] = {
        "lease_token": "",
        "lease_expires_at": None,
        "updated_at": now,
        "response": result.body if result.body is not None else None,
    }
    if result.status == results.AWARDED:  # the platform confirmed the points were taken back
        to, fields["completed_at"], fields["status_reason"] = R.REVERSED, now, result.message
        if result.remote_reference:
            fields["remote_reference"] = result.remote_reference[:100]
        if result.points is not None:
            fields["points"] = result.points
    elif result.status == results.RATE_LIMITED and _rate_limited_before(reversal) < int(policy["MAX_RATE_LIMITED"]):
        to = R.QUEUED
        fields["next_attempt_at"] = now + timedelta(seconds=lifecycle.rate_limit_delay(result.retry_after))
    elif result.status in (results.UNAVAILABLE, results.RATE_LIMITED):  # a 429 past its budget uses up attempts
        attempts = reversal.attempts + 1
        fields.update(attempts=attempts, outcome_unknown=reversal.outcome_unknown or result.outcome_unknown)
        if attempts >= int(policy["MAX_ATTEMPTS"]):
            to, fields["completed_at"] = R.FAILED, now
            fields["status_reason"] = f"gave up after {attempts} attempts: {result.message}"
        else:
            to = R.QUEUED
            fields["next_attempt_at"] = now + timedelta(seconds=lifecycle.retry_delay(attempts))
            fields["status_reason"] = f"attempt {attempts} failed ({result.message}); will retry"
    else:  # rejected, duplicate, unauthorized, forbidden: a human decides
        to, fields["completed_at"], fields["status_reason"] = R.REJECTED, now, result.message
        if result.status in (results.UNAUTHORIZED, results.FORBIDDEN):
            lifecycle.pause_account(reversal.record.account, result.message)
    with transaction.atomic():
        if attempt is not None:
            lifecycle.finish_attempt(attempt, result, now)
        if not _move(reversal, R.SENDING, to, claimed_by=reversal.lease_token, **fields):
            return Reversal.objects.get(pk=reversal.pk)
        if to == R.REVERSED:
            lifecycle.apply_reversal(
                reversal.record,
                note=f"refund {reversal.refund_id}: points taken back",
                trigger=trigger,
                fully=True if result.remote_status == results.FULLY_REVERSED else None,  # never less than taken
            )
    return Reversal.objects.select_related("record").get(pk=reversal.pk)


def _rate_limited_before(reversal: Reversal) -> int:
    """How many earlier calls of this refund were answered 429 (its attempt rows say so: the budget of
    RETRY["MAX_RATE_LIMITED"], as for earnings, so that a refund Points keeps rate-limiting ends ``failed``)."""
    return EarningAttempt.objects.filter(reversal=reversal, outcome=results.RATE_LIMITED).count()


def recover_expired_leases() -> int:
    """A reversal left ``sending`` by a killed worker: due again, outcome unknown (looked up before a resend)."""
    return Reversal.objects.filter(status=R.SENDING, lease_expires_at__lt=timezone.now()).update(
        status=R.QUEUED,
        outcome_unknown=True,
        attempts=F("attempts") + 1,
        next_attempt_at=timezone.now(),
        lease_token="",
        lease_expires_at=None,
        status_reason="the worker stopped during the call; checked first",
    )


def requeue(reversal: Reversal, *, actor: str, note: str = "") -> bool:
    if reversal.status not in (R.FAILED, R.REJECTED):
        return False
    return _move(
        reversal,
        reversal.status,
        R.QUEUED,
        attempts=0,
        next_attempt_at=timezone.now(),
        completed_at=None,
        status_reason=note or f"sent again by {actor}",
    )


def record_platform_refund(
    record: EarningRecord, *, key: str, amount: Decimal | None, points: Decimal | None, reason: str, remote_status: str
) -> bool:
    """A refund made on the platform itself (its dashboard) that we did not send: keep it on the record."""
    reversal, created = create(record, refund_id=key, amount=None, reason=reason, source="platform")
    if not created:
        return False
    now = timezone.now()
    Reversal.objects.filter(pk=reversal.pk).update(
        status=R.REVERSED,
        amount=amount,
        points=points,
        completed_at=now,
        next_attempt_at=None,
        status_reason=f"refunded on the platform ({remote_status})",
    )
    lifecycle.apply_reversal(
        record,
        note=f"refunded on the platform ({remote_status})",
        trigger=Trigger.WORKER,
        fully=remote_status in ("fully_refunded", "cancelled"),
    )
    return True


def _move(reversal: Reversal, from_status: str, to: str, *, claimed_by: str | None = None, **fields: Any) -> bool:
    qs = Reversal.objects.filter(pk=reversal.pk, status=from_status)
    if claimed_by is not None:
        qs = qs.filter(lease_token=claimed_by)
    return qs.update(status=to, **fields) == 1


def next_due(account: str) -> int | None:
    return (
        Reversal.objects.filter(record__account=account, status=R.QUEUED, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at", "id")
        .values_list("id", flat=True)
        .first()
    )


def accounts_with_due_work() -> list[str]:
    return list(
        Reversal.objects.filter(Q(status=R.QUEUED, next_attempt_at__lte=timezone.now()))
        .values_list("record__account", flat=True)
        .distinct()
        .order_by()
    )
