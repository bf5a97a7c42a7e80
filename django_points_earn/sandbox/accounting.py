"""Per-merchant call accounting shared by every platform's sandbox: the counters the ledger reports, and the
in-flight count around each earning call from which concurrency and overlaps are read."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

from .response import SandboxResponse


class MerchantCounters:
    """One merchant's call counters. A platform's merchant extends :meth:`clear` with its own state."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.in_flight = 0  # not reset by clear(): calls may be running
        self.clear()

    def clear(self) -> None:
        self.calls = 0
        self.overlaps = 0
        self.max_concurrency = 0
        self.responses: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()


def counted_call(
    state: threading.RLock,
    m: MerchantCounters,
    call: Callable[[], SandboxResponse],
    *,
    concurrent_is_overlap: bool,
) -> SandboxResponse:
    """Run one earning call of ``m``, counted: calls, in flight, the highest concurrency, the answer it got.

    ``concurrent_is_overlap`` counts a call that starts while another is in flight as an overlap (a platform
    that does not refuse them; Points counts an overlap where its lock refuses one instead).
    """
    with state:
        m.calls += 1
        m.in_flight += 1
        if concurrent_is_overlap and m.in_flight > 1:
            m.overlaps += 1
        m.max_concurrency = max(m.max_concurrency, m.in_flight)
    response: SandboxResponse | None = None
    try:
        response = call()
        return response
    finally:
        with state:
            m.in_flight -= 1
            if response is not None:
                m.responses[response.fault or str(response.status)] += 1
