"""Points' webhook parser (providers/points_webhooks.py): one delivery's JSON object -> neutral events.

Pure: no database, no HTTP. Each test gives a body as Points sends it (or as it should never send it) and asserts
the exact events, so that what the core applies is decided here, in one place per platform.
"""

from decimal import Decimal

import pytest

from django_points_earn.providers import platform
from django_points_earn.providers.events import (
    EarningCancelled,
    EarningConfirmed,
    Ignored,
    ParsedDelivery,
    PointsTakenBack,
)
from django_points_earn.providers.points import PointsBackend
from django_points_earn.providers.points_webhooks import parse


def delivery(event, **order):
    base = {"id": "uuid-1", "order_number": "SO-1", "type": "earning", "reference_number": "REF-2026-000001"}
    return {"event": event, "timestamp": "2026-12-01T10:00:00Z", "order": base | order}


def test_approved_confirms_the_earning_with_its_id_reference_and_points():
    parsed = parse(delivery("approved", order_status="approved", total_points=120))
    assert parsed == ParsedDelivery(
        order_number="SO-1",
        remote_id="uuid-1",
        key=("uuid-1", "approved", "None", "None", "None", "None", "None"),
        events=(EarningConfirmed("SO-1", "uuid-1", "REF-2026-000001", Decimal("120")),),
    )


def test_approved_without_an_id_still_says_so_for_the_order_number():
    parsed = parse(delivery("approved", id=None, reference_number="", total_points="7.5"))
    assert (parsed.remote_id, parsed.events) == ("", (EarningConfirmed("SO-1", "", "", Decimal("7.5")),))


def test_a_partial_refund_gives_the_id_then_what_was_taken_back():
    body = delivery(
        "refunded",
        order_status="partially_refunded",
        refund_amount=25,
        refund_points="250.00",
        reason="[refund RMA-1] returned",
        total_points=1000,
    )
    assert parse(body).events == (
        EarningConfirmed("SO-1", "uuid-1", "REF-2026-000001", None),  # points are only read from `approved`
        PointsTakenBack(
            "SO-1",
            "uuid-1",
            amount=Decimal("25"),
            points=Decimal("250.00"),
            reason="[refund RMA-1] returned",
            remote_status="partially_refunded",
            fully=False,
        ),
    )


@pytest.mark.parametrize(
    ("event", "status", "fully"),
    [
        ("auto_refunded", "fully_refunded", True),
        ("refunded", "cancelled", True),
        ("refunded", "refunded", False),
        ("refunded", None, False),
    ],
)
def test_which_order_states_mean_every_point_is_back(event, status, fully):
    [_, taken] = parse(delivery(event, order_status=status, refund_points=10)).events
    assert (taken.remote_status, taken.fully) == (status or "", fully)


def test_a_refund_without_an_id_confirms_nothing():
    body = {"event": "refunded", "order": {"order_number": "SO-2", "refund_amount": "5", "reason": ""}}
    assert parse(body).events == (PointsTakenBack("SO-2", "", amount=Decimal("5")),)


def test_cancelled_gives_the_id_then_cancels_with_the_reason():
    assert parse(delivery("cancelled", reason="fraud")).events == (
        EarningConfirmed("SO-1", "uuid-1", "REF-2026-000001", None),
        EarningCancelled("SO-1", "uuid-1", "fraud"),
    )
    assert parse(delivery("cancelled", id="", reason=None)).events == (EarningCancelled("SO-1", "", ""),)


# (low_balance_warning and debt_exceeded are about the merchant's balance: tests/test_balance_alerts.py)
@pytest.mark.parametrize("event", ["balance_topped_up", "shipping_status_updated", "Approved", "refund"])
def test_other_events_are_ignored_by_name(event):
    assert parse(delivery(event)).events == (Ignored(f"{event} is not about earning"),)


@pytest.mark.parametrize("kind", ["redeem", "2", 2, "", None])
def test_orders_that_are_not_earnings_are_ignored(kind):
    assert parse(delivery("approved", type=kind)).events == (Ignored("not an earning order"),)


@pytest.mark.parametrize("kind", ["earning", "1", 1])
def test_earning_orders_by_name_or_number(kind):
    assert parse(delivery("approved", type=kind)).events == (EarningConfirmed("SO-1", "uuid-1", "REF-2026-000001"),)


def test_an_order_without_a_type_is_taken_for_an_earning():
    body = {"event": "approved", "order": {"id": "uuid-9", "order_number": "SO-9"}}
    assert parse(body).events == (EarningConfirmed("SO-9", "uuid-9"),)


@pytest.mark.parametrize("order", [None, "SO-1", ["SO-1"], 42, True])
def test_an_order_that_is_not_an_object_names_no_earning(order):
    """Stored and found by nothing: the core finds no earning for it (nothing raises)."""
    parsed = parse({"event": "approved", "order": order})
    assert parsed == ParsedDelivery(
        order_number="", remote_id="", key=("None",) * 7, events=(EarningConfirmed("", ""),)
    )


def test_a_body_without_an_order():
    assert parse({"event": "refunded"}).events == (PointsTakenBack("", ""),)


@pytest.mark.parametrize(
    ("value", "read"),
    [
        ("NaN", None),
        ("Infinity", None),
        ("-Infinity", None),
        (10**12, None),  # no DecimalField(14, 2) column keeps it
        (-(10**12), None),
        ("1e400", None),
        ("a lot", None),
        (True, None),  # a JSON boolean is no number (Decimal(True) would be 1)
        ([250], None),
        ({"points": 250}, None),
        (None, None),
        (999_999_999_999, Decimal("999999999999")),
        ("999999999999.99", Decimal("999999999999.99")),
        (0, Decimal("0")),
        (250.5, Decimal("250.5")),
        ("-5", Decimal("-5")),
    ],
)
def test_numbers_no_column_could_keep_are_read_as_unknown(value, read):
    [confirmed] = parse(delivery("approved", total_points=value)).events
    [_, taken] = parse(delivery("refunded", refund_points=value, refund_amount=value)).events
    assert (confirmed.points, taken.points, taken.amount) == (read, read, read)


def test_the_key_tells_two_partial_refunds_apart_but_not_a_redelivery():
    first = delivery("refunded", order_status="partially_refunded", refund_amount=25, left_amount=75)
    second = delivery("refunded", order_status="partially_refunded", refund_amount=25, left_amount=50)
    again = first | {"timestamp": "2026-12-01T10:05:00Z"}  # Points' retry: only the unsigned timestamp differs
    assert parse(first).key != parse(second).key
    assert parse(first).key == parse(again).key


def test_texts_are_kept_as_text_whatever_their_json_type():
    parsed = parse(delivery("cancelled", id=12345, order_number=678, reason=["x"]))
    assert (parsed.order_number, parsed.remote_id) == ("678", "12345")
    assert parsed.events[-1] == EarningCancelled("678", "12345", "['x']")


def test_the_points_backend_declares_its_parser_and_tells_its_own_refunds():
    from django.utils.module_loading import import_string

    assert import_string(platform("points").webhook_parser) is parse
    assert PointsBackend.is_our_refund("RMA-1", "[refund RMA-1] the customer returned it")
    assert not PointsBackend.is_our_refund("RMA-1", "[refund RMA-10] another refund")  # the tag is closed
    assert not PointsBackend.is_our_refund("RMA-1", "refunded in the Points dashboard (RMA-1)")
    assert platform("fabric").webhook_parser is None
