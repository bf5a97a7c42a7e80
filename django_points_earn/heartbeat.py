"""A drain's heartbeat: keeps its account locks and its claims alive while (and only while) its process lives.

The account lock and each claimed record's lease are short (``LEASE_SECONDS``, 8 s by default), so that a worker
killed mid-call (SIGKILL, OOM, a lost machine) holds up its accounts for seconds, not for a whole HTTP timeout. A
live worker keeps both for as long as it needs them, however long its calls take: this thread extends them every
quarter lease. One heartbeat serves every account a drain holds (a lock each, and one UPDATE per kind of outbox row
for all their claims), so a process with many accounts has one such thread and one database connection for it. It
runs beside the drain's own thread, so a call made on that thread (a refund, a token fetch) is covered as well as
one in a call thread; and it dies with the process, which is the point.
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
    """Use as a context manager around the work done under the drain's locks: :meth:`add_lock` each account lock
    taken (and :meth:`remove_lock` it before releasing it), :meth:`hold` each claim's lease token (with the outbox
    machine of its kind: an earning's, a refund's)."""

    def __init__(self, name: str, *, lease_seconds: float) -> None:
        self.name = name
        self.lease_seconds = float(lease_seconds)
        self.interval = max(0.25, self.lease_seconds / 4)
        self._locks: dict[str, Lock] = {}
        self._held: dict[Machine, set[str]] = {}
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"points-earn-heartbeat-{name}", daemon=True)
        self.beats = 0

    def add_lock(self, account: str, lock: Lock) -> None:
        with self._mutex:
            self._locks[account] = lock

    def remove_lock(self, account: str) -> None:
        with self._mutex:
            self._locks.pop(account, None)

    def hold(self, machine: Machine, token: str) -> None:
        if token:
            with self._mutex:
                self._held.setdefault(machine, set()).add(token)

    def drop(self, machine: Machine, token: str) -> None:
        with self._mutex:
            self._held.get(machine, set()).discard(token)

    def beat(self) -> None:
        """Extend the locks (each only if it is still ours: a lost lock is never taken back here) and the leases."""
        with self._mutex:
            locks = list(self._locks.items())
            held = [(machine, list(tokens)) for machine, tokens in self._held.items() if tokens]
        for account, lock in locks:
            try:
                lock.reacquire()
            except RedisError as exc:  # the drain's thread finds out too, before the account's next call
                log.warning("account %s: could not extend the account lock: %s", account, exc)
        try:
            for machine, tokens in held:
                machine.renew_leases(tokens, lease_seconds=self.lease_seconds)
        except Exception:
            log.exception("drain %s: could not renew the leases of its calls in flight", self.name)
            # A broken connection stays broken (nothing else here closes it): the next beat must reconnect, or no
            # lease of this drain is renewed again for its whole life.
            connection.close_if_unusable_or_obsolete()
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
