"""The merchant admin over 1,000,000 earnings on PostgreSQL: server time and query count of each page.

    python benchmarks/admin_bench.py                  # fill once (kept for the next run), then measure
    python benchmarks/admin_bench.py --refill         # drop and fill again
    python benchmarks/admin_bench.py --rows 50000     # quick
    python benchmarks/admin_bench.py --record         # also append the figures to docs/benchmarks.md
    python benchmarks/admin_bench.py --explain        # EXPLAIN ANALYZE the slowest page's queries

It uses a database of its own, ``points_earn_admin_bench`` (never the test database), filled by SQL on the server
(``INSERT … SELECT FROM generate_series``): ~1,000,000 records over 90 days in the mix a shop sees (awarded,
pending, rejected, failed, blocked, a queued backlog, drifted), one attempt per record and audit rows for the
ones that changed state. Each page is requested through Django's test client as a logged-in superuser: one warm-up,
then ``--repeat`` timed requests; the median and the worst are reported. Target (issue 4): under 500 ms and under
15 queries per page.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PG = os.environ.get("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/points_earn").rsplit("/", 1)[0]
DB_NAME = "points_earn_admin_bench"
TARGET_MS = 500
TARGET_QUERIES = 15

# One statement: every record, its state decided by n (mostly awarded), created over the last 90 days in id order.
FILL_RECORDS = """
INSERT INTO django_points_earn_earningrecord (
    account, provider, order_number, order_id, phone, total, request, payload, status, status_reason, attempts,
    rate_limited, outcome_unknown, next_attempt_at, lease_expires_at, lease_token, remote_id, remote_reference,
    remote_status, points, response, remote_checked_at, drift, created_at, updated_at, completed_at)
SELECT
    CASE WHEN n % 10 < 7 THEN 'main' ELSE 'branch' END,
    'points',
    'SO-' || lpad(n::text, 8, '0'),
    n::text,
    CASE WHEN s = 'rejected' THEN '' ELSE '5' || lpad(((n::bigint * 7919) % 100000000)::text, 8, '0') END,
    100.00 + (n % 400),
    jsonb_build_object('account', 'main', 'order_number', 'SO-' || lpad(n::text, 8, '0'),
        'phone', '05' || lpad(((n::bigint * 7919) % 100000000)::text, 8, '0'), 'total', '100.00',
        'lines', jsonb_build_array(jsonb_build_object('name', 'Cappuccino', 'unit_price', '18.50', 'quantity', 2))),
    CASE WHEN s = 'rejected' THEN NULL ELSE jsonb_build_object(
        'order_number', 'SO-' || lpad(n::text, 8, '0'),
        'phone_number', '5' || lpad(((n::bigint * 7919) % 100000000)::text, 8, '0'), 'total_price', 100.0,
        'products', jsonb_build_array(jsonb_build_object(
            'product_name', 'Cappuccino', 'product_price', 18.5, 'quantity', 2))) END,
    s,
    CASE s WHEN 'failed' THEN 'gave up after 8 attempts: Points answered HTTP 503: no detail'
           WHEN 'rejected' THEN 'phone number has 6 digits after the country code; a Saudi mobile has 9'
           WHEN 'blocked' THEN 'Points refused the API key: Invalid or inactive API key'
           WHEN 'pending_activation' THEN 'customer has not activated their Points account yet'
           WHEN 'skipped' THEN 'customer opted out of loyalty points'
           WHEN 'awarded' THEN 'awarded (1000 points)' ELSE '' END,
    CASE s WHEN 'failed' THEN 8 ELSE 0 END,
    0, false,
    CASE WHEN s = 'queued' THEN created ELSE NULL END,
    CASE WHEN s = 'sending' THEN now() - interval '2 minutes' ELSE NULL END,
    CASE WHEN s = 'sending' THEN 'lease' ELSE '' END,
    CASE WHEN s IN ('awarded', 'reversed') THEN md5(n::text)::uuid::text ELSE '' END,
    CASE WHEN s IN ('awarded', 'reversed', 'pending_activation') THEN 'REF-' || n ELSE '' END,
    CASE WHEN s = 'awarded' THEN 'approved' WHEN s = 'reversed' THEN 'fully_refunded' ELSE '' END,
    CASE WHEN s IN ('awarded', 'reversed', 'pending_activation') THEN 1000 ELSE NULL END,
    CASE WHEN s = 'awarded' THEN jsonb_build_object('status', true, 'data', jsonb_build_object(
        'uuid', md5(n::text)::uuid::text, 'reference_number', 'REF-' || n, 'order_status', 'approved',
        'total_points', 1000)) ELSE NULL END,
    CASE WHEN n % 10000 = 1 AND s = 'awarded' THEN created + interval '1 day' ELSE NULL END,
    CASE WHEN n % 10000 = 1 AND s = 'awarded' THEN 'platform state approved → fully_refunded' ELSE '' END,
    created, created + interval '3 seconds',
    CASE WHEN s IN ('queued', 'sending', 'pending_activation', 'blocked') THEN NULL
         ELSE created + interval '3 seconds' END
FROM (
    SELECT n,
        now() - make_interval(secs => (%(rows)s - n) * 7776000.0 / %(rows)s) AS created,
        CASE WHEN n > %(rows)s - 2000 THEN 'queued'
             WHEN n > %(rows)s - 2050 THEN 'sending'
             WHEN n % 1000 < 5 THEN 'failed'
             WHEN n % 1000 < 10 THEN 'rejected'
             WHEN n % 1000 < 12 THEN 'blocked'
             WHEN n % 1000 < 32 THEN 'pending_activation'
             WHEN n % 1000 < 42 THEN 'skipped'
             WHEN n % 1000 < 44 THEN 'resolved'
             WHEN n % 1000 < 46 THEN 'reversed'
             ELSE 'awarded' END AS s
    FROM generate_series(1, %(rows)s) AS n
) AS g
"""

# One attempt per record that reached the platform: what the dashboard's latency and error rates read.
FILL_ATTEMPTS = """
INSERT INTO django_points_earn_earningattempt (
    record_id, number, trigger, actor, request_id, request_body, started_at, finished_at, duration_ms, http_status,
    outcome, outcome_unknown, error, response_body)
SELECT id, 1, 'worker', '', md5(id::text || 'r')::uuid, payload, created_at + interval '1 second',
    created_at + interval '2 seconds', 80 + (id % 250),
    CASE status WHEN 'failed' THEN 503 WHEN 'blocked' THEN 400 WHEN 'sending' THEN NULL
                WHEN 'pending_activation' THEN 200 ELSE 200 END,
    CASE status WHEN 'failed' THEN 'unavailable' WHEN 'blocked' THEN 'unauthorized' WHEN 'sending' THEN ''
                WHEN 'pending_activation' THEN 'pending_activation' ELSE 'awarded' END,
    status = 'failed',
    CASE status WHEN 'failed' THEN 'Points answered HTTP 503: no detail' ELSE '' END,
    ''
FROM django_points_earn_earningrecord
WHERE status NOT IN ('queued', 'rejected', 'skipped')
"""

FILL_EVENTS = """
INSERT INTO django_points_earn_earningevent (record_id, at, from_status, to_status, trigger, actor, note)
SELECT id, updated_at, 'sending', status, 'worker', '', status_reason
FROM django_points_earn_earningrecord
WHERE status IN ('failed', 'rejected', 'blocked', 'pending_activation', 'resolved', 'reversed')
"""


@dataclass
class Measured:
    name: str
    url: str
    median_ms: float
    worst_ms: float
    queries: int
    sql: list[str]


def setup_django(refill: bool) -> bool:
    """Point Django at the benchmark database (created if missing); returns whether it must be filled."""
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
        if exists and refill:
            conn.execute(f"DROP DATABASE {DB_NAME}")
        if not exists or refill:
            conn.execute(f"CREATE DATABASE {DB_NAME}")
    os.environ["DATABASE_URL"] = f"{PG}/{DB_NAME}"
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from django_points_earn.models import EarningRecord

    return refill or not EarningRecord.objects.exists()


def fill(rows: int) -> float:
    from django.db import connection

    started = time.perf_counter()
    with connection.cursor() as cur:
        for table in ("earningevent", "earningattempt", "earningrecord", "accountstate"):
            cur.execute(f"TRUNCATE django_points_earn_{table} CASCADE")
        cur.execute(FILL_RECORDS.replace("%(rows)s", str(int(rows))))
        cur.execute(FILL_ATTEMPTS)
        cur.execute(FILL_EVENTS)
        cur.execute(
            "INSERT INTO django_points_earn_accountstate (account, paused, reason, paused_at, resumed_by) "
            "VALUES ('branch', true, 'Points refused the API key: Invalid or inactive API key', now(), '')"
        )
    connection.close()
    with connection.cursor() as cur:  # outside a transaction: VACUUM, so index-only scans see visible pages
        for table in ("earningrecord", "earningattempt", "earningevent"):
            cur.execute(f"VACUUM ANALYZE django_points_earn_{table}")
    return time.perf_counter() - started


def pages() -> list[tuple[str, str]]:
    from datetime import timedelta

    from django.utils import timezone

    from django_points_earn.models import EarningRecord

    today = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)
    week = f"created_at__gte={today - timedelta(days=7)}&created_at__lt={today + timedelta(days=1)}".replace(
        " ", "+"
    ).replace("+03:00", "%2B03:00")

    failed = EarningRecord.objects.filter(status="failed").order_by("-id").values_list("id", flat=True).first()
    sample = EarningRecord.objects.filter(status="awarded").order_by("-id")[5000]
    base = "/admin/django_points_earn/earningrecord/"
    return [
        ("list", base),
        ("list, state = failed", f"{base}?status__exact=failed"),
        ("list, needs attention", f"{base}?attention=yes"),
        ("list, stuck", f"{base}?attention=stuck"),
        ("list, account = branch", f"{base}?account=branch"),
        ("list, platform = points", f"{base}?platform=points"),
        ("list, created in the past 7 days", f"{base}?{week}"),
        ("list, page 100", f"{base}?p=100"),
        ("search, phone in another form", f"{base}?q=%2B966+{sample.phone[:2]}+{sample.phone[2:5]}+{sample.phone[5:]}"),
        ("search, order number", f"{base}?q={sample.order_number}"),
        ("search, Points uuid", f"{base}?q={sample.remote_id}"),
        ("earning page", f"{base}{failed}/change/"),
        ("dashboard", "/admin/django_points_earn/reconciliationdashboard/"),
    ]


def measure(repeat: int) -> list[Measured]:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user = get_user_model().objects.filter(username="bench").first()
    if user is None:
        user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")
    client = Client()
    client.force_login(user)
    results = []
    for name, url in pages():
        response = client.get(url)  # warm-up: caches, plans, the first connection
        assert response.status_code == 200, (url, response.status_code)
        times = []
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = client.get(url)
                times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (url, response.status_code)
        results.append(
            Measured(
                name,
                url,
                statistics.median(times),
                max(times),
                len(queries),
                [q["sql"] for q in queries.captured_queries],
            )
        )
    return results


def explain(item: Measured) -> None:
    from django.db import connection

    print(f"\nEXPLAIN ANALYZE of {item.name} ({item.url}):")
    with connection.cursor() as cur:
        for sql in item.sql:
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
            plan = [row[0] for row in cur.fetchall()]
            print(f"\n-- {sql[:300]}")
            print("\n".join(plan[:25]))


def table(results: list[Measured]) -> str:
    width = max(len(r.name) for r in results)
    lines = [
        f"| {'page':<{width}} | median | worst | queries | within target |",
        f"|{'-' * (width + 2)}|---:|---:|---:|---|",
    ]
    for r in results:
        ok = "yes" if r.worst_ms < TARGET_MS and r.queries < TARGET_QUERIES else "**no**"
        lines.append(f"| {r.name:<{width}} | {r.median_ms:.0f} ms | {r.worst_ms:.0f} ms | {r.queries} | {ok} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--refill", action="store_true", help="drop the benchmark database and fill it again")
    parser.add_argument("--repeat", type=int, default=5, help="timed requests per page (default 5)")
    parser.add_argument("--record", action="store_true", help="append the result to docs/benchmarks.md")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN ANALYZE the slowest page's queries")
    args = parser.parse_args()

    fill_s = None
    if setup_django(args.refill):
        print(f"filling {DB_NAME} with {args.rows:,} earnings…", flush=True)
        fill_s = fill(args.rows)
        print(f"filled in {fill_s:.0f} s", flush=True)
    from django_points_earn.models import EarningAttempt, EarningRecord

    rows = EarningRecord.objects.count()
    attempts = EarningAttempt.objects.count()
    results = measure(args.repeat)
    text = table(results)
    print(f"\n{rows:,} earnings, {attempts:,} attempts; {args.repeat} timed requests per page\n")
    print(text)
    if args.explain:
        explain(max(results, key=lambda r: r.median_ms))
    if args.record:
        record(text, rows, attempts, args.repeat, fill_s)
    # Timings are reported, never enforced: a slow or busy machine must not fail anything.


def record(text: str, rows: int, attempts: int, repeat: int, fill_s: float | None) -> None:
    from django.db import connection

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    with connection.cursor() as cur:
        cur.execute("SHOW server_version")
        pg_version = f"PostgreSQL {cur.fetchone()[0].split()[0]}"
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {pg_version}"
    filled = f"; fill {fill_s:.0f} s, not measured" if fill_s is not None else ""
    with open(ROOT / "docs" / "benchmarks.md", "a", encoding="utf-8") as out:
        out.write(
            f"\n## Merchant admin (issue 4)\n\n### {rows:,} earnings, {attempts:,} attempts\n\n"
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}, {machine}, "
            f"`python benchmarks/admin_bench.py` (median and worst of {repeat} requests per page after a warm-up, "
            f"server side through Django's test client{filled})\n\n{text}\n"
        )


if __name__ == "__main__":
    main()
