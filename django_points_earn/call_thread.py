"""The thread that makes a drain's calls, so the drain's own thread can do its bookkeeping meanwhile.

Points takes one earning call per merchant at a time, so an account's calls are strictly sequential and the fastest
drain is one call per round trip. Writing the previous answer and claiming the next record while the current call is
in flight takes that bookkeeping off the critical path. The database stays with the drain's thread (this thread only
speaks HTTP), and a call never starts before the previous one has returned: one call at a time still.

The drain can also queue the next call while one is in flight; this thread then starts it the moment the answer is
in, if the answer allows (no hand-over between threads on the critical path), or leaves it for the drain to take
back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, NamedTuple, TypeVar

from django.db import connections

from .providers.transport import close_sessions

Item = TypeVar("Item")
Result = TypeVar("Result")


class Answer(NamedTuple, Generic[Item, Result]):
    result: Result
    # The call this thread started right after, by itself, if one was queued and the answer allowed it.
    following: tuple[Item, Future[Answer[Item, Result]]] | None = None


class CallThread(Generic[Item, Result]):
    """One worker thread for the calls of one drain. Use as a context manager: it closes its HTTP sessions.

    ``call(item)`` makes one call; ``may_follow(item, result)`` says whether the queued ``item`` may start now that
    the call in flight answered ``result``.
    """

    def __init__(
        self, account: str, call: Callable[[Item], Result], may_follow: Callable[[Item, Result], bool]
    ) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"points-earn-call-{account}")
        self._call = call
        self._may_follow = may_follow
        self._lock = threading.Lock()
        self._queued: Item | None = None

    def start(self, item: Item) -> Future[Answer[Item, Result]]:
        """Start a call now. Only when no call is in flight: the drain keeps them one at a time."""
        return self._pool.submit(self._run, item)

    def queue_next(self, item: Item) -> None:
        """Start ``item`` as soon as the call in flight answers, if the answer allows it."""
        with self._lock:
            self._queued = item

    def take_back(self) -> Item | None:
        """The queued item, if it was not started (the answer came first, or did not allow it)."""
        with self._lock:
            item, self._queued = self._queued, None
        return item

    def _run(self, item: Item) -> Answer[Item, Result]:
        result = self._call(item)
        with self._lock:
            queued = self._queued
            if queued is None or not self._may_follow(queued, result):
                return Answer(result)
            self._queued = None
            # Runs on this same thread as soon as this call returns: the pool has no other work.
            return Answer(result, (queued, self._pool.submit(self._run, queued)))

    def close(self) -> None:
        """Wait for a call still running (never leave one behind the account lock), then close the sessions.

        Sessions are per thread: this thread's pooled connections would otherwise stay open until collected. A
        process serving many accounts opens and closes a call thread per account, so nothing may outlive one.
        """
        try:
            self._pool.submit(_close_thread_resources).result()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> CallThread[Item, Result]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _close_thread_resources() -> None:
    """In the call thread: its HTTP sessions, and a database connection if a platform's code opened one."""
    close_sessions()
    connections.close_all()
