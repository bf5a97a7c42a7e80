"""An in-memory, stateful fake of the Points (papp.sa) earning API, with fault injection and a ledger.

It plays the published contract (Points' API docs; their gaps: ``docs/platforms/points.md``), not any particular
client's habits: Laravel-style
validation, HTTP 400 for auth failures, the per-merchant lock that answers 429, duplicate ``order_number``
rejection (the code is configurable because the docs do not give it), pending customers, lookups and refunds.
Tests assert on its ledger: how many times each ``order_number`` was credited and whether calls overlapped.

Transport-free: :meth:`PointsSandbox.handle` takes a method, a path relative to ``/api/v1``, headers and a
body, and returns a :class:`SandboxResponse`. ``server.py`` serves it over real HTTP and ``responses_mock.py``
plugs it into ``responses``.
"""

from __future__ import annotations

import random
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from .faults import FAULT_KINDS, SCRIPT_ONLY_KINDS, FaultInjection, Faults, raising_timeouts, sleeps_when_slow
from .ledger import LedgerQueries
from .points_control import PointsControl
from .points_orders import PointsOrders
from .points_pending import PointsPending
from .points_ratings import PointsRatings
from .points_refunds import PointsRefunds
from .points_resources import merchant_ledger
from .points_rules import normalize_phone
from .points_state import ApiKey, Order, PointsMerchant, utc_now
from .points_webhooks import PointsWebhooks
from .points_wire import (
    DUPLICATE,
    FORBIDDEN,
    INVALID_KEY,
    INVALID_PHONE,
    LOCK_BUSY,
    MISSING_KEY,
    ORDER_NOT_FOUND,
    TAKEN,
    UNEXPECTED_400,
    error,
)
from .response import SandboxResponse, as_bytes

__all__ = [
    "DUPLICATE",
    "DUPLICATE_MODES",
    "FAULT_KINDS",
    "FORBIDDEN",
    "INVALID_KEY",
    "INVALID_PHONE",
    "LOCK_BUSY",
    "MISSING_KEY",
    "ORDER_NOT_FOUND",
    "SCRIPT_ONLY_KINDS",
    "TAKEN",
    "UNEXPECTED_400",
    "Faults",
    "PointsSandbox",
    "SandboxResponse",
    "normalize_phone",
    "raising_timeouts",
]

DUPLICATE_MODES = ("422", "400", "409", "replay", "accept")

# The sandbox's clock. Every timestamp of the Points half is read through PointsSandbox._clock(), which looks this
# name up at call time, so a test can move the clock by patching ``points._now``.
_now = utc_now


class PointsSandbox(
    PointsOrders,
    PointsRatings,
    PointsRefunds,
    PointsPending,
    PointsWebhooks,
    PointsControl,
    FaultInjection,
    LedgerQueries,
):
    """A thread-safe fake Points platform for one or more merchants (one per private API key).

    ``api_keys`` maps a private key to a merchant name; several keys may share a merchant (key rotation).
    ``pending_phones`` answer with the pending-customer shape (§2.4) until :meth:`activate`.
    ``duplicate_mode`` picks what a repeated ``order_number`` gets once the lock is free (undocumented):
    ``"422"``, ``"400"``, ``"409"``, ``"replay"`` (200 with the existing order) or ``"accept"`` (no dedupe:
    a platform that awards again, so tests can prove the client never sends twice).
    ``cancel_approved`` plays the other reading of the docs (cancel of an approved earning order succeeds);
    ``refund_window_days`` makes refunds of older orders answer 400.
    ``refund_without_amount`` picks what a refund with no ``amount`` takes: ``"remaining"`` (what is left) or
    ``"captured"`` (the spec's words, "the full captured amount": more than is left after a partial refund, 400).
    """

    SCRIPT_KINDS = (*FAULT_KINDS, *SCRIPT_ONLY_KINDS)

    def __init__(
        self,
        api_keys: dict[str, str] | None = None,
        *,
        pending_phones: tuple[str, ...] | list[str] = ("500000003",),
        duplicate_mode: str = "422",
        points_per_sar: float = 10,
        seed: int | None = None,
        cancel_approved: bool = False,
        refund_window_days: float | None = None,
        refund_without_amount: str = "remaining",
        approve_pending_after: float | None = None,
    ) -> None:
        self._state = threading.RLock()  # guards everything below; never held while sleeping
        self._keys: dict[str, ApiKey] = {}
        self._merchants: dict[str, PointsMerchant] = {}
        for key, name in (api_keys if api_keys is not None else {"sandbox-key": "sandbox"}).items():
            self.add_merchant(key, name)
        self.pending_phones: set[str] = set()
        for phone in pending_phones:
            self.mark_pending(phone)
        self.duplicate_mode = duplicate_mode
        self.points_per_sar = Decimal(str(points_per_sar))
        self.cancel_approved = cancel_approved
        self.refund_window_days = refund_window_days
        self.refund_without_amount = refund_without_amount
        # Seconds after which a pending customer's earning is approved as if they had activated (None: only on
        # activate()); approve_due_pending() applies it, the HTTP sandbox's webhook pusher calls it every tick.
        self.approve_pending_after = approve_pending_after
        self._rng = random.Random(seed)
        # uuids are reproducible when seeded; a separate generator keeps fault rolls independent of them.
        self._uuid_rng = random.Random(seed) if seed is not None else None
        self._faults = Faults()
        self._script: deque[str | None] = deque()
        self._next_order_id = 1
        self._next_pending_id = 1
        self._by_uuid: dict[str, Order] = {}
        self._unauthenticated = 0
        # Webhook-shaped events (approved, refunded, cancelled), oldest first. A webhook sender delivers
        # ``event["payload"]`` to the merchant's endpoints; use events_since() to follow along.
        self.events: list[dict[str, Any]] = []

    # -- configuration ------------------------------------------------------------------------------------

    @property
    def duplicate_mode(self) -> str:
        return self._duplicate_mode

    @duplicate_mode.setter
    def duplicate_mode(self, mode: str) -> None:
        if str(mode) not in DUPLICATE_MODES:
            raise ValueError(f"duplicate_mode must be one of {', '.join(DUPLICATE_MODES)}, not {mode!r}")
        self._duplicate_mode = str(mode)

    def add_merchant(self, api_key: str, name: str) -> None:
        """Let ``api_key`` authenticate as merchant ``name`` (created if new)."""
        if not api_key:
            raise ValueError("an API key cannot be empty")
        with self._state:
            self._merchants.setdefault(name, PointsMerchant(name))
            self._keys[api_key] = ApiKey(name)

    def revoke(self, api_key: str) -> None:
        """The key now answers 400 "Invalid or inactive API key" (like Regenerate in the dashboard)."""
        with self._state:
            self._keys[api_key].active = False

    def forbid(self, name_or_key: str, message: str = FORBIDDEN) -> None:
        """Earning calls for this merchant answer 403 with ``message`` (channel disabled, unverified...)."""
        with self._state:
            self._merchant(name_or_key).forbidden = message

    def allow(self, name_or_key: str) -> None:
        """Undo :meth:`forbid`."""
        with self._state:
            self._merchant(name_or_key).forbidden = None

    def reset(self, *, faults: bool = False) -> None:
        """Forget orders, pending earnings, events, counters and the fault script.

        Merchants, keys and their flags stay, and so do the random fault rates unless ``faults=True``.
        """
        with self._state:
            for merchant in self._merchants.values():
                merchant.clear()
            self._by_uuid.clear()
            self.events.clear()
            self._script.clear()
            self._unauthenticated = 0
            if faults:
                self._faults = Faults()

    # -- the API ------------------------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes | str | None,
    ) -> SandboxResponse:
        """Answer one API call. ``path`` is relative to the API base (``/orders/earning``).

        A ``slow`` fault sleeps ``slow_seconds`` holding the lock, then answers with ``fault="timeout"``;
        inside :func:`raising_timeouts` it skips the sleep (the transport raises the timeout at once).
        """
        path = urlsplit(path).path.rstrip("/") or "/"
        route, params, allowed = _match_route(method.upper(), path)
        if route is None:
            if allowed:
                return error(
                    405,
                    f"The {method.upper()} method is not supported for this route. "
                    f"Supported methods: {', '.join(allowed)}.",
                )
            return error(404, "Not found")

        # Laravel matches the route first, then the auth middleware runs.
        lowered = {k.lower(): v for k, v in headers.items()}
        key = (lowered.get("x-api-key") or "").strip()
        if not key:
            with self._state:
                self._unauthenticated += 1
            return error(400, MISSING_KEY)
        with self._state:
            entry = self._keys.get(key)
            merchant = self._merchants[entry.merchant] if entry is not None and entry.active else None
            if merchant is None:
                self._unauthenticated += 1
        if merchant is None:
            return error(400, INVALID_KEY)
        return route(self, merchant, params, as_bytes(body), sleeps_when_slow())

    # -- the ledger ---------------------------------------------------------------------------------------

    def ledger(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of everything the sandbox counted."""
        with self._state:
            return {
                "merchants": {name: merchant_ledger(m) for name, m in self._merchants.items()},
                "unauthenticated": self._unauthenticated,
                "events": len(self.events),
                "fault_config": asdict(self._faults),
                "script": ["ok" if kind is None else kind for kind in self._script],
                "duplicate_mode": self._duplicate_mode,
            }

    def _credits(self, merchant: Any) -> dict[str, list[Any]]:
        return merchant.orders

    # -- helpers ------------------------------------------------------------------------------------------

    def _merchant(self, name_or_key: str) -> PointsMerchant:
        if name_or_key in self._merchants:
            return self._merchants[name_or_key]
        if name_or_key in self._keys:
            return self._merchants[self._keys[name_or_key].merchant]
        raise KeyError("no such merchant or API key")  # never echo the argument: it may be a key

    def _selected(self, merchant: str | None) -> list[PointsMerchant]:
        return list(self._merchants.values()) if merchant is None else [self._merchant(merchant)]

    def _clock(self) -> datetime:
        return _now()


# -- routing ----------------------------------------------------------------------------------------------

_Route = Callable[[PointsSandbox, PointsMerchant, dict[str, str], bytes, bool], SandboxResponse]
_ROUTES: list[tuple[str, re.Pattern[str], _Route]] = [
    ("POST", re.compile(r"/orders/earning"), PointsSandbox._earning),
    ("POST", re.compile(r"/orders/earning/store-rating"), PointsSandbox._store_rating),
    ("POST", re.compile(r"/orders/earning/product-rating"), PointsSandbox._product_rating),
    ("GET", re.compile(r"/orders/(?P<uuid>[^/]+)"), PointsSandbox._get_order),
    ("POST", re.compile(r"/orders/(?P<uuid>[^/]+)/refund"), PointsSandbox._refund),
    ("POST", re.compile(r"/orders/(?P<uuid>[^/]+)/cancel"), PointsSandbox._cancel),
    ("POST", re.compile(r"/webhooks"), PointsSandbox._register_webhook),
    ("GET", re.compile(r"/webhooks"), PointsSandbox._list_webhooks),
]


def _match_route(method: str, path: str) -> tuple[_Route | None, dict[str, str], list[str]]:
    allowed = []
    for route_method, pattern, route in _ROUTES:
        match = pattern.fullmatch(path)
        if match:
            if route_method == method:
                return route, match.groupdict(), []
            allowed.append(route_method)
    return None, {}, allowed
