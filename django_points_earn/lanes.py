"""Many accounts' drains in one thread: each account is a *lane*, and the scheduler resumes whichever lane can go on.

A lane is a generator (:func:`django_points_earn.dispatch` writes them). It does its bookkeeping (claims, attempt
rows, recording answers) on the scheduler's thread, with that thread's one database connection, and *pauses* —
yields a :class:`Pause` — wherever it would otherwise block: while its account's call is in flight (in the account's
own call thread), and while the account must wait (a backoff, a cooldown). Meanwhile the other lanes go on. So one
process keeps one call in flight for each of many accounts, the per-account rule holds as before (each lane holds
its account's lock, and its calls are strictly one after another), and an idle account costs nothing: its lane has
ended and its lock is free.

Scheduling rule (docs/capacity.md): lanes are resumed in the order they were taken, each as soon as what it waits
for is there; a drain with a free slot takes the account that has waited longest for a drain (``adopt``) within
``adopt_every`` seconds; when every slot is taken and another account waits, a lane gives up its slot after its turn
(``DRAIN["TURN_SECONDS"]``) and queues behind it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_for_any
from dataclasses import dataclass

from django.db import InterfaceError, OperationalError
from rq.timeouts import BaseTimeoutException

log = logging.getLogger("django_points_earn")

# Failures that are not one account's: the database failing under every lane, the job's time being up.
STOPS_EVERY_LANE = (OperationalError, InterfaceError, BaseTimeoutException)


@dataclass(frozen=True)
class Pause:
    """What a lane waits for: a call's answer (``future``), some time (``seconds``), or whichever comes first."""

    future: Future | None = None
    seconds: float | None = None


Lane = Generator[Pause, None, None]
# Given how many slots are free and the accounts already held, the new lanes to run (each holds its account).
Adopt = Callable[[int, frozenset[str]], Iterable[tuple[str, Lane]]]


class Scheduler:
    """Runs lanes on the calling thread until every lane has ended (and none is left to adopt)."""

    def __init__(
        self, *, slots: int = 1, adopt: Adopt | None = None, adopt_every: float = 0.25, isolate: bool = False
    ) -> None:
        self.slots = max(1, int(slots))
        self.isolate = isolate  # a lane that raises ends alone (else the error ends every lane and propagates)
        self._adopt = adopt
        self.adopt_every = adopt_every
        self._lanes: dict[str, Lane] = {}
        self._waits: dict[str, tuple[Future | None, float]] = {}  # a paused lane's future and wake-up time
        self._next_adopt = 0.0
        self.steps = 0

    def add(self, name: str, lane: Lane) -> None:
        self._lanes[name] = lane

    @property
    def accounts(self) -> frozenset[str]:
        return frozenset(self._lanes)

    @property
    def full(self) -> bool:
        return len(self._lanes) >= self.slots

    def run(self) -> None:
        try:
            while True:
                now = time.monotonic()
                for name in list(self._lanes):
                    if self._ready(name, now):
                        self._step(name)
                if self._adopt is not None and not self.full and time.monotonic() >= self._next_adopt:
                    self._next_adopt = time.monotonic() + self.adopt_every
                    adopted = list(self._adopt(self.slots - len(self._lanes), self.accounts))
                    for name, lane in adopted:
                        self.add(name, lane)
                    if adopted:
                        continue  # start them now
                if not self._lanes:
                    return
                self._wait()
        except BaseException:
            self.close()  # every lane's own clean-up runs: calls in flight are waited for and recorded
            raise

    def close(self) -> None:
        """End every lane now (at its pause: a ``GeneratorExit`` runs its clean-up)."""
        for name, lane in list(self._lanes.items()):
            try:
                lane.close()
            except Exception:
                log.exception("drain of account %s: could not stop cleanly", name)
            self._lanes.pop(name, None)
            self._waits.pop(name, None)

    # -- internals -----------------------------------------------------------------------------------------------
    def _ready(self, name: str, now: float) -> bool:
        waiting = self._waits.get(name)
        if waiting is None:
            return True
        future, wake_at = waiting
        return (future is not None and future.done()) or now >= wake_at

    def _step(self, name: str) -> None:
        lane = self._lanes[name]
        self.steps += 1
        try:
            pause = next(lane)
        except StopIteration:
            del self._lanes[name]
            self._waits.pop(name, None)
            return
        except Exception as exc:
            if not self.isolate or isinstance(exc, STOPS_EVERY_LANE):
                raise
            # One account's failure (its own clean-up has run: calls recorded, lock released) is not the others':
            # ending every lane for it would stop them each time a drain adopts that account.
            log.exception("drain of account %s failed; its other accounts go on, the sweep brings it back", name)
            del self._lanes[name]
            self._waits.pop(name, None)
            return
        wake_at = time.monotonic() + pause.seconds if pause.seconds is not None else float("inf")
        self._waits[name] = (pause.future, wake_at)

    def _wait(self) -> None:
        """Until a lane can go on (an answer is in, a wait is over) or it is time to look for accounts to adopt."""
        futures = [future for future, _ in self._waits.values() if future is not None]
        wake_at = min((wake for _, wake in self._waits.values()), default=float("inf"))
        if self._adopt is not None and not self.full:
            wake_at = min(wake_at, self._next_adopt)
        timeout = max(0.0, wake_at - time.monotonic()) if wake_at != float("inf") else None
        if futures:
            wait_for_any(futures, timeout=timeout, return_when=FIRST_COMPLETED)
        elif timeout:
            time.sleep(timeout)
