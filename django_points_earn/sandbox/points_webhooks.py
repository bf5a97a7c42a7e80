"""The Points sandbox's webhooks: the events it records (approved, refunded, cancelled) and the endpoints a
merchant registers (``POST``/``GET /webhooks``). ``webhook_sender.py`` delivers the events to the endpoints."""

from __future__ import annotations

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
