"""The shop's own Order admin with ``EarningForOrderMixin`` (issue 17, item 3): each order's earning state (linked
to its earning page), points and attempts, read for a whole list page in one query."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import formats, timezone

from django_points_earn.admin_tools import EarningForOrderMixin
from django_points_earn.models import EarningRecord, Status
from tests.conftest import settle
from tests.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)
EARNINGS_TABLE = EarningRecord._meta.db_table


def orders_with_earnings(count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        Order.objects.create(number=f"SO-{i:03d}", phone="0512345678", account="main", paid=True)
        EarningRecord.objects.create(
            account="main",
            provider="points",
            order_number=f"SO-{i:03d}",
            status=Status.AWARDED if i % 2 else Status.FAILED,
            points=Decimal(i * 10) if i % 2 else None,
            attempts=0 if i % 2 else 5,
        )


def list_page(client, **params):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("admin:shop_order_changelist"), params)
    assert response.status_code == 200
    return response, [q["sql"] for q in queries.captured_queries if EARNINGS_TABLE in q["sql"]]


def test_the_test_shop_uses_the_mixin():
    assert isinstance(admin.site._registry[Order], EarningForOrderMixin)


def test_a_list_page_of_20_orders_reads_their_earnings_in_one_query(admin_client):
    orders_with_earnings(45)
    response, earning_queries = list_page(admin_client)
    assert len(earning_queries) == 1  # not one per row
    html = response.content.decode()
    assert html.count('class="pe-badge"') == 20
    shown = EarningRecord.objects.get(order_number="SO-044")  # newest first: the page shows 44 .. 25
    assert f'href="{reverse("admin:django_points_earn_earningrecord_change", args=[shown.pk])}"' in html
    assert '<td class="field-points_earning_points">430</td>' in html  # SO-043 awarded 430 points
    assert '<td class="field-points_earning_attempts">5</td>' in html  # SO-044 failed after 5 attempts
    assert html.count('data-state="failed"') == 10

    _, on_page_3 = list_page(admin_client, p=2)  # the last page (5 orders): still one query
    assert len(on_page_3) == 1


def test_the_number_of_queries_does_not_grow_with_the_orders(admin_client):
    orders_with_earnings(5)
    with CaptureQueriesContext(connection) as few:
        admin_client.get(reverse("admin:shop_order_changelist"))
    orders_with_earnings(15, start=5)
    with CaptureQueriesContext(connection) as twenty:
        admin_client.get(reverse("admin:shop_order_changelist"))
    assert len(twenty) == len(few)


def test_an_order_without_an_earning_shows_a_dash(admin_client):
    Order.objects.create(number="SO-NEW", phone="0512345678", account="main")
    response, earning_queries = list_page(admin_client)
    assert len(earning_queries) == 1
    assert '<td class="field-points_earning">—</td>' in response.content.decode()


def test_the_orders_page_shows_its_earning_read_only(admin_client, place_order, points_api):
    order = place_order("SO-PAGE", lines=[("Abaya", "37.00", 1)])
    settle()
    record = EarningRecord.objects.get()
    response = admin_client.get(reverse("admin:shop_order_change", args=[order.pk]))
    html = response.content.decode()
    assert response.status_code == 200
    assert 'data-state="awarded"' in html and "370 points" in html and "0 attempts" in html
    assert reverse("admin:django_points_earn_earningrecord_change", args=[record.pk]) in html
    assert 'name="points_earning_summary"' not in html  # read only: no input
    response = admin_client.get(reverse("admin:shop_order_change", args=[order.pk]), HTTP_ACCEPT_LANGUAGE="ar")
    assert "مُنحت" in response.content.decode()


def test_the_columns_stay_where_the_shop_put_them():
    class Placed(EarningForOrderMixin, admin.ModelAdmin):
        list_display = ["number", "points_earning", "phone"]
        points_earning_columns = ("points_earning",)

    placed = Placed(Order, admin.site)
    assert placed.get_list_display(None) == ["number", "points_earning", "phone"]


def test_a_held_earning_shows_when_it_is_sent(admin_client, place_order, settings):
    import copy

    from django.test import override_settings

    points_earn = copy.deepcopy(settings.POINTS_EARN)
    points_earn["ACCOUNTS"]["main"]["HOLD"] = {"DAYS": 14}
    with override_settings(POINTS_EARN=points_earn):
        place_order("SO-HELD")
    record = EarningRecord.objects.get()
    response, earning_queries = list_page(admin_client)
    assert len(earning_queries) == 1
    html = response.content.decode()
    assert 'data-state="held"' in html
    assert formats.date_format(timezone.localtime(record.send_after), "SHORT_DATETIME_FORMAT") in html
