"""The platform's word on an earning after (or instead of) our call's answer: its id (the approved webhook) settles
it as awarded, points taken back make it (partially) reversed, and a full refund before it was ever sent cancels it.
Every move goes through the earnings' outbox machine (:data:`~django_points_earn.earning_states.EARNINGS`)."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from .earning_states import EARNINGS, announce, run_settled_hooks, settled_by_platform_id
from .models import EarningRecord, Reversal, ReversalStatus, Status, Trigger, WebhookDelivery
from .outbox import Audit

log = logging.getLogger("django_points_earn")


def cancel_unsent(record: EarningRecord, *, note: str, trigger: str = Trigger.CHECKOUT, actor: str = "") -> bool:
    """A full refund before the earning was ever awarded: it will never be sent."""
    now = timezone.now()
    with transaction.atomic():
        current = EarningRecord.objects.filter(pk=record.pk).values_list("status", flat=True).first()
        if current not in (Status.HELD, Status.QUEUED, Status.REJECTED, Status.FAILED, Status.BLOCKED):
            return False
        if not EARNINGS.move(
            record,
            current,
            Status.CANCELLED,
            {"completed_at": now, "next_attempt_at": None, "updated_at": now, "status_reason": note},
            audit=Audit(trigger, actor, note),
        ):
            return False
    record.status = Status.CANCELLED
    return True


def apply_reversal(
    record: EarningRecord, *, note: str, trigger: str = Trigger.WORKER, actor: str = "", fully: bool | None = None
) -> str:
    """Points were taken back: the earning becomes partially or fully reversed, from the reversals' sum."""
    now = timezone.now()
    done = Reversal.objects.filter(record_id=record.pk, status=ReversalStatus.REVERSED)
    if fully is None:
        total = record.total or Decimal("0")
        amounts = list(done.values_list("amount", flat=True))
        fully = any(a is None for a in amounts) or sum((a for a in amounts if a is not None), Decimal("0")) >= total
    to = Status.REVERSED if fully else Status.PARTIALLY_REVERSED
    with transaction.atomic():
        current = EarningRecord.objects.filter(pk=record.pk).values_list("status", flat=True).first()
        if current == to == Status.REVERSED or current not in (Status.AWARDED, Status.PARTIALLY_REVERSED):
            return current or ""
        EARNINGS.move(
            record,
            current,
            to,
            {"updated_at": now, "status_reason": note, **({"completed_at": now} if fully else {})},
            audit=Audit(trigger, actor, note),
        )
    return to


def confirm_award(
    record: EarningRecord,
    *,
    remote_id: str,
    remote_reference: str = "",
    points: Any = None,
    note: str,
    trigger: str = Trigger.WORKER,
) -> bool:
    """The platform gave the id of this order (its webhook): it holds the order as credited.

    Whatever the record's state, the id is kept if the record has none (a record being sent right now gets it for
    its answer to find). A record the platform's word settles (:data:`SETTLED_BY_PLATFORM_ID`, or awarded without
    an id) becomes ``awarded`` with it. Returns whether the record became awarded.
    """
    now = timezone.now()
    ids = {"remote_id": remote_id[:64]}
    if remote_reference:
        ids["remote_reference"] = remote_reference[:64]
    fields = {
        **ids,
        "remote_status": "approved",
        "updated_at": now,
        "completed_at": now,
        "next_attempt_at": None,
        "lease_token": "",
        "lease_expires_at": None,
        "status_reason": note,
    }
    if points is not None:
        fields["points"] = points
    with transaction.atomic():
        current = (
            EarningRecord.objects.select_for_update()
            .filter(pk=record.pk)
            .values_list("status", "remote_id", "outcome_unknown")
            .first()
        )
        if current is None:
            return False
        status, known, unknown = current
        if known and known != remote_id[:64]:
            log.warning(
                "earning %s/%s: the platform's webhook names id %s, the record has %s; kept the record's",
                record.account,
                record.order_number,
                remote_id,
                known,
            )
            return False
        if settled_by_platform_id(status, unknown):
            EARNINGS.move(record, status, Status.AWARDED, fields, audit=Audit(trigger, "", note))
        elif status == Status.AWARDED and not known:  # awarded before this state existed, without an id
            if EarningRecord.objects.filter(pk=record.pk, status=status, remote_id="").update(**fields):
                EARNINGS.record_event(record, status, Status.AWARDED, Audit(trigger, "", note))
        else:
            if not known:
                EarningRecord.objects.filter(pk=record.pk, remote_id="").update(**ids, updated_at=now)
                EARNINGS.record_event(
                    record, status, status, Audit(trigger, "", f"{note} (kept; the earning stays {status})")
                )
            return False
        saved = EarningRecord.objects.get(pk=record.pk)
        announce(saved)
        run_settled_hooks(saved)
    return True


def settle_from_known_id(record: EarningRecord, *, deliveries: bool = False) -> bool:
    """A record the platform's word settles (:data:`SETTLED_BY_PLATFORM_ID`: accepted, pending, queued again,
    failed, blocked) whose platform id already came: from a webhook applied while it was being sent (kept on the
    record, the webhook used up), or (``deliveries``, for an ``accepted`` record) stored in an approved delivery of
    its order number. Settles it as awarded; otherwise it would wait for a webhook that has already come."""
    remote_id = EarningRecord.objects.filter(pk=record.pk).values_list("remote_id", flat=True).first() or ""
    source = "the platform's webhook, applied while this earning was being sent"
    if not remote_id and not deliveries:
        return False
    if not remote_id:
        if (
            EarningRecord.objects.filter(account=record.account, order_number=record.order_number)
            .exclude(pk=record.pk)
            .exists()
        ):
            # Another kind's earning (a review whose reference is this number) shares it: the platform keeps one
            # order per number, so an approved delivery of that number may be the other's. Left as it is (reconcile
            # lists an old accepted earning for a human) rather than given the other's id.
            return False
        delivery = (
            WebhookDelivery.objects.filter(account=record.account, order_number=record.order_number, event="approved")
            .exclude(order_uuid="")
            .order_by("id")
            .first()
        )
        if delivery is None:
            return False
        remote_id, source = delivery.order_uuid, f"the platform's approved webhook (delivery {delivery.pk})"
    return confirm_award(record, remote_id=remote_id, note=f"{source} gave the id of this order: awarded")
