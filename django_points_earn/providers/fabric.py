"""fabric Loyalty (docs/platforms/fabric.md): the backend class, its settings and the earn, ``POST /v2/earn``.

The backend is built of one module per job, each a class it inherits: calls with the OAuth bearer token
(:mod:`.fabric_http`), what an answer means (:mod:`.fabric_answers`), the member lookup by phone
(:mod:`.fabric_members`), get-transaction (:mod:`.fabric_transactions`) and refunds (:mod:`.fabric_refunds`).
fabric documents neither its token endpoint nor its error answers, so both are settings (``FabricBackend.defaults``)
and every answer is classified defensively.

Before resending an attempt whose outcome is unknown, ``earn`` asks get-transaction whether the earn exists; if it
does, it is awarded without a second POST.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from ..conf import AccountConfig, setting_path
from ..earning_request import EarningRequest
from . import fabric_payload, fabric_reverse
from .base import AWARDED, DUPLICATE, UNAVAILABLE, EarnResult, http_warnings
from .fabric_answers import answer_fields
from .fabric_http import EARN, token_failure
from .fabric_members import FabricMembers
from .fabric_refunds import FabricRefunds
from .fabric_token import TOKENS, TokenUnavailable
from .fabric_transactions import FabricTransactions

log = logging.getLogger("django_points_earn")

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


class FabricBackend(FabricRefunds, FabricMembers, FabricTransactions):
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
                    **answer_fields(result),
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
