"""The Points sandbox's control endpoints (the HTTP server's ``/__sandbox__``): what a test or a demo asks of
the platform besides its API: the ledger, the events, faults, merchants, activations, the dashboard."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .points_wire import FORBIDDEN, json_answer, parse_body
from .response import SandboxResponse, as_bytes

BALANCE_FIGURES = ("current_balance", "order_points", "balance_after_order", "max_debt_allowed")


class PointsControl:
    """Mixed into :class:`~django_points_earn.sandbox.points.PointsSandbox`; every endpoint calls one of its
    public methods."""

    def control(self, method: str, path: str, headers: Mapping[str, str], body: bytes | str | None) -> SandboxResponse:
        """Test-side endpoints: ``GET /ledger``, ``GET /events?since=N``, ``POST /faults``, ``/script``,
        ``/reset``, ``/merchants``, ``/ratings``, ``/activate``, ``/approve-pending``, ``/dashboard``, ``/balance``
        (a merchant balance webhook: ``{event, merchant, current_balance, ...}``). Answers never contain an API key.
        """
        parts = urlsplit(path)
        route = (method.upper(), parts.path.rstrip("/") or "/")
        data, bad = parse_body(as_bytes(body))
        if bad is not None:
            return bad
        try:
            if route == ("GET", "/ledger"):
                return json_answer(200, self.ledger())
            if route == ("GET", "/events"):
                since = int(parse_qs(parts.query).get("since", ["0"])[0])
                return json_answer(200, {"events": self.events_since(since)})
            if route == ("POST", "/faults"):
                return json_answer(200, {"faults": asdict(self.set_faults(**data))})
            if route == ("POST", "/script"):
                kinds = data.get("kinds", [])
                if not isinstance(kinds, list):
                    raise ValueError("kinds must be a list")
                self.script(*kinds)
                return json_answer(200, {"script": self.ledger()["script"]})
            if route == ("POST", "/reset"):
                self.reset(faults=bool(data.get("faults", False)))
                return json_answer(200, {"ok": True})
            if route == ("POST", "/merchants"):
                return self._control_merchant(data)
            if route == ("POST", "/ratings"):
                return self._control_ratings(data)
            if route == ("POST", "/activate"):
                return json_answer(200, {"orders": self.activate(str(data.get("phone", "")))})
            if route == ("POST", "/balance"):
                names = self.balance_event(
                    str(data.get("event") or "low_balance_warning"),
                    data.get("merchant") or None,
                    **{k: float(data[k]) for k in BALANCE_FIGURES if data.get(k) is not None},
                )
                return json_answer(200, {"merchants": names})
            if route == ("POST", "/approve-pending"):
                return json_answer(200, {"orders": self.approve_all_pending()})
            if route == ("POST", "/dashboard"):
                order = self.dashboard(
                    str(data.get("action", "")),
                    str(data.get("order_number", "")),
                    amount=data.get("amount"),
                    reason=data.get("reason"),
                )
                return json_answer(200, {"order": order})
        except (TypeError, ValueError, KeyError) as exc:
            return json_answer(400, {"ok": False, "error": str(exc)})
        return json_answer(404, {"ok": False, "error": f"no control endpoint {route[0]} {route[1]}"})

    def _control_merchant(self, data: dict[str, Any]) -> SandboxResponse:
        api_key, name = data.get("api_key"), data.get("name")
        if not isinstance(api_key, str) or not api_key or not isinstance(name, str) or not name:
            raise ValueError("api_key and name are required strings")
        self.add_merchant(api_key, name)
        if data.get("revoked"):
            self.revoke(api_key)
        if "forbidden" in data:
            if data["forbidden"]:
                self.forbid(name, str(data.get("message") or FORBIDDEN))
            else:
                self.allow(name)
        return json_answer(200, {"ok": True, "merchant": name})

    def _control_ratings(self, data: dict[str, Any]) -> SandboxResponse:
        """``{"merchant", "store", "product", "disabled": ["store"|"product", ...]}``: the merchant's flat rating
        amounts and which rating channels answer 403."""
        merchant = str(data.get("merchant") or "")
        self.set_rating_points(merchant, store=data.get("store"), product=data.get("product"))
        if "disabled" in data:
            for channel in ("store", "product"):
                self.disable_rating_channel(merchant, channel, channel in (data.get("disabled") or []))
        m = self._merchant(merchant)
        return json_answer(200, {"rating_points": dict(m.rating_points), "disabled": sorted(m.rating_channels_off)})
