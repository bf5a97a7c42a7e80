"""What an order earns on, independent of the platform: :class:`EarningRequest`, its :class:`Line` and
:class:`Address`, and why an order cannot become one (:class:`InvalidEarningRequest`).

An :class:`~django_points_earn.adapters.OrderAdapter` builds it from the shop's order; it is validated, frozen as
JSON on the :class:`~django_points_earn.models.EarningRecord` and turned into a platform's body by its backend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from .conf import get_settings, setting_path

CENTS = Decimal("0.01")
# Key of the metadata stored in place of metadata refused for its size (receivers.record_paid_order).
DROPPED = "_points_earn_dropped"


class InvalidEarningRequest(ValueError):
    """The order cannot become a valid earning request. ``str()`` is the precise reason shown to a merchant."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class NothingToEarn(InvalidEarningRequest):
    """A valid order that earns nothing (its total, or the amount the platform earns on, is 0): recorded as
    ``skipped`` with the reason, and sent to no platform."""


def to_money(value: Any, what: str) -> Decimal:
    """A finite Decimal with two places, or :class:`InvalidEarningRequest` naming ``what``."""
    if isinstance(value, float):
        value = repr(value)  # 0.1 -> "0.1", not the binary artefact 0.1000000000000000055…
    try:
        amount = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidEarningRequest(f"{what} is not a number: {value!r}", field=what) from None
    if not amount.is_finite():
        raise InvalidEarningRequest(f"{what} is not a finite number: {value!r}", field=what)
    if amount.copy_abs() >= Decimal("1e12"):
        raise InvalidEarningRequest(f"{what} is implausibly large: {value}", field=what)
    return amount.quantize(CENTS)


@dataclass
class Line:
    """One order line. ``unit_price`` is one unit before discounts and without tax (as the order's ``tax_amount``
    is added on top). ``tax`` and ``discount`` are optional amounts for the whole line; when they are given they
    are part of the order's ``tax_amount`` and ``discount_amount``, not on top of them (fabric sends them per item).
    """

    name: str
    unit_price: Decimal
    quantity: int
    sku: str | None = None
    category: str | None = None
    tax: Decimal | None = None
    discount: Decimal | None = None


@dataclass
class Address:
    city: str | None = None
    line1: str | None = None


@dataclass
class EarningRequest:
    """What an order earns on, independent of the platform."""

    account: str
    order_number: str
    phone: str | None
    total: Decimal
    lines: list[Line]
    customer_name: str | None = None
    shipping_amount: Decimal | None = None
    tax_amount: Decimal | None = None
    discount_amount: Decimal | None = None
    shipping_address: Address | None = None
    metadata: dict[str, Any] | None = None
    profile_id: str | None = None  # fabric member id, when the shop knows it
    paid_at: datetime | None = None
    order_id: str = ""  # the shop's primary key, for links from the admin

    def validate(self) -> None:
        """Checks every platform needs; raises :class:`InvalidEarningRequest` with the first problem found."""
        if not self.order_number or not str(self.order_number).strip():
            raise InvalidEarningRequest("order has no order number", field="order_number")
        if len(self.order_number) > 100:
            raise InvalidEarningRequest("order number is longer than 100 characters", field="order_number")
        self.total = to_money(self.total, "total")
        if self.total < 0:
            raise InvalidEarningRequest(f"total is negative ({self.total})", field="total")
        if not self.lines:
            raise InvalidEarningRequest("order has no lines", field="lines")
        limits = get_settings().limits
        if len(self.lines) > int(limits["MAX_LINES"]):
            raise InvalidEarningRequest(
                f"order has more than {limits['MAX_LINES']} lines, the limit set by "
                f"{setting_path('LIMITS', 'MAX_LINES')}",
                field="lines",
            )
        for i, line in enumerate(self.lines):
            if not line.name or not str(line.name).strip():
                raise InvalidEarningRequest(f"line {i + 1} has no product name", field=f"lines.{i}.name")
            line.unit_price = to_money(line.unit_price, f"line {i + 1} price")
            if line.unit_price < 0:
                raise InvalidEarningRequest(f"line {i + 1} price is negative ({line.unit_price})", field=f"lines.{i}")
            if isinstance(line.quantity, bool) or not isinstance(line.quantity, int):
                try:
                    qty = Decimal(str(line.quantity))
                except InvalidOperation:
                    raise InvalidEarningRequest(f"line {i + 1} quantity is not a number", field=f"lines.{i}") from None
                if qty != qty.to_integral_value():
                    raise InvalidEarningRequest(f"line {i + 1} quantity is not a whole number", field=f"lines.{i}")
                line.quantity = int(qty)
            if line.quantity < 1:
                raise InvalidEarningRequest(f"line {i + 1} quantity is {line.quantity}; at least 1", field=f"lines.{i}")
            for name in ("tax", "discount"):
                value = getattr(line, name)
                if value is not None:
                    value = to_money(value, f"line {i + 1} {name}")
                    if value < 0:
                        raise InvalidEarningRequest(f"line {i + 1} {name} is negative ({value})", field=f"lines.{i}")
                    setattr(line, name, value)
        for name in ("shipping_amount", "tax_amount", "discount_amount"):
            value = getattr(self, name)
            if value is not None:
                value = to_money(value, name.replace("_", " "))
                if value < 0:
                    raise InvalidEarningRequest(f"{name.replace('_', ' ')} is negative ({value})", field=name)
                setattr(self, name, value)
        if self.metadata is not None:
            if not isinstance(self.metadata, dict):
                raise InvalidEarningRequest("metadata must be a dict", field="metadata")
            if DROPPED in self.metadata:  # refused at checkout for its size, and not stored: nothing to send
                raise InvalidEarningRequest(str(self.metadata[DROPPED]), field="metadata")
            try:
                text = json.dumps(self.metadata, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
            except (TypeError, ValueError) as exc:
                raise InvalidEarningRequest(f"metadata is not JSON-serialisable: {exc}", field="metadata") from None
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > int(limits["MAX_METADATA_BYTES"]):
                raise InvalidEarningRequest(
                    f"metadata is {size} bytes as JSON, more than the {limits['MAX_METADATA_BYTES']} allowed by "
                    f"{setting_path('LIMITS', 'MAX_METADATA_BYTES')}",
                    field="metadata",
                )
        if self.total == 0:
            raise NothingToEarn("the order's total is 0: nothing to earn, nothing sent", field="total")

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe copy (amounts as exact strings) for the record. Built directly rather than through
        ``dataclasses.asdict``, whose deep copy was most of the Python time a checkout spent on it."""
        return _json_safe(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EarningRequest:
        data = dict(data)
        data["lines"] = [Line(**line) for line in data.get("lines") or []]
        if data.get("shipping_address"):
            data["shipping_address"] = Address(**data["shipping_address"])
        if data.get("paid_at"):
            data["paid_at"] = datetime.fromisoformat(data["paid_at"])
        return cls(**data)


def _json_safe(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _json_safe(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value  # not JSON: the receiver stores its repr
