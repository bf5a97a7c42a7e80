"""What a shop shows its customer about an order's loyalty points: :func:`earning_for` (one order, one query) and
:func:`earnings_for` (a page of orders, one query).

The order is found the way the earning was recorded: through the shop's adapter (``get_account`` and
``get_order_number``). The summary is a dict of JSON types only (see docs/customer.md):

``state``
    for the customer, one of :data:`CUSTOMER_STATES`: ``on_the_way`` (recorded, not confirmed yet, including an
    earning a person at the shop must look at), ``held_until`` (held until the return window closes),
    ``pending_activation`` (the customer must activate their account on the platform to receive them),
    ``earned``, ``partly_taken_back``, ``taken_back`` (after refunds) or ``none`` (no earning, not eligible, or
    cancelled before it was sent).
``points``
    a number (an int when whole), or ``None``. The platform's own figure once it answered; before that an
    estimate only if the account sets ``EARNING_RATE`` (then ``points_estimated`` is true); otherwise ``None``.
``points_estimated``, ``points_taken_back``
    whether ``points`` is our estimate; the points refunds took back (``None`` when none or unknown).
``platform``, ``platform_label``
    the platform's name in settings (``"points"``, ``"fabric"``) and its product name (``"Points"``).
``order_number``, ``held_until``, ``delayed``, ``updated_at``
    the order number the platform sees; when a held earning is sent (ISO 8601; ``None`` when it is not held, or
    held until the order's delivery starts the return window); whether a
    person at the shop must act before the points can come (rejected, blocked, failed); when the earning last
    changed (ISO 8601, or ``None`` without one).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import ROUND_DOWN, Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.models import OuterRef, Subquery, Sum

from .adapters import OrderAdapter, get_adapter
from .conf import get_settings, setting_path
from .models import NEEDS_ATTENTION, EarningRecord, Kind, Reversal, ReversalStatus, Status
from .platforms import label

log = logging.getLogger("django_points_earn")

ON_THE_WAY = "on_the_way"
HELD_UNTIL = "held_until"
PENDING_ACTIVATION = "pending_activation"
EARNED = "earned"
PARTLY_TAKEN_BACK = "partly_taken_back"
TAKEN_BACK = "taken_back"
NONE = "none"
CUSTOMER_STATES = (ON_THE_WAY, HELD_UNTIL, PENDING_ACTIVATION, EARNED, PARTLY_TAKEN_BACK, TAKEN_BACK, NONE)

# A held earning (recorded at payment, sent once the return window closes) and the column that says when; None
# while it waits for the order's delivery to start its clock.
HELD = Status.HELD
SEND_AFTER = "send_after"

# An earning's state -> the customer's. A state missing here (one added later) shows as ``none``: never promise
# points the mapping has not been taught about.
CUSTOMER_STATE: dict[str, str] = {
    Status.QUEUED: ON_THE_WAY,
    Status.SENDING: ON_THE_WAY,
    Status.ACCEPTED: ON_THE_WAY,  # the platform holds the order; its confirmation is awaited
    Status.REJECTED: ON_THE_WAY,  # a person at the shop fixes it and sends it again ("delayed")
    Status.BLOCKED: ON_THE_WAY,
    Status.FAILED: ON_THE_WAY,
    HELD: HELD_UNTIL,
    Status.PENDING_ACTIVATION: PENDING_ACTIVATION,
    Status.AWARDED: EARNED,
    Status.PARTIALLY_REVERSED: PARTLY_TAKEN_BACK,
    Status.REVERSED: TAKEN_BACK,
    Status.SKIPPED: NONE,
    Status.CANCELLED: NONE,
    Status.RESOLVED: NONE,  # settled by hand outside the app: the app cannot say what the customer got
}

# What a summary is built from: one row per earning, with what refunds took back.
ROW_FIELDS = (
    "id",
    "account",
    "order_number",
    "provider",
    "status",
    "points",
    "total",
    "attempts",
    "updated_at",
    SEND_AFTER,
)


def earning_for(order: Any) -> dict[str, Any]:
    """The customer's view of ``order``'s points, in one query (see the module's docstring for the keys)."""
    return earnings_for([order])[0]


def earnings_for(orders: Iterable[Any]) -> list[dict[str, Any]]:
    """:func:`earning_for` of each order, in the same order, in one query for all of them (a "my orders" page)."""
    orders = list(orders)
    adapter = get_adapter()
    keys = [order_key(order, adapter) for order in orders]
    rows = earning_rows(keys)
    return [summary(rows.get(key) if key else None, key) for key in keys]


def order_key(order: Any, adapter: OrderAdapter | None = None) -> tuple[str, str] | None:
    """(account, order number) of ``order`` as its earning was recorded, or ``None`` if the adapter cannot say
    (logged: a shop's page must render even when its adapter fails on one order)."""
    adapter = adapter or get_adapter()
    try:
        account = str(adapter.get_account(order))[:64]
        number = str(adapter.get_order_number(order) or "").strip()[:100]
    except Exception:
        log.warning("the order adapter could not name order %r's account and number", getattr(order, "pk", order))
        return None
    return (account, number) if number else None


def earning_rows(keys: Sequence[tuple[str, str] | None]) -> dict[tuple[str, str], dict[str, Any]]:
    """(account, order number) -> the earning's row (:data:`ROW_FIELDS` and ``taken_back``), in one query; orders
    without an earning are absent."""
    wanted = {key for key in keys if key}
    if not wanted:
        return {}
    taken_back = (
        Reversal.objects.filter(record=OuterRef("pk"), status=ReversalStatus.REVERSED)
        .values("record")
        .annotate(total=Sum("points"))
        .values("total")
    )
    rows = EarningRecord.objects.filter(
        kind=Kind.PURCHASE,  # a review's earning may carry the same number: it is not the order's
        account__in={account for account, _ in wanted},
        order_number__in={number for _, number in wanted},
    ).values(*ROW_FIELDS, taken_back=Subquery(taken_back))
    found = {(row["account"], row["order_number"]): row for row in rows}
    return {key: row for key, row in found.items() if key in wanted}


def summary(row: dict[str, Any] | None, key: tuple[str, str] | None) -> dict[str, Any]:
    """The customer's summary of one earning's row (:func:`earning_rows`); ``row`` None: an order without one."""
    account, number = key or ("", "")
    if row is None:
        provider = _provider(account)
        return {
            "state": NONE,
            "points": None,
            "points_estimated": False,
            "points_taken_back": None,
            "platform": provider,
            "platform_label": label(provider) if provider else None,
            "order_number": number or None,
            "held_until": None,
            "delayed": False,
            "updated_at": None,
        }
    state = CUSTOMER_STATE.get(row["status"], NONE)
    points, estimated = (row["points"] if state != NONE else None), False
    if points is None and state != NONE:
        points = estimate(row["account"], row["total"])
        estimated = points is not None
    send_after = row[SEND_AFTER] if state == HELD_UNTIL else None
    return {
        "state": state,
        "points": _number(points),
        "points_estimated": estimated,
        "points_taken_back": _number(row["taken_back"]) if state in (PARTLY_TAKEN_BACK, TAKEN_BACK) else None,
        "platform": row["provider"] or None,
        "platform_label": label(row["provider"]) if row["provider"] else None,
        "order_number": row["order_number"],
        "held_until": send_after.isoformat() if isinstance(send_after, datetime) else None,
        "delayed": row["status"] in NEEDS_ATTENTION,
        "updated_at": row["updated_at"].isoformat() if row["updated_at"] else None,
    }


def estimate(account: str, total: Decimal | None) -> Decimal | None:
    """Points the order should earn by the account's ``EARNING_RATE`` (whole points, rounded down), or ``None``
    without a rate or a total: the customer is then told "on the way" without a number."""
    try:
        rate = parse_earning_rate(get_settings().account(account).option("EARNING_RATE"))
    except (ImproperlyConfigured, ValueError):
        return None  # an unknown account or a bad rate (manage.py check names it): no number rather than a wrong one
    if rate is None or total is None:
        return None
    return (Decimal(total) * rate).to_integral_value(rounding=ROUND_DOWN)


def parse_earning_rate(value: Any, account: str = "") -> Decimal | None:
    """``EARNING_RATE``: points per unit of the order's currency, a positive number (``None``: not set).

    Raises ValueError naming the key for anything else (checked by ``manage.py check``, points_earn.E014)."""
    if value is None or value == "":
        return None
    where = setting_path("ACCOUNTS", account, "EARNING_RATE") if account else "EARNING_RATE"
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"{where} must be a number of points per currency unit, not {type(value).__name__}")
    try:
        rate = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        raise ValueError(f"{where} is not a number: {value!r}") from None
    if not rate.is_finite() or rate <= 0:
        raise ValueError(f"{where} must be a positive number of points per currency unit, not {value!r}")
    return rate


def _provider(account: str) -> str | None:
    try:
        return get_settings().account(account).provider if account else None
    except ImproperlyConfigured:
        return None


def _number(value: Decimal | None) -> int | float | None:
    if value is None:
        return None
    value = Decimal(value)
    return int(value) if value == value.to_integral_value() else float(value)
