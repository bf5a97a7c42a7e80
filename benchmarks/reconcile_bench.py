"""points_reconcile over a large table on PostgreSQL: time, peak memory and query count.

    python benchmarks/reconcile_bench.py                 # 1,000,000 records, 1% needing repair
    python benchmarks/reconcile_bench.py --rows 20000    # quick (CI)
    python benchmarks/reconcile_bench.py --record        # also append the figures to docs/benchmarks.md

It uses its own database (points_earn_bench, dropped and re-created), a private Redis, and the test settings.
Half of the records needing repair are `sending` with an expired lease (killed workers), half `queued` and due
with no job in Redis (Redis flushed); the rest are awarded. Targets (issue 5): under 60 s, under 200 MB, and
queries growing with batches, not with rows.
"""

from __future__ import annotations

import io
import resource
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import common

SECTION = "points_reconcile (issue 5)"  # in docs/benchmarks.md


def fill(rows: int, repair_fraction: float) -> dict[str, int]:
    """COPY ``rows`` records in; a ``repair_fraction`` of them need reconcile's attention."""
    from django.db import connection

    now = datetime.now(UTC)
    expired = now - timedelta(minutes=10)
    needing = int(rows * repair_fraction)
    mix = {"sending_expired": needing // 2, "queued_lost": needing - needing // 2}
    mix["awarded"] = rows - needing
    columns = (
        "account, provider, order_number, order_id, phone, total, request, status, status_reason, attempts, "
        "rate_limited, outcome_unknown, next_attempt_at, lease_expires_at, lease_token, remote_id, "
        "remote_reference, remote_status, points, created_at, updated_at, completed_at, drift, kind"
    )
    buf = io.StringIO()
    n = 0
    for status, count in (
        ("sending", mix["sending_expired"]),
        ("queued", mix["queued_lost"]),
        ("awarded", mix["awarded"]),
    ):
        for _ in range(count):
            n += 1
            account = ("main", "branch")[n % 2]
            created = now - timedelta(seconds=rows - n)
            next_at = created.isoformat() if status == "queued" else r"\N"
            lease = expired.isoformat() if status == "sending" else r"\N"
            token = "t" if status == "sending" else ""
            remote = f"uuid-{n}" if status == "awarded" else ""
            completed = created.isoformat() if status == "awarded" else r"\N"
            buf.write(
                f"{account}\tpoints\tSO-{n:08d}\t{n}\t5{n % 100000000:08d}\t100.00\t{{}}\t{status}\t\t0\t0\tf\t"
                f"{next_at}\t{lease}\t{token}\t{remote}\t\t\t1000.00\t{created.isoformat()}\t{created.isoformat()}\t"
                f"{completed}\t\tpurchase\n"
            )
            if n % 100_000 == 0:
                _copy(connection, columns, buf)
                buf = io.StringIO()
    _copy(connection, columns, buf)
    with connection.cursor() as cur:
        cur.execute("ANALYZE django_points_earn_earningrecord")
    return mix


def _copy(connection, columns: str, buf: io.StringIO) -> None:
    connection.ensure_connection()
    raw = connection.connection
    with raw.cursor() as cur, cur.copy(f"COPY django_points_earn_earningrecord ({columns}) FROM STDIN") as copy:
        copy.write(buf.getvalue())
    raw.commit()


def run_reconcile() -> tuple[float, int, int, int, dict]:
    from django.db import connection

    from django_points_earn import reconcile

    counter = common.QueryCounter()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        report = reconcile.run(reconcile.Options())
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return elapsed, peak, max(0, rss_after - rss_before) * 1024, counter.count, report.as_dict()


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repair", type=float, default=0.01, help="fraction needing repair (default 0.01)")
    args = parser.parse_args()

    run = common.Run(__file__)
    redis = common.private_redis()
    try:
        common.setup_django(common.fresh_database_url("postgres", common.BENCH_DB))
        run.databases = [common.database_version()]
        t0 = time.perf_counter()
        mix = fill(args.rows, args.repair)
        fill_s = time.perf_counter() - t0
        elapsed, peak, rss_growth, queries, report = run_reconcile()
    finally:
        redis.stop()

    repaired = report["steps"]["expired_leases"]["recovered"]
    batches = -(-mix["sending_expired"] // 500)
    rows_out = [
        ("records", f"{args.rows:,}", ""),
        (
            "needing repair",
            f"{mix['sending_expired'] + mix['queued_lost']:,}",
            f"{mix['sending_expired']:,} expired leases, {mix['queued_lost']:,} due without a job",
        ),
        ("leases recovered", f"{repaired:,}", f"in {batches} batches of 500"),
        ("accounts enqueued", ", ".join(report["steps"]["lost_jobs"]["accounts_enqueued"]), ""),
        ("time", f"{elapsed:.2f} s", "target < 60 s"),
        ("peak Python memory", f"{peak / 2**20:.1f} MB", "target < 200 MB (tracemalloc)"),
        ("max RSS growth", f"{rss_growth / 2**20:.1f} MB", "over the fill's peak (ru_maxrss)"),
        ("queries", f"{queries:,}", f"{queries / max(1, batches):.1f} per batch of 500 repaired rows"),
        ("fill (COPY)", f"{fill_s:.1f} s", "not part of the measurement"),
    ]
    table = common.markdown_table(["reconcile", "figure", "note"], rows_out)
    print(table)
    if args.record:
        run.record(SECTION, f"{args.rows:,} records, {args.repair:.0%} needing repair", table)


if __name__ == "__main__":
    main()
