"""Many accounts on one small machine (issue 15): 200 merchant accounts served by at most four worker processes.

    python benchmarks/many_accounts.py                   # every case at full size
    python benchmarks/many_accounts.py --quick           # small sizes (make bench-quick)
    python benchmarks/many_accounts.py --cases a,d       # some of the cases only
    python benchmarks/many_accounts.py --accounts-per-process 16   # DRAIN["ACCOUNTS_PER_PROCESS"] for the workers
    python benchmarks/many_accounts.py --record          # also append the tables to docs/benchmarks.md

The cases run one after another in one run, on one sandbox process, one database and one private Redis; each
starts from empty tables, pays its orders first (through the app's receiver), then starts the workers
(``rqworker --worker-class django_points_earn.worker.EarningWorker``):

(a) 200 accounts x 25 orders, sandbox latency 150 ms, 4 workers. The aggregate rate is all awarded earnings over
    the first attempt's start to the last attempt's end. It is read against what the machine could do at most:
    min(CPU bound, accounts / round trip), the CPU bound being the cores over the CPU seconds the whole machine
    spent per earning in that window. The workers' RSS (each worker with its forked work horses, summed) is sampled
    every 0.25 s; the peak is reported. CPU per earning by process group: each group's process trees, exited work
    horses and database backends included (their parents' reaped-children time). Targets: >= 300 earnings/s,
    < 600 MB for all the workers.
(b) 1,000 accounts x 5 orders: every order once, the time to drain, and one sweep pass (``reconcile.sweep()``, what
    each worker runs every SWEEP_INTERVAL) timed with 1,000 accounts' rows: due with no drain queued (after Redis
    lost its data), due with every drain queued, and after the drain.
(c) One account at 20 ms: the app's rate against the bare client (the app's Points client calling back to back in
    this process) in the same run. Target: >= 95% of the bare client.
(d) Fairness: one account's backlog (20,000 orders) is being drained; then single orders of other accounts are
    paid, one at a time: the delay from each one's commit (its record's ``created_at``) to its award
    (``completed_at``). Target: no more than a couple of seconds while capacity is free.

Every order must be awarded exactly once and no account may have two calls in flight at once (the sandbox's
ledger); a breach makes the script exit 1. Timings never fail it.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, fleet, proctree

SECTION = "Many accounts on one machine (issue 15)"  # in docs/benchmarks.md
FULL = {
    "accounts": 200,
    "orders": 25,
    "many_accounts": 1000,
    "many_orders": 5,
    "single_orders": 1000,
    "bare_calls": 300,
    "backlog": 20_000,
    "probes": 5,
}
QUICK = {
    "accounts": 20,
    "orders": 5,
    "many_accounts": 50,
    "many_orders": 2,
    "single_orders": 40,
    "bare_calls": 50,
    "backlog": 200,
    "probes": 2,
}
TARGET_RATE = 300  # earnings/s, all accounts together
TARGET_RSS_MB = 600  # all workers with their work horses
TARGET_OF_BARE = 0.95
TARGET_DELAY_S = 2.0  # "no more than a couple of seconds"
WORKERS_GROUP = "workers (with their work horses)"


# -- one drain of many accounts -------------------------------------------------------------------------------
@dataclass
class SweepCost:
    state: str
    ms: float
    statements: int
    redis_commands: int
    drains_requested: int


@dataclass
class Drain:
    """One run: orders paid on ``accounts`` first, then the workers drain them all."""

    accounts: list[str]
    orders: int
    placing_s: float  # paying the orders (checkout), before any worker runs
    drained_s: float  # from the workers' start to the last earning settled
    window: fleet.Window
    counts: dict[str, int]
    problems: list[str]
    busy_cpu: float  # CPU seconds of the whole machine over the window
    cpu: dict[str, float]  # CPU seconds per process group over the window
    peak: proctree.Sample | None
    jobs: int  # drain jobs the workers ran
    last_first_award_s: float  # the last account to get its first award got it this long after the workers' start
    sweeps: list[SweepCost] = field(default_factory=list)

    @property
    def cpu_ms_per_earning(self) -> float:
        return self.busy_cpu * 1000 / max(1, self.window.awarded)


def process_groups(stack: fleet.Stack, workers: fleet.Workers) -> dict[str, Callable[[Any], list[int]]]:
    """The roots of each group's process trees (PostgreSQL: every postmaster on the machine, its backends below)."""
    redis = stack.redis.process.pid if stack.redis.process else None
    return {
        WORKERS_GROUP: lambda procs: [p.pid for p in workers.processes],
        "PostgreSQL (the whole server)": lambda procs: proctree.roots_named(procs, "postgres"),
        "Redis": lambda procs: [redis] if redis else [],
        "the sandbox": lambda procs: [stack.sandbox.process.pid],
    }


def drain_run(
    stack: fleet.Stack,
    accounts: list[str],
    per_account: int,
    *,
    workers: int,
    timeout: float,
    prefix: str,
    before_workers: Callable[[], list[SweepCost]] | None = None,
) -> Drain:
    from django.db.models import Min

    from django_points_earn.models import EarningRecord, Status

    fleet.clear_state(stack.sandbox)
    total = len(accounts) * per_account
    t0 = time.monotonic()
    placed = fleet.place_orders(total, accounts, prefix=prefix)
    placing_s = time.monotonic() - t0
    print(f"{prefix}: paid {total:,} orders on {len(accounts):,} accounts in {placing_s:.0f} s", file=sys.stderr)
    sweeps = before_workers() if before_workers else []
    fleet_ = fleet.Workers(workers, stack.workdir)
    sampler = proctree.TreeSampler(process_groups(stack, fleet_), watched=lambda: [p.pid for p in fleet_.processes])
    sampler.start()
    started = time.time()
    fleet_.start()
    try:
        drained_s = fleet.wait_until_settled(total, fleet_, timeout)
    finally:
        sampler.stop()  # its last sample is taken here, while the workers and their trees still live
        fleet_.stop()
    jobs, failed = job_counts()
    ledger = stack.sandbox.ledger()
    counts = fleet.merchant_counts(ledger, accounts)
    problems = fleet.exactly_once_problems(ledger, placed)
    if counts["overlaps"]:
        problems.append(f"{counts['overlaps']} overlapping call(s) for one account (must be 0)")
    if failed:
        problems.append(f"{failed} drain job(s) failed (see the worker logs)")
    window = fleet.attempt_window()
    busy, cpu = sampler.between(window.first, window.last)
    firsts = EarningRecord.objects.filter(status=Status.AWARDED).values("account").annotate(first=Min("completed_at"))
    last_first = max((row["first"].timestamp() - started for row in firsts), default=0.0)
    return Drain(
        accounts=accounts,
        orders=total,
        placing_s=placing_s,
        drained_s=drained_s,
        window=window,
        counts=counts,
        problems=problems,
        busy_cpu=busy,
        cpu=cpu,
        peak=sampler.peak(),
        jobs=jobs,
        last_first_award_s=last_first,
        sweeps=sweeps,
    )


def job_counts() -> tuple[int, int]:
    """(jobs finished, jobs failed) on the queue since the last flush."""
    import django_rq

    queue = django_rq.get_queue("default")
    return queue.finished_job_registry.count, queue.failed_job_registry.count


def redis_commands() -> int:
    from django_points_earn import queueing

    return int(queueing.connection().info("stats")["total_commands_processed"])


def time_sweep(state: str) -> SweepCost:
    """One ``reconcile.sweep()`` pass in this process: wall time, SQL statements, Redis commands."""
    from django.db import connection

    from django_points_earn import reconcile

    counter = common.QueryCounter()
    first = redis_commands()
    info_cost = redis_commands() - first  # what reading the counter itself adds
    before = redis_commands()
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        report = reconcile.sweep()
    ms = (time.perf_counter() - started) * 1000
    commands = redis_commands() - before - info_cost
    return SweepCost(state, ms, counter.count, commands, len(report.drains_requested))


def cpu_rows(d: Drain) -> str:
    """``workers 5.1 ms, PostgreSQL 1.8 ms, …, the rest of the machine 0.3 ms (total 7.7 ms)`` per earning."""
    n = max(1, d.window.awarded)
    parts = [f"{label} {seconds * 1000 / n:.1f} ms" for label, seconds in d.cpu.items()]
    rest = d.busy_cpu - sum(d.cpu.values())
    parts.append(f"the rest of the machine (this script included) {rest * 1000 / n:.1f} ms")
    return ", ".join(parts) + f" (total {d.cpu_ms_per_earning:.1f} ms)"


def common_rows(d: Drain, latency_ms: float) -> list[list[str]]:
    jobs_per_account = d.jobs / max(1, len(d.accounts))
    return [
        [
            "orders awarded",
            f"{d.window.awarded:,} of {d.orders:,}",
            "each exactly once: " + ("**FAILED**" if d.problems else "met"),
        ],
        [
            "overlapping calls of one account",
            f"{d.counts['overlaps']} (most calls of one merchant in flight at once: {d.counts['max_concurrency']})",
            "0",
        ],
        ["429 answers", f"{d.counts['429']:,}", ""],
        ["time to drain", f"{d.drained_s:.1f} s", "from the workers' start to the last earning settled"],
        [
            "the last account's first award",
            f"{d.last_first_award_s:.1f} s",
            "after the workers' start (the longest any account waited to be served)",
        ],
        ["drain jobs run", f"{d.jobs:,} ({jobs_per_account:.1f} per account)", ""],
        ["mean call", f"{d.window.mean_call_ms:.0f} ms", f"sandbox latency {latency_ms:g} ms"],
        [
            "paying the orders",
            f"{d.placing_s:.1f} s ({d.placing_s * 1000 / max(1, d.orders):.1f} ms per order)",
            "before the workers start; not part of the figures",
        ],
    ]


# -- the cases ------------------------------------------------------------------------------------------------
@dataclass
class Case:
    title: str
    body: str
    problems: list[str]


def case_a(stack: fleet.Stack, args: Any) -> Case:
    """200 accounts x 25 orders at 150 ms: the aggregate rate, the workers' memory, CPU per earning."""
    stack.sandbox.set_latency(args.latency_ms)
    accounts = [f"acct{i}" for i in range(1, args.accounts + 1)]
    d = drain_run(stack, accounts, args.orders, workers=args.workers, timeout=args.timeout, prefix="MA")
    cores = os.cpu_count() or 1
    rtt_bound = len(accounts) * 1000 / args.latency_ms
    cpu_bound = cores * 1000 / d.cpu_ms_per_earning if d.cpu_ms_per_earning else float("inf")
    bound = min(cpu_bound, rtt_bound)
    rate = d.window.rate
    peak_mb = d.peak.rss / 2**20 if d.peak else 0.0
    rows = [
        [
            "**aggregate rate**",
            f"**{rate:.1f}/s**",
            f"target ≥ {TARGET_RATE}/s: {common.target(rate >= TARGET_RATE)} "
            f"(first attempt → last, {d.window.seconds:.1f} s)",
        ],
        [
            "of min(CPU bound, accounts / round trip)",
            f"{rate / bound:.0%} of {bound:.0f}/s",
            f"CPU bound {cores} cores / {d.cpu_ms_per_earning:.1f} ms = {cpu_bound:.0f}/s; "
            f"{len(accounts)} x 1/{args.latency_ms:g} ms = {rtt_bound:.0f}/s",
        ],
        [
            "**peak RSS, all workers with their work horses**",
            f"**{peak_mb:.0f} MB**",
            f"target < {TARGET_RSS_MB} MB: {common.target(peak_mb < TARGET_RSS_MB)} "
            f"({d.peak.processes if d.peak else 0} processes at the peak; PSS "
            f"{d.peak.pss / 2**20 if d.peak else 0:.0f} MB, shared pages split)",
        ],
        *common_rows(d, args.latency_ms),
    ]
    body = (
        f"**(a) {len(accounts):,} accounts x {args.orders:,} orders, sandbox latency {args.latency_ms:g} ms, "
        f"{args.workers} workers{per_process_note(args)}.**\n\n"
        f"{common.markdown_table(['figure', 'value', 'target / note'], rows)}\n\n"
        f"CPU per earning over the window, by process group: {cpu_rows(d)}."
    )
    return Case(f"{len(accounts)} accounts x {args.orders}", body, [f"(a) {p}" for p in d.problems])


def case_b(stack: fleet.Stack, args: Any) -> Case:
    """1,000 accounts x 5 orders: correctness, time to drain, and what one sweep pass costs with their rows."""
    import django_rq

    stack.sandbox.set_latency(args.latency_ms)
    accounts = [f"acct{i}" for i in range(1, args.many_accounts + 1)]
    n = len(accounts)

    def sweeps_before() -> list[SweepCost]:
        django_rq.get_connection("default").flushall()  # the checkout-time jobs and flags: as if Redis lost them
        return [
            time_sweep(f"{n:,} accounts due, no drain queued (Redis lost its data)"),
            time_sweep(f"{n:,} accounts due, each with its drain queued"),
        ]

    d = drain_run(
        stack,
        accounts,
        args.many_orders,
        workers=args.workers,
        timeout=args.timeout,
        prefix="MB",
        before_workers=sweeps_before,
    )
    d.sweeps.append(time_sweep(f"{n:,} accounts' rows, none due (after the drain)"))
    rows = [["rate", f"{d.window.rate:.1f}/s", f"first attempt → last, {d.window.seconds:.1f} s"]]
    rows += common_rows(d, args.latency_ms)
    sweep_rows = [
        [s.state, f"{s.ms:.1f} ms", s.statements, f"{s.redis_commands:,}", f"{s.drains_requested:,}"] for s in d.sweeps
    ]
    body = (
        f"**(b) {n:,} accounts x {args.many_orders:,} orders, sandbox latency {args.latency_ms:g} ms, "
        f"{args.workers} workers{per_process_note(args)}.**\n\n"
        f"{common.markdown_table(['figure', 'value', 'note'], rows)}\n\n"
        "One sweep pass (`reconcile.sweep()`, what a worker runs every SWEEP_INTERVAL), in this script:\n\n"
        + common.markdown_table(
            ["sweep pass with", "time", "SQL statements", "Redis commands", "drains requested"], sweep_rows
        )
    )
    return Case(f"{n} accounts x {args.many_orders}", body, [f"(b) {p}" for p in d.problems])


def case_c(stack: fleet.Stack, args: Any) -> Case:
    """One account at 20 ms: the app against the bare client, in the same run."""
    account = "acct1"
    stack.sandbox.set_latency(args.single_latency_ms)
    bare_rate, bare_ms = fleet.bare_client_rate(stack.sandbox, account, calls=args.bare_calls)
    app = fleet.run_app(
        stack.sandbox,
        accounts=[account],
        orders=args.single_orders,
        workers=args.workers,
        log_dir=stack.workdir,
        timeout=args.timeout,
    )
    share = app.window.rate / bare_rate if bare_rate else 0.0
    limit = 1000 / args.single_latency_ms
    rows = [
        ["bare client", f"{bare_rate:.1f}/s", f"{args.bare_calls:,} calls back to back, median {bare_ms:.1f} ms"],
        ["app", f"{app.window.rate:.1f}/s", f"{app.window.awarded:,} earnings, first attempt → last"],
        [
            "**app / bare client**",
            f"**{share:.0%}**",
            f"target ≥ {TARGET_OF_BARE:.0%}: {common.target(share >= TARGET_OF_BARE)}",
        ],
        ["of the limit (1 / round trip)", f"{app.window.rate / limit:.0%}", f"{limit:g}/s"],
        ["per earning: call + app", f"{app.window.mean_call_ms:.1f} + {app.window.own_ms:.1f} ms", ""],
        ["overlapping calls / 429s", f"{app.counts['overlaps']} / {app.counts['429']}", "0 overlaps"],
        ["every order once", "**FAILED**" if app.problems else "met", ""],
    ]
    body = (
        f"**(c) one account, {args.single_orders:,} orders, sandbox latency {args.single_latency_ms:g} ms, "
        f"{args.workers} workers{per_process_note(args)}.**\n\n"
        f"{common.markdown_table(['figure', 'value', 'target / note'], rows)}"
    )
    return Case(f"one account at {args.single_latency_ms:g} ms", body, [f"(c) {p}" for p in app.problems])


def case_d(stack: fleet.Stack, args: Any) -> Case:
    """One account's backlog being drained; other accounts' single orders: how long until each is awarded."""
    from django_points_earn.models import EarningRecord, Status

    stack.sandbox.set_latency(args.latency_ms)
    fleet.clear_state(stack.sandbox)
    backlog, probes = "acct1", [f"acct{i}" for i in range(2, args.probes + 2)]
    t0 = time.monotonic()
    placed = fleet.place_orders(args.backlog, [backlog], prefix="BL")
    placing_s = time.monotonic() - t0
    print(f"backlog: paid {args.backlog:,} orders on {backlog} in {placing_s:.0f} s", file=sys.stderr)

    def awarded(account: str) -> int:
        return EarningRecord.objects.filter(account=account, status=Status.AWARDED).count()

    workers = fleet.Workers(args.workers, stack.workdir).start()
    delays: list[float] = []
    try:
        wait_for(lambda: awarded(backlog) >= min(10, args.backlog), workers, args.timeout, "the backlog's drain")
        done_before, t_before = awarded(backlog), time.monotonic()
        for i, account in enumerate(probes):
            number = f"FAIR-{i:03d}"
            fleet.mark_paid(fleet.new_order(number, account, 9_000_000 + i))
            placed[account] = [number]
            record = EarningRecord.objects.filter(account=account, order_number=number)
            wait_for(lambda r=record: r.filter(status=Status.AWARDED).exists(), workers, 120, f"order {number}")
            row = record.get()
            delays.append((row.completed_at - row.created_at).total_seconds())
            print(f"fairness: {account}'s order awarded {delays[-1]:.2f} s after its commit", file=sys.stderr)
            if i < len(probes) - 1:
                time.sleep(args.probe_gap)  # the next one lands at another point of the backlog's drain
        done_after = awarded(backlog)
        backlog_rate = (done_after - done_before) / (time.monotonic() - t_before)
        _, failed = job_counts()
    finally:
        fleet.stop_processes(workers.processes, timeout=5)  # the backlog's drain is cut short: not waited for
    ledger = stack.sandbox.ledger()
    problems = fleet.exactly_once_problems(ledger, {backlog: placed[backlog]}, complete=False)
    problems += fleet.exactly_once_problems(ledger, {a: placed[a] for a in probes})
    counts = fleet.merchant_counts(ledger, [backlog, *probes])
    if counts["overlaps"]:
        problems.append(f"{counts['overlaps']} overlapping call(s) for one account (must be 0)")
    if failed:
        problems.append(f"{failed} drain job(s) failed (see the worker logs)")
    worst = max(delays, default=0.0)
    still = done_after < args.backlog
    rows = [
        [
            "backlog",
            f"{args.backlog:,} orders on {backlog}",
            f"{done_after:,} awarded when the last single order was; drained at {backlog_rate:.1f}/s meanwhile"
            + ("" if still else " — **it ran out before the last one: use a larger --backlog**"),
        ],
        [
            "single orders",
            f"{len(delays)}, on {len(probes)} other accounts",
            f"one at a time, {args.probe_gap:g} s apart",
        ],
        ["commit → award, each", ", ".join(f"{s:.2f} s" for s in delays), ""],
        [
            "**commit → award, median / worst**",
            f"**{statistics.median(delays) if delays else 0:.2f} / {worst:.2f} s**",
            f"target ≤ a couple of seconds ({TARGET_DELAY_S:g} s) while capacity is free: "
            f"{common.target(worst <= TARGET_DELAY_S)}",
        ],
        ["overlapping calls / awarded twice", f"{counts['overlaps']} / {'**FAILED**' if problems else 'none'}", ""],
    ]
    body = (
        f"**(d) fairness: a backlog of {args.backlog:,} orders on one account, sandbox latency {args.latency_ms:g} "
        f"ms, {args.workers} workers{per_process_note(args)}.**\n\n"
        f"{common.markdown_table(['figure', 'value', 'target / note'], rows)}"
    )
    return Case(f"fairness behind a {args.backlog:,}-order backlog", body, [f"(d) {p}" for p in problems])


def wait_for(done: Callable[[], bool], workers: fleet.Workers, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise fleet.BenchmarkFailure(f"{what}: not done within {timeout:.0f} s")
        workers.check_alive()
        time.sleep(0.05)


def per_process_note(args: Any) -> str:
    if args.accounts_per_process:
        return f', DRAIN["ACCOUNTS_PER_PROCESS"] = {args.accounts_per_process}'
    return ""


CASES = {"a": case_a, "b": case_b, "c": case_c, "d": case_d}


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument(
        "--quick", action="store_true", help="small sizes (CI): " + ", ".join(f"{k} {v}" for k, v in QUICK.items())
    )
    p.add_argument("--cases", default="a,b,c,d", help="which cases to run (default a,b,c,d)")
    p.add_argument("--workers", type=int, default=4, help="worker processes (4)")
    p.add_argument(
        "--accounts-per-process", type=int, help='POINTS_EARN["DRAIN"]["ACCOUNTS_PER_PROCESS"] (the app\'s default)'
    )
    p.add_argument("--latency-ms", type=float, default=150, help="sandbox latency of (a), (b), (d) (150)")
    p.add_argument("--accounts", type=int, help=f"(a) accounts ({FULL['accounts']})")
    p.add_argument("--orders", type=int, help=f"(a) orders per account ({FULL['orders']})")
    p.add_argument("--many-accounts", type=int, help=f"(b) accounts ({FULL['many_accounts']:,})")
    p.add_argument("--many-orders", type=int, help=f"(b) orders per account ({FULL['many_orders']})")
    p.add_argument("--single-latency-ms", type=float, default=20, help="(c) sandbox latency (20)")
    p.add_argument("--single-orders", type=int, help=f"(c) orders ({FULL['single_orders']:,})")
    p.add_argument("--bare-calls", type=int, help=f"(c) the bare client's calls ({FULL['bare_calls']})")
    p.add_argument("--backlog", type=int, help=f"(d) the backlog's orders ({FULL['backlog']:,})")
    p.add_argument("--probes", type=int, help=f"(d) single orders placed behind it ({FULL['probes']})")
    p.add_argument("--probe-gap", type=float, default=1.0, help="(d) seconds between two single orders (1)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds one drain may take before it fails")
    args = p.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(CASES)
    if unknown:
        p.error(f"unknown case(s) {', '.join(sorted(unknown))}; use a, b, c, d")
    needed = {"a": args.accounts, "b": args.many_accounts, "c": 1, "d": 1 + args.probes}
    # Read by the settings of this process, the sandbox and the workers alike (before the stack imports them).
    os.environ["POINTS_BENCH_ACCOUNTS"] = str(max(needed[c] for c in cases))
    if args.accounts_per_process:
        os.environ["POINTS_BENCH_ACCOUNTS_PER_PROCESS"] = str(args.accounts_per_process)

    run = common.Run(__file__)
    done: list[Case] = []
    with fleet.stack("accounts", latency_ms=args.latency_ms) as stack:
        run.databases = [common.database_version()]
        for case in cases:
            started = time.monotonic()
            result = CASES[case](stack, args)
            print(f"\n{result.body}\n\n({case}) took {time.monotonic() - started:.0f} s\n", flush=True)
            done.append(result)
    if args.record:
        run.record(SECTION, "; ".join(c.title for c in done), "\n\n".join(c.body for c in done))
    fleet.fail_on([p for c in done for p in c.problems])


if __name__ == "__main__":
    main()
