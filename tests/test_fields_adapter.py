"""Issue 16, item 5: the declarative adapter. A typical shop names where its order keeps each field in
POINTS_EARN["ORDER_FIELDS"] and writes no class; `check` names a missing or misspelt key."""

import copy
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import override_settings

from django_points_earn.adapters import FieldsAdapter, get_adapter, read_path
from django_points_earn.checks import check_settings
from django_points_earn.models import EarningRecord, Status
from tests.conftest import settle

pytestmark = pytest.mark.django_db(transaction=True)

FIELDS = {
    "number": "number",
    "phone": "phone",
    "total": "total",
    "customer_name": "customer_name",
    "shipping": "shipping",
    "lines": "lines",
    "line_unit_price": "price",
    "account": "account",
}


def fields_settings(fields=FIELDS, adapter=None):
    conf = copy.deepcopy(settings.POINTS_EARN)
    conf.pop("ORDER_ADAPTER", None)
    if adapter:
        conf["ORDER_ADAPTER"] = adapter
    conf["ORDER_FIELDS"] = fields
    return override_settings(POINTS_EARN=conf)


def test_an_order_earns_with_fields_only(place_order, points_api, django_assert_max_num_queries):
    with fields_settings():
        assert isinstance(get_adapter(), FieldsAdapter)
        assert check_settings() == []
        place_order("SO-F1", phone="+966 55 111 2223", lines=[("Kahwa", "20.00", 2), ("Dates", "15.50", 1)], shipping=5)
        settle()
    record = EarningRecord.objects.get(order_number="SO-F1")
    assert record.status == Status.AWARDED, record.status_reason
    assert record.request["lines"] == [
        {
            "name": "Kahwa",
            "unit_price": "20.00",
            "quantity": 2,
            "sku": None,
            "category": None,
            "tax": None,
            "discount": None,
        },
        {
            "name": "Dates",
            "unit_price": "15.50",
            "quantity": 1,
            "sku": None,
            "category": None,
            "tax": None,
            "discount": None,
        },
    ]
    assert record.request["total"] == "60.50" and record.request["shipping_amount"] == "5.00"
    assert points_api.awards("SO-F1") == 1


def test_the_lines_are_read_once(place_order, points_api):
    from tests.shop.models import Order

    place_order("SO-F2", lines=[("Kahwa", "20.00", 2), ("Dates", "15.50", 1)])
    order = Order.objects.get(number="SO-F2")
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with fields_settings(), CaptureQueriesContext(connection) as queries:
        request = get_adapter().build_request(order)
    assert len(request.lines) == 2 and request.total == Decimal("55.50")
    assert len(queries) == 1  # the prefetch: total and lines share it


def test_without_lines_one_line_carries_the_total(place_order, points_api):
    with fields_settings({"number": "number", "phone": "phone", "total": "total", "shipping": "shipping"}):
        place_order("SO-F3", lines=[("Kahwa", "20.00", 1)], shipping=5)
        settle()
    record = EarningRecord.objects.get(order_number="SO-F3")
    assert record.status == Status.AWARDED, record.status_reason
    assert [(line["name"], line["unit_price"]) for line in record.request["lines"]] == [("Order SO-F3", "20.00")]


def test_a_subclass_adds_what_settings_cannot_say(place_order, points_api):
    with fields_settings(adapter="tests.test_fields_adapter.OptOutAdapter"):
        place_order("SO-F4", opted_out=True)
        settle()
    assert EarningRecord.objects.get(order_number="SO-F4").status == Status.SKIPPED


class OptOutAdapter(FieldsAdapter):
    def get_skip_reason(self, order):
        return "customer opted out" if order.opted_out else None


def test_read_path_follows_attributes_dicts_and_methods():
    class Customer:
        phone = "0551112223"

        def display(self):
            return "Sara"

    class Order:
        customer = Customer()
        extra = {"channel": {"name": "web"}}
        nothing = None

    assert read_path(Order(), "customer.phone") == "0551112223"
    assert read_path(Order(), "customer.display") == "Sara"
    assert read_path(Order(), "extra.channel.name") == "web"
    assert read_path(Order(), "nothing.at.all") is None


def test_check_names_missing_and_misspelt_fields():
    with fields_settings({"number": "number", "total": "total", "line_nmae": "title", "phone": ""}):
        found = {(m.id, m.msg) for m in check_settings()}
    assert (
        "points_earn.E011",
        'POINTS_EARN["ORDER_FIELDS"]["phone"] is missing: where the order keeps its phone.',
    ) in found
    assert (
        "points_earn.W004",
        'POINTS_EARN["ORDER_FIELDS"] has an unknown key "line_nmae": did you mean "line_name"?',
    ) in found
    assert not any(i == "points_earn.E005" for i, _ in found)  # no ORDER_ADAPTER needed


def test_neither_adapter_nor_fields_is_an_error():
    conf = copy.deepcopy(settings.POINTS_EARN)
    conf.pop("ORDER_ADAPTER")
    with override_settings(POINTS_EARN=conf):
        assert any(m.id == "points_earn.E005" for m in check_settings())
