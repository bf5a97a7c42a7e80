"""fabric's API calls with an OAuth bearer token: :class:`FabricHttp`, the client-credentials grant that gets the
token (cached by :mod:`.fabric_token`), and what a call that could not get one means for its record.

Every call carries the account's token, refreshed once on a 401 and the call sent once more. fabric does not
document its token endpoint, so the grant's style is a setting (``GRANT_STYLE``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import requests

from ..conf import get_settings
from .base import RATE_LIMITED, UNAUTHORIZED, UNAVAILABLE, BaseBackend, EarnResult, cut, describe_exception, scrub
from .fabric_token import TOKENS, Token, TokenBackoff, TokenUnavailable, cache_key
from .scrubbing import remember_secret
from .transport import read_bounded

log = logging.getLogger("django_points_earn")

EARN = "v2/earn"
GET_TRANSACTION = "v2/earn/get-transaction"
REVERSE = "v2/earn/reverse"
MEMBERS = "v1/members"
DEFAULT_TOKEN_LIFETIME = 300.0  # seconds, when the token answer has no usable expires_in
# The token endpoint's answers that refuse the credentials (or the request for them): the account is paused for a
# human. Anything else that gives no token (no answer, 5xx, 404, 429, a 200 without one) may pass: retried.
REFUSED_CREDENTIALS = (400, 401, 403)


class FabricHttp(BaseBackend):
    """The transport of every fabric call: :meth:`_call` sends it with a fresh bearer token."""

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


def _oauth_error(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    parts = [str(body.get(k)) for k in ("error", "error_description", "message") if body.get(k)]
    return cut(scrub(" - ".join(parts)), 300)
