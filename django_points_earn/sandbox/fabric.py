"""An in-memory, stateful fake of fabric Loyalty's earn API, with fault injection and a ledger.

It plays the published contract (fabric's Loyalty API reference; its gaps: ``docs/platforms/fabric.md``) and
makes every gap a setting, since fabric does not publish them: the token endpoint (grant style, lifetime), the
status of a validation error (422 or 400, always with an ``errors`` map), the duplicate answer, whether
``discountValue`` must be an integer, partial reversals.
Where the contract is silent the sandbox chooses, and says so: Get Members answers a list for a search (one
object for ``profileId``/``loyaltyNumber``), members belong to the whole sandbox (one club), and an earn needs a
known ``profileId``.

Transport-free like the Points half: :meth:`FabricSandbox.handle` takes a method, a path relative to the fabric
mount (``/api/v2/earn``, ``/oauth2/default/v1/token``), headers and a body, and returns a
:class:`~django_points_earn.sandbox.points.SandboxResponse`.
"""

from __future__ import annotations

import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .fabric_rules import (
    as_bytes,
    basic_credentials,
    credentials_body,
    envelope,
    json_response,
    oauth_error,
    paging,
    parse_object,
    validate_earn,
    validate_reverse,
)
from .ledger import LedgerQueries
from .points import (
    _BAD_GATEWAY_HTML,
    _BEFORE_WORK,
    _SLEEP_WHEN_SLOW,
    FAULT_KINDS,
    Faults,
    SandboxResponse,
)
from .timing import latency_seconds, sleep_out

API_PREFIX = "/api"
TOKEN_PATH = "/oauth2/default/v1/token"  # noqa: S105 - a path, not a password
GRANT_STYLES = ("basic", "form", "json", "any")
DUPLICATE_MODES = ("400", "409", "422", "accept")
VALIDATION_STATUSES = (400, 422)
DISCOUNT_VALUE_MODES = ("integer", "number")
TOKEN_OUTAGES = ("500", "html", "reset", "slow")
# How get-transaction answers: "exact" (its filters applied, as documented); "unfiltered" (every transaction of the
# program, whatever the query asked); "unfiltered-bare" (the same, the items without transactionExternalReference
# and transactionCode): a server a client must not believe blindly.
TRANSACTION_ANSWERS = ("exact", "unfiltered", "unfiltered-bare")
# How Get Members answers a phone search: "documented" ({data: [members]}), or "unrecognised" (a shape the client
# does not know: {data: {content: [...], totalElements: n}} whose members carry no profileId).
MEMBER_ANSWERS = ("documented", "unrecognised")
DUPLICATE_MESSAGE = "Duplicate transaction: transactionExternalReference already exists."


@dataclass
class _Client:
    secret: str = field(repr=False)
    merchant: str
    active: bool = True


@dataclass
class _Member:
    profile_id: str
    loyalty_number: str
    phone: str
    first_name: str
    last_name: str
    email: str
    points: int = 0


@dataclass
class _Txn:
    code: str
    number: str
    merchant: str
    type: str  # EARN or EARN_REVERSE
    reference: str
    profile_id: str
    activity_timestamp: str
    created_at: datetime
    points: int
    gross: Decimal
    paid: Decimal
    tax: Decimal
    net: Decimal
    discount: Decimal
    status: str  # ACTIVE or PENDING
    data: dict[str, Any]
    reverses: str = ""  # EARN_REVERSE: the reference of the earn it reverses
    reversed_points: int = 0  # EARN: points taken back by reversals so far


class _Merchant:
    """A fabric tenant/program, reached by one or more API clients."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.in_flight = 0  # not reset by clear(): calls may be running
        self.clear()

    def clear(self) -> None:
        self.earns: dict[str, list[_Txn]] = {}  # transactionExternalReference -> every EARN, oldest first
        self.transactions: list[_Txn] = []  # every transaction, earns and reversals
        self.calls = 0
        self.overlaps = 0
        self.max_concurrency = 0
        self.responses: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.lookups = 0
        self.member_lookups = 0
        self.reverse_calls = 0
        self.unauthorized = 0
        self.token_requests = 0
        self.tokens_issued = 0
        self.token_refusals = 0


class FabricSandbox(LedgerQueries):
    """A thread-safe fake of fabric Loyalty for one or more programs (merchants), each reached by API clients.

    ``clients`` maps a client id to its secret, all of them for ``merchant``; :meth:`add_client` adds others.
    ``token_lifetime`` is the ``expires_in`` of every token (seconds); :meth:`expire_tokens` ends them all now.
    ``grant_style`` is how the token endpoint wants the credentials: ``"basic"`` (Basic header, form body, as in
    fabric's system-app flow), ``"form"``, ``"json"`` or ``"any"``. ``scope`` is the scope it requires (None: any).
    ``validation_status`` (422 or 400) answers a body that breaks a rule, with an ``errors`` map.
    ``duplicate_mode`` answers a repeated ``transactionExternalReference`` (with ``checkForDuplicateTransaction``
    1): ``"400"``, ``"409"``, ``"422"``, or ``"accept"`` (no dedupe: it earns again, so tests can prove the
    client never sends twice). ``discount_value_as="integer"`` refuses a ``discountValue`` with cents, as the
    earn page types it. ``partial_reversals`` lets ``/v2/earn/reverse`` take back part of an earn, pro rata.
    """

    def __init__(
        self,
        clients: dict[str, str] | None = None,
        *,
        merchant: str = "sandbox",
        token_lifetime: float = 600,
        grant_style: str = "basic",
        scope: str | None = "s2s",
        validation_status: int = 422,
        duplicate_mode: str = "400",
        discount_value_as: str = "integer",
        points_per_unit: float = 0.1,
        partial_reversals: bool = False,
        seed: int | None = None,
    ) -> None:
        if grant_style not in GRANT_STYLES:
            raise ValueError(f"grant_style must be one of {', '.join(GRANT_STYLES)}, not {grant_style!r}")
        if int(validation_status) not in VALIDATION_STATUSES:
            raise ValueError(f"validation_status must be 400 or 422, not {validation_status!r}")
        if str(duplicate_mode) not in DUPLICATE_MODES:
            raise ValueError(f"duplicate_mode must be one of {', '.join(DUPLICATE_MODES)}, not {duplicate_mode!r}")
        if discount_value_as not in DISCOUNT_VALUE_MODES:
            raise ValueError(f"discount_value_as must be 'integer' or 'number', not {discount_value_as!r}")
        if token_lifetime < 0:
            raise ValueError("token_lifetime cannot be negative")
        self._state = threading.RLock()  # guards everything below; never held while sleeping
        self._clients: dict[str, _Client] = {}
        self._merchants: dict[str, _Merchant] = {}
        for client_id, secret in (clients if clients is not None else {"sandbox-client": "sandbox-secret"}).items():
            self.add_client(client_id, secret, merchant)
        self._merchants.setdefault(merchant, _Merchant(merchant))
        self.token_lifetime = float(token_lifetime)
        self.grant_style = grant_style
        self.scope = scope
        self.validation_status = int(validation_status)
        self.duplicate_mode = str(duplicate_mode)
        self.discount_value_as = discount_value_as
        self.points_per_unit = Decimal(str(points_per_unit))
        self.partial_reversals = partial_reversals
        self._rng = random.Random(seed)
        self._id_rng = random.Random(seed) if seed is not None else None
        self._faults = Faults()
        self._script: deque[str | None] = deque()
        self._token_outage: str | None = None
        self.transactions_answer = "exact"
        self.members_answer = "documented"
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (client id, monotonic expiry)
        self._members: dict[str, _Member] = {}
        self._next_txn = 1
        self._token_requests = 0
        self._unauthenticated = 0

    # -- configuration ------------------------------------------------------------------------------------

    def add_client(self, client_id: str, secret: str, merchant: str = "sandbox") -> None:
        """Let ``client_id``/``secret`` get tokens for ``merchant`` (created if new)."""
        if not client_id or not secret:
            raise ValueError("a client id and secret cannot be empty")
        with self._state:
            self._merchants.setdefault(merchant, _Merchant(merchant))
            self._clients[client_id] = _Client(secret, merchant)

    def revoke_client(self, client_id: str) -> None:
        """The client's credentials are refused from now on, and its tokens stop working."""
        with self._state:
            self._clients[client_id].active = False

    def expire_tokens(self) -> int:
        """Every token issued so far is expired now (the next call with one gets 401). Returns how many."""
        with self._state:
            now = time.monotonic()
            live = [token for token, (_, expiry) in self._tokens.items() if expiry > now]
            for token in live:  # kept, so a call with one is still counted against its merchant
                self._tokens[token] = (self._tokens[token][0], now)
            return len(live)

    def set_token_outage(self, kind: str | None) -> None:
        """The token endpoint fails until called with None: ``"500"``, ``"html"`` (a 502 page), ``"reset"``, or
        ``"slow"`` (accepts the connection and answers only after ``faults.slow_seconds``: a client times out)."""
        if kind is not None and kind not in TOKEN_OUTAGES:
            raise ValueError(f"token outage must be None, {', '.join(map(repr, TOKEN_OUTAGES))}, not {kind!r}")
        with self._state:
            self._token_outage = kind

    def set_quirks(self, *, transactions: str | None = None, members: str | None = None) -> None:
        """Answer get-transaction (:data:`TRANSACTION_ANSWERS`) or Get Members (:data:`MEMBER_ANSWERS`) another way."""
        if transactions is not None and transactions not in TRANSACTION_ANSWERS:
            raise ValueError(f"transactions must be one of {', '.join(TRANSACTION_ANSWERS)}, not {transactions!r}")
        if members is not None and members not in MEMBER_ANSWERS:
            raise ValueError(f"members must be one of {', '.join(MEMBER_ANSWERS)}, not {members!r}")
        with self._state:
            self.transactions_answer = transactions or self.transactions_answer
            self.members_answer = members or self.members_answer

    def add_member(
        self,
        phone: str,
        *,
        profile_id: str | None = None,
        first_name: str = "Sandbox",
        last_name: str = "Member",
        email: str | None = None,
    ) -> str:
        """Enrol a member with ``phone`` (digits only, as fabric stores it); returns the profileId."""
        phone = str(phone)
        if not re.fullmatch(r"[0-9]{1,16}", phone):
            raise ValueError("a member's phone is 1 to 16 digits, no spaces or signs")
        with self._state:
            profile_id = profile_id or self._new_uuid()
            number = str(10_000_000_000 + len(self._members) + 1)
            self._members[profile_id] = _Member(
                profile_id, number, phone, first_name, last_name, email or f"member{number}@example.com"
            )
            return profile_id

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults | None = None, /, **kw: Any) -> Faults:
        """Replace the random fault configuration of earn calls (same kinds and rates as the Points half)."""
        new = replace(faults, **kw) if faults is not None else Faults(**kw)
        with self._state:
            self._faults = new
        return new

    def script(self, *kinds: str | None) -> None:
        """Queue faults for the next earn calls, one each, before any random ones (``"ok"`` lets one through)."""
        for kind in kinds:
            if kind not in (*FAULT_KINDS, "ok", None):
                raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)} or 'ok'")
        with self._state:
            self._script.extend(None if kind == "ok" else kind for kind in kinds)

    def reset(self, *, faults: bool = False) -> None:
        """Forget transactions, counters, tokens and the fault script. Clients and members stay; so do the random
        fault rates unless ``faults=True``."""
        with self._state:
            for merchant in self._merchants.values():
                merchant.clear()
            self._tokens.clear()
            self._script.clear()
            self._token_outage = None
            self.transactions_answer, self.members_answer = "exact", "documented"
            self._token_requests = self._unauthenticated = 0
            if faults:
                self._faults = Faults()

    # -- transport entry points ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes | str | None) -> SandboxResponse:
        """One call under the fabric mount: the token endpoint or ``/api/...``."""
        bare = urlsplit(path).path.rstrip("/")
        if bare == TOKEN_PATH:
            return self.handle_token(method, path, headers, body)
        if bare == API_PREFIX or bare.startswith(API_PREFIX + "/"):
            return self.handle_api(method, path[len(API_PREFIX) :] or "/", headers, body)
        return envelope(404, "Not Found")

    def handle_token(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | str | None
    ) -> SandboxResponse:
        """``POST`` client credentials, get a bearer token (``token_type``, ``expires_in``, ``access_token``)."""
        if method.upper() != "POST":
            return oauth_error(405, "invalid_request", "use POST")
        with self._state:
            self._token_requests += 1
            outage = self._token_outage
        if outage == "reset":
            return SandboxResponse(0, {}, b"", fault="reset")
        if outage == "slow":
            if _SLEEP_WHEN_SLOW.get():
                time.sleep(self._faults.slow_seconds)
            return replace(oauth_error(503, "temporarily_unavailable", "too slow"), fault="timeout")
        if outage == "html":
            return SandboxResponse(502, {"Content-Type": "text/html"}, _BAD_GATEWAY_HTML)
        if outage == "500":
            return oauth_error(500, "server_error", "the authorization server is unavailable")
        lowered = {k.lower(): v for k, v in headers.items()}
        fields, style = credentials_body(lowered.get("content-type", ""), as_bytes(body))
        basic = basic_credentials(lowered.get("authorization", ""))
        if basic is not None:
            style = "basic"
        if self.grant_style != "any" and style != self.grant_style:
            return oauth_error(400, "invalid_request", f"send the client credentials the {self.grant_style!r} way")
        client_id, secret = basic or (str(fields.get("client_id") or ""), str(fields.get("client_secret") or ""))
        with self._state:
            client = self._clients.get(client_id)
            merchant = self._merchants[client.merchant] if client is not None else None
            if merchant is not None:
                merchant.token_requests += 1
            if client is None or not client.active or not secrets.compare_digest(client.secret, secret):
                if merchant is not None:
                    merchant.token_refusals += 1
                return oauth_error(401, "invalid_client", "Client authentication failed.")
            if fields.get("grant_type") != "client_credentials":
                merchant.token_refusals += 1
                return oauth_error(400, "unsupported_grant_type", "grant_type must be client_credentials")
            if self.scope is not None and fields.get("scope") != self.scope:
                merchant.token_refusals += 1
                return oauth_error(400, "invalid_scope", f"the scope must be {self.scope}")
            token = secrets.token_urlsafe(32)
            self._tokens[token] = (client_id, time.monotonic() + self.token_lifetime)
            merchant.tokens_issued += 1
        answer = {"token_type": "Bearer", "expires_in": int(self.token_lifetime), "access_token": token}
        if self.scope is not None:
            answer["scope"] = self.scope
        return json_response(200, answer)

    def handle_api(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | str | None
    ) -> SandboxResponse:
        """One API call; ``path`` is relative to the base URL (``/v2/earn``)."""
        bare = urlsplit(path).path.rstrip("/") or "/"
        route, allowed = _match_route(method.upper(), bare)
        if route is None:
            return envelope(405, "Method Not Allowed") if allowed else envelope(404, "Not Found")
        lowered = {k.lower(): v for k, v in headers.items()}
        merchant, why = self._authenticate(lowered.get("authorization", ""))
        if merchant is None:
            return envelope(401, "Unauthorized", {"token": [why]})
        query = {k: v[-1] for k, v in parse_qs(urlsplit(path).query, keep_blank_values=True).items()}
        return route(self, merchant, query, as_bytes(body), _SLEEP_WHEN_SLOW.get())

    def _authenticate(self, authorization: str) -> tuple[_Merchant | None, str]:
        scheme, _, token = authorization.partition(" ")
        with self._state:
            if scheme.lower() != "bearer" or not token.strip():
                self._unauthenticated += 1
                return None, "Authentication credentials were not provided."
            entry = self._tokens.get(token.strip())
            client = self._clients.get(entry[0]) if entry else None
            if entry is None or client is None:
                self._unauthenticated += 1
                return None, "Token is invalid or expired."
            merchant = self._merchants[client.merchant]
            if not client.active or time.monotonic() >= entry[1]:
                merchant.unauthorized += 1
                return None, "Token is invalid or expired."
            return merchant, ""

    # -- POST /v2/earn ------------------------------------------------------------------------------------

    def _earn(self, m: _Merchant, query: dict[str, str], body: bytes, simulate_slow: bool) -> SandboxResponse:
        with self._state:
            m.calls += 1
            m.in_flight += 1
            if m.in_flight > 1:
                m.overlaps += 1  # fabric does not refuse overlapping calls; the ledger still counts them
            m.max_concurrency = max(m.max_concurrency, m.in_flight)
        response: SandboxResponse | None = None
        try:
            response = self._earn_call(m, body, simulate_slow)
            return response
        finally:
            with self._state:
                m.in_flight -= 1
                if response is not None:
                    m.responses[response.fault or str(response.status)] += 1

    def _earn_call(self, m: _Merchant, body: bytes, simulate_slow: bool) -> SandboxResponse:
        data, bad = parse_object(body)
        if bad is not None:
            return bad
        errors, clean = validate_earn(data, self.discount_value_as)
        with self._state:
            if not errors and clean["profileId"] not in self._members:
                errors["profileId"] = ["Member not found."]
        if errors:
            return self._invalid(errors)
        fault = self._next_fault()
        if fault is not None:
            with self._state:
                m.faults[fault] += 1
        if fault in _BEFORE_WORK:
            self._sleep_latency()
            return _fault_response(fault)
        response = self._record(m, clean, "EARN")
        self._sleep_latency()  # the work is done within the round trip
        if fault == "created_500":
            return envelope(500, "Internal Server Error")
        if fault == "truncated":
            return replace(response, body=response.body[: len(response.body) // 2])
        if fault == "slow":
            if simulate_slow:
                time.sleep(self._faults.slow_seconds)
            return replace(response, fault="timeout")
        return response

    def _record(self, m: _Merchant, clean: dict[str, Any], kind: str, original: _Txn | None = None) -> SandboxResponse:
        reference = clean["transactionExternalReference"]
        with self._state:
            taken = any(t.reference == reference for t in m.transactions)
            if taken and clean["checkForDuplicateTransaction"] == 1 and self.duplicate_mode != "accept":
                status = int(self.duplicate_mode)
                return envelope(status, DUPLICATE_MESSAGE, {"transactionExternalReference": [DUPLICATE_MESSAGE]})
            if original is not None:
                points = self._reversal_points(original, clean)
                if points is None:
                    return self._invalid({"reverseTransactionExternalRef": ["This earn is already fully reversed."]})
            else:
                points = int((clean["netAmount"] * self.points_per_unit).quantize(Decimal(1), ROUND_HALF_UP))
            txn = _Txn(
                code=self._new_uuid(),
                number=f"LOYALTY-{self._next_txn:06d}",
                merchant=m.name,
                type=kind,
                reference=reference,
                profile_id=clean["profileId"],
                activity_timestamp=clean["activityTimestamp"],
                created_at=datetime.now(UTC),
                points=points,
                gross=clean["transactionGrossAmount"],
                paid=clean["totalAmountPaid"],
                tax=clean["totalTax"],
                net=clean["netAmount"],
                discount=clean["discountValue"],
                status="PENDING" if clean.get("setToPending") else "ACTIVE",
                data=clean["raw"],
                reverses=original.reference if original is not None else "",
            )
            self._next_txn += 1
            m.transactions.append(txn)
            if original is None:
                m.earns.setdefault(reference, []).append(txn)
            else:
                original.reversed_points -= points  # points is negative
            member = self._members[txn.profile_id]
            member.points += points
            resource = _txn_resource(txn)
            if clean["fetchUpdatedMemberPointTotals"] == 1:
                resource["currentPointsBalance"] = member.points
            message = "earned" if original is None else "earn reversed"
        return envelope(201, message, data=resource)

    # -- POST /v2/earn/reverse ----------------------------------------------------------------------------

    def _reverse(self, m: _Merchant, query: dict[str, str], body: bytes, simulate_slow: bool) -> SandboxResponse:
        with self._state:
            m.reverse_calls += 1
        data, bad = parse_object(body)
        if bad is not None:
            return bad
        errors, clean = validate_reverse(data)
        if errors:
            return self._invalid(errors)
        with self._state:
            originals = [
                t for t in m.earns.get(clean["reverseTransactionExternalRef"], []) if t.profile_id == clean["profileId"]
            ]
            if not originals:
                return self._invalid({"reverseTransactionExternalRef": ["No earn transaction with this reference."]})
            return self._record(m, clean, "EARN_REVERSE", original=originals[0])

    def _reversal_points(self, original: _Txn, clean: dict[str, Any]) -> int | None:
        """Negative points to take back, or None when nothing is left (the docs: a reversal cancels it all)."""
        left = original.points - original.reversed_points
        if left <= 0 or (original.reversed_points and not self.partial_reversals):
            return None
        if not self.partial_reversals or original.net <= 0:
            return -left
        share = Decimal(original.points) * abs(clean["netAmount"]) / original.net
        return -min(left, int(share.quantize(Decimal(1), ROUND_HALF_UP)))

    # -- GET /v2/earn/get-transaction and GET /v1/members ------------------------------------------------

    def _get_transactions(
        self, m: _Merchant, query: dict[str, str], body: bytes, simulate_slow: bool
    ) -> SandboxResponse:
        with self._state:
            m.lookups += 1
        errors: dict[str, list[str]] = {}
        offset, limit = paging(query, errors)
        kind = query.get("transactionType")
        if kind is not None and kind not in _TRANSACTION_TYPES:
            errors["transactionType"] = [f'"{kind}" is not a valid choice.']
        if errors:
            return envelope(400, "Bad Request", errors)
        filters = {
            "reference": query.get("transactionExternalReference"),
            "code": query.get("transactionCode"),
            "profile_id": query.get("profileId"),
            "type": kind,
        }
        start, end = query.get("startTimestampUTC"), query.get("endTimestampUTC")
        with self._state:
            quirk = self.transactions_answer
            found = [
                t
                for t in m.transactions
                if quirk != "exact"
                or (
                    all(v is None or getattr(t, k) == v for k, v in filters.items())
                    and (start is None or t.activity_timestamp >= start)
                    and (end is None or t.activity_timestamp <= end)
                )
            ]
            page = [_txn_resource(t) for t in found[offset : offset + limit]]
        if quirk == "unfiltered-bare":
            for item in page:
                del item["transactionExternalReference"], item["transactionCode"]
        return envelope(200, "Success", data=page)

    def _get_members(self, m: _Merchant, query: dict[str, str], body: bytes, simulate_slow: bool) -> SandboxResponse:
        with self._state:
            m.member_lookups += 1
        errors: dict[str, list[str]] = {}
        offset, limit = paging(query, errors)
        phone = query.get("phonenumber")
        if phone is not None and not re.fullmatch(r"[0-9]{1,16}", phone):
            errors["phonenumber"] = ["Digits only, no spaces or dashes."]
        if errors:
            return envelope(400, "Bad Request", errors)
        with self._state:
            members = list(self._members.values())
            if "profileId" in query or "loyaltyNumber" in query:  # documented: one member, not a list
                for member in members:
                    if (
                        query.get("profileId", member.profile_id) == member.profile_id
                        and query.get("loyaltyNumber", member.loyalty_number) == member.loyalty_number
                    ):
                        return envelope(200, "Success", data=_member_resource(member))
                return envelope(404, "Member not found")
            found = [
                member
                for member in members
                if (phone is None or member.phone == phone)
                and ("email" not in query or member.email.lower() == query["email"].lower())
            ]
            page = [_member_resource(member) for member in found[offset : offset + limit]]
            quirk = self.members_answer
        if quirk == "unrecognised":
            content = [{"id": item["loyaltyNumber"], "name": item["firstName"]} for item in page]
            return envelope(200, "Success", data={"content": content, "totalElements": len(content)})
        return envelope(200, "Success", data=page)

    # -- the ledger ---------------------------------------------------------------------------------------

    def ledger(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of everything the sandbox counted (never a secret or a token)."""
        with self._state:
            return {
                "merchants": {name: _merchant_ledger(m) for name, m in self._merchants.items()},
                "members": len(self._members),
                "token_requests": self._token_requests,
                "tokens_live": sum(1 for _, expiry in self._tokens.values() if time.monotonic() < expiry),
                "unauthenticated": self._unauthenticated,
                "fault_config": asdict(self._faults),
                "script": ["ok" if kind is None else kind for kind in self._script],
                "token_outage": self._token_outage,
                "transactions_answer": self.transactions_answer,
                "members_answer": self.members_answer,
                "duplicate_mode": self.duplicate_mode,
                "validation_status": self.validation_status,
                "discount_value_as": self.discount_value_as,
                "grant_style": self.grant_style,
                "token_lifetime": self.token_lifetime,
            }

    def _credits(self, merchant: Any) -> dict[str, list[Any]]:
        return merchant.earns

    def token_requests(self, merchant: str | None = None) -> int:
        """Calls to the token endpoint (of one merchant's clients, or all, unknown clients included)."""
        with self._state:
            if merchant is None:
                return self._token_requests
            return self._merchant(merchant).token_requests

    # -- control (the HTTP server's /__sandbox__/fabric endpoints) ----------------------------------------

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

    # -- helpers ------------------------------------------------------------------------------------------

    def _invalid(self, errors: dict[str, list[str]]) -> SandboxResponse:
        return envelope(self.validation_status, next(iter(errors.values()))[0], errors)

    def _merchant(self, name_or_client: str) -> _Merchant:
        if name_or_client in self._merchants:
            return self._merchants[name_or_client]
        if name_or_client in self._clients:
            return self._merchants[self._clients[name_or_client].merchant]
        raise KeyError("no such merchant or client")

    def _selected(self, merchant: str | None) -> list[_Merchant]:
        return list(self._merchants.values()) if merchant is None else [self._merchant(merchant)]

    def _next_fault(self) -> str | None:
        with self._state:
            if self._script:
                return self._script.popleft()
            roll = self._rng.random()
            for kind, rate in self._faults.rates():
                if roll < rate:
                    return kind
                roll -= rate
            return None

    def _sleep_latency(self) -> None:
        with self._state:
            seconds = latency_seconds(self._faults.latency_ms, self._faults.latency_jitter_ms, self._rng)
        sleep_out(seconds)

    def _new_uuid(self) -> str:
        if self._id_rng is None:
            return str(uuid.uuid4())
        return str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))


# -- routing ----------------------------------------------------------------------------------------------

_Route = Callable[[FabricSandbox, _Merchant, dict[str, str], bytes, bool], SandboxResponse]
_ROUTES: list[tuple[str, str, _Route]] = [
    ("POST", "/v2/earn", FabricSandbox._earn),
    ("POST", "/v2/earn/reverse", FabricSandbox._reverse),
    ("GET", "/v2/earn/get-transaction", FabricSandbox._get_transactions),
    ("GET", "/v1/members", FabricSandbox._get_members),
]
_TRANSACTION_TYPES = (
    "EARN",
    "BURN",
    "EXPIRY",
    "EARN_REVERSE",
    "BURN_REVERSE",
    "ADJUSTMENT",
    "DEDUCT",
    "TRANSFER",
    "MERGE",
    "FORFEITED",
    "CONVERT",
    "UNMERGE",
)


def _match_route(method: str, path: str) -> tuple[_Route | None, list[str]]:
    allowed = [m for m, p, _ in _ROUTES if p == path]
    for route_method, route_path, route in _ROUTES:
        if route_path == path and route_method == method:
            return route, []
    return None, allowed


def _fault_response(kind: str) -> SandboxResponse:
    if kind == "429":
        return envelope(429, "Too Many Requests")
    if kind == "html":
        return SandboxResponse(502, {"Content-Type": "text/html"}, _BAD_GATEWAY_HTML)
    if kind == "reset":
        return SandboxResponse(0, {}, b"", fault="reset")
    return envelope(500, "Internal Server Error")


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _iso(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds")  # fabric's shape: no zone, UTC


def _txn_resource(t: _Txn) -> dict[str, Any]:
    stamp = datetime.strptime(t.activity_timestamp, "%Y-%m-%d %H:%M:%S")
    return {
        "transactionCode": t.code,
        "transactionType": t.type,
        "transactionExternalReference": t.reference,
        "transactionNumber": t.number,
        "profileId": t.profile_id,
        "status": t.status,
        "transactionDateTime": _iso(t.created_at),
        "activityTimestamp": _iso(stamp),
        "transactionGrossAmount": _number(t.gross),
        "totalAmountPaid": _number(t.paid),
        "totalTax": _number(t.tax),
        "transactionNetAmount": _number(t.net),
        "discountValue": _number(t.discount),
        "points": t.points,
        "basePoints": t.points,
        "bonusPoints": 0,
        "promotionalPoints": 0,
        "reverseTransactionExternalRef": t.reverses or None,
        "discounts": t.data.get("discounts") or [],
        "transactionItems": t.data.get("transactionItems") or [],
    }


def _member_resource(member: _Member) -> dict[str, Any]:
    account = {
        "profileId": member.profile_id,
        "loyaltyNumber": member.loyalty_number,
        "accountStatus": "Enabled",
        "enrollmentStatus": True,
        "tierExternalReference": "GLD",
    }
    return {
        "profileId": member.profile_id,
        "loyaltyNumber": member.loyalty_number,
        "firstName": member.first_name,
        "lastName": member.last_name,
        "emailAddress": member.email,
        "phoneNumber": member.phone,
        "accounts": [account],
    }


def _merchant_ledger(m: _Merchant) -> dict[str, Any]:
    orders = {}
    for reference, earns in m.earns.items():
        first = earns[0]
        reversed_points = sum(t.reversed_points for t in earns)
        orders[reference] = {
            "awards": len(earns),
            "transactionCode": first.code,
            "transactionCodes": [t.code for t in earns],
            "profileId": first.profile_id,
            "points": first.points,
            "points_awarded": sum(t.points for t in earns),
            "reversed_points": reversed_points,
            "status": "REVERSED"
            if reversed_points and reversed_points >= first.points
            else "PARTIALLY_REVERSED"
            if reversed_points
            else first.status,
            "gross": float(first.gross),
            "paid": float(first.paid),
            "net": float(first.net),
            "tax": float(first.tax),
        }
    reversals = [t for t in m.transactions if t.type == "EARN_REVERSE"]
    return {
        "calls": m.calls,
        "overlaps": m.overlaps,
        "max_concurrency": m.max_concurrency,
        "in_flight": m.in_flight,
        "responses": dict(m.responses),
        "faults": dict(m.faults),
        "awards": sum(len(earns) for earns in m.earns.values()),
        "points_awarded": sum(t.points for earns in m.earns.values() for t in earns),
        "points_reversed": -sum(t.points for t in reversals),
        "lookups": m.lookups,
        "member_lookups": m.member_lookups,
        "reverse_calls": m.reverse_calls,
        "unauthorized": m.unauthorized,
        "token_requests": m.token_requests,
        "tokens_issued": m.tokens_issued,
        "token_refusals": m.token_refusals,
        "orders": orders,
        "reversals": [
            {"reference": t.reference, "reverses": t.reverses, "transactionCode": t.code, "points": t.points}
            for t in reversals
        ],
    }
