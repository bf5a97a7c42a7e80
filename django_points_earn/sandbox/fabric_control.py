"""The fabric sandbox's control endpoints (the HTTP server's ``/__sandbox__/fabric``): the ledger, faults,
members, clients, tokens and quirks, set from a test or a demo."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from urllib.parse import urlsplit

from .fabric_rules import json_response, parse_object
from .response import SandboxResponse, as_bytes


class FabricControl:
    """Mixed into :class:`~django_points_earn.sandbox.fabric.FabricSandbox`; every endpoint calls one of its
    public methods."""

    def control(self, method: str, path: str, headers: Mapping[str, str], body: bytes | str | None) -> SandboxResponse:
        """``GET /ledger``, ``POST /faults``, ``/script``, ``/reset``, ``/members``, ``/clients``,
        ``/expire-tokens``, ``/token-outage``, ``/quirks``. Answers never contain a secret or a token."""
        route = (method.upper(), urlsplit(path).path.rstrip("/") or "/")
        data, bad = parse_object(as_bytes(body))
        if bad is not None:
            return bad
        try:
            if route == ("GET", "/ledger"):
                return json_response(200, self.ledger())
            if route == ("POST", "/faults"):
                return json_response(200, {"faults": asdict(self.set_faults(**data))})
            if route == ("POST", "/script"):
                kinds = data.get("kinds", [])
                if not isinstance(kinds, list):
                    raise ValueError("kinds must be a list")
                self.script(*kinds)
                return json_response(200, {"script": self.ledger()["script"]})
            if route == ("POST", "/reset"):
                self.reset(faults=bool(data.get("faults", False)))
                return json_response(200, {"ok": True})
            if route == ("POST", "/members"):
                profile_id = self.add_member(str(data.get("phone", "")), profile_id=data.get("profileId") or None)
                return json_response(200, {"profileId": profile_id})
            if route == ("POST", "/clients"):
                client_id, secret = data.get("client_id"), data.get("client_secret")
                if not isinstance(client_id, str) or not isinstance(secret, str):
                    raise ValueError("client_id and client_secret are required strings")
                self.add_client(client_id, secret, str(data.get("merchant") or "sandbox"))
                if data.get("revoked"):
                    self.revoke_client(client_id)
                return json_response(200, {"ok": True})
            if route == ("POST", "/expire-tokens"):
                return json_response(200, {"expired": self.expire_tokens()})
            if route == ("POST", "/token-outage"):
                self.set_token_outage(data.get("kind"))
                return json_response(200, {"ok": True})
            if route == ("POST", "/quirks"):
                self.set_quirks(transactions=data.get("transactions"), members=data.get("members"))
                return json_response(200, {"transactions": self.transactions_answer, "members": self.members_answer})
        except (TypeError, ValueError, KeyError) as exc:
            return json_response(400, {"ok": False, "error": str(exc)})
        return json_response(404, {"ok": False, "error": f"no control endpoint {route[0]} {route[1]}"})
