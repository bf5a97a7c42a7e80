"""The Points sandbox's rating channels: ``POST /orders/earning/store-rating`` and ``/product-rating`` (§9.1).

Each merchant awards a flat amount per channel (``rating_points``, e.g. ``{"store": 50, "product": 20}``), keyed by
``review_reference``, with the purchases' lock, 429, faults, pending customers and duplicate answers. A rating is
kept as an order whose ``order_number`` is the reference, ``type`` 1 and ``total_price`` 0 (the docs' examples),
so it shows in the ledger, the events and ``GET /orders/{uuid}`` like any other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

from .accounting import counted_call
from .points_resources import order_resource, pending_resource
from .points_rules import Rules
from .points_state import PointsMerchant
from .points_wire import DUPLICATE, LOCK_BUSY, error, ok, parse_body, validation_error
from .response import SandboxResponse

CHANNELS = ("store", "product")
CHANNEL_DISABLED = "This earning channel is disabled for the merchant"
REFERENCE_TAKEN = "The review reference has already been taken."


def validate_rating(data: dict[str, Any], channel: str) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The documented rules: phone and reference required (product_id too for a product), rating 1-5 or null."""
    r = Rules()
    clean: dict[str, Any] = {}
    r.phone(data, clean)
    reference = data.get("review_reference")
    if r.required("review_reference", reference):
        clean["review_reference"] = r.string("review_reference", reference)
    if channel == "product":
        product = data.get("product_id")
        if r.required("product_id", product):
            clean["product_id"] = str(product)
        if data.get("product_name") is not None:
            clean["product_name"] = r.string("product_name", data["product_name"], 255)
    if data.get("rating") is not None:
        rating = r.integer("rating", data["rating"], 1)
        if rating is not None and rating > 5:
            r.fail("rating", "The rating field must not be greater than 5.")
        clean["rating"] = rating
    if data.get("comment") is not None:
        clean["comment"] = r.string("comment", data["comment"])
    metadata = data.get("metadata")
    if metadata is not None:
        r.array("metadata", metadata)
    clean["metadata"] = metadata
    return r.errors, clean


class PointsRatings:
    """Mixed into :class:`~django_points_earn.sandbox.points.PointsSandbox` (its state, ``_play``, ``_award``)."""

    _state: threading.RLock
    _next_pending_id: int
    _duplicate_mode: str
    pending_phones: set[str]
    _clock: Callable[[], datetime]
    _play: Callable[..., SandboxResponse]
    _award: Callable[..., Any]
    _merchant: Callable[[str], PointsMerchant]

    def set_rating_points(self, name_or_key: str, *, store: int | None = None, product: int | None = None) -> None:
        """The merchant's flat amounts (its dashboard's setting); 0 leaves the channel on with nothing to award."""
        with self._state:
            m = self._merchant(name_or_key)
            for channel, points in (("store", store), ("product", product)):
                if points is not None:
                    m.rating_points[channel] = int(points)

    def disable_rating_channel(self, name_or_key: str, channel: str, disabled: bool = True) -> None:
        """The channel (``store`` or ``product``) answers 403 "channel disabled" while disabled."""
        if channel not in CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CHANNELS)}")
        with self._state:
            off = self._merchant(name_or_key).rating_channels_off
            (off.add if disabled else off.discard)(channel)

    def _store_rating(self, m: PointsMerchant, params: dict[str, str], body: bytes, slow: bool) -> SandboxResponse:
        return self._rating(m, "store", body, slow)

    def _product_rating(self, m: PointsMerchant, params: dict[str, str], body: bytes, slow: bool) -> SandboxResponse:
        return self._rating(m, "product", body, slow)

    def _rating(self, m: PointsMerchant, channel: str, body: bytes, slow: bool) -> SandboxResponse:
        return counted_call(
            self._state, m, lambda: self._rating_call(m, channel, body, slow), concurrent_is_overlap=False
        )

    def _rating_call(self, m: PointsMerchant, channel: str, body: bytes, slow: bool) -> SandboxResponse:
        if m.forbidden is not None:
            return error(403, m.forbidden)
        if channel in m.rating_channels_off:
            return error(403, CHANNEL_DISABLED)
        data, bad = parse_body(body)
        if bad is not None:
            return bad
        errors, clean = validate_rating(data, channel)
        if errors:
            return validation_error(errors)
        if not m.lock.acquire(blocking=False):  # the purchases' lock: one earning call per merchant at a time
            with self._state:
                m.overlaps += 1
            return error(429, LOCK_BUSY)
        try:
            return self._play(m, lambda: self._create_rating(m, channel, clean), slow)
        finally:
            m.lock.release()

    def _create_rating(self, m: PointsMerchant, channel: str, clean: dict[str, Any]) -> SandboxResponse:
        number = clean["review_reference"]
        data = {**clean, "order_number": number, "total_price": Decimal(0), "items": [], "channel": channel}
        with self._state:
            existing = m.orders.get(number)
            pending = [p for p in m.pending if p.order_number == number]
            if (existing or pending) and self._duplicate_mode != "accept":
                return self._rating_duplicate(existing[-1] if existing else None, pending[-1] if pending else None)
            now = self._clock()
            points = int(m.rating_points.get(channel, 0))
            return self._credit_or_hold(m, number, data, Decimal(0), points, now)

    def _rating_duplicate(self, order: Any, pending: Any) -> SandboxResponse:
        mode = self._duplicate_mode
        if mode == "replay":
            return ok(order_resource(order, self._clock()) if order is not None else pending_resource(pending))
        if mode == "422":
            return validation_error({"review_reference": [REFERENCE_TAKEN]})
        return error(int(mode), DUPLICATE)
