"""The platform's half: a tiny in-memory Stamps Club, mounted on a ``responses`` mock (no network)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses


@dataclass
class StampsFake:
    token: str
    earns: dict[str, dict[str, Any]] = field(default_factory=dict)  # by id
    calls: list[tuple[str, str]] = field(default_factory=list)  # (method, path) in order
    failures: list[int] = field(default_factory=list)  # status codes the next POSTs answer, before any work

    def fail_next(self, *codes: int) -> None:
        self.failures.extend(codes)

    def by_reference(self, reference: str) -> dict[str, Any] | None:
        return next((e for e in self.earns.values() if e["reference"] == reference), None)

    def reverse_in_dashboard(self, earn_id: str) -> None:
        """A refund made by hand on the platform (drift for points_reconcile --verify-remote)."""
        earn = self.earns[earn_id]
        earn["reversed_points"], earn["state"] = earn["points"], "reversed"

    # -- the API --------------------------------------------------------------------------------------------
    def handle(self, request: Any) -> tuple[int, dict[str, str], str]:
        url = urlsplit(request.url)
        path = url.path.split("/v1/", 1)[1]
        self.calls.append((request.method, path))
        if request.headers.get("Authorization") != f"Token {self.token}":
            return _json(401, {"error": "bad token"})
        if request.method == "POST" and self.failures:
            return _json(self.failures.pop(0), {"error": "down"})
        body = json.loads(request.body) if request.body else {}
        if request.method == "POST" and path == "earns":
            return self.earn(body)
        if request.method == "GET" and path == "earns":
            found = self.by_reference(parse_qs(url.query).get("reference", [""])[0])
            return _json(200, {"results": [found] if found else []})
        match = re.fullmatch(r"earns/([\w-]+)(/reversals)?", path)
        earn = self.earns.get(match.group(1)) if match else None
        if earn is None:
            return _json(404, {"error": "no such earn"})
        if request.method == "GET":
            return _json(200, earn)
        return self.reverse(earn, body)

    def earn(self, body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
        if not body.get("reference") or body.get("amount") is None:
            return _json(422, {"error": "reference and amount are required"})
        if self.by_reference(body["reference"]):
            return _json(409, {"error": "reference exists"})
        earn_id = f"stp-{len(self.earns) + 1}"
        points = int(Decimal(str(body["amount"])))  # one stamp per whole SAR
        self.earns[earn_id] = {
            "id": earn_id,
            "reference": body["reference"],
            "points": points,
            "amount": body["amount"],
            "reversed_points": 0,
            "reversals": [],
            "state": "earned",
        }
        return _json(201, self.earns[earn_id])

    def reverse(self, earn: dict[str, Any], body: dict[str, Any]) -> tuple[int, dict[str, str], str]:
        if body.get("reference") in earn["reversals"]:
            return _json(200, earn)
        left = earn["points"] - earn["reversed_points"]
        amount = body.get("amount")
        share = (
            left
            if amount is None
            else min(left, int(Decimal(str(amount)) * earn["points"] / Decimal(str(earn["amount"]))))
        )
        earn["reversed_points"] += share
        earn["reversals"].append(body.get("reference"))
        earn["state"] = "reversed" if earn["reversed_points"] >= earn["points"] else "partially_reversed"
        return _json(200, earn)


def _json(status: int, body: Any) -> tuple[int, dict[str, str], str]:
    return status, {"Content-Type": "application/json"}, json.dumps(body)


def mount(rsps: responses.RequestsMock, fake: StampsFake, base_url: str) -> None:
    """Route every call to ``base_url`` to ``fake``."""
    for method in ("GET", "POST"):
        rsps.add_callback(method, re.compile(re.escape(base_url) + r"/.*"), callback=fake.handle)
