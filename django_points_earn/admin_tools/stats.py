"""The reconciliation dashboard's numbers. Every query is bounded: aggregates over indexed columns, a 24-hour
window for the chart and a window of recent attempts for latency and error rates, never a scan per row shown."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count
from django.db.models.functions import TruncHour
from django.utils import timezone

from .. import reconcile_report
from ..models import AccountState, EarningAttempt, EarningRecord, Status
from ..providers.results import RATE_LIMITED

ATTENTION_SHOWN = 20
ATTENTION_COUNT_LIMIT = 1000  # beyond this the dashboard says "1000+": the per-state table has the exact figures
ATTEMPT_WINDOW = timedelta(hours=1)
ATTEMPT_SAMPLE = 2000  # at most this many of the window's newest attempts are measured
AWARD_STATES = (Status.AWARDED, Status.PARTIALLY_REVERSED, Status.REVERSED)
# Attempts whose answer was not a success: transport failures, 5xx, refusals, lost workers.
ERROR_OUTCOMES = ("unavailable", "unauthorized", "forbidden", "rejected", "abandoned")


@dataclass
class AttemptStats:
    count: int = 0
    p50_ms: int | None = None
    p95_ms: int | None = None
    error_rate: float | None = None
    rate_limited_rate: float | None = None
    since: datetime | None = None

    @property
    def error_pct(self) -> float | None:
        return None if self.error_rate is None else self.error_rate * 100

    @property
    def rate_limited_pct(self) -> float | None:
        return None if self.rate_limited_rate is None else self.rate_limited_rate * 100


@dataclass
class Dashboard:
    now: datetime
    states: list[tuple[str, str]]  # the states that occur, in lifecycle order: (value, label)
    by_account: list[dict[str, Any]]  # {"account", "counts": [(state, n) per state], "total"}
    attention_total: int  # capped at ATTENTION_COUNT_LIMIT + 1 (see attention_capped)
    attention: list[EarningRecord]
    oldest_queued: datetime | None
    hourly: list[tuple[datetime, int]]
    attempts: AttemptStats
    paused: list[AccountState] = field(default_factory=list)

    @property
    def attention_capped(self) -> bool:
        return self.attention_total > ATTENTION_COUNT_LIMIT


def counts_by_account() -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    # COUNT(*) grouped in the order of the (status, account, next_attempt_at) index: PostgreSQL answers it with an
    # index-only scan, never touching the table's rows (COUNT(id) would have to).
    rows = EarningRecord.objects.values_list("status", "account").annotate(n=Count("*")).order_by()
    table: dict[str, dict[str, int]] = {}
    for status, account, n in rows:
        table.setdefault(account, {})[status] = n
    present = {s for counts in table.values() for s in counts}
    states = [(value, str(label)) for value, label in Status.choices if value in present]
    by_account = [
        {"account": account, "counts": [(s, counts.get(s, 0)) for s, _ in states], "total": sum(counts.values())}
        for account, counts in sorted(table.items())
    ]
    return states, by_account


def oldest_queued() -> datetime | None:
    return (
        EarningRecord.objects.filter(status=Status.QUEUED).order_by("id").values_list("created_at", flat=True).first()
    )


def awarded_per_hour(now: datetime) -> list[tuple[datetime, int]]:
    """Earnings awarded in each of the last 24 hours (the current hour last), by when they were confirmed."""
    current = timezone.localtime(now).replace(minute=0, second=0, microsecond=0)
    start = current - timedelta(hours=23)
    rows = (
        EarningRecord.objects.filter(completed_at__gte=start, status__in=AWARD_STATES)
        .annotate(hour=TruncHour("completed_at"))
        .values_list("hour")
        .annotate(n=Count("id"))
        .order_by()
    )
    found = dict(rows)  # aware datetimes: equal (and hashed alike) whatever their time zone
    hours = [start + timedelta(hours=i) for i in range(24)]
    return [(h, found.get(h, 0)) for h in hours]


def percentile(sorted_values: list[int], q: float) -> int | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def attempt_stats(now: datetime) -> AttemptStats:
    since = now - ATTEMPT_WINDOW
    rows = list(
        EarningAttempt.objects.filter(started_at__gte=since, finished_at__isnull=False)
        .order_by("-started_at")
        .values_list("duration_ms", "outcome")[:ATTEMPT_SAMPLE]
    )
    if not rows:
        return AttemptStats(since=since)
    durations = sorted(d for d, _ in rows if d is not None)
    return AttemptStats(
        count=len(rows),
        p50_ms=percentile(durations, 0.50),
        p95_ms=percentile(durations, 0.95),
        error_rate=sum(1 for _, o in rows if o in ERROR_OUTCOMES) / len(rows),
        rate_limited_rate=sum(1 for _, o in rows if o == RATE_LIMITED) / len(rows),
        since=since,
    )


def build(now: datetime | None = None) -> Dashboard:
    now = now or timezone.now()
    states, by_account = counts_by_account()
    attention = reconcile_report.attention_queryset()
    shown = list(attention.order_by("id")[:ATTENTION_SHOWN])
    total = len(shown) if len(shown) < ATTENTION_SHOWN else attention.order_by()[: ATTENTION_COUNT_LIMIT + 1].count()
    return Dashboard(
        now=now,
        states=states,
        by_account=by_account,
        attention_total=total,
        attention=shown,
        oldest_queued=oldest_queued(),
        hourly=awarded_per_hour(now),
        attempts=attempt_stats(now),
        paused=list(AccountState.objects.filter(paused=True).order_by("account")),
    )
