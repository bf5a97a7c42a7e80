"""Held earnings (issue 17, item 1): kept back until the return window closes, released by the sweep, cancelled or
lowered by a refund meanwhile, and never sent twice or lost in the races between the two."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core import management
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from django_points_earn import holds, reconcile
from django_points_earn.models import EarningEvent, EarningRecord, Reversal, ReversalStatus, Status
from django_points_earn.signals import order_delivered, order_refunded
from tests.conftest import settle
from tests.shop.adapters import ShopAdapter
from tests.shop.models import Order


@pytest.fixture
def hold(settings):
    """Account ``main`` holds its earnings for 14 days."""

    def set_hold(value):
        accounts = {**settings.POINTS_EARN["ACCOUNTS"], "main": {**settings.POINTS_EARN["ACCOUNTS"]["main"]}}
        accounts["main"]["HOLD"] = value
        settings.POINTS_EARN = {**settings.POINTS_EARN, "ACCOUNTS": accounts}

    set_hold({"DAYS": 14})
    return set_hold


def come_due(record: EarningRecord) -> None:
    """The return window of ``record`` has passed (its send_after is now in the past, by the database's clock)."""
    EarningRecord.objects.filter(pk=record.pk).update(send_after=timezone.now() - timedelta(seconds=1))


def sent_total(points_api, number: str) -> Decimal | None:
    orders = points_api._merchant("main").orders.get(number) or []
    return orders[-1].total_price if orders else None


def test_a_held_earning_is_recorded_at_payment_and_sent_only_after_its_window(place_order, points_api, hold):
    before = timezone.now()
    place_order("SO-H1")
    record = EarningRecord.objects.get()
    assert record.status == Status.HELD and record.payload is not None
    assert before + timedelta(days=14) <= record.send_after <= timezone.now() + timedelta(days=14)
    assert "held until" in record.status_reason
    settle()  # the sweep and the worker run: nothing is due
    assert EarningRecord.objects.get().status == Status.HELD
    assert points_api.total_awards("main") == 0

    come_due(record)
    reconcile.sweep()  # the worker's tick: releases it, and asks for its account's drain
    settle()
    record.refresh_from_db()
    assert record.status == Status.AWARDED and points_api.awards("SO-H1") == 1
    released = EarningEvent.objects.get(record=record, from_status=Status.HELD)
    assert (released.to_status, released.note) == (Status.QUEUED, holds.RELEASED)


def test_an_account_without_a_hold_sends_at_once(place_order, points_api):
    place_order("SO-NOW")
    settle()
    assert EarningRecord.objects.get().status == Status.AWARDED


def test_the_adapter_decides_per_order(place_order, points_api, hold, settings):
    class DeliveryAdapter(ShopAdapter):
        def get_send_after(self, order):
            return None if order.number.endswith("NOW") else timezone.now() + timedelta(days=3)

    import tests.test_holds as me

    me.DeliveryAdapter = DeliveryAdapter
    settings.POINTS_EARN = {**settings.POINTS_EARN, "ORDER_ADAPTER": "tests.test_holds.DeliveryAdapter"}
    place_order("SO-3D")
    place_order("SO-NOW")
    settle()
    states = dict(EarningRecord.objects.values_list("order_number", "status"))
    assert states == {"SO-3D": Status.HELD, "SO-NOW": Status.AWARDED}  # the adapter wins over the 14-day HOLD
    held = EarningRecord.objects.get(order_number="SO-3D")
    assert timezone.now() + timedelta(days=2) < held.send_after < timezone.now() + timedelta(days=4)


def test_a_full_refund_while_held_cancels_it_and_nothing_ever_reaches_the_platform(place_order, points_api, hold):
    order = place_order("SO-RET", lines=[("Abaya", "300.00", 1)])
    order_refunded.send(sender=Order, order=order, amount=None, reason="returned", refund_id="RMA-1")
    record = EarningRecord.objects.get()
    assert record.status == Status.CANCELLED
    reversal = Reversal.objects.get()
    assert reversal.status == ReversalStatus.CANCELLED and "held and never sent" in reversal.status_reason
    come_due(record)  # even once its window would have passed
    reconcile.sweep()
    settle()
    assert EarningRecord.objects.get().status == Status.CANCELLED
    assert points_api.total_awards("main") == 0 and sent_total(points_api, "SO-RET") is None


def test_a_partial_refund_while_held_lowers_what_is_sent_line_by_line(place_order, points_api, hold):
    order = place_order("SO-PART", lines=[("Abaya", "300.00", 1), ("Scarf", "50.00", 2)])
    order_refunded.send(sender=Order, order=order, amount="100.00", reason="scarf returned", refund_id="RMA-2")
    record = EarningRecord.objects.get()
    assert record.status == Status.HELD and record.total == Decimal("300.00")
    prices = [line["unit_price"] for line in record.request["lines"]]
    assert prices == ["225.00", "37.50"]  # 300/400 of each
    note = EarningEvent.objects.get(record=record).note
    assert "refund RMA-2: 100.00 taken off before sending; it will send 300.00 of 400.00" in note
    assert Reversal.objects.get().status == ReversalStatus.CANCELLED

    come_due(record)
    reconcile.sweep()
    settle()
    assert EarningRecord.objects.get().status == Status.AWARDED
    assert sent_total(points_api, "SO-PART") == Decimal("300.00") and points_api.awards("SO-PART") == 1


def test_a_refund_arriving_just_after_the_release_takes_the_ordinary_path(place_order, points_api, hold):
    """The release won the race: the earning is queued, not sent yet; the full refund cancels it (never sent)."""
    order = place_order("SO-RACE")
    come_due(EarningRecord.objects.get())
    assert holds.release_due() == 1
    order_refunded.send(sender=Order, order=order, amount=None, reason="returned", refund_id="RMA-3")
    settle()
    assert EarningRecord.objects.get().status == Status.CANCELLED
    assert points_api.total_awards("main") == 0


@pytest.mark.django_db(transaction=True)
def test_release_and_refund_at_the_same_instant_never_send_a_refunded_order(place_order, points_api, hold):
    """Twenty orders, each refunded in full while the sweep releases them, in two threads: whichever wins, no
    refunded order is ever awarded without its points taken back, and none is left held."""
    orders = [place_order(f"SO-R{n}") for n in range(20)]
    EarningRecord.objects.update(send_after=timezone.now() - timedelta(seconds=1))
    barrier = threading.Barrier(2)

    def release():
        barrier.wait()
        try:
            for _ in range(5):
                holds.release_due(batch=3)
        finally:
            connection.close()

    def refund():
        barrier.wait()
        try:
            for n, order in enumerate(orders):
                order_refunded.send(sender=Order, order=order, amount=None, reason="returned", refund_id=f"R{n}")
        finally:
            connection.close()

    threads = [threading.Thread(target=release), threading.Thread(target=refund)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    settle()
    for record in EarningRecord.objects.all():
        assert record.status in (Status.CANCELLED, Status.REVERSED), (record.order_number, record.status)
        awarded = points_api.awards(record.order_number)
        assert awarded == (1 if record.status == Status.REVERSED else 0)
    assert Reversal.objects.count() == 20


def test_a_sweep_that_dies_during_the_release_leaves_every_earning_held_for_the_next(
    place_order, points_api, hold, monkeypatch
):
    for n in range(3):
        place_order(f"SO-K{n}")
    EarningRecord.objects.update(send_after=timezone.now() - timedelta(seconds=1))

    def killed(*args, **kwargs):
        raise SystemExit("worker killed")

    with monkeypatch.context() as patch:
        patch.setattr(EarningEvent.objects, "bulk_create", killed)
        with pytest.raises(SystemExit):
            holds.release_due()
    assert set(EarningRecord.objects.values_list("status", flat=True)) == {Status.HELD}  # rolled back as one
    reconcile.sweep()
    settle()
    assert set(EarningRecord.objects.values_list("status", flat=True)) == {Status.AWARDED}
    assert points_api.total_awards("main") == 3


def test_a_worker_whose_clock_runs_ahead_releases_nothing_early(place_order, hold, monkeypatch):
    """The release compares send_after with the database's clock, not the worker's."""
    place_order("SO-SKEW")
    EarningRecord.objects.update(send_after=timezone.now() + timedelta(minutes=10))
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(hours=1))
    assert holds.release_due() == 0
    assert EarningRecord.objects.get().status == Status.HELD


def test_a_hold_after_delivery_starts_its_clock_at_order_delivered(place_order, points_api, hold):
    hold({"DAYS": 7, "AFTER": "delivery"})
    order = place_order("SO-DLV")
    record = EarningRecord.objects.get()
    assert record.status == Status.HELD and record.send_after is None
    assert holds.release_due() == 0  # waits for the delivery however long it takes
    delivered = timezone.now() - timedelta(days=8)
    order_delivered.send(sender=Order, order=order, delivered_at=delivered)
    record.refresh_from_db()
    assert record.send_after == delivered + timedelta(days=7)
    reconcile.sweep()
    settle()
    assert EarningRecord.objects.get().status == Status.AWARDED


def test_a_naive_or_unreadable_delivery_time_still_starts_the_clock(place_order, points_api, hold):
    """Failed on c83502d: order_delivered with a naive delivered_at (``datetime.now()``, as many shops write it)
    raised inside the receiver, only logged: the clock never started and the earning stayed held for ever."""
    hold({"DAYS": 7, "AFTER": "delivery"})
    order = place_order("SO-NAIVE")
    delivered = timezone.make_naive(timezone.now() - timedelta(days=8))
    order_delivered.send(sender=Order, order=order, delivered_at=delivered)
    record = EarningRecord.objects.get()
    assert record.send_after == timezone.make_aware(delivered) + timedelta(days=7)
    reconcile.sweep()
    settle()
    assert EarningRecord.objects.get().status == Status.AWARDED

    # Not a datetime at all: said precisely, and the window runs from now rather than never
    other = place_order("SO-TEXT")
    before = timezone.now()
    order_delivered.send(sender=Order, order=other, delivered_at="yesterday")
    held = EarningRecord.objects.get(order_number="SO-TEXT")
    assert held.status == Status.HELD
    assert before + timedelta(days=7) <= held.send_after <= timezone.now() + timedelta(days=7)


def test_send_now_and_hold_longer_are_audited(place_order, hold):
    place_order("SO-A")
    place_order("SO-B")
    a, b = EarningRecord.objects.order_by("id")
    until = timezone.now() + timedelta(days=30)
    assert holds.extend(a, until, actor="ops")
    assert EarningRecord.objects.get(pk=a.pk).send_after == until
    assert holds.send_now(b, actor="ops")
    assert not holds.send_now(b, actor="ops")  # already released: nothing happens twice
    b.refresh_from_db()
    assert b.status == Status.QUEUED
    notes = list(EarningEvent.objects.order_by("id").values_list("actor", "note"))
    assert notes[0][0] == "ops" and notes[0][1].startswith("held until ")
    assert notes[1] == ("ops", "sent before its hold ended, by ops")
    with pytest.raises(ValueError):
        holds.extend(a, timezone.now() - timedelta(days=1), actor="ops")


def test_reconcile_reports_held_earnings_and_the_next_release(place_order, hold, capsys):
    place_order("SO-1")
    place_order("SO-2")
    first = EarningRecord.objects.order_by("id").first()
    come_due(first)
    call_command("points_reconcile")
    out = capsys.readouterr().out
    assert "Held earnings (return window): 1 released now, 1 still held" in out
    report = reconcile.run(reconcile.Options())
    assert report.steps["held"]["held"] == 1 and report.steps["held"]["next_release"]


@pytest.mark.parametrize(
    "value,words",
    [
        ({"DAYS": -1}, 'HOLD"]["DAYS"] must be a number of days from 0 up'),
        ({"WEEKS": 2}, "has unknown keys ['WEEKS']"),
        ({"DAYS": 7, "AFTER": "shipping"}, 'HOLD"]["AFTER"] must be "payment" or "delivery"'),
        (14, "must be a dict such as"),
        ({"DAYS": float("nan")}, 'HOLD"]["DAYS"] must be a number of days'),
    ],
)
def test_a_bad_hold_is_a_system_check_error_and_checkout_still_records_the_order(
    place_order, hold, value, words, caplog
):
    hold(value)
    with pytest.raises(management.base.SystemCheckError) as raised:
        call_command("check")
    assert "points_earn.E013" in str(raised.value) and words in str(raised.value)
    place_order("SO-BAD")
    assert EarningRecord.objects.get().status == Status.QUEUED  # not held, not lost: sent at once
    assert words in caplog.text


def test_a_full_refund_while_held_also_ends_a_refund_that_waited_for_the_sending(place_order, points_api, hold):
    """A partial refund that could not lower the held earning waits for it to be sent; a full refund then cancels
    the earning, and the waiting one ends too (nothing will be sent, nothing to take back)."""
    order = place_order("SO-WAIT")
    record = EarningRecord.objects.get()
    waiting = Reversal.objects.create(record=record, refund_id="RMA-W", amount=Decimal("5.00"), status="waiting")
    order_refunded.send(sender=Order, order=order, amount=None, reason="returned", refund_id="RMA-ALL")
    assert EarningRecord.objects.get().status == Status.CANCELLED
    waiting.refresh_from_db()
    assert waiting.status == ReversalStatus.CANCELLED and "nothing to take back" in waiting.status_reason
