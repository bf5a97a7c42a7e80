"""`manage.py points_reconcile`: lost jobs, expired leases, dry-run, exit codes, one run at a time."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from django_points_earn import lifecycle, reconcile
from django_points_earn.models import EarningRecord, Status
from tests.conftest import run_worker

pytestmark = pytest.mark.django_db(transaction=True)


def reconcile_cmd(*args):
    out = StringIO()
    try:
        call_command("points_reconcile", *args, stdout=out, stderr=out)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue()


def test_flushed_redis_is_repaired_once(place_order, points_api, clean_redis):
    place_order("SO-1")
    place_order("SO-2")
    clean_redis.flushall()  # Redis lost the jobs
    code, out = reconcile_cmd("--json")
    assert code == 0
    assert json.loads(out)["accounts_enqueued"] == ["main"]
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
    assert "would recover 1" in out
    assert EarningRecord.objects.get().status == Status.SENDING
    assert clean_redis.llen("rq:queue:default") == 0

    _code, out = reconcile_cmd()
    assert "recovered 1" in out
    record.refresh_from_db()
    assert (record.status, record.outcome_unknown) == (Status.QUEUED, True)


def test_exit_code_1_when_a_human_is_needed(place_order):
    place_order("SO-BAD", phone="12345")
    code, out = reconcile_cmd()
    assert code == 1
    assert "Needs a human: 1" in out
    assert "main/SO-BAD [rejected]" in out


def test_second_concurrent_run_says_so_and_exits_2():
    with reconcile.exclusive_run() as got_it:
        assert got_it
        code, out = reconcile_cmd()
    assert code == 2
    assert "another points_reconcile is running" in out


def test_redis_unreachable_is_exit_2(settings):
    settings.RQ_QUEUES["default"]["URL"], good = "redis://127.0.0.1:1/0", settings.RQ_QUEUES["default"]["URL"]
    try:
        code, out = reconcile_cmd()
    finally:
        settings.RQ_QUEUES["default"]["URL"] = good
    assert code == 2
    assert "points_reconcile failed: ConnectionError" in out
