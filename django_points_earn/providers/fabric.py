"""fabric Loyalty: ``POST /v2/earn``, ``GET /v2/earn/get-transaction``, ``GET /v1/members`` (docs/platforms/fabric.md).

Every call carries an OAuth bearer token from the account's client credentials (:mod:`.fabric_token`), refreshed
once on a 401 and the call sent once more. fabric documents neither its token endpoint nor its error answers, so
both are settings (``FabricBackend.defaults``) and every answer is classified defensively.

Before resending an attempt whose outcome is unknown, ``earn`` asks get-transaction whether the earn exists; if it
does, it is awarded without a second POST.
"""

from __future__ import annotations

import logging
import re
import time
from decimal import Decimal, InvalidOperation
from typing import Any

import requests
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Sum

from ..adapters import EarningRequest
from ..conf import AccountConfig, get_settings, setting_path
from ..phones import mask_phone
from . import fabric_payload, fabric_reverse
from .base import (
    AWARDED,
    DUPLICATE,
    FORBIDDEN,
    FULLY_REVERSED,
    RATE_LIMITED,
    REJECTED,
    SKIPPED,
    UNAUTHORIZED,
    UNAVAILABLE,
    BaseBackend,
    EarnResult,
    LookupResult,
    PlatformError,
    cut,
    describe_exception,
    http_warnings,
    parse_retry_after,
    scrub,
)
from .fabric_token import TOKENS, Token, TokenBackoff, TokenUnavailable, cache_key
from .scrubbing import remember_secret
from .transport import read_bounded

log = logging.getLogger("django_points_earn")

EARN = "v2/earn"
GET_TRANSACTION = "v2/earn/get-transaction"
REVERSE = "v2/earn/reverse"
MEMBERS = "v1/members"
# remote_status of an earn found by get-transaction after an attempt whose answer was lost.
FOUND_BY_LOOKUP = "found_by_lookup"
DEFAULT_TOKEN_LIFETIME = 300.0  # seconds, when the token answer has no usable expires_in
# The token endpoint's answers that refuse the credentials (or the request for them): the account is paused for a
# human. Anything else that gives no token (no answer, 5xx, 404, 429, a 200 without one) may pass: retried.
REFUSED_CREDENTIALS = (400, 401, 403)

CHOICES = {
    "GRANT_STYLE": ("basic", "form", "json"),
    "DISCOUNT_VALUE_AS": ("integer", "number"),
    "MISSING_MEMBER": ("rejected", "skipped"),
    "MEMBER_PHONE_FORMAT": ("international", "local", "national", "as-given"),
    "SHIPPING": ("item", "exclude"),
    "PARTIAL_REVERSALS": ("refuse", "pro_rata"),
}


def option_errors(name: str, options: dict[str, Any]) -> list[str]:
    """What is wrong with a fabric account's settings (used by the system checks and the backend alike)."""
    errors = []
    for key, allowed in CHOICES.items():
        if options.get(key) not in allowed:
            errors.append(
                f"{setting_path('ACCOUNTS', name, key)} is {options.get(key)!r}; expected one of {', '.join(allowed)}."
            )
    for key in ("ENTITY_REFERENCE", "TRANSACTION_TYPE"):
        value = options.get(key)
        if value is not None and not 1 <= len(str(value)) <= 100:
            errors.append(f"{setting_path('ACCOUNTS', name, key)} must be 1 to 100 characters.")
    token_url = str(options.get("TOKEN_URL") or "")
    if token_url and not token_url.startswith(("https://", "http://")):
        errors.append(f"{setting_path('ACCOUNTS', name, 'TOKEN_URL')} must be an http(s) URL.")
    return errors


class FabricBackend(BaseBackend):
    provider = "fabric"
    label = "fabric Loyalty"  # the product name: not translated
    # fabric publishes no token endpoint, no duplicate answer and no error bodies for Loyalty: every such point is
    # a setting (docs/platforms/fabric.md). The required ones have no default because they are per tenant.
    defaults = {
        "BASE_URL": None,  # e.g. https://<tenant>-loyalty.fabric.zone/api, from fabric
        "TOKEN_URL": None,  # e.g. https://<tenant>.login.fabric.inc/oauth2/<authServerId>/v1/token
        # "basic": client id/secret in a Basic header, form body (fabric's system-app flow); "form": both in the
        # form body; "json": both in a JSON body.
        "GRANT_STYLE": "basic",
        "SCOPE": "s2s",  # "" or None sends no scope
        "TOKEN_REFRESH_MARGIN": 60,  # seconds before expires_in (at most half the lifetime) to fetch a new one
        "ENTITY_REFERENCE": None,  # entityReference: the store/entity as configured in fabric
        "TRANSACTION_TYPE": None,  # transactionTypeExternalReference of a purchase, as configured in fabric
        # discountValue is typed integer on the earn page: "integer" refuses (locally) a discount with cents;
        # "number" sends it as it is, once fabric has confirmed that decimals are accepted.
        "DISCOUNT_VALUE_AS": "integer",
        # No member with the order's phone: "rejected" (a human looks) or "skipped" (no points, by design).
        "MISSING_MEMBER": "rejected",
        # How the phone is sent to GET /v1/members?phonenumber=: as fabric stored it at enrolment.
        # "international" 9665XXXXXXXX, "local" 05XXXXXXXX, "national" 5XXXXXXXX (Saudi mobiles), or "as-given"
        # (the digits the customer typed, for other countries).
        "MEMBER_PHONE_FORMAT": "international",
        # Shipping has no field in /v2/earn: "item" sends it as one more item (totalAmountPaid is then what the
        # customer paid); "exclude" leaves it out.
        "SHIPPING": "item",
        "SHIPPING_SKU": "SHIPPING",  # the SKU of that shipping item
        "UOM": "unit",  # the items' unit of measure (UOM)
        "FETCH_UPDATED_TOTALS": False,  # fetchUpdatedMemberPointTotals (1 makes fabric compute the balance)
        "SET_TO_PENDING": False,  # setToPending: points stay Pending for the program's pending period
        # fabric documents /v2/earn/reverse as cancelling ALL points of the earn. A partial refund is therefore
        # "refuse"d by default: the reversal is rejected at once with the reason (a human takes the points back in
        # fabric), nothing is sent. "pro_rata" sends the refunded share of the earn's amounts, once fabric has
        # confirmed that partial reversals work for the program; if fabric takes back every point anyway, the
        # earning is recorded as reversed, never as partially reversed.
        "PARTIAL_REVERSALS": "refuse",
        # /v2/earn/reverse limits these two to 3-15 characters (the earn's entity may have up to 100); the entity
        # defaults to ENTITY_REFERENCE. Never cut to fit: manage.py check names the one to set (points_earn.E012).
        "REVERSE_TRANSACTION_TYPE": "RETURN",
        "REVERSE_ENTITY_REFERENCE": None,  # entityReference of a reversal (default: ENTITY_REFERENCE)
        "ISSUE_AUDIT_USER": None,  # issueAuditUser, e.g. "web-shop"
        # fabric does not document its duplicate answer: these are recognised as "this reference exists"
        # (409 always counts).
        "DUPLICATE_STATUS_CODES": (400, 409, 422),
        # words in such an answer's body that mean "exists already"
        "DUPLICATE_MARKERS": ("duplicate", "already exists", "already been", "already processed"),
    }
    required_keys = ("BASE_URL", "TOKEN_URL", "CLIENT_ID", "CLIENT_SECRET", "ENTITY_REFERENCE", "TRANSACTION_TYPE")
    secret_keys = ("CLIENT_SECRET",)
    base_url_carries = "the bearer token"
    supports_refunds = True

    @classmethod
    def check(cls, account: AccountConfig) -> list[Any]:
        from django.core import checks

        errors: list[Any] = [
            checks.Error(m, id="points_earn.E009") for m in option_errors(account.name, account.options)
        ]
        errors += [
            checks.Error(message, hint="Refunds would be refused until it is changed.", id="points_earn.E012")
            for message in fabric_reverse.identity_errors(account.name, account.options)
        ]
        urls = [("BASE_URL", account.base_url, cls.base_url_carries)]
        urls.append(("TOKEN_URL", str(account.option("TOKEN_URL") or ""), "the client secret"))
        return errors + http_warnings(account, urls)

    @classmethod
    def share_state(cls, listener: Any) -> None:
        """The work horse's token events (a new token, a drop, a failure and its back-off) go to its worker."""
        TOKENS.share(listener)

    @classmethod
    def learn_state(cls, event: dict[str, Any]) -> bool:
        if not event.get("key"):
            return False
        TOKENS.apply(event)
        return True

    def __init__(self, account: AccountConfig):
        super().__init__(account)
        problems = option_errors(account.name, account.options)
        if problems:
            raise ImproperlyConfigured(problems[0])

    def auth_headers(self) -> dict[str, str]:
        # Only checks that the credentials are configured (dispatch asks before any call); the bearer token is
        # added per call by _call, which owns its refresh.
        for key in ("TOKEN_URL", "CLIENT_ID"):
            if not self.account.option(key):
                raise ImproperlyConfigured(f"{setting_path('ACCOUNTS', self.account.name, key)} is missing or empty.")
        self.account.secret("CLIENT_SECRET")
        return {}

    def build_payload(self, request: EarningRequest) -> dict[str, Any]:
        return fabric_payload.build(request, self.account)

    # -- earning --------------------------------------------------------------------------------------------
    def earn(self, payload: dict[str, Any], *, request_id: str, outcome_unknown: bool = False) -> EarnResult:
        started = time.monotonic()
        try:
            result = self._earn(payload, request_id, outcome_unknown)
        except TokenUnavailable as exc:
            result = token_failure(exc)
        result.duration_ms = int((time.monotonic() - started) * 1000)
        return result

    def _earn(self, payload: dict[str, Any], request_id: str, outcome_unknown: bool) -> EarnResult:
        body = {k: v for k, v in payload.items() if not k.startswith("_")}
        reference = str(body.get("transactionExternalReference") or "")
        if outcome_unknown:
            # An earlier attempt may have earned: never POST again before asking.
            found = self._find_earn(reference, body.get("profileId"), request_id)
            if found is not None:
                if found.status == AWARDED and not body.get("profileId"):
                    self._keep_profile(found, payload, request_id)
                return found
        update: dict[str, Any] = {}
        if not body.get("profileId"):
            member = self._find_member(payload.get(fabric_payload.MEMBER_PHONE_KEY), request_id)
            if isinstance(member, EarnResult):
                return member
            body["profileId"] = update["profileId"] = member
        response, exc = self._call("POST", EARN, json_body=body, request_id=request_id)
        result = self.classify_earn(response, exc)
        if result.status == DUPLICATE and outcome_unknown:
            # Not there a moment ago, a duplicate now: a late earlier attempt landed meanwhile. Fetch its code.
            found = self._find_earn(reference, body.get("profileId"), request_id)
            if found is not None:
                result = found  # awarded; or why fabric cannot be asked now (retried, looked up first)
            else:
                # Never "duplicate" here: the lifecycle would keep the earning "accepted", awaiting an approved
                # webhook, which only Points sends. Asked again (get-transaction first) until fabric lists it.
                result = EarnResult(
                    UNAVAILABLE,
                    "fabric calls this earn a duplicate (an earlier attempt landed), but get-transaction does not "
                    "list it yet: looked up again before anything is resent",
                    outcome_unknown=True,
                    **_common(result),
                )
        result.payload_update = {**result.payload_update, **update}
        return result

    def _keep_profile(self, found: EarnResult, payload: dict[str, Any], request_id: str) -> None:
        """An earn found by get-transaction after a lost attempt (e.g. a worker killed after the member lookup):
        keep the member's profileId on the record, so that a reversal carries it. From the transaction itself,
        else from a member lookup; if neither can tell now, the reversal looks it up before it is sent."""
        if found.payload_update.get("profileId"):
            return
        member = self._find_member(payload.get(fabric_payload.MEMBER_PHONE_KEY), request_id)
        if isinstance(member, str):
            found.payload_update = {"profileId": member}
        else:
            log.warning("fabric account %s: earn found, member not (%s)", self.account.name, member.message)

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
        said = _int(body.get("status"))
        if said is not None and not 200 <= said < 300:
            # The envelope carries its own status: a refusal wrapped in a 2xx is still a refusal.
            return self._refusal(said, body, None, response, common, what=f"HTTP {code} with body status {said}")
        errors = _field_errors(body)
        if errors:
            return EarnResult(
                UNAVAILABLE,
                f"HTTP {code} but the body carries errors ({_detail(errors, '')}); checked before any resend",
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
            points=_decimal(data.get("points")),
            **common,
        )

    def _refusal(
        self, code: int, body: Any, not_json: str | None, response: requests.Response, common: dict, *, what: str
    ) -> EarnResult:
        message = _message(body)
        errors = _field_errors(body)
        detail = _detail(errors, message) or not_json or "no detail"
        if code == 429:
            return EarnResult(
                RATE_LIMITED, f"fabric is rate-limiting ({what})", retry_after=_retry_after(response), **common
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
        texts = [_message(body)] + [" ".join(v) for v in _field_errors(body).values()]
        haystack = " ".join(texts).lower()
        return any(marker.lower() in haystack for marker in self.account.option("DUPLICATE_MARKERS", ()))

    # -- lookups inside an attempt ----------------------------------------------------------------------------
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
            points=_decimal(earn.get("points")),
            payload_update={"profileId": str(earn["profileId"])} if earn.get("profileId") else {},
            **common,
        )

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
        if code == 404 and not not_json and "member" in _message(body).lower():
            return self._no_member(masked, common)
        if not 200 <= code < 300 or not_json:
            if code in (400, 422):
                detail = _detail(_field_errors(body), _message(body)) or not_json or "no detail"
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

    # -- refunds --------------------------------------------------------------------------------------------
    def refund_body(self, record: Any, reversal: Any, amount: Any = None) -> dict[str, Any]:
        """``amount``: what this refund takes back (``reversals.amount_to_take``: for "the rest", the total less
        the earning's other refunds), never the refund's own empty amount, which would mean the whole order."""
        earn = {**(record.payload or {})}
        if not earn.get("profileId"):  # looked up by snapshot() before the first attempt
            earn["profileId"] = (reversal.remote_before or {}).get("profileId")
        return fabric_reverse.build(
            earn,
            account=self.account,
            amount=amount if amount is not None else reversal.amount,
            total=record.total,
            refund_id=reversal.refund_id,
            reason=reversal.reason or "refund",
        )

    def partial_reversal_refusal(self, amount: Decimal, total: Decimal) -> str:
        """fabric documents /v2/earn/reverse as cancelling all points of the earn: a part is sent only when the
        account says fabric confirmed partial reversals (``PARTIAL_REVERSALS = "pro_rata"``)."""
        if self.account.option("PARTIAL_REVERSALS") == "pro_rata":
            return ""
        setting = setting_path("ACCOUNTS", self.account.name, "PARTIAL_REVERSALS")
        return (
            f"partial refund of {amount} out of {total} not sent: fabric's /v2/earn/reverse takes back every point "
            f"of the earn. Take this refund's points back in fabric by hand and mark it resolved, or set {setting} "
            f'to "pro_rata" once fabric has confirmed that partial reversals work'
        )

    def snapshot(self, record: Any) -> dict[str, Any]:
        """Read before the first reversal attempt: the member's profileId, when the record does not hold it (an
        earn recorded before it was kept). Otherwise nothing: the reversal's own reference is what a later lookup
        searches for. Raises :class:`PlatformError` when the member cannot be found now (retried)."""
        if (record.payload or {}).get("profileId"):
            return {}
        profile = self._profile_for(record, request_id="")
        if isinstance(profile, EarnResult):
            raise PlatformError(f"the earn's fabric member is unknown and {profile.message}", http_status=None)
        return {"profileId": profile}

    def _partial_refusal(self, record: Any, body: dict[str, Any]) -> str:
        """Why this reversal is not sent: settings fabric would refuse, or a partial one not switched on."""
        if problems := fabric_reverse.identity_errors(self.account.name, self.account.options):
            return "reversal not sent: " + " ".join(problems)
        earned = _decimal((getattr(record, "payload", None) or {}).get("totalAmountPaid"))
        asked = _decimal(body.get("totalAmountPaid"))
        if earned is None or asked is None or abs(asked) >= earned:
            return ""
        return self.partial_reversal_refusal(abs(asked), earned)

    def _profile_for(self, record: Any, request_id: str) -> str | EarnResult:
        """The member's profileId by the phone kept on the record (a reversal needs it; fabric requires it)."""
        try:
            member = self._find_member((record.payload or {}).get(fabric_payload.MEMBER_PHONE_KEY), request_id)
        except TokenUnavailable as exc:
            return token_failure(exc)
        if isinstance(member, EarnResult) and member.status == SKIPPED:
            member.status = REJECTED  # no member now: there is nothing to reverse it against
        return member

    def reverse(
        self,
        record: Any,
        body: dict[str, Any],
        *,
        request_id: str,
        before: dict[str, Any] | None,
        outcome_unknown: bool = False,
    ) -> EarnResult:
        """``POST /v2/earn/reverse``; after a lost answer, get-transaction first: a reversal is never sent twice."""
        started = time.monotonic()
        try:
            result = self._reverse(body, request_id, outcome_unknown, record)
        except TokenUnavailable as exc:
            result = token_failure(exc)
        if result.status == AWARDED:
            _mark_if_everything_taken(record, result)
        result.duration_ms = int((time.monotonic() - started) * 1000)
        return result

    def _reverse(self, body: dict[str, Any], request_id: str, outcome_unknown: bool, record: Any = None) -> EarnResult:
        reference = str(body["transactionExternalReference"])
        if outcome_unknown:
            found = self._find_reversal(reference, request_id)
            if found is not None:
                return found
        if refusal := self._partial_refusal(record, body):
            # e.g. a refused partial refund sent again by hand, or one queued before the setting changed
            return EarnResult(REJECTED, refusal)
        if not body.get("profileId"):
            # Never a reversal with profileId null: find the member first (fabric requires the field).
            profile = self._profile_for(record, request_id)
            if isinstance(profile, EarnResult):
                profile.message = f"the earn's fabric member is unknown and {profile.message}; not sent"
                return profile
            body["profileId"] = profile
        response, exc = self._call("POST", REVERSE, json_body=body, request_id=request_id)
        result = self.classify_earn(response, exc)
        if result.status == DUPLICATE:
            found = self._find_reversal(reference, request_id)
            return (
                found
                if found is not None
                else EarnResult(
                    REJECTED, f"fabric calls reversal {reference} a duplicate but cannot find it", **_common(result)
                )
            )
        if result.status == AWARDED and result.points is not None:
            result.points = abs(result.points)
        return result

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
        points = _decimal(found[0].get("points"))
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
            points=_decimal(earn.get("points")),
            body=body,
            http_status=200,
        )

    # -- HTTP with the bearer token ---------------------------------------------------------------------------
    def _call(self, method: str, path: str, *, json_body: Any = None, params: Any = None, request_id: str = ""):
        """One API call with a bearer token; on a 401, one new token and the call once more."""
        key = self._token_key()
        token = self._token(key)
        response, exc, _ = self._send(method, path, token, json_body, params, request_id)
        if response is not None and response.status_code == 401:
            log.info("fabric account %s: access token refused (401); fetching a new one", self.account.name)
            TOKENS.invalidate(key, token)
            token = self._token(key)
            response, exc, _ = self._send(method, path, token, json_body, params, request_id)
        return response, exc

    def _send(self, method: str, path: str, token: Token, json_body: Any, params: Any, request_id: str):
        headers = {"Authorization": f"Bearer {token.value}"}
        return self.send(method, path, json_body=json_body, params=params, request_id=request_id, headers=headers)

    def _token_key(self) -> tuple[str, ...]:
        options = self.account.options
        return cache_key(
            self.account.name,
            str(options.get("TOKEN_URL") or ""),
            str(options.get("CLIENT_ID") or ""),
            self.account.secret("CLIENT_SECRET"),
        )

    def _token(self, key: tuple[str, ...]) -> Token:
        margin = float(self.account.option("TOKEN_REFRESH_MARGIN", 60))
        return TOKENS.get(key, self._fetch_token, margin=margin, backoff=token_backoff)

    def _fetch_token(self) -> tuple[str, float]:
        """Client-credentials grant. Raises :class:`TokenUnavailable` with a message free of secrets."""
        options = self.account.options
        url = str(options.get("TOKEN_URL") or "")
        client_id, secret = str(options.get("CLIENT_ID") or ""), self.account.secret("CLIENT_SECRET")
        form = {"grant_type": "client_credentials"}
        if options.get("SCOPE"):
            form["scope"] = str(options["SCOPE"])
        style = options.get("GRANT_STYLE")
        kwargs: dict[str, Any] = {"headers": {"Accept": "application/json"}, "timeout": self.account.timeout}
        if style == "basic":
            kwargs.update(data=form, auth=(client_id, secret))
        elif style == "json":
            kwargs.update(json={**form, "client_id": client_id, "client_secret": secret})
        else:
            kwargs.update(data={**form, "client_id": client_id, "client_secret": secret})
        where = f"fabric's token endpoint ({url}) for account {self.account.name}"
        try:
            response = self.session().post(url, stream=True, **kwargs)
            read_bounded(response, deadline=time.monotonic() + sum(self.account.timeout))
        except requests.RequestException as exc:
            # Down, slow or cut off: it may pass, so the record waits and is sent again; the account goes on.
            message = f"{where} could not be reached: {describe_exception(exc)[0]}"
            raise TokenUnavailable(message, transient=True) from None
        code = response.status_code
        body, not_json = self.parse_json(response)
        if code in REFUSED_CREDENTIALS:
            raise TokenUnavailable(f"{where} refused the client credentials: HTTP {code} {_oauth_error(body)}", code)
        if not 200 <= code < 300:
            detail = _oauth_error(body) or not_json or ""
            raise TokenUnavailable(f"{where} answered HTTP {code} {detail}".strip(), code, transient=True)
        value = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            # Never quote a 2xx token answer: it may hold a token under another name.
            raise TokenUnavailable(f"{where} answered HTTP {code} without an access_token", code, transient=True)
        remember_secret(value)
        try:
            expires_in = float(body.get("expires_in"))
        except (TypeError, ValueError):
            expires_in = DEFAULT_TOKEN_LIFETIME
        log.info("fabric account %s: new access token, valid for %.0f s", self.account.name, expires_in)
        return value, max(0.0, expires_in)


def _mark_if_everything_taken(record: Any, result: EarnResult) -> None:
    """Never record less than fabric took: a reversal (of any share) that took back every point the earn has left
    reverses the earning (``FULLY_REVERSED``), as fabric documents the call (it cancels all points of the earn)."""
    earned = getattr(record, "points", None)
    if earned is None or result.points is None or not hasattr(record, "reversal_set"):
        return
    before = record.reversal_set.filter(status="reversed").aggregate(s=Sum("points"))["s"] or Decimal(0)
    if before + result.points >= Decimal(earned):
        result.remote_status = FULLY_REVERSED
        result.message = (
            f"{result.message + '; ' if result.message else ''}fabric took back every point of the earn "
            f"({before + result.points} of {earned}): the earning is reversed"
        )


def token_failure(exc: TokenUnavailable) -> EarnResult:
    """What a call that could not get a token means for its record: refused credentials block it and pause the
    account; a failure that may pass is an attempt to retry; a remembered one waits out the back-off without
    using up an attempt (nothing was asked)."""
    if isinstance(exc, TokenBackoff):
        return EarnResult(RATE_LIMITED, message=str(exc), http_status=exc.http_status, retry_after=exc.retry_after)
    if exc.transient:
        return EarnResult(UNAVAILABLE, message=str(exc), http_status=exc.http_status)
    return EarnResult(UNAUTHORIZED, message=str(exc), http_status=exc.http_status)


def token_backoff(count: int) -> float:
    """Seconds the token endpoint is left alone after ``count`` transient failures in a row: the retry policy's
    BASE_DELAY doubled per failure, at most MAX_DELAY and never more than a minute."""
    policy = get_settings().retry
    ceiling = min(60.0, float(policy["MAX_DELAY"]))
    return max(float(policy["MIN_DELAY"]), min(ceiling, float(policy["BASE_DELAY"]) * 2 ** (count - 1)))


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


def _member_ids(body: Any) -> list[str] | None:
    """profileIds in a Get Members answer (one member object or a list; the id on the member or its accounts):
    ``[]`` only for an answer that says "no member" the documented way (``data`` empty), ``None`` for any answer
    we cannot read (no ``data``, errors, a member without a profileId, another shape)."""
    if not isinstance(body, dict) or "data" not in body or _field_errors(body):
        return None
    said = _int(body.get("status"))
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


def _message(body: Any) -> str:
    message = str(body.get("message") or "") if isinstance(body, dict) else ""
    return "" if message == "Exception message" else scrub(message)  # the schema's placeholder says nothing


def _field_errors(body: Any) -> dict[str, list[str]]:
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list):
        errors = {"errors": errors} if errors else {}
    if not isinstance(errors, dict):
        return {}
    return {str(k): [scrub(str(m)) for m in (v if isinstance(v, list) else [v])] for k, v in errors.items()}


def _detail(errors: dict[str, list[str]], message: str) -> str:
    return "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()) or message


def _oauth_error(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    parts = [str(body.get(k)) for k in ("error", "error_description", "message") if body.get(k)]
    return cut(scrub(" - ".join(parts)), 300)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _decimal(value: Any) -> Decimal | None:
    try:
        return None if value is None or isinstance(value, bool) else Decimal(str(value))
    except InvalidOperation:
        return None


def _retry_after(response: requests.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"))


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


def _common(result: EarnResult) -> dict[str, Any]:
    return {"http_status": result.http_status, "body": result.body, "raw_text": result.raw_text}
