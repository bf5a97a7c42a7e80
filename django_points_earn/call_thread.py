"""The thread that makes a drain's calls, so the drain's own thread can do its bookkeeping meanwhile.

Points takes one earning call per merchant at a time, so an account's calls are strictly sequential and the fastest
drain is one call per round trip. Writing the previous answer and claiming the next record while the current call is
in flight takes that bookkeeping off the critical path. The database stays with the drain's thread (this thread only
speaks HTTP), and the drain never submits a call before the previous one has returned: one call at a time still.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from .providers.base import close_sessions

T = TypeVar("T")


class CallThread:
    """One worker thread for the calls of one drain. Use as a context manager: it closes its HTTP sessions."""

    def __init__(self, account: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"points-earn-call-{account}")

    def submit(self, fn: Callable[..., T], /, *args: object, **kwargs: object) -> Future[T]:
        return self._pool.submit(fn, *args, **kwargs)

    def close(self) -> None:
        """Wait for a call still running (never leave one behind the account lock), then close the sessions.

        Sessions are per thread: this thread's pooled connections would otherwise stay open until collected.
        """
        try:
            self._pool.submit(close_sessions).result()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> CallThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
