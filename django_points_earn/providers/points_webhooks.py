"""Points' webhooks, read: one stored delivery (``{"event": ..., "order": {...}}``) becomes neutral events
(:mod:`.events`). Everything Points-specific about its webhooks is here: the event names, which orders are
earnings, the fields and how their numbers are read, which fields tell two deliveries apart, and which order
states mean that every point is back. The core (``webhooks.py``) stores, dedupes and applies; it knows none of it.

The parser never raises: whatever the body holds (it is only known to be a JSON object with a text ``event``),
it returns events, ``Ignored`` when nothing in it is about an earning.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from .events import (
    EarningCancelled,
    EarningConfirmed,
    Event,
    Ignored,
    MerchantBalance,
    ParsedDelivery,
    PointsTakenBack,
)

APPROVED = "approved"
REFUNDS = ("refunded", "auto_refunded")
CANCELLED = "cancelled"
# Merchant-level events (known from Points' PHP SDK only): ``{event, merchant, data, timestamp}``, no order.
MERCHANT_EVENTS = ("low_balance_warning", "debt_exceeded")
BALANCE_FIELDS = ("current_balance", "order_points", "balance_after_order", "max_debt_allowed")
# Points marks an earning order with type "earning" (or 1); an order without a type is taken for one.
EARNING_TYPES = ("earning", "1")
# An order's state after a refund that took every point back (whatever share was asked).
FULLY_BACK = ("fully_refunded", "cancelled")

# Fields that tell two deliveries about one order apart (not the unsigned body timestamp): a redelivery repeats
# them all, while two partial refunds of one order differ in their amounts.
KEY_FIELDS = ("id", "order_status", "updated_at", "refund_amount", "refund_points", "left_points", "left_amount")

# Points and amounts are kept in DecimalField(max_digits=14, decimal_places=2): anything from 10^12 up cannot be.
MAX_NUMBER = Decimal(10) ** 12


def parse(payload: dict[str, Any]) -> ParsedDelivery:
    """The delivery's order number, platform id and dedupe fields, and what it says (:mod:`.events`)."""
    if str(payload.get("event")) in MERCHANT_EVENTS:
        return _merchant_event(payload)
    order = _order(payload)
    return ParsedDelivery(
        order_number=_text(order.get("order_number")),
        remote_id=_text(order.get("id")),
        key=tuple(str(order.get(k)) for k in KEY_FIELDS),
        events=events(str(payload.get("event")), order),
    )


def events(event: str, order: dict[str, Any]) -> tuple[Event, ...]:
    if event != APPROVED and event not in REFUNDS and event != CANCELLED:
        return (Ignored(f"{event} is not about earning"),)
    if str(order.get("type", "earning")) not in EARNING_TYPES:
        return (Ignored("not an earning order"),)
    number, uuid = _text(order.get("order_number")), _text(order.get("id"))
    # Any of these events names the order's id, which confirms the earning: a refund or a cancellation can only
    # be of an order Points credited (its ``total_points`` are read only from ``approved``).
    confirmed = EarningConfirmed(
        order_number=number,
        remote_id=uuid,
        remote_reference=_text(order.get("reference_number")),
        points=_number(order.get("total_points")) if event == APPROVED else None,
    )
    if event == APPROVED:
        return (confirmed,)
    given = (confirmed,) if uuid else ()
    reason = _text(order.get("reason"))
    if event == CANCELLED:
        return (*given, EarningCancelled(order_number=number, remote_id=uuid, reason=reason))
    status = _text(order.get("order_status"))
    taken = PointsTakenBack(
        order_number=number,
        remote_id=uuid,
        amount=_number(order.get("refund_amount")),
        points=_number(order.get("refund_points")),
        reason=reason,
        remote_status=status,
        fully=status in FULLY_BACK,
    )
    return (*given, taken)


def _merchant_event(payload: dict[str, Any]) -> ParsedDelivery:
    """A balance event: about the merchant, not an order. A redelivery repeats its timestamp and figures; a new
    warning differs in at least one of them."""
    merchant = payload.get("merchant") if isinstance(payload.get("merchant"), dict) else {}
    data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
    stamp = _text(payload.get("timestamp"))[:64]
    event = MerchantBalance(
        kind=str(payload.get("event")),
        **{name: _number(data.get(name)) for name in BALANCE_FIELDS},
        merchant_id=_text(merchant.get("id"))[:64],
        merchant_name=_text(merchant.get("name"))[:255],
        at=stamp,
    )
    key = (_text(merchant.get("id")), stamp, *(str(data.get(name)) for name in BALANCE_FIELDS))
    return ParsedDelivery(key=key, events=(event,))


def _order(payload: dict[str, Any]) -> dict[str, Any]:
    order = payload.get("order")
    return order if isinstance(order, dict) else {}


def _text(value: Any) -> str:
    """A field as text; missing, null, false, 0 and "" are all "" (as Points leaves out what it does not know)."""
    return str(value or "")


def _number(value: Any) -> Decimal | None:
    """A webhook's number, or None when it is missing or no column could keep it (NaN, infinite, too large)."""
    try:
        number = None if value is None or isinstance(value, bool) else Decimal(str(value))
    except InvalidOperation:
        return None
    if number is None or not number.is_finite() or abs(number) >= MAX_NUMBER:
        return None
    return number
