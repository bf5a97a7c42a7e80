"""Bad review data, the admin's view of ratings, and a rating corrected and sent again: every review becomes a
record with a precise reason, never lost and never a crash in the shop's moderation."""

from types import SimpleNamespace

import pytest
from django.db import transaction

from django_points_earn import corrections
from django_points_earn.admin_tools import operations
from django_points_earn.models import EarningRecord, Kind, Status
from django_points_earn.signals import review_approved
from tests.admin_helpers import CHANGELIST, page
from tests.conftest import run_worker, settle

pytestmark = pytest.mark.django_db(transaction=True)


def approve(**fields):
    review = SimpleNamespace(**{"pk": 7, "reference": "review-7", "phone": "0512345678", **fields})
    with transaction.atomic():
        review_approved.send(sender=SimpleNamespace, review=review)
    return EarningRecord.objects.order_by("-id").first()


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"phone": "12345"}, "phone number is too short (5 digits) to be a Saudi mobile"),
        ({"phone": None}, "phone"),
        ({"reference": ""}, "review has no reference"),
        ({"reference": "r" * 101}, "review reference is longer than 100 characters"),
        ({"rating": 6}, "rating is 6; it must be from 1 to 5"),
        ({"rating": 0}, "rating is 0; it must be from 1 to 5"),
        ({"rating": "great"}, "rating must be a whole number from 1 to 5, not 'great'"),
        ({"rating": True}, "rating must be a whole number from 1 to 5"),
        ({"rating": 4.5}, "rating must be a whole number from 1 to 5, not 4.5"),
        ({"product_id": "   ", "kind": Kind.PRODUCT_RATING}, "a product rating needs the product's id"),
        ({"product_id": "P" * 101}, "product id is longer than 100 characters"),
        ({"metadata": ["not", "a", "dict"]}, "metadata must be a dict"),
        ({"metadata": {"x": {1, 2}}}, "metadata is not JSON-serialisable"),
        ({"kind": "photo_rating"}, "review kind is 'photo_rating'"),
    ],
)
def test_bad_review_data_is_rejected_with_the_reason(fields, reason, monkeypatch):
    if "kind" in fields:
        from tests.shop.adapters import ShopAdapter

        monkeypatch.setattr(ShopAdapter, "get_review_kind", lambda self, review: review.kind, raising=False)
    record = approve(**fields)
    assert record.status == Status.REJECTED
    assert reason in record.status_reason, record.status_reason
    assert record.payload is None and record.order_number


def test_a_rating_given_as_text_is_taken_and_a_long_comment_cut():
    record = approve(rating=" 4 ", comment="x" * 5000)
    assert record.status == Status.QUEUED
    assert record.payload["rating"] == 4 and len(record.payload["comment"]) == 1000


def test_an_adapter_that_fails_leaves_a_rejected_record_and_the_moderation_goes_on(monkeypatch):
    from tests.shop.adapters import ShopAdapter

    def broken(self, review):
        raise KeyError("phone")

    monkeypatch.setattr(ShopAdapter, "get_review_phone", broken)
    record = approve()
    assert (record.status, record.order_number) == (Status.REJECTED, "review-7")
    assert "the review adapter failed: KeyError" in record.status_reason


def test_a_review_without_a_review_is_logged_not_raised(caplog):
    review_approved.send(sender=None)
    assert not EarningRecord.objects.exists()
    assert "without a review" in caplog.text


def test_a_skipped_review_is_recorded_skipped(monkeypatch):
    from tests.shop.adapters import ShopAdapter

    monkeypatch.setattr(ShopAdapter, "get_review_skip_reason", lambda self, review: "staff review", raising=False)
    record = approve()
    assert (record.status, record.status_reason) == (Status.SKIPPED, "staff review")


def test_a_rejected_rating_corrected_is_sent_with_the_rating_body(points_api):
    record = approve(phone="12345", product_id="SKU-1", product_name="Mug", rating=5)
    corrections.correct_and_requeue(record, {"phone": "0512345678"}, actor="agent")
    settle()
    record.refresh_from_db()
    assert (record.status, record.points, record.kind) == (Status.AWARDED, 20, Kind.PRODUCT_RATING)
    assert record.payload == {
        "phone_number": "512345678",
        "review_reference": "review-7",
        "product_id": "SKU-1",
        "product_name": "Mug",
        "rating": 5,
    }


def test_the_admin_refuses_to_take_a_ratings_points_back(points_api):
    approve()
    run_worker()
    record = EarningRecord.objects.get()
    report = operations.reverse(record, amount=None, reason="x", refund_id="r1", actor="agent")
    assert not report.done and not record.reversal_set.exists()


def test_admin_lists_the_kind_filters_by_it_and_shows_the_review(admin_client, points_api, place_order):
    place_order("SO-1")
    approve(product_id="SKU-1", product_name="Mug", rating=4)
    run_worker()
    response = admin_client.get(CHANGELIST + "?kind=product_rating")
    assert {r.order_number for r in response.context["cl"].result_list} == {"review-7"}
    assert "Product rating" in response.content.decode()
    text = admin_client.get(page(EarningRecord.objects.get(order_number="review-7"))).content.decode()
    assert "Review reference" in text and "SKU-1 · Mug" in text


def test_rating_kinds_in_arabic():
    from django.utils import translation

    with translation.override("ar"):
        assert str(Kind.PRODUCT_RATING.label) == "تقييم منتج"
        assert str(EarningRecord._meta.get_field("kind").verbose_name) == "النوع"
