"""The only writer of ``EarningRecord.status``.

Every transition is checked against :data:`ALLOWED`, made with a conditional UPDATE (so two writers can never both
move the same record) and written together with its audit entry. What a platform's answer means for a record
(award, retry later, ask a human, pause the account) is decided here, in :func:`complete`, and nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from django.db import IntegrityError, connections, router, transaction
from django.db.models import F
from django.utils import timezone
from django.utils.translation import gettext

from .conf import get_settings
from .models import AccountState, EarningAttempt, EarningEvent, EarningRecord, Status, Trigger
from .providers import base as results
from .providers.base import EarnResult
from .signals import earning_awarded, earning_failed

log = logging.getLogger("django_points_earn")

# The platform's word (its webhook, or an answer that arrived after a sweep took the lease) may settle a record
# that is not ``sending``: hence ``queued``/``failed``/``blocked`` -> ``awarded``.
ALLOWED: dict[str, set[str]] = {
    Status.QUEUED: {Status.SENDING, Status.REJECTED, Status.CANCELLED, Status.AWARDED, Status.PENDING_ACTIVATION},
    Status.SENDING: {
        Status.AWARDED,
        Status.PENDING_ACTIVATION,
        Status.ACCEPTED,
        Status.REJECTED,
        Status.BLOCKED,
        Status.FAILED,
        Status.QUEUED,
        Status.SKIPPED,
    },
    Status.REJECTED: {Status.QUEUED, Status.RESOLVED, Status.CANCELLED, Status.AWARDED},
    Status.BLOCKED: {Status.QUEUED, Status.RESOLVED, Status.CANCELLED, Status.AWARDED},
    Status.FAILED: {Status.QUEUED, Status.RESOLVED, Status.CANCELLED, Status.AWARDED, Status.PENDING_ACTIVATION},
    Status.PENDING_ACTIVATION: {Status.AWARDED, Status.RESOLVED},
    Status.ACCEPTED: {Status.AWARDED, Status.RESOLVED},
    Status.RESOLVED: set(),
    Status.CANCELLED: set(),
    Status.AWARDED: {Status.REVERSED, Status.PARTIALLY_REVERSED},
    Status.PARTIALLY_REVERSED: {Status.REVERSED, Status.PARTIALLY_REVERSED},
    Status.REVERSED: set(),
    Status.SKIPPED: set(),
}
INITIAL = {Status.QUEUED, Status.REJECTED, Status.SKIPPED}
# remote_status of an ``accepted`` record: the platform answered "duplicate" (it has the order), nothing more.
DUPLICATE_CONFIRMED = "duplicate_confirmed"
# States the platform's id of the order (its webhook) settles as ``awarded``: the platform has credited the order,
# whatever we knew of it before (a lost answer, a pending customer, a duplicate answer).
SETTLED_BY_PLATFORM_ID = (Status.ACCEPTED, Status.PENDING_ACTIVATION, Status.QUEUED, Status.FAILED, Status.BLOCKED)


def settled_by_platform_id(status: str, outcome_unknown: bool) -> bool:
    """Whether the platform's id of the order makes this record ``awarded``: the states above, and a ``rejected``
    one whose earlier call's outcome was unknown (e.g. an unexpected 400 on the resend: the first call had landed)."""
    return status in SETTLED_BY_PLATFORM_ID or (status == Status.REJECTED and outcome_unknown)


# Work of the modules above the lifecycle that must happen in the same transaction as a state change (refunds
# waiting for their earning). Those modules register it when the app is ready, so the lifecycle imports nothing
# above it: SETTLED_HOOKS run after an answer or the platform's word moved a record; GIVEN_BACK_HOOKS after a
# claimed record went back to the queue unsent.
SETTLED_HOOKS: list[Callable[[EarningRecord], None]] = []
GIVEN_BACK_HOOKS: list[Callable[[EarningRecord], None]] = []


class TransitionError(Exception):
    pass


def check(from_status: str, to_status: str) -> None:
    if to_status not in ALLOWED.get(from_status, set()):
        raise TransitionError(f"an earning cannot go from {from_status} to {to_status}")


# -- timing ---------------------------------------------------------------------------------------------------
def retry_delay(attempts: int) -> float:
    """Exponential backoff with full jitter, capped, with a floor so a ~0 draw never hammers the platform."""
    policy = get_settings().retry
    ceiling = min(float(policy["MAX_DELAY"]), float(policy["BASE_DELAY"]) * 2 ** min(max(0, attempts - 1), 64))
    return clamp_delay(random.uniform(0, ceiling))


def rate_limit_delay(retry_after: float | None = None) -> float:
    """The wait after a 429: the platform's Retry-After if it gave a usable one, else RATE_LIMIT_DELAY; with jitter,
    and always within [MIN_DELAY, MAX_DELAY] (``Retry-After: 0`` is no hot loop, ``inf`` or ``1e30`` no crash)."""
    policy = get_settings().retry
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


# -- creation (inside the shop's transaction) ------------------------------------------------------------------
def create(*, status: str, reason: str = "", **fields: Any) -> tuple[EarningRecord, bool]:
    """Insert the record; a second signal for the same order finds the first record.

    Nothing this INSERT raises may break the shop's transaction. A duplicate signal meets the unique
    ``(account, order_number)`` constraint: ``INSERT … ON CONFLICT (account, order_number) DO NOTHING RETURNING id``
    returns no row, and the existing record is fetched. Any other error (NOT NULL, a value the database refuses)
    is raised: on PostgreSQL, where an error aborts the whole transaction, after rolling back to a savepoint sent in
    the same round trip; on SQLite a failed statement is undone on its own (:func:`_insert_once`). Elsewhere,
    Django's savepoint around a plain INSERT. The row itself (``created_at``, initial ``status``,
    ``status_reason``) is the audit of its creation, so checkout pays for exactly one INSERT.
    """
    if status not in INITIAL:
        raise TransitionError(f"a new earning cannot start as {status}")
    now = timezone.now()
    record = EarningRecord(
        status=status,
        status_reason=reason,
        next_attempt_at=now if status == Status.QUEUED else None,
        completed_at=None if status == Status.QUEUED else now,
        **fields,
    )
    using = router.db_for_write(EarningRecord)
    inserted = _insert_once(connections[using], record)
    if inserted is None:  # see _insert_once: Django's savepoint, then a plain INSERT
        try:
            with transaction.atomic(using=using):
                record.save(force_insert=True, using=using)
            return record, True
        except IntegrityError:
            existing = _existing(using, fields)
            if existing is None:
                raise
            return existing, False
    if inserted:
        return record, True
    existing = _existing(using, fields)
    if existing is None:  # the row that conflicted is not visible to this transaction
        raise IntegrityError(f"earning {fields['account']}/{fields['order_number']} exists but cannot be read")
    return existing, False


def _existing(using: str, fields: dict[str, Any]) -> EarningRecord | None:
    return (
        EarningRecord.objects.using(using)
        .filter(account=fields["account"], order_number=fields["order_number"])
        .first()
    )


_SAVEPOINT = "points_earn_create"


def _insert_once(connection: Any, record: EarningRecord) -> bool | None:
    """``INSERT … ON CONFLICT (account, order_number) DO NOTHING RETURNING id`` in one round trip. True: inserted
    (``record`` has its id); False: the order already has a record. Only the unique conflict is ignored (SQLite's
    ``INSERT OR IGNORE`` would also hide NOT NULL violations; this does not): any other error is raised.

    PostgreSQL, in a transaction: ``SAVEPOINT; INSERT …; RELEASE SAVEPOINT`` as one statement string, and a
    failed INSERT is rolled back to the savepoint before raising. That takes psycopg 3's client-side binding
    (Django's default); with server-side binding or psycopg 2 this returns ``None`` and the caller uses Django's
    savepoint (three round trips). SQLite (3.35+) undoes a failed statement by itself and keeps the transaction:
    no savepoint. Other databases: ``None``.
    """
    vendor = connection.vendor
    if vendor not in ("postgresql", "sqlite") or not connection.features.can_return_columns_from_insert:
        return None
    savepoint = vendor == "postgresql" and not connection.get_autocommit()
    with connection.cursor() as cursor:
        if savepoint and not _binds_client_side(cursor):
            return None
        sql, fields = _insert_sql(connection)
        params = [field.get_db_prep_save(field.pre_save(record, add=True), connection) for field in fields]
        if savepoint:
            sql = f"SAVEPOINT {_SAVEPOINT}; {sql}; RELEASE SAVEPOINT {_SAVEPOINT}"
        try:
            cursor.execute(sql, params)
        except Exception:
            if savepoint:
                _rollback_to_savepoint(connection)
            raise
        if savepoint:
            cursor.nextset()  # from the SAVEPOINT's result to the INSERT's
        row = cursor.fetchone()
    if row is None:
        return False
    record.pk = row[0]
    record._state.adding = False
    record._state.db = connection.alias
    return True


def _binds_client_side(cursor: Any) -> bool:
    """psycopg 3's client-side binding cursor (Django's default) takes several statements with parameters."""
    try:
        from psycopg import ClientCursor
    except ImportError:  # psycopg 2
        return False
    return isinstance(cursor.cursor, ClientCursor)


def _rollback_to_savepoint(connection: Any) -> None:
    """After a failed INSERT: only if the server saw an error. A value psycopg refuses before sending anything
    (e.g. a NUL character in a text column) leaves no savepoint, and rolling back to one would be an error."""
    from psycopg.pq import TransactionStatus

    if connection.connection.info.transaction_status != TransactionStatus.INERROR:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}; RELEASE SAVEPOINT {_SAVEPOINT}")
    except Exception:  # e.g. the connection is gone: the caller raises the first error
        log.exception("could not roll back to the savepoint of a failed earning INSERT")


_insert_sql_cache: dict[str, tuple[str, list[Any]]] = {}


def _insert_sql(connection: Any) -> tuple[str, list[Any]]:
    """The INSERT of a new record (every concrete field but the id), built once per database alias. Values are
    prepared by each field's own ``get_db_prep_save``, as Django's ``save()`` does."""
    cached = _insert_sql_cache.get(connection.alias)
    if cached is None:
        opts = EarningRecord._meta
        qn = connection.ops.quote_name
        fields = [f for f in opts.concrete_fields if not f.primary_key and not getattr(f, "generated", False)]
        unique = [opts.get_field(name).column for name in ("account", "order_number")]
        columns = ", ".join(qn(f.column) for f in fields)
        values = ", ".join(["%s"] * len(fields))
        conflict = ", ".join(qn(c) for c in unique)
        # Names from the model, values as parameters.
        sql = f"INSERT INTO {qn(opts.db_table)} ({columns}) VALUES ({values}) ON CONFLICT ({conflict}) DO NOTHING"  # noqa: S608
        sql += f" RETURNING {qn(opts.pk.column)}"
        cached = _insert_sql_cache[connection.alias] = (sql, fields)
    return cached


# -- the worker's path -----------------------------------------------------------------------------------------
def claim(record: int | EarningRecord, *, lease_seconds: float) -> EarningRecord | None:
    """Take a due record for one attempt. Exactly one caller wins; the others get ``None``.

    Given the record as just read (the drain reads the next due row whole), the claim also requires the row to be
    unchanged since (``updated_at``), and returns that instance updated: no second read.
    """
    now = timezone.now()
    token = uuid.uuid4().hex
    pk = record if isinstance(record, int) else record.pk
    due = EarningRecord.objects.filter(pk=pk, status=Status.QUEUED, next_attempt_at__lte=now)
    if isinstance(record, EarningRecord):
        due = due.filter(updated_at=record.updated_at)
    lease = {"lease_expires_at": now + timedelta(seconds=lease_seconds), "lease_token": token, "updated_at": now}
    if not due.update(status=Status.SENDING, **lease):
        return None
    if not isinstance(record, EarningRecord):
        return EarningRecord.objects.get(pk=pk)
    record.status = Status.SENDING
    for name, value in lease.items():
        setattr(record, name, value)
    return record


def release(record: EarningRecord, note: str, attempt: EarningAttempt | None = None) -> bool:
    """Give back a claim without having called the platform (e.g. the account lock was lost).

    ``attempt`` is an attempt row written for a call that was then never made (the previous call's answer said to
    stop): it is removed with the claim, so the history lists only calls that went out. If the claim was no longer
    ours, the row stays for whoever took the record over.
    """
    with transaction.atomic():
        released = EarningRecord.objects.filter(
            pk=record.pk, status=Status.SENDING, lease_token=record.lease_token
        ).update(status=Status.QUEUED, lease_token="", lease_expires_at=None, updated_at=timezone.now())
        if released and attempt is not None:
            EarningAttempt.objects.filter(pk=attempt.pk, finished_at__isnull=True).delete()
        if released:
            record.status = Status.QUEUED
            for hook in GIVEN_BACK_HOOKS:
                hook(record)
    if released:
        log.info("earning %s/%s given back unsent: %s", record.account, record.order_number, note)
    return bool(released)


def renew_leases(tokens: list[str], *, lease_seconds: float) -> int:
    """Extend the claims (earnings still ``sending`` under these lease tokens) of a live worker: the heartbeat that
    keeps a long call from being taken for a dead worker's. Returns how many were extended."""
    if not tokens:
        return 0
    expires = timezone.now() + timedelta(seconds=lease_seconds)
    return EarningRecord.objects.filter(status=Status.SENDING, lease_token__in=tokens).update(lease_expires_at=expires)


def extend_lease(record: EarningRecord, *, lease_seconds: float) -> bool:
    """Renew the claim of a record still ours (its lease token): for one prepared a while before its call."""
    expires = timezone.now() + timedelta(seconds=lease_seconds)
    extended = EarningRecord.objects.filter(pk=record.pk, status=Status.SENDING, lease_token=record.lease_token).update(
        lease_expires_at=expires
    )
    if extended:
        record.lease_expires_at = expires
    return bool(extended)


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
    failure between them leaves the record due rather than claimed without an attempt."""
    with transaction.atomic():
        claimed = claim(record, lease_seconds=lease_seconds)
        if claimed is None:
            return None
        return claimed, start_attempt(claimed, trigger=trigger, actor=actor)


def start_attempt(record: EarningRecord, *, trigger: str, actor: str = "") -> EarningAttempt:
    """Committed before the HTTP call: a crash between the two leaves this row as evidence.

    The body sent is stored whole on the first attempt, and again only when it changed (a correction, a member
    id resolved on the way); the other attempts keep its SHA-256, which points at the attempt holding it
    (:func:`attempt_body`). Retries under a 429 storm then add a few hundred bytes each, not a copy of the body.
    """
    digest = payload_digest(record.payload)
    last = EarningAttempt.objects.filter(record=record).order_by("-number").values_list("number", "request_sha256")
    previous = last.first()
    number = previous[0] + 1 if previous else 1
    same = previous is not None and previous[1] == digest
    return EarningAttempt.objects.create(
        record=record,
        number=number,
        trigger=trigger,
        actor=actor[:150],
        request_body=None if same else record.payload,
        request_sha256=digest,
        started_at=timezone.now(),
    )


def payload_digest(payload: Any) -> str:
    """SHA-256 of the body as canonical JSON: equal bodies, equal digests."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def attempt_body(attempt: EarningAttempt) -> tuple[Any, int | None]:
    """What an attempt sent: its own stored body, or (for one that sent the same body again) the body of the latest
    earlier attempt that stored it, and that attempt's number (``None`` when the attempt stored its own)."""
    if attempt.request_body is not None or not attempt.request_sha256:
        return attempt.request_body, None
    holder = (
        EarningAttempt.objects.filter(
            record_id=attempt.record_id,
            number__lt=attempt.number,
            request_sha256=attempt.request_sha256,
            request_body__isnull=False,
        )
        .order_by("-number")
        .values_list("number", "request_body")
        .first()
    )
    return (holder[1], holder[0]) if holder else (None, None)


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
        fields.update(
            rate_limited=record.rate_limited + 1,  # a plain value: the write below requires our lease
            next_attempt_at=now + timedelta(seconds=rate_limit_delay(result.retry_after)),
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
            delay = retry_delay(attempts)
            to = Status.QUEUED
            fields["next_attempt_at"] = now + timedelta(seconds=delay)
            note = f"attempt {attempts} failed ({result.message}); retry in {delay:.0f}s"

    if note or to != Status.QUEUED:  # a 429 within its budget keeps the reason shown as it was
        fields["status_reason"] = note
    if result.payload_update:
        fields["payload"] = {**(record.payload or {}), **result.payload_update}

    with transaction.atomic():
        if attempt is not None:
            finish_attempt(attempt, result, now)
        moved = ours = _move(record, Status.SENDING, to, fields, lease_token=record.lease_token)
        if not moved and to in (Status.AWARDED, Status.PENDING_ACTIVATION) and result.status != results.DUPLICATE:
            # Our lease was taken from us (a sweep thought this worker dead), yet the platform confirmed:
            # its word wins over whatever state the record went back to.
            for current in (Status.QUEUED, Status.FAILED):
                if _move(record, current, to, fields):
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
        if note:
            _event(record, Status.SENDING, to, trigger, attempt.actor if attempt else "", note)
        if pause_reason:
            pause_account(record.account, pause_reason)
        # Moved under our lease, the row is exactly what we wrote; taken over by a sweep meanwhile, it is not.
        saved = _as_written(record, to, fields) if ours else EarningRecord.objects.get(pk=record.pk)
        settles = settled_by_platform_id(to, bool(saved.outcome_unknown))
        if settles and _settle_from_known_id(saved, deliveries=to == Status.ACCEPTED):
            return EarningRecord.objects.get(pk=record.pk)
        _announce(saved)
        _release_reversals(saved)
    return saved


def _settle_from_known_id(record: EarningRecord, *, deliveries: bool = False) -> bool:
    """A record the platform's word settles (:data:`SETTLED_BY_PLATFORM_ID`: accepted, pending, queued again,
    failed, blocked) whose platform id already came: from a webhook applied while it was being sent (kept on the
    record, the webhook used up), or (``deliveries``, for an ``accepted`` record) stored in an approved delivery of
    its order number. Settles it as awarded; otherwise it would wait for a webhook that has already come."""
    from .models import WebhookDelivery

    remote_id = EarningRecord.objects.filter(pk=record.pk).values_list("remote_id", flat=True).first() or ""
    source = "the platform's webhook, applied while this earning was being sent"
    if not remote_id and not deliveries:
        return False
    if not remote_id:
        delivery = (
            WebhookDelivery.objects.filter(account=record.account, order_number=record.order_number, event="approved")
            .exclude(order_uuid="")
            .order_by("id")
            .first()
        )
        if delivery is None:
            return False
        remote_id, source = delivery.order_uuid, f"the platform's approved webhook (delivery {delivery.pk})"
    return confirm_award(record, remote_id=remote_id, note=f"{source} gave the id of this order: awarded")


def _past_rate_limit_budget(result: EarnResult, count: int) -> EarnResult:
    """A 429 beyond RETRY["MAX_RATE_LIMITED"]: from now on it uses up attempts, with the exponential backoff."""
    from dataclasses import replace

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


def _release_reversals(record: EarningRecord) -> None:
    for hook in SETTLED_HOOKS:
        hook(record)


def new_token() -> str:
    return uuid.uuid4().hex


def finish_attempt(attempt: EarningAttempt, result: EarnResult, now: datetime) -> None:
    attempt.finished_at = now
    attempt.duration_ms = result.duration_ms
    attempt.http_status = result.http_status
    attempt.outcome = result.status
    attempt.outcome_unknown = result.outcome_unknown
    attempt.error = "" if result.status == results.AWARDED else result.message
    attempt.response_body = result.raw_text
    attempt.save(
        update_fields=[
            "finished_at",
            "duration_ms",
            "http_status",
            "outcome",
            "outcome_unknown",
            "error",
            "response_body",
        ]
    )


def _move(record: EarningRecord, from_status: str, to: str, fields: dict[str, Any], lease_token: str | None = None):
    check(from_status, to)
    qs = EarningRecord.objects.filter(pk=record.pk, status=from_status)
    if to == Status.QUEUED and "payload" not in fields:
        qs = qs.filter(payload__isnull=False)  # nothing without a body is ever queued to be sent
    if lease_token is not None:
        qs = qs.filter(lease_token=lease_token)
    return qs.update(status=to, **fields) == 1


def _event(record: EarningRecord, from_status: str, to: str, trigger: str, actor: str, note: str) -> None:
    EarningEvent.objects.create(
        record=record, from_status=from_status, to_status=to, trigger=trigger, actor=actor[:150], note=note
    )


def _announce(record: EarningRecord) -> None:
    if record.status == Status.AWARDED:
        transaction.on_commit(lambda: earning_awarded.send(sender=EarningRecord, record=record))
    elif record.status in (Status.REJECTED, Status.BLOCKED, Status.FAILED):
        transaction.on_commit(lambda: earning_failed.send(sender=EarningRecord, record=record))


# -- recovery and human actions ----------------------------------------------------------------------------------
def recover_expired_leases(*, account: str | None = None, batch: int = 500, trigger: str = Trigger.RECONCILE) -> int:
    """Records left ``sending`` past their lease (their worker died mid-call): due again, outcome unknown.

    One batch per call, in a handful of queries whatever its size: the rows are locked (skipped if another sweep
    holds them), moved, their open attempts closed as abandoned and the audit entries written together.
    Returns how many were recovered (0 when none are left).
    """
    now = timezone.now()
    max_attempts = int(get_settings().retry["MAX_ATTEMPTS"])
    note = (
        "the worker stopped during the call (lease expired); the outcome is unknown, so the same order number "
        "is sent again"
    )
    with transaction.atomic():
        qs = EarningRecord.objects.select_for_update(skip_locked=True).filter(
            status=Status.SENDING, lease_expires_at__lt=now
        )
        if account:
            qs = qs.filter(account=account)
        rows = list(qs.order_by("lease_expires_at").values_list("id", "attempts")[:batch])
        if not rows:
            return 0
        give_up = [pk for pk, attempts in rows if attempts + 1 >= max_attempts]
        retry = [pk for pk, attempts in rows if attempts + 1 < max_attempts]
        common = {
            "attempts": F("attempts") + 1,
            "outcome_unknown": True,
            "lease_token": "",
            "lease_expires_at": None,
            "updated_at": now,
        }
        moved = EarningRecord.objects.filter(pk__in=retry, status=Status.SENDING).update(
            status=Status.QUEUED, next_attempt_at=now, status_reason=note, **common
        )
        moved += EarningRecord.objects.filter(pk__in=give_up, status=Status.SENDING).update(
            status=Status.FAILED,
            next_attempt_at=None,
            completed_at=now,
            status_reason=note.replace("is sent again", "was not sent again: attempts are used up"),
            **common,
        )
        EarningAttempt.objects.filter(record_id__in=retry + give_up, finished_at__isnull=True).update(
            finished_at=now,
            outcome="abandoned",
            outcome_unknown=True,
            error="the worker stopped before the answer was recorded",
        )
        EarningEvent.objects.bulk_create(
            [
                EarningEvent(record_id=pk, from_status=Status.SENDING, to_status=to, trigger=trigger, note=note)
                for pks, to in ((retry, Status.QUEUED), (give_up, Status.FAILED))
                for pk in pks
            ]
        )
        for record in EarningRecord.objects.filter(pk__in=give_up) if give_up else ():
            _announce(record)
    return moved


def cannot_resend(record: EarningRecord) -> str:
    """Why this earning cannot be sent again as it is ("" if it can).

    A record rejected before any call (the order data was refused at checkout) has no request body: sending it
    "again" would send nothing (an empty body to Points, a crash on fabric). It can only be corrected, which
    rebuilds the body from the corrected data.
    """
    if record.payload is None:
        return gettext(
            "it was rejected before anything was sent, so there is no request to send again: correct its details "
            "(Correct customer details and send again), which rebuilds the request, or mark it resolved"
        )
    return ""


def requeue(record: EarningRecord, *, trigger: str, actor: str = "", note: str = "") -> bool:
    """A human (or an account resume) sends a rejected, blocked or failed earning again, with a fresh budget.

    ``outcome_unknown`` is kept: it is what lets a later "duplicate" answer count as awarded. A record without a
    request body is refused (:func:`cannot_resend`), also if it got one meanwhile only in another process's view:
    the UPDATE itself requires the body.
    """
    now = timezone.now()
    if record.status not in (Status.REJECTED, Status.BLOCKED, Status.FAILED) or cannot_resend(record):
        return False
    with transaction.atomic():
        if not _move(
            record,
            record.status,
            Status.QUEUED,
            {
                "attempts": 0,
                "rate_limited": 0,
                "next_attempt_at": now,
                "completed_at": None,
                "updated_at": now,
                "status_reason": note or "sent again",
            },
        ):
            return False
        _event(record, record.status, Status.QUEUED, trigger, actor, note or "sent again")
    return True


def pause_account(account: str, reason: str) -> None:
    now = timezone.now()
    state, _ = AccountState.objects.get_or_create(account=account)
    if not state.paused:
        AccountState.objects.filter(pk=account).update(paused=True, reason=reason, paused_at=now)
        log.error("account %s paused: %s", account, reason)


def is_paused(account: str) -> bool:
    return AccountState.objects.filter(pk=account, paused=True).exists()


class Gate(NamedTuple):
    paused: bool
    wait: float  # seconds the account's next call must still wait
    resend_first: int | None  # the earning whose resend must be the account's next call (after a timeout)


def account_gate(account: str) -> Gate:
    """One query: whether the account is paused, how long its next call must still wait, and which record (if any)
    that call must be."""
    state = AccountState.objects.filter(pk=account).values_list("paused", "busy_until", "resend_first").first()
    if state is None:
        return Gate(False, 0.0, None)
    paused, busy_until, resend_first = state
    wait = (busy_until - timezone.now()).total_seconds() if busy_until else 0.0
    return Gate(paused, max(0.0, wait), resend_first)


def mark_account_busy(account: str, seconds: float, *, resend: EarningRecord | None = None) -> None:
    """A call timed out: the platform may be working on it for a while yet. Every worker holds back until then.

    ``resend``: the earning whose call timed out. The account's first call after the wait is its resend (due then,
    whatever its backoff said): the one call that cannot run into another earning's work on the platform, and the
    one whose answer says what became of the timed-out call (a duplicate: awarded).
    """
    until = timezone.now() + timedelta(seconds=clamp_delay(seconds) if seconds > 0 else 0.0)
    fields: dict[str, Any] = {"busy_until": until, "resend_first": resend.pk if resend is not None else None}
    with transaction.atomic():
        if resend is not None:
            EarningRecord.objects.filter(pk=resend.pk, status=Status.QUEUED).update(next_attempt_at=until)
        if not AccountState.objects.filter(pk=account).update(**fields):
            AccountState.objects.get_or_create(account=account, defaults=fields)


def hold_for_resend(account: str, record: EarningRecord) -> None:
    """The resend after a timeout was answered 429 (the platform is still working on it): the account waits until
    the record is due again, and the record stays first. Past its 429 budget it is on a long backoff: let go."""
    if record.status == Status.QUEUED and record.next_attempt_at is not None and record.rate_limited:
        budget = int(get_settings().retry["MAX_RATE_LIMITED"])
        if record.rate_limited <= budget:
            AccountState.objects.filter(pk=account).update(busy_until=record.next_attempt_at, resend_first=record.pk)
            return
    let_go_resend(account, record.pk)


def let_go_resend(account: str, record_id: int) -> None:
    """The account's first-after-a-timeout record got its answer (or is no longer waiting to be sent)."""
    AccountState.objects.filter(pk=account, resend_first=record_id).update(resend_first=None)


def resume_account(account: str, *, actor: str = "", trigger: str = Trigger.ADMIN) -> int:
    """Unpause and send the account's blocked earnings again. Returns how many were requeued."""
    AccountState.objects.filter(pk=account).update(paused=False, resumed_at=timezone.now(), resumed_by=actor[:150])
    count = 0
    for record in EarningRecord.objects.filter(account=account, status=Status.BLOCKED).iterator():
        count += requeue(record, trigger=trigger, actor=actor, note="account resumed")
    return count


def resolve(record: EarningRecord, *, actor: str, note: str, trigger: str = Trigger.ADMIN) -> bool:
    """A human settled it outside the app (e.g. awarded by hand in the platform's dashboard): say so, and why."""
    if not note.strip():
        raise ValueError("a resolution needs a note saying what was done")
    now = timezone.now()
    with transaction.atomic():
        if not _move(
            record,
            record.status,
            Status.RESOLVED,
            {
                "completed_at": now,
                "updated_at": now,
                "next_attempt_at": None,
                "status_reason": f"resolved by {actor}: {note}",
            },
        ):
            return False
        _event(record, record.status, Status.RESOLVED, trigger, actor, note)
        record.status = Status.RESOLVED
        _release_reversals(record)  # a refund that waited for this earning's outcome ends, saying why
    return True


def correct_and_requeue(
    record: EarningRecord, changes: dict[str, Any], *, actor: str, trigger: str = Trigger.ADMIN
) -> EarningRecord:
    """Fix a rejected earning's customer data (e.g. the phone), rebuild the platform body, and send it again.

    Raises ``InvalidEarningRequest`` (nothing changed) when the corrected data is still not valid. The audit entry
    says who changed which fields from what to what (phones masked).
    """
    from .adapters import EarningRequest
    from .phones import mask_phone, normalize_ksa_mobile
    from .providers import get_backend

    if record.status != Status.REJECTED:
        raise TransitionError(f"only rejected earnings can be corrected (this one is {record.status})")
    data = {**record.request, **changes}
    request = EarningRequest.from_json(data)
    payload = get_backend(get_settings().account(record.account)).build_payload(request)
    phone = normalize_ksa_mobile(request.phone) if request.phone else ""
    shown = {k: (mask_phone(phone) if k == "phone" else v) for k, v in changes.items()}
    before = {
        k: (mask_phone(str(record.request.get(k) or "")) if k == "phone" else record.request.get(k)) for k in changes
    }
    note = "corrected " + ", ".join(f"{k}: {before[k]!r} → {shown[k]!r}" for k in changes) + "; sent again"
    now = timezone.now()
    phone = normalize_ksa_mobile(request.phone) if request.phone else ""
    with transaction.atomic():
        if not _move(
            record,
            Status.REJECTED,
            Status.QUEUED,
            {
                "request": request.to_json(),
                "payload": payload,
                "phone": phone,
                "total": request.total,
                "attempts": 0,
                "rate_limited": 0,
                "next_attempt_at": now,
                "completed_at": None,
                "updated_at": now,
                "status_reason": note,
            },
        ):
            raise TransitionError("the earning changed meanwhile; reload and try again")
        _event(record, Status.REJECTED, Status.QUEUED, trigger, actor, note)
    return EarningRecord.objects.get(pk=record.pk)


# -- remote checks ------------------------------------------------------------------------------------------------
def record_remote_check(
    record: EarningRecord, seen_status: str, drift: str, *, actor: str = "", trigger: str = Trigger.RECONCILE
) -> None:
    """Keep what a lookup on the platform saw: when, and how it differs from our record (``""``: it agrees).

    Drift is reported, never "fixed": the state stays as it is for a human to judge. The audit trail gets a note on
    the unchanged state when a person asked (``trigger`` admin) or when a new difference shows up; a nightly
    verification that finds everything as before adds nothing to it.
    """
    now = timezone.now()
    drift = drift[:255]
    with transaction.atomic():
        EarningRecord.objects.filter(pk=record.pk).update(remote_checked_at=now, drift=drift)
        if trigger == Trigger.ADMIN or (drift and drift != record.drift):
            seen = seen_status or "unknown"
            note = f"checked with the platform: {seen}" + (f"; differs: {drift}" if drift else "; agrees")
            _event(record, record.status, record.status, trigger, actor, note)
    record.remote_checked_at = now
    record.drift = drift


# -- refunds and platform news -------------------------------------------------------------------------------------
def cancel_unsent(record: EarningRecord, *, note: str, trigger: str = Trigger.CHECKOUT, actor: str = "") -> bool:
    """A full refund before the earning was ever awarded: it will never be sent."""
    now = timezone.now()
    with transaction.atomic():
        current = EarningRecord.objects.filter(pk=record.pk).values_list("status", flat=True).first()
        if current not in (Status.QUEUED, Status.REJECTED, Status.FAILED, Status.BLOCKED):
            return False
        if not _move(
            record,
            current,
            Status.CANCELLED,
            {"completed_at": now, "next_attempt_at": None, "updated_at": now, "status_reason": note},
        ):
            return False
        _event(record, current, Status.CANCELLED, trigger, actor, note)
    record.status = Status.CANCELLED
    return True


def apply_reversal(
    record: EarningRecord, *, note: str, trigger: str = Trigger.WORKER, actor: str = "", fully: bool | None = None
) -> str:
    """Points were taken back: the earning becomes partially or fully reversed, from the reversals' sum."""
    from decimal import Decimal

    from .models import Reversal, ReversalStatus

    now = timezone.now()
    done = Reversal.objects.filter(record_id=record.pk, status=ReversalStatus.REVERSED)
    if fully is None:
        total = record.total or Decimal("0")
        amounts = list(done.values_list("amount", flat=True))
        fully = any(a is None for a in amounts) or sum((a for a in amounts if a is not None), Decimal("0")) >= total
    to = Status.REVERSED if fully else Status.PARTIALLY_REVERSED
    with transaction.atomic():
        current = EarningRecord.objects.filter(pk=record.pk).values_list("status", flat=True).first()
        if current == to == Status.REVERSED or current not in (Status.AWARDED, Status.PARTIALLY_REVERSED):
            return current or ""
        _move(
            record, current, to, {"updated_at": now, "status_reason": note, **({"completed_at": now} if fully else {})}
        )
        _event(record, current, to, trigger, actor, note)
    return to


def confirm_award(
    record: EarningRecord,
    *,
    remote_id: str,
    remote_reference: str = "",
    points: Any = None,
    note: str,
    trigger: str = Trigger.WORKER,
) -> bool:
    """The platform gave the id of this order (its webhook): it holds the order as credited.

    Whatever the record's state, the id is kept if the record has none (a record being sent right now gets it for
    its answer to find). A record the platform's word settles (:data:`SETTLED_BY_PLATFORM_ID`, or awarded without
    an id) becomes ``awarded`` with it. Returns whether the record became awarded.
    """
    now = timezone.now()
    ids = {"remote_id": remote_id[:64]}
    if remote_reference:
        ids["remote_reference"] = remote_reference[:64]
    fields = {
        **ids,
        "remote_status": "approved",
        "updated_at": now,
        "completed_at": now,
        "next_attempt_at": None,
        "lease_token": "",
        "lease_expires_at": None,
        "status_reason": note,
    }
    if points is not None:
        fields["points"] = points
    with transaction.atomic():
        current = (
            EarningRecord.objects.select_for_update()
            .filter(pk=record.pk)
            .values_list("status", "remote_id", "outcome_unknown")
            .first()
        )
        if current is None:
            return False
        status, known, unknown = current
        if known and known != remote_id[:64]:
            log.warning(
                "earning %s/%s: the platform's webhook names id %s, the record has %s; kept the record's",
                record.account,
                record.order_number,
                remote_id,
                known,
            )
            return False
        if settled_by_platform_id(status, unknown):
            _move(record, status, Status.AWARDED, fields)
        elif status == Status.AWARDED and not known:  # awarded before this state existed, without an id
            EarningRecord.objects.filter(pk=record.pk, status=status, remote_id="").update(**fields)
        else:
            if not known:
                EarningRecord.objects.filter(pk=record.pk, remote_id="").update(**ids, updated_at=now)
                _event(record, status, status, trigger, "", f"{note} (kept; the earning stays {status})")
            return False
        _event(record, status, Status.AWARDED, trigger, "", note)
        saved = EarningRecord.objects.get(pk=record.pk)
        _announce(saved)
        _release_reversals(saved)
    return True
