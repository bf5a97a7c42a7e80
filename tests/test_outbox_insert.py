"""The outbox INSERT itself (``earning_insert.create``), on the real database: a duplicate signal is harmless, a
value the database refuses is raised without aborting the shop's transaction, and our row lives and dies with the
shop's.

The INSERT is ``INSERT … ON CONFLICT (account, order_number) DO NOTHING RETURNING id``, on PostgreSQL between a
SAVEPOINT and its RELEASE sent in the same round trip.
"""

from decimal import Decimal

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from django_points_earn import earning_insert
from django_points_earn.models import EarningRecord, Status
from django_points_earn.receivers import record_paid_order
from django_points_earn.signals import order_paid
from tests.shop.models import Order, OrderLine

pytestmark = pytest.mark.django_db(transaction=True)


def _unpaid(number: str) -> Order:
    order = Order.objects.create(number=number, phone="0512345678")
    OrderLine.objects.create(order=order, name="Tea", price=Decimal("5.00"), quantity=2)
    return Order.objects.get(pk=order.pk)


def _fields(number: str, **overrides):
    return {
        "account": "main",
        "provider": "points",
        "order_number": number,
        "order_id": "1",
        "phone": "512345678",
        "total": Decimal("10.00"),
        "request": {"order_number": number},
        "payload": {"order_number": number},
        **overrides,
    }


def test_duplicate_signal_in_one_transaction_returns_the_first_record_and_the_transaction_goes_on():
    order = _unpaid("SO-TWICE")
    with transaction.atomic():
        order.paid = True
        order.save(update_fields=["paid"])
        with CaptureQueriesContext(connection) as queries:
            first = record_paid_order(order)
        second = record_paid_order(order)
        order_paid.send(sender=Order, order=order)  # and a third time, through the signal
        Order.objects.filter(pk=order.pk).update(customer_name="after the duplicates")  # the shop's own work
    assert Order.objects.get(pk=order.pk).customer_name == "after the duplicates"  # committed
    assert second.pk == first.pk
    record = EarningRecord.objects.get()
    assert (record.pk, record.status, record.order_number) == (first.pk, Status.QUEUED, "SO-TWICE")
    inserts = [q["sql"] for q in queries.captured_queries if "INSERT" in q["sql"]]
    assert len(inserts) == 1
    if connection.settings_dict.get("OPTIONS", {}).get("server_side_binding"):
        return  # one statement string cannot carry the savepoint: Django's savepoint around a plain INSERT instead
    assert "ON CONFLICT" in inserts[0]
    assert [q["sql"] for q in queries.captured_queries if "shop_orderline" not in q["sql"]] == inserts
    if connection.vendor == "postgresql":  # the savepoint, the INSERT and its release in one statement string
        assert inserts[0].startswith("SAVEPOINT")


def test_the_duplicate_returns_the_stored_record_not_the_new_data():
    with transaction.atomic():
        first, created = earning_insert.create(status=Status.QUEUED, **_fields("SO-D"))
        again, created_again = earning_insert.create(
            status=Status.REJECTED, reason="other", **_fields("SO-D", phone="5")
        )
    assert (created, created_again) == (True, False)
    assert (again.pk, again.status, again.phone) == (first.pk, Status.QUEUED, "512345678")


def test_outside_a_transaction_too():
    first, created = earning_insert.create(status=Status.QUEUED, **_fields("SO-AUTO"))
    again, created_again = earning_insert.create(status=Status.QUEUED, **_fields("SO-AUTO"))
    assert (created, created_again, again.pk) == (True, False, first.pk)
    stored = EarningRecord.objects.get()
    assert (stored.pk, stored.created_at, stored.updated_at) == (first.pk, first.created_at, first.updated_at)
    assert stored.next_attempt_at == first.next_attempt_at is not None


def test_a_value_the_database_refuses_is_raised_and_the_shop_transaction_goes_on():
    """Only the duplicate is ignored: a NOT NULL violation is raised (SQLite's INSERT OR IGNORE would have hidden
    it), after rolling back to the savepoint, so the shop's transaction still commits its own work."""
    order = _unpaid("SO-NULL")
    with transaction.atomic():
        order.paid = True
        order.save(update_fields=["paid"])
        with pytest.raises(IntegrityError):
            earning_insert.create(status=Status.QUEUED, **_fields(None))
        if connection.vendor == "postgresql":  # refused by the server itself: a total numeric(14, 2) cannot hold
            with pytest.raises(DatabaseError):
                earning_insert.create(status=Status.QUEUED, **_fields("SO-BIG", total=Decimal("1e13")))
        Order.objects.filter(pk=order.pk).update(customer_name="still here")
        _, created = earning_insert.create(status=Status.QUEUED, **_fields("SO-NULL"))
    assert created
    assert Order.objects.get(pk=order.pk).customer_name == "still here"
    assert list(EarningRecord.objects.values_list("order_number", flat=True)) == ["SO-NULL"]


def test_our_row_is_rolled_back_with_the_shop_savepoint_it_was_written_in():
    kept, dropped = _unpaid("SO-KEPT"), _unpaid("SO-DROPPED")
    with transaction.atomic():
        order_paid.send(sender=Order, order=kept)
        with pytest.raises(RuntimeError), transaction.atomic():  # the shop's own savepoint
            order_paid.send(sender=Order, order=dropped)
            order_paid.send(sender=Order, order=dropped)  # a duplicate inside it changes nothing
            raise RuntimeError("the shop gives up on this one")
        Order.objects.filter(pk=kept.pk).update(paid=True)
    assert list(EarningRecord.objects.values_list("order_number", flat=True)) == ["SO-KEPT"]
    # Paid again later, the dropped order gets its record: nothing of the first attempt is left behind.
    with transaction.atomic():
        order_paid.send(sender=Order, order=dropped)
    assert EarningRecord.objects.filter(order_number="SO-DROPPED", status=Status.QUEUED).count() == 1


def test_an_error_after_our_insert_rolls_it_back_with_the_checkout():
    order = _unpaid("SO-LATE")
    with pytest.raises(IntegrityError), transaction.atomic():
        order_paid.send(sender=Order, order=order)
        Order.objects.create(number="SO-LATE")  # the shop's own error, after our INSERT
    assert not EarningRecord.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [("customer_name", "Sa\x00ra"), ("phone", "0512345678\x00")],
    ids=["nul-in-json", "nul-in-text-column"],
)
def test_a_nul_character_from_the_adapter_never_breaks_checkout_nor_loses_the_order(field, value):
    """PostgreSQL refuses NUL in JSON on the server (the transaction is aborted until rolled back to the savepoint)
    and psycopg refuses it in a text column before sending anything (there is no savepoint to roll back to). The
    order is kept all the same: rejected with the reason, the NUL replaced (SQLite stores it as it is)."""
    order = _unpaid("SO-NUL")
    setattr(order, field, value)  # what the adapter reads, not saved
    with transaction.atomic():
        order.paid = True
        order.save(update_fields=["paid"])
        order_paid.send(sender=Order, order=order)
        Order.objects.filter(pk=order.pk).update(shipping=Decimal("1.00"))  # the shop's work goes on
    stored = Order.objects.get(pk=order.pk)
    assert (stored.paid, stored.shipping) == (True, Decimal("1.00"))
    record = EarningRecord.objects.get(order_number="SO-NUL")
    if connection.vendor == "postgresql":
        assert record.status == Status.REJECTED
        assert record.status_reason.startswith("the database refused the order's data: ")
        assert "\x00" not in str(record.request)
        assert value.replace("\x00", "\ufffd") in (record.request["customer_name"], record.request["phone"])
