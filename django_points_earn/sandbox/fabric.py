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
:class:`~django_points_earn.sandbox.response.SandboxResponse`.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .fabric_control import FabricControl
from .fabric_earn import DISCOUNT_VALUE_MODES, DUPLICATE_MESSAGE, DUPLICATE_MODES, VALIDATION_STATUSES, FabricEarn
from .fabric_lookups import MEMBER_ANSWERS, TRANSACTION_ANSWERS, FabricLookups
from .fabric_resources import merchant_ledger
from .fabric_rules import envelope
from .fabric_state import Client, FabricMerchant, Member
from .fabric_tokens import GRANT_STYLES, TOKEN_OUTAGES, TOKEN_PATH, FabricTokens
from .faults import FAULT_KINDS, FaultInjection, Faults, sleeps_when_slow
from .ledger import LedgerQueries
from .response import SandboxResponse, as_bytes

__all__ = [
    "API_PREFIX",
    "DISCOUNT_VALUE_MODES",
    "DUPLICATE_MESSAGE",
    "DUPLICATE_MODES",
    "FAULT_KINDS",
    "GRANT_STYLES",
    "MEMBER_ANSWERS",
    "TOKEN_OUTAGES",
    "TOKEN_PATH",
    "TRANSACTION_ANSWERS",
    "VALIDATION_STATUSES",
    "FabricSandbox",
    "Faults",
    "SandboxResponse",
]

API_PREFIX = "/api"


class FabricSandbox(FabricTokens, FabricEarn, FabricLookups, FabricControl, FaultInjection, LedgerQueries):
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
        self._clients: dict[str, Client] = {}
        self._merchants: dict[str, FabricMerchant] = {}
        for client_id, secret in (clients if clients is not None else {"sandbox-client": "sandbox-secret"}).items():
            self.add_client(client_id, secret, merchant)
        self._merchants.setdefault(merchant, FabricMerchant(merchant))
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
        self._members: dict[str, Member] = {}
        self._next_txn = 1
        self._token_requests = 0
        self._unauthenticated = 0

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
        return route(self, merchant, query, as_bytes(body), sleeps_when_slow())

    # -- the ledger ---------------------------------------------------------------------------------------

    def ledger(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of everything the sandbox counted (never a secret or a token)."""
        with self._state:
            return {
                "merchants": {name: merchant_ledger(m) for name, m in self._merchants.items()},
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

    # -- helpers ------------------------------------------------------------------------------------------

    def _merchant(self, name_or_client: str) -> FabricMerchant:
        if name_or_client in self._merchants:
            return self._merchants[name_or_client]
        if name_or_client in self._clients:
            return self._merchants[self._clients[name_or_client].merchant]
        raise KeyError("no such merchant or client")

    def _selected(self, merchant: str | None) -> list[FabricMerchant]:
        return list(self._merchants.values()) if merchant is None else [self._merchant(merchant)]

    def _new_uuid(self) -> str:
        if self._id_rng is None:
            return str(uuid.uuid4())
        return str(uuid.UUID(int=self._id_rng.getrandbits(128), version=4))


# -- routing ----------------------------------------------------------------------------------------------

_Route = Callable[[FabricSandbox, FabricMerchant, dict[str, str], bytes, bool], SandboxResponse]
_ROUTES: list[tuple[str, str, _Route]] = [
    ("POST", "/v2/earn", FabricSandbox._earn),
    ("POST", "/v2/earn/reverse", FabricSandbox._reverse),
    ("GET", "/v2/earn/get-transaction", FabricSandbox._get_transactions),
    ("GET", "/v1/members", FabricSandbox._get_members),
]


def _match_route(method: str, path: str) -> tuple[_Route | None, list[str]]:
    allowed = [m for m, p, _ in _ROUTES if p == path]
    for route_method, route_path, route in _ROUTES:
        if route_path == path and route_method == method:
            return route, []
    return None, allowed
