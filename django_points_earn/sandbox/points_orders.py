"""The Points sandbox's orders: ``POST /orders/earning`` (validation, the per-merchant lock, faults, duplicates,
pending customers), the award that credits points, and ``GET /orders/{uuid}``."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .accounting import counted_call
from .points_resources import order_resource, pending_resource
from .points_rules import validate_earning
from .points_state import Order, Pending, PointsMerchant
from .points_wire import (
    DUPLICATE,
    LOCK_BUSY,
    ORDER_NOT_FOUND,
    TAKEN,
    error,
    fault_answer,
    ok,
    parse_body,
    server_error,
    validation_error,
)
from .response import SandboxResponse


class PointsOrders:
    """Mixed into :class:`~django_points_earn.sandbox.points.PointsSandbox`, which holds the state named below
    and provides ``_clock()``, ``_play()`` (fault injection) and ``_emit()`` (webhook events)."""

    _state: threading.RLock
    _by_uuid: dict[str, Order]
    _next_order_id: int
    _next_pending_id: int
    _duplicate_mode: str
    _uuid_rng: random.Random | None
    pending_phones: set[str]
    points_per_sar: Decimal

    _clock: Callable[[], datetime]
    _play: Callable[..., SandboxResponse]
    _emit: Callable[..., None]

    # -- POST /orders/earning -----------------------------------------------------------------------------

    def _earning(self, m: PointsMerchant, params: dict[str, str], body: bytes, simulate_slow: bool) -> SandboxResponse:
        return counted_call(
            self._state, m, lambda: self._earning_call(m, body, simulate_slow), concurrent_is_overlap=False
        )

    def _earning_call(self, m: PointsMerchant, body: bytes, simulate_slow: bool) -> SandboxResponse:
        if m.forbidden is not None:
            return error(403, m.forbidden)
        data, bad = parse_body(body)
        if bad is not None:
            return bad
        errors, clean = validate_earning(data)
        if errors:
            return validation_error(errors)

        # Points' lock is taken after validation (a FormRequest runs first) and is never waited for.
        if not m.lock.acquire(blocking=False):
            with self._state:
                m.overlaps += 1
            return error(429, LOCK_BUSY)
        try:  # the work is done within the round trip, holding the lock throughout
            return self._play(m, lambda: self._create(m, clean), simulate_slow)
        finally:
            m.lock.release()

    def _fault_answer(self, kind: str) -> SandboxResponse:
        return fault_answer(kind)

    def _server_error(self) -> SandboxResponse:
        return server_error()

    def _credit_or_hold(
        self, m: PointsMerchant, number: str, data: dict[str, Any], total: Decimal, points: int, now: Any
    ) -> SandboxResponse:
        """Credit the order now, or keep it pending while its customer has not activated their account (called
        under the state lock; purchases and ratings alike)."""
        if data["phone_number"] in self.pending_phones:
            p = Pending(
                id=self._next_pending_id,
                merchant=m.name,
                order_number=number,
                phone_number=data["phone_number"],
                total_price=total,
                total_points=points,
                data=data,
                created_at=now,
            )
            self._next_pending_id += 1
            m.pending.append(p)
            return ok(pending_resource(p))
        return ok(order_resource(self._award(m, data, points, now), now))

    def _create(self, m: PointsMerchant, clean: dict[str, Any]) -> SandboxResponse:
        number = clean["order_number"]
        with self._state:
            existing = m.orders.get(number)
            pending = [p for p in m.pending if p.order_number == number]
            if (existing or pending) and self._duplicate_mode != "accept":
                return self._duplicate(existing[-1] if existing else None, pending[-1] if pending else None)
            now = self._clock()
            points = self._points(clean["total_price"])
            return self._credit_or_hold(m, number, clean, clean["total_price"], points, now)

    def _award(self, m: PointsMerchant, clean: dict[str, Any], points: int, now: datetime) -> Order:
        """Create an approved order: the moment points are credited (an "award" in the ledger)."""
        order_id = self._next_order_id
        self._next_order_id += 1
        order = Order(
            id=order_id,
            uuid=self._new_uuid(),
            reference_number=f"REF-{now.year}-{order_id:06d}",
            merchant=m.name,
            order_number=clean["order_number"],
            phone_number=clean["phone_number"],
            total_price=clean["total_price"],
            total_points=points,
            data=clean,
            created_at=now,
            updated_at=now,
        )
        m.orders.setdefault(order.order_number, []).append(order)
        self._by_uuid[order.uuid] = order
        self._emit(m, "approved", order)
        return order

    def _duplicate(self, order: Order | None, pending: Pending | None) -> SandboxResponse:
        mode = self._duplicate_mode
        if mode == "replay":
            return ok(order_resource(order, self._clock()) if order is not None else pending_resource(pending))
        if mode == "422":
            return validation_error({"order_number": [TAKEN]})
        return error(int(mode), DUPLICATE)

    # -- GET /orders/{uuid} -------------------------------------------------------------------------------

    def _get_order(
        self, m: PointsMerchant, params: dict[str, str], body: bytes, simulate_slow: bool
    ) -> SandboxResponse:
        with self._state:
            order = self._find(m, params["uuid"])
            if order is None:
                return error(404, ORDER_NOT_FOUND)
            return ok(order_resource(order, self._clock()))

    # -- helpers ------------------------------------------------------------------------------------------

    def _find(self, m: PointsMerchant, order_uuid: str) -> Order | None:
        order = self._by_uuid.get(order_uuid)
        return order if order is not None and order.merchant == m.name else None  # another merchant's: 404

    def _points(self, total_price: Decimal) -> int:
        return int((total_price * self.points_per_sar).quantize(Decimal(1), ROUND_HALF_UP))

    def _new_uuid(self) -> str:
        if self._uuid_rng is None:
            return str(uuid.uuid4())
        return str(uuid.UUID(int=self._uuid_rng.getrandbits(128), version=4))
