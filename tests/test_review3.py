"""Second reading of issue 15 (many accounts per process): failure modes of the drain's combined transaction and of
the sweep's "a waiting account needs no job while jobs are queued" rule. Real Redis, database and sandbox."""

import pytest
from django.conf import settings as django_settings
from django.db import transaction

from django_points_earn import earning_calls, queueing
from django_points_earn.models import EarningRecord, Status
from tests.third_platform.backend import StampsBackend

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


@pytest.mark.skipif(
    not django_settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="terminates a PostgreSQL backend"
)
def test_the_heartbeat_keeps_renewing_leases_after_its_database_connection_broke(place_order, sandbox, settings):
    """One heartbeat renews every claim of a drain for the drain's whole life (up to MAX_SECONDS, many accounts).
    Its own connection dropped once (a failover, a killed backend): every later renewal failed on the dead
    connection, so the leases of calls still in flight ran out (the sweep then resends them as outcome unknown).
    Real fault: the heartbeat's PostgreSQL backend is terminated while a call is in flight."""
    import time

    from django.db import connection
    from django.utils import timezone

    from django_points_earn.dispatch import drain_account
    from django_points_earn.sandbox import register_responses
    from tests.conftest import POINTS_URL

    settings.POINTS_EARN = {**settings.POINTS_EARN, "LEASE_SECONDS": 0.8}  # renewed every 0.25 s
    place_order("SO-H1")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        drain_pid = cursor.fetchone()[0]
    left, original = [], sandbox.handle

    def handle(method, path, headers, body):  # in the call thread, while SO-H1's call is in flight
        time.sleep(0.6)  # the heartbeat has renewed the claim: its connection is open
        with connection.cursor() as cursor:  # every other backend of this database: the heartbeat's
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid NOT IN (pg_backend_pid(), %s)",
                [drain_pid],
            )
        time.sleep(1.2)  # longer than a lease
        record = EarningRecord.objects.get(order_number="SO-H1")
        left.append((record.lease_expires_at - timezone.now()).total_seconds())
        return original(method, path, headers, body)

    import responses as responses_lib

    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        sandbox.handle = handle
        register_responses(rsps, sandbox, POINTS_URL)
        drain_account("main")
    assert EarningRecord.objects.get().status == Status.AWARDED
    assert left and left[0] > 0  # the claim was still alive while its call ran


class BrittleBackend(StampsBackend):
    """A shop's platform whose credentials fail in a way of their own (a token answer without its key), not with
    ImproperlyConfigured."""

    def auth_headers(self):
        raise KeyError("access_token")


def test_one_accounts_failing_lane_does_not_stop_the_other_accounts_of_the_drain(place_order, points_api):
    """A drain serves many accounts; one account that fails in a way nobody foresaw (here the shop's own platform
    backend's credentials raising KeyError) ended every other lane of the process too, and the job failed. Each time a
    drain adopted that account from the waiting list, all of its other accounts stopped."""
    from django.test import override_settings

    from django_points_earn.dispatch import drain_accounts

    conf = {**django_settings.POINTS_EARN, "PLATFORMS": {"stamps": "tests.test_review3.BrittleBackend"}}
    conf["ACCOUNTS"] = {**conf["ACCOUNTS"], "stamps": {"PROVIDER": "stamps", "TOKEN": "test-stamps-token-9Lm3"}}
    with override_settings(POINTS_EARN=conf):
        points_api.set_faults(latency_ms=30)
        place_order("SO-B0", account="stamps")  # waits for a drain: adopted by main's
        numbers = [place_order(f"SO-M{n}").number for n in range(4)]
        reports = drain_accounts("main")
    assert dict(EarningRecord.objects.filter(account="main").values_list("order_number", "status")) == dict.fromkeys(
        numbers, Status.AWARDED
    )
    assert reports["main"].sent == 4
    assert EarningRecord.objects.get(account="stamps").status == Status.QUEUED  # untouched, for the sweep
    assert queueing.connection().keys("*:lock:*") == []  # the failed lane let its account go


def test_a_job_timeout_with_calls_in_flight_on_two_accounts_records_both_and_gives_back_what_was_prepared(
    place_order, clean_redis
):
    """RQ's job timeout lands while each of two accounts served by one drain has a call in flight and its next
    earning prepared behind it: every lane is closed, each answer recorded, each prepared claim given back unsent,
    and no account lock is left behind (a confirmation: this holds on main)."""
    import signal

    import responses as responses_lib
    from rq.timeouts import JobTimeoutException

    from django_points_earn.dispatch import drain_accounts
    from django_points_earn.sandbox import PointsSandbox, register_responses
    from tests.conftest import POINTS_URL

    sandbox = PointsSandbox({django_settings.POINTS_API_KEY: "main", "test-branch-key-Lm3v": "branch"}, seed=1)
    sandbox.set_faults(latency_ms=2000)  # far longer than the alarm, even on a loaded machine
    for account in ("main", "branch"):
        place_order(f"{account.upper()}-1", account=account)
        place_order(f"{account.upper()}-2", account=account)

    def on_alarm(signum, frame):
        raise JobTimeoutException("Task exceeded maximum timeout value")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.5)  # both first calls in flight, both second ones prepared
    try:
        with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            register_responses(rsps, sandbox, POINTS_URL)
            with pytest.raises(JobTimeoutException):
                drain_accounts("main")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    for account in ("MAIN", "BRANCH"):
        first = EarningRecord.objects.get(order_number=f"{account}-1")
        assert first.status == Status.AWARDED and sandbox.awards(f"{account}-1") == 1
        second = EarningRecord.objects.get(order_number=f"{account}-2")
        assert (second.status, second.attempt_set.count(), sandbox.awards(f"{account}-2")) == (Status.QUEUED, 0, 0)
    assert clean_redis.keys("*:lock:*") == []


def test_a_full_drain_gives_up_its_turn_to_a_waiting_account_behind_accounts_held_elsewhere(
    settings, place_order, clean_redis
):
    """Accounts that wait in the list while another process holds them (a new order arrived during their lane
    there) sit at its head with their old place. The full drain's "does anyone wait?" read only as many names as it
    holds plus one, all of them held elsewhere: it saw no one waiting, and the account waiting behind them was
    served only once the whole backlog was done, not after a turn."""
    import responses as responses_lib

    from django_points_earn.conf import get_settings
    from django_points_earn.dispatch import drain_accounts
    from django_points_earn.sandbox import PointsSandbox, register_responses
    from tests.conftest import POINTS_URL, run_worker

    conf = {**settings.POINTS_EARN, "ACCOUNTS": {**settings.POINTS_EARN["ACCOUNTS"]}}
    conf["ACCOUNTS"]["north"] = {**conf["ACCOUNTS"]["branch"], "API_KEY": "test-north-key-Qw7p"}
    conf["DRAIN"] = {**conf["DRAIN"], "ACCOUNTS_PER_PROCESS": 1, "TURN_SECONDS": 0.3}
    settings.POINTS_EARN = conf
    elsewhere = []
    for account in ("fabric", "north"):  # held by another process, and waiting again
        lock = queueing.account_lock(get_settings().account(account), ttl=30)
        assert lock.acquire(blocking=False)
        elsewhere.append(lock)
        queueing.request_drain(account)
    sandbox = PointsSandbox({django_settings.POINTS_API_KEY: "main", "test-branch-key-Lm3v": "branch"}, seed=1)
    sandbox.set_faults(latency_ms=40)
    backlog = [place_order(f"MAIN-{n:02d}").number for n in range(30)]  # about 1.2 s of calls
    waiting = place_order("BRANCH-1", account="branch").number

    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        register_responses(rsps, sandbox, POINTS_URL)
        drain_accounts("main")
        run_worker()  # the rest of main's backlog, handed on after its turn
    for lock in elsewhere:
        lock.release()

    done = dict(EarningRecord.objects.values_list("order_number", "completed_at"))
    assert all(done[number] is not None for number in backlog)
    assert done[waiting] < max(done[number] for number in backlog)  # after main's turn, not after its backlog
    assert [sandbox.awards(number) for number in [*backlog, waiting]] == [1] * 31
