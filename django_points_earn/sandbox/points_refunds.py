"""The Points sandbox's refunds and cancellations: ``POST /orders/{uuid}/refund`` and ``/cancel`` (the refund
window, partial refunds pro rata, the cancel rules), and the merchant dashboard that does either."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .points_resources import order_resource
from .points_rules import optional_number, optional_string
from .points_state import Order, PointsMerchant
from .points_wire import ORDER_NOT_FOUND, error, ok, parse_body, validation_error
from .response import SandboxResponse


class PointsRefunds:
    """Mixed into :class:`~django_points_earn.sandbox.points.PointsSandbox`, which holds the state named below
    and provides ``_clock()``, ``_find()`` (an order of this merchant) and ``_emit()`` (webhook events)."""

    _state: threading.RLock
    _merchants: dict[str, PointsMerchant]
    cancel_approved: bool
    refund_window_days: float | None
    refund_without_amount: str

    _clock: Callable[[], datetime]
    _find: Callable[[PointsMerchant, str], Order | None]
    _emit: Callable[..., None]

    # -- POST /orders/{uuid}/refund and /cancel -----------------------------------------------------------

    def _refund(self, m: PointsMerchant, params: dict[str, str], body: bytes, simulate_slow: bool) -> SandboxResponse:
        data, bad = parse_body(body)
        if bad is not None:
            return bad
        errors: dict[str, list[str]] = {}
        amount = optional_number(data, "amount", errors)
        reason = optional_string(data, "reason", 500, errors)
        if errors:
            return validation_error(errors)
        with self._state:
            order = self._find(m, params["uuid"])
            if order is None:
                return error(404, ORDER_NOT_FOUND)
            if order.status not in ("approved", "partially_refunded"):
                return error(400, f"Order cannot be refunded in its current state ({order.status})")
            now = self._clock()
            if self.refund_window_days is not None and now - order.created_at > timedelta(days=self.refund_window_days):
                return error(400, "The refund window for this order has expired")
            remaining = order.total_price - order.refunded_amount
            if amount is None:
                amount = order.total_price if self.refund_without_amount == "captured" else remaining
            if amount <= 0:
                return error(400, "The refund amount must be greater than zero")
            elif amount > remaining:
                return error(400, f"The refund amount exceeds the refundable amount ({remaining})")
            refunded = order.refunded_amount + amount
            if refunded >= order.total_price:
                target_points, order.status = order.total_points, "fully_refunded"
            else:
                # Cumulative proportion, so several partial refunds add up to exactly the points awarded.
                share = Decimal(order.total_points) * refunded / order.total_price
                target_points = int(share.quantize(Decimal(1), ROUND_HALF_UP))
                order.status = "partially_refunded"
            refund_points = target_points - order.refunded_points
            order.refunded_amount, order.refunded_points, order.updated_at = refunded, target_points, now
            self._emit(
                m,
                "refunded",
                order,
                refund_amount=float(amount),
                refund_points=refund_points,
                left_points=order.total_points - order.refunded_points,
                left_amount=float(order.total_price - order.refunded_amount),
                reason=reason,
            )
            return ok(order_resource(order, now))

    def _cancel(self, m: PointsMerchant, params: dict[str, str], body: bytes, simulate_slow: bool) -> SandboxResponse:
        data, bad = parse_body(body)
        if bad is not None:
            return bad
        errors: dict[str, list[str]] = {}
        reason = optional_string(data, "reason", 500, errors)
        if errors:
            return validation_error(errors)
        with self._state:
            order = self._find(m, params["uuid"])
            if order is None:
                return error(404, ORDER_NOT_FOUND)
            if order.status == "cancelled":
                return error(400, "Order is already cancelled")
            if order.status in ("fully_refunded", "partially_refunded"):
                return error(400, "Refunded orders cannot be cancelled")
            if order.status == "approved" and not self.cancel_approved:
                # The lifecycle page: cancel is for new/authorized orders; an approved one is refunded.
                return error(400, "Approved orders cannot be cancelled; refund the order instead")
            now = self._clock()
            order.status, order.updated_at = "cancelled", now
            order.refunded_points = order.total_points  # cancelling an earning order takes its points back
            self._emit(m, "cancelled", order, reason=reason or "Order cancelled via API")
            return ok(order_resource(order, now))

    # -- the dashboard ------------------------------------------------------------------------------------

    def dashboard(self, action: str, order_number: str, *, amount: Any = None, reason: str | None = None) -> dict:
        """What a merchant does in the Points dashboard: ``refund`` (all, or ``amount``) or ``cancel`` the newest
        order with ``order_number``, whatever client made it. Fires the ``refunded`` / ``cancelled`` webhook event.
        Returns the OrderResource; raises ValueError with the platform's message when it refuses."""
        if action not in ("refund", "cancel"):
            raise ValueError(f"unknown dashboard action {action!r}: refund or cancel")
        body: dict[str, Any] = {"reason": reason or f"{action}ed in the Points dashboard"}
        if amount is not None:
            body["amount"] = amount
        with self._state:
            found = [(m, m.orders[order_number][-1]) for m in self._merchants.values() if m.orders.get(order_number)]
            if not found:
                raise ValueError(f"no approved order {order_number!r} on the sandbox")
            m, order = found[-1]
            cancel_approved, self.cancel_approved = self.cancel_approved, True  # the dashboard may cancel it
            try:
                handler = self._refund if action == "refund" else self._cancel
                answer = handler(m, {"uuid": order.uuid}, json.dumps(body).encode(), False)
            finally:
                self.cancel_approved = cancel_approved
        data = json.loads(answer.body)
        if answer.status != 200:
            raise ValueError(data.get("message") or f"HTTP {answer.status}")
        return data.get("data", data)
