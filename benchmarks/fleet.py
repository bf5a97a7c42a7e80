"""The moving parts of the end-to-end benchmarks: the sandbox server and worker processes, the shop's orders, and
what the ledger and the attempts say afterwards.

Everything here runs against real processes: ``manage.py points_sandbox`` (a separate process, so its work does
not share a GIL with the driver), ``manage.py rqworker`` workers, PostgreSQL and a private Redis.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, cpu_times, own_database, private_redis, setup_django
from django_points_earn.redis_server import RunningRedis, free_port

SETTINGS = "benchmarks.settings"
SECTION = "Checkout, throughput, scale-out, 429 storm, worker memory (issue 7)"  # in docs/benchmarks.md
EARNING_WORKER = "django_points_earn.worker.EarningWorker"
LINES = (("Cappuccino", Decimal("18.50"), 2), ("Croissant", Decimal("9.00"), 1))


class BenchmarkFailure(Exception):
    """A correctness check failed (double award, overlap, missing award): the benchmark exits non-zero."""


def child_env(**extra: str) -> dict[str, str]:
    """The driver's environment (DATABASE_URL, REDIS_URL, POINTS_BASE_URL…) for a sandbox or worker process."""
    return {**os.environ, "DJANGO_SETTINGS_MODULE": SETTINGS, "PYTHONPATH": str(ROOT), **extra}


def manage(*args: str) -> list[str]:
    return [sys.executable, "-m", "django", *args]


# -- the sandbox ----------------------------------------------------------------------------------------------
@dataclass
class Sandbox:
    process: subprocess.Popen
    url: str

    @property
    def points_base_url(self) -> str:
        return f"{self.url}/api/v1"

    def control(self, method: str, path: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps(data).encode() if data is not None else None
        request = urllib.request.Request(f"{self.url}/__sandbox__/{path}", data=body, method=method)  # noqa: S310
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 (loopback sandbox)
            return json.loads(response.read())

    def ledger(self) -> dict[str, Any]:
        return self.control("GET", "ledger")

    def reset(self) -> None:
        self.control("POST", "reset", {})

    def set_latency(self, latency_ms: float) -> None:
        """Every call from now on takes ``latency_ms`` (the other random faults go back to none)."""
        self.control("POST", "faults", {"latency_ms": latency_ms})

    def stop(self) -> None:
        stop_processes([self.process])


def start_sandbox(log: Path, *, latency_ms: float = 20, rate_429: float = 0, seed: int = 7) -> Sandbox:
    """``manage.py points_sandbox`` with every benchmark account's key; its base URL goes into the environment."""
    port = free_port()
    # Before the settings are first imported: they read the base URL from the environment.
    os.environ["POINTS_BASE_URL"] = f"http://127.0.0.1:{port}/api/v1"
    from benchmarks.settings import BENCH_API_KEYS, BENCH_MERCHANTS

    cmd = manage("points_sandbox", "--port", str(port), "--latency-ms", str(latency_ms), "--seed", str(seed))
    cmd += ["--rate-429", str(rate_429)]
    for account, key in BENCH_API_KEYS.items():
        cmd += ["--api-key", f"{key}={BENCH_MERCHANTS[account]}"]
    with log.open("ab") as out:
        process = subprocess.Popen(cmd, cwd=ROOT, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
    sandbox = Sandbox(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the sandbox exited at start (code {process.returncode}); see {log}")
        try:
            sandbox.ledger()
            return sandbox
        except OSError:
            time.sleep(0.1)
    sandbox.stop()
    raise RuntimeError(f"the sandbox did not answer within 60 s; see {log}")


# -- everything at once ---------------------------------------------------------------------------------------
@dataclass
class Stack:
    workdir: Path
    sandbox: Sandbox
    redis: RunningRedis


@contextmanager
def stack(
    name: str,
    *,
    latency_ms: float,
    rate_429: float = 0,
    database: str | None = "postgres",
    settings_module: str = SETTINGS,
) -> Iterator[Stack]:
    """A private Redis, the sandbox process and (unless ``database`` is None) Django on a fresh database.

    Logs (the app's, the sandbox's, each worker's) go to a temporary directory: kept and named when something
    fails (or POINTS_BENCH_KEEP_LOGS is set), removed otherwise.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"points-bench-{name}-"))
    os.environ["POINTS_BENCH_LOG"] = str(workdir / "django.log")
    with own_database(database, name) if database else nullcontext("") as database_url:
        if database_url:
            os.environ["DATABASE_URL"] = database_url  # before anything imports the settings
        redis = private_redis()
        sandbox = None
        ok = False
        try:
            sandbox = start_sandbox(workdir / "sandbox.log", latency_ms=latency_ms, rate_429=rate_429)
            if database_url:
                setup_django(database_url, settings_module)
            yield Stack(workdir, sandbox, redis)
            ok = True
        finally:
            if sandbox is not None:
                sandbox.stop()
            redis.stop()
            if ok and not os.environ.get("POINTS_BENCH_KEEP_LOGS"):
                shutil.rmtree(workdir, ignore_errors=True)
            if workdir.exists():
                print(f"logs: {workdir}", file=sys.stderr)


# -- workers --------------------------------------------------------------------------------------------------
@dataclass
class Workers:
    """``count`` rqworker processes on the default queue; ``worker_class=None`` is django-rq's stock worker."""

    count: int
    log_dir: Path
    worker_class: str | None = EARNING_WORKER
    env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start(self) -> Workers:
        self.processes.extend(self.spawn_one(i) for i in range(self.count))
        return self

    def spawn_one(self, i: int) -> subprocess.Popen:
        """One more worker process (the chaos run starts one for each it kills)."""
        cmd = manage("rqworker", "--name", f"bench-{i}-{time.monotonic_ns()}", "default")
        if self.worker_class:
            cmd[4:4] = ["--worker-class", self.worker_class]
        env = child_env(POINTS_BENCH_LOG=str(self.log_dir / f"worker-{i}.django.log"), **self.env)
        with (self.log_dir / f"worker-{i}.log").open("ab") as out:
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)

    def horses(self) -> list[int]:
        """The work horses (RQ forks one per job) of our workers, as they are right now."""
        return [child for proc in self.processes for child in children(proc.pid)]

    def check_alive(self) -> None:
        dead = [p.returncode for p in self.processes if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{len(dead)} worker(s) exited (codes {dead}); see {self.log_dir}/worker-*.log")

    def stop(self) -> None:
        stop_processes(self.processes)
        self.processes = []


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def stop_processes(processes: Sequence[subprocess.Popen], timeout: float = 30) -> None:
    """SIGTERM (RQ's warm shutdown lets a job finish), then SIGKILL the process and its horse if it hangs."""
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in processes:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for pid in [*children(proc.pid), proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(10)


# -- the shop -------------------------------------------------------------------------------------------------
def new_order(number: str, account: str, n: int) -> Any:
    """An unpaid order with two lines, loaded again the way a payment callback finds it (lines not loaded)."""
    from tests.shop.models import Order, OrderLine

    # 051xxxxxxx: valid Saudi mobiles, none of them the sandbox's "not activated yet" customer (0500000003).
    order = Order.objects.create(number=number, phone=f"051{n % 10**7:07d}", account=account)
    OrderLine.objects.bulk_create(
        OrderLine(order=order, name=name, price=price, quantity=qty) for name, price, qty in LINES
    )
    return Order.objects.get(pk=order.pk)


def mark_paid(order: Any) -> None:
    """The shop's payment confirmation: set paid and send ``order_paid``, in one transaction."""
    from django.db import transaction

    from django_points_earn.signals import order_paid

    with transaction.atomic():
        order.paid = True
        order.save(update_fields=["paid"])
        order_paid.send(sender=type(order), order=order)


def place_orders(count: int, accounts: Sequence[str], prefix: str) -> dict[str, list[str]]:
    """``count`` paid orders, spread over ``accounts`` in turn. Returns the order numbers per account."""
    numbers: dict[str, list[str]] = {account: [] for account in accounts}
    for n in range(count):
        account = accounts[n % len(accounts)]
        number = f"{prefix}-{n:06d}"
        mark_paid(new_order(number, account, n))
        numbers[account].append(number)
    return numbers


def clear_state(sandbox: Sandbox | None = None) -> None:
    """Empty the app's and the shop's tables, Redis and the sandbox's ledger: the next run starts from nothing."""
    import django_rq
    from django.apps import apps
    from django.core.management.color import no_style
    from django.db import connection

    tables = [
        m._meta.db_table for name in ("django_points_earn", "shop") for m in apps.get_app_config(name).get_models()
    ]
    connection.ops.execute_sql_flush(connection.ops.sql_flush(no_style(), tables, allow_cascade=True))
    django_rq.get_connection("default").flushall()
    if sandbox is not None:
        sandbox.reset()


# -- outcomes -------------------------------------------------------------------------------------------------
def wait_until_settled(expected: int, workers: Workers, timeout: float) -> float:
    """Wait until ``expected`` records reached a final state; returns the wall-clock seconds it took."""
    from django_points_earn.models import EarningRecord, Status

    started = time.monotonic()
    deadline = started + timeout
    open_states = (Status.QUEUED, Status.SENDING)
    while time.monotonic() < deadline:
        done = EarningRecord.objects.exclude(status__in=open_states).count()
        if done >= expected:
            return time.monotonic() - started
        workers.check_alive()
        time.sleep(0.25)
    raise BenchmarkFailure(f"only {done} of {expected} earnings settled within {timeout:.0f} s")


@dataclass
class Window:
    """What the EarningAttempt rows say: from the first call's start to the last call's end."""

    awarded: int
    seconds: float
    attempts: int
    rate_limited: int
    mean_call_ms: float
    first: float = 0.0  # the window's ends, as Unix timestamps
    last: float = 0.0

    @property
    def rate(self) -> float:
        return self.awarded / self.seconds if self.seconds else 0.0

    @property
    def own_ms(self) -> float:
        """Time per earning outside the HTTP call: the app's own work between calls (for one account)."""
        return self.seconds * 1000 / self.awarded - self.mean_call_ms if self.awarded else 0.0


def attempt_window(account: str | None = None) -> Window:
    from django.db.models import Avg, Count, Max, Min, Q

    from django_points_earn.models import EarningAttempt, EarningRecord, Status

    attempts = EarningAttempt.objects.all()
    records = EarningRecord.objects.filter(status=Status.AWARDED)
    if account:
        attempts, records = attempts.filter(record__account=account), records.filter(account=account)
    agg = attempts.aggregate(
        first=Min("started_at"),
        last=Max("finished_at"),
        n=Count("id"),
        limited=Count("id", filter=Q(outcome="rate_limited")),
        call=Avg("duration_ms"),
    )
    if not (agg["first"] and agg["last"]):
        return Window(records.count(), 0.0, agg["n"], agg["limited"], float(agg["call"] or 0))
    first, last = agg["first"].timestamp(), agg["last"].timestamp()
    return Window(records.count(), last - first, agg["n"], agg["limited"], float(agg["call"] or 0), first, last)


class CPUSampler(threading.Thread):
    """The machine's CPU counters every 0.2 s, so a window known only afterwards can be read off them."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float, float]] = []  # (unix time, busy, total)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.time(), *cpu_times()))
            self.done.wait(0.2)

    def stop(self) -> None:
        self.done.set()
        self.join()
        self.samples.append((time.time(), *cpu_times()))

    def between(self, start: float, end: float) -> tuple[float, float]:
        """(share busy, busy CPU seconds) from the last sample at or before ``start`` to the first after ``end``."""
        before = [s for s in self.samples if s[0] <= start] or self.samples[:1]
        after = [s for s in self.samples if s[0] >= end] or self.samples[-1:]
        (_, busy0, total0), (_, busy1, total1) = before[-1], after[0]
        return (busy1 - busy0) / max(1e-9, total1 - total0), busy1 - busy0


def exactly_once_problems(ledger: dict[str, Any], placed: dict[str, list[str]], *, complete: bool = True) -> list[str]:
    """Every placed order awarded exactly once by the merchant of its account, nothing else awarded.
    ``complete=False``: a run stopped early; an order not awarded yet is no problem, a second award still is."""
    from benchmarks.settings import BENCH_MERCHANTS

    problems = []
    for account, numbers in placed.items():
        orders = ledger["merchants"][BENCH_MERCHANTS[account]]["orders"]
        double = [n for n, o in orders.items() if o["awards"] > 1]
        missing = [n for n in numbers if n not in orders] if complete else []
        extra = set(orders) - set(numbers)
        for what, found in (("awarded twice", double), ("never awarded", missing), ("not ours", sorted(extra))):
            if found:
                problems.append(f"{account}: {len(found)} order(s) {what}, e.g. {', '.join(found[:3])}")
    return problems


def merchant_counts(ledger: dict[str, Any], accounts: Sequence[str]) -> dict[str, int]:
    """Overlapping calls, 429 answers and the most calls in flight at once, summed over ``accounts``."""
    from benchmarks.settings import BENCH_MERCHANTS

    counts = {"overlaps": 0, "429": 0, "max_concurrency": 0, "calls": 0}
    for account in accounts:
        m = ledger["merchants"][BENCH_MERCHANTS[account]]
        counts["overlaps"] += m["overlaps"]
        counts["429"] += m["responses"].get("429", 0)
        counts["calls"] += m["calls"]
        counts["max_concurrency"] = max(counts["max_concurrency"], m["max_concurrency"])
    return counts


# -- one end-to-end run of the app ----------------------------------------------------------------------------
@dataclass
class AppRun:
    """The outcome of :func:`run_app`: the attempts' window (overall and per account) and the ledger's counts."""

    workers: int
    orders: int
    window: Window
    per_account: dict[str, Window]
    counts: dict[str, int]
    problems: list[str]
    cpu_busy: float = 0.0  # share of the machine's CPU in use over the window (all processes)
    cpu_seconds: float = 0.0  # CPU seconds the machine spent meanwhile (workers, PostgreSQL, sandbox, Redis…)


def run_app(
    sandbox: Sandbox,
    *,
    accounts: Sequence[str],
    orders: int,
    workers: int,
    log_dir: Path,
    timeout: float,
    worker_env: dict[str, str] | None = None,
) -> AppRun:
    """From nothing: place ``orders`` paid orders, then start ``workers`` EarningWorkers and wait until every
    earning settled. Correctness problems (double or missing awards, overlapping calls) are returned, not raised."""
    clear_state(sandbox)
    placed = place_orders(orders, accounts, prefix=f"TP{workers}")
    sampler = CPUSampler()
    sampler.start()
    fleet = Workers(workers, log_dir, env=worker_env or {}).start()
    try:
        wait_until_settled(orders, fleet, timeout)
    finally:
        sampler.stop()
        fleet.stop()
    ledger = sandbox.ledger()
    counts = merchant_counts(ledger, accounts)
    problems = exactly_once_problems(ledger, placed)
    if counts["overlaps"]:
        problems.append(f"{counts['overlaps']} overlapping call(s) for one account (must be 0)")
    window = attempt_window()
    cpu_busy, cpu_seconds = sampler.between(window.first, window.last)
    return AppRun(
        workers=workers,
        orders=orders,
        window=window,
        per_account={account: attempt_window(account) for account in accounts},
        counts=counts,
        problems=problems,
        cpu_busy=cpu_busy,
        cpu_seconds=cpu_seconds,
    )


def bare_client_rate(sandbox: Sandbox, account: str, calls: int = 300) -> tuple[float, float]:
    """The ceiling this sandbox and HTTP stack allow: the app's own client (``backend.earn``) calling back to back
    in this process, with no database, queue or worker around it. Returns (calls per second, median call ms).

    The limit 1/round-trip assumes a client that costs nothing; this is what a client that does nothing else
    actually gets, so the app's figure can be read against both.
    """
    from django_points_earn.conf import get_settings
    from django_points_earn.providers import get_backend

    backend = get_backend(get_settings().account(account))
    clear_state(sandbox)
    durations = []
    started = time.perf_counter()
    for n in range(calls):
        payload = {
            "phone_number": "512345678",
            "total_price": 10.0,
            "order_number": f"BARE-{n}",
            "products": [{"product_name": "Coffee", "product_price": 10.0, "quantity": 1}],
        }
        t = time.perf_counter()
        result = backend.earn(payload, request_id=f"bare-{n}")
        durations.append(time.perf_counter() - t)
        if result.status != "awarded":
            raise BenchmarkFailure(f"bare client: call {n} was not awarded: {result.status} {result.message}")
    elapsed = time.perf_counter() - started
    clear_state(sandbox)
    durations.sort()
    return calls / elapsed, durations[len(durations) // 2] * 1000


def fail_on(problems: Sequence[str]) -> None:
    """Print the correctness problems and exit non-zero (timings never fail a benchmark)."""
    if problems:
        for problem in problems:
            print(f"FAILED: {problem}", file=sys.stderr)
        raise SystemExit(1)
