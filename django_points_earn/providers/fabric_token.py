"""fabric's OAuth access tokens: fetched with the client credentials, cached per account for the whole process.

Every job of a worker process shares the cache (module level), so a drain job does not ask the token endpoint
again while the token is fresh. A token lives in memory only: never in the database, a log line or a message.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class TokenUnavailable(Exception):
    """No token could be had (endpoint down, credentials refused). ``str()`` is safe to show: it never holds the
    client secret or a token."""

    def __init__(self, message: str, http_status: int | None = None):
        super().__init__(message)
        self.http_status = http_status


@dataclass(eq=False)
class Token:
    value: str = field(repr=False)
    refresh_at: float  # time.monotonic() after which a new token is fetched before the next call
    expires_in: float

    def fresh(self) -> bool:
        return time.monotonic() < self.refresh_at


class TokenCache:
    """Thread-safe: one lock per key, so only one thread fetches an account's token and the others reuse it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._tokens: dict[tuple[str, ...], Token] = {}

    def get(self, key: tuple[str, ...], fetch: Callable[[], tuple[str, float]], *, margin: float) -> Token:
        """The cached token for ``key``, or a new one from ``fetch() -> (token, expires_in)``."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            token = self._tokens.get(key)
            if token is not None and token.fresh():
                return token
            started = time.monotonic()
            value, expires_in = fetch()
            # Refresh a little early (at most half the lifetime), so no call goes out with a token about to lapse.
            early = min(max(0.0, margin), expires_in / 2)
            token = Token(value=value, refresh_at=started + expires_in - early, expires_in=expires_in)
            self._tokens[key] = token
            return token

    def invalidate(self, key: tuple[str, ...], token: Token) -> None:
        """Forget ``token`` after a 401, unless another thread already replaced it with a newer one."""
        with self._guard:
            if self._tokens.get(key) is token:
                del self._tokens[key]

    def clear(self) -> None:
        with self._guard:
            self._tokens.clear()


TOKENS = TokenCache()


def cache_key(account: str, token_url: str, client_id: str, client_secret: str) -> tuple[str, ...]:
    """Changing the credentials in settings must not reuse the old token; only a digest of the secret is kept."""
    digest = hashlib.sha256(client_secret.encode()).hexdigest()[:16]
    return (account, token_url, client_id, digest)
