"""``make demo``'s operations part: the Points sandbox sends a low-balance webhook (the admin's dashboard then shows
the balance banner), and the shop's metrics are scraped with the workers running (when prometheus_client is
installed). Used by ``demo.py`` after the earnings have settled."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from typing import Any

WEBHOOK_URL = "/loyalty/webhooks/points/main/"
METRICS_URL = "/loyalty/metrics/"


def shop_client() -> Any:
    """The shop's own URLs, called in this process as a web server would (the demo runs no web server)."""
    from django.test import Client

    return Client(HTTP_HOST="127.0.0.1")


def low_balance_banner(sandbox_url: str, merchant: str, secret: str, timeout: float = 30.0) -> str:
    """Ask the sandbox for a ``low_balance_warning``, deliver it to the shop's webhook view as Points would, and wait
    for a worker to apply it. Returns what the dashboard's banner says."""
    from django_points_earn.merchant_alerts import describe
    from django_points_earn.models import MerchantAlert

    _post(
        f"{sandbox_url}/__sandbox__/balance",
        {"event": "low_balance_warning", "merchant": merchant, "current_balance": 150, "order_points": 400},
    )
    with urllib.request.urlopen(f"{sandbox_url}/__sandbox__/events?since=0", timeout=5) as answer:  # noqa: S310
        events = json.load(answer)["events"]
    payload = [e for e in events if e["event"] == "low_balance_warning"][-1]["payload"]
    answer = shop_client().post(
        WEBHOOK_URL,
        data=json.dumps(payload),
        content_type="application/json",
        headers={"X-Webhook-Secret": secret, "X-Webhook-Event": payload["event"]},
    )
    if answer.status_code != 200:
        raise RuntimeError(f"the shop's webhook view answered {answer.status_code}: {answer.content[:200]!r}")
    deadline = time.monotonic() + timeout
    while (alert := MerchantAlert.objects.filter(account="main", resolved_at__isnull=True).first()) is None:
        if time.monotonic() > deadline:
            raise RuntimeError("no worker applied the low_balance_warning webhook within 30s")
        time.sleep(0.2)
    return f"account main: {alert.get_kind_display()} ({describe(alert)})"


def scrape(token: str) -> dict[str, float] | None:
    """The shop's /loyalty/metrics/ as Prometheus would scrape it; None without prometheus_client."""
    from django_points_earn import metrics

    if not metrics.available():
        return None
    from prometheus_client.parser import text_string_to_metric_families

    answer = shop_client().get(METRICS_URL, headers={"Authorization": f"Bearer {token}"})
    if answer.status_code != 200:
        raise RuntimeError(f"the metrics view answered {answer.status_code}")
    calls: Counter[str] = Counter()
    for family in text_string_to_metric_families(answer.content.decode()):
        for sample in family.samples:
            if sample.name == "points_earn_calls_total":
                labels = sample.labels
                calls[f"{labels['platform']} {labels['kind']} {labels['outcome']}"] += sample.value
            elif sample.name == "points_earn_sweep_runs_total":
                calls["sweeps"] += sample.value
    return dict(calls)


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(  # noqa: S310 - our own sandbox on a loopback port
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5):  # noqa: S310
        pass
