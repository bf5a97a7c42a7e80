"""The Points sandbox's rating channels (§9.1): validation, flat amounts, idempotency on review_reference, the
shared lock and the 403 of a disabled channel; and its HTTP control endpoint."""

import json

import pytest

from django_points_earn.sandbox import PointsSandbox

KEY = {"x-api-key": "k"}


@pytest.fixture
def points():
    return PointsSandbox({"k": "shop"}, seed=1)


def post(points, path, body):
    answer = points.handle("POST", f"/orders/earning/{path}", KEY, json.dumps(body))
    return answer.status, json.loads(answer.body)


def test_product_rating_requires_the_product_and_a_rating_up_to_5(points):
    status, body = post(points, "product-rating", {"phone_number": "0512345678", "review_reference": "r1", "rating": 6})
    assert status == 422
    assert set(body["errors"]) == {"product_id", "rating"}


def test_flat_amounts_per_channel_and_one_credit_per_reference(points):
    points.set_rating_points("shop", store=70)
    status, body = post(points, "store-rating", {"phone_number": "0512345678", "review_reference": "r1"})
    assert status == 200 and body["data"]["total_points"] == 70 and body["data"]["total_price"] == 0
    assert body["data"]["order_number"] == "r1"
    status, body = post(points, "store-rating", {"phone_number": "0512345678", "review_reference": "r1"})
    assert status == 422 and "review_reference" in body["errors"]
    status, body = post(
        points, "product-rating", {"phone_number": "0512345678", "review_reference": "r2", "product_id": "SKU"}
    )
    assert body["data"]["total_points"] == 20
    ledger = points.ledger()["merchants"]["shop"]
    assert (ledger["orders"]["r1"]["awards"], ledger["orders"]["r1"]["channel"]) == (1, "store")
    assert ledger["orders"]["r2"]["channel"] == "product"


def test_a_reference_equal_to_an_order_number_is_a_duplicate(points):
    points.handle(
        "POST",
        "/orders/earning",
        KEY,
        json.dumps(
            {
                "phone_number": "0512345678",
                "total_price": 10,
                "order_number": "SO-1",
                "products": [{"product_name": "x", "product_price": 10, "quantity": 1}],
            }
        ),
    )
    status, _ = post(points, "store-rating", {"phone_number": "0512345678", "review_reference": "SO-1"})
    assert status == 422


def test_disabled_channel_answers_403_and_the_other_still_works(points):
    points.disable_rating_channel("shop", "store")
    assert post(points, "store-rating", {"phone_number": "0512345678", "review_reference": "r1"})[0] == 403
    body = {"phone_number": "0512345678", "review_reference": "r2", "product_id": "P"}
    assert post(points, "product-rating", body)[0] == 200


def test_the_merchant_lock_is_shared_with_purchases(points):
    points._merchant("shop").lock.acquire()
    try:
        assert post(points, "store-rating", {"phone_number": "0512345678", "review_reference": "r1"})[0] == 429
    finally:
        points._merchant("shop").lock.release()


def test_control_endpoint_sets_amounts_and_channels(points):
    answer = points.control(
        "POST", "/ratings", {}, json.dumps({"merchant": "shop", "product": 5, "disabled": ["store"]})
    )
    assert json.loads(answer.body) == {"rating_points": {"store": 50, "product": 5}, "disabled": ["store"]}
