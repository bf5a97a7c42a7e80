"""What fabric holds: ``GET /v2/earn/get-transaction`` for an earn or a reversal whose answer was lost (so that
nothing is sent twice), and for an earning by fabric's transactionCode (the admin's "verify", reconcile).
"""

from __future__ import annotations

import logging
from typing import Any

from .base import AWARDED, UNAVAILABLE, EarnResult, LookupResult, PlatformError, cut, describe_exception, scrub
from .fabric_answers import FabricAnswers, as_decimal
from .fabric_http import GET_TRANSACTION, FabricHttp
from .fabric_token import TokenUnavailable

log = logging.getLogger("django_points_earn")

# remote_status of an earn found by get-transaction after an attempt whose answer was lost.
FOUND_BY_LOOKUP = "found_by_lookup"


class FabricTransactions(FabricHttp, FabricAnswers):
    """get-transaction, asked before a resend and by fabric's id."""

    def _find_earn(self, reference: str, profile_id: Any, request_id: str) -> EarnResult | None:
        """``AWARDED`` if fabric holds the earn, ``None`` if it surely does not, else why we cannot tell."""
        params = {"transactionExternalReference": reference, "transactionType": "EARN"}
        if profile_id:
            params["profileId"] = str(profile_id)
        response, exc = self._call("GET", GET_TRANSACTION, params=params, request_id=request_id)
        cannot = "could not check whether an earlier attempt reached fabric, so nothing was resent"
        if response is None:
            return EarnResult(UNAVAILABLE, f"{cannot}: {describe_exception(exc)[0] if exc else 'no answer'}")
        body, not_json = self.parse_json(response)
        common = {"http_status": response.status_code, "body": body, "raw_text": cut(scrub(response.text))}
        if response.status_code in (401, 403, 429):
            return self._refusal(response.status_code, body, not_json, response, common, what="get-transaction")
        data = body.get("data") if isinstance(body, dict) else None
        if response.status_code != 200 or not_json or not isinstance(data, list):
            why = not_json or ("no list of transactions" if response.status_code == 200 else "")
            return EarnResult(UNAVAILABLE, f"{cannot}: get-transaction answered HTTP {response.status_code} {why}")
        found = _matching(data, reference)
        if not found:
            return None
        if len(found) > 1:
            log.error("fabric holds %d earns for %s: the platform credited it more than once", len(found), reference)
        earn = found[0]
        return EarnResult(
            AWARDED,
            message="an earlier attempt had reached fabric (found by get-transaction); not sent again",
            remote_id=str(earn.get("transactionCode") or ""),
            remote_reference=str(earn.get("transactionNumber") or ""),
            remote_status=FOUND_BY_LOOKUP,
            points=as_decimal(earn.get("points")),
            payload_update={"profileId": str(earn["profileId"])} if earn.get("profileId") else {},
            **common,
        )

    def _find_reversal(self, reference: str, request_id: str) -> EarnResult | None:
        response, _exc = self._call(
            "GET",
            GET_TRANSACTION,
            request_id=request_id,
            params={"transactionExternalReference": reference, "transactionType": "EARN_REVERSE"},
        )
        body, _not_json = self.parse_json(response) if response is not None else (None, "no answer")
        data = body.get("data") if isinstance(body, dict) else None
        if response is None or response.status_code != 200 or not isinstance(data, list):
            return EarnResult(UNAVAILABLE, "could not check whether the earlier reversal reached fabric; not resent")
        found = [
            t for t in data if isinstance(t, dict) and str(t.get("transactionExternalReference") or "") == reference
        ]
        if not found:
            return None
        points = as_decimal(found[0].get("points"))
        return EarnResult(
            AWARDED,
            "the earlier reversal had reached fabric (found by get-transaction); not sent again",
            remote_id=str(found[0].get("transactionCode") or ""),
            remote_reference=reference,
            points=abs(points) if points is not None else None,
        )

    # -- lookup by fabric's id ------------------------------------------------------------------------------
    def lookup(self, remote_id: str) -> LookupResult:
        try:
            response, exc = self._call("GET", GET_TRANSACTION, params={"transactionCode": remote_id})
        except TokenUnavailable as exc:
            raise PlatformError(str(exc), http_status=exc.http_status) from None
        if response is None:
            raise PlatformError(describe_exception(exc)[0] if exc else "no answer")
        body, not_json = self.parse_json(response)
        data = body.get("data") if isinstance(body, dict) else None
        if response.status_code != 200 or not_json or not isinstance(data, list):
            raise PlatformError(
                f"get-transaction?transactionCode={remote_id}: HTTP {response.status_code} {not_json or ''}".strip(),
                http_status=response.status_code,
                body=cut(scrub(response.text)),
            )
        # Only an item carrying this very code: a server that ignored the filter lists other transactions too.
        match = [
            t for t in data if isinstance(t, dict) and remote_id and str(t.get("transactionCode") or "") == remote_id
        ]
        if not match:
            return LookupResult(found=False, http_status=200, message="fabric does not know this transactionCode")
        earn = match[0]
        return LookupResult(
            found=True,
            remote_id=str(earn.get("transactionCode") or remote_id),
            remote_reference=str(earn.get("transactionNumber") or ""),
            remote_status=str(earn.get("status") or earn.get("transactionType") or ""),
            points=as_decimal(earn.get("points")),
            body=body,
            http_status=200,
        )


def _matching(transactions: list[Any], reference: str) -> list[dict[str, Any]]:
    """The EARN transactions carrying our exact reference (the search may be looser than an exact match)."""
    found = []
    for t in transactions:
        if not isinstance(t, dict):
            continue
        if not reference or str(t.get("transactionExternalReference") or "") != reference:
            continue  # only an item carrying our exact reference: a server that ignored the filter lists others
        if str(t.get("transactionType", "EARN")).upper() != "EARN":
            continue
        found.append(t)
    return found
