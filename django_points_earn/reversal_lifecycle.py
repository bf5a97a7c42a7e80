"""What a platform's answer means for a refund, and the reversals' path through the outbox machine.

The counterpart of :mod:`django_points_earn.lifecycle` for :class:`~django_points_earn.models.Reversal` rows: the
same engine (:mod:`django_points_earn.outbox`) claims them, writes their attempt rows on their earning's timeline,
recovers them after a dead worker and moves them with an audit entry; this module holds their transition table and
:func:`complete`, the one place that decides what an answer to a refund call means. When a refund may be made, and
what it takes, is :mod:`django_points_earn.reversals`.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import accounts, announce, backoff, settlement
from .conf import get_settings
from .models import EarningAttempt, Reversal, Trigger
from .models import ReversalStatus as R
from .outbox import Audit, Machine
from .providers import base as results
from .providers.base import EarnResult

log = logging.getLogger("django_points_earn")

# The platform's word (its refund webhook) settles a refund whatever we knew of it (a lost answer, a failed or
# rejected call): hence ``waiting``/``queued``/``rejected``/``failed`` -> ``reversed``.
ALLOWED: dict[str, frozenset[str]] = {
    R.WAITING: frozenset({R.QUEUED, R.CANCELLED, R.REVERSED}),
    R.QUEUED: frozenset({R.SENDING, R.CANCELLED, R.REVERSED}),
    R.SENDING: frozenset({R.QUEUED, R.REVERSED, R.REJECTED, R.FAILED}),
    R.REJECTED: frozenset({R.QUEUED, R.REVERSED}),
    R.FAILED: frozenset({R.QUEUED, R.REVERSED}),
    R.REVERSED: frozenset(),
    R.CANCELLED: frozenset(),
}

REVERSALS = Machine(
    model=Reversal,
    allowed=ALLOWED,
    noun="refund",
    account_path="record__account",
    timeline="record_id",
    own_key="reversal_id",
    read_with=("record",),
    lease_lost="the worker stopped during the refund call (lease expired); the platform is read before it is resent",
    lease_lost_given_up=(
        "the worker stopped during the refund call (lease expired) and its attempts are used up: not sent again; "
        "check the platform's dashboard"
    ),
)

claim = REVERSALS.claim
release = REVERSALS.release
renew_leases = REVERSALS.renew_leases
next_due = REVERSALS.next_due
accounts_with_due_work = REVERSALS.accounts_with_due_work
recover_expired_leases = REVERSALS.recover_expired_leases


def start_attempt(reversal: Reversal, body: dict[str, Any], *, trigger: str, actor: str = "") -> EarningAttempt:
    """The refund call's attempt row, on its earning's timeline (committed before the call)."""
    return REVERSALS.start_attempt(reversal, body, trigger=trigger, actor=actor)


def remember_remote_before(reversal: Reversal, snapshot: dict[str, Any]) -> None:
    """What the platform showed before our first call: a later lookup that differs means our call landed."""
    Reversal.objects.filter(pk=reversal.pk).update(remote_before=snapshot)
    reversal.remote_before = snapshot


def complete(
    reversal: Reversal, attempt: EarningAttempt | None, result: EarnResult, *, trigger: str = Trigger.WORKER
) -> Reversal:
    """Record the platform's answer to a refund call and move the reversal (and its earning) on."""
    now = timezone.now()
    policy = get_settings().retry
    fields: dict[str, Any] = {
        "lease_token": "",
        "lease_expires_at": None,
        "updated_at": now,
        "response": result.body if result.body is not None else None,
    }
    note = result.message
    if result.status == results.AWARDED:  # the platform confirmed the points were taken back
        to, fields["completed_at"], fields["status_reason"] = R.REVERSED, now, result.message
        note = "points taken back" + (f" ({result.points} points)" if result.points is not None else "")
        if result.remote_reference:
            fields["remote_reference"] = result.remote_reference[:100]
        if result.points is not None:
            fields["points"] = result.points
    elif result.status == results.RATE_LIMITED and reversal.rate_limited < int(policy["MAX_RATE_LIMITED"]):
        to, note = R.QUEUED, ""  # not a failure: no audit entry, the attempt row is the trace
        fields["rate_limited"] = reversal.rate_limited + 1
        fields["next_attempt_at"] = now + timedelta(seconds=backoff.rate_limit_delay(result.retry_after))
    elif result.status in (results.UNAVAILABLE, results.RATE_LIMITED):  # a 429 past its budget uses up attempts
        if result.status == results.RATE_LIMITED:
            fields["rate_limited"] = reversal.rate_limited + 1
        attempts = reversal.attempts + 1
        fields.update(attempts=attempts, outcome_unknown=reversal.outcome_unknown or result.outcome_unknown)
        if attempts >= int(policy["MAX_ATTEMPTS"]):
            to, fields["completed_at"] = R.FAILED, now
            note = fields["status_reason"] = f"gave up after {attempts} attempts: {result.message}"
        else:
            to = R.QUEUED
            fields["next_attempt_at"] = now + timedelta(seconds=backoff.retry_delay(attempts))
            note = fields["status_reason"] = f"attempt {attempts} failed ({result.message}); will retry"
    else:  # rejected, duplicate, unauthorized, forbidden: a human decides
        to, fields["completed_at"], fields["status_reason"] = R.REJECTED, now, result.message
        if result.status in (results.UNAUTHORIZED, results.FORBIDDEN):
            accounts.pause_account(reversal.record.account, result.message)
    audit = Audit(trigger, attempt.actor if attempt else "", _about(reversal, note)) if note else None
    with transaction.atomic():
        moved = REVERSALS.finish_and_move(
            reversal, attempt, result, R.SENDING, to, fields, lease_token=reversal.lease_token, audit=audit
        ).moved
        if not moved and to == R.REVERSED:
            # The sweep took our lease (it thought this worker dead) and queued the refund again or gave it up, yet
            # the platform confirmed: its word wins, as for an earning's award.
            moved = any(REVERSALS.move(reversal, was, to, fields, audit=audit) for was in (R.QUEUED, R.FAILED))
        if not moved:
            log.warning("refund %s: result %s arrived after it moved on; kept on attempt only", reversal.pk, to)
            return Reversal.objects.select_related("record").get(pk=reversal.pk)
        if to == R.REVERSED:
            settlement.apply_reversal(
                reversal.record,
                note=f"refund {reversal.refund_id}: points taken back",
                trigger=trigger,
                fully=True if result.remote_status == results.FULLY_REVERSED else None,  # never less than taken
            )
            announce.reversal_reversed(reversal)
    return Reversal.objects.select_related("record").get(pk=reversal.pk)


def requeue(reversal: Reversal, *, actor: str, note: str = "", trigger: str = Trigger.ADMIN) -> bool:
    """A person sends a failed or rejected refund again, with a fresh budget."""
    if reversal.status not in (R.FAILED, R.REJECTED):
        return False
    note = note or f"sent again by {actor}"
    return REVERSALS.move(
        reversal,
        reversal.status,
        R.QUEUED,
        {
            "attempts": 0,
            "rate_limited": 0,
            "next_attempt_at": timezone.now(),
            "completed_at": None,
            "status_reason": note,
        },
        audit=Audit(trigger, actor, _about(reversal, note)),
    )


def move_unsent(reversal: Reversal, to: str, why: str, *, trigger: str = Trigger.WORKER, actor: str = "") -> bool:
    """A waiting refund moves on without a call: queued (its earning can now be reversed) or cancelled (there is
    nothing to take back)."""
    now = timezone.now()
    fields = {"status_reason": why, **({"next_attempt_at": now} if to == R.QUEUED else {"completed_at": now})}
    return REVERSALS.move(reversal, reversal.status, to, fields, audit=Audit(trigger, actor, _about(reversal, why)))


def confirm_by_platform(
    reversal: Reversal, *, points: Decimal | None, note: str, trigger: str = Trigger.WORKER
) -> bool:
    """The platform says this refund of ours was made (its refund webhook): its word settles the reversal, whatever
    we knew (our call's answer lost, or not yet recorded), and the earning becomes (partially) reversed. A refund
    already ``reversed`` only gets the points the platform names. Returns whether the reversal moved."""
    with transaction.atomic():
        current = Reversal.objects.select_for_update().filter(pk=reversal.pk).values_list("status", flat=True).first()
        if current == R.REVERSED:
            if points is not None:
                Reversal.objects.filter(pk=reversal.pk).update(points=points)
            return False
        if current not in ALLOWED or R.REVERSED not in ALLOWED[current]:
            return False
        fields: dict[str, Any] = {
            "completed_at": timezone.now(),
            "lease_token": "",
            "lease_expires_at": None,
            "status_reason": note,
            **({"points": points} if points is not None else {}),
        }
        if not REVERSALS.move(reversal, current, R.REVERSED, fields, audit=Audit(trigger, "", _about(reversal, note))):
            return False
        settlement.apply_reversal(
            reversal.record, note=f"refund {reversal.refund_id}: points taken back (webhook)", trigger=trigger
        )
        announce.reversal_reversed(reversal)
    return True


def _about(reversal: Reversal, note: str) -> str:
    """An audit note on the earning's timeline names the refund it is about."""
    return f"refund {reversal.refund_id}: {note}"
