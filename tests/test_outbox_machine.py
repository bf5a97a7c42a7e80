"""The outbox machine (``django_points_earn.outbox``) itself, for every kind of outbox row, on the real database.

Each test runs for earnings and for reversals alike: the engine is one, and the kinds differ only in data (their
transition table, where their account is, which earning's timeline their attempts and audit entries join).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from django_points_earn.attempts import attempt_body
from django_points_earn.earning_states import EARNINGS
from django_points_earn.kinds import MACHINES
from django_points_earn.models import EarningAttempt, EarningEvent, EarningRecord, Reversal, Status, Trigger
from django_points_earn.outbox import ABANDONED, FAILED, QUEUED, SENDING, Audit, TransitionError
from django_points_earn.reversal_lifecycle import REVERSALS


@pytest.fixture(params=["earning", "refund"])
def kind(request, place_order):
    """(machine, make_row): ``make_row(name)`` gives a queued, due row of that kind on account ``main``."""
    machine = EARNINGS if request.param == "earning" else REVERSALS

    def make_row(name: str, account: str = "main"):
        place_order(name, account=account)
        record = EarningRecord.objects.get(order_number=name)
        if machine is EARNINGS:
            return record
        EarningRecord.objects.filter(pk=record.pk).update(status=Status.AWARDED, remote_id=f"uuid-{name}")
        return Reversal.objects.create(
            record=record, refund_id=f"R-{name}", status=QUEUED, next_attempt_at=timezone.now() - timedelta(seconds=1)
        )

    return machine, make_row


def _timeline(machine, row) -> int:
    return row.pk if machine is EARNINGS else row.record_id


def test_every_state_of_each_kind_has_a_row_in_its_transition_table():
    for machine in MACHINES:
        states = {value for value, _ in machine.model._meta.get_field("status").choices}
        assert set(machine.allowed) == states, machine.noun
        assert all(targets <= states for targets in machine.allowed.values())
        # The engine's own states exist in every kind, and only a claim leads to ``sending``.
        assert {QUEUED, SENDING, FAILED} <= states
        assert [s for s, targets in machine.allowed.items() if SENDING in targets] == [QUEUED]


def test_exactly_one_claim_wins_and_a_stale_read_cannot_claim(kind):
    machine, make_row = kind
    row = make_row("SO-1")
    stale = machine.model.objects.get(pk=row.pk)
    first = machine.claim(row.pk, lease_seconds=30)
    assert first is not None and first.status == SENDING and first.lease_token
    assert first.lease_expires_at > timezone.now() + timedelta(seconds=25)
    assert machine.claim(row.pk, lease_seconds=30) is None
    assert machine.release(first, "test")
    assert machine.claim(stale, lease_seconds=30) is None  # the row changed since it was read
    fresh = machine.model.objects.get(pk=row.pk)
    assert machine.claim(fresh, lease_seconds=30) is not None


def test_a_move_outside_the_table_raises_and_writes_nothing(kind):
    machine, make_row = kind
    row = make_row("SO-1")
    with pytest.raises(TransitionError):
        machine.move(row, QUEUED, FAILED, {}, audit=Audit(Trigger.ADMIN, "ops", "no"))
    assert machine.model.objects.get(pk=row.pk).status == QUEUED
    assert not EarningEvent.objects.exists()


def test_a_move_under_a_lost_lease_changes_nothing_and_writes_no_audit(kind):
    machine, make_row = kind
    claimed = machine.claim(make_row("SO-1").pk, lease_seconds=30)
    moved = machine.move(claimed, SENDING, QUEUED, {}, lease_token="not-ours", audit=Audit(Trigger.WORKER, "", "x"))
    assert not moved
    assert machine.model.objects.get(pk=claimed.pk).status == SENDING
    assert not EarningEvent.objects.exists()


def test_a_move_and_its_audit_entry_land_on_the_earnings_timeline(kind):
    machine, make_row = kind
    claimed = machine.claim(make_row("SO-1").pk, lease_seconds=30)
    assert machine.move(
        claimed,
        SENDING,
        QUEUED,
        {"status_reason": "later"},
        lease_token=claimed.lease_token,
        audit=Audit(Trigger.ADMIN, "ops", "tried later"),
    )
    row = machine.model.objects.get(pk=claimed.pk)
    assert (row.status, row.status_reason) == (QUEUED, "later")
    event = EarningEvent.objects.get()
    assert event.record_id == _timeline(machine, row)
    assert event.reversal_id == (row.pk if machine is REVERSALS else None)
    assert (event.from_status, event.to_status, event.actor, event.note) == (SENDING, QUEUED, "ops", "tried later")


def test_a_release_gives_the_row_back_and_removes_the_attempt_that_never_went_out(kind):
    machine, make_row = kind
    claimed = machine.claim(make_row("SO-1").pk, lease_seconds=30)
    attempt = machine.start_attempt(claimed, {"n": 1}, trigger=Trigger.WORKER)
    assert machine.release(claimed, "account lock lost", attempt)
    assert machine.model.objects.get(pk=claimed.pk).status == QUEUED
    assert not EarningAttempt.objects.exists()
    assert not machine.release(claimed, "again")  # no longer ours: nothing happens


def test_attempts_are_numbered_on_the_earnings_timeline_and_a_repeated_body_is_stored_once(kind):
    machine, make_row = kind
    row = machine.claim(make_row("SO-1").pk, lease_seconds=30)
    first = machine.start_attempt(row, {"order": "SO-1", "total": "10.00"}, trigger=Trigger.WORKER)
    second = machine.start_attempt(row, {"total": "10.00", "order": "SO-1"}, trigger=Trigger.WORKER)  # same body
    third = machine.start_attempt(row, {"order": "SO-1", "total": "9.00"}, trigger=Trigger.ADMIN, actor="ops")
    assert [a.number for a in (first, second, third)] == [1, 2, 3]
    assert first.record_id == second.record_id == _timeline(machine, row)
    assert first.request_body is not None and second.request_body is None and third.request_body is not None
    assert attempt_body(second) == ({"order": "SO-1", "total": "10.00"}, 1)
    if machine is REVERSALS:
        assert set(EarningAttempt.objects.values_list("reversal_id", flat=True)) == {row.pk}


def test_expired_leases_are_recovered_in_one_batch_with_attempts_closed_and_audited(kind):
    """The test settings allow 5 attempts: a row on its fifth is given up (failed), not sent again."""
    machine, make_row = kind
    dead = [machine.claim(make_row(f"SO-{n}").pk, lease_seconds=30) for n in range(3)]
    live = machine.claim(make_row("SO-LIVE").pk, lease_seconds=30)
    for row in dead:
        machine.start_attempt(row, {"n": row.pk}, trigger=Trigger.WORKER)
    machine.model.objects.filter(pk__in=[r.pk for r in dead]).update(lease_expires_at=timezone.now() - timedelta(1))
    machine.model.objects.filter(pk=dead[2].pk).update(attempts=4)  # its last attempt

    assert machine.recover_expired_leases(batch=10) == 3
    rows = {r.pk: r for r in machine.model.objects.all()}
    assert [rows[r.pk].status for r in dead] == [QUEUED, QUEUED, FAILED]
    assert all(rows[r.pk].outcome_unknown and rows[r.pk].lease_token == "" for r in dead)
    assert [rows[r.pk].attempts for r in dead] == [1, 1, 5]
    assert rows[dead[2].pk].completed_at is not None and rows[dead[2].pk].next_attempt_at is None
    assert rows[live.pk].status == SENDING  # a live lease is left alone
    assert set(EarningAttempt.objects.values_list("outcome", "outcome_unknown")) == {(ABANDONED, True)}
    events = EarningEvent.objects.order_by("id")
    assert [(e.from_status, e.to_status, e.trigger) for e in events] == [
        (SENDING, QUEUED, Trigger.RECONCILE),
        (SENDING, QUEUED, Trigger.RECONCILE),
        (SENDING, FAILED, Trigger.RECONCILE),
    ]
    assert "used up" in events[2].note
    assert machine.recover_expired_leases(batch=10) == 0


def test_recovery_takes_one_batch_per_call_and_one_account_when_asked(kind, settings):
    machine, make_row = kind
    rows = [machine.claim(make_row(f"SO-{n}").pk, lease_seconds=30) for n in range(3)]
    other = machine.claim(make_row("SO-B", account="branch").pk, lease_seconds=30)
    machine.model.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert machine.recover_expired_leases(account="branch") == 1
    assert machine.model.objects.get(pk=other.pk).status == QUEUED
    assert machine.recover_expired_leases(batch=2) == 2
    assert machine.recover_expired_leases(batch=2) == 1
    assert all(machine.model.objects.get(pk=r.pk).status == QUEUED for r in rows)


def test_renewing_leases_extends_only_the_claims_named(kind):
    machine, make_row = kind
    mine = machine.claim(make_row("SO-1").pk, lease_seconds=1)
    theirs = machine.claim(make_row("SO-2").pk, lease_seconds=1)
    assert machine.renew_leases([mine.lease_token], lease_seconds=60) == 1
    expires = dict(machine.model.objects.values_list("pk", "lease_expires_at"))
    assert expires[mine.pk] > timezone.now() + timedelta(seconds=50)
    assert expires[theirs.pk] < timezone.now() + timedelta(seconds=2)
    assert machine.call_in_flight("main")


def test_due_work_is_queued_rows_whose_time_has_come_oldest_first(kind):
    machine, make_row = kind
    later, first, waiting = make_row("SO-LATER"), make_row("SO-FIRST"), make_row("SO-WAIT")
    now = timezone.now()
    machine.model.objects.filter(pk=later.pk).update(next_attempt_at=now - timedelta(seconds=1))
    machine.model.objects.filter(pk=first.pk).update(next_attempt_at=now - timedelta(seconds=5))
    machine.model.objects.filter(pk=waiting.pk).update(next_attempt_at=now + timedelta(seconds=30))
    assert list(machine.due("main").values_list("pk", flat=True)) == [first.pk, later.pk]
    assert machine.next_due("main") == first.pk
    assert machine.accounts_with_due_work() == ["main"]
    assert machine.next_due("branch") is None
    assert machine.seconds_until_next("main") == 0.0
    assert machine.seconds_until_next("branch") is None
