"""Issue 18, item 3: Prometheus metrics through the optional prometheus_client. Counted at the seams (a call's
answer recorded, a webhook answered and applied, a sweep), read from the database at scrape time (open earnings,
the oldest due one, paused accounts), merged across RQ's forked work horses in multiprocess mode, and a no-op
without prometheus_client."""

import json
import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from django_points_earn import lifecycle, metrics
from django_points_earn.conf import clear_cache
from django_points_earn.models import EarningRecord, Status
from django_points_earn.reconcile import sweep
from tests.admin_helpers import staff
from tests.conftest import ROOT, settle, start_worker, worker_env
from tests.test_points_flow import URL

pytestmark = pytest.mark.django_db(transaction=True)
SCRAPE = "/loyalty/metrics/"
TOKEN = "scrape-token-7fQx2Lm9"


@pytest.fixture
def token(settings):
    settings.POINTS_EARN = {**settings.POINTS_EARN, "METRICS": {"TOKEN": TOKEN}}
    clear_cache()
    yield TOKEN
    clear_cache()


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(client, token: str) -> dict[tuple[str, tuple], float]:
    answer = client.get(SCRAPE, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.content
    assert answer["Content-Type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.content.decode())
        for s in family.samples
    }


def call_labels(outcome: str, status: str) -> dict[str, str]:
    return {"platform": "points", "account": "main", "kind": "earning", "outcome": outcome, "http_status": status}


def test_a_drain_counts_its_calls_and_the_scrape_reads_the_database(place_order, points_api, client, token):
    awarded = sample("points_earn_calls_total", **call_labels("awarded", "200"))
    refused = sample("points_earn_calls_total", **call_labels("rejected", "400"))
    timed = sample("points_earn_call_duration_seconds_count", platform="points", account="main", kind="earning")
    points_api.script("ok", "400")  # the second call is refused (a 400 that is not the key error)
    place_order("SO-M1")
    place_order("SO-M2")
    settle()
    assert sorted(EarningRecord.objects.values_list("status", flat=True)) == [Status.AWARDED, Status.REJECTED]

    got = scraped(client, token)
    key = tuple(sorted(call_labels("awarded", "200").items()))
    assert got[("points_earn_calls_total", key)] == awarded + 1
    assert got[("points_earn_calls_total", tuple(sorted(call_labels("rejected", "400").items())))] == refused + 1
    labels = (("account", "main"), ("kind", "earning"), ("platform", "points"))
    assert got[("points_earn_call_duration_seconds_count", labels)] == timed + 2
    # From the database at scrape time: the open states only (awarded ones are counted by calls_total)
    assert got[("points_earn_earnings", (("account", "main"), ("status", "rejected")))] == 1
    assert ("points_earn_earnings", (("account", "main"), ("status", "awarded"))) not in got
    assert got[("points_earn_paused_accounts", ())] == 0


def test_the_oldest_due_earning_and_a_paused_account_are_gauges(place_order, points_api, client, token):
    points_api.forbid("main", "Merchant is not allowed to create earning orders")
    place_order("SO-M3")
    settle()
    before = scraped(client, token)
    assert before[("points_earn_paused_accounts", ())] == 1
    assert before[("points_earn_account_paused", (("account", "main"),))] == 1
    assert not [k for k in before if k[0] == "points_earn_oldest_due_seconds"]
    forbidden = tuple(sorted(call_labels("forbidden", "403").items()))
    assert before[("points_earn_calls_total", forbidden)] >= 1

    record = EarningRecord.objects.get()
    EarningRecord.objects.filter(pk=record.pk).update(
        status=Status.QUEUED, next_attempt_at=timezone.now() - timedelta(minutes=10)
    )
    after = scraped(client, token)
    assert 600 <= after[("points_earn_oldest_due_seconds", (("account", "main"),))] < 700
    assert after[("points_earn_earnings", (("account", "main"), ("status", "queued")))] == 1


def test_webhooks_are_counted_by_our_answer_and_by_what_applying_them_came_to(client, points_api, place_order):
    headers = {"X-Webhook-Secret": settings.POINTS_WEBHOOK_SECRET}
    refused = sample("points_earn_webhook_requests_total", account="main", http_status="403")
    unknown = sample("points_earn_webhook_requests_total", account="unknown", http_status="403")
    ignored = sample("points_earn_webhook_deliveries_total", account="main", result="ignored")
    body = json.dumps({"event": "shipping_status_updated", "order": {"id": "x", "order_number": "SO-404"}})
    assert client.post(URL, data=body, content_type="application/json").status_code == 403
    assert (
        client.post("/loyalty/webhooks/points/nobody/", data=body, content_type="application/json").status_code == 403
    )
    assert client.post(URL, data=body, content_type="application/json", headers=headers).status_code == 200
    settle()
    assert sample("points_earn_webhook_requests_total", account="main", http_status="403") == refused + 1
    # An outsider's account names are not labels: one series however many they try
    assert sample("points_earn_webhook_requests_total", account="unknown", http_status="403") == unknown + 1
    assert sample("points_earn_webhook_deliveries_total", account="main", result="ignored") == ignored + 1


def test_sweeps_and_their_repairs_are_counted(place_order, points_api):
    runs = sample("points_earn_sweep_runs_total", outcome="ok")
    recovered = sample("points_earn_sweep_repairs_total", what="recovered_leases")
    place_order("SO-M4")
    record = EarningRecord.objects.get()
    claimed = lifecycle.claim(record.pk, lease_seconds=30)
    EarningRecord.objects.filter(pk=claimed.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert sweep().recovered_leases == 1
    assert sample("points_earn_sweep_runs_total", outcome="ok") == runs + 1
    assert sample("points_earn_sweep_repairs_total", what="recovered_leases") == recovered + 1


def test_a_failing_metric_never_breaks_a_call_or_a_drain(place_order, points_api, monkeypatch):
    class Broken:
        def labels(self, *args):
            raise ValueError("the metrics backend fails")

    monkeypatch.setitem(metrics._METRICS, "calls", Broken())
    monkeypatch.setitem(metrics._METRICS, "latency", Broken())
    place_order("SO-M5")
    settle()
    assert EarningRecord.objects.get().status == Status.AWARDED


def test_the_scrape_needs_the_token_or_the_permission(client, token, django_user_model):
    assert client.get(SCRAPE).status_code == 403
    assert client.get(SCRAPE, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get(SCRAPE, headers={"Authorization": TOKEN}).status_code == 403  # not a bearer header
    assert client.post(SCRAPE, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 405
    nobody = django_user_model.objects.create_user("nobody", "n@example.com", "pw", is_staff=True)
    client.force_login(nobody)
    assert client.get(SCRAPE).status_code == 403
    client.force_login(staff(django_user_model, "ops"))  # view_earningrecord
    assert client.get(SCRAPE).status_code == 200


def test_metrics_can_be_turned_off(client, settings):
    settings.POINTS_EARN = {**settings.POINTS_EARN, "METRICS": {"ENABLED": False, "TOKEN": TOKEN}}
    clear_cache()
    try:
        answer = client.get(SCRAPE, headers={"Authorization": f"Bearer {TOKEN}"})
        assert answer.status_code == 404 and b"metrics are off" in answer.content
    finally:
        clear_cache()


_WITHOUT_PROMETHEUS = """
import sys
sys.modules["prometheus_client"] = None  # as if the extra were not installed: importing it raises ImportError
import django
django.setup()
from django.conf import settings
settings.POINTS_EARN = {**settings.POINTS_EARN, "METRICS": {"TOKEN": "%s"}}
from django_points_earn.conf import clear_cache
clear_cache()
from django.test import RequestFactory
from django_points_earn import metrics
from django_points_earn.metrics_view import scrape
assert metrics.prom is None and not metrics.available()
metrics.call("main", "earning", "awarded", 200, 12)
metrics.webhook_request("main", 200)
metrics.webhook_delivery("main", "ignored: nothing")
metrics.sweep(None, error=True)
metrics.balance_event("main", "low_balance_warning")
assert list(metrics.DatabaseCollector().collect()) == []
metrics.register_collector()
answer = scrape(RequestFactory().get("/loyalty/metrics/", HTTP_AUTHORIZATION="Bearer %s"))
print(answer.status_code, answer.content.decode().split(":")[0])
"""


def test_without_prometheus_client_every_metric_is_a_no_op():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PROMETHEUS % (TOKEN, TOKEN)], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "404 metrics are off"


@pytest.mark.slow
def test_a_scrape_merges_what_forked_workers_counted(place_order, sandbox, sandbox_server, client, token, tmp_path):
    """RQ's work horses are forked processes: with PROMETHEUS_MULTIPROC_DIR each writes its own files, and the
    scrape (here, in this process) merges them with the database's gauges."""
    env = worker_env(POINTS_BASE_URL=sandbox_server.points_base_url, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    worker = start_worker(name=f"metrics-{time.monotonic_ns()}", env=env)
    try:
        place_order("SO-MP1")
        place_order("SO-MP2")
        deadline = time.monotonic() + 60
        while EarningRecord.objects.filter(status=Status.AWARDED).count() < 2:
            assert time.monotonic() < deadline, "the worker did not award both"
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(30)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    try:
        got = scraped(client, token)
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    assert list(tmp_path.glob("counter_*.db"))  # written by the worker's processes, not this one
    assert got[("points_earn_calls_total", tuple(sorted(call_labels("awarded", "200").items())))] == 2
    assert got[("points_earn_sweep_runs_total", (("outcome", "ok"),))] >= 1
    assert got[("points_earn_paused_accounts", ())] == 0


def test_the_default_registry_shows_the_database_gauges_as_django_prometheus_would_scrape_it(place_order, points_api):
    """django-prometheus's /metrics is generate_latest(REGISTRY): the app registered its collector at startup."""
    from prometheus_client import generate_latest

    place_order("SO-M6")  # queued, not sent
    text = generate_latest(REGISTRY).decode()
    assert 'points_earn_earnings{account="main",status="queued"} 1.0' in text
    assert "points_earn_paused_accounts 0.0" in text
