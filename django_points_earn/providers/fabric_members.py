"""Who the customer is on fabric: the member's profileId, found by the order's phone (``GET /v1/members``).

An earn needs the profileId; a reversal too (fabric requires it). A phone is personal data: it is masked in every
message and log line, also in the request URLs urllib3 logs at DEBUG, and member records are never kept.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from ..phones import mask_phone
from . import fabric_payload
from .base import REJECTED, SKIPPED, UNAVAILABLE, EarnResult, describe_exception
from .fabric_answers import FabricAnswers, as_int, body_message, describe_errors, field_errors
from .fabric_http import MEMBERS, FabricHttp, token_failure
from .fabric_token import TokenUnavailable

log = logging.getLogger("django_points_earn")


class FabricMembers(FabricHttp, FabricAnswers):
    """The member lookup by phone, for an earn without a profileId and for a reversal (fabric requires it)."""

    def _find_member(self, phone: Any, request_id: str) -> str | EarnResult:
        """The member's profileId, or the result that ends this attempt (no member, lookup failed)."""
        if not phone:
            return EarnResult(REJECTED, "no fabric profileId and no phone number to find the member by")
        masked = mask_phone(str(phone))
        response, exc = self._call("GET", MEMBERS, params={"phonenumber": str(phone)}, request_id=request_id)
        if response is None:
            return EarnResult(
                UNAVAILABLE, f"member lookup failed: {describe_exception(exc)[0] if exc else 'no answer'}"
            )
        code = response.status_code
        body, not_json = self.parse_json(response)
        # Member records (other customers' names and phones, when several match) are not kept on the earning.
        common: dict[str, Any] = {"http_status": code}
        if code == 404 and not not_json and "member" in body_message(body).lower():
            return self._no_member(masked, common)
        if not 200 <= code < 300 or not_json:
            if code in (400, 422):
                detail = describe_errors(field_errors(body), body_message(body)) or not_json or "no detail"
                return EarnResult(REJECTED, f"fabric refused the member lookup by phone {masked}: {detail}", **common)
            if code in (401, 403, 429):
                return self._refusal(code, body, not_json, response, common, what="member lookup")
            hint = ": check the account's BASE_URL" if code in (404, 405) else ""
            return EarnResult(
                UNAVAILABLE, f"member lookup answered HTTP {code} {not_json or ''}".strip() + hint, **common
            )
        ids = _member_ids(body)
        if ids is None:
            # Never "no member" on a guess: with MISSING_MEMBER="skipped" that would earn nothing, silently.
            return EarnResult(
                UNAVAILABLE,
                f"fabric's member lookup for phone {masked} answered HTTP {code} in a shape we do not recognise "
                f"({_shape(body)}): cannot tell whether the customer is a member; asked again later",
                **common,
            )
        if not ids:
            return self._no_member(masked, common)
        if len(ids) > 1:
            return EarnResult(
                REJECTED,
                f"{len(ids)} fabric members have phone {masked}; the adapter must give the profileId",
                **common,
            )
        log.info("fabric account %s: member for phone %s found", self.account.name, masked)
        return ids[0]

    def _no_member(self, masked: str, common: dict) -> EarnResult:
        if self.account.option("MISSING_MEMBER") == "skipped":
            return EarnResult(SKIPPED, f"no fabric member has phone {masked}; skipped (MISSING_MEMBER)", **common)
        return EarnResult(REJECTED, f"no fabric member has phone {masked}", **common)

    def _profile_for(self, record: Any, request_id: str) -> str | EarnResult:
        """The member's profileId by the phone kept on the record (a reversal needs it; fabric requires it)."""
        try:
            member = self._find_member((record.payload or {}).get(fabric_payload.MEMBER_PHONE_KEY), request_id)
        except TokenUnavailable as exc:
            return token_failure(exc)
        if isinstance(member, EarnResult) and member.status == SKIPPED:
            member.status = REJECTED  # no member now: there is nothing to reverse it against
        return member


def _member_ids(body: Any) -> list[str] | None:
    """profileIds in a Get Members answer (one member object or a list; the id on the member or its accounts):
    ``[]`` only for an answer that says "no member" the documented way (``data`` empty), ``None`` for any answer
    we cannot read (no ``data``, errors, a member without a profileId, another shape)."""
    if not isinstance(body, dict) or "data" not in body or field_errors(body):
        return None
    said = as_int(body.get("status"))
    if said is not None and not 200 <= said < 300:
        return None
    data = body["data"]
    if data is None or data == [] or data == {}:
        return []
    members = data if isinstance(data, list) else [data] if isinstance(data, dict) else None
    ids: list[str] = []
    for member in members if members is not None else [None]:
        if not isinstance(member, dict):
            return None
        candidates = [member.get("profileId")]
        if not candidates[0] and isinstance(member.get("accounts"), list):
            candidates = [a.get("profileId") for a in member["accounts"] if isinstance(a, dict)]
        found = [str(pid) for pid in candidates if pid and isinstance(pid, str | int)]
        if not found:
            return None
        ids.extend(pid for pid in found if pid not in ids)
    return ids


def _shape(body: Any) -> str:
    """A short description of an answer's shape, without its values (member data is personal)."""
    if not isinstance(body, dict):
        return f"a JSON {type(body).__name__}"
    data = body.get("data", "<none>")
    inner = f"data is a {type(data).__name__}" if data != "<none>" else "no data"
    if isinstance(data, dict):
        inner += " with keys " + ", ".join(sorted(map(str, data))[:8])
    elif isinstance(data, list) and data and isinstance(data[0], dict):
        inner += " of objects with keys " + ", ".join(sorted(map(str, data[0]))[:8])
    return f"keys {', '.join(sorted(map(str, body))[:8])}; {inner}"


class _MaskPhoneQuery:
    """urllib3 logs request URLs at DEBUG; the member lookup's URL holds a phone number, which must be masked."""

    pattern = re.compile(r"(phonenumber=)([^&\s\"]+)")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                self.pattern.sub(lambda m: m.group(1) + mask_phone(m.group(2)), a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_MaskPhoneQuery())
