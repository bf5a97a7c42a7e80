"""The client of a made-up platform with a plain JSON API and one static token:

- ``POST /earns`` ``{reference, phone, amount}`` -> 201 ``{id, reference, points, state}``; 409 if the reference
  exists; 401 for a bad token; 5xx when it is down.
- ``GET /earns?reference=`` -> ``{results: [...]}``; ``GET /earns/{id}`` -> the earn, or 404.
- ``POST /earns/{id}/reversals`` ``{reference, amount}`` -> 200 the earn (``state`` ``reversed`` once every point is
  back, else ``partially_reversed``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import requests
from django.core import checks

from django_points_earn.conf import AccountConfig, setting_path
from django_points_earn.earning_request import EarningRequest
from django_points_earn.providers.base import (
    AWARDED,
    DUPLICATE,
    FULLY_REVERSED,
    RATE_LIMITED,
    REJECTED,
    UNAUTHORIZED,
    UNAVAILABLE,
    BaseBackend,
    EarnResult,
    LookupResult,
    PlatformError,
    describe_exception,
    to_json_number,
)


# --8<-- [start:contract]
class StampsBackend(BaseBackend):
    provider = "stamps"
    label = "Stamps Club"
    defaults = {
        "BASE_URL": "https://api.stamps.test/v1",  # the platform's API root
        "CHANNEL": "web",  # sent with every earn: "web" or "store"
    }
    required_keys = ("TOKEN",)
    secret_keys = ("TOKEN",)
    base_url_carries = "the token"
    supports_refunds = True

    @classmethod
    def check(cls, account: AccountConfig) -> list[Any]:
        errors = super().check(account)
        if account.option("CHANNEL") not in ("web", "store"):
            errors.append(
                checks.Error(
                    f"{setting_path('ACCOUNTS', account.name, 'CHANNEL')} must be web or store.", id="stamps.E001"
                )
            )
        return errors

    # --8<-- [end:contract]
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.account.secret('TOKEN')}"}

    # -- earning --------------------------------------------------------------------------------------------
    def build_payload(self, request: EarningRequest) -> dict[str, Any]:
        request.validate()
        return {
            "reference": request.order_number,
            "phone": request.phone,
            "amount": to_json_number(request.total),
            "channel": self.account.option("CHANNEL"),
        }

    def earn(self, payload: dict[str, Any], *, request_id: str, outcome_unknown: bool = False) -> EarnResult:
        if outcome_unknown:  # the last attempt may have landed: look before sending again
            found = self._find(payload["reference"], request_id)
            if found is not None:
                return found
        response, exc, duration = self.send("POST", "earns", json_body=payload, request_id=request_id)
        result = self._classify(response, exc, what="earn")
        result.duration_ms = duration
        return result

    def _find(self, reference: str, request_id: str) -> EarnResult | None:
        response, _, _ = self.send("GET", "earns", params={"reference": reference}, request_id=request_id)
        if response is None or response.status_code != 200:
            return EarnResult(UNAVAILABLE, "could not look the earlier attempt up", outcome_unknown=True)
        results = (self.parse_json(response)[0] or {}).get("results") or []
        if not results:
            return None
        return _earned(results[0], "found after an attempt whose answer was lost")

    def _classify(self, response: requests.Response | None, exc: BaseException | None, *, what: str) -> EarnResult:
        if response is None:
            return self.no_answer(exc)
        code = response.status_code
        body, not_json, common = self.read(response)
        if 200 <= code < 300 and not not_json and isinstance(body, dict):
            return _earned(body, "", **common)
        message = str(body.get("error") or "") if isinstance(body, dict) else ""
        if code >= 500 or not_json:
            return EarnResult(UNAVAILABLE, f"Stamps answered HTTP {code}", outcome_unknown=True, **common)
        if code == 429:
            return EarnResult(RATE_LIMITED, "Stamps is busy", **common)
        if code == 409 and what == "earn":
            return EarnResult(DUPLICATE, "reference exists on Stamps", **common)
        if code == 401:
            return EarnResult(UNAUTHORIZED, "Stamps refused the token", **common)
        return EarnResult(REJECTED, f"Stamps refused the {what} (HTTP {code}): {message}", **common)

    # -- refunds --------------------------------------------------------------------------------------------
    def refund_body(self, record: Any, reversal: Any, amount: Decimal | None = None) -> dict[str, Any]:
        return {"reference": reversal.refund_id, "amount": to_json_number(amount)}

    def snapshot(self, record: Any) -> dict[str, Any]:
        seen = self.lookup(record.remote_id)
        body = seen.body if isinstance(seen.body, dict) else {}
        return {"found": seen.found, "state": seen.remote_status, "reversed": body.get("reversed_points")}

    def reverse(
        self, record: Any, body: dict[str, Any], *, request_id: str, before: Any, outcome_unknown: bool = False
    ) -> EarnResult:
        if outcome_unknown and before is not None:
            try:
                now = self.snapshot(record)
            except PlatformError as exc:
                return EarnResult(UNAVAILABLE, f"could not check the earlier refund: {exc}", outcome_unknown=True)
            if now != before:
                return EarnResult(AWARDED, "the earlier refund call had landed", remote_status=_state(now["state"]))
        response, exc, duration = self.send(
            "POST", f"earns/{record.remote_id}/reversals", json_body=body, request_id=request_id
        )
        result = self._classify(response, exc, what="reversal")
        if result.status == AWARDED:
            result.remote_status = _state(result.remote_status)
        result.duration_ms = duration
        return result

    # -- lookup ---------------------------------------------------------------------------------------------
    def lookup(self, remote_id: str) -> LookupResult:
        response, exc, _ = self.send("GET", f"earns/{remote_id}")
        if response is None:
            raise PlatformError(describe_exception(exc)[0] if exc else "no answer")
        if response.status_code == 404:
            return LookupResult(found=False, http_status=404, message="Stamps does not know this earn")
        body, not_json = self.parse_json(response)
        if response.status_code != 200 or not_json:
            raise PlatformError(f"GET earns/{remote_id}: HTTP {response.status_code}", http_status=response.status_code)
        return LookupResult(
            found=True,
            remote_id=str(body["id"]),
            remote_reference=str(body.get("reference") or ""),
            remote_status=str(body.get("state") or ""),
            points=Decimal(str(body["points"])),
            body=body,
            http_status=200,
        )


def _earned(earn: dict[str, Any], message: str, **common: Any) -> EarnResult:
    return EarnResult(
        AWARDED,
        message,
        remote_id=str(earn.get("id") or ""),
        remote_reference=str(earn.get("reference") or ""),
        remote_status=str(earn.get("state") or ""),
        points=Decimal(str(earn.get("points", 0))),
        **common,
    )


def _state(state: str) -> str:
    """``reversed`` means every point is back, whatever our sums say."""
    return FULLY_REVERSED if state == "reversed" else state
