"""One thread per process that enforces every call's whole-call deadline (see ``transport.read_bounded``).

A blocking read of a trickling body returns only when a whole chunk has arrived, so a deadline must be enforced from
outside the reading thread. A timer thread per call did that at the price of starting a thread for every earning;
with many accounts served by one process that is hundreds of threads a second. This one thread keeps the deadlines
in a heap and sleeps until the earliest; a call that ends in time cancels its entry (a flag: no lock, no wake-up).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger("django_points_earn")


class Deadline:
    """A scheduled action; :meth:`cancel` it once the call ended in time."""

    __slots__ = ("action",)

    def __init__(self, action: Callable[[], None]) -> None:
        self.action: Callable[[], None] | None = action

    def cancel(self) -> None:
        self.action = None


class Watchdog:
    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def at(self, when: float, action: Callable[[], None]) -> Deadline:
        """Run ``action`` (on the watchdog's thread) at ``time.monotonic() == when`` unless cancelled first."""
        entry = Deadline(action)
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), entry))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="points-earn-call-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is entry:
                self._cond.notify()  # earlier than what the thread sleeps towards
        return entry

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap:
                    self._cond.wait()
                when, _, entry = self._heap[0]
                if entry.action is None:
                    heapq.heappop(self._heap)  # ended in time
                    continue
                wait = when - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                action, entry.action = entry.action, None
            if action is not None:
                try:
                    action()
                except Exception:  # an abort that fails must not stop every other call's deadline
                    log.exception("a call's deadline action failed")


WATCHDOG = Watchdog()
# A forked child (RQ's work horse) has no watchdog thread, and may have inherited the condition's lock held.
os.register_at_fork(after_in_child=WATCHDOG._reset)
