"""Where an earning's time goes: one account drained in this process, timed by phase.

    python benchmarks/profile_drain.py                   # 500 earnings, sandbox latency 20 ms
    python benchmarks/profile_drain.py --earnings 50     # quick (CI)
    python benchmarks/profile_drain.py --pyinstrument    # also print pyinstrument's call tree (pip install it)
    python benchmarks/profile_drain.py --record          # also append the table to docs/benchmarks.md

The throughput benchmark says how close to the limit the workers get; this says why not closer. The orders are
paid first, then ``dispatch.drain_account`` runs here (not in a worker) with the app's functions wrapped in
timers. The calls run in the drain's call thread, one after another; an earning's cycle is its call plus the gap
until the next call starts, and only those two are on the critical path. Everything the drain's own thread does
(the checks before each record, the claim, the lock refresh, the attempt row written before the call, recording
the answer) runs while a call is in flight: it costs the cycle nothing as long as it fits in the call, and the
table shows how much room is left. Statements are counted with ``connection.execute_wrapper``; CPU time is this
process's, both threads.
"""

from __future__ import annotations

import itertools
import os
import resource
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common, fleet

ACCOUNT = "acct1"


class Phases:
    """Wall time and calls per phase, from wrappers put around the app's functions for the run."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.spans: dict[str, list[tuple[float, float]]] = {}  # (start, end) of every call of each phase
        self._lock = threading.Lock()  # the call thread and the drain's thread both report

    @contextmanager
    def wrapped(self, targets: list[tuple[Any, str, str]]) -> Iterator[None]:
        """Wrap ``getattr(owner, name)`` as phase ``label`` for each target that exists; restore them after."""
        saved = [(owner, name, getattr(owner, name)) for owner, name, _ in targets if hasattr(owner, name)]
        labels = {(id(owner), name): label for owner, name, label in targets}
        for owner, name, original in saved:
            setattr(owner, name, self._timed(labels[id(owner), name], original))
        try:
            yield
        finally:
            for owner, name, original in saved:
                setattr(owner, name, original)

    def _timed(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                ended = time.perf_counter()
                with self._lock:
                    self.seconds[label] += ended - started
                    self.calls[label] += 1
                    self.spans.setdefault(label, []).append((started, ended))

        return timed


def targets() -> list[tuple[Any, str, str]]:
    from redis.lock import Lock

    from django_points_earn import accounts, dispatch, earning_calls, lifecycle, outbox
    from django_points_earn.providers.points import PointsBackend

    checks = "checks before each record (paused? a call in flight? next due)"
    return [
        (accounts, "is_paused", checks),
        (accounts, "account_gate", checks),
        (dispatch, "call_in_flight", checks),
        (earning_calls, "first_due", checks),  # the next due earning, read whole
        (outbox.Machine, "next_due", checks),  # every kind's (refunds', and has_due's)
        (lifecycle, "claim", "claim the record (conditional UPDATE)"),
        (Lock, "reacquire", "refresh the account lock (Redis)"),
        (lifecycle, "start_attempt", "write the attempt row before the call"),
        # PostgreSQL's hot path: both of the above in two statements (outbox_sql.claim_next).
        (lifecycle, "claim_next_due", "claim the record and write its attempt row (PostgreSQL)"),
        (PointsBackend, "earn", CALL),
        (lifecycle, "complete", "record the answer (one transaction)"),
    ]


CALL = "the HTTP call, as the client sees it"


def main() -> None:
    p = common.parser(__doc__)
    p.add_argument("--earnings", type=int, default=500)
    p.add_argument("--latency-ms", type=float, default=20)
    p.add_argument("--pyinstrument", action="store_true", help="print pyinstrument's call tree of the drain")
    args = p.parse_args()
    run = common.Run(__file__)
    os.environ["POINTS_BENCH_DRAIN_SECONDS"] = "3600"  # one drain sends every earning (read by the settings)
    with fleet.stack("profile", latency_ms=args.latency_ms) as stack:
        from django.db import connection

        from django_points_earn.dispatch import drain_account

        run.databases = [common.database_version()]
        fleet.clear_state(stack.sandbox)
        placed = fleet.place_orders(args.earnings, [ACCOUNT], prefix="PR")
        phases, statements = Phases(), common.QueryCounter(keep=True)
        profiler = _profiler() if args.pyinstrument else None
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        machine_before = common.process_cpu()
        started = time.perf_counter()
        with (
            phases.wrapped(targets()),
            connection.execute_wrapper(statements),
            common.counting_commits(connection) as commits,
        ):
            report = drain_account(ACCOUNT)
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        sandbox_pid = stack.sandbox.process.pid
        by_process = common.cpu_by_process(
            machine_before,
            common.process_cpu(),
            lambda pid, name: (
                "the drain (this process)"
                if pid == os.getpid()
                else "the sandbox"
                if pid == sandbox_pid
                else "PostgreSQL"
                if name.startswith("postgres")
                else "Redis"
                if name.startswith("redis")
                else "anything else on the machine"
            ),
        )
        if profiler is not None:
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False, show_all=False))
        problems = fleet.exactly_once_problems(stack.sandbox.ledger(), placed)

    n = max(1, report.sent)
    calls = sorted(phases.spans.get(CALL, []))
    gaps = [later[0] - earlier[1] for earlier, later in itertools.pairwise(calls)]
    call_ms = statistics.median(end - start for start, end in calls) * 1000 if calls else 0.0
    gap_ms = statistics.median(gaps) * 1000 if gaps else 0.0
    rows = [
        ["**on the critical path**", "", "", ""],
        [CALL, f"{phases.calls[CALL] / n:.2f}", f"{call_ms:.2f} ms", "median"],
        ["from one call's end to the next call's start", "", f"{gap_ms:.2f} ms", "median"],
        ["**in the drain's thread, while a call is in flight**", "", "", ""],
    ]
    busy = 0.0
    for label in dict.fromkeys(label for _, _, label in targets()):
        if label == CALL:
            continue
        busy += phases.seconds[label]
        rows.append([label, f"{phases.calls[label] / n:.2f}", f"{phases.seconds[label] * 1000 / n:.2f} ms", "mean"])
    rows.append(["all of the above", "", f"{busy * 1000 / n:.2f} ms", f"{busy / elapsed:.0%} of the time"])
    rows.append(["**one earning** (wall time / earnings)", "", f"**{elapsed * 1000 / n:.2f} ms**", ""])
    kinds = Counter(common.statement_kind(sql) for sql in statements.statements)
    cpu_ms = (after.ru_utime - cpu.ru_utime + after.ru_stime - cpu.ru_stime) * 1000 / n
    table = common.markdown_table(["phase", "calls per earning", "time per earning", ""], rows)
    body = (
        f"{report.sent:,} earnings drained in-process ({report.sent / elapsed:.1f}/s), sandbox latency "
        f"{args.latency_ms:g} ms.\n\n{table}"
        f"\n\nPer earning: {commits[0] / n:.1f} commits, {statements.count / n:.1f} statements ("
        + ", ".join(f"{kind} x{count / n:.1f}" for kind, count in kinds.most_common())
        + f"); this process's CPU: {cpu_ms:.1f} ms. CPU per earning on the whole machine: "
        + ", ".join(f"{label} {seconds * 1000 / n:.1f} ms" for label, seconds in sorted(by_process.items()))
        + f" (total {sum(by_process.values()) * 1000 / n:.1f} ms)."
    )
    print(body)
    if args.record:
        run.record(fleet.SECTION, f"Where an earning's time goes: {report.sent:,} earnings, one account", body)
    fleet.fail_on(problems)


def _profiler() -> Any:
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005)
    profiler.start()
    return profiler


if __name__ == "__main__":
    main()
