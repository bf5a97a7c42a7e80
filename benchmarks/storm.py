"""429 storm: the sandbox refuses 30% of earning calls at random; every order must still be awarded exactly once.

    python benchmarks/storm.py                           # 2,000 orders, 2 workers, 30% of calls answered 429
    python benchmarks/storm.py --orders 40               # quick (CI)
    python benchmarks/storm.py --record                  # also append the table to docs/benchmarks.md

A refused call costs a whole round trip (the sandbox answers 429 after its latency, holding the merchant's lock),
so even a client that wasted nothing could award at most 70% of the limit. The app retries a 429 (Points' merchant
lock is busy) after 1-2x ``LOCK_BUSY_DELAY`` (0.1 s) without using up an attempt, and sends other due earnings
meanwhile. The ledger must
show every order awarded once (none twice, none missing) and no overlapping call. Target (issue 7): ≥ 60% of
the limit.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, fleet

ACCOUNT = "acct1"


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--orders", type=int, default=2000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rate-429", type=float, default=0.3)
    p.add_argument("--latency-ms", type=float, default=20)
    p.add_argument("--timeout", type=float, default=900)
    args = p.parse_args()
    limit = 1000 / args.latency_ms
    run = common.Run(__file__)
    with fleet.stack("storm", latency_ms=args.latency_ms, rate_429=args.rate_429) as stack:
        run.databases = [common.database_version()]
        result = fleet.run_app(
            stack.sandbox,
            accounts=[ACCOUNT],
            orders=args.orders,
            workers=args.workers,
            log_dir=stack.workdir,
            timeout=args.timeout,
        )
    w, c = result.window, result.counts
    share = w.rate / limit
    rows = [
        ["orders awarded", f"{w.awarded:,} of {args.orders:,}", "each exactly once (ledger)"],
        ["awarded twice / never", "none" if not result.problems else "; ".join(result.problems), "must be none"],
        ["calls made", f"{c['calls']:,}", f"{w.attempts:,} attempts recorded"],
        ["429s received", f"{c['429']:,}", f"{c['429'] / max(1, c['calls']):.0%} of calls; overlaps {c['overlaps']}"],
        ["rate", f"{w.rate:.1f}/s", f"first attempt → last, {w.seconds:.1f} s"],
        [
            "**of the limit**",
            f"**{share:.0%}**",
            f"target ≥ 60%: {common.target(share >= 0.6)}; at most "
            f"{1 - args.rate_429:.0%} with {args.rate_429:.0%} of calls refused",
        ],
    ]
    body = (
        f"{args.orders:,} orders on one account, {args.workers} workers, sandbox latency {args.latency_ms:g} ms, "
        f"{args.rate_429:.0%} of calls answered 429 at random.\n\n"
        f"{common.markdown_table(['429 storm', 'figure', 'note'], rows)}"
    )
    print(body)
    if args.record:
        run.record(fleet.SECTION, f"429 storm: {args.rate_429:.0%} of calls refused, {args.orders:,} orders", body)
    fleet.fail_on(result.problems)


if __name__ == "__main__":
    main()
