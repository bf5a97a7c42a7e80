"""The Points sandbox's webhooks: the events it records (approved, refunded, cancelled, and on request the
merchant's balance events) and the endpoints a
merchant registers (``POST``/``GET /webhooks``). ``webhook_sender.py`` delivers the events to the endpoints."""

from __future__ import annotations

import hashlib
import secrets
import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .points_resources import webhook_order
from .points_rules import optional_string
from .points_state import Order, PointsMerchant, iso
from .points_wire import error, ok, parse_body, validation_error
from .response import SandboxResponse

BALANCE_EVENTS = ("low_balance_warning", "debt_exceeded")


class PointsWebhooks:
    """Mixed into :class:`~django_points_earn.sandbox.points.PointsSandbox`, which holds the state named below
    and provides ``_clock()``."""

    _state: threading.RLock
    _merchants: dict[str, PointsMerchant]
    events: list[dict[str, Any]]

    _clock: Callable[[], datetime]

    # -- events -------------------------------------------------------------------------------------------

    def _emit(self, m: PointsMerchant, event: str, order: Order, **extra: Any) -> None:
        now = iso(self._clock())
        payload = {"event": event, "order": {**webhook_order(order), **extra}, "timestamp": now}
        self.events.append({"seq": len(self.events) + 1, "merchant": m.name, "event": event, "payload": payload})

    def balance_event(
        self,
        event: str = "low_balance_warning",
        merchant: str | None = None,
        *,
        current_balance: float = 120.0,
        order_points: float = 500.0,
        balance_after_order: float | None = None,
        max_debt_allowed: float = 0.0,
    ) -> list[str]:
        """Points' merchant-level webhook (known from its PHP SDK): ``low_balance_warning`` or ``debt_exceeded``
        for ``merchant`` (default: every merchant). Returns the merchants it was recorded for."""
        if event not in BALANCE_EVENTS:
            raise ValueError(f"event must be one of {', '.join(BALANCE_EVENTS)}")
        after = current_balance - order_points if balance_after_order is None else balance_after_order
        with self._state:
            now = iso(self._clock())
            names = [m for m in self._merchants if merchant in (None, "", m)]
            if merchant and not names:
                raise ValueError(f"no merchant {merchant!r} in the sandbox")
            for name in names:
                merchant_id = int(hashlib.sha256(name.encode()).hexdigest()[:6], 16)
                payload = {
                    "event": event,
                    "merchant": {"id": merchant_id, "name": name, "created_at": now, "updated_at": now},
                    "data": {
                        "current_balance": current_balance,
                        "order_points": order_points,
                        "balance_after_order": after,
                        "max_debt_allowed": max_debt_allowed,
                    },
                    "timestamp": now,
                }
                seq = len(self.events) + 1
                self.events.append({"seq": seq, "merchant": name, "event": event, "payload": payload})
        return names

    def events_since(self, seq: int = 0) -> list[dict[str, Any]]:
        """Events with a sequence number above ``seq`` (a webhook sender's cursor)."""
        with self._state:
            return [e for e in self.events if e["seq"] > seq]

    # -- POST and GET /webhooks ---------------------------------------------------------------------------

    def _register_webhook(
        self, m: PointsMerchant, params: dict[str, str], body: bytes, simulate_slow: bool
    ) -> SandboxResponse:
        """``POST /v1/webhooks {name, url}``: 400 when the URL is already registered for this merchant."""
        data, bad = parse_body(body)
        if bad is not None:
            return bad
        errors: dict[str, list[str]] = {}
        name = optional_string(data, "name", 255, errors)
        url = optional_string(data, "url", 500, errors)
        for field_name, value in (("name", name), ("url", url)):
            if not value and field_name not in errors:
                errors[field_name] = [f"The {field_name} field is required."]
        if errors:
            return validation_error(errors)
        with self._state:
            if any(w["url"] == url for w in m.webhooks):
                return error(400, "This URL is already registered for this merchant")
            now = iso(self._clock())
            hook = {
                "uuid": str(uuid.uuid4()),
                "name": name,
                "url": url,
                "secret": secrets.token_urlsafe(45)[:60],
                "created_at": now,
                "updated_at": now,
                "delivered_seq": len(self.events),
            }
            m.webhooks.append(hook)
            return ok({k: v for k, v in hook.items() if k != "delivered_seq"})

    def _list_webhooks(
        self, m: PointsMerchant, params: dict[str, str], body: bytes, simulate_slow: bool
    ) -> SandboxResponse:
        with self._state:
            hooks = [{k: v for k, v in w.items() if k != "delivered_seq"} for w in m.webhooks]
        return ok(hooks)

    def webhook_endpoints(self, merchant: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(merchant name, endpoint) pairs, for the sender."""
        with self._state:
            return [(m.name, w) for m in self._merchants.values() if merchant in (None, m.name) for w in m.webhooks]
