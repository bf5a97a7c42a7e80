"""What the customer sees of an order's points (issue 17, item 2): ``api.earning_for`` in each state, in one query,
and the ``{% points_for_order %}`` tag in English and Arabic."""

from __future__ import annotations

import copy
import json
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.checks import run_checks
from django.template import Context, Template
from django.test import override_settings
from django.utils import formats, timezone, translation

from django_points_earn import api
from django_points_earn.models import EarningRecord, Kind, Reversal, ReversalStatus, Status
from django_points_earn.signals import order_refunded
from tests.conftest import settle
from tests.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)

TAG = Template("{% load points_earn %}{% points_for_order order %}")


def with_rate(rate, **account):
    """The test settings with ``EARNING_RATE`` (and any other ``account`` keys) on the main account."""
    points_earn = copy.deepcopy(settings.POINTS_EARN)
    points_earn["ACCOUNTS"]["main"].update(EARNING_RATE=rate, **account)
    return override_settings(POINTS_EARN=points_earn)


def order_in(status: str, number: str = "SO-1", *, points=None, total="37.00", **fields) -> Order:
    """An order of the test shop and its earning, as the machine leaves it in ``status``."""
    order = Order.objects.create(number=number, phone="0512345678", account="main", paid=True)
    EarningRecord.objects.create(
        account="main",
        provider="points",
        order_number=number,
        status=status,
        points=points,
        total=Decimal(total),
        **fields,
    )
    return order


def render(order, language="en") -> str:
    with translation.override(language):
        return " ".join(TAG.render(Context({"order": order})).split())


@pytest.mark.parametrize(
    ("status", "state", "delayed"),
    [
        (Status.QUEUED, "on_the_way", False),
        (Status.SENDING, "on_the_way", False),
        (Status.ACCEPTED, "on_the_way", False),
        (Status.REJECTED, "on_the_way", True),
        (Status.BLOCKED, "on_the_way", True),
        (Status.FAILED, "on_the_way", True),
        (Status.PENDING_ACTIVATION, "pending_activation", False),
        (Status.AWARDED, "earned", False),
        (Status.PARTIALLY_REVERSED, "partly_taken_back", False),
        (Status.REVERSED, "taken_back", False),
        (Status.SKIPPED, "none", False),
        (Status.CANCELLED, "none", False),
        (Status.RESOLVED, "none", False),
        (Status.HELD, "held_until", False),
        ("a_state_added_later", "none", False),  # never a promise the mapping was not taught
    ],
)
def test_each_state_of_an_earning_as_the_customer_sees_it(status, state, delayed, django_assert_num_queries):
    points = Decimal("370") if state in ("earned", "partly_taken_back", "taken_back") else None
    order = order_in(status, points=points)
    with django_assert_num_queries(1):
        summary = api.earning_for(order)
    assert summary["state"] == state
    assert summary["delayed"] is delayed
    assert summary["points"] == (370 if points else None)
    assert summary["points_estimated"] is False
    assert summary["platform"] == "points" and summary["platform_label"] == "Points"
    assert summary["order_number"] == "SO-1"
    assert json.loads(json.dumps(summary)) == summary  # JSON types only


def test_an_order_without_an_earning_is_none_in_one_query(django_assert_num_queries):
    order = Order.objects.create(number="SO-NONE", phone="0512345678", account="main")
    with django_assert_num_queries(1):
        summary = api.earning_for(order)
    assert summary == {
        "state": "none",
        "points": None,
        "points_estimated": False,
        "points_taken_back": None,
        "platform": "points",
        "platform_label": "Points",
        "order_number": "SO-NONE",
        "held_until": None,
        "delayed": False,
        "updated_at": None,
    }
    assert render(order) == ""


def test_before_the_platform_answers_a_number_only_with_an_earning_rate():
    order = order_in(Status.QUEUED, total="37.95")
    assert api.earning_for(order)["points"] is None
    assert render(order) == (
        '<p class="points-earn points-earn-on_the_way" data-state="on_the_way"> Loyalty points on the way </p>'
    )
    with with_rate(10):
        summary = api.earning_for(order)
        assert (summary["points"], summary["points_estimated"]) == (379, True)  # whole points, rounded down
        assert "Loyalty points on the way: about 379" in render(order)
        assert "نقاط الولاء في الطريق إليك: حوالي 379" in render(order, "ar")
    with with_rate("2.5"):
        assert api.earning_for(order)["points"] == 94


def test_the_platforms_figure_wins_over_the_estimate():
    order = order_in(Status.AWARDED, points=Decimal("1200"), total="120.00")
    with with_rate(3):
        summary = api.earning_for(order)
    assert (summary["points"], summary["points_estimated"]) == (1200, False)
    assert "Loyalty points earned: 1,200" in render(order)


@pytest.mark.parametrize("bad", [0, -1, "ten", float("nan"), True, [10]])
def test_a_bad_earning_rate_is_named_by_the_checks_and_shows_no_number(bad):
    order = order_in(Status.QUEUED)
    with with_rate(bad):
        errors = [e for e in run_checks(tags=["points_earn"]) if e.id == "points_earn.E014"]
        assert len(errors) == 1
        assert 'POINTS_EARN["ACCOUNTS"]["main"]["EARNING_RATE"]' in errors[0].msg
        assert api.earning_for(order)["points"] is None


def test_a_good_earning_rate_passes_the_checks():
    with with_rate("12.5"):
        assert [e for e in run_checks(tags=["points_earn"]) if e.id == "points_earn.E014"] == []


def test_earnings_for_a_page_of_orders_is_one_query(django_assert_num_queries):
    orders = [order_in(Status.AWARDED, f"SO-{i}", points=Decimal(i * 10)) for i in range(1, 21)]
    orders.append(Order.objects.create(number="SO-NO-EARNING", phone="0512345678", account="branch"))
    with django_assert_num_queries(1):
        summaries = api.earnings_for(orders)
    assert [s["points"] for s in summaries[:20]] == [i * 10 for i in range(1, 21)]
    assert summaries[20]["state"] == "none" and summaries[20]["order_number"] == "SO-NO-EARNING"
    html = Template("{% load points_earn %}{% for s in summaries %}{% points_for_order s %}{% endfor %}")
    with django_assert_num_queries(0):  # a summary renders without reading again
        assert html.render(Context({"summaries": summaries})).count("points-earn-earned") == 20


def test_an_earning_on_another_account_is_not_this_orders():
    order = Order.objects.create(number="SO-X", phone="0512345678", account="branch")
    EarningRecord.objects.create(account="main", provider="points", order_number="SO-X", status=Status.AWARDED)
    assert api.earning_for(order)["state"] == "none"


def test_a_reviews_earning_with_the_same_number_is_not_the_orders(django_assert_num_queries):
    order = order_in(Status.QUEUED, "SO-R1")
    EarningRecord.objects.create(
        account="main", provider="points", kind=Kind.STORE_RATING, order_number="SO-R1", status=Status.AWARDED
    )
    with django_assert_num_queries(1):
        assert api.earning_for(order)["state"] == "on_the_way"


def test_a_failing_adapter_leaves_the_page_without_points(caplog):
    class Broken:  # not an order the adapter can read
        pk = 7

    assert api.earning_for(Broken())["state"] == "none"
    assert render(Broken()) == ""
    assert "could not name order 7" in caplog.text


# -- the real machine: the sandbox awards, pends and takes back ----------------------------------------------------
def test_earned_pending_and_taken_back_as_the_machine_leaves_them(place_order, points_api):
    earned = place_order("SO-EARN", lines=[("Abaya", "37.00", 1)])
    pending = place_order("SO-PEND", phone="0500000003")
    partly = place_order("SO-PART", lines=[("Oud", "100.00", 1)])
    full = place_order("SO-FULL", lines=[("Musk", "20.00", 1)])
    settle()
    order_refunded.send(sender=Order, order=partly, amount=Decimal("30"), refund_id="R-1")
    order_refunded.send(sender=Order, order=full, refund_id="R-2")
    settle()
    Reversal.objects.filter(refund_id="R-1").update(points=300)  # as the platform's refunded webhook says

    assert api.earning_for(earned) | {"updated_at": None} == {
        "state": "earned",
        "points": 370,
        "points_estimated": False,
        "points_taken_back": None,
        "platform": "points",
        "platform_label": "Points",
        "order_number": "SO-EARN",
        "held_until": None,
        "delayed": False,
        "updated_at": None,
    }
    assert api.earning_for(pending)["state"] == "pending_activation"
    assert render(pending) == (
        '<p class="points-earn points-earn-pending_activation" data-state="pending_activation"> '
        "Loyalty points waiting for you: 370. Activate your Points account to receive them. </p>"
    )  # Points names the points of a pending earning
    summary = api.earning_for(partly)
    assert (summary["state"], summary["points"], summary["points_taken_back"]) == ("partly_taken_back", 1000, 300)
    assert "Loyalty points earned: 1,000, of which 300 were taken back after a refund" in render(partly)
    assert api.earning_for(full)["state"] == "taken_back"
    assert Reversal.objects.get(refund_id="R-2").status == ReversalStatus.REVERSED


def test_every_state_in_arabic():
    cases = {
        Status.QUEUED: "نقاط الولاء في الطريق إليك",
        Status.PENDING_ACTIVATION: "فعّل حسابك في Points لتصلك نقاط الولاء.",
        Status.AWARDED: "نقاط الولاء المكتسبة: 370",
        Status.PARTIALLY_REVERSED: "استُرد جزء من نقاط الولاء لهذا الطلب بعد استرجاع المبلغ",
        Status.REVERSED: "استُردت نقاط الولاء لهذا الطلب بعد استرجاع المبلغ",
    }
    for i, (status, words) in enumerate(cases.items()):
        earned = status in (Status.AWARDED, Status.PARTIALLY_REVERSED, Status.REVERSED)
        order = order_in(status, f"SO-AR-{i}", points=Decimal("370") if earned else None)
        shown = render(order, "ar")
        assert words in shown, shown
        assert f'data-state="{api.CUSTOMER_STATE[status]}"' in shown


def test_a_held_earning_shows_when_it_comes(place_order, django_assert_num_queries):
    with with_rate(10, HOLD={"DAYS": 14}):
        order = place_order("SO-HELD", lines=[("Abaya", "37.00", 1)])
        record = EarningRecord.objects.get()
        assert record.status == Status.HELD and record.send_after is not None
        with django_assert_num_queries(1):
            summary = api.earning_for(order)
        shown = render(order)
        shown_ar = render(order, "ar")
    assert summary["state"] == "held_until"
    assert (summary["points"], summary["points_estimated"]) == (370, True)
    assert summary["held_until"] == record.send_after.isoformat()
    date = formats.date_format(timezone.localtime(record.send_after), "DATE_FORMAT")
    assert f"Loyalty points: about 370, on their way after {date}" in shown
    assert "نقاط الولاء: حوالي 370، تصلك بعد" in shown_ar


def test_an_earning_held_until_delivery_has_no_date_yet(place_order):
    with with_rate(None, HOLD={"DAYS": 7, "AFTER": "delivery"}):
        order = place_order("SO-DELIV")
        assert EarningRecord.objects.get().send_after is None
        summary = api.earning_for(order)
        assert (summary["state"], summary["held_until"], summary["points"]) == ("held_until", None, None)
        assert "Loyalty points on their way once the return window after delivery closes" in render(order)
        assert "نقاط الولاء تصلك بعد انقضاء مهلة الإرجاع من تاريخ التوصيل" in render(order, "ar")


def test_held_until_shows_its_date_when_the_summary_has_one():
    summary = {"state": "held_until", "points": 370, "points_estimated": True, "held_until": "2026-12-15T09:00+03:00"}
    html = " ".join(Template("{% load points_earn %}{% points_for_order s %}").render(Context({"s": summary})).split())
    assert "Loyalty points: about 370, on their way after Dec. 15, 2026" in html
    with translation.override("ar"):
        html = Template("{% load points_earn %}{% points_for_order s %}").render(Context({"s": summary}))
    assert "نقاط الولاء: حوالي 370، تصلك بعد" in html
