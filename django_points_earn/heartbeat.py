"""A drain's heartbeat: keeps its account lock and its claims alive while (and only while) its process lives.

The account lock and each claimed record's lease are short (``LEASE_SECONDS``, 8 s by default), so that a worker
killed mid-call (SIGKILL, OOM, a lost machine) holds up its account for seconds, not for a whole HTTP timeout. A
live worker keeps both for as long as it needs them, however long its call takes: this thread extends them every
quarter lease. It runs beside the drain's own thread, so a call made on that thread (a refund, a token fetch)
is covered as well as one in the call thread; and it dies with the process, which is the point.
"""

from __future__ import annotations

import logging
import threading

from django.db import connection
from redis.exceptions import RedisError
from redis.lock import Lock

from .outbox import Machine

log = logging.getLogger("django_points_earn")


class Heartbeat:
    """Use as a context manager around the work done under ``lock``; :meth:`hold` each claim's lease token (with
    the outbox machine of its kind: an earning's, a refund's)."""

    def __init__(self, account: str, lock: Lock, *, lease_seconds: float) -> None:
        self.account = account
        self.lease_seconds = float(lease_seconds)
        self.interval = max(0.25, self.lease_seconds / 4)
        self._lock = lock
        self._held: dict[Machine, set[str]] = {}
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"points-earn-heartbeat-{account}", daemon=True)
        self.beats = 0

    def hold(self, machine: Machine, token: str) -> None:
        if token:
            with self._mutex:
                self._held.setdefault(machine, set()).add(token)

    def drop(self, machine: Machine, token: str) -> None:
        with self._mutex:
            self._held.get(machine, set()).discard(token)

    def beat(self) -> None:
        """Extend the lock (if it is still ours: a lost lock is never taken back here) and the held leases."""
        try:
            self._lock.reacquire()
        except RedisError as exc:  # the drain's thread finds out too, before its next call
            log.warning("account %s: could not extend the account lock: %s", self.account, exc)
        with self._mutex:
            held = [(machine, list(tokens)) for machine, tokens in self._held.items() if tokens]
        try:
            for machine, tokens in held:
                machine.renew_leases(tokens, lease_seconds=self.lease_seconds)
        except Exception:
            log.exception("account %s: could not renew the leases of its calls in flight", self.account)
        self.beats += 1

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self.beat()
        finally:
            connection.close()  # this thread's own database connection

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
