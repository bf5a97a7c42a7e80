"""The fabric sandbox's tokens: API clients, the OAuth token endpoint (client credentials, its grant styles,
scope and outages) and the bearer check on every API call."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from .fabric_rules import basic_credentials, credentials_body, json_response, oauth_error
from .fabric_state import Client, FabricMerchant
from .faults import Faults, sleeps_when_slow
from .response import SandboxResponse, as_bytes, bad_gateway, connection_reset

TOKEN_PATH = "/oauth2/default/v1/token"  # noqa: S105 - a path, not a password
GRANT_STYLES = ("basic", "form", "json", "any")
TOKEN_OUTAGES = ("500", "html", "reset", "slow")


class FabricTokens:
    """Mixed into :class:`~django_points_earn.sandbox.fabric.FabricSandbox`, which holds the state named below
    and provides ``_merchant()`` (a program by name or client id)."""

    _state: threading.RLock
    _clients: dict[str, Client]
    _merchants: dict[str, FabricMerchant]
    _tokens: dict[str, tuple[str, float]]  # token -> (client id, monotonic expiry)
    _token_outage: str | None
    _token_requests: int
    _unauthenticated: int
    _faults: Faults
    token_lifetime: float
    grant_style: str
    scope: str | None

    _merchant: Callable[[str], FabricMerchant]

    # -- clients and outages ------------------------------------------------------------------------------

    def add_client(self, client_id: str, secret: str, merchant: str = "sandbox") -> None:
        """Let ``client_id``/``secret`` get tokens for ``merchant`` (created if new)."""
        if not client_id or not secret:
            raise ValueError("a client id and secret cannot be empty")
        with self._state:
            self._merchants.setdefault(merchant, FabricMerchant(merchant))
            self._clients[client_id] = Client(secret, merchant)

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

    # -- the token endpoint -------------------------------------------------------------------------------

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
            return connection_reset()
        if outage == "slow":
            if sleeps_when_slow():
                time.sleep(self._faults.slow_seconds)
            return replace(oauth_error(503, "temporarily_unavailable", "too slow"), fault="timeout")
        if outage == "html":
            return bad_gateway()
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

    def token_requests(self, merchant: str | None = None) -> int:
        """Calls to the token endpoint (of one merchant's clients, or all, unknown clients included)."""
        with self._state:
            if merchant is None:
                return self._token_requests
            return self._merchant(merchant).token_requests

    # -- the bearer check ---------------------------------------------------------------------------------

    def _authenticate(self, authorization: str) -> tuple[FabricMerchant | None, str]:
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
