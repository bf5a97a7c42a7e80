"""Ask the platform what it holds for an earning we sent, and record any disagreement (never "fix" it).

Used by ``points_reconcile --verify-remote`` and by the admin's "verify with the platform". The lookup is made
under the account's lock, so it never overlaps the account's earning calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import LockError

from . import lifecycle, queueing
from .conf import get_settings
from .models import EarningRecord, Status, Trigger
from .providers import get_backend
from .providers.base import LookupResult, PlatformError

# The platform states that agree with each local state (Points order_status values).
AGREEING = {
    Status.AWARDED: {"approved", "captured", "completed"},
    Status.PARTIALLY_REVERSED: {"partially_refunded"},
    Status.REVERSED: {"fully_refunded", "cancelled"},
}


@dataclass
class Verification:
    remote_status: str = ""
    drift: str = ""
    error: str = ""


def compare(record: EarningRecord, seen: LookupResult) -> str:
    """What differs between our record and the platform's answer, in words; "" when they agree."""
    if not seen.found:
        return "the platform does not know this earning"
    agreeing = AGREEING.get(record.status)
    if agreeing is not None and seen.remote_status and seen.remote_status not in agreeing:
        return f"the platform says {seen.remote_status}, but it is {record.status} here"
    if record.status == Status.AWARDED and seen.points is not None and record.points is not None:
        if seen.points != record.points:
            return f"the platform shows {seen.points} points, {record.points} here"
    return ""


def verify_record(
    record: EarningRecord, *, actor: str, trigger: str = Trigger.ADMIN, wait: bool = False
) -> Verification:
    """Look the earning up on its platform and store what was seen. ``wait``: queue behind the account's calls."""
    if not record.remote_id:
        return Verification(error="no platform id to look up (the platform has not given one yet)")
    account = get_settings().account(record.account)
    lock = queueing.account_lock(account)
    if not lock.acquire(blocking=wait, blocking_timeout=lock.timeout if wait else None):
        return Verification(error="the account is sending right now; try again in a moment")
    try:
        seen = get_backend(account).lookup(record.remote_id)
    except PlatformError as exc:
        return Verification(error=str(exc))
    finally:
        try:
            lock.release()
        except LockError:
            pass
    drift = compare(record, seen)
    lifecycle.record_remote_check(record, remote_status=seen.remote_status, drift=drift, actor=actor, trigger=trigger)
    return Verification(remote_status=seen.remote_status, drift=drift)
