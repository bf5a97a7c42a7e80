"""Issue 16.3: the earning page counts the calls it shows, and a refund's attempt says what it did."""

import re

import pytest

from django_points_earn.models import EarningRecord
from django_points_earn.signals import order_refunded
from tests.admin_helpers import page
from tests.conftest import settle
from tests.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)


def summary_value(text: str, label: str) -> str:
    found = re.search(rf"<dt>{label}</dt><dd>(?:<span class=\"pe-ltr\">)?([^<]*)", text)
    assert found, f"no {label!r} in the earning's summary"
    return found.group(1)


def test_awarded_earning_with_a_refund_counts_its_calls_and_names_the_refund(admin_client, place_order, points_api):
    order = place_order("SO-ATT", lines=[("Dates", "100.00", 1)])
    settle()
    order_refunded.send(sender=Order, order=order, amount=None, reason="returned", refund_id="RMA-9")
    settle()
    record = EarningRecord.objects.get(order_number="SO-ATT")
    assert record.attempt_set.count() == 2  # the earn, then the refund
    text = admin_client.get(page(record)).content.decode()
    assert summary_value(text, "Attempts") == "2"  # was "0": the failed-attempts budget, not the calls made
    assert summary_value(text, "Failed attempts") == "0"
    rows = text.split('id="pe-attempts"')[1].split("</table>")[0].split('class="pe-attempt"')[1:]
    assert len(rows) == 2
    assert "awarded" in rows[0] and "points taken back" not in rows[0]
    assert "points taken back" in rows[1] and ">awarded<" not in rows[1]  # the refund did not award anything
    assert "RMA-9" in rows[1]  # and says which refund it was


def test_the_list_names_its_count_failed_attempts(admin_client, place_order, points_api):
    place_order("SO-ATT2")
    settle()
    text = admin_client.get("/admin/django_points_earn/earningrecord/").content.decode()
    assert "Failed attempts" in text and "column-failed_attempts" in text
    assert ">Attempts<" not in text  # an awarded earning's 0 no longer reads as "no call was made"
