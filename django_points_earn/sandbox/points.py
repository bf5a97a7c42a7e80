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

import json
import random
import re
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .ledger import LedgerQueries
from .timing import latency_seconds, sleep_out

DUPLICATE_MODES = ("422", "400", "409", "replay", "accept")
FAULT_KINDS = ("429", "500", "created_500", "slow", "html", "truncated", "reset")
# Answers only a script plays (never drawn at random): a 400 whose words are neither a duplicate nor the key
# error (undocumented), and the documented key error itself.
SCRIPT_ONLY_KINDS = ("400", "invalid_key")
# Faults that strike before the order is looked at: nothing is created.
_BEFORE_WORK = frozenset({"429", "500", "html", "reset", *SCRIPT_ONLY_KINDS})
UNEXPECTED_400 = "The order could not be processed at this time."

MISSING_KEY = "API key is required"
INVALID_KEY = "Invalid or inactive API key"
FORBIDDEN = "Merchant is not allowed to create earning orders"
LOCK_BUSY = "Another earning request is being processed, please retry shortly"
ORDER_NOT_FOUND = "Order not found"
DUPLICATE = "Order number already exists"
TAKEN = "The order number has already been taken."
INVALID_PHONE = "The phone number format is invalid."

_JSON = {"Content-Type": "application/json"}
# False while an in-process transport (``responses``) is calling: it raises the timeout itself, at once.
_SLEEP_WHEN_SLOW: ContextVar[bool] = ContextVar("points_sandbox_sleep_when_slow", default=True)


@contextmanager
def raising_timeouts() -> Iterator[None]:
    """Within this block a ``slow`` fault does its work and returns ``fault="timeout"`` without sleeping,
    for transports that raise the client's timeout themselves instead of waiting for it."""
    token = _SLEEP_WHEN_SLOW.set(False)
    try:
        yield
    finally:
        _SLEEP_WHEN_SLOW.reset(token)


_BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


@dataclass(frozen=True)
class Faults:
    """Random fault rates (0..1, per earning call) and latency. A scripted fault always wins over these."""

    latency_ms: float = 0
    latency_jitter_ms: float = 0
    rate_429: float = 0
    rate_5xx: float = 0
    rate_created_500: float = 0
    rate_slow: float = 0
    slow_seconds: float = 12
    rate_html: float = 0
    rate_truncated: float = 0
    rate_reset: float = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"Faults.{f.name} must be a number >= 0, not {value!r}")
            if f.name.startswith("rate_") and value > 1:
                raise ValueError(f"Faults.{f.name} is a probability; {value!r} is above 1")
        if sum(rate for _, rate in self.rates()) > 1:
            raise ValueError("the fault rates add up to more than 1")

    def rates(self) -> list[tuple[str, float]]:
        """(kind, probability) in the order they are rolled."""
        return [
            ("429", self.rate_429),
            ("500", self.rate_5xx),
            ("created_500", self.rate_created_500),
            ("slow", self.rate_slow),
            ("html", self.rate_html),
            ("truncated", self.rate_truncated),
            ("reset", self.rate_reset),
        ]


@dataclass
class SandboxResponse:
    """What the platform answers. ``fault`` tells a transport to misbehave instead of (or besides) answering:

    - ``"timeout"``: the work is done but the client must see a read timeout;
    - ``"reset"``: drop the connection without answering (nothing was done);
    - ``None``: answer normally.
    """

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    fault: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class _Order:
    id: int
    uuid: str
    reference_number: str
    merchant: str
    order_number: str
    phone_number: str
    total_price: Decimal
    total_points: int
    data: dict[str, Any]  # the validated request, echoed back (items, metadata)
    created_at: datetime
    updated_at: datetime
    status: str = "approved"
    refunded_amount: Decimal = Decimal(0)
    refunded_points: int = 0


@dataclass
class _Pending:
    id: int
    merchant: str
    order_number: str
    phone_number: str
    total_price: Decimal
    total_points: int
    data: dict[str, Any]
    created_at: datetime


class _Merchant:
    def __init__(self, name: str) -> None:
        self.name = name
        self.forbidden: str | None = None  # the 403 message while the earning channel is off
        # Points' per-merchant distributed lock: only ever tried, never waited on.
        self.lock = threading.Lock()
        self.in_flight = 0  # not reset by clear(): calls may be running
        self.clear()

    def clear(self) -> None:
        self.orders: dict[str, list[_Order]] = {}  # order_number -> every order created for it, oldest first
        self.pending: list[_Pending] = []
        self.calls = 0
        self.overlaps = 0
        self.max_concurrency = 0
        self.responses: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        # Registered webhook endpoints (POST /v1/webhooks): each receives every event of the merchant.
        self.webhooks: list[dict[str, Any]] = getattr(self, "webhooks", [])


@dataclass
class _Key:
    merchant: str
    active: bool = True


def normalize_phone(raw: str) -> str | None:
    """The contract's server-side rule: drop one of +966 / 00966 / 966 / a leading 0, expect ``5\\d{8}``.

    Deliberately stricter than a client should be (no spaces or dashes): that is what the docs describe.
    """
    for prefix in ("+966", "00966", "966", "0"):
        if raw.startswith(prefix):
            raw = raw[len(prefix) :]
            break
    return raw if re.fullmatch(r"5[0-9]{8}", raw) else None


class PointsSandbox(LedgerQueries):
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
        self._keys: dict[str, _Key] = {}
        self._merchants: dict[str, _Merchant] = {}
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
        self._by_uuid: dict[str, _Order] = {}
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
            self._merchants.setdefault(name, _Merchant(name))
            self._keys[api_key] = _Key(name)

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

    def mark_pending(self, phone: str) -> None:
        """Treat ``phone`` (any accepted form) as a customer whose Points account is not activated yet."""
        normal = normalize_phone(str(phone).strip())
        if normal is None:
            raise ValueError(f"not a Saudi mobile number: {phone!r}")
        with self._state:
            self.pending_phones.add(normal)

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults | None = None, /, **kw: Any) -> Faults:
        """Replace the random fault configuration: ``set_faults(rate_429=0.2, latency_ms=50)``.

        Fields not given go back to their defaults, so ``set_faults()`` turns random faults off.
        """
        new = replace(faults, **kw) if faults is not None else Faults(**kw)
        with self._state:
            self._faults = new
        return new

    def script(self, *kinds: str | None) -> None:
        """Queue faults for the next earning calls, one each, before any random ones.

        A kind is one of :data:`FAULT_KINDS` or :data:`SCRIPT_ONLY_KINDS`; ``"ok"`` (or None) lets one call through
        untouched.
        """
        known = (*FAULT_KINDS, *SCRIPT_ONLY_KINDS)
        for kind in kinds:
            if kind not in (*known, "ok", None):
                raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(known)} or 'ok'")
        with self._state:
            self._script.extend(None if kind == "ok" else kind for kind in kinds)

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
                return _error(
                    405,
                    f"The {method.upper()} method is not supported for this route. "
                    f"Supported methods: {', '.join(allowed)}.",
                )
            return _error(404, "Not found")

        # Laravel matches the route first, then the auth middleware runs.
        lowered = {k.lower(): v for k, v in headers.items()}
        key = (lowered.get("x-api-key") or "").strip()
        if not key:
            with self._state:
                self._unauthenticated += 1
            return _error(400, MISSING_KEY)
        with self._state:
            entry = self._keys.get(key)
            merchant = self._merchants[entry.merchant] if entry is not None and entry.active else None
            if merchant is None:
                self._unauthenticated += 1
        if merchant is None:
            return _error(400, INVALID_KEY)
        return route(self, merchant, params, _as_bytes(body), _SLEEP_WHEN_SLOW.get())

    def _earning(self, m: _Merchant, params: dict[str, str], body: bytes, simulate_slow: bool) -> SandboxResponse:
        with self._state:
            m.calls += 1
            m.in_flight += 1
            m.max_concurrency = max(m.max_concurrency, m.in_flight)
        response: SandboxResponse | None = None
        try:
            response = self._earning_call(m, body, simulate_slow)
            return response
        finally:
            with self._state:
                m.in_flight -= 1
                if response is not None:
                    m.responses[response.fault or str(response.status)] += 1

    def _earning_call(self, m: _Merchant, body: bytes, simulate_slow: bool) -> SandboxResponse:
        if m.forbidden is not None:
            return _error(403, m.forbidden)
        data, bad = _parse_body(body)
        if bad is not None:
            return bad
        errors, clean = _validate_earning(data)
        if errors:
            return _validation_error(errors)

        # Points' lock is taken after validation (a FormRequest runs first) and is never waited for.
        if not m.lock.acquire(blocking=False):
            with self._state:
                m.overlaps += 1
            return _error(429, LOCK_BUSY)
        try:
            fault = self._next_fault()
            if fault is not None:
                with self._state:
                    m.faults[fault] += 1
            if fault in _BEFORE_WORK:
                self._sleep_latency()
                return _fault_response(fault)
            response = self._create(m, clean)
            self._sleep_latency()  # the work is done within the round trip, holding the lock throughout
            if fault == "created_500":
                return _server_error()
            if fault == "truncated":
                return replace(response, body=response.body[: len(response.body) // 2])
            if fault == "slow":
                if simulate_slow:
                    time.sleep(self._faults.slow_seconds)
                return replace(response, fault="timeout")
            return response
        finally:
            m.lock.release()

    def _create(self, m: _Merchant, clean: dict[str, Any]) -> SandboxResponse:
        number = clean["order_number"]
        with self._state:
            existing = m.orders.get(number)
            pending = [p for p in m.pending if p.order_number == number]
            if (existing or pending) and self._duplicate_mode != "accept":
                return self._duplicate(existing[-1] if existing else None, pending[-1] if pending else None)
            now = _now()
            points = self._points(clean["total_price"])
            if clean["phone_number"] in self.pending_phones:
                p = _Pending(
                    id=self._next_pending_id,
                    merchant=m.name,
                    order_number=number,
                    phone_number=clean["phone_number"],
                    total_price=clean["total_price"],
                    total_points=points,
                    data=clean,
                    created_at=now,
                )
                self._next_pending_id += 1
                m.pending.append(p)
                return _ok(_pending_resource(p))
            order = self._award(m, clean, points, now)
            return _ok(_order_resource(order, now))

    def _award(self, m: _Merchant, clean: dict[str, Any], points: int, now: datetime) -> _Order:
        """Create an approved order: the moment points are credited (an "award" in the ledger)."""
        order_id = self._next_order_id
        self._next_order_id += 1
        order = _Order(
            id=order_id,
            uuid=self._new_uuid(),
            reference_number=f"REF-{now.year}-{order_id:06d}",
            merchant=m.name,
            order_number=clean["order_number"],
            phone_number=clean["phone_number"],
            total_price=clean["total_price"],
            total_points=points,
            data=clean,
            created_at=now,
            updated_at=now,
        )
        m.orders.setdefault(order.order_number, []).append(order)
        self._by_uuid[order.uuid] = order
        self._emit(m, "approved", order)
        return order

    def _duplicate(self, order: _Order | None, pending: _Pending | None) -> SandboxResponse:
        mode = self._duplicate_mode
        if mode == "replay":
            return _ok(_order_resource(order, _now()) if order is not None else _pending_resource(pending))
        if mode == "422":
            return _validation_error({"order_number": [TAKEN]})
        return _error(int(mode), DUPLICATE)

    def _register_webhook(
        self, m: _Merchant, params: dict[str, str], body: bytes, simulate_slow: bool
    ) -> SandboxResponse:
        """``POST /v1/webhooks {name, url}``: 400 when the URL is already registered for this merchant."""
        data, bad = _parse_body(body)
        if bad is not None:
            return bad
        errors: dict[str, list[str]] = {}
        name = _optional_string(data, "name", 255, errors)
        url = _optional_string(data, "url", 500, errors)
        for field_name, value in (("name", name), ("url", url)):
            if not value and field_name not in errors:
                errors[field_name] = [f"The {field_name} field is required."]
        if errors:
            return _validation_error(errors)
        with self._state:
            if any(w["url"] == url for w in m.webhooks):
                return _error(400, "This URL is already registered for this merchant")
            now = _iso(_now())
            hook = {
                "uuid": str(uuid.uuid4()),
                "name": name,
                "url": url,
                "secret": secrets.token_urlsafe(45)[:60],
                "created_at": now,
                "updated_at": now,
                "delivered_seq": len(self.events),
            }
            m.webhooks.append(hook)
            return _ok({k: v for k, v in hook.items() if k != "delivered_seq"})

    def _list_webhooks(self, m: _Merchant, params: dict[str, str], body: bytes, simulate_slow: bool) -> SandboxResponse:
        with self._state:
            hooks = [{k: v for k, v in w.items() if k != "delivered_seq"} for w in m.webhooks]
        return _ok(hooks)

    def webhook_endpoints(self, merchant: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        """(merchant name, endpoint) pairs, for the sender."""
        with self._state:
            return [(m.name, w) for m in self._merchants.values() if merchant in (None, m.name) for w in m.webhooks]

    def _get_order(self, m: _Merchant, params: dict[str, str], body: bytes, simulate_slow: bool) -> SandboxResponse:
        with self._state:
            order = self._find(m, params["uuid"])
            if order is None:
                return _error(404, ORDER_NOT_FOUND)
            return _ok(_order_resource(order, _now()))

    def _refund(self, m: _Merchant, params: dict[str, str], body: bytes, simulate_slow: bool) -> SandboxResponse:
        data, bad = _parse_body(body)
        if bad is not None:
            return bad
        errors: dict[str, list[str]] = {}
        amount = _optional_number(data, "amount", errors)
        reason = _optional_string(data, "reason", 500, errors)
        if errors:
            return _validation_error(errors)
        with self._state:
            order = self._find(m, params["uuid"])
            if order is None:
                return _error(404, ORDER_NOT_FOUND)
            if order.status not in ("approved", "partially_refunded"):
                return _error(400, f"Order cannot be refunded in its current state ({order.status})")
            now = _now()
            if self.refund_window_days is not None and now - order.created_at > timedelta(days=self.refund_window_days):
                return _error(400, "The refund window for this order has expired")
            remaining = order.total_price - order.refunded_amount
            if amount is None:
                amount = order.total_price if self.refund_without_amount == "captured" else remaining
            if amount <= 0:
                return _error(400, "The refund amount must be greater than zero")
            elif amount > remaining:
                return _error(400, f"The refund amount exceeds the refundable amount ({remaining})")
            refunded = order.refunded_amount + amount
            if refunded >= order.total_price:
                target_points, order.status = order.total_points, "fully_refunded"
            else:
                # Cumulative proportion, so several partial refunds add up to exactly the points awarded.
                share = Decimal(order.total_points) * refunded / order.total_price
                target_points = int(share.quantize(Decimal(1), ROUND_HALF_UP))
                order.status = "partially_refunded"
            refund_points = target_points - order.refunded_points
            order.refunded_amount, order.refunded_points, order.updated_at = refunded, target_points, now
            self._emit(
                m,
                "refunded",
                order,
                refund_amount=float(amount),
                refund_points=refund_points,
                left_points=order.total_points - order.refunded_points,
                left_amount=float(order.total_price - order.refunded_amount),
                reason=reason,
            )
            return _ok(_order_resource(order, now))

    def _cancel(self, m: _Merchant, params: dict[str, str], body: bytes, simulate_slow: bool) -> SandboxResponse:
        data, bad = _parse_body(body)
        if bad is not None:
            return bad
        errors: dict[str, list[str]] = {}
        reason = _optional_string(data, "reason", 500, errors)
        if errors:
            return _validation_error(errors)
        with self._state:
            order = self._find(m, params["uuid"])
            if order is None:
                return _error(404, ORDER_NOT_FOUND)
            if order.status == "cancelled":
                return _error(400, "Order is already cancelled")
            if order.status in ("fully_refunded", "partially_refunded"):
                return _error(400, "Refunded orders cannot be cancelled")
            if order.status == "approved" and not self.cancel_approved:
                # The lifecycle page: cancel is for new/authorized orders; an approved one is refunded.
                return _error(400, "Approved orders cannot be cancelled; refund the order instead")
            now = _now()
            order.status, order.updated_at = "cancelled", now
            order.refunded_points = order.total_points  # cancelling an earning order takes its points back
            self._emit(m, "cancelled", order, reason=reason or "Order cancelled via API")
            return _ok(_order_resource(order, now))

    # -- pending customers --------------------------------------------------------------------------------

    def activate(self, phone: str) -> list[dict[str, Any]]:
        """The customer behind ``phone`` activates their account: every pending earning becomes an approved
        order (new uuid, points credited, an ``approved`` event). Returns those orders as OrderResource dicts.
        """
        normal = normalize_phone(str(phone).strip())
        if normal is None:
            raise ValueError(f"not a Saudi mobile number: {phone!r}")
        activated = []
        with self._state:
            self.pending_phones.discard(normal)
            now = _now()
            for m in self._merchants.values():
                for p in [p for p in m.pending if p.phone_number == normal]:
                    m.pending.remove(p)
                    activated.append(_order_resource(self._award(m, p.data, p.total_points, now), now))
        return activated

    def approve_due_pending(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Approve every pending earning older than ``approve_pending_after`` seconds, as if its customer had
        activated (an approved order with a uuid, an ``approved`` event). The phone itself stays pending, so its
        next earning waits as long. Returns the approved orders as OrderResource dicts."""
        if self.approve_pending_after is None:
            return []
        now = now or _now()
        cutoff = now - timedelta(seconds=float(self.approve_pending_after))
        approved = []
        with self._state:
            for m in self._merchants.values():
                for p in [p for p in m.pending if p.created_at <= cutoff]:
                    m.pending.remove(p)
                    approved.append(_order_resource(self._award(m, p.data, p.total_points, now), now))
        return approved

    def approve_all_pending(self) -> list[dict[str, Any]]:
        """Approve every pending earning now, whatever its age (``points_sandbox --approve-pending``)."""
        approved = []
        with self._state:
            now = _now()
            for m in self._merchants.values():
                for p in list(m.pending):
                    m.pending.remove(p)
                    approved.append(_order_resource(self._award(m, p.data, p.total_points, now), now))
        return approved

    def dashboard(self, action: str, order_number: str, *, amount: Any = None, reason: str | None = None) -> dict:
        """What a merchant does in the Points dashboard: ``refund`` (all, or ``amount``) or ``cancel`` the newest
        order with ``order_number``, whatever client made it. Fires the ``refunded`` / ``cancelled`` webhook event.
        Returns the OrderResource; raises ValueError with the platform's message when it refuses."""
        if action not in ("refund", "cancel"):
            raise ValueError(f"unknown dashboard action {action!r}: refund or cancel")
        body: dict[str, Any] = {"reason": reason or f"{action}ed in the Points dashboard"}
        if amount is not None:
            body["amount"] = amount
        with self._state:
            found = [(m, m.orders[order_number][-1]) for m in self._merchants.values() if m.orders.get(order_number)]
            if not found:
                raise ValueError(f"no approved order {order_number!r} on the sandbox")
            m, order = found[-1]
            cancel_approved, self.cancel_approved = self.cancel_approved, True  # the dashboard may cancel it
            try:
                handler = self._refund if action == "refund" else self._cancel
                answer = handler(m, {"uuid": order.uuid}, json.dumps(body).encode(), False)
            finally:
                self.cancel_approved = cancel_approved
        data = json.loads(answer.body)
        if answer.status != 200:
            raise ValueError(data.get("message") or f"HTTP {answer.status}")
        return data.get("data", data)

    # -- events -------------------------------------------------------------------------------------------

    def _emit(self, m: _Merchant, event: str, order: _Order, **extra: Any) -> None:
        now = _iso(_now())
        payload = {"event": event, "order": {**_webhook_order(order), **extra}, "timestamp": now}
        self.events.append({"seq": len(self.events) + 1, "merchant": m.name, "event": event, "payload": payload})

    def events_since(self, seq: int = 0) -> list[dict[str, Any]]:
        """Events with a sequence number above ``seq`` (a webhook sender's cursor)."""
        with self._state:
            return [e for e in self.events if e["seq"] > seq]

    # -- the ledger ---------------------------------------------------------------------------------------

    def ledger(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot of everything the sandbox counted."""
        with self._state:
            return {
                "merchants": {name: _merchant_ledger(m) for name, m in self._merchants.items()},
                "unauthenticated": self._unauthenticated,
                "events": len(self.events),
                "fault_config": asdict(self._faults),
                "script": ["ok" if kind is None else kind for kind in self._script],
                "duplicate_mode": self._duplicate_mode,
            }

    def _credits(self, merchant: Any) -> dict[str, list[Any]]:
        return merchant.orders

    # -- control (the HTTP server's /__sandbox__ endpoints) -----------------------------------------------

    def control(self, method: str, path: str, headers: Mapping[str, str], body: bytes | str | None) -> SandboxResponse:
        """Test-side endpoints: ``GET /ledger``, ``GET /events?since=N``, ``POST /faults``, ``/script``,
        ``/reset``, ``/merchants``, ``/activate``, ``/approve-pending``, ``/dashboard``. Answers never contain an API
        key."""
        parts = urlsplit(path)
        route = (method.upper(), parts.path.rstrip("/") or "/")
        data, bad = _parse_body(_as_bytes(body))
        if bad is not None:
            return bad
        try:
            if route == ("GET", "/ledger"):
                return _json(200, self.ledger())
            if route == ("GET", "/events"):
                since = int(parse_qs(parts.query).get("since", ["0"])[0])
                return _json(200, {"events": self.events_since(since)})
            if route == ("POST", "/faults"):
                return _json(200, {"faults": asdict(self.set_faults(**data))})
            if route == ("POST", "/script"):
                kinds = data.get("kinds", [])
                if not isinstance(kinds, list):
                    raise ValueError("kinds must be a list")
                self.script(*kinds)
                return _json(200, {"script": self.ledger()["script"]})
            if route == ("POST", "/reset"):
                self.reset(faults=bool(data.get("faults", False)))
                return _json(200, {"ok": True})
            if route == ("POST", "/merchants"):
                return self._control_merchant(data)
            if route == ("POST", "/activate"):
                return _json(200, {"orders": self.activate(str(data.get("phone", "")))})
            if route == ("POST", "/approve-pending"):
                return _json(200, {"orders": self.approve_all_pending()})
            if route == ("POST", "/dashboard"):
                order = self.dashboard(
                    str(data.get("action", "")),
                    str(data.get("order_number", "")),
                    amount=data.get("amount"),
                    reason=data.get("reason"),
                )
                return _json(200, {"order": order})
        except (TypeError, ValueError, KeyError) as exc:
            return _json(400, {"ok": False, "error": str(exc)})
        return _json(404, {"ok": False, "error": f"no control endpoint {route[0]} {route[1]}"})

    def _control_merchant(self, data: dict[str, Any]) -> SandboxResponse:
        api_key, name = data.get("api_key"), data.get("name")
        if not isinstance(api_key, str) or not api_key or not isinstance(name, str) or not name:
            raise ValueError("api_key and name are required strings")
        self.add_merchant(api_key, name)
        if data.get("revoked"):
            self.revoke(api_key)
        if "forbidden" in data:
            if data["forbidden"]:
                self.forbid(name, str(data.get("message") or FORBIDDEN))
            else:
                self.allow(name)
        return _json(200, {"ok": True, "merchant": name})

    # -- helpers ------------------------------------------------------------------------------------------

    def _merchant(self, name_or_key: str) -> _Merchant:
        if name_or_key in self._merchants:
            return self._merchants[name_or_key]
        if name_or_key in self._keys:
            return self._merchants[self._keys[name_or_key].merchant]
        raise KeyError("no such merchant or API key")  # never echo the argument: it may be a key

    def _selected(self, merchant: str | None) -> list[_Merchant]:
        return list(self._merchants.values()) if merchant is None else [self._merchant(merchant)]

    def _find(self, m: _Merchant, order_uuid: str) -> _Order | None:
        order = self._by_uuid.get(order_uuid)
        return order if order is not None and order.merchant == m.name else None  # another merchant's: 404

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

    def _points(self, total_price: Decimal) -> int:
        return int((total_price * self.points_per_sar).quantize(Decimal(1), ROUND_HALF_UP))

    def _new_uuid(self) -> str:
        if self._uuid_rng is None:
            return str(uuid.uuid4())
        return str(uuid.UUID(int=self._uuid_rng.getrandbits(128), version=4))


# -- routing ----------------------------------------------------------------------------------------------

_Route = Callable[[PointsSandbox, _Merchant, dict[str, str], bytes, bool], SandboxResponse]
_ROUTES: list[tuple[str, re.Pattern[str], _Route]] = [
    ("POST", re.compile(r"/orders/earning"), PointsSandbox._earning),
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


# -- request parsing and validation (Laravel's rules and messages) ----------------------------------------

_NUMERIC = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)  # PHP is_numeric: ASCII only
_INTEGER = re.compile(r"[+-]?\d+", re.ASCII)


def _as_bytes(body: bytes | str | None) -> bytes:
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else bytes(body)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_body(body: bytes) -> tuple[dict[str, Any], SandboxResponse | None]:
    """An empty body is ``{}``; anything else must be a JSON object. Strings are trimmed and ``""`` becomes
    null, as Laravel's TrimStrings and ConvertEmptyStringsToNull middleware do."""
    if not body.strip():
        return {}, None
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError):
        return {}, _error(400, "The request body is not valid JSON.")
    if not isinstance(data, dict):
        return {}, _error(400, "The request body must be a JSON object.")
    return _trim(data), None


def _trim(value: Any) -> Any:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict):
        return {k: _trim(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_trim(v) for v in value]
    return value


def _label(key: str) -> str:
    """``products.0.product_price`` -> ``product price`` (the attribute name in the message)."""
    return key.rsplit(".", 1)[-1].replace("_", " ")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, list | dict) and not value)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMERIC.fullmatch(value)):
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return None


class _Rules:
    """Collects errors per dot-path key, first failing rule only per field (like ``bail``)."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def fail(self, key: str, message: str) -> None:
        self.errors.setdefault(key, []).append(message)

    def required(self, key: str, value: Any) -> bool:
        if _missing(value):
            self.fail(key, f"The {_label(key)} field is required.")
            return False
        return True

    def string(self, key: str, value: Any, max_length: int | None = None) -> str | None:
        if not isinstance(value, str):
            self.fail(key, f"The {_label(key)} must be a string.")
            return None
        if max_length is not None and len(value) > max_length:
            self.fail(key, f"The {_label(key)} must not be greater than {max_length} characters.")
            return None
        return value

    def numeric(self, key: str, value: Any, minimum: int = 0) -> Decimal | None:
        number = _number(value)
        if number is None:
            self.fail(key, f"The {_label(key)} must be a number.")
            return None
        if number < minimum:
            self.fail(key, f"The {_label(key)} must be at least {minimum}.")
            return None
        return number

    def integer(self, key: str, value: Any, minimum: int) -> int | None:
        number = _integer(value)
        if number is None:
            self.fail(key, f"The {_label(key)} must be an integer.")
            return None
        if number < minimum:
            self.fail(key, f"The {_label(key)} must be at least {minimum}.")
            return None
        return number

    def array(self, key: str, value: Any) -> bool:
        if not isinstance(value, dict):
            self.fail(key, f"The {_label(key)} must be an array.")
            return False
        return True


def _validate_earning(data: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """The ``EarningOrderRequest`` rules of §2.1. Returns (errors, cleaned data)."""
    r = _Rules()
    clean: dict[str, Any] = {}

    phone = data.get("phone_number")
    if r.required("phone_number", phone) and r.string("phone_number", phone) is not None:
        clean["phone_number"] = normalize_phone(phone)
        if clean["phone_number"] is None:
            r.fail("phone_number", INVALID_PHONE)

    total = data.get("total_price")
    if r.required("total_price", total):
        clean["total_price"] = r.numeric("total_price", total)

    number = data.get("order_number")
    if r.required("order_number", number):
        clean["order_number"] = r.string("order_number", number)

    products = data.get("products")
    clean["items"] = []
    if r.required("products", products):
        if not isinstance(products, list):
            r.fail("products", "The products must be an array.")
        else:
            for i, item in enumerate(products):
                item = item if isinstance(item, dict) else {}
                line = {}
                for name in ("product_name", "product_price", "quantity"):
                    key, value = f"products.{i}.{name}", item.get(name)
                    if not r.required(key, value):
                        continue
                    if name == "product_name":
                        line[name] = r.string(key, value)
                    elif name == "product_price":
                        line[name] = r.numeric(key, value)
                    else:
                        line[name] = r.integer(key, value, 1)
                clean["items"].append(line)

    if data.get("name") is not None:
        clean["name"] = r.string("name", data["name"], 255)
    for name in ("shipping_amount", "tax_amount", "discount_amount"):
        if data.get(name) is not None:
            clean[name] = r.numeric(name, data[name])
    address = data.get("shipping_address")
    if address is not None and r.array("shipping_address", address):
        for name, limit in (("city", 100), ("line1", 255)):
            if address.get(name) is not None:
                r.string(f"shipping_address.{name}", address[name], limit)
    metadata = data.get("metadata")
    if metadata is not None:
        r.array("metadata", metadata)
    clean["metadata"] = metadata
    return r.errors, clean


def _optional_number(data: dict[str, Any], key: str, errors: dict[str, list[str]]) -> Decimal | None:
    if data.get(key) is None:
        return None
    r = _Rules()
    number = r.numeric(key, data[key])
    errors.update(r.errors)
    return number


def _optional_string(data: dict[str, Any], key: str, limit: int, errors: dict[str, list[str]]) -> str | None:
    if data.get(key) is None:
        return None
    r = _Rules()
    text = r.string(key, data[key], limit)
    errors.update(r.errors)
    return text


# -- response bodies --------------------------------------------------------------------------------------


def _json(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> SandboxResponse:
    body = json.dumps(payload, ensure_ascii=False).encode()
    # X-Request-Id: the PHP SDK reads it when present, so a faithful fake sends one.
    return SandboxResponse(status, {**_JSON, "X-Request-Id": uuid.uuid4().hex, **(headers or {})}, body)


def _ok(data: dict[str, Any]) -> SandboxResponse:
    return _json(200, {"status": True, "message": "", "appended_data": {}, "data": data})


def _error(status: int, message: str) -> SandboxResponse:
    return _json(status, {"status": False, "message": message, "appended_data": {}})


def _validation_error(errors: dict[str, list[str]]) -> SandboxResponse:
    first = next(iter(errors.values()))[0]
    return _json(422, {"status": False, "message": first, "appended_data": {}, "errors": errors})


def _server_error() -> SandboxResponse:
    return _json(500, {"message": "Server Error"})  # Laravel's production answer to an exception


def _fault_response(kind: str) -> SandboxResponse:
    if kind == "429":
        return _error(429, LOCK_BUSY)  # indistinguishable from a real busy lock, on purpose
    if kind == "html":
        return SandboxResponse(502, {"Content-Type": "text/html"}, _BAD_GATEWAY_HTML)
    if kind == "reset":
        return SandboxResponse(0, {}, b"", fault="reset")  # status 0: no HTTP answer at all
    if kind == "400":
        return _error(400, UNEXPECTED_400)
    if kind == "invalid_key":
        return _error(400, INVALID_KEY)
    return _server_error()


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _since(moment: datetime, now: datetime) -> str:
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size or unit == "second":
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return ""  # pragma: no cover


def _order_resource(order: _Order, now: datetime) -> dict[str, Any]:
    """The ``OrderResource`` of §2.3, with every documented field."""
    return {
        "id": order.id,
        "uuid": order.uuid,
        "reference_number": order.reference_number,
        "order_status": order.status,
        "order_number": order.order_number,
        "type": 1,
        "total_price": float(order.total_price),
        "total_points": order.total_points,
        "metadata": order.data.get("metadata"),
        "status": 1,
        "status_label": "New",
        "custom_status": None,
        "settlement_status": None,
        "date": order.created_at.strftime("%Y-%m-%d"),
        "time": order.created_at.strftime("%H:%M:%S"),
        "since": _since(order.created_at, now),
        "items": [
            {
                "product_name": i["product_name"],
                "product_price": float(i["product_price"]),
                "quantity": i["quantity"],
            }
            for i in order.data.get("items", [])
        ],
        "created_at": _iso(order.created_at),
        "updated_at": _iso(order.updated_at),
    }


def _pending_resource(p: _Pending | None) -> dict[str, Any]:
    assert p is not None
    return {
        "pending_client_activation": True,
        "pending_earning_order": {
            "id": p.id,
            "merchant_order_number": p.order_number,
            "total_price": float(p.total_price),
            "total_points": p.total_points,
        },
    }


def _webhook_order(order: _Order) -> dict[str, Any]:
    """The ``order`` of a webhook payload (§8.3): ``id`` is the uuid and ``type`` a string."""
    return {
        "id": order.uuid,
        "reference_number": order.reference_number,
        "order_number": order.order_number,
        "type": "earning",
        "order_status": order.status,
        "total_price": float(order.total_price),
        "total_points": order.total_points,
        "payment_status": "fully_paid",
        "metadata": order.data.get("metadata"),
        "created_at": _iso(order.created_at),
        "updated_at": _iso(order.updated_at),
    }


def _merchant_ledger(m: _Merchant) -> dict[str, Any]:
    orders = {}
    for number, created in m.orders.items():
        last = created[-1]
        orders[number] = {
            "awards": len(created),
            "uuid": created[0].uuid,
            "uuids": [o.uuid for o in created],
            "reference_number": created[0].reference_number,
            "phone_number": created[0].phone_number,
            "total_price": float(created[0].total_price),
            "points": created[0].total_points,
            "points_awarded": sum(o.total_points for o in created),
            "status": last.status,
            "refunded_amount": float(sum((o.refunded_amount for o in created), Decimal(0))),
            "refunded_points": sum(o.refunded_points for o in created),
        }
    return {
        "calls": m.calls,
        "overlaps": m.overlaps,
        "max_concurrency": m.max_concurrency,
        "in_flight": m.in_flight,
        "forbidden": m.forbidden is not None,
        "responses": dict(m.responses),
        "faults": dict(m.faults),
        "awards": sum(len(created) for created in m.orders.values()),
        "points_awarded": sum(o.total_points for created in m.orders.values() for o in created),
        "points_refunded": sum(o.refunded_points for created in m.orders.values() for o in created),
        "orders": orders,
        "pending": [
            {
                "id": p.id,
                "order_number": p.order_number,
                "phone_number": p.phone_number,
                "total_price": float(p.total_price),
                "total_points": p.total_points,
            }
            for p in m.pending
        ],
    }
