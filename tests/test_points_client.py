"""The Points client against raw HTTP answers (responses): payloads, and every answer classified."""

from decimal import Decimal

import pytest
import requests
import responses
from django.conf import settings

from django_points_earn.adapters import Address, EarningRequest, InvalidEarningRequest, Line
from django_points_earn.conf import get_settings
from django_points_earn.providers import get_backend
from django_points_earn.providers import results as r

URL = "https://sandbox.papp.sa/api/v1/orders/earning"


@pytest.fixture
def backend():
    return get_backend(get_settings().account("main"))


def request(**overrides):
    fields = dict(
        account="main",
        order_number="SALE-2026-0021",
        phone="+966 512 345 678",
        total=Decimal("115.00"),
        lines=[Line("Cappuccino", Decimal("18.50"), 2), Line("Cheesecake", "39", 2)],
    )
    fields.update(overrides)
    return EarningRequest(**fields)


def test_payload_follows_the_contract(backend):
    payload = backend.build_payload(
        request(
            customer_name="Ahmed Al-Saud",
            shipping_amount=Decimal("15"),
            tax_amount=Decimal("22.5"),
            discount_amount=Decimal("10"),
            shipping_address=Address(city="Riyadh", line1="1234 King Fahd Rd"),
            metadata={"channel": "web"},
        )
    )
    assert payload == {
        "phone_number": "512345678",
        "total_price": 115.0,
        "order_number": "SALE-2026-0021",
        "products": [
            {"product_name": "Cappuccino", "product_price": 18.5, "quantity": 2},
            {"product_name": "Cheesecake", "product_price": 39.0, "quantity": 2},
        ],
        "name": "Ahmed Al-Saud",
        "shipping_amount": 15.0,
        "tax_amount": 22.5,
        "discount_amount": 10.0,
        "shipping_address": {"city": "Riyadh", "line1": "1234 King Fahd Rd"},
        "metadata": {"channel": "web"},
    }


def test_money_is_rounded_to_two_places_without_float_artefacts(backend):
    payload = backend.build_payload(request(total=0.1 + 0.2, lines=[Line("x", 0.1 + 0.2, 1)]))
    assert payload["total_price"] == 0.3
    assert payload["products"][0]["product_price"] == 0.3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"phone": None}, "no phone number"),
        ({"phone": "0112345678"}, "not a Saudi mobile"),
        ({"lines": []}, "order has no lines"),
        ({"total": Decimal("-1")}, "total is negative"),
        ({"total": "NaN"}, "not a finite number"),
        ({"total": "abc"}, "total is not a number"),
        ({"total": Decimal("1e15")}, "implausibly large"),
        ({"lines": [Line("x", "1", 0)]}, "quantity is 0"),
        ({"lines": [Line("x", "-1", 1)]}, "price is negative"),
        ({"lines": [Line("x", "1", 1.5)]}, "not a whole number"),
        ({"lines": [Line("", "1", 1)]}, "no product name"),
        ({"order_number": ""}, "no order number"),
        ({"order_number": "x" * 101}, "longer than 100"),
        ({"metadata": {"when": object()}}, "not JSON-serialisable"),
        ({"tax_amount": Decimal("-3")}, "tax amount is negative"),
    ],
)
def test_bad_orders_are_refused_before_any_call(backend, overrides, message):
    with pytest.raises(InvalidEarningRequest, match=message):
        backend.build_payload(request(**overrides))


def earn(backend, **kwargs):
    return backend.earn({"order_number": "SALE-2026-0021"}, request_id="req-1")


@responses.activate
def test_approved_answer(backend):
    responses.post(
        URL,
        json={
            "status": True,
            "message": "",
            "appended_data": {},
            "data": {
                "id": 42,
                "uuid": "550e8400-e29b-41d4-a716-446655440000",
                "reference_number": "REF-2026-001234",
                "order_status": "approved",
                "order_number": "SALE-2026-0021",
                "type": 1,
                "total_price": 115.0,
                "total_points": 2300,
            },
        },
    )
    result = earn(backend)
    assert (result.status, result.remote_id, result.remote_reference, result.points) == (
        r.AWARDED,
        "550e8400-e29b-41d4-a716-446655440000",
        "REF-2026-001234",
        Decimal("2300"),
    )
    sent = responses.calls[0].request
    assert sent.headers["x-api-key"] == settings.POINTS_API_KEY
    assert sent.headers["Accept"] == "application/json"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["X-Request-Id"] == "req-1"


@responses.activate
def test_order_at_top_level_is_accepted(backend):
    responses.post(URL, json={"uuid": "u-1", "order_status": "approved", "total_points": 10})
    assert earn(backend).remote_id == "u-1"


@responses.activate
def test_pending_activation_answer(backend):
    responses.post(
        URL,
        json={
            "status": True,
            "message": "",
            "appended_data": {},
            "data": {
                "pending_client_activation": True,
                "pending_earning_order": {
                    "id": 99,
                    "merchant_order_number": "SALE-2026-0021",
                    "total_price": 115.0,
                    "total_points": 1150,
                },
            },
        },
    )
    result = earn(backend)
    assert (result.status, result.remote_id, result.remote_reference, result.points) == (
        r.PENDING_ACTIVATION,
        "",
        "99",
        Decimal("1150"),
    )


@responses.activate
def test_validation_answer_keeps_field_messages(backend):
    responses.post(
        URL,
        status=422,
        json={
            "message": "The given data was invalid.",
            "errors": {
                "phone_number": ["The phone number format is invalid."],
                "products.0.quantity": ["The quantity must be at least 1."],
            },
        },
    )
    result = earn(backend)
    assert result.status == r.REJECTED
    assert "phone_number: The phone number format is invalid." in result.message
    assert "products.0.quantity: The quantity must be at least 1." in result.message
    assert result.field_errors["products.0.quantity"] == ["The quantity must be at least 1."]


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (
            422,
            {
                "message": "The order number has already been taken.",
                "errors": {"order_number": ["The order number has already been taken."]},
            },
        ),
        (400, {"status": False, "message": "Order number already exists", "appended_data": {}}),
        (409, {"status": False, "message": "Conflict", "appended_data": {}}),
    ],
)
@responses.activate
def test_duplicate_order_number_is_recognised(backend, status, body):
    responses.post(URL, status=status, json=body)
    assert earn(backend).status == r.DUPLICATE


@pytest.mark.parametrize(
    ("status", "body", "expected", "unknown", "words"),
    [
        (
            400,
            {"status": False, "message": "Invalid or inactive API key", "appended_data": {}},
            r.UNAUTHORIZED,
            False,
            "Invalid or inactive API key",
        ),
        (
            400,
            {"status": False, "message": "API key is required", "appended_data": {}},
            r.UNAUTHORIZED,
            False,
            "API key is required",
        ),
        (
            403,
            {"status": False, "message": "Merchant is not allowed to create earning orders", "appended_data": []},
            r.FORBIDDEN,
            False,
            "not allowed",
        ),
        (429, {"status": False, "message": "busy", "appended_data": {}}, r.RATE_LIMITED, False, "busy"),
        (500, {"message": "Server Error"}, r.UNAVAILABLE, True, "HTTP 500: Server Error"),
        (503, "<html><body>Service Unavailable</body></html>", r.UNAVAILABLE, True, "HTTP 503"),
        (200, "<html>oops</html>", r.UNAVAILABLE, True, "body is not JSON"),
        (200, '{"status": true, "data": {"uuid": "550e84', r.UNAVAILABLE, True, "body is not JSON"),
        (200, "", r.UNAVAILABLE, True, "empty body"),
        (
            200,
            {"status": False, "message": "Something odd", "appended_data": {}},
            r.UNAVAILABLE,
            True,
            "status false: Something odd",
        ),
        (200, {"status": True, "data": {"order_status": "approved"}}, r.UNAVAILABLE, True, "without an order uuid"),
        (200, [1, 2, 3], r.UNAVAILABLE, True, "unexpected body"),
        (404, {"message": "Not Found"}, r.UNAVAILABLE, False, "check the account's BASE_URL"),
        # a garbled refusal may be a duplicate of an awarded order: unknown, resent with the same order number
        (422, '{"message": "The order number has already', r.UNAVAILABLE, True, "HTTP 422 but the body is not JSON"),
        (400, "<html><body>400 Bad Request</body></html>", r.UNAVAILABLE, True, "HTTP 400 but the body is not JSON"),
        (418, {"message": "teapot"}, r.REJECTED, False, "HTTP 418: teapot"),
    ],
)
@responses.activate
def test_every_other_answer_is_classified(backend, status, body, expected, unknown, words):
    if isinstance(body, str):
        responses.post(URL, status=status, body=body, content_type="text/html")
    else:
        responses.post(URL, status=status, json=body)
    result = earn(backend)
    assert result.status == expected
    assert result.outcome_unknown is unknown
    assert words in result.message
    assert result.http_status == status


@pytest.mark.parametrize(
    ("exc", "unknown", "words"),
    [
        (requests.ReadTimeout("read timed out"), True, "no answer within the read timeout"),
        (requests.ConnectTimeout("connect timed out"), False, "could not connect in time"),
        (requests.ConnectionError("Connection refused"), False, "could not connect"),
        (requests.ConnectionError("Connection reset by peer"), True, "connection broken"),
        (requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead"), True, "answer cut off"),
    ],
)
@responses.activate
def test_transport_failures(backend, exc, unknown, words):
    responses.post(URL, body=exc)
    result = earn(backend)
    assert (result.status, result.outcome_unknown) == (r.UNAVAILABLE, unknown)
    assert words in result.message
    assert result.http_status is None


@responses.activate
def test_retry_after_header_is_read_when_present(backend):
    responses.post(URL, status=429, headers={"Retry-After": "3"}, json={"status": False, "message": "busy"})
    assert earn(backend).retry_after == 3.0


@responses.activate
def test_lookup(backend):
    responses.get(
        "https://sandbox.papp.sa/api/v1/orders/u-1",
        json={"status": True, "data": {"uuid": "u-1", "order_status": "partially_refunded", "total_points": 500}},
    )
    responses.get(
        "https://sandbox.papp.sa/api/v1/orders/u-2", status=404, json={"status": False, "message": "Not found"}
    )
    found = backend.lookup("u-1")
    assert (found.found, found.remote_status, found.points) == (True, "partially_refunded", Decimal("500"))
    assert backend.lookup("u-2").found is False


@responses.activate
def test_lookup_error_raises_with_status(backend):
    responses.get("https://sandbox.papp.sa/api/v1/orders/u-3", status=502, body="bad gateway")
    with pytest.raises(r.PlatformError) as info:
        backend.lookup("u-3")
    assert info.value.http_status == 502


@responses.activate
def test_proxy_and_ca_bundle_from_the_environment_reach_the_transport(backend, monkeypatch):
    """Read once per session (not per call), but honoured as requests would: a shop behind an egress proxy."""
    from django_points_earn.providers.transport import close_sessions

    monkeypatch.setenv("HTTPS_PROXY", "http://egress.shop.internal:3128")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/shop-ca.pem")
    monkeypatch.setenv("NO_PROXY", "")
    close_sessions()  # a session made before the variables were set would not know them
    try:
        responses.post(URL, json={"uuid": "u-1", "order_status": "approved", "total_points": 10})
        assert earn(backend).status == r.AWARDED
        sent = responses.calls[0].request.req_kwargs
        assert sent["proxies"]["https"] == "http://egress.shop.internal:3128"
        assert sent["verify"] == "/etc/ssl/shop-ca.pem"

        monkeypatch.setenv("NO_PROXY", "sandbox.papp.sa")
        close_sessions()
        assert earn(backend).status == r.AWARDED
        assert "https" not in responses.calls[1].request.req_kwargs["proxies"]
    finally:
        close_sessions()  # leave no session built from this test's environment behind
