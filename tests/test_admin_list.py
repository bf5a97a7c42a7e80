"""The earnings list and the earning page: what a support agent sees, finds and filters, in bounded queries."""

from datetime import timedelta

import pytest
from django.contrib import admin
from django.utils import timezone

from django_points_earn.admin_tools import paginator
from django_points_earn.models import EarningRecord
from tests.admin_helpers import CHANGELIST, earning, make_blocked, make_failed, page
from tests.conftest import run_worker

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def mixed(place_order, points_api):
    """One earning in each state an agent meets most."""
    orders = {
        "awarded": place_order("SO-AWARD", phone="0551112223"),
        "pending": place_order("SO-PEND", phone="0500000003"),
        "failed": place_order("SO-FAIL", phone="0553334445"),
        "blocked": place_order("SO-BLOCK", phone="0556667778", account="branch"),
        "rejected": place_order("SO-REJ", phone="12345"),
    }
    make_failed(earning(orders["failed"]))
    make_blocked(earning(orders["blocked"]))
    run_worker()
    return {name: earning(order) for name, order in orders.items()}


def listed(client, query: str = "") -> set[str]:
    response = client.get(CHANGELIST + query)
    assert response.status_code == 200
    return {r.order_number for r in response.context["cl"].result_list}


def test_list_shows_badges_masked_phones_attempts_and_last_error(admin_client, mixed):
    text = admin_client.get(CHANGELIST).content.decode()
    assert 'class="pe-badge" data-state="failed"' in text and 'data-state="awarded"' in text
    assert "5*****223" in text and "551112223" not in text
    assert "Points answered HTTP 503" in text  # the failed one's last error, on one line
    assert "Points refused the API key" in text
    assert "too short (5 digits)" in text


@pytest.mark.parametrize(
    "query,expected",
    [
        ("?status__exact=failed", {"SO-FAIL"}),
        ("?attention=yes", {"SO-FAIL", "SO-BLOCK", "SO-REJ"}),
        ("?account=branch", {"SO-BLOCK"}),
        ("?platform=points", {"SO-AWARD", "SO-PEND", "SO-FAIL", "SO-BLOCK", "SO-REJ"}),
        ("?platform=fabric", set()),
    ],
)
def test_filters(admin_client, mixed, query, expected):
    assert listed(admin_client, query) == expected


def test_stuck_earnings_need_attention(admin_client, place_order):
    record = earning(place_order("SO-STUCK"))  # no worker: it stays queued
    assert listed(admin_client, "?attention=stuck") == set()
    EarningRecord.objects.filter(pk=record.pk).update(next_attempt_at=timezone.now() - timedelta(hours=2))
    assert listed(admin_client, "?attention=stuck") == {"SO-STUCK"}
    assert "SO-STUCK" in listed(admin_client, "?attention=yes")


@pytest.mark.parametrize(
    "term",
    [
        "0551112223",
        "+966 55 111 2223",
        "00966551112223",
        "551112223",
        "(055) 111-2223",
        "\u0660\u0665\u0665\u0661\u0661\u0661\u0662\u0662\u0662\u0663",
    ],
)
def test_search_by_phone_in_any_form(admin_client, mixed, term):
    assert listed(admin_client, f"?q={term}".replace("+", "%2B")) == {"SO-AWARD"}


def test_search_by_order_number_platform_uuid_and_reference(admin_client, mixed):
    awarded = mixed["awarded"]
    assert awarded.remote_id and awarded.remote_reference
    assert listed(admin_client, "?q=SO-FAIL") == {"SO-FAIL"}
    assert listed(admin_client, f"?q={awarded.remote_id}") == {"SO-AWARD"}
    assert listed(admin_client, f"?q={awarded.remote_reference}") == {"SO-AWARD"}
    assert listed(admin_client, "?q=nothing-like-it") == set()


def test_the_list_never_counts_the_whole_table(admin_client, place_order, monkeypatch, django_assert_max_num_queries):
    monkeypatch.setattr(paginator, "COUNT_LIMIT", 5)
    monkeypatch.setattr(paginator, "PAGES_AHEAD", 0)
    monkeypatch.setattr(admin.site._registry[EarningRecord], "list_per_page", 2)
    for n in range(8):
        place_order(f"SO-{n}")
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        text = admin_client.get(CHANGELIST).content.decode()
    assert "More than 5 earnings" in text
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"].upper()]
    assert counts and all("LIMIT" in sql.upper() for sql in counts), counts  # every count is capped


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?status__exact=failed",
        "?attention=yes",
        "?attention=stuck",
        "?account=main&platform=points",
        "?q=0551112223",
        "?q=SO-FAIL",
        "?created_at__gte=2020-01-01+00:00:00%2B03:00",
        "?p=2",
    ],
)
def test_list_queries_are_few_and_do_not_grow_with_rows(
    admin_client, mixed, place_order, django_assert_max_num_queries, query
):
    for n in range(30):
        place_order(f"SO-MORE-{n}")
    with django_assert_max_num_queries(8):
        assert admin_client.get(CHANGELIST + query).status_code == 200


def test_earning_page_shows_the_whole_story_read_only(admin_client, mixed, django_assert_max_num_queries):
    failed = mixed["failed"]
    with django_assert_max_num_queries(10):
        text = admin_client.get(page(failed)).content.decode()
    assert text.count('class="pe-attempt"') == 5  # every attempt on the timeline
    assert "503" in text and "Points answered HTTP 503" in text
    assert "&quot;phone_number&quot;: &quot;5*****445&quot;" in text  # pretty JSON, phone masked
    assert "failed" in text and "Worker" in text
    assert "<form" not in text.split('id="content-main"')[1].split("</div>")[0]  # nothing to edit

    awarded = mixed["awarded"]
    text = admin_client.get(page(awarded)).content.decode()
    assert awarded.remote_id in text and awarded.remote_reference in text
    assert "total_points" in text  # the platform's answer, pretty-printed
    assert admin_client.get(f"{CHANGELIST}{awarded.pk}/delete/").status_code == 403
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
