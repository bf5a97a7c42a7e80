"""Prometheus metrics, when ``prometheus_client`` is installed (``pip install "django-points-earn[metrics]"``).

Without it (or with ``POINTS_EARN["METRICS"]["ENABLED"] = False``) every function here does nothing. The seams call
them after the fact (a call's answer recorded, a delivery applied, a sweep run): a metric never changes what
happened, and a failure in one is logged, never raised into a call, a drain or a webhook.

Counters and the histogram live in the default registry, so django-prometheus's ``/metrics`` shows them. Under RQ's
forking workers set ``PROMETHEUS_MULTIPROC_DIR`` (docs/operations.md): each process writes its own files and
:func:`exposition` merges them. The earnings by state, the oldest due earning and the paused accounts are read from
the database when scraped (:class:`DatabaseCollector`), in the process that serves the scrape.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("django_points_earn")

try:
    import prometheus_client as prom
    from prometheus_client.core import GaugeMetricFamily
except ImportError:  # the optional extra is not installed: every metric is a no-op
    prom = None
    GaugeMetricFamily = None

PREFIX = "points_earn"
# The open states: those an operator alerts on. Final states (awarded, reversed, skipped…) grow for ever and are
# not counted at scrape time; calls_total counts their arrivals instead.
OPEN_STATES = ("held", "queued", "sending", "pending_activation", "accepted", "rejected", "blocked", "failed")
# What a processed delivery's result starts with (webhooks.process); anything else was applied.
RESULT_WORDS = ("ignored", "waiting", "error", "already processed")
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def available() -> bool:
    """prometheus_client is installed and the settings do not turn metrics off."""
    if prom is None:
        return False
    try:
        from .conf import get_settings

        return bool(get_settings().metrics.get("ENABLED", True))
    except Exception:
        return True


def _build() -> dict[str, Any]:
    if prom is None:
        return {}
    return {
        "calls": prom.Counter(
            f"{PREFIX}_calls",
            "Calls to a loyalty platform, by their answer.",
            ["platform", "account", "kind", "outcome", "http_status"],
        ),
        "latency": prom.Histogram(
            f"{PREFIX}_call_duration_seconds",
            "How long a call to a loyalty platform took.",
            ["platform", "account", "kind"],
            buckets=LATENCY_BUCKETS,
        ),
        "webhook_requests": prom.Counter(
            f"{PREFIX}_webhook_requests",
            "Webhook requests answered by this app, by HTTP status.",
            ["account", "http_status"],
        ),
        "webhook_deliveries": prom.Counter(
            f"{PREFIX}_webhook_deliveries",
            "Stored webhook deliveries, by what processing them came to.",
            ["account", "result"],
        ),
        "sweep_runs": prom.Counter(f"{PREFIX}_sweep_runs", "Sweeps run (by EarningWorker).", ["outcome"]),
        "sweep_repairs": prom.Counter(f"{PREFIX}_sweep_repairs", "What the sweeps repaired or requested.", ["what"]),
        "balance_events": prom.Counter(
            f"{PREFIX}_balance_events", "Balance alerts kept (webhooks and 403 answers).", ["account", "kind"]
        ),
    }


_METRICS = _build()


def _safely(name: str, update) -> None:
    if not _METRICS or not available():
        return
    try:
        update(_METRICS[name])
    except Exception:  # a metric never breaks what it measures
        log.exception("metric %s could not be updated", name)


def call(account: str, kind: str, outcome: str, http_status: int | None, ms: int | None) -> None:
    """One call's answer (``kind``: "earning" or "refund"), by the account's platform."""
    status = str(http_status) if http_status else "none"
    _safely("calls", lambda m: m.labels(_platform(account), account, kind, outcome, status).inc())
    if ms is not None:
        _safely("latency", lambda m: m.labels(_platform(account), account, kind).observe(ms / 1000))


def _platform(account: str) -> str:
    from .conf import get_settings

    return get_settings().account(account).provider


def webhook_request(account: str, http_status: int) -> None:
    _safely("webhook_requests", lambda m: m.labels(account, str(http_status)).inc())


def webhook_delivery(account: str, result: str) -> None:
    """``result``: a processed delivery's result text; counted by its first word (applied, ignored, waiting…)."""
    head = result.split(":", 1)[0].strip()
    word = head if head in RESULT_WORDS else "applied"
    _safely("webhook_deliveries", lambda m: m.labels(account, word).inc())


def sweep(report: Any, webhooks_processed: int = 0, error: bool = False) -> None:
    """One sweep (``reconcile.SweepReport``), and what it repaired."""
    outcome = "error" if error else ("redis_error" if getattr(report, "redis_error", "") else "ok")
    _safely("sweep_runs", lambda m: m.labels(outcome).inc())
    if report is None:
        return
    repairs = {
        "recovered_leases": report.recovered_leases,
        "released_holds": report.released_holds,
        "drains_requested": len(report.drains_requested),
        "webhooks_processed": webhooks_processed,
    }
    for what, n in repairs.items():
        if n:
            _safely("sweep_repairs", lambda m, what=what, n=n: m.labels(what).inc(n))


def balance_event(account: str, kind: str) -> None:
    _safely("balance_events", lambda m: m.labels(account, kind).inc())


class DatabaseCollector:
    """At scrape time: open earnings by account and state, the oldest due earning's age, paused accounts. One
    grouped query over the open states (the due index covers it) and one over the accounts' switches."""

    def collect(self) -> Iterator[Any]:
        if GaugeMetricFamily is None or not available():
            return
        try:
            rows, paused = _read_database()
        except Exception:  # the database is down: the scrape shows the process's counters, not an error page
            log.exception("metrics: the database could not be read")
            return
        earnings = GaugeMetricFamily(
            f"{PREFIX}_earnings", "Open earnings, by account and state.", labels=["account", "status"]
        )
        oldest = GaugeMetricFamily(
            f"{PREFIX}_oldest_due_seconds", "Age of the oldest due queued earning, per account.", labels=["account"]
        )
        now = time.time()
        for account, status, count, first_due in rows:
            earnings.add_metric([account, status], count)
            if status == "queued" and first_due is not None:
                oldest.add_metric([account], max(0.0, now - first_due.timestamp()))
        paused_gauge = GaugeMetricFamily(
            f"{PREFIX}_account_paused", "1 while the account is paused (the platform refused it).", labels=["account"]
        )
        for account in paused:
            paused_gauge.add_metric([account], 1)
        total = GaugeMetricFamily(f"{PREFIX}_paused_accounts", "Accounts paused, waiting for a person.")
        total.add_metric([], len(paused))
        yield from (earnings, oldest, paused_gauge, total)

    def describe(self) -> list[Any]:
        return []  # no query at registration time


def _read_database() -> tuple[list[tuple[str, str, int, Any]], list[str]]:
    from django.db.models import Count, Min
    from django.utils import timezone

    from .models import AccountState, EarningRecord

    now = timezone.now()
    grouped = (
        EarningRecord.objects.filter(status__in=OPEN_STATES)
        .values_list("account", "status")
        .annotate(n=Count("id"), due=Min("next_attempt_at"))
        .order_by()
    )
    rows = [(a, s, n, due if due is not None and due <= now else None) for a, s, n, due in grouped]
    paused = list(AccountState.objects.filter(paused=True).values_list("account", flat=True))
    return rows, paused


_COLLECTOR = DatabaseCollector()
_registered = False


def register_collector() -> None:
    """Add the database collector to the default registry once (django-prometheus's /metrics then shows it when
    it serves a single process; in multiprocess mode our own view does)."""
    global _registered
    if prom is None or _registered or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    try:
        prom.REGISTRY.register(_COLLECTOR)
        _registered = True
    except Exception:
        log.exception("metrics: the database collector could not be registered")


def exposition() -> tuple[bytes, str]:
    """The text a scrape gets: every process's counters (merged from PROMETHEUS_MULTIPROC_DIR when it is set,
    else this process's) and the database's gauges."""
    if prom is None:
        raise RuntimeError("prometheus_client is not installed")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(_COLLECTOR)
        return prom.generate_latest(registry), prom.CONTENT_TYPE_LATEST
    register_collector()
    return prom.generate_latest(prom.REGISTRY), prom.CONTENT_TYPE_LATEST
