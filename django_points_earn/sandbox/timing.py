"""When the sandbox answers: ``latency_ms`` is the round trip it plays, its own work included.

A platform with a 20 ms round trip answers 20 ms after the request went out, whatever it does meanwhile. The
sandbox is Python, and reading, validating and bookkeeping take it a millisecond or two; sleeping the whole latency
on top would model a slower platform than asked for. So the HTTP server notes when each request arrived, and the
latency sleep only fills up the time to ``arrived + latency``. In process (behind ``responses``) there is no
arrival to note: the sleep is the whole latency, as before.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_ARRIVED: ContextVar[float | None] = ContextVar("sandbox_request_arrived", default=None)


@contextmanager
def request_arrived(at: float) -> Iterator[None]:
    """Within this block, the request being handled arrived at ``at`` (``time.monotonic()``)."""
    token = _ARRIVED.set(at)
    try:
        yield
    finally:
        _ARRIVED.reset(token)


def latency_seconds(latency_ms: float, jitter_ms: float, rng: random.Random) -> float:
    """This call's latency: the configured one, jittered uniformly by up to ``jitter_ms`` either way."""
    jitter = rng.uniform(-jitter_ms, jitter_ms) if jitter_ms else 0.0
    return max(0.0, latency_ms + jitter) / 1000


def sleep_out(seconds: float) -> None:
    """Sleep until ``seconds`` after the request arrived (after now, when no arrival was noted)."""
    arrived = _ARRIVED.get()
    remaining = seconds if arrived is None else seconds - (time.monotonic() - arrived)
    if remaining > 0:
        time.sleep(remaining)
