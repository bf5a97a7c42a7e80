"""One drain job, many accounts (issue 15): a call in flight for each account at once, never two for one account.

Three accounts (Points "main" and "branch", fabric "fabric") on the sandboxes behind `responses`, each call taking
tens of milliseconds; a real Redis queue and database, drained by an RQ worker in this process."""

import itertools
import time

import pytest
from django.conf import settings as django_settings
from rq.job import Job

from django_points_earn import queueing
from django_points_earn.models import EarningRecord, Status
from django_points_earn.sandbox import PointsSandbox
from tests.conftest import run_worker

pytestmark = pytest.mark.django_db(transaction=True)

ACCOUNTS = ("main", "branch", "fabric")
BRANCH_KEY = "test-branch-key-Lm3v"


@pytest.fixture
def sandbox() -> PointsSandbox:
    """Points with both of the shop's Points accounts (each its own merchant, each its own lock)."""
    return PointsSandbox({django_settings.POINTS_API_KEY: "main", BRANCH_KEY: "branch"}, seed=1)


@pytest.fixture
def calls(sandbox, fabric_sandbox, monkeypatch, request):
    """Every call each sandbox answered, as (account, start, end) on one clock; then the sandboxes go live."""
    seen: list[tuple[str, float, float]] = []
    keys = {django_settings.POINTS_API_KEY: "main", BRANCH_KEY: "branch"}

    def spy(original, account_of):
        def handle(method, path, headers, body):
            started = time.monotonic()
            try:
                return original(method, path, headers, body)
            finally:
                seen.append((account_of(headers), started, time.monotonic()))

        return handle

    lowered = lambda headers: {k.lower(): v for k, v in headers.items()}  # noqa: E731
    monkeypatch.setattr(sandbox, "handle", spy(sandbox.handle, lambda h: keys[lowered(h)["x-api-key"]]))
    monkeypatch.setattr(fabric_sandbox, "handle_api", spy(fabric_sandbox.handle_api, lambda h: "fabric"))
    sandbox.set_faults(latency_ms=40)
    fabric_sandbox.set_faults(latency_ms=40)
    request.getfixturevalue("fabric_api")  # registers the spies behind `responses`
    return seen


def drain_settings(settings, **drain):
    settings.POINTS_EARN = {**settings.POINTS_EARN, "DRAIN": {**settings.POINTS_EARN["DRAIN"], **drain}}


def place(place_order, per_account: int, accounts=ACCOUNTS) -> list[str]:
    numbers = []
    for account, n in itertools.product(accounts, range(per_account)):
        numbers.append(place_order(f"{account.upper()}-{n:03d}", account=account).number)
    return numbers


def most_accounts_in_flight_at_once(calls) -> int:
    """The most accounts that had a call in flight at the same instant, as the platforms saw them."""
    edges = sorted([(start, 1, account) for account, start, _ in calls] + [(end, -1, a) for a, _, end in calls])
    in_flight: dict[str, int] = {}
    most = 0
    for _, step, account in edges:
        in_flight[account] = in_flight.get(account, 0) + step
        most = max(most, sum(1 for count in in_flight.values() if count > 0))
    return most


def assert_awarded_once_without_overlap(points, fabric, numbers, calls):
    assert dict(EarningRecord.objects.values_list("order_number", "status")) == dict.fromkeys(numbers, Status.AWARDED)
    for number in numbers:
        platform = fabric if number.startswith("FABRIC") else points
        assert platform.awards(number) == 1, number
    for account in ACCOUNTS:  # one account's calls strictly one after another
        own = sorted((start, end) for name, start, end in calls if name == account)
        assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(own)), account
    ledger = points.ledger()["merchants"]
    assert (ledger["main"]["overlaps"], ledger["branch"]["overlaps"]) == (0, 0)


def test_one_job_keeps_a_call_in_flight_for_each_account(
    settings, place_order, sandbox, fabric_sandbox, calls, clean_redis
):
    points, fabric = sandbox, fabric_sandbox
    drain_settings(settings, ACCOUNTS_PER_PROCESS=8)
    numbers = place(place_order, 6)

    run_worker()

    assert_awarded_once_without_overlap(points, fabric, numbers, calls)
    assert most_accounts_in_flight_at_once(calls) == 3
    # The first account's job took the other two waiting accounts into its free slots.
    first = Job.fetch(next(iter(_finished_jobs(clean_redis))), connection=queueing.connection())
    result = first.return_value()
    served = {result["account"]: result["sent"]} | {
        name: report["sent"] for name, report in result.get("also", {}).items()
    }
    assert served == {"main": 6, "branch": 6, "fabric": 6}
    # Nothing is left held or waiting: an idle account costs nothing.
    assert queueing.wanted(10) == []
    assert not any(queueing.drain_active(account) for account in ACCOUNTS)


def test_a_process_never_serves_more_accounts_at_once_than_its_slots(
    settings, place_order, sandbox, fabric_sandbox, calls
):
    points, fabric = sandbox, fabric_sandbox
    drain_settings(settings, ACCOUNTS_PER_PROCESS=2)
    numbers = place(place_order, 5)

    run_worker()

    assert_awarded_once_without_overlap(points, fabric, numbers, calls)
    assert most_accounts_in_flight_at_once(calls) == 2


def test_a_full_drain_hands_an_accounts_slot_to_one_that_waits_after_its_turn(settings, place_order, sandbox, calls):
    """One slot: the account with a backlog gives it up after its turn, and the waiting account's order goes before
    the rest of that backlog."""
    points = sandbox
    drain_settings(settings, ACCOUNTS_PER_PROCESS=1, TURN_SECONDS=0.3)
    backlog = place(place_order, 30, accounts=("main",))
    waiting = place(place_order, 1, accounts=("branch",))

    run_worker()

    done = dict(EarningRecord.objects.values_list("order_number", "completed_at"))
    assert all(status == Status.AWARDED for status in EarningRecord.objects.values_list("status", flat=True))
    assert done[waiting[0]] < max(done[number] for number in backlog)
    assert [points.awards(number) for number in backlog + waiting] == [1] * 31


def test_waiting_accounts_come_longest_waiting_first_and_held_ones_are_left_out(settings, clean_redis):
    for account in ("branch", "fabric", "main"):
        queueing.request_drain(account)
    assert queueing.wanted(2) == ["branch", "fabric"]
    assert queueing.wanted(5, exclude=frozenset({"fabric"})) == ["branch", "main"]
    lock = queueing.account_lock(django_settings_account("branch"), ttl=5)
    assert lock.acquire(blocking=False)
    assert queueing.wanted(5, unlocked=True) == ["fabric", "main"]
    queueing.clear_drain_request("fabric")
    assert queueing.wanted(5) == ["branch", "main"]


def django_settings_account(name: str):
    from django_points_earn.conf import get_settings

    return get_settings().account(name)


def _finished_jobs(conn):
    from rq.registry import FinishedJobRegistry

    from django_points_earn.conf import get_settings

    registry = FinishedJobRegistry(get_settings().queue, connection=queueing.connection())
    jobs = [Job.fetch(job_id, connection=queueing.connection()) for job_id in registry.get_job_ids()]
    return [job.id for job in sorted(jobs, key=lambda job: job.started_at)]


def test_the_sweep_leaves_a_waiting_account_to_the_queued_jobs_and_asks_for_one_when_none_is_queued(
    place_order, clean_redis
):
    """Every drain job takes waiting accounts into its free slots: while one is queued, the sweep adds no job for an
    account that waits (its own job's flag expired); once none is queued, it does."""
    from django_points_earn.reconcile import enqueue_due

    place_order("MAIN-1", account="main")
    place_order("BRANCH-1", account="branch")  # both wanted, each with a job queued
    assert enqueue_due() == []  # both flagged
    clean_redis.delete(*clean_redis.keys("*drain-requested*"))  # the flags expired; the jobs still wait
    assert enqueue_due() == []
    assert queueing.wanted(5) == ["main", "branch"]

    run_worker()  # the jobs ran (and drained both)
    place_order("MAIN-2", account="main")
    clean_redis.delete(*clean_redis.keys("*drain-requested*"))
    queue = django_rq_queue()
    queue.empty()  # its job was lost (a worker killed between taking it and starting it)
    assert enqueue_due() == ["main"]
    assert queue.count == 1


def django_rq_queue():
    import django_rq

    from django_points_earn.conf import get_settings

    return django_rq.get_queue(get_settings().queue, connection=queueing.connection())


def test_claims_made_behind_a_call_in_flight_do_not_ask_redis_each_time(place_order, sandbox, calls, clean_redis):
    """The account lock is extended before the first claim and then at most every LOCK_FRESH_ENOUGH seconds while
    calls follow each other, not once per earning (each extension is a Redis script call)."""
    numbers = place(place_order, 20, accounts=("main",))

    def scripts_run() -> int:
        stats = clean_redis.info("commandstats")
        return sum(stats.get(name, {}).get("calls", 0) for name in ("cmdstat_evalsha", "cmdstat_eval"))

    before = scripts_run()
    run_worker()

    assert [sandbox.awards(number) for number in numbers] == [1] * 20
    assert sandbox.ledger()["merchants"]["main"]["overlaps"] == 0
    # 20 calls of ~40 ms: about 0.9 s of calls, so a handful of extensions (and the release), not 20.
    assert scripts_run() - before <= 8


def test_after_redis_lost_its_data_the_sweep_queues_only_the_jobs_it_takes_to_serve_every_account(
    settings, place_order, sandbox, fabric_sandbox, calls, clean_redis
):
    """Three accounts due and nothing in Redis: with two accounts per process, two jobs (not three), every account
    waiting for a drain, and every order awarded once by them."""
    from django_points_earn.reconcile import sweep

    drain_settings(settings, ACCOUNTS_PER_PROCESS=2)
    numbers = place(place_order, 2)
    clean_redis.flushdb()  # Redis lost its data: no job, no flag, no waiting list

    report = sweep()

    assert sorted(report.drains_requested) == sorted(ACCOUNTS)
    assert django_rq_queue().count == 2
    assert sorted(queueing.wanted(10)) == sorted(ACCOUNTS)
    run_worker()
    assert_awarded_once_without_overlap(sandbox, fabric_sandbox, numbers, calls)
