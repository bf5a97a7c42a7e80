"""Throughput for one account against the physical limit, next to the naive one-job-per-order baseline.

    python benchmarks/throughput.py                          # 2,000 orders, 1 to 4 workers, app and naive
    python benchmarks/throughput.py --orders 40 --workers 2      # quick (CI)
    python benchmarks/throughput.py --record                 # also append the table to docs/benchmarks.md

Points runs one earning call at a time per merchant, so one account can never go faster than one call per round
trip: with the sandbox's 20 ms, 50 earnings/s. For each worker count, the orders are paid first (through the
app's receiver), then the workers (``rqworker --worker-class django_points_earn.worker.EarningWorker``) start; the
rate is the awarded earnings over the time from the first attempt's start to the last attempt's end
(EarningAttempt timestamps). The sandbox's ledger gives the overlapping calls (must be 0), the 429s and the
awards (each order exactly once). The naive baseline (``benchmarks/naive.py``: one RQ job per order, calling at
once, retrying on 429) runs in the same process with the same sandbox, settings and worker counts, on stock
``rqworker``; its window is its own first call's start to its last call's end. Target (issue 7): ≥ 90% of the
limit.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, fleet

ACCOUNT = "acct1"


def run_naive(stack: fleet.Stack, orders: int, workers: int, timeout: float) -> dict[str, Any]:
    """The baseline: the app's receiver swapped for one job per order, stock RQ workers."""
    import django_rq
    from rq.registry import FailedJobRegistry

    from benchmarks.naive import NAIVE_TIMINGS_KEY, enqueue_after_commit
    from django_points_earn.receivers import connect_receivers
    from django_points_earn.signals import order_paid

    fleet.clear_state(stack.sandbox)
    order_paid.disconnect(dispatch_uid="django_points_earn.order_paid")
    order_paid.connect(enqueue_after_commit)
    try:
        placed = fleet.place_orders(orders, [ACCOUNT], prefix=f"NV{workers}")
    finally:
        order_paid.disconnect(enqueue_after_commit)
        connect_receivers()
    redis = django_rq.get_connection("default")
    failed = FailedJobRegistry(queue=django_rq.get_queue("default"))
    procs = fleet.Workers(workers, stack.workdir, worker_class=None).start()
    try:
        deadline = time.monotonic() + timeout
        while redis.llen(NAIVE_TIMINGS_KEY) + failed.count < orders:
            if time.monotonic() > deadline:
                raise fleet.BenchmarkFailure(f"naive: not done within {timeout:.0f} s")
            procs.check_alive()
            time.sleep(0.25)
    finally:
        procs.stop()
    calls = [json.loads(raw) for raw in redis.lrange(NAIVE_TIMINGS_KEY, 0, -1)]
    awarded = sum(1 for c in calls if c["status"] == 200)
    seconds = max(c["last"] for c in calls) - min(c["first"] for c in calls) if calls else 0.0
    ledger = stack.sandbox.ledger()
    problems = fleet.exactly_once_problems(ledger, placed)
    if failed.count:
        problems.append(f"{failed.count} job(s) failed")
    return {
        "rate": awarded / seconds if seconds else 0.0,
        "counts": fleet.merchant_counts(ledger, [ACCOUNT]),
        "problems": problems,
    }


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--orders", type=int, default=2000)
    p.add_argument("--workers", default="1,2,3,4", help="worker counts to run, e.g. 1,2,3,4")
    p.add_argument("--latency-ms", type=float, default=20)
    p.add_argument("--no-naive", action="store_true", help="skip the naive baseline")
    p.add_argument("--timeout", type=float, default=600, help="seconds one run may take before it fails")
    args = p.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    limit = 1000 / args.latency_ms

    run = common.Run(__file__)
    problems: list[str] = []
    rows, shares = [], []
    with fleet.stack("throughput", latency_ms=args.latency_ms) as stack:
        run.databases = [common.database_version()]
        bare_rate, bare_ms = fleet.bare_client_rate(stack.sandbox, ACCOUNT)
        print(f"bare client: {bare_rate:.1f}/s ({bare_ms:.1f} ms per call)", file=sys.stderr)
        for n in counts:
            app = fleet.run_app(
                stack.sandbox,
                accounts=[ACCOUNT],
                orders=args.orders,
                workers=n,
                log_dir=stack.workdir,
                timeout=args.timeout,
            )
            problems += [f"app, {n} worker(s): {p}" for p in app.problems]
            shares.append(app.window.rate / limit)
            row = [
                n,
                f"{app.window.rate:.1f}/s",
                f"**{app.window.rate / limit:.0%}**",
                f"{app.window.rate / bare_rate:.0%}",
                app.counts["overlaps"],
                app.counts["429"],
                f"{app.window.mean_call_ms:.1f} + {app.window.own_ms:.1f} ms",
            ]
            print(f"app, {n} worker(s): {app.window.rate:.1f}/s", file=sys.stderr)
            if not args.no_naive:
                naive = run_naive(stack, args.orders, n, args.timeout)
                row += [
                    f"{naive['rate']:.1f}/s",
                    f"{naive['rate'] / limit:.0%}",
                    naive["counts"]["overlaps"],
                    "; ".join(naive["problems"]) or "none",
                ]
                print(f"naive, {n} worker(s): {naive['rate']:.1f}/s", file=sys.stderr)
            rows.append(row)
    headers = ["workers", "app", "of the limit", "of the bare client", "overlaps", "429s", "per earning: call + app"]
    if not args.no_naive:
        headers += ["naive", "of the limit", "overlapping calls (429)", "naive: missed or double"]
    worst = min(shares)
    body = (
        f"{args.orders:,} orders on one account, sandbox latency {args.latency_ms:g} ms: the limit is "
        f'{limit:g} earnings/s. "call" is the HTTP call as the client times it, "app" the rest of an '
        f"earning's cycle. The bare client (the app's Points client calling back to back in one process, nothing "
        f"else: the ceiling of this sandbox and HTTP stack) made {bare_rate:.1f} calls/s ({bare_rate / limit:.0%} "
        f"of the limit, {bare_ms:.1f} ms per call) in the same run.\n\n{common.markdown_table(headers, rows)}\n\n"
        f"target ≥ 90% of the limit: {common.target(worst >= 0.9)} (lowest {worst:.0%}); no overlapping call, "
        f"every order awarded once: {'**FAILED**' if problems else 'met'}"
    )
    print(body)
    if args.record:
        run.record(
            fleet.SECTION, f"Throughput, one account: {args.orders:,} orders, {args.latency_ms:g} ms round trip", body
        )
    fleet.fail_on(problems)


if __name__ == "__main__":
    main()
