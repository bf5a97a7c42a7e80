"""Fault injection shared by every platform's sandbox: the kinds, the random rates and latency (:class:`Faults`),
the script of the next calls' faults, and how a faulted call is played (:class:`FaultInjection`)."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, fields, replace
from typing import Any

from .accounting import MerchantCounters
from .response import SandboxResponse
from .timing import latency_seconds, sleep_out

FAULT_KINDS = ("429", "500", "created_500", "slow", "html", "truncated", "reset")
# Answers only a script plays (never drawn at random): a 400 whose words are neither a duplicate nor the key
# error (undocumented), and the documented key error itself.
SCRIPT_ONLY_KINDS = ("400", "invalid_key")
# Faults that strike before the request's work is done: nothing is created.
BEFORE_WORK = frozenset({"429", "500", "html", "reset", *SCRIPT_ONLY_KINDS})

# False while an in-process transport (``responses``) is calling: it raises the timeout itself, at once.
_SLEEP_WHEN_SLOW: ContextVar[bool] = ContextVar("points_sandbox_sleep_when_slow", default=True)


@contextmanager
def raising_timeouts() -> Iterator[None]:
    """Within this block a ``slow`` fault does its work and returns ``fault="timeout"`` without sleeping,
    for transports that raise the client's timeout themselves instead of waiting for it."""
    token = _SLEEP_WHEN_SLOW.set(False)
    try:
        yield
    finally:
        _SLEEP_WHEN_SLOW.reset(token)


def sleeps_when_slow() -> bool:
    """Whether a ``slow`` answer really sleeps here (False inside :func:`raising_timeouts`)."""
    return _SLEEP_WHEN_SLOW.get()


@dataclass(frozen=True)
class Faults:
    """Random fault rates (0..1, per earning call) and latency. A scripted fault always wins over these."""

    latency_ms: float = 0
    latency_jitter_ms: float = 0
    rate_429: float = 0
    rate_5xx: float = 0
    rate_created_500: float = 0
    rate_slow: float = 0
    slow_seconds: float = 12
    rate_html: float = 0
    rate_truncated: float = 0
    rate_reset: float = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
                raise ValueError(f"Faults.{f.name} must be a number >= 0, not {value!r}")
            if f.name.startswith("rate_") and value > 1:
                raise ValueError(f"Faults.{f.name} is a probability; {value!r} is above 1")
        if sum(rate for _, rate in self.rates()) > 1:
            raise ValueError("the fault rates add up to more than 1")

    def rates(self) -> list[tuple[str, float]]:
        """(kind, probability) in the order they are rolled."""
        return [
            ("429", self.rate_429),
            ("500", self.rate_5xx),
            ("created_500", self.rate_created_500),
            ("slow", self.rate_slow),
            ("html", self.rate_html),
            ("truncated", self.rate_truncated),
            ("reset", self.rate_reset),
        ]


class FaultInjection:
    """Mixed into each sandbox. The sandbox sets ``_state`` (its lock), ``_rng``, ``_faults`` and ``_script``, and
    provides ``_fault_answer(kind)`` (its answer to a fault that strikes before the work) and ``_server_error()``.
    ``SCRIPT_KINDS`` are the kinds :meth:`script` accepts."""

    SCRIPT_KINDS: tuple[str, ...] = FAULT_KINDS

    _state: threading.RLock
    _rng: random.Random
    _faults: Faults
    _script: deque[str | None]

    def _fault_answer(self, kind: str) -> SandboxResponse:
        raise NotImplementedError

    def _server_error(self) -> SandboxResponse:
        raise NotImplementedError

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, faults: Faults | None = None, /, **kw: Any) -> Faults:
        """Replace the random fault configuration: ``set_faults(rate_429=0.2, latency_ms=50)``.

        Fields not given go back to their defaults, so ``set_faults()`` turns random faults off.
        """
        new = replace(faults, **kw) if faults is not None else Faults(**kw)
        with self._state:
            self._faults = new
        return new

    def script(self, *kinds: str | None) -> None:
        """Queue faults for the next earning calls, one each, before any random ones.

        A kind is one of ``SCRIPT_KINDS`` (:data:`FAULT_KINDS`, and for Points :data:`SCRIPT_ONLY_KINDS`);
        ``"ok"`` (or None) lets one call through untouched.
        """
        known = self.SCRIPT_KINDS
        for kind in kinds:
            if kind not in (*known, "ok", None):
                raise ValueError(f"unknown fault kind {kind!r}; expected one of {', '.join(known)} or 'ok'")
        with self._state:
            self._script.extend(None if kind == "ok" else kind for kind in kinds)

    def _next_fault(self) -> str | None:
        with self._state:
            if self._script:
                return self._script.popleft()
            roll = self._rng.random()
            for kind, rate in self._faults.rates():
                if roll < rate:
                    return kind
                roll -= rate
            return None

    def _sleep_latency(self) -> None:
        with self._state:
            seconds = latency_seconds(self._faults.latency_ms, self._faults.latency_jitter_ms, self._rng)
        sleep_out(seconds)

    def _play(self, m: MerchantCounters, work: Callable[[], SandboxResponse], simulate_slow: bool) -> SandboxResponse:
        """One faultable call: draw its fault, then answer the fault, or do ``work`` within the latency and
        spoil its answer as the fault says (a 500 after the work, half a body, a timeout)."""
        fault = self._next_fault()
        if fault is not None:
            with self._state:
                m.faults[fault] += 1
        if fault in BEFORE_WORK:
            self._sleep_latency()
            return self._fault_answer(fault)
        response = work()
        self._sleep_latency()  # the work is done within the round trip
        if fault == "created_500":
            return self._server_error()
        if fault == "truncated":
            return replace(response, body=response.body[: len(response.body) // 2])
        if fault == "slow":
            if simulate_slow:
                time.sleep(self._faults.slow_seconds)
            return replace(response, fault="timeout")
        return response
