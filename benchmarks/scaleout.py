"""Scale-out: four accounts drained in parallel by four workers, against one account alone.

    python benchmarks/scaleout.py                        # 4 accounts x 500 orders, 4 workers
    python benchmarks/scaleout.py --orders 10            # quick (CI)
    python benchmarks/scaleout.py --record               # also append the table to docs/benchmarks.md

Each account has its own Points key (its own merchant in the sandbox, so its own lock), so their calls may run at
the same time while each account keeps one call in flight. First one account's orders alone (same workers, same
settings), then every account's at once; the aggregate rate is all awarded earnings over the time from the first
attempt's start to the last attempt's end. Target (issue 7): ≥ 3x the one-account rate.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, fleet


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--orders", type=int, default=500, help="orders per account")
    p.add_argument("--accounts", type=int, default=4, choices=range(1, 5))
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--latency-ms", type=float, default=20)
    p.add_argument("--timeout", type=float, default=600)
    args = p.parse_args()
    limit = 1000 / args.latency_ms
    run = common.Run(__file__)
    with fleet.stack("scaleout", latency_ms=args.latency_ms) as stack:
        from benchmarks.settings import BENCH_ACCOUNTS  # once the stack has set the environment it reads

        accounts = list(BENCH_ACCOUNTS[: args.accounts])
        run.databases = [common.database_version()]
        kwargs = {"workers": args.workers, "log_dir": stack.workdir, "timeout": args.timeout}
        one = fleet.run_app(stack.sandbox, accounts=accounts[:1], orders=args.orders, **kwargs)
        print(f"one account: {one.window.rate:.1f}/s", file=sys.stderr)
        many = fleet.run_app(stack.sandbox, accounts=accounts, orders=args.orders * len(accounts), **kwargs)
        print(f"{len(accounts)} accounts: {many.window.rate:.1f}/s", file=sys.stderr)

    ratio = many.window.rate / one.window.rate if one.window.rate else 0.0
    rows = [
        [
            "1 account alone",
            f"{args.orders:,}",
            f"{one.window.rate:.1f}/s",
            f"{one.window.rate / limit:.0%}",
            "1.0x",
            one.counts["overlaps"],
            one.counts["429"],
        ],
        [
            f"{len(accounts)} accounts at once",
            f"{args.orders * len(accounts):,}",
            f"{many.window.rate:.1f}/s",
            f"{many.window.rate / (limit * len(accounts)):.0%} of {len(accounts)}x the limit",
            f"**{ratio:.1f}x**",
            many.counts["overlaps"],
            many.counts["429"],
        ],
    ]
    rows += [
        [f"… {account}", f"{args.orders:,}", f"{w.rate:.1f}/s", f"{w.rate / limit:.0%}", "", "", ""]
        for account, w in many.per_account.items()
    ]
    headers = ["run", "orders", "rate", "of the limit", "vs one account", "overlaps", "429s"]
    cores = os.cpu_count() or 1
    per_earning = many.cpu_seconds / max(1, args.orders * len(accounts))
    body = (
        f"{args.workers} workers, sandbox latency {args.latency_ms:g} ms (limit {limit:g} earnings/s per account); "
        f"an account's own rate is over its own first-to-last attempt.\n\n{common.markdown_table(headers, rows)}\n\n"
        f"target ≥ 3x the one-account rate: {common.target(ratio >= 3)} ({ratio:.1f}x)\n\n"
        f"The machine's CPU while the workers drained (every process: workers, PostgreSQL, the sandbox, Redis): "
        f"one account {one.cpu_busy:.0%} busy, {one.cpu_seconds * 1000 / max(1, args.orders):.1f} ms of CPU per "
        f"earning; {len(accounts)} accounts {many.cpu_busy:.0%} busy, {per_earning * 1000:.1f} ms per earning, so "
        f"{cores} cores allow at most ~{cores / per_earning:.0f} earnings/s whatever the accounts."
    )
    print(body)
    if args.record:
        run.record(
            fleet.SECTION, f"Scale-out: {len(accounts)} accounts x {args.orders:,} orders, {args.workers} workers", body
        )
    fleet.fail_on([f"one account: {p}" for p in one.problems] + [f"all accounts: {p}" for p in many.problems])


if __name__ == "__main__":
    main()
