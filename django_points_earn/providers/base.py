"""The provider layer's shape: one result vocabulary, one control flow, HTTP done once.

A backend turns a provider-neutral :class:`~django_points_earn.adapters.EarningRequest` into the platform's body
(``build_payload``, which may refuse with :class:`InvalidEarningRequest`), sends it (``earn``) and says what the
answer means (an :class:`EarnResult`). It never writes to the database and never retries: retries belong to the
queue, decided by the lifecycle from the result.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

import requests

from .. import __version__
from ..adapters import EarningRequest
from ..conf import AccountConfig, all_secret_values

# The result vocabulary (docs/design.md, "The result vocabulary of the providers").
AWARDED = "awarded"
PENDING_ACTIVATION = "pending_activation"
DUPLICATE = "duplicate"
REJECTED = "rejected"
RATE_LIMITED = "rate_limited"
UNAVAILABLE = "unavailable"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
# Not eligible after all, found out only at send time (e.g. fabric: the customer is no member, and the account says
# that means "skip"). The lifecycle records it as ``skipped``.
SKIPPED = "skipped"
RESULT_STATUSES = (
    AWARDED,
    PENDING_ACTIVATION,
    DUPLICATE,
    REJECTED,
    RATE_LIMITED,
    UNAVAILABLE,
    UNAUTHORIZED,
    FORBIDDEN,
    SKIPPED,
)

# remote_status of a reversal answer saying the platform took back every point of the earning (whatever share was
# asked): the earning is then reversed, never partially (reversal_lifecycle.complete).
FULLY_REVERSED = "fully_reversed"

MAX_STORED_BODY = 20_000  # characters of a platform answer kept on the attempt
MAX_BODY_BYTES = 5 * 2**20  # an answer larger than this is not an answer we can use


def parse_retry_after(value: str | None) -> float | None:
    """A Retry-After header in seconds, or ``None`` if absent or unusable (an HTTP date, ``inf``, ``nan``, text).
    Negative values count as 0; the lifecycle clamps every delay within RETRY's MIN_DELAY and MAX_DELAY."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


class PointsEarnError(Exception):
    """Base of the app's runtime errors (configuration errors are ``ImproperlyConfigured`` instead)."""


class PlatformError(PointsEarnError):
    """The platform answered something we cannot use; carries the HTTP status and the (scrubbed) body."""

    def __init__(self, message: str, *, http_status: int | None = None, body: str = ""):
        super().__init__(message)
        self.http_status = http_status
        self.body = body


@dataclass
class EarnResult:
    status: str
    message: str = ""
    http_status: int | None = None
    # True when the platform may have acted although we did not see it confirm (timeout, 5xx, cut-off body).
    outcome_unknown: bool = False
    remote_id: str = ""
    remote_reference: str = ""
    remote_status: str = ""
    points: Decimal | None = None
    field_errors: dict[str, list[str]] = field(default_factory=dict)
    body: Any = None  # parsed JSON, when there was any
    raw_text: str = ""  # the answer as received (cut to MAX_STORED_BODY)
    retry_after: float | None = None
    duration_ms: int | None = None
    # Fields the backend resolved on the way (e.g. fabric's profileId from a member lookup), to be kept on the
    # record's payload so the next attempt does not resolve them again. The lifecycle stores them.
    payload_update: dict[str, Any] = field(default_factory=dict)
    # The call failed inside this app (an exception of ours, not an answer): the platform cannot be busy with it
    # because of us, so the account needs no cooldown after it.
    local_error: bool = False

    def __post_init__(self) -> None:
        if self.status not in RESULT_STATUSES:
            raise ValueError(f"unknown result status {self.status!r}")


@dataclass
class LookupResult:
    """What the platform says about an earning we already sent (``found`` False: it does not know it)."""

    found: bool
    remote_id: str = ""
    remote_reference: str = ""
    remote_status: str = ""
    points: Decimal | None = None
    body: Any = None
    message: str = ""
    http_status: int | None = None


# Secrets that exist only at run time (fabric's bearer tokens): scrubbed like the configured ones. Bounded, since
# a long-running worker fetches a new token every few minutes.
_runtime_secrets: deque[str] = deque(maxlen=64)
_runtime_lock = threading.Lock()


def remember_secret(value: str) -> None:
    """Scrub ``value`` (e.g. an access token) from every text that goes through :func:`scrub` from now on."""
    if value and len(value) >= 8:
        with _runtime_lock:
            if value not in _runtime_secrets:
                _runtime_secrets.append(value)


def scrub(text: str) -> str:
    """Remove any configured secret or live token from text that may reach a log, a record or the admin."""
    with _runtime_lock:
        runtime = list(_runtime_secrets)
    for secret in [*all_secret_values(), *runtime]:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def cut(text: str, limit: int = MAX_STORED_BODY) -> str:
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"


def to_json_number(amount: Decimal | None) -> float | None:
    """Amounts stay Decimal until here. A 2-place Decimal round-trips exactly through float's shortest repr."""
    return None if amount is None else float(amount)


def http_warnings(account: AccountConfig, urls: list[tuple[str, str, str]]) -> list[Any]:
    """points_earn.W001 for each ``(key, url, what travels on it)`` that is plain http:// outside DEBUG."""
    from django.conf import settings
    from django.core import checks

    from ..conf import setting_path

    return [
        checks.Warning(
            f"{setting_path('ACCOUNTS', account.name, key)} uses plain http:// outside DEBUG: {what} would "
            "travel unencrypted.",
            id="points_earn.W001",
        )
        for key, url, what in urls
        if url.startswith("http://") and not settings.DEBUG
    ]


_sessions = threading.local()


def close_sessions() -> None:
    """Close this thread's sessions: a worker's parent must not hand pooled sockets down to forked jobs."""
    for session in (getattr(_sessions, "by_account", None) or {}).values():
        session.close()
    _sessions.by_account = {}


def _read_environment_once(session: requests.Session, base_url: str) -> None:
    """Honour the proxy and CA-bundle variables as requests would, but read them once per session.

    With ``trust_env`` on, requests re-reads the whole environment (and looks for ``~/.netrc``) on every call:
    measurable on an account's critical path, where calls run back to back. ``.netrc`` is not consulted: every
    platform here authenticates with its own key or token.
    """
    session.trust_env = False
    session.proxies.update(requests.utils.get_environ_proxies(base_url))
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        session.verify = bundle


class BaseBackend:
    """Template for a platform client. Subclasses fill in the hooks; the base owns HTTP and error wrapping."""

    # -- the declared contract (docs/adding-platforms.md) ----------------------------------------------------
    provider: ClassVar[str] = ""  # the name accounts give as PROVIDER, and the registry's key
    label: ClassVar[str] = ""  # the product name shown in the admin (not translated)
    # The account's settings: defaults of optional keys (documented by the comments next to them, which
    # scripts/settings_reference.py turns into docs/settings.md), keys without which the account cannot work,
    # and keys whose values are secrets (never shown, logged or stored; scrubbed from every stored text).
    defaults: ClassVar[dict[str, Any]] = {}
    required_keys: ClassVar[tuple[str, ...]] = ()
    secret_keys: ClassVar[tuple[str, ...]] = ()
    # What travels on BASE_URL (named when it is plain http:// outside DEBUG: points_earn.W001).
    base_url_carries: ClassVar[str] = "the credentials"
    # True when the backend implements reverse(), refund_body() and snapshot(): refunds take points back.
    supports_refunds: ClassVar[bool] = False
    # Dotted path of the view receiving this platform's webhooks at webhooks/<provider>/<account>/, or None.
    webhook_view: ClassVar[str | None] = None
    # Dotted path of the function reading one stored delivery (its JSON object) into a providers.events
    # ParsedDelivery: its neutral events, which the core applies (webhooks.py). None: the platform sends none.
    webhook_parser: ClassVar[str | None] = None

    def __init__(self, account: AccountConfig):
        self.account = account

    @classmethod
    def check(cls, account: AccountConfig) -> list[Any]:
        """``manage.py check`` messages for one account of this platform (its required keys are checked for it).

        The base warns when BASE_URL is plain http:// outside DEBUG; a platform adds its own option checks."""
        return http_warnings(account, [("BASE_URL", account.base_url, cls.base_url_carries)])

    # Warm-up: state a forked RQ work horse learns (fabric: its OAuth tokens) and hands to its worker, so that the
    # next job starts with it. ``share_state`` runs in the work horse with a listener taking JSON-able dicts;
    # ``learn_state`` runs in the worker for every event any platform shared (ignore those that are not yours).
    @classmethod
    def share_state(cls, listener: Any) -> None:
        return None

    @classmethod
    def learn_state(cls, event: dict[str, Any]) -> bool:
        """Take in one shared event; True if it was this platform's."""
        return False

    # -- hooks -------------------------------------------------------------------------------------------------
    def build_payload(self, request: EarningRequest) -> dict[str, Any]:
        raise NotImplementedError

    def earn(self, payload: dict[str, Any], *, request_id: str, outcome_unknown: bool = False) -> EarnResult:
        raise NotImplementedError

    def lookup(self, remote_id: str) -> LookupResult:
        raise NotImplementedError

    def auth_headers(self) -> dict[str, str]:
        return {}

    def partial_reversal_refusal(self, amount: Decimal, total: Decimal) -> str:
        """Why a refund of ``amount`` out of ``total`` cannot be taken back on this platform ("": it can)."""
        return ""

    @classmethod
    def is_our_refund(cls, refund_id: str, reason: str) -> bool:
        """Whether a refund the platform reports (a ``PointsTakenBack`` event, by the reason the platform keeps)
        is our reversal ``refund_id``, sent by :meth:`reverse`, rather than one made on the platform itself. The
        base cannot tell: a platform whose webhooks report refunds marks its own in ``refund_body`` and says so."""
        return False

    # -- HTTP --------------------------------------------------------------------------------------------------
    def session(self) -> requests.Session:
        """One Session per account and thread: connection reuse without sharing a Session across threads."""
        cache = getattr(_sessions, "by_account", None)
        if cache is None:
            cache = _sessions.by_account = {}
        session = cache.get(self.account.name)
        if session is None:
            session = requests.Session()
            session.headers.update(
                {
                    "Accept": "application/json",
                    "User-Agent": f"django-points-earn/{__version__}",
                }
            )
            _read_environment_once(session, self.account.base_url)
            cache[self.account.name] = session
        return session

    def url(self, path: str) -> str:
        return f"{self.account.base_url}/{path.lstrip('/')}"

    def send(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        request_id: str = "",
        params: Any = None,
        headers: dict[str, str] | None = None,
    ):
        """Make one HTTP call. Returns ``(response | None, exception | None, duration_ms)``; never raises.

        ``headers`` are added to :meth:`auth_headers` (fabric passes its bearer token per call, so that it can
        refresh it on a 401 and send again).
        """
        headers = {**self.auth_headers(), **(headers or {})}
        if request_id:
            headers["X-Request-Id"] = request_id
        data = None
        if json_body is not None:
            headers["Content-Type"] = "application/json"
            data = json.dumps(json_body, ensure_ascii=False, allow_nan=False).encode()
        started = time.monotonic()
        try:
            response = self.session().request(
                method,
                self.url(path),
                data=data,
                headers=headers,
                params=params,
                timeout=self.account.timeout,
                stream=True,
            )
            # Read the whole body now, bounded in time and size: a server that trickles bytes forever would
            # otherwise never hit the per-read timeout, and hold the account lock past its lease.
            _read_bounded(response, deadline=started + sum(self.account.timeout))
            return response, None, int((time.monotonic() - started) * 1000)
        except requests.RequestException as exc:
            return None, exc, int((time.monotonic() - started) * 1000)

    @staticmethod
    def no_answer(exc: BaseException | None) -> EarnResult:
        """The result of a call that got no HTTP answer at all."""
        message, unknown = describe_exception(exc) if exc else ("no answer", True)
        return EarnResult(UNAVAILABLE, message=message, outcome_unknown=unknown)

    def read(self, response: requests.Response) -> tuple[Any, str | None, dict[str, Any]]:
        """The JSON body (or why there is none), and the fields every result of this answer carries."""
        body, not_json = self.parse_json(response)
        return (
            body,
            not_json,
            {"http_status": response.status_code, "body": body, "raw_text": cut(scrub(response.text))},
        )

    @staticmethod
    def parse_json(response: requests.Response) -> tuple[Any, str | None]:
        """The JSON body, or ``(None, why not)``."""
        text = response.text
        if not text.strip():
            return None, "empty body"
        try:
            return json.loads(text), None
        except ValueError as exc:
            content_type = response.headers.get("Content-Type", "unknown content type")
            snippet = " ".join(text[:120].split())
            return None, f"body is not JSON ({content_type}; {exc.msg} at character {exc.pos}): {snippet!r}"


class AnswerTooSlow(requests.exceptions.ReadTimeout):
    """The answer kept coming, a little at a time, past the whole-call deadline."""


class AnswerTooLarge(requests.exceptions.ContentDecodingError):
    """The answer was larger than MAX_BODY_BYTES."""


def _read_bounded(response: requests.Response, *, deadline: float) -> None:
    """Read the body, at most MAX_BODY_BYTES, and only until ``deadline``.

    A blocking read of a trickling body returns only when a whole chunk has arrived, so the deadline is enforced by
    a timer that shuts the socket down from outside; the blocked read then fails and is reported as too slow.
    """
    expired = threading.Event()

    def abort() -> None:
        expired.set()
        connection = getattr(response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    timer = threading.Timer(max(0.0, deadline - time.monotonic()), abort)
    timer.daemon = True
    timer.start()
    chunks, size = [], 0
    try:
        for chunk in response.iter_content(chunk_size=65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise AnswerTooLarge(f"answer larger than {MAX_BODY_BYTES // 2**20} MB; stopped reading")
    except requests.RequestException:
        if expired.is_set():
            raise AnswerTooSlow("the answer was still arriving after the whole-call timeout; stopped reading") from None
        raise
    finally:
        timer.cancel()
        response.close()
    if expired.is_set():
        raise AnswerTooSlow("the answer was still arriving after the whole-call timeout; stopped reading")
    response._content = b"".join(chunks)  # what .content/.text/.json() read from now on
    response._content_consumed = True


def describe_exception(exc: BaseException) -> tuple[str, bool]:
    """A short message for a transport failure, and whether the platform may have received the request."""
    if isinstance(exc, AnswerTooSlow | AnswerTooLarge):
        return str(exc) + " (the platform may have acted)", True
    if isinstance(exc, requests.ConnectTimeout):
        return f"could not connect in time: {scrub(str(exc))}", False
    if isinstance(exc, requests.ReadTimeout):
        return "no answer within the read timeout (the platform may have acted)", True
    if isinstance(exc, requests.ConnectionError):
        text = scrub(str(exc))
        refused = "Connection refused" in text or "NewConnectionError" in text or "Name or service" in text
        if refused:
            return f"could not connect: {text}", False
        return f"connection broken: {text}", True
    if isinstance(exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ContentDecodingError):
        return f"answer cut off: {scrub(str(exc))}", True
    return f"{type(exc).__name__}: {scrub(str(exc))}", True
