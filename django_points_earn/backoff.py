"""How long to wait before an outbox row is tried again: backoff after a failure, the pause after a 429 (short when
it only said the platform's per-merchant lock was busy), and the bounds every wait is kept within (RETRY's
MIN_DELAY and MAX_DELAY)."""

from __future__ import annotations

import math
import random
from typing import Any

from .conf import get_settings


def retry_delay(attempts: int) -> float:
    """Exponential backoff with full jitter, capped, with a floor so a ~0 draw never hammers the platform."""
    policy = get_settings().retry
    ceiling = min(float(policy["MAX_DELAY"]), float(policy["BASE_DELAY"]) * 2 ** min(max(0, attempts - 1), 64))
    return clamp_delay(random.uniform(0, ceiling))


def rate_limit_delay(retry_after: float | None = None, *, lock_busy: bool = False) -> float:
    """The wait after a 429: the platform's Retry-After if it gave a usable one, else RATE_LIMIT_DELAY; with jitter,
    and always within [MIN_DELAY, MAX_DELAY] (``Retry-After: 0`` is no hot loop, ``inf`` or ``1e30`` no crash).

    ``lock_busy`` (and no usable Retry-After): the 429 only said that another call holds the platform's
    per-merchant lock, which is free again within about one call: 1x-2x LOCK_BUSY_DELAY, which may be below
    MIN_DELAY (the caller allows it for a bounded number of 429s, RETRY["LOCK_BUSY_RETRIES"])."""
    policy = get_settings().retry
    if lock_busy and not _finite(retry_after):
        short = float(policy["LOCK_BUSY_DELAY"])
        short = max(0.0, short) if _finite(short) else float(policy["RATE_LIMIT_DELAY"])
        return min(float(policy["MAX_DELAY"]), short * (1 + random.random()))
    base = retry_after if _finite(retry_after) else float(policy["RATE_LIMIT_DELAY"])
    return clamp_delay(clamp_delay(base) * (1 + random.random()))


def clamp_delay(seconds: float) -> float:
    """Any wait, wherever it comes from, within RETRY's MIN_DELAY and MAX_DELAY (NaN: the floor)."""
    policy = get_settings().retry
    floor, cap = float(policy["MIN_DELAY"]), float(policy["MAX_DELAY"])
    if not _finite(seconds):
        return cap if seconds == float("inf") else floor
    return min(cap, max(floor, float(seconds)))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
