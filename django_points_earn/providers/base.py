"""The provider layer's shape: one result vocabulary, one control flow, HTTP done once.

A backend turns a provider-neutral :class:`~django_points_earn.earning_request.EarningRequest` into the platform's body
(``build_payload``, which may refuse with :class:`InvalidEarningRequest`), sends it (``earn``) and says what the
answer means (an :class:`EarnResult`). It never writes to the database and never retries: retries belong to the
queue, decided by the lifecycle from the result.

The result vocabulary lives in :mod:`.results`, the scrubbing of secrets in :mod:`.scrubbing` and the reading of
one answer in :mod:`.transport`; the names a backend needs from them are re-exported here, so that a platform's
module (and the lifecycle) imports from one place.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any, ClassVar

import requests

from ..conf import AccountConfig
from ..earning_request import EarningRequest
from .results import (
    AWARDED,
    DUPLICATE,
    FORBIDDEN,
    FULLY_REVERSED,
    PENDING_ACTIVATION,
    RATE_LIMITED,
    REJECTED,
    RESULT_STATUSES,
    SKIPPED,
    UNAUTHORIZED,
    UNAVAILABLE,
    EarnResult,
    LookupResult,
    PlatformError,
    PointsEarnError,
)
from .scrubbing import cut, scrub
from .transport import account_session, describe_exception, parse_retry_after, read_bounded

# What a backend (and the lifecycle, the reversals and dispatch) takes from here without knowing which module holds it.
__all__ = [
    "AWARDED",
    "DUPLICATE",
    "FORBIDDEN",
    "FULLY_REVERSED",
    "PENDING_ACTIVATION",
    "RATE_LIMITED",
    "REJECTED",
    "RESULT_STATUSES",
    "SKIPPED",
    "UNAUTHORIZED",
    "UNAVAILABLE",
    "BaseBackend",
    "EarnResult",
    "LookupResult",
    "PlatformError",
    "PointsEarnError",
    "cut",
    "describe_exception",
    "http_warnings",
    "parse_retry_after",
    "scrub",
    "to_json_number",
]


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
    # True when the backend implements build_rating_payload() and earn_rating(): approved reviews earn (Points'
    # rating channels). Otherwise a review is recorded as skipped, with the reason.
    supports_ratings: ClassVar[bool] = False
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

    def build_rating_payload(self, request: Any) -> dict[str, Any]:
        """The body of an approved review's earning (a :class:`~django_points_earn.rating_request.RatingRequest`)."""
        raise NotImplementedError

    def earn_rating(
        self, kind: str, payload: dict[str, Any], *, request_id: str, outcome_unknown: bool = False
    ) -> EarnResult:
        """Send a review's earning (``kind``: store_rating or product_rating)."""
        return EarnResult(REJECTED, f"{self.label or self.provider} has no rating earning channel")

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
        return account_session(self.account.name, self.account.base_url)

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
            read_bounded(response, deadline=started + sum(self.account.timeout))
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
