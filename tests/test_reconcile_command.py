"""`manage.py points_reconcile`: every step on real Redis and the test database, dry-run, exit codes."""

import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from django_points_earn import lifecycle, reconcile
from django_points_earn.models import EarningRecord, Status
from tests.conftest import POINTS_URL, run_worker, settle

pytestmark = pytest.mark.django_db(transaction=True)


def reconcile_cmd(*args):
    out, err = StringIO(), StringIO()
    try:
        call_command("points_reconcile", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue() + err.getvalue()


def test_flushed_redis_is_repaired_once(place_order, points_api, clean_redis):
    place_order("SO-1")
    place_order("SO-2")
    clean_redis.flushall()  # Redis lost the jobs
    code, out = reconcile_cmd("--json")
    assert code == 0
    assert json.loads(out)["steps"]["lost_jobs"]["accounts_enqueued"] == ["main"]
    assert reconcile_cmd("--json")[0] == 0
    assert clean_redis.llen("rq:queue:default") == 1  # running it twice enqueued nothing twice
    run_worker()
    assert set(EarningRecord.objects.values_list("status", flat=True)) == {Status.AWARDED}
    assert points_api.total_awards("main") == 2


def test_expired_lease_recovered_and_dry_run_changes_nothing(place_order, clean_redis):
    place_order("SO-L")
    clean_redis.flushall()
    record = lifecycle.claim(EarningRecord.objects.get().pk, lease_seconds=30)
    EarningRecord.objects.filter(pk=record.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=5))

    _, out = reconcile_cmd("--dry-run")
    assert "1 would be recovered" in out
    assert EarningRecord.objects.get().status == Status.SENDING
    assert clean_redis.llen("rq:queue:default") == 0

    _, out = reconcile_cmd()
    assert "Expired leases (worker died mid-call): 1 recovered" in out
    record.refresh_from_db()
    assert (record.status, record.outcome_unknown) == (Status.QUEUED, True)
    assert "\r" not in out  # no progress bar on a pipe


def test_paid_order_that_bypassed_the_signal_is_backfilled(place_order, points_api):
    from tests.shop.models import Order, OrderLine

    place_order("SO-SIGNALLED")
    run_worker()
    order = Order.objects.create(number="SO-BYPASS", phone="0512345678")
    OrderLine.objects.create(order=order, name="Tea", price=Decimal("5"), quantity=2)
    Order.objects.filter(pk=order.pk).update(paid=True)  # a queryset update(): no signal

    code, out = reconcile_cmd("--since", "2d", "--dry-run")
    assert "2 paid orders checked, 1 without an earning (would be recorded)" in out
    assert "main/SO-BYPASS" in out
    assert not EarningRecord.objects.filter(order_number="SO-BYPASS").exists()

    code, out = reconcile_cmd("--since", "2d")
    assert code == 0
    assert EarningRecord.objects.get(order_number="SO-BYPASS").status == Status.QUEUED
    run_worker()
    assert points_api.awards("SO-BYPASS") == 1
    assert reconcile_cmd("--since", "2d")[1].count("without an earning") == 1
    assert "0 without an earning" in reconcile_cmd("--since", "2d")[1]


def test_remote_drift_is_recorded_and_reported_never_fixed(place_order, points_api, settings):
    import requests

    place_order("SO-OK")
    place_order("SO-REFUNDED")
    settle()
    refunded = EarningRecord.objects.get(order_number="SO-REFUNDED")
    requests.post(
        f"{POINTS_URL}/orders/{refunded.remote_id}/refund",
        json={"reason": "dashboard"},
        headers={"x-api-key": settings.POINTS_API_KEY},
        timeout=5,
    )

    code, out = reconcile_cmd("--verify-remote")
    assert code == 1
    assert "Remote verification: 2 checked, 1 agree, 1 differ" in out
    assert "main/SO-REFUNDED: " in out and "fully_refunded" in out
    refunded.refresh_from_db()
    assert refunded.status == Status.AWARDED  # not "fixed"
    assert "fully_refunded" in refunded.drift
    assert refunded.remote_checked_at is not None
    assert EarningRecord.objects.get(order_number="SO-OK").drift == ""


def test_old_pending_and_stuck_queued_need_a_human(place_order, points_api, clean_redis):
    place_order("SO-PEND", phone="0500000003")
    run_worker()
    assert reconcile_cmd()[0] == 0  # pending, but young
    EarningRecord.objects.filter(order_number="SO-PEND").update(updated_at=timezone.now() - timedelta(days=8))
    code, out = reconcile_cmd()
    assert code == 1
    assert "Pending customer activation: 1 (1 older than the limit)" in out

    place_order("SO-STUCK")
    clean_redis.flushall()
    EarningRecord.objects.filter(order_number="SO-STUCK").update(next_attempt_at=timezone.now() - timedelta(hours=1))
    report = json.loads(reconcile_cmd("--json", "--dry-run", "--stale-after", "30")[1])
    assert {i["order_number"] for i in report["needs_attention"]} == {"SO-PEND", "SO-STUCK"}


def test_retry_failed(place_order, points_api):
    points_api.script(*["500"] * 5)
    place_order("SO-F")
    settle()
    assert EarningRecord.objects.get().status == Status.FAILED
    code, out = reconcile_cmd()
    assert code == 1 and "[failed]" in out
    code, out = reconcile_cmd("--retry-failed")
    assert "Failed earnings sent again: 1" in out
    settle()
    assert EarningRecord.objects.get().status == Status.AWARDED
    assert reconcile_cmd()[0] == 0


def test_exit_code_1_when_a_human_is_needed(place_order):
    place_order("SO-BAD", phone="12345")
    code, out = reconcile_cmd()
    assert code == 1
    assert "Needs a human: 1" in out
    assert "main/SO-BAD [rejected] ***45" in out


def test_second_concurrent_run_says_so_and_does_nothing(place_order, clean_redis):
    place_order("SO-C")
    clean_redis.delete("rq:queue:default")
    with reconcile.exclusive_run() as got_it:
        assert got_it
        code, out = reconcile_cmd()
    assert code == 0
    assert "another points_reconcile is running" in out
    assert clean_redis.llen("rq:queue:default") == 0


def test_redis_unreachable_is_exit_2(settings):
    settings.RQ_QUEUES["default"]["URL"], good = "redis://127.0.0.1:1/0", settings.RQ_QUEUES["default"]["URL"]
    try:
        code, out = reconcile_cmd()
    finally:
        settings.RQ_QUEUES["default"]["URL"] = good
    assert code == 2
    assert "points_reconcile failed: ConnectionError" in out


def test_reconcile_runs_as_an_rq_job(place_order, points_api, clean_redis):
    import django_rq

    from django_points_earn import jobs

    place_order("SO-J")
    clean_redis.flushall()
    job = django_rq.get_queue("default").enqueue(jobs.reconcile)
    run_worker()  # runs the reconcile job, which enqueues the lost drain job, which the burst worker then runs
    job.refresh()
    assert job.return_value()["steps"]["lost_jobs"]["accounts_enqueued"] == ["main"]
    assert EarningRecord.objects.get().status == Status.AWARDED


def test_a_refund_that_needs_a_human_is_reported_once_and_retried_on_request(place_order, points_api):
    """A failed or rejected refund is an operator's problem like a failed earning: listed, exit code 1, alerted
    once with --fail-on new, and sent again by --retry-failed."""
    from django_points_earn.models import Reversal, ReversalStatus
    from django_points_earn.signals import order_refunded
    from tests.shop.models import Order

    order = place_order("SO-RMA", lines=[("Abaya", "115.00", 1)])
    settle()
    points_api.refund_window_days = -1  # Points refuses the refund: its window has closed
    order_refunded.send(sender=Order, order=order, amount=None, reason="returned", refund_id="RMA-7")
    settle()
    assert Reversal.objects.get().status == ReversalStatus.REJECTED

    code, out = reconcile_cmd()
    assert code == 1
    assert "Refunds that need a human: 1 (1 not reported before)" in out
    assert "main/SO-RMA refund RMA-7 [rejected]" in out
    report = json.loads(reconcile_cmd("--json")[1])
    assert report["refunds_needing_attention"][0]["refund_id"] == "RMA-7"
    assert reconcile_cmd("--fail-on", "new")[0] == 1  # first report
    assert reconcile_cmd("--fail-on", "new")[0] == 0  # already reported: no second alert

    Reversal.objects.update(status=ReversalStatus.FAILED)  # as if its attempts had been used up
    points_api.refund_window_days = None
    code, out = reconcile_cmd("--retry-failed")
    assert "Failed earnings sent again: 1" in out
    settle()
    assert Reversal.objects.get().status == ReversalStatus.REVERSED
    assert reconcile_cmd()[0] == 0
