"""One machine for every outbox row: earnings, reversals, and any kind added later.

An outbox row is written in the shop's transaction and sent later, by a worker holding the account lock. What is
the same for every kind lives here, once: a claim with a lease (a conditional UPDATE: exactly one claimant wins),
the attempt row committed before the call, moves checked against the kind's transition table and made with a
conditional UPDATE together with their audit entry, leases renewed by a live worker and recovered in batches after a
dead one, and the due-work queries.

A kind is data (a :class:`Machine`): its model, its transition table, where its account is, and which earning's
timeline its attempts and audit entries join. What a platform's answer means is each kind's own decision
(:func:`django_points_earn.lifecycle.complete` for earnings, :func:`django_points_earn.reversal_lifecycle.complete` for
refunds): they choose the new state and fields and make the move here. On PostgreSQL the drain's hot path (a claim
with its attempt row, an answer's close and move) takes fewer statements through :mod:`.outbox_sql`; the ORM code
here is the reference it matches, and what other databases run.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

from django.db import models, transaction
from django.db.models import F, Min, Q, QuerySet
from django.utils import timezone

from . import attempts, outbox_sql
from .conf import get_settings
from .models import EarningAttempt, EarningEvent, OutboxRow, Trigger
from .providers.base import EarnResult

log = logging.getLogger("django_points_earn")

# The states the engine itself works with; every kind has them (its own table says what else it has).
QUEUED, SENDING, FAILED = "queued", "sending", "failed"
# An attempt the sweep closed: its worker died before recording the answer.
ABANDONED = "abandoned"


class TransitionError(Exception):
    pass


class Audit(NamedTuple):
    """The audit entry written with a move: who or what made it, and why."""

    trigger: str
    actor: str = ""
    note: str = ""


@dataclass(frozen=True)
class Move:
    """What :meth:`Machine.finish_and_move` did: whether the row moved (also its truth value), and whether rows of
    the kind's ``waiters`` wait for it, when the move's statement could say (``None``: not asked)."""

    moved: bool
    waited_on: bool | None = None

    def __bool__(self) -> bool:
        return self.moved


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one instance per kind
class Machine:
    """One kind of outbox row, as data for the engine."""

    model: type[OutboxRow]
    allowed: Mapping[str, frozenset[str]]
    noun: str  # in messages: "earning", "refund"
    account_path: str  # the lookup from a row to its account
    # The attribute holding the earning whose timeline this row's attempts and audit entries join, and (for a row
    # that is not the earning itself) the attempt's and event's foreign key naming this row.
    timeline: str = "pk"
    own_key: str | None = None
    read_with: tuple[str, ...] = ()  # select_related when a claimed row is read whole
    # The reason a row recovered after its worker died is given (due again; or failed, its attempts used up).
    lease_lost: str = "the worker stopped during the call (lease expired); the outcome is unknown"
    lease_lost_given_up: str = "the worker stopped during the call (lease expired); its attempts are used up"
    # An extra condition for a move to ``queued`` (e.g. an earning needs a body to send), given the move's fields.
    queued_guard: Callable[[Mapping[str, Any]], Q | None] | None = None
    # Run in the move's transaction: after a claimed row went back to the queue unsent, and after rows were given
    # up (``failed``) by the lease recovery. Modules above the machine register work here (no import back up).
    given_back_hooks: list[Callable[[Any], None]] = field(default_factory=list)
    given_up_hooks: list[Callable[[list[int]], None]] = field(default_factory=list)
    # Rows of another kind that wait for a row of this one to settle: (their model, their key naming this row, their
    # waiting state). On PostgreSQL the move's own statement says whether any waits (``Move.waited_on``).
    waiters: tuple[type[models.Model], str, str] | None = None

    # -- transitions ---------------------------------------------------------------------------------------------
    def check(self, from_status: str, to_status: str) -> None:
        if to_status not in self.allowed.get(from_status, ()):
            raise TransitionError(
                f"a{'n' if self.noun[0] in 'aeiou' else ''} {self.noun} cannot go from {from_status} to {to_status}"
            )

    def move(
        self,
        row: OutboxRow,
        from_status: str,
        to: str,
        fields: dict[str, Any],
        *,
        lease_token: str | None = None,
        audit: Audit | None = None,
    ) -> bool:
        """Move ``row`` from ``from_status`` to ``to`` if it is still there (and still under ``lease_token``):
        one conditional UPDATE, so two writers never both move it; with ``audit``, its entry in the same
        transaction. Returns whether it moved. ``updated_at`` is set unless ``fields`` gives it."""
        self.check(from_status, to)
        fields.setdefault("updated_at", timezone.now())
        qs = self.model.objects.filter(pk=row.pk, status=from_status)
        if (guard := self._guard(to, fields)) is not None:
            qs = qs.filter(guard)
        if lease_token is not None:
            qs = qs.filter(lease_token=lease_token)
        with transaction.atomic(savepoint=False):
            moved = qs.update(status=to, **fields) == 1
            if moved and audit is not None:
                self.record_event(row, from_status, to, audit)
        return moved

    def finish_and_move(
        self,
        row: OutboxRow,
        attempt: EarningAttempt | None,
        result: EarnResult,
        from_status: str,
        to: str,
        fields: dict[str, Any],
        *,
        lease_token: str | None = None,
        audit: Audit | None = None,
    ) -> Move:
        """Close ``attempt`` with the platform's answer (finished when the row moves: ``fields["updated_at"]``) and
        :meth:`move` the row, in one transaction; the attempt keeps the answer even if the row does not move.

        On PostgreSQL one statement (:func:`~django_points_earn.outbox_sql.finish_and_move`), which also says
        whether a row of :attr:`waiters` waits for this one; elsewhere the ORM's writes, one after another."""
        self.check(from_status, to)
        now = fields.setdefault("updated_at", timezone.now())
        if not outbox_sql.in_use():
            with transaction.atomic(savepoint=False):
                if attempt is not None:
                    attempts.finish_attempt(attempt, result, now)
                return Move(self.move(row, from_status, to, fields, lease_token=lease_token, audit=audit))
        event = None
        if audit is not None:
            event = self._event_values(row, from_status, to, audit)
        moved, waited_on = outbox_sql.finish_and_move(
            self.model,
            row.pk,
            from_status,
            to,
            fields,
            lease_token=lease_token,
            guard=self._guard(to, fields),
            attempt=attempt,
            attempt_fields=attempts.finished_fields(result, now),
            event=event,
            waiters=self.waiters,
        )
        return Move(moved, waited_on)

    def _guard(self, to: str, fields: Mapping[str, Any]) -> Q | None:
        return self.queued_guard(fields) if to == QUEUED and self.queued_guard is not None else None

    def record_event(self, row: OutboxRow, from_status: str, to: str, audit: Audit) -> None:
        """An audit entry on the row's earning timeline (also a note on an unchanged state: from == to)."""
        EarningEvent.objects.create(**self._event_values(row, from_status, to, audit))

    def _event_values(self, row: OutboxRow, from_status: str, to: str, audit: Audit) -> dict[str, Any]:
        return {
            **self._owner(row),
            "from_status": from_status,
            "to_status": to,
            "trigger": audit.trigger,
            "actor": audit.actor[:150],
            "note": audit.note,
        }

    def move_batch(
        self, condition: Q, from_status: str, to: str, fields: dict[str, Any], audit: Audit, *, batch: int = 500
    ) -> list[int]:
        """Move up to ``batch`` rows in ``from_status`` that meet ``condition`` to ``to``, in one transaction and a
        handful of queries: locked (skipped if another worker holds them), moved, one audit entry each. Returns the
        ids moved."""
        self.check(from_status, to)
        with transaction.atomic():
            locked = self.model.objects.select_for_update(skip_locked=True, of=("self",))
            qs = locked.filter(condition, status=from_status)
            columns = ["id"] + ([] if self.timeline == "pk" else [self.timeline])
            rows = list(qs.order_by("id").values_list(*columns)[:batch])
            if not rows:
                return []
            pks = [row[0] for row in rows]
            self.model.objects.filter(pk__in=pks, status=from_status).update(
                status=to, **{"updated_at": timezone.now(), **fields}
            )
            EarningEvent.objects.bulk_create(
                [
                    EarningEvent(
                        **self._owner_ids(row[0], row[-1]),
                        from_status=from_status,
                        to_status=to,
                        trigger=audit.trigger,
                        actor=audit.actor[:150],
                        note=audit.note,
                    )
                    for row in rows
                ]
            )
        return pks

    # -- claims and leases ---------------------------------------------------------------------------------------
    def claim(self, row: int | OutboxRow, *, lease_seconds: float) -> Any | None:
        """Take a due row for one attempt. Exactly one caller wins; the others get ``None``.

        Given the row as just read (the drain reads the next due row whole), the claim also requires it unchanged
        since (``updated_at``) and returns that instance updated: no second read.
        """
        now = timezone.now()
        pk = row if isinstance(row, int) else row.pk
        due = self.model.objects.filter(pk=pk, status=QUEUED, next_attempt_at__lte=now)
        if not isinstance(row, int):
            due = due.filter(updated_at=row.updated_at)
        lease = {"lease_expires_at": now + timedelta(seconds=lease_seconds), "lease_token": new_token()}
        if not due.update(status=SENDING, updated_at=now, **lease):
            return None
        if isinstance(row, int):
            rows = self.model.objects.select_related(*self.read_with) if self.read_with else self.model.objects
            return rows.get(pk=pk)
        row.status, row.updated_at = SENDING, now
        for name, value in lease.items():
            setattr(row, name, value)
        return row

    def release(self, row: OutboxRow, note: str, attempt: EarningAttempt | None = None) -> bool:
        """Give back a claim without having called the platform (e.g. the account lock was lost).

        ``attempt``: a row written for a call that was then never made; it goes with the claim, so the history lists
        only calls that went out. If the claim was no longer ours, the row stays for whoever took the row over.
        """
        with transaction.atomic():
            released = self.model.objects.filter(pk=row.pk, status=SENDING, lease_token=row.lease_token).update(
                status=QUEUED, lease_token="", lease_expires_at=None, updated_at=timezone.now()
            )
            if released:
                if attempt is not None:
                    EarningAttempt.objects.filter(pk=attempt.pk, finished_at__isnull=True).delete()
                row.status, row.lease_token, row.lease_expires_at = QUEUED, "", None
                for hook in self.given_back_hooks:
                    hook(row)
        if released:
            log.info("%s %s given back unsent: %s", self.noun, row.pk, note)
        return bool(released)

    def renew_leases(self, tokens: Iterable[str], *, lease_seconds: float) -> int:
        """Extend the claims held under these lease tokens (a live worker's heartbeat, so that a long call is not
        taken for a dead worker's). Returns how many were extended."""
        tokens = list(tokens)
        if not tokens:
            return 0
        expires = timezone.now() + timedelta(seconds=lease_seconds)
        return self.model.objects.filter(status=SENDING, lease_token__in=tokens).update(lease_expires_at=expires)

    def extend_lease(self, row: OutboxRow, *, lease_seconds: float) -> bool:
        """Renew the claim of a row still ours (its lease token): for one prepared a while before its call."""
        expires = timezone.now() + timedelta(seconds=lease_seconds)
        extended = self.model.objects.filter(pk=row.pk, status=SENDING, lease_token=row.lease_token).update(
            lease_expires_at=expires
        )
        if extended:
            row.lease_expires_at = expires
        return bool(extended)

    def recover_expired_leases(
        self, *, account: str | None = None, batch: int = 500, trigger: str = Trigger.RECONCILE
    ) -> int:
        """Rows left ``sending`` past their lease (their worker died mid-call): due again with the outcome unknown,
        or ``failed`` when that was their last attempt.

        One batch per call, in a handful of queries whatever its size: the rows are locked (skipped if another sweep
        holds them), moved, their open attempts closed as abandoned and the audit entries written together.
        Returns how many were recovered (0 when none are left).
        """
        now = timezone.now()
        max_attempts = int(get_settings().retry["MAX_ATTEMPTS"])
        note, given_up_note = self.lease_lost, self.lease_lost_given_up
        with transaction.atomic():
            qs = self.model.objects.select_for_update(skip_locked=True).filter(status=SENDING, lease_expires_at__lt=now)
            if account:
                qs = qs.filter(**{self.account_path: account})
            columns = ["id", "attempts"] + ([] if self.timeline == "pk" else [self.timeline])
            rows = list(qs.order_by("lease_expires_at").values_list(*columns)[:batch])
            if not rows:
                return 0
            timeline = {row[0]: row[-1] if self.timeline != "pk" else row[0] for row in rows}
            give_up = [row[0] for row in rows if row[1] + 1 >= max_attempts]
            retry = [row[0] for row in rows if row[1] + 1 < max_attempts]
            common = {
                "attempts": F("attempts") + 1,
                "outcome_unknown": True,
                "lease_token": "",
                "lease_expires_at": None,
                "updated_at": now,
            }
            moved = self.model.objects.filter(pk__in=retry, status=SENDING).update(
                status=QUEUED, next_attempt_at=now, status_reason=note, **common
            )
            moved += self.model.objects.filter(pk__in=give_up, status=SENDING).update(
                status=FAILED, next_attempt_at=None, completed_at=now, status_reason=given_up_note, **common
            )
            EarningAttempt.objects.filter(self._attempts_of(retry + give_up), finished_at__isnull=True).update(
                finished_at=now,
                outcome=ABANDONED,
                outcome_unknown=True,
                error="the worker stopped before the answer was recorded",
            )
            EarningEvent.objects.bulk_create(
                [
                    EarningEvent(
                        **self._owner_ids(pk, timeline[pk]),
                        from_status=SENDING,
                        to_status=to,
                        trigger=trigger,
                        note=text,
                    )
                    for pks, to, text in ((retry, QUEUED, note), (give_up, FAILED, given_up_note))
                    for pk in pks
                ]
            )
            if give_up:
                for hook in self.given_up_hooks:
                    hook(give_up)
        return moved

    # -- due work ------------------------------------------------------------------------------------------------
    def expired_leases(self, account: str | None = None) -> QuerySet:
        """Rows claimed under a lease that has run out: their worker died mid-call (what the recovery takes)."""
        qs = self.model.objects.filter(status=SENDING, lease_expires_at__lt=timezone.now())
        return qs.filter(**{self.account_path: account}) if account else qs

    def due(self, account: str | None = None) -> QuerySet:
        """Queued rows whose time has come, oldest due first (of one account, or of all)."""
        qs = self.model.objects.filter(status=QUEUED, next_attempt_at__lte=timezone.now())
        if account is not None:
            qs = qs.filter(**{self.account_path: account})
        return qs.order_by("next_attempt_at", "id")

    def next_due(self, account: str) -> int | None:
        return self.due(account).values_list("id", flat=True).first()

    def seconds_until_next(self, account: str) -> float | None:
        """How long until the account's next queued row is due (``None``: nothing queued)."""
        qs = self.model.objects.filter(status=QUEUED, **{self.account_path: account})
        soonest = qs.aggregate(t=Min("next_attempt_at"))["t"]
        return None if soonest is None else max(0.0, (soonest - timezone.now()).total_seconds())

    def accounts_with_due_work(self, account: str | None = None) -> list[str]:
        """The accounts (or ``account`` alone, if it has) with a row of this kind due now."""
        return list(self.due(account).order_by().values_list(self.account_path, flat=True).distinct())

    def call_in_flight(self, account: str) -> bool:
        """A row of this account is claimed under a live lease: its call is in flight somewhere."""
        filters = {self.account_path: account, "status": SENDING, "lease_expires_at__gt": timezone.now()}
        return self.model.objects.filter(**filters).exists()

    # -- attempts ------------------------------------------------------------------------------------------------
    def start_attempt(self, row: OutboxRow, body: Any, *, trigger: str, actor: str = "") -> EarningAttempt:
        """Committed before the HTTP call: a crash between the two leaves this row as evidence. Numbered on the
        earning's timeline (a refund's attempts follow its earning's), the body stored once (:mod:`.attempts`)."""
        return attempts.start(self._owner(row), body, trigger=trigger, actor=actor)

    # -- the row's place on its earning's timeline ---------------------------------------------------------------------
    def _owner(self, row: OutboxRow) -> dict[str, Any]:
        return self._owner_ids(row.pk, row.pk if self.timeline == "pk" else getattr(row, self.timeline))

    def _owner_ids(self, pk: int, timeline_id: int) -> dict[str, Any]:
        return {"record_id": timeline_id, **({self.own_key: pk} if self.own_key else {})}

    def _attempts_of(self, pks: list[int]) -> Q:
        if self.own_key:
            return Q(**{f"{self.own_key}__in": pks})
        return Q(record_id__in=pks, reversal__isnull=True)


def new_token() -> str:
    return uuid.uuid4().hex
