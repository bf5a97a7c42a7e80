"""fabric's OAuth access tokens: fetched with the client credentials, cached per account for the whole process.

Every job of a worker process shares the cache (module level), so a drain job does not ask the token endpoint
again while the token is fresh. A token lives in memory only: never in the database, a log line or a message.

A failure that may pass (the endpoint down, slow, answering 5xx) is remembered with a back-off: until it is over,
nobody waits for the endpoint again, and a token still valid (refreshed early, not yet expired) keeps being used.
A refusal of the credentials is not remembered: it pauses the account, and a resume must ask again.

:meth:`TokenCache.share` and :meth:`TokenCache.apply` let a worker's parent process learn what its forked jobs
fetched (or failed to fetch), so the next job starts with the token, or with the back-off (``worker.py``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class TokenUnavailable(Exception):
    """No token could be had. ``str()`` is safe to show: it never holds the client secret or a token.

    ``transient``: the endpoint failed in a way that may pass (no answer, 5xx): retried later, never a reason to
    pause the account. Otherwise fabric refused the credentials (or the request for them): a human must look."""

    def __init__(self, message: str, http_status: int | None = None, *, transient: bool = False):
        super().__init__(message)
        self.http_status = http_status
        self.transient = transient


class TokenBackoff(TokenUnavailable):
    """The endpoint failed a moment ago and was not asked again: ``retry_after`` seconds until it is."""

    def __init__(self, failure: Failure, now: float):
        left = max(0.0, failure.retry_at - now)
        super().__init__(
            f"{failure.message} ({now - failure.at:.0f} s ago, {failure.count} time(s) in a row; "
            f"not asked again for {left:.0f} s)",
            failure.http_status,
            transient=True,
        )
        self.retry_after = left


@dataclass(eq=False)
class Token:
    value: str = field(repr=False)
    refresh_at: float  # time.monotonic() after which a new token is fetched before the next call
    expires_in: float
    expires_at: float = float("inf")  # time.monotonic() after which fabric no longer takes it

    def fresh(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.refresh_at

    def usable(self, now: float) -> bool:
        return now < self.expires_at


@dataclass
class Failure:
    message: str
    http_status: int | None
    count: int  # failures in a row
    at: float  # time.monotonic() of the failure
    retry_at: float  # time.monotonic() before which the endpoint is not asked again


def default_backoff(count: int) -> float:
    return min(60.0, 2.0 ** (count - 1))


class TokenCache:
    """Thread-safe: one lock per key, so only one thread fetches an account's token and the others reuse it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._tokens: dict[tuple[str, ...], Token] = {}
        self._failures: dict[tuple[str, ...], Failure] = {}
        self._listener: Callable[[dict[str, Any]], None] | None = None

    def get(
        self,
        key: tuple[str, ...],
        fetch: Callable[[], tuple[str, float]],
        *,
        margin: float,
        backoff: Callable[[int], float] = default_backoff,
    ) -> Token:
        """The cached token for ``key``, or a new one from ``fetch() -> (token, expires_in)``.

        Raises :class:`TokenBackoff` (without calling ``fetch``) while a transient failure is remembered and no
        token is still valid, and what ``fetch`` raised otherwise."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            now = time.monotonic()
            token = self._tokens.get(key)
            if token is not None and token.fresh(now):
                return token
            still_valid = token if token is not None and token.usable(now) else None
            failure = self._failures.get(key)
            if failure is not None and now < failure.retry_at:
                if still_valid is not None:
                    return still_valid
                raise TokenBackoff(failure, now)
            started = time.monotonic()
            try:
                value, expires_in = fetch()
            except TokenUnavailable as exc:
                if exc.transient:
                    done = time.monotonic()
                    count = failure.count + 1 if failure is not None else 1
                    wait = max(0.0, backoff(count))
                    self._remember(key, Failure(str(exc), exc.http_status, count, done, done + wait))
                    if still_valid is not None:
                        return still_valid
                raise
            # Refresh a little early (at most half the lifetime), so no call goes out with a token about to lapse.
            early = min(max(0.0, margin), expires_in / 2)
            token = Token(
                value=value,
                refresh_at=started + expires_in - early,
                expires_in=expires_in,
                expires_at=started + expires_in,
            )
            self._store(key, token)
            return token

    def invalidate(self, key: tuple[str, ...], token: Token) -> None:
        """Forget ``token`` after a 401, unless another thread already replaced it with a newer one."""
        with self._guard:
            if self._tokens.get(key) is token:
                del self._tokens[key]
                self._notify({"key": list(key), "drop": token.value})

    def clear(self) -> None:
        with self._guard:
            self._tokens.clear()
            self._failures.clear()

    # -- what a forked job tells its worker ------------------------------------------------------------------
    def share(self, listener: Callable[[dict[str, Any]], None] | None) -> None:
        """Call ``listener(event)`` for every token fetched, dropped or failed from now on (events hold a token:
        they are for another process of the same worker, in memory, never for a log)."""
        self._listener = listener

    def apply(self, event: dict[str, Any]) -> None:
        """Take in an event another process of this worker shared (monotonic times are system-wide on Linux)."""
        key = tuple(str(k) for k in event.get("key") or ())
        if not key:
            return
        with self._guard:
            if "token" in event:
                current = self._tokens.get(key)
                if current is None or current.expires_at < float(event["expires_at"]):
                    self._tokens[key] = Token(
                        value=str(event["token"]),
                        refresh_at=float(event["refresh_at"]),
                        expires_in=float(event["expires_in"]),
                        expires_at=float(event["expires_at"]),
                    )
                    self._failures.pop(key, None)
            elif "drop" in event:
                current = self._tokens.get(key)
                if current is not None and current.value == event["drop"]:
                    del self._tokens[key]
            elif "failure" in event:
                failure = Failure(**event["failure"])
                known = self._failures.get(key)
                if known is None or known.at < failure.at:
                    self._failures[key] = failure

    def _store(self, key: tuple[str, ...], token: Token) -> None:
        with self._guard:
            self._tokens[key] = token
            self._failures.pop(key, None)
            self._notify(
                {
                    "key": list(key),
                    "token": token.value,
                    "refresh_at": token.refresh_at,
                    "expires_in": token.expires_in,
                    "expires_at": token.expires_at,
                }
            )

    def _remember(self, key: tuple[str, ...], failure: Failure) -> None:
        with self._guard:
            self._failures[key] = failure
            self._notify({"key": list(key), "failure": failure.__dict__.copy()})

    def _notify(self, event: dict[str, Any]) -> None:
        if self._listener is not None:
            try:
                self._listener(event)
            except Exception:  # noqa: S110 - sharing is an optimisation; the call in progress must not fail over it
                pass

    def _after_fork_in_child(self) -> None:
        """A forked child must not inherit a lock held by another thread of its parent (it would never be
        released): fresh locks, the same tokens and failures."""
        self._guard = threading.Lock()
        self._locks = {}
        self._listener = None


TOKENS = TokenCache()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=TOKENS._after_fork_in_child)


def cache_key(account: str, token_url: str, client_id: str, client_secret: str) -> tuple[str, ...]:
    """Changing the credentials in settings must not reuse the old token; only a digest of the secret is kept."""
    digest = hashlib.sha256(client_secret.encode()).hexdigest()[:16]
    return (account, token_url, client_id, digest)
