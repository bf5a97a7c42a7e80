"""Held earnings: points kept back until the order's return window has closed.

A held earning is recorded at payment like any other (same outbox row, same transaction), in the ``held`` state
with ``send_after``. Nothing is sent while it is held: a full refund cancels it, a partial one lowers what will be
sent (the total and every line, pro rata). The sweep moves the held earnings whose time has come to the queue, in
batches, by the database's clock (workers whose clocks differ agree on it); no job and no RQ scheduler per record.

How long: ``POINTS_EARN["HOLD"]`` or an account's ``"HOLD"`` (e.g. ``{"DAYS": 14}``; ``"AFTER": "delivery"`` starts
the clock when the shop sends ``order_delivered``), or per order the adapter's ``get_send_after(order)``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import transaction
from django.db.models import Min, Q
from django.db.models.functions import Now
from django.utils import timezone

from .conf import account_hold, get_settings
from .earning_request import EarningRequest
from .earning_states import EARNINGS
from .models import EarningRecord, Status, Trigger
from .outbox import Audit
from .providers import get_backend

log = logging.getLogger("django_points_earn")

CENT = Decimal("0.01")


def initial_hold(account: str, chosen: datetime | None, *, adapter_decides: bool) -> tuple[bool, datetime | None]:
    """Whether a new earning is held, and until when (``None`` while it waits for its delivery).

    ``adapter_decides``: the adapter's ``get_send_after(order)`` answered (``chosen``; ``None`` = send now), which
    wins over the account's hold."""
    now = timezone.now()
    if adapter_decides:
        return (chosen is not None and chosen > now), chosen
    hold = account_hold(account)
    if hold is None:
        return False, None
    if hold.after_delivery:
        return True, None
    return True, now + hold.length


# -- the sweep ---------------------------------------------------------------------------------------------------
RELEASED = "its hold ended: queued to be sent"


def release_due(*, batch: int = 500, trigger: str = Trigger.RECONCILE) -> int:
    """Queue every held earning whose ``send_after`` has passed (by the database's clock), a batch at a time.
    Returns how many were released."""
    total = 0
    while True:
        moved = EARNINGS.move_batch(
            Q(send_after__lte=Now()),
            Status.HELD,
            Status.QUEUED,
            {"next_attempt_at": Now(), "status_reason": RELEASED},
            Audit(trigger, "", RELEASED),
            batch=batch,
        )
        total += len(moved)
        if len(moved) < batch:
            break
    if total:
        log.info("released %d held earnings whose hold ended", total)
    return total


def summary() -> dict[str, Any]:
    """How many earnings are held, and when the next one is released (for reconcile and the dashboard)."""
    held = EarningRecord.objects.filter(status=Status.HELD)
    found = held.aggregate(next=Min("send_after"))
    count = held.count()
    return {
        "held": count,
        "next_release": found["next"].isoformat() if found["next"] else None,
        "waiting_for_delivery": held.filter(send_after__isnull=True).count() if count else 0,
    }


# -- people and the shop -----------------------------------------------------------------------------------------
def send_now(record: EarningRecord, *, actor: str, trigger: str = Trigger.ADMIN) -> bool:
    """Release one held earning before its time (a person decided so)."""
    note = f"sent before its hold ended, by {actor}" if actor else "sent before its hold ended"
    fields = {"next_attempt_at": timezone.now(), "status_reason": note}
    return EARNINGS.move(record, Status.HELD, Status.QUEUED, fields, audit=Audit(trigger, actor, note))


def extend(record: EarningRecord, until: datetime, *, actor: str, trigger: str = Trigger.ADMIN) -> bool:
    """Hold a held earning until ``until`` (later than now). Audited on the earning."""
    if until <= timezone.now():
        raise ValueError("a hold can only be extended to a moment in the future")
    note = f"held until {timezone.localtime(until):%Y-%m-%d %H:%M %Z}" + (f" by {actor}" if actor else "")
    with transaction.atomic():
        held = EarningRecord.objects.filter(pk=record.pk, status=Status.HELD)
        if not held.update(send_after=until, status_reason=note, updated_at=timezone.now()):
            return False
        EARNINGS.record_event(record, Status.HELD, Status.HELD, Audit(trigger, actor, note))
    return True


def start_clock(account: str, order_number: str, delivered_at: datetime | None = None) -> bool:
    """The order was delivered: its earning, held until delivery, is now held for the account's hold from then."""
    hold = account_hold(account)
    record = EarningRecord.objects.filter(account=account, order_number=order_number, status=Status.HELD).first()
    if record is None or hold is None or record.send_after is not None:
        return False
    until = (delivered_at or timezone.now()) + hold.length
    note = f"delivered: held until {timezone.localtime(until):%Y-%m-%d %H:%M %Z}"
    with transaction.atomic():
        held = EarningRecord.objects.filter(pk=record.pk, status=Status.HELD, send_after__isnull=True)
        if not held.update(send_after=until, status_reason=note, updated_at=timezone.now()):
            return False
        EARNINGS.record_event(record, Status.HELD, Status.HELD, Audit(Trigger.CHECKOUT, "", note))
    return True


def take_off(record: EarningRecord, amount: Decimal, *, refund_id: str, trigger: str = Trigger.CHECKOUT) -> str | None:
    """A partial refund of a held earning: what will be sent is lowered by ``amount`` (the total, each line and
    the order's amounts pro rata), the request body rebuilt. Returns what happened, or ``None`` if the earning is
    no longer held (released meanwhile: the refund then takes its ordinary path)."""
    with transaction.atomic():
        current = EarningRecord.objects.select_for_update().filter(pk=record.pk, status=Status.HELD).first()
        if current is None or current.total is None or amount >= current.total:
            return None  # released meanwhile, or another refund lowered it first: the ordinary path decides
        before = current.total
        left = max(Decimal("0"), before - amount)
        request = _scaled(EarningRequest.from_json(current.request), left / before if before else Decimal("0"), left)
        payload = get_backend(get_settings().account(current.account)).build_payload(request)
        note = (
            f"refund {refund_id}: {amount} taken off before sending; it will send {left} of {before} (lines pro rata)"
        )
        EarningRecord.objects.filter(pk=current.pk).update(
            request=request.to_json(), payload=payload, total=left, status_reason=note, updated_at=timezone.now()
        )
        EARNINGS.record_event(current, Status.HELD, Status.HELD, Audit(trigger, "", note))
    return note


def _scaled(request: EarningRequest, factor: Decimal, total: Decimal) -> EarningRequest:
    """The request with every amount scaled by ``factor`` and the total set to ``total``."""

    def scale(value: Decimal | None) -> Decimal | None:
        return None if value is None else (Decimal(str(value)) * factor).quantize(CENT, rounding=ROUND_HALF_UP)

    for line in request.lines:
        line.unit_price = scale(line.unit_price)
        line.tax, line.discount = scale(line.tax), scale(line.discount)
    request.shipping_amount = scale(request.shipping_amount)
    request.tax_amount = scale(request.tax_amount)
    request.discount_amount = scale(request.discount_amount)
    request.total = total
    request.validate()
    return request
