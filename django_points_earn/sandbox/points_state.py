"""What the Points sandbox stores: orders, pending earnings, merchants and their API keys, and its clock."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from .accounting import MerchantCounters


@dataclass
class Order:
    id: int
    uuid: str
    reference_number: str
    merchant: str
    order_number: str
    phone_number: str
    total_price: Decimal
    total_points: int
    data: dict[str, Any]  # the validated request, echoed back (items, metadata)
    created_at: datetime
    updated_at: datetime
    status: str = "approved"
    refunded_amount: Decimal = Decimal(0)
    refunded_points: int = 0


@dataclass
class Pending:
    id: int
    merchant: str
    order_number: str
    phone_number: str
    total_price: Decimal
    total_points: int
    data: dict[str, Any]
    created_at: datetime


class PointsMerchant(MerchantCounters):
    def __init__(self, name: str) -> None:
        self.forbidden: str | None = None  # the 403 message while the earning channel is off
        # The merchant's flat amounts for an approved review (set in its dashboard), and the rating channels it
        # turned off (they answer 403).
        self.rating_points: dict[str, int] = {"store": 50, "product": 20}
        self.rating_channels_off: set[str] = set()
        # Points' per-merchant distributed lock: only ever tried, never waited on.
        self.lock = threading.Lock()
        super().__init__(name)

    def clear(self) -> None:
        super().clear()
        self.orders: dict[str, list[Order]] = {}  # order_number -> every order created for it, oldest first
        self.pending: list[Pending] = []
        # Registered webhook endpoints (POST /v1/webhooks): each receives every event of the merchant.
        self.webhooks: list[dict[str, Any]] = getattr(self, "webhooks", [])


@dataclass
class ApiKey:
    merchant: str
    active: bool = True


def utc_now() -> datetime:
    """The sandbox's clock: now, to the second (Points' timestamps have no fraction)."""
    return datetime.now(UTC).replace(microsecond=0)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def since(moment: datetime, now: datetime) -> str:
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size or unit == "second":
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return ""  # pragma: no cover
