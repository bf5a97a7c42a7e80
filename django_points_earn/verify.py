"""Ask the platform what it holds for an earning we sent, and record how it differs from ours.

Used by the admin's "verify with the platform" and by ``points_reconcile --verify-remote``. A lookup is a call to
the platform like any other, so it is made under the account's lock: never alongside an earning call for the same
merchant. The admin does not wait for the lock (``wait=False``: "try again in a moment"); reconcile does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from django.core.exceptions import ImproperlyConfigured
from redis.exceptions import LockError

from . import corrections, queueing
from .conf import get_settings
from .models import EarningRecord, Status, Trigger
from .providers import get_backend
from .providers.results import LookupResult, PlatformError

log = logging.getLogger("django_points_earn")

# Our states in which the platform should hold the earning.
HELD_REMOTELY = (Status.AWARDED, Status.PARTIALLY_REVERSED, Status.REVERSED)
NOT_FOUND = "not_found"

# VerifyOutcome.kind
CHECKED = "checked"  # the platform answered; ``drift`` says how it differs ("" = agrees)
BUSY = "busy"  # another call holds the account: try again in a moment
NO_REMOTE_ID = "no_remote_id"  # nothing to look up by (never awarded, or awarded without an id)
ERROR = "error"  # the lookup failed (network, unexpected answer, account not configured)


@dataclass
class VerifyOutcome:
    kind: str
    seen_status: str = ""
    drift: str = ""
    message: str = ""
    lookup: LookupResult | None = None

    @property
    def error(self) -> str:
        """Why the platform could not be asked ("" when it was)."""
        return self.message if self.kind in (ERROR, BUSY, NO_REMOTE_ID) else ""


def compare(record: EarningRecord, found: LookupResult) -> str:
    """How the platform's view differs from our record, in one line ("" when it agrees)."""
    if not found.found:
        if record.status in HELD_REMOTELY:
            return f"the platform does not know {record.remote_id} although it is {record.status} here"
        return ""
    differences = []
    if record.status not in HELD_REMOTELY:
        differences.append(
            f"the platform holds it ({found.remote_status or 'no state'}) but it is {record.status} here"
        )
    if record.remote_status and found.remote_status and found.remote_status != record.remote_status:
        differences.append(f"platform state {record.remote_status} → {found.remote_status}")
    if record.points is not None and found.points is not None and Decimal(record.points) != found.points:
        differences.append(f"points {record.points} here, {found.points} on the platform")
    if record.remote_reference and found.remote_reference and found.remote_reference != record.remote_reference:
        differences.append(f"reference {record.remote_reference} here, {found.remote_reference} on the platform")
    return "; ".join(differences)


def verify_record(
    record: EarningRecord, *, actor: str, trigger: str = Trigger.ADMIN, wait: bool = False
) -> VerifyOutcome:
    """Look the earning up on its platform (under the account lock) and record what was seen and any drift."""
    if not record.remote_id:
        return VerifyOutcome(NO_REMOTE_ID, message="no platform id to look up (the platform has not confirmed one)")
    try:
        account = get_settings().account(record.account)
        backend = get_backend(account)
    except ImproperlyConfigured as exc:
        return VerifyOutcome(ERROR, message=str(exc))
    lock = queueing.account_lock(account)
    if not lock.acquire(blocking=wait, blocking_timeout=lock.timeout if wait else None):
        return VerifyOutcome(BUSY, message="the account is busy with another call; try again in a moment")
    try:
        found = backend.lookup(record.remote_id)
    except PlatformError as exc:
        return VerifyOutcome(ERROR, message=str(exc))
    finally:
        try:
            lock.release()
        except LockError:
            log.warning("account %s: lock had already expired when a lookup released it", record.account)
    seen = (found.remote_status or "found") if found.found else NOT_FOUND
    drift = compare(record, found)
    corrections.record_remote_check(record, seen, drift, actor=actor, trigger=trigger)
    return VerifyOutcome(CHECKED, seen_status=seen, drift=drift, message=found.message, lookup=found)
