"""What a fabric answer means: :class:`FabricAnswers` classifies an earn's (or a reversal's) answer into the
result vocabulary, and the helpers here read the parts of any fabric answer.

fabric documents neither its error answers nor its duplicate answer, so every answer is classified defensively: what
cannot be read is ``unavailable`` with the outcome unknown (looked up before anything is resent), never a guess.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

import requests

from .base import (
    AWARDED,
    DUPLICATE,
    FORBIDDEN,
    RATE_LIMITED,
    REJECTED,
    UNAUTHORIZED,
    UNAVAILABLE,
    BaseBackend,
    EarnResult,
    parse_retry_after,
    scrub,
)
from .fabric_http import EARN


class FabricAnswers(BaseBackend):
    """The classification of fabric's answers; the duplicate answer's status codes and words are the account's."""

    def classify_earn(self, response: requests.Response | None, exc: BaseException | None) -> EarnResult:
        if response is None:
            return self.no_answer(exc)
        code = response.status_code
        body, not_json, common = self.read(response)
        if not 200 <= code < 300:
            if not_json and code in (400, 409, 422):
                # A garbled refusal could be a duplicate (already earned): unknown, resent only after a lookup.
                return EarnResult(UNAVAILABLE, f"HTTP {code} but the {not_json}", outcome_unknown=True, **common)
            return self._refusal(code, body, not_json, response, common, what=f"HTTP {code}")
        if not_json:
            return EarnResult(UNAVAILABLE, f"HTTP {code} but the {not_json}", outcome_unknown=True, **common)
        if not isinstance(body, dict):
            return EarnResult(UNAVAILABLE, f"HTTP {code} with an unexpected body", outcome_unknown=True, **common)
        said = as_int(body.get("status"))
        if said is not None and not 200 <= said < 300:
            # The envelope carries its own status: a refusal wrapped in a 2xx is still a refusal.
            return self._refusal(said, body, None, response, common, what=f"HTTP {code} with body status {said}")
        errors = field_errors(body)
        if errors:
            return EarnResult(
                UNAVAILABLE,
                f"HTTP {code} but the body carries errors ({describe_errors(errors, '')}); checked before any resend",
                outcome_unknown=True,
                field_errors=errors,
                **common,
            )
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        if not data.get("transactionCode"):
            return EarnResult(UNAVAILABLE, f"HTTP {code} without a transactionCode", outcome_unknown=True, **common)
        return EarnResult(
            AWARDED,
            remote_id=str(data["transactionCode"]),
            remote_reference=str(data.get("transactionNumber") or ""),
            points=as_decimal(data.get("points")),
            **common,
        )

    def _refusal(
        self, code: int, body: Any, not_json: str | None, response: requests.Response, common: dict, *, what: str
    ) -> EarnResult:
        message = body_message(body)
        errors = field_errors(body)
        detail = describe_errors(errors, message) or not_json or "no detail"
        if code == 429:
            return EarnResult(
                RATE_LIMITED, f"fabric is rate-limiting ({what})", retry_after=retry_after_of(response), **common
            )
        if self.is_duplicate(code, body):
            return EarnResult(DUPLICATE, f"fabric already holds this transactionExternalReference: {detail}", **common)
        if code in (400, 422):
            return EarnResult(REJECTED, f"fabric refused the data ({what}): {detail}", field_errors=errors, **common)
        if code == 401:
            return EarnResult(
                UNAUTHORIZED, f"fabric refused a freshly issued access token ({what}): {detail}", **common
            )
        if code == 403:
            return EarnResult(FORBIDDEN, f"fabric refused the account ({what}): {detail}", **common)
        if code >= 500 or code == 408:
            return EarnResult(UNAVAILABLE, f"fabric answered {what}: {detail}", outcome_unknown=True, **common)
        if code in (404, 405):
            return EarnResult(UNAVAILABLE, f"{what} from {self.url(EARN)}: check the account's BASE_URL", **common)
        return EarnResult(REJECTED, f"fabric answered {what}: {detail}", field_errors=errors, **common)

    def is_duplicate(self, code: int, body: Any) -> bool:
        """fabric does not document its duplicate answer: the status codes and words are settings."""
        if code == 409:
            return True
        if code not in tuple(self.account.option("DUPLICATE_STATUS_CODES", ())) or not isinstance(body, dict):
            return False
        texts = [body_message(body)] + [" ".join(v) for v in field_errors(body).values()]
        haystack = " ".join(texts).lower()
        return any(marker.lower() in haystack for marker in self.account.option("DUPLICATE_MARKERS", ()))


def body_message(body: Any) -> str:
    message = str(body.get("message") or "") if isinstance(body, dict) else ""
    return "" if message == "Exception message" else scrub(message)  # the schema's placeholder says nothing


def field_errors(body: Any) -> dict[str, list[str]]:
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list):
        errors = {"errors": errors} if errors else {}
    if not isinstance(errors, dict):
        return {}
    return {str(k): [scrub(str(m)) for m in (v if isinstance(v, list) else [v])] for k, v in errors.items()}


def describe_errors(errors: dict[str, list[str]], message: str) -> str:
    return "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()) or message


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def as_decimal(value: Any) -> Decimal | None:
    try:
        return None if value is None or isinstance(value, bool) else Decimal(str(value))
    except InvalidOperation:
        return None


def retry_after_of(response: requests.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))


def answer_fields(result: EarnResult) -> dict[str, Any]:
    return {"http_status": result.http_status, "body": result.body, "raw_text": result.raw_text}
