"""Second reading of issue 15 (many accounts per process): failure modes of the drain's combined transaction and of
the sweep's "a waiting account needs no job while jobs are queued" rule. Real Redis, database and sandbox."""

import pytest
from django.db import transaction

from django_points_earn import earning_calls, queueing
from django_points_earn.models import EarningRecord, Status

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_bug_after_the_answer_in_the_combined_transaction_still_records_that_answer(
    place_order, points_api, monkeypatch
):
    """The answer and the next claim share one transaction; if the claim side fails with a bug, both roll back and
    the answer is recorded by itself. Recording it again must work from the record as it was claimed: the rolled
    back attempt left the instance saying "awarded, no lease", and a move under that empty lease matches nothing, so
    the awarded earning stayed ``sending`` until its lease ran out and was sent again as "outcome unknown".

    Fault injection (no other way to reach this branch): ``prepare_next`` raises once, only inside that transaction.
    """
    from django_points_earn.dispatch import drain_account

    points_api.set_faults(latency_ms=30)  # the second call is in flight while the first answer is recorded
    for n in range(3):
        place_order(f"SO-C{n}")
    original, failed = earning_calls.prepare_next, []

    def prepare_next(account, ctx):
        if transaction.get_connection().in_atomic_block and not failed:
            failed.append(account)
            raise RuntimeError("a bug while claiming the next earning")
        return original(account, ctx)

    monkeypatch.setattr(earning_calls, "prepare_next", prepare_next)
    drain_account("main")
    assert failed  # the fault was hit
    assert dict(EarningRecord.objects.values_list("order_number", "status")) == dict.fromkeys(
        ["SO-C0", "SO-C1", "SO-C2"], Status.AWARDED
    )
    for n in range(3):  # each sent once, its one attempt closed with the platform's answer
        record = EarningRecord.objects.get(order_number=f"SO-C{n}")
        assert list(record.attempt_set.values_list("outcome", flat=True)) == ["awarded"]
        assert not record.outcome_unknown
        assert points_api.awards(f"SO-C{n}") == 1


def test_a_waiting_account_gets_a_drain_while_only_other_jobs_are_queued(place_order, points_api):
    """The sweep asks no drain job for an account that waits in the adoption list while jobs are queued, because
    each drain job adopts waiting accounts. A webhook's job (or any job of the shop's on a shared queue) adopts
    nothing: an account whose own job was lost waited for as long as the queue was never empty."""
    import django_rq

    from django_points_earn.reconcile import sweep
    from tests.conftest import run_worker

    place_order("SO-W1")  # queues its drain job, and "main" waits in the adoption list
    conn = queueing.connection()
    queue = django_rq.get_queue("default")
    queue.empty()  # the job is lost (a worker killed between taking it and starting it)...
    conn.delete(f"{queueing.get_settings().redis_prefix}:drain-requested:main")  # ...and its flag has expired
    queue.enqueue(queueing.WEBHOOK_JOB, 999_999)  # some other job waits in the queue
    assert queue.count == 1

    assert sweep().drains_requested == ["main"]
    run_worker()
    assert EarningRecord.objects.get().status == Status.AWARDED
    assert points_api.awards("SO-W1") == 1
