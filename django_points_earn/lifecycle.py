"""What a platform's answer means for an earning, and the earnings' path through the outbox machine.

:func:`complete` decides it (award, retry later, ask a human, pause the account) and nowhere else does; every move is
made by :data:`~django_points_earn.earning_states.EARNINGS` (:mod:`django_points_earn.outbox`): checked against the
transition table, a conditional UPDATE under the worker's lease, its audit entry in the same transaction. Creation
is :mod:`~django_points_earn.earning_insert`, the platform's later word :mod:`~django_points_earn.settlement`,
people's actions :mod:`~django_points_earn.corrections`, an account's switches :mod:`~django_points_earn.accounts`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from . import accounts, backoff, merchant_alerts, outbox_sql, settlement
from .conf import get_settings
from .earning_states import DUPLICATE_CONFIRMED, EARNINGS, announce, run_settled_hooks, settled_by_platform_id
from .models import RATING_KINDS, EarningAttempt, EarningRecord, Status, Trigger
from .outbox import Audit, new_token
from .providers import base as results
from .providers.base import EarnResult

log = logging.getLogger("django_points_earn")

# The earnings' claims and leases are the machine's own.
claim = EARNINGS.claim
release = EARNINGS.release
renew_leases = EARNINGS.renew_leases
extend_lease = EARNINGS.extend_lease

recover_expired_leases = EARNINGS.recover_expired_leases


def blocks_account(result: EarnResult) -> bool:
    """The answer says the account's credentials are refused: no further call until a human resumes it."""
    return result.status in (results.UNAUTHORIZED, results.FORBIDDEN)


def platform_may_be_busy(result: EarnResult) -> bool:
    """No answer within the timeout: the platform's side of the call may still be running (and hold its lock)."""
    return result.outcome_unknown and result.http_status is None and not result.local_error


def next_call_may_follow(result: EarnResult) -> bool:
    """Whether the account's next call may start as soon as this answer is in, before it is even recorded."""
    return not blocks_account(result) and not platform_may_be_busy(result)


def claim_and_start_attempt(
    record: int | EarningRecord, *, lease_seconds: float, trigger: str, actor: str = ""
) -> tuple[EarningRecord, EarningAttempt] | None:
    """:func:`claim` and :func:`start_attempt` in one transaction: one commit instead of two per earning, and a
    failure between them leaves the record due rather than claimed without an attempt. Inside the drain's
    transaction (an answer recorded with the next claim) no savepoint: an error rolls back both, and the drain
    records the answer by itself."""
    with transaction.atomic(savepoint=False):
        claimed = claim(record, lease_seconds=lease_seconds)
        if claimed is None:
            return None
        return claimed, start_attempt(claimed, trigger=trigger, actor=actor)


def hot_path() -> bool:
    """Whether :func:`claim_next_due` can claim here (PostgreSQL), so that a caller asks it first."""
    return outbox_sql.in_use()


def claim_next_due(
    account: str, *, lease_seconds: float, trigger: str, actor: str = ""
) -> tuple[EarningRecord, EarningAttempt] | None:
    """The drain's hot path on PostgreSQL: claim the account's next due earning and write its attempt row in two
    statements (:func:`~django_points_earn.outbox_sql.claim_next`), committed on return unless the caller holds a
    transaction. ``None`` when nothing qualifies, or on another database: the caller takes the general path
    (``accounts.account_gate``, the next due record, :func:`claim_and_start_attempt`), which handles a paused or
    busy account, the resend owed after a timeout and a record without a body."""
    if not hot_path():
        return None
    return outbox_sql.claim_next(
        account,
        now=timezone.now(),  # the clock the ORM path and the sweep read
        token=new_token(),
        lease_seconds=lease_seconds,
        trigger=trigger,
        actor=actor,
    )


def start_attempt(record: EarningRecord, *, trigger: str, actor: str = "") -> EarningAttempt:
    """The attempt row of the earning's next call, with the body it sends (committed before the call)."""
    return EARNINGS.start_attempt(record, record.payload, trigger=trigger, actor=actor)


def complete(
    record: EarningRecord, attempt: EarningAttempt | None, result: EarnResult, *, trigger: str = Trigger.WORKER
) -> EarningRecord:
    """Record the platform's answer and move the record on. Returns the record as saved."""
    now = timezone.now()
    policy = get_settings().retry
    fields: dict[str, Any] = {"updated_at": now, "lease_token": "", "lease_expires_at": None}
    note = result.message
    pause_reason = ""

    if result.status == results.AWARDED:
        to = Status.AWARDED
        fields.update(
            remote_id=result.remote_id[:64],
            remote_reference=result.remote_reference[:64],
            remote_status=result.remote_status[:32],
            points=result.points,
            response=result.body,
            completed_at=now,
            next_attempt_at=None,
        )
        note = "awarded" + (f" ({result.points} points)" if result.points is not None else "")
    elif result.status == results.PENDING_ACTIVATION:
        to = Status.PENDING_ACTIVATION
        fields.update(
            remote_reference=result.remote_reference[:64],
            points=result.points,
            response=result.body,
            next_attempt_at=None,
        )
    elif result.status == results.DUPLICATE:
        fields.update(response=result.body, next_attempt_at=None)
        if record.outcome_unknown:
            # Same order_number resent after an attempt whose answer we lost: the platform has it already. Points
            # cannot be asked by order number, so whether it was credited or waits for the customer's activation
            # is unknown until its approved webhook (or support) gives the uuid: say exactly that, never "awarded".
            to = Status.ACCEPTED
            fields.update(remote_status=DUPLICATE_CONFIRMED)
            note = (
                "accepted by the platform, awaiting confirmation: it already holds this order number from an earlier "
                "attempt whose answer was lost, but has not said whether it credited the customer or waits for "
                "their activation; its approved webhook settles it"
            )
        else:
            to = Status.REJECTED
            fields["completed_at"] = now
            note = (
                f"the platform already has order number {record.order_number!r}, but no attempt of ours is "
                f"unaccounted for: check the merchant dashboard ({result.message})"
            )
    elif result.status == results.REJECTED:
        to = Status.REJECTED
        fields.update(response=result.body, completed_at=now, next_attempt_at=None)
        if record.outcome_unknown:
            note = (
                f"{note}; an earlier attempt's outcome is unknown, so the platform may hold this order already: "
                "check the merchant dashboard before sending it again"
            )
    elif result.status == results.SKIPPED:
        # Found out at send time that the order earns nothing (e.g. the customer is no fabric member and the
        # account says to skip them): final, like a skip decided at checkout; nothing was awarded.
        to = Status.SKIPPED
        fields.update(response=result.body, completed_at=now, next_attempt_at=None)
    elif blocks_account(result):
        to = Status.BLOCKED
        fields.update(response=result.body, next_attempt_at=None)
        pause_reason = result.message
    elif result.status == results.RATE_LIMITED and record.rate_limited < int(policy["MAX_RATE_LIMITED"]):
        to = Status.QUEUED
        delay = backoff.rate_limit_delay(result.retry_after, lock_busy=_lock_busy_retry(record, result))
        fields.update(
            rate_limited=record.rate_limited + 1,  # a plain value: the write below requires our lease
            next_attempt_at=now + timedelta(seconds=delay),
        )
        note = ""  # not a failure: no audit entry, the attempt row is the trace
    else:  # UNAVAILABLE (or a 429 past the MAX_RATE_LIMITED budget): transient, counts as an attempt
        if result.status == results.RATE_LIMITED:
            fields["rate_limited"] = record.rate_limited + 1
            result = _past_rate_limit_budget(result, record.rate_limited + 1)
        attempts = record.attempts + 1
        unknown = record.outcome_unknown or result.outcome_unknown
        fields.update(attempts=attempts, outcome_unknown=unknown, response=result.body)
        if attempts >= int(policy["MAX_ATTEMPTS"]):
            to = Status.FAILED
            fields.update(next_attempt_at=None, completed_at=now)
            note = f"gave up after {attempts} attempts: {result.message}"
        else:
            delay = backoff.retry_delay(attempts)
            to = Status.QUEUED
            fields["next_attempt_at"] = now + timedelta(seconds=delay)
            note = f"attempt {attempts} failed ({result.message}); retry in {delay:.0f}s"

    if note or to != Status.QUEUED:  # a 429 within its budget keeps the reason shown as it was
        fields["status_reason"] = note
    if result.payload_update:
        fields["payload"] = {**(record.payload or {}), **result.payload_update}

    with transaction.atomic(savepoint=False):  # see claim_and_start_attempt
        audit = Audit(trigger, attempt.actor if attempt else "", note) if note else None
        move = EARNINGS.finish_and_move(
            record, attempt, result, Status.SENDING, to, fields, lease_token=record.lease_token, audit=audit
        )
        moved = ours = move.moved
        if not moved and to in (Status.AWARDED, Status.PENDING_ACTIVATION) and result.status != results.DUPLICATE:
            # Our lease was taken from us (a sweep thought this worker dead), yet the platform confirmed:
            # its word wins over whatever state the record went back to.
            for current in (Status.QUEUED, Status.FAILED):
                if EARNINGS.move(record, current, to, fields, audit=audit):
                    moved = True
                    break
        if not moved:
            log.warning(
                "earning %s/%s: result %s arrived after the record moved on; kept on attempt only",
                record.account,
                record.order_number,
                result.status,
            )
            return EarningRecord.objects.get(pk=record.pk)
        if pause_reason:
            accounts.pause_account(record.account, pause_reason)
        if result.status == results.FORBIDDEN or (record.kind in RATING_KINDS and result.http_status == 403):
            # Not funded, not allowed, channel off: the balance banner too (beside the pause, never instead of it).
            # A rating's 403 ("channel disabled") only rejects that review, but the merchant must still hear of it.
            merchant_alerts.from_refusal(record.account, result.message)
        # Moved under our lease, the row is exactly what we wrote; taken over by a sweep meanwhile, it is not.
        saved = _as_written(record, to, fields) if ours else EarningRecord.objects.get(pk=record.pk)
        settles = settled_by_platform_id(to, bool(saved.outcome_unknown))
        if settles and settlement.settle_from_known_id(saved, deliveries=to == Status.ACCEPTED):
            return EarningRecord.objects.get(pk=record.pk)
        announce(saved)
        run_settled_hooks(saved, waited_on=move.waited_on)
    return saved


def _lock_busy_retry(record: EarningRecord, result: EarnResult) -> bool:
    """Whether this 429 gets the short wait of a busy per-merchant lock (RETRY["LOCK_BUSY_DELAY"]).

    Points' lock is held for one call, so the refused earning is asked again shortly, and the account's other
    earnings go out meanwhile: waiting RATE_LIMIT_DELAY instead left the account idle once nothing else was due
    (the tail of a 429 storm). Not when the record's outcome is unknown: after a timeout the platform may still be
    working on its earlier call (``accounts.hold_for_resend`` waits with it); and only for the record's first
    LOCK_BUSY_RETRIES 429s, so a lock held for long does not spend the 429 budget within seconds."""
    policy = get_settings().retry
    return result.lock_busy and not record.outcome_unknown and record.rate_limited < int(policy["LOCK_BUSY_RETRIES"])


def _past_rate_limit_budget(result: EarnResult, count: int) -> EarnResult:
    """A 429 beyond RETRY["MAX_RATE_LIMITED"]: from now on it uses up attempts, with the exponential backoff."""
    message = (
        f"rate-limited {count} times, more than RETRY['MAX_RATE_LIMITED'] allows; each further 429 uses up an "
        f"attempt ({result.message or 'HTTP 429'})"
    )
    return replace(result, message=message)


def _as_written(record: EarningRecord, status: str, fields: dict[str, Any]) -> EarningRecord:
    """The record as the UPDATE just wrote it (every value in ``fields`` is plain), without reading it back."""
    record.status = status
    for name, value in fields.items():
        setattr(record, name, value)
    if record.points is not None:  # as the column stores it, for the earning_awarded receivers
        places = EarningRecord._meta.get_field("points").decimal_places
        record.points = Decimal(record.points).quantize(Decimal(1).scaleb(-places))
    return record
