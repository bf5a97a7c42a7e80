"""What every benchmark shares: a fresh database, a private Redis, counting queries, tables and ``--record``.

Scripts import this first (``from common import ...`` does not work from the repository root, so they put the root
on ``sys.path`` and import ``benchmarks.common``); Django is set up only when a script asks for it.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from django_points_earn.redis_server import RunningRedis, start_redis  # noqa: E402 (needs ROOT on sys.path)

PG_BASE = os.environ.get("POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/points_earn").rsplit("/", 1)[0]
BENCH_DB = "points_earn_bench"
DOCS = ROOT / "docs" / "benchmarks.md"


# -- databases and services -----------------------------------------------------------------------------------
def fresh_database_url(kind: str = "postgres", name: str = BENCH_DB) -> str:
    """Drop and re-create the benchmark's own database; return its DATABASE_URL."""
    if kind == "postgres":
        import psycopg

        with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name}")
        return f"{PG_BASE}/{name}"
    if kind == "sqlite":
        path = Path(tempfile.gettempdir()) / f"{name}.sqlite3"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    raise ValueError(f"unknown database kind {kind!r} (postgres or sqlite)")


@contextmanager
def own_database(kind: str, name: str) -> Iterator[str]:
    """A database of this run only (``points_earn_bench_<name>_<pid>``), so that concurrent runs of the same
    benchmark never drop each other's; dropped at the end. Yields its DATABASE_URL."""
    url = fresh_database_url(kind, f"{BENCH_DB}_{name}_{os.getpid()}")
    try:
        yield url
    finally:
        drop_database(url)


def drop_database(url: str) -> None:
    from django.db import connections

    connections.close_all()
    if url.startswith("sqlite:///"):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{url.removeprefix('sqlite:///')}{suffix}").unlink(missing_ok=True)
        return
    import psycopg

    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


def setup_django(database_url: str, settings_module: str = "tests.settings") -> None:
    """Point Django at ``database_url`` with ``settings_module``, set it up and migrate."""
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    import django
    import environ
    from django.conf import settings

    django.setup()
    if settings.DATABASES["default"]["NAME"] != environ.Env.db_url_config(database_url)["NAME"]:
        # The settings module read DATABASE_URL when it was first imported, before it was set here.
        raise RuntimeError(f"{settings_module} was imported before DATABASE_URL was set: it uses another database")
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def private_redis() -> RunningRedis:
    """A private redis-server for this run; settings (imported now or later) and child processes use it."""
    redis = start_redis()
    os.environ["REDIS_URL"] = redis.url
    from django.conf import settings

    if settings.configured:
        settings.RQ_QUEUES["default"]["URL"] = redis.url
    return redis


def database_version() -> str:
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SHOW server_version")
            return f"PostgreSQL {cur.fetchone()[0].split()[0]}"
    if connection.vendor == "sqlite":
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"
    return connection.vendor


class QueryCounter:
    """A ``connection.execute_wrapper``: counts statements, and keeps them when ``keep`` is set."""

    def __init__(self, keep: bool = False) -> None:
        self.count = 0
        self.keep = keep
        self.statements: list[str] = []

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        self.count += 1
        if self.keep:
            self.statements.append(sql)
        return execute(sql, params, many, context)


@contextmanager
def counting_commits(connection: Any) -> Iterator[list[int]]:
    """Count the commits made on ``connection`` (this thread's) while inside; yields a one-item list."""
    commits = [0]
    original = connection._commit

    def commit(*args: Any, **kwargs: Any) -> Any:
        commits[0] += 1
        return original(*args, **kwargs)

    connection._commit = commit
    try:
        yield commits
    finally:
        del connection._commit  # back to the class's method


def statement_kind(sql: str) -> str:
    """``INSERT django_points_earn_earningrecord``, ``SAVEPOINT``…: what a statement does, and to which table (each
    of them, for several statements sent as one)."""
    parts = [part for part in sql.split(";") if part.strip()]
    if len(parts) > 1:  # several statements sent in one round trip
        return " + ".join(statement_kind(part) for part in parts) + " (one round trip)"
    verb = sql.split(None, 1)[0].upper()
    if verb in ("SAVEPOINT", "RELEASE", "ROLLBACK"):
        return "SAVEPOINT" if verb == "SAVEPOINT" else f"{verb} SAVEPOINT"
    table = re.search(r'(?:INTO|FROM|UPDATE)\s+"?(\w+)"?', sql, re.IGNORECASE)
    return f"{verb} {table.group(1) if table else '?'}"


# -- figures --------------------------------------------------------------------------------------------------
def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0..100) of ``values``."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered), max(1, math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    rows = [[str(cell) for cell in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def target(ok: bool) -> str:
    return "met" if ok else "**missed**"


# -- runs and --record ----------------------------------------------------------------------------------------
def parser(description: str | None) -> argparse.ArgumentParser:
    """The arguments every benchmark takes: ``--record`` (and its own, added by the script)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--record", action="store_true", help="append the result to docs/benchmarks.md")
    return p


@dataclass
class Run:
    """One benchmark run: when it started, under what load, and how to write it down."""

    script: str
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    load_at_start: tuple[float, float, float] = field(default_factory=os.getloadavg)
    commit_at_start: str = field(default_factory=lambda: commit())
    databases: list[str] = field(default_factory=list)

    @property
    def command(self) -> str:
        return shlex.join(["python", f"benchmarks/{Path(self.script).name}", *sys.argv[1:]])

    def header(self) -> str:

        def load(averages: tuple[float, ...]) -> str:
            return " / ".join(f"{v:.2f}" for v in averages)

        parts = [
            f"{self.started:%Y-%m-%d %H:%M} UTC",
            f"commit {self.commit_at_start}"
            + (f" (HEAD moved to {now} during the run)" if (now := commit()) != self.commit_at_start else ""),
            machine(),
            *self.databases,
            redis_version(),
            f"load average (1/5/15 min) {load(self.load_at_start)} at start, {load(os.getloadavg())} at the end",
            f"`{self.command}`",
        ]
        return ", ".join(p for p in parts if p)

    def record(self, section: str, title: str, body: str) -> None:
        """Write ``body`` (tables and notes) as ``### title`` at the end of ``## section`` in docs/benchmarks.md
        (the section is added at the end of the file the first time)."""
        entry = f"### {title}\n\n{self.header()}\n\n{body.rstrip()}\n"
        text = DOCS.read_text(encoding="utf-8") if DOCS.exists() else "# Benchmarks\n"
        lines = text.rstrip("\n").split("\n")
        heading = f"## {section}"
        if heading not in lines:
            lines += ["", heading]
        start = lines.index(heading)
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        while end > start + 1 and not lines[end - 1].strip():
            end -= 1
        lines[end:end] = ["", *entry.rstrip("\n").split("\n")]
        DOCS.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"recorded in {DOCS}, section {section!r}")


def cpu_times() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, every core and process, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    hz = float(os.sysconf("SC_CLK_TCK"))
    return (sum(fields[:8]) - idle) / hz, sum(fields[:8]) / hz


def process_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every process on the machine: ``{pid: (command name, seconds)}``."""
    hz = float(os.sysconf("SC_CLK_TCK"))
    seen = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        seen[int(stat.parent.name)] = (name, (float(fields[11]) + float(fields[12])) / hz)
    return seen


def cpu_by_process(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], groups) -> dict:
    """CPU seconds spent between two :func:`process_cpu` readings, summed by ``groups(pid, name) -> label``."""
    spent: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        used = seconds - before.get(pid, (name, 0.0))[1]
        if used > 0:
            label = groups(pid, name)
            spent[label] = spent.get(label, 0.0) + used
    return spent


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "django_points_earn")
    return f"{sha} (+ uncommitted changes in django_points_earn)" if dirty else sha


def machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpu = f"{model}, " if model else ""
    return f"{platform.machine()}, {cpu}{os.cpu_count()} cores, Python {platform.python_version()}"


def redis_version() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return ""
    version = next((w.split("=", 1)[1] for w in out.split() if w.startswith("v=")), "")
    return f"Redis {version}" if version else ""
