"""The order_paid receiver: one record per paid order, written in the shop's transaction, never breaking checkout."""

import logging

import pytest
from django.db import transaction

from django_points_earn.models import EarningRecord, Status
from django_points_earn.signals import order_paid
from tests.conftest import run_worker
from tests.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)


def test_paid_order_is_recorded_with_the_frozen_payload(place_order):
    place_order("SO-1", phone="+966 51-234-5678", customer_name="Sara")
    record = EarningRecord.objects.get()
    assert (record.account, record.provider, record.order_number, record.status) == (
        "main",
        "points",
        "SO-1",
        Status.QUEUED,
    )
    assert record.phone == "512345678"
    assert str(record.total) == "37.00"
    assert record.payload == {
        "phone_number": "512345678",
        "total_price": 37.0,
        "order_number": "SO-1",
        "products": [{"product_name": "Cappuccino", "product_price": 18.5, "quantity": 2}],
        "name": "Sara",
    }
    assert record.request["lines"] == [
        {
            "name": "Cappuccino",
            "unit_price": "18.50",
            "quantity": 2,
            "sku": None,
            "category": None,
            "tax": None,
            "discount": None,
        }
    ]


def test_rolled_back_order_leaves_nothing_and_sends_nothing(points_api, clean_redis):
    from tests.shop.models import OrderLine

    with pytest.raises(RuntimeError), transaction.atomic():
        order = Order.objects.create(number="SO-RB", phone="0512345678", paid=True)
        OrderLine.objects.create(order=order, name="Tea", price=5, quantity=1)
        order_paid.send(sender=Order, order=order)
        raise RuntimeError("payment provider said no after all")
    assert not EarningRecord.objects.exists()
    assert clean_redis.llen("rq:queue:default") == 0
    run_worker()
    assert points_api.ledger()["merchants"].get("main", {}).get("calls", 0) == 0


def test_duplicate_signal_makes_one_record(place_order, clean_redis):
    order = place_order("SO-DUP")
    with transaction.atomic():
        order_paid.send(sender=Order, order=order)
    order_paid.send(sender=Order, order=order)
    assert EarningRecord.objects.filter(order_number="SO-DUP").count() == 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"phone": ""}, "no phone number"),
        ({"phone": "12345"}, "too short (5 digits)"),
        ({"phone": "+971501234567"}, "not Saudi"),
        ({"lines": []}, "order has no lines"),
        ({"lines": [("Cake", "20", 1), ("Voucher", "-5", 1)]}, "line 2 price is negative"),
        ({"shipping": -50}, "total is negative"),
    ],
)
def test_invalid_order_is_rejected_with_reason_and_checkout_commits(place_order, points_api, fields, reason, caplog):
    caplog.set_level(logging.WARNING, "django_points_earn")
    place_order("SO-BAD", **fields)
    place_order("SO-GOOD")
    assert Order.objects.filter(number="SO-BAD").exists()  # checkout committed
    bad = EarningRecord.objects.get(order_number="SO-BAD")
    assert bad.status == Status.REJECTED
    assert reason in bad.status_reason
    assert bad.payload is None
    assert reason in caplog.text
    run_worker()
    assert EarningRecord.objects.get(order_number="SO-GOOD").status == Status.AWARDED
    assert points_api.awards("SO-BAD") == 0


def test_opted_out_customer_is_skipped(place_order):
    place_order("SO-OPT", opted_out=True)
    record = EarningRecord.objects.get()
    assert (record.status, record.status_reason) == (Status.SKIPPED, "customer opted out of loyalty points")


def test_adapter_crash_is_recorded_not_raised(place_order, monkeypatch):
    from tests.shop.adapters import ShopAdapter

    def boom(self, order):
        raise KeyError("customer")

    monkeypatch.setattr(ShopAdapter, "get_phone", boom)
    place_order("SO-CRASH")
    record = EarningRecord.objects.get()
    assert record.status == Status.REJECTED
    assert "the order adapter failed: KeyError" in record.status_reason
    assert Order.objects.filter(number="SO-CRASH").exists()


def test_unknown_account_from_adapter_is_rejected_not_lost(place_order):
    place_order("SO-ACC", account="nowhere")
    record = EarningRecord.objects.get()
    assert record.status == Status.REJECTED
    assert 'POINTS_EARN["ACCOUNTS"]["nowhere"] is not configured' in record.status_reason


def test_database_error_in_receiver_never_breaks_checkout(place_order, monkeypatch, caplog):
    from django_points_earn import earning_insert

    def broken(**kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(earning_insert, "create", broken)
    place_order("SO-DISK")
    assert Order.objects.filter(number="SO-DISK").exists()
    assert "could not record the earning" in caplog.text


def test_redis_down_at_commit_checkout_commits_and_record_is_sent_later(
    place_order, points_api, settings, redis_server, caplog
):
    from django_points_earn.reconcile import sweep

    good_url = settings.RQ_QUEUES["default"]["URL"]
    settings.RQ_QUEUES["default"]["URL"] = "redis://127.0.0.1:1/0"  # nothing listens there
    try:
        place_order("SO-NOREDIS")
    finally:
        settings.RQ_QUEUES["default"]["URL"] = good_url
    assert Order.objects.filter(number="SO-NOREDIS").exists()
    assert EarningRecord.objects.get().status == Status.QUEUED
    assert "the earning is saved as queued" in caplog.text

    report = sweep()  # Redis is back: the sweep finds the due record and enqueues its account
    assert report.drains_requested == ["main"]
    run_worker()
    assert EarningRecord.objects.get().status == Status.AWARDED
    assert points_api.awards("SO-NOREDIS") == 1
