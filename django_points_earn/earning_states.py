"""An earning's states as data for the outbox machine: which moves are allowed, which states the platform's word
settles, and :data:`EARNINGS`, the machine every earning moves through."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.db.models import Q

from . import announce as signals_out
from .models import EarningRecord, Reversal, ReversalStatus, Status
from .outbox import Machine

# The platform's word (its webhook, or an answer that arrived after a sweep took the lease) may settle a record
# that is not ``sending``: hence ``queued``/``failed``/``blocked`` -> ``awarded``.
ALLOWED: dict[str, frozenset[str]] = {
    # Held until the return window closes: released to the queue, or cancelled by a full refund meanwhile.
    Status.HELD: frozenset({Status.QUEUED, Status.CANCELLED, Status.RESOLVED}),
    Status.QUEUED: frozenset(
        {Status.SENDING, Status.REJECTED, Status.CANCELLED, Status.AWARDED, Status.PENDING_ACTIVATION}
    ),
    Status.SENDING: frozenset(
        {
            Status.AWARDED,
            Status.PENDING_ACTIVATION,
            Status.ACCEPTED,
            Status.REJECTED,
            Status.BLOCKED,
            Status.FAILED,
            Status.QUEUED,
            Status.SKIPPED,
        }
    ),
    Status.REJECTED: frozenset({Status.QUEUED, Status.RESOLVED, Status.CANCELLED, Status.AWARDED}),
    Status.BLOCKED: frozenset({Status.QUEUED, Status.RESOLVED, Status.CANCELLED, Status.AWARDED}),
    Status.FAILED: frozenset(
        {Status.QUEUED, Status.RESOLVED, Status.CANCELLED, Status.AWARDED, Status.PENDING_ACTIVATION}
    ),
    Status.PENDING_ACTIVATION: frozenset({Status.AWARDED, Status.RESOLVED}),
    Status.ACCEPTED: frozenset({Status.AWARDED, Status.RESOLVED}),
    Status.RESOLVED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.AWARDED: frozenset({Status.REVERSED, Status.PARTIALLY_REVERSED}),
    Status.PARTIALLY_REVERSED: frozenset({Status.REVERSED, Status.PARTIALLY_REVERSED}),
    Status.REVERSED: frozenset(),
    Status.SKIPPED: frozenset(),
}
INITIAL = {Status.QUEUED, Status.HELD, Status.REJECTED, Status.SKIPPED}
# remote_status of an ``accepted`` record: the platform answered "duplicate" (it has the order), nothing more.
DUPLICATE_CONFIRMED = "duplicate_confirmed"
# States the platform's id of the order (its webhook) settles as ``awarded``: the platform has credited the order,
# whatever we knew of it before (a lost answer, a pending customer, a duplicate answer).
SETTLED_BY_PLATFORM_ID = (Status.ACCEPTED, Status.PENDING_ACTIVATION, Status.QUEUED, Status.FAILED, Status.BLOCKED)
# States a human must act on; ``earning_needs_attention`` is sent when a record reaches one.
NEEDS_A_HUMAN = (Status.REJECTED, Status.BLOCKED, Status.FAILED)


def settled_by_platform_id(status: str, outcome_unknown: bool) -> bool:
    """Whether the platform's id of the order makes this record ``awarded``: the states above, and a ``rejected``
    one whose earlier call's outcome was unknown (e.g. an unexpected 400 on the resend: the first call had landed)."""
    return status in SETTLED_BY_PLATFORM_ID or (status == Status.REJECTED and outcome_unknown)


def _needs_a_body(fields: Mapping[str, Any]) -> Q | None:
    """Nothing without a request body is ever queued to be sent (unless the move itself gives it one)."""
    return None if "payload" in fields else Q(payload__isnull=False)


def announce(record: EarningRecord) -> None:
    """The shop's signals for a record that just settled, sent once the transaction commits (``announce``)."""
    signals_out.earning_settled(record)


def _announce_given_up(pks: list[int]) -> None:
    for record in EarningRecord.objects.filter(pk__in=pks):
        announce(record)


EARNINGS = Machine(
    model=EarningRecord,
    allowed=ALLOWED,
    noun="earning",
    account_path="account",
    queued_guard=_needs_a_body,
    lease_lost=(
        "the worker stopped during the call (lease expired); the outcome is unknown, so the same order number is "
        "sent again"
    ),
    lease_lost_given_up=(
        "the worker stopped during the call (lease expired); the outcome is unknown, so the same order number was "
        "not sent again: attempts are used up"
    ),
    given_up_hooks=[_announce_given_up],
    waiters=(Reversal, "record", ReversalStatus.WAITING),  # refunds waiting for the earning (SETTLED_HOOKS)
)

# Work of the modules above the lifecycle that must happen in the same transaction as an earning's settling, for
# the refunds that waited for it (``EARNINGS.waiters``). They register it when the app is ready, so nothing here
# imports up: run after an answer or the platform's word moved a record. (Work after a claim was given back unsent
# registers on ``EARNINGS.given_back_hooks``.)
SETTLED_HOOKS: list[Callable[[EarningRecord], None]] = []


def run_settled_hooks(record: EarningRecord, *, waited_on: bool | None = None) -> None:
    """``waited_on``: whether a refund waits for the record, when the move's own statement said so (``Move``);
    ``False`` skips the hooks, which only ever act for such a refund (no query to find none)."""
    if waited_on is False:
        return
    for hook in SETTLED_HOOKS:
        hook(record)
