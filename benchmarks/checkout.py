"""Checkout cost: what the app adds to marking an order paid, on SQLite and on PostgreSQL.

    python benchmarks/checkout.py                        # 2,000 checkouts per variant and database
    python benchmarks/checkout.py --orders 50 --naive 5  # quick (CI)
    python benchmarks/checkout.py --record               # also append the table to docs/benchmarks.md

Each checkout is the shop's: an order with two lines is created, loaded again (lines not loaded, as a payment
callback finds it), then timed: ``transaction.atomic()`` → ``paid = True`` → ``save()`` → ``order_paid.send()`` →
commit → on-commit callbacks. In the same process, in random order, ``order_paid`` has: nothing connected; only
the shop's adapter reading the order (the part of the receiver's cost that is the shop's code); the app's
receiver; or, for contrast, a naive receiver that POSTs to the sandbox (a separate process, 20 ms latency) inside
the transaction. Each checkout with the app must leave exactly one record (else the script fails). Statements
are counted with ``connection.execute_wrapper`` and Redis commands with ``INFO commandstats``, on separate
checkouts so that counting does not weigh on the timings. Target (issue 7): one INSERT added, under 2 ms
median added on both DBs.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, fleet

# what is connected to order_paid in each variant (none, the shop's adapter alone, the app, the naive POST)
VARIANTS = ("without", "adapter", "app", "naive")
COUNTED = 20  # checkouts per variant whose statements are counted (not timed)
WARMUP = 20  # checkouts per variant before timing (imports, connections, caches)


# -- the child: one database ----------------------------------------------------------------------------------
def read_order(sender: Any, order: Any = None, **kwargs: Any) -> None:
    """The shop's share of the app's receiver: its adapter reading the order (total, lines, phone)."""
    from django_points_earn.adapters import get_adapter

    get_adapter().build_request(order)


def use(variant: str) -> None:
    """Connect the receiver of ``variant`` to ``order_paid`` and nothing else."""
    from benchmarks.naive import post_in_callback
    from django_points_earn.receivers import connect_receivers
    from django_points_earn.signals import order_paid

    order_paid.disconnect(dispatch_uid="django_points_earn.order_paid")
    order_paid.disconnect(post_in_callback)
    order_paid.disconnect(read_order)
    if variant == "app":
        connect_receivers()
    elif variant == "adapter":
        order_paid.connect(read_order)
    elif variant == "naive":
        order_paid.connect(post_in_callback)


def redis_calls(client: Any) -> int:
    stats = client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k not in ("cmdstat_info",))


class Checkouts:
    """Pays new orders one at a time, with the receivers of a variant connected to ``order_paid``."""

    def __init__(self) -> None:
        self.n = 0
        self.with_app = 0

    def pay(self, variant: str, wrapper: common.QueryCounter | None = None) -> float:
        """One checkout; returns the seconds from ``transaction.atomic()`` to the end of the on-commit callbacks."""
        from django.db import connection

        self.n += 1
        self.with_app += variant == "app"
        order = fleet.new_order(f"CK-{self.n:07d}", "acct1", self.n)
        use(variant)
        with connection.execute_wrapper(wrapper) if wrapper else contextlib.nullcontext():
            started = time.perf_counter()
            fleet.mark_paid(order)
            return time.perf_counter() - started


def time_variants(checkouts: Checkouts, orders: int, naive: int) -> dict[str, list[float]]:
    """Milliseconds per checkout and variant, the variants interleaved in a seeded random order."""
    for variant in VARIANTS:
        for _ in range(WARMUP if variant != "naive" else 3):
            checkouts.pay(variant)
    plan = ["without", "adapter", "app"] * orders + ["naive"] * naive
    random.Random(7).shuffle(plan)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for variant in plan:
        times[variant].append(checkouts.pay(variant) * 1000)
    return times


def count_statements(checkouts: Checkouts) -> tuple[dict[str, dict[str, float]], list[int]]:
    """Statements per checkout by kind, per variant; Redis commands of each counted checkout with the app."""
    import django_rq

    from django_points_earn import queueing

    redis = django_rq.get_connection("default")
    statements: dict[str, dict[str, float]] = {}
    redis_per_checkout: list[int] = []
    for variant in VARIANTS:
        counts: Counter[str] = Counter()
        for i in range(COUNTED):
            if i == 0:
                queueing.clear_drain_request("acct1")  # the first counted checkout enqueues the drain job
            wrapper = common.QueryCounter(keep=True)
            before = redis_calls(redis)
            checkouts.pay(variant, wrapper)
            if variant == "app":
                redis_per_checkout.append(redis_calls(redis) - before)
            counts.update(common.statement_kind(sql) for sql in wrapper.statements)
        statements[variant] = {kind: count / COUNTED for kind, count in counts.items()}
    return statements, redis_per_checkout


def measure(orders: int, naive: int) -> dict[str, Any]:
    from django_points_earn.models import EarningRecord

    checkouts = Checkouts()
    times = time_variants(checkouts, orders, naive)
    statements, redis = count_statements(checkouts)
    records = EarningRecord.objects.count()  # one per checkout with the app, none for the others
    problems = [] if records == checkouts.with_app else [f"{records} records for {checkouts.with_app} checkouts"]
    return {
        "problems": problems,
        "database": common.database_version(),
        "times_ms": times,
        "statements": statements,
        "redis": redis,
    }


def child(kind: str, orders: int, naive: int) -> None:
    with common.own_database(kind, "checkout") as url:
        common.setup_django(url, fleet.SETTINGS)
        result = measure(orders, naive)
    print(json.dumps(result))


# -- the parent: both databases, one table --------------------------------------------------------------------
def run_child(kind: str, orders: int, naive: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", kind, "--orders", str(orders), "--naive", str(naive)]
    out = subprocess.run(cmd, env=fleet.child_env(), capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"checkout on {kind} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def describe_added(with_app: dict[str, float], without: dict[str, float]) -> str:
    """The statements the app's receiver adds, in the order they run; the shop adapter's reads marked as such."""
    parts = []
    for kind, count in with_app.items():
        extra = count - without.get(kind, 0)
        if abs(extra) > 1e-9:
            owner = " (the shop's adapter)" if " shop_" in kind else ""
            parts.append(f"{kind}{f' x{extra:g}' if extra != 1 else ''}{owner}")
    return ", ".join(parts) or "none"


def build_table(results: dict[str, dict[str, Any]], latency_ms: float) -> str:
    cols = list(results)

    def each(fn: Any) -> list[str]:
        return [fn(results[k]) for k in cols]

    def med(r: dict[str, Any], variant: str) -> float:
        return common.median(r["times_ms"][variant])

    def p99(r: dict[str, Any], variant: str) -> float:
        return common.percentile(r["times_ms"][variant], 99)

    def both(variant: str) -> Any:
        return lambda r: f"{med(r, variant):.2f} / {p99(r, variant):.2f} ms"

    def diff(a: str, b: str) -> Any:
        return lambda r: f"{med(r, a) - med(r, b):+.2f} / {p99(r, a) - p99(r, b):+.2f} ms"

    added = {k: med(r, "app") - med(r, "without") for k, r in results.items()}
    rows = [
        ["without the app: median / p99", *each(both("without"))],
        ["with the app: median / p99", *each(both("app"))],
        [
            "**added by the app**: median / p99",
            *each(
                lambda r: f"**{med(r, 'app') - med(r, 'without'):+.2f}** / {p99(r, 'app') - p99(r, 'without'):+.2f} ms"
            ),
        ],
        ["… of which the shop's adapter reading the order", *each(diff("adapter", "without"))],
        ["… of which the app itself", *each(diff("app", "adapter"))],
        [f"naive (POST in the callback, {latency_ms:g} ms): median / p99", *each(both("naive"))],
        ["statements without / with the app", *each(lambda r: f"{_total(r, 'without')} / {_total(r, 'app')}")],
        ["statements added", *each(lambda r: describe_added(r["statements"]["app"], r["statements"]["without"]))],
        ["Redis commands after commit", *each(lambda r: _redis(r["redis"]))],
        [
            "checkouts timed",
            *each(lambda r: f"{len(r['times_ms']['app']):,} per variant, naive {len(r['times_ms']['naive']):,}"),
        ],
    ]
    headers = ["checkout (order paid + commit)", *[results[k]["database"] for k in cols]]
    met = all(v < 2.0 for v in added.values())
    return f"{common.markdown_table(headers, rows)}\n\ntarget < 2 ms median added on both: {common.target(met)}"


def _total(result: dict[str, Any], variant: str) -> str:
    return f"{sum(result['statements'][variant].values()):g}"


def _redis(per_checkout: list[int]) -> str:
    typical = int(common.median(per_checkout)) if per_checkout else 0
    first = per_checkout[0] if per_checkout else 0
    return f"{typical} (SET NX of the drain flag); {first} for the one that enqueues the account's drain job"


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--orders", type=int, default=2000, help="checkouts per variant (with / without the app)")
    p.add_argument("--naive", type=int, default=200, help="naive checkouts (each waits for the sandbox)")
    p.add_argument("--latency-ms", type=float, default=20)
    p.add_argument("--databases", default="sqlite,postgres")
    p.add_argument("--child", help=argparse_hidden())
    args = p.parse_args()
    if args.child:
        child(args.child, args.orders, args.naive)
        return

    run = common.Run(__file__)
    with fleet.stack("checkout", latency_ms=args.latency_ms, database=None):
        results = {kind: run_child(kind, args.orders, args.naive) for kind in args.databases.split(",")}
    run.databases = [r["database"] for r in results.values()]
    table = build_table(results, args.latency_ms)
    print(table)
    if args.record:
        run.record(fleet.SECTION, "Checkout cost: marking an order paid, with and without the app", table)
    fleet.fail_on([f"{r['database']}: {p}" for r in results.values() for p in r["problems"]])


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
