"""Worker memory: the RSS of an EarningWorker and of its work horse over 10,000 earnings.

    python benchmarks/memory.py                          # 10,000 earnings
    python benchmarks/memory.py --earnings 150           # quick (CI)
    python benchmarks/memory.py --record                 # also append the table to docs/benchmarks.md

One worker (``rqworker --worker-class django_points_earn.worker.EarningWorker``) drains one account. RQ forks a
work horse per job; ``DRAIN["MAX_SECONDS"]`` is raised for this run so that one drain job, in one horse, sends
every earning — a leak per earning would pile up there. The sandbox answers without latency (memory does not
depend on it, and the run is shorter). VmRSS of the worker and its horse is read from /proc every 0.2 s.
Target (issue 7): growth under 10 MB.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, fleet

ACCOUNT = "acct1"
WARMUP = 0.05  # the horse's baseline is taken once this share of the earnings is done (imports, connections)


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def sample(workers: fleet.Workers, expected: int, timeout: float) -> list[tuple[int, float, float | None, int]]:
    """(earnings done, worker MB, horse MB, horse pid) until every earning settled."""
    from django_points_earn.models import EarningRecord, Status

    worker = workers.processes[0].pid
    samples = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = EarningRecord.objects.exclude(status__in=(Status.QUEUED, Status.SENDING)).count()
        horses = workers.horses()
        horse_mb = rss_mb(horses[0]) if horses else None
        samples.append((done, rss_mb(worker) or 0.0, horse_mb, horses[0] if horses else 0))
        if done >= expected:
            return samples
        workers.check_alive()
        time.sleep(0.2)
    raise fleet.BenchmarkFailure(f"not every earning settled within {timeout:.0f} s")


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--earnings", type=int, default=10_000)
    p.add_argument("--timeout", type=float, default=900)
    args = p.parse_args()
    run = common.Run(__file__)
    # Read by the settings of this process too: the drain job's RQ timeout (MAX_SECONDS + 120) is set by whoever
    # enqueues it, here the receiver at checkout.
    os.environ["POINTS_BENCH_DRAIN_SECONDS"] = "3600"
    with fleet.stack("memory", latency_ms=0) as stack:
        run.databases = [common.database_version()]
        fleet.clear_state(stack.sandbox)
        t0 = time.monotonic()
        placed = fleet.place_orders(args.earnings, [ACCOUNT], prefix="MEM")
        print(f"placed {args.earnings:,} orders in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        workers = fleet.Workers(1, stack.workdir).start()
        try:
            samples = sample(workers, args.earnings, args.timeout)
        finally:
            workers.stop()
        ledger = stack.sandbox.ledger()
        window = fleet.attempt_window()
    problems = fleet.exactly_once_problems(ledger, placed)

    with_horse = [s for s in samples if s[2] is not None]
    per_horse = Counter(s[3] for s in with_horse)
    main_pid = per_horse.most_common(1)[0][0] if per_horse else 0
    main = [s for s in with_horse if s[3] == main_pid]
    baseline = next((s for s in main if s[0] >= args.earnings * WARMUP), main[0] if main else None)
    horse_peak = max((s[2] for s in main), default=0.0)
    growth = horse_peak - baseline[2] if baseline else 0.0
    worker_growth = max(s[1] for s in samples) - baseline[1] if baseline else 0.0
    rows = []
    for tenth in range(1, 11):
        at = next((s for s in samples if s[0] >= args.earnings * tenth / 10), samples[-1])
        rows.append([f"{at[0]:,}", f"{at[1]:.1f} MB", f"{at[2]:.1f} MB" if at[2] is not None else "—"])
    span = f"{main[0][0]:,} to {main[-1][0]:,}" if main else "none"
    body = (
        f"{args.earnings:,} earnings by one worker, sandbox without latency ({window.rate:.0f} earnings/s: "
        f"{1000 / window.rate if window.rate else 0:.1f} ms per earning, the HTTP exchange included). "
        f"{len(per_horse)} work horse(s) seen; the longest-lived one was sampled from {span} earnings done.\n\n"
        f"{common.markdown_table(['earnings done', 'worker RSS', 'work horse RSS'], rows)}\n\n"
        f"that work horse: {baseline[2] if baseline else 0:.1f} MB after the first {WARMUP:.0%} of earnings, peak "
        f"{horse_peak:.1f} MB: **growth {growth:+.1f} MB**; worker (the parent, which sweeps), from the same moment: "
        f"{worker_growth:+.1f} MB. Target growth < 10 MB: {common.target(growth < 10 and worker_growth < 10)}"
    )
    print(body)
    if args.record:
        run.record(fleet.SECTION, f"Worker memory over {args.earnings:,} earnings", body)
    fleet.fail_on(problems)


if __name__ == "__main__":
    main()
