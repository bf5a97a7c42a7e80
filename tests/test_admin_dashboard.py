"""The reconciliation dashboard: where it is linked, what it counts, its chart, its cost in queries, its Arabic."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from django_points_earn.admin_tools import chart, stats
from django_points_earn.models import EarningAttempt, EarningRecord
from tests.admin_helpers import DASHBOARD, earning, make_blocked, make_failed, staff
from tests.conftest import settle

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def shop(place_order, points_api):
    points_api.script("429")
    for n in range(4):
        place_order(f"SO-{n}")
    place_order("SO-REJ", phone="bad")
    make_failed(earning(place_order("SO-FAIL")))
    make_blocked(earning(place_order("SO-BLOCK", account="branch")))
    settle()
    place_order("SO-WAITING")  # queued: no worker runs after it
    return points_api


def test_linked_from_the_app_index_for_anyone_who_may_see_earnings(client, django_user_model, shop):
    client.force_login(staff(django_user_model, "viewer"))
    for index in ("/admin/", "/admin/django_points_earn/"):
        assert f'href="{DASHBOARD}"' in client.get(index).content.decode()
    assert client.get(DASHBOARD).status_code == 200
    client.force_login(django_user_model.objects.create_user("outsider", password="pw", is_staff=True))
    assert client.get(DASHBOARD).status_code == 403


def test_counts_queue_chart_latency_and_paused_accounts(admin_client, shop):
    response = admin_client.get(DASHBOARD)
    data = response.context["data"]
    by_account = {row["account"]: dict(row["counts"]) for row in data.by_account}
    assert by_account["main"]["awarded"] == 4
    assert by_account["main"]["rejected"] == 1 and by_account["main"]["failed"] == 1
    assert by_account["main"]["queued"] == 1
    assert by_account["branch"]["blocked"] == 1
    assert {r.order_number for r in data.attention} == {"SO-REJ", "SO-FAIL", "SO-BLOCK"}
    assert data.attention_total == 3
    assert data.oldest_queued == EarningRecord.objects.get(order_number="SO-WAITING").created_at
    assert sum(n for _, n in data.hourly) == 4 and len(data.hourly) == 24
    assert data.hourly[-1][1] == 4  # this hour, last
    assert [s.account for s in data.paused] == ["branch"]

    attempts = data.attempts
    real = list(EarningAttempt.objects.values_list("outcome", flat=True))
    assert attempts.count == len(real)
    assert attempts.rate_limited_rate == pytest.approx(real.count("rate_limited") / len(real))
    assert attempts.error_rate == pytest.approx((real.count("unavailable") + real.count("unauthorized")) / len(real))
    assert attempts.p50_ms is not None and attempts.p95_ms >= attempts.p50_ms

    text = response.content.decode()
    assert text.count('class="pe-bar"') == 24
    assert 'id="pe-reconcile"' in text and "/resume/branch/" in text
    assert "SO-FAIL" in text and "Points answered HTTP 503" in text


def test_dashboard_queries_are_bounded(admin_client, shop, place_order, django_assert_max_num_queries):
    for n in range(40):
        place_order(f"SO-MORE-{n}")
    with django_assert_max_num_queries(12):
        assert admin_client.get(DASHBOARD).status_code == 200


def test_recent_attempts_are_a_bounded_window(shop, monkeypatch):
    monkeypatch.setattr(stats, "ATTEMPT_SAMPLE", 3)
    assert stats.attempt_stats(timezone.now()).count == 3
    EarningAttempt.objects.update(started_at=timezone.now() - timedelta(hours=2))
    assert stats.attempt_stats(timezone.now()).count == 0  # older than the window


def test_dashboard_in_arabic_is_right_to_left(admin_client, shop):
    text = admin_client.get(DASHBOARD, HTTP_ACCEPT_LANGUAGE="ar").content.decode()
    assert re.search(r'<html lang="ar" dir="rtl"', text)
    assert "لوحة المطابقة" in text  # "Reconciliation dashboard"
    assert "تشغيل المطابقة الآن" in text  # "Run reconcile now"


def test_percentiles_and_the_chart_scale():
    assert stats.percentile([], 0.5) is None
    assert stats.percentile([10, 20, 30, 40], 0.5) == 20
    assert stats.percentile(list(range(1, 101)), 0.95) == 95
    assert [chart.nice_ceiling(n) for n in (0, 1, 3, 7, 12, 180, 501)] == [1, 1, 5, 10, 20, 200, 1000]


def test_chart_mirrors_in_right_to_left():
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    series = [(now - timedelta(hours=23 - i), i) for i in range(24)]

    def first_and_last_x(svg: str) -> tuple[float, float]:
        xs = [float(x) for x in re.findall(r'<rect x="([\d.]+)"', svg)]
        return xs[0], xs[-1]

    first, last = first_and_last_x(chart.hourly_bars(series))
    assert first < last  # oldest on the left
    first, last = first_and_last_x(chart.hourly_bars(series, rtl=True))
    assert first > last  # oldest on the right
    assert "<script" not in chart.hourly_bars(series) and "http://" not in chart.hourly_bars(series).replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
