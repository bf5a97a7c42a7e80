"""The fabric client: payloads with exact amounts, the OAuth token, and every answer classified (raw HTTP answers
through `responses`; the fabric sandbox where a platform has to check the amounts)."""

import base64
import copy
import json
import random
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

import pytest
import requests
import responses
from django.conf import settings
from django.test import override_settings

from django_points_earn.adapters import EarningRequest, InvalidEarningRequest, Line
from django_points_earn.conf import get_settings
from django_points_earn.providers import fabric_token, get_backend
from django_points_earn.providers import results as r
from django_points_earn.sandbox import FabricSandbox
from tests.conftest import FABRIC_TOKEN_URL, FABRIC_URL

EARN_URL = f"{FABRIC_URL}/v2/earn"
TXN_URL = f"{FABRIC_URL}/v2/earn/get-transaction"
MEMBERS_URL = f"{FABRIC_URL}/v1/members"
PROFILE = "67460e74-02e3-11e8-b443-00163e990bdb"
CODE = "78660e74-02e3-11e8-b443-00163e911bd2"
CENT = Decimal("0.01")


def fabric_settings(**options):
    conf = copy.deepcopy(settings.POINTS_EARN)
    conf["ACCOUNTS"]["fabric"].update(options)
    return conf


@pytest.fixture
def backend():
    return get_backend(get_settings().account("fabric"))


@pytest.fixture
def options():
    """Another fabric configuration for one test: ``backend = options(DISCOUNT_VALUE_AS="number")``."""
    overrides = []

    def configure(**changes):
        override = override_settings(POINTS_EARN=fabric_settings(**changes))
        override.enable()
        overrides.append(override)
        return get_backend(get_settings().account("fabric"))

    yield configure
    for override in reversed(overrides):
        override.disable()


def request(**overrides):
    fields = dict(
        account="fabric",
        order_number="SO-2026-0021",
        phone="0512345678",
        total=Decimal("37.00"),
        lines=[Line("Cappuccino", Decimal("18.50"), 2)],
    )
    fields.update(overrides)
    return EarningRequest(**fields)


# -- the payload -------------------------------------------------------------------------------------------


def test_payload_reproduces_fabrics_own_example(backend):
    """fabric's documented example (gross 200 = net 180 + tax 20, 90 x 2, discount 20) comes out number for number."""
    payload = backend.build_payload(
        request(
            order_number="123321abc",
            profile_id=PROFILE,
            total=Decimal("180"),
            lines=[Line("demo item", Decimal("90"), 2, sku="1123455", tax=Decimal("20"))],
            tax_amount=Decimal("20"),
            discount_amount=Decimal("20"),
            paid_at=datetime(2020, 2, 8, 12, 30, 26, tzinfo=ZoneInfo("Asia/Riyadh")),
        )
    )
    assert payload == {
        "profileId": PROFILE,
        "entityReference": "Riyadh Park",
        "transactionTypeExternalReference": "PURCHASE",
        "activityTimestamp": "2020-02-08 09:30:26",  # UTC
        "transactionExternalReference": "123321abc",
        "transactionGrossAmount": 200.0,
        "checkForDuplicateTransaction": 1,
        "fetchUpdatedMemberPointTotals": 0,
        "totalAmountPaid": 180.0,
        "discountValue": 20,
        "totalTax": 20.0,
        "netAmount": 160.0,
        "discounts": [{"type": "discount", "description": "order discount", "value": 20.0}],
        "transactionItems": [
            {
                "lineNumber": 0,
                "itemName": "demo item",
                "itemPrice": 90.0,
                "itemQuantity": 2,
                "grossAmount": 200.0,
                "taxAmount": 20.0,
                "netAmount": 180.0,
                "totalAmountPaid": 200.0,
                "SKU": "1123455",
                "UOM": "unit",
            }
        ],
        "setToPending": False,
    }
    # Integer flags, not JSON booleans (1 == True in Python, so compare the types too).
    for key in ("checkForDuplicateTransaction", "fetchUpdatedMemberPointTotals", "discountValue"):
        assert type(payload[key]) is int
    assert '"checkForDuplicateTransaction": 1' in json.dumps(payload)


def test_without_paid_at_the_timestamp_is_now_in_utc_and_frozen(backend):
    before = datetime.now(UTC).replace(microsecond=0)
    payload = backend.build_payload(request())
    stamp = datetime.strptime(payload["activityTimestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert before <= stamp <= datetime.now(UTC)


@pytest.mark.parametrize(
    ("style", "phone", "sent"),
    [
        ("international", "+966 51 234 5678", "966512345678"),
        ("local", "00966512345678", "0512345678"),
        ("national", "٠٥١٢٣٤٥٦٧٨", "512345678"),
        ("as-given", "+44 20 7946-0958", "442079460958"),
    ],
)
def test_without_a_profile_id_the_phone_is_kept_for_the_member_lookup(options, style, phone, sent):
    payload = options(MEMBER_PHONE_FORMAT=style).build_payload(request(phone=phone))
    assert payload["_memberPhone"] == sent
    assert "profileId" not in payload


def test_options_reach_the_payload(options):
    backend = options(FETCH_UPDATED_TOTALS=True, SET_TO_PENDING=True, ISSUE_AUDIT_USER="web-shop", UOM="EA")
    order = request(lines=[Line("Dates", "60", 1, sku="dat-suk-1", category="Food")], total=Decimal("60"))
    payload = backend.build_payload(order)
    assert (payload["fetchUpdatedMemberPointTotals"], payload["setToPending"]) == (1, True)
    assert payload["issueAuditUser"] == "web-shop"
    item = payload["transactionItems"][0]
    assert (item["SKU"], item["UOM"], item["categories"]) == ("dat-suk-1", "EA", ["Food"])  # values as given


def test_discount_value_is_an_integer_unless_the_account_says_number(backend, options):
    order = request(total=Decimal("27.50"), discount_amount=Decimal("9.50"))
    with pytest.raises(InvalidEarningRequest, match=r"discount 9.50 has cents.*DISCOUNT_VALUE_AS"):
        backend.build_payload(order)
    assert options(DISCOUNT_VALUE_AS="number").build_payload(order)["discountValue"] == 9.5


def test_shipping_is_an_item_or_left_out(backend, options):
    order = request(total=Decimal("66.75"), shipping_amount=Decimal("25.00"), tax_amount=Decimal("4.75"))
    as_item = backend.build_payload(order)
    assert [i["itemName"] for i in as_item["transactionItems"]] == ["Cappuccino", "Shipping"]
    assert as_item["totalAmountPaid"] == 66.75  # what the customer paid
    assert sum(i["taxAmount"] for i in as_item["transactionItems"]) == pytest.approx(4.75)

    left_out = options(SHIPPING="exclude").build_payload(order)
    assert [i["itemName"] for i in left_out["transactionItems"]] == ["Cappuccino"]
    assert (left_out["transactionGrossAmount"], left_out["totalTax"], left_out["netAmount"]) == (41.75, 4.75, 37.0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"total": Decimal("40.00")}, "amounts do not add up: lines 37.00 .* = 37.00, but the total is 40.00"),
        # tax-inclusive prices: the tax is counted twice
        ({"tax_amount": Decimal("4.83")}, "unit prices without tax"),
        ({"lines": [Line("x", "10", 1, discount=Decimal("11"))], "total": Decimal("-1")}, "total is negative"),
        ({"lines": [Line("x", "10", 1, discount=Decimal("11"))], "total": Decimal("0")}, "more than the line's"),
        (
            {"lines": [Line("x", "10", 2, discount=Decimal("5"))], "discount_amount": Decimal("2"), "total": "18"},
            "less than the discounts on its lines",
        ),
        (
            {"lines": [Line("x", "10", 1, tax=Decimal("3"))], "tax_amount": Decimal("2"), "total": "12"},
            r"lines' tax \(3.00\) is more than the order's tax \(2.00\)",
        ),
        (
            {"lines": [Line("x", "10", 1, tax=Decimal("1"))], "tax_amount": Decimal("2"), "total": "12"},
            "does not add up to the order's tax",
        ),
        ({"lines": [Line("x", "10", 1, tax=Decimal("-1"))]}, "line 1 tax is negative"),
        ({"phone": None}, "no fabric profileId and no phone number"),
        ({"phone": "0112345678"}, "not a Saudi mobile.*MEMBER_PHONE_FORMAT"),
        ({"lines": []}, "order has no lines"),
        ({"order_number": "x" * 101}, "longer than 100"),
    ],
)
def test_orders_fabric_cannot_take_are_refused_with_the_reason(backend, overrides, message):
    with pytest.raises(InvalidEarningRequest, match=message):
        backend.build_payload(request(**overrides))


def test_an_order_with_nothing_to_earn_says_so(backend, options):
    """Issue 12 item 9: a net amount of 0 is sent to nobody (the earning is skipped with this reason)."""
    from django_points_earn.earning_request import NothingToEarn

    free = request(lines=[Line("a", "5", 3)], discount_amount=Decimal("15"), total=Decimal("0"))
    with pytest.raises(NothingToEarn, match="the order's total is 0: nothing to earn, nothing sent"):
        backend.build_payload(free)
    shipping_only = request(lines=[Line("gift", "0", 1)], shipping_amount=Decimal("20"), total=Decimal("20"))
    with pytest.raises(NothingToEarn, match=r"net amount \(before tax, after discounts\) is 0 \(total 20.00\)"):
        options(SHIPPING="exclude").build_payload(shipping_only)
    assert backend.build_payload(shipping_only)["netAmount"] == 20.0  # shipping as an item earns
    # Amounts that do not add up are refused for that, even at a total of 0:
    broken = request(lines=[Line("x", "10", 1)], total=Decimal("0"))
    with pytest.raises(InvalidEarningRequest, match="amounts do not add up") as info:
        backend.build_payload(broken)
    assert not isinstance(info.value, NothingToEarn)


def test_a_shipping_excluded_order_with_line_taxes_leaves_the_shippings_tax_out(options):
    backend = options(SHIPPING="exclude")
    order = request(
        lines=[Line("x", "10", 1, tax=Decimal("1.50"))],
        shipping_amount=Decimal("20"),
        tax_amount=Decimal("4.50"),
        total=Decimal("34.50"),
    )
    payload = backend.build_payload(order)
    assert (payload["transactionGrossAmount"], payload["totalTax"], payload["totalAmountPaid"]) == (11.5, 1.5, 11.5)


# -- the four identities -----------------------------------------------------------------------------------


def money(value) -> Decimal:
    """A JSON number back to the exact Decimal it was (2 places, shortest float repr)."""
    assert not isinstance(value, bool)
    amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    assert amount == amount.quantize(CENT), f"{value} has more than 2 places"
    return amount


def assert_identities(payload: dict, total: Decimal | None = None) -> None:
    body = json.loads(json.dumps(payload))  # exactly what goes on the wire
    gross, paid, tax = (money(body[k]) for k in ("transactionGrossAmount", "totalAmountPaid", "totalTax"))
    net, discount = money(body["netAmount"]), money(body["discountValue"])
    assert paid == gross - discount  # 1
    assert net == gross - tax - discount  # 2
    items = body["transactionItems"]
    for item in items:  # 3, exactly (x qty) and as fabric writes it (rounded to 2 places)
        price, qty, item_net = money(item["itemPrice"]), item["itemQuantity"], money(item["netAmount"])
        item_discount = sum((money(d["value"]) for d in item.get("discounts", [])), Decimal(0))
        assert isinstance(qty, int) and qty >= 1
        assert price * qty - item_discount == item_net
        rounded = lambda x: x.quantize(CENT, ROUND_HALF_UP)  # noqa: E731
        assert rounded(price - item_discount / qty) == rounded(item_net / qty)
        assert money(item["grossAmount"]) == item_net + money(item["taxAmount"]) + item_discount
    assert sum((money(i["grossAmount"]) for i in items), Decimal(0)) == gross  # 4
    assert sum((money(i["taxAmount"]) for i in items), Decimal(0)) == tax
    assert net >= 0
    if total is not None:
        assert paid == total


VAT = Decimal("0.15")


def shop_order(rng: random.Random, number: int) -> EarningRequest:
    """A random order the way a shop computes one: odd quantities, cents everywhere, VAT on the discounted
    subtotal and shipping, sometimes per-line taxes and discounts."""
    lines = []
    for _ in range(rng.randint(1, 6)):
        price = Decimal(rng.randint(0, 50_000)) / 100
        quantity = rng.choice([1, 1, 2, 3, 5, 7, 9, 11, 13])
        line = Line(f"item {len(lines) + 1}", price, quantity, sku=f"sku-{rng.randint(1, 999)}")
        if rng.random() < 0.3:
            line.discount = (price * quantity * Decimal(rng.randint(0, 100)) / 100).quantize(CENT)
        lines.append(line)
    subtotal = sum((line.unit_price * line.quantity - (line.discount or 0) for line in lines), Decimal(0))
    order_discount = rng.choice([Decimal(0), Decimal("10.00"), (subtotal * Decimal("0.10")).quantize(CENT)])
    order_discount = min(order_discount, subtotal)
    shipping = rng.choice([Decimal(0), Decimal("25.00"), Decimal("17.35")])
    if rng.random() < 0.25:  # the shop taxes each line itself; the shipping's tax is on top
        for line in lines:
            line.tax = ((line.unit_price * line.quantity - (line.discount or 0)) * VAT).quantize(CENT)
        tax = sum((line.tax for line in lines), Decimal(0)) + (shipping * VAT).quantize(CENT)
    else:
        tax = ((subtotal - order_discount + shipping) * VAT).quantize(CENT)
    line_discounts = sum((line.discount or 0 for line in lines), Decimal(0))
    discount = order_discount + line_discounts
    total = sum((line.unit_price * line.quantity for line in lines), Decimal(0)) + shipping + tax - discount
    return request(
        order_number=f"R-{number}",
        lines=lines,
        total=total,
        tax_amount=tax,
        discount_amount=discount if discount or rng.random() < 0.5 else None,
        shipping_amount=shipping or None,
    )


TABLE = {
    "one line, tax": request(total=Decimal("42.55"), tax_amount=Decimal("5.55")),
    "odd quantities, order discount, VAT": request(
        lines=[Line("a", "18.50", 3), Line("b", "39.99", 7), Line("c", "0.35", 13)],
        tax_amount=Decimal("49.50"),
        discount_amount=Decimal("10"),
        total=Decimal("379.48"),
    ),
    "a line discount that does not divide by the quantity": request(
        lines=[Line("a", "10.00", 3, discount=Decimal("1.00")), Line("b", "0.99", 1)],
        tax_amount=Decimal("0.01"),
        total=Decimal("30.00"),
    ),
    "a cent of tax over three lines": request(
        lines=[Line("a", "1.00", 1), Line("b", "1.00", 1), Line("c", "1.00", 1)],
        tax_amount=Decimal("0.01"),
        total=Decimal("3.01"),
    ),
    "a free line": request(
        lines=[Line("gift", "0", 1), Line("a", "99.99", 3)], tax_amount=Decimal("45.00"), total=Decimal("344.97")
    ),
    "shipping and tax": request(
        lines=[Line("a", "45.00", 2), Line("b", "22.50", 1)],
        shipping_amount=Decimal("25"),
        tax_amount=Decimal("20.63"),
        total=Decimal("158.13"),
    ),
}


@pytest.mark.parametrize("name", list(TABLE))
def test_identities_hold_on_the_table(backend, name):
    order = copy.deepcopy(TABLE[name])
    assert_identities(backend.build_payload(order), total=order.total)


def fabric_accepts(sandbox: FabricSandbox, token: str, payload: dict) -> tuple[int, dict]:
    body = {k: v for k, v in payload.items() if not k.startswith("_")} | {"profileId": PROFILE}
    answer = sandbox.handle_api("POST", "/v2/earn", {"Authorization": f"Bearer {token}"}, json.dumps(body))
    return answer.status, answer.json()


@pytest.mark.parametrize("shipping", ["item", "exclude"])
def test_identities_hold_on_random_shop_orders_and_the_sandbox_accepts_them(options, shipping):
    """A seeded generator (hypothesis is not a dependency): 300 orders per shipping mode."""
    backend = options(DISCOUNT_VALUE_AS="number", SHIPPING=shipping)
    sandbox = FabricSandbox({"c": "s"}, discount_value_as="number", scope=None, seed=5)
    sandbox.add_member("966512345678", profile_id=PROFILE)
    auth = base64.b64encode(b"c:s").decode()
    token = sandbox.handle_token(
        "POST",
        "",
        {"Authorization": f"Basic {auth}", "Content-Type": "application/x-www-form-urlencoded"},
        "grant_type=client_credentials",
    ).json()["access_token"]
    rng = random.Random(20261122)
    for n in range(300):
        order = shop_order(rng, n)
        payload = backend.build_payload(order)
        assert_identities(payload, total=order.total if shipping == "item" else None)
        status, answer = fabric_accepts(sandbox, token, payload)
        assert status == 201, (n, answer["errors"])
    assert sandbox.total_awards() == 300


def test_the_sandbox_refuses_what_breaks_an_identity(backend):
    """The check above has teeth: one cent off and fabric's sandbox says which formula failed."""
    sandbox = FabricSandbox({"c": "s"}, scope=None)
    sandbox.add_member("966512345678", profile_id=PROFILE)
    token = sandbox.handle_token(
        "POST", "", {"Content-Type": "application/json"}, '{"grant_type":"client_credentials"}'
    )
    assert token.status == 400  # the default sandbox wants Basic credentials
    sandbox.grant_style = "json"
    token = sandbox.handle_token(
        "POST",
        "",
        {"Content-Type": "application/json"},
        '{"grant_type": "client_credentials", "client_id": "c", "client_secret": "s"}',
    ).json()["access_token"]
    payload = backend.build_payload(copy.deepcopy(TABLE["shipping and tax"]))
    payload["transactionItems"][0]["netAmount"] += 0.01
    status, answer = fabric_accepts(sandbox, token, payload)
    assert status == 422
    assert list(answer["errors"]) == ["transactionItems.0.netAmount"]


# -- the token ---------------------------------------------------------------------------------------------


def token_answer(value: str = "tok-1", expires_in: int = 600) -> dict:
    return {"token_type": "Bearer", "expires_in": expires_in, "access_token": value, "scope": "s2s"}


def earned(code: str = CODE, points: int = 16) -> dict:
    return {
        "status": 201,
        "message": "earned",
        "errors": {},
        "data": {"transactionCode": code, "transactionNumber": "LOYALTY-54321", "points": points, "basePoints": 16},
    }


PAYLOAD = {"profileId": PROFILE, "transactionExternalReference": "SO-2026-0021", "netAmount": 160}


def earn(backend, payload=None, **kwargs):
    return backend.earn(payload or PAYLOAD, request_id="req-1", **kwargs)


def calls_to(url: str) -> list:
    return [c for c in responses.calls if c.request.url.split("?")[0] == url]


@responses.activate
def test_basic_grant_then_bearer_on_the_call(backend):
    responses.post(FABRIC_TOKEN_URL, json=token_answer("tok-basic"))
    responses.post(EARN_URL, status=201, json=earned())
    result = earn(backend)
    assert (result.status, result.remote_id, result.remote_reference, result.points) == (
        r.AWARDED,
        CODE,
        "LOYALTY-54321",
        Decimal("16"),
    )
    token_call = calls_to(FABRIC_TOKEN_URL)[0].request
    expected = base64.b64encode(f"{settings.FABRIC_CLIENT_ID}:{settings.FABRIC_CLIENT_SECRET}".encode()).decode()
    assert token_call.headers["Authorization"] == f"Basic {expected}"
    assert parse_qs(token_call.body) == {"grant_type": ["client_credentials"], "scope": ["s2s"]}
    sent = calls_to(EARN_URL)[0].request
    assert sent.headers["Authorization"] == "Bearer tok-basic"
    assert sent.headers["X-Request-Id"] == "req-1"
    assert json.loads(sent.body) == PAYLOAD


@pytest.mark.parametrize("style", ["form", "json"])
@responses.activate
def test_credentials_in_the_body_when_configured(options, style):
    backend = options(GRANT_STYLE=style, SCOPE=None)
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    responses.post(EARN_URL, status=201, json=earned())
    assert earn(backend).status == r.AWARDED
    token_call = calls_to(FABRIC_TOKEN_URL)[0].request
    assert "Authorization" not in token_call.headers
    body = json.loads(token_call.body) if style == "json" else {k: v[0] for k, v in parse_qs(token_call.body).items()}
    assert body == {
        "grant_type": "client_credentials",
        "client_id": settings.FABRIC_CLIENT_ID,
        "client_secret": settings.FABRIC_CLIENT_SECRET,
    }


@responses.activate
def test_token_is_cached_until_shortly_before_it_expires(backend, monkeypatch):
    responses.post(FABRIC_TOKEN_URL, json=token_answer("tok-1", expires_in=600))
    responses.post(FABRIC_TOKEN_URL, json=token_answer("tok-2", expires_in=600))
    responses.post(EARN_URL, status=201, json=earned())
    clock = [1000.0]
    monkeypatch.setattr(fabric_token.time, "monotonic", lambda: clock[0])
    earn(backend)
    clock[0] += 539  # the default margin: refreshed 60 s before expires_in
    earn(get_backend(get_settings().account("fabric")))  # another backend object, same process cache
    assert len(calls_to(FABRIC_TOKEN_URL)) == 1
    clock[0] += 1
    earn(backend)
    assert len(calls_to(FABRIC_TOKEN_URL)) == 2
    assert [c.request.headers["Authorization"] for c in calls_to(EARN_URL)] == [
        "Bearer tok-1",
        "Bearer tok-1",
        "Bearer tok-2",
    ]


@responses.activate
def test_a_401_refreshes_the_token_once_and_resends_once(backend):
    responses.post(FABRIC_TOKEN_URL, json=token_answer("tok-old"))
    responses.post(FABRIC_TOKEN_URL, json=token_answer("tok-new"))
    responses.post(EARN_URL, status=401, json={"status": 401, "message": "Unauthorized", "errors": {}})
    responses.post(EARN_URL, status=201, json=earned())
    assert earn(backend).status == r.AWARDED
    assert [c.request.headers["Authorization"] for c in calls_to(EARN_URL)] == ["Bearer tok-old", "Bearer tok-new"]
    assert len(calls_to(FABRIC_TOKEN_URL)) == 2


@responses.activate
def test_a_second_401_is_an_account_problem_not_a_loop(backend):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    responses.post(EARN_URL, status=401, json={"status": 401, "message": "Token lacks the loyalty scope", "errors": {}})
    result = earn(backend)
    assert result.status == r.UNAUTHORIZED
    assert "refused a freshly issued access token" in result.message and "loyalty scope" in result.message
    assert (len(calls_to(FABRIC_TOKEN_URL)), len(calls_to(EARN_URL))) == (2, 2)


def answer_token_with(answer) -> None:
    if isinstance(answer, Exception):
        responses.post(FABRIC_TOKEN_URL, body=answer)
    elif isinstance(answer[1], str):
        responses.post(FABRIC_TOKEN_URL, status=answer[0], body=answer[1], content_type="text/html")
    else:
        responses.post(FABRIC_TOKEN_URL, status=answer[0], json=answer[1])


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (
            (401, {"error": "invalid_client", "error_description": "Client authentication failed."}),
            "refused the client credentials: HTTP 401 invalid_client - Client authentication failed.",
        ),
        ((400, {"error": "invalid_scope"}), "refused the client credentials: HTTP 400 invalid_scope"),
    ],
)
@responses.activate
def test_refused_credentials_mean_unauthorized_with_a_clear_message_and_no_call(backend, answer, words):
    answer_token_with(answer)
    result = earn(backend)
    assert result.status == r.UNAUTHORIZED  # the lifecycle blocks the record and pauses the account
    assert result.message.startswith(f"fabric's token endpoint ({FABRIC_TOKEN_URL}) for account fabric")
    assert words in result.message
    assert settings.FABRIC_CLIENT_SECRET not in result.message
    assert calls_to(EARN_URL) == []
    earn(backend)
    assert len(calls_to(FABRIC_TOKEN_URL)) == 2  # a refusal is not remembered: a resume asks again


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (requests.ConnectionError("Connection refused"), "could not be reached: could not connect"),
        (requests.ReadTimeout("read timed out"), "could not be reached: no answer within the read timeout"),
        ((500, {"error": "server_error"}), "answered HTTP 500 server_error"),
        ((502, "<html>bad gateway</html>"), "answered HTTP 502 body is not JSON"),
        ((503, ""), "answered HTTP 503 empty body"),
        ((404, "<html>not found</html>"), "answered HTTP 404"),
        ((200, "<html>login</html>"), "without an access_token"),
        ((200, {"token": "somewhere-else-123"}), "without an access_token"),
    ],
)
@responses.activate
def test_a_token_endpoint_that_fails_is_transient_and_backed_off(backend, monkeypatch, answer, words):
    """Issue 12 item 7: 5xx, timeouts and connection errors from the token endpoint are retried like any outage
    (an attempt used, never the account paused); the failure is remembered, so the next calls wait it out
    without asking (no attempt used), and after the back-off the endpoint is asked again."""
    clock = [1000.0]
    monkeypatch.setattr(fabric_token.time, "monotonic", lambda: clock[0])
    answer_token_with(answer)
    result = earn(backend)
    assert (result.status, result.outcome_unknown) == (r.UNAVAILABLE, False)
    assert result.message.startswith(f"fabric's token endpoint ({FABRIC_TOKEN_URL}) for account fabric")
    assert words in result.message
    assert settings.FABRIC_CLIENT_SECRET not in result.message and "somewhere-else" not in result.message
    assert calls_to(EARN_URL) == []

    clock[0] += 0.1
    waiting = earn(backend)  # within the back-off (0.2 s in the test settings): fabric is not asked
    assert waiting.status == r.RATE_LIMITED and 0 < waiting.retry_after <= 0.2
    assert words in waiting.message and "1 time(s) in a row; not asked again for 0 s" in waiting.message
    assert len(calls_to(FABRIC_TOKEN_URL)) == 1

    clock[0] += 0.2
    responses.replace(responses.POST, FABRIC_TOKEN_URL, json=token_answer())
    responses.post(EARN_URL, status=201, json=earned())
    assert earn(backend).status == r.AWARDED
    assert len(calls_to(FABRIC_TOKEN_URL)) == 2


@responses.activate
def test_the_back_off_doubles_and_a_valid_token_outlives_a_failed_refresh(backend, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(fabric_token.time, "monotonic", lambda: clock[0])
    responses.post(FABRIC_TOKEN_URL, json=token_answer("tok-1", expires_in=600))
    responses.post(EARN_URL, status=201, json=earned())
    assert earn(backend).status == r.AWARDED
    responses.replace(responses.POST, FABRIC_TOKEN_URL, status=503, json={"error": "temporarily_unavailable"})
    clock[0] += 560  # past the early refresh (60 s before expiry), not past the expiry
    for _ in range(3):
        assert earn(backend).status == r.AWARDED  # the refresh failed; the token still valid is used
        clock[0] += 0.25  # the back-off is 0.2 s, then 0.4 s: the second call does not ask
    assert len(calls_to(FABRIC_TOKEN_URL)) == 3  # the first fetch, then two failed refreshes
    assert [c.request.headers["Authorization"] for c in calls_to(EARN_URL)] == ["Bearer tok-1"] * 4
    clock[0] += 40  # expired now, and the endpoint still fails: no stale token is sent
    assert earn(backend).status == r.UNAVAILABLE
    assert len(calls_to(EARN_URL)) == 4


@responses.activate
def test_a_token_echoed_in_an_answer_is_scrubbed(backend):
    responses.post(FABRIC_TOKEN_URL, json=token_answer("tok-echoed-0123456789"))
    responses.post(
        EARN_URL, status=422, json={"status": 422, "message": "bad request from tok-echoed-0123456789", "errors": {}}
    )
    result = earn(backend)
    assert result.status == r.REJECTED
    assert "tok-echoed" not in result.message + result.raw_text
    assert "***" in result.message


# -- answers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected", "unknown", "words"),
    [
        (200, earned(), r.AWARDED, False, ""),
        (
            422,
            {"status": 422, "message": "Validation error", "errors": {"netAmount": ["Net Amount must equal…"]}},
            r.REJECTED,
            False,
            "fabric refused the data (HTTP 422): netAmount: Net Amount must equal…",
        ),
        (
            400,
            {"status": 400, "message": "Exception message", "errors": {"profileId": ["Member not found."]}},
            r.REJECTED,
            False,
            "profileId: Member not found.",
        ),
        (400, {"status": 400, "message": "Exception message", "errors": {}}, r.REJECTED, False, "no detail"),
        (409, {"status": 409, "message": "Conflict", "errors": {}}, r.DUPLICATE, False, "already holds"),
        (
            400,
            {"status": 400, "message": "Duplicate transaction", "errors": {}},
            r.DUPLICATE,
            False,
            "Duplicate transaction",
        ),
        (
            422,
            {"status": 422, "message": "x", "errors": {"transactionExternalReference": ["already exists"]}},
            r.DUPLICATE,
            False,
            "already exists",
        ),
        # a refusal wrapped in a 2xx envelope
        (
            200,
            {"status": 422, "message": "Validation error", "errors": {"totalTax": ["required"]}},
            r.REJECTED,
            False,
            "HTTP 200 with body status 422",
        ),
        (201, {"status": 500, "message": "boom", "errors": {}}, r.UNAVAILABLE, True, "body status 500"),
        (201, {"status": 201, "message": "earned", "errors": {"x": ["?"]}}, r.UNAVAILABLE, True, "carries errors"),
        (201, {"status": 201, "message": "earned", "errors": {}, "data": {}}, r.UNAVAILABLE, True, "transactionCode"),
        (201, {"status": 201, "data": None}, r.UNAVAILABLE, True, "without a transactionCode"),
        (201, [earned()], r.UNAVAILABLE, True, "unexpected body"),
        (201, '{"status": 201, "data": {"transactionCode": "78', r.UNAVAILABLE, True, "body is not JSON"),
        (201, "", r.UNAVAILABLE, True, "empty body"),
        (429, {"status": 429, "message": "Too Many Requests", "errors": {}}, r.RATE_LIMITED, False, "rate-limiting"),
        (403, {"status": 403, "message": "Forbidden", "errors": {}}, r.FORBIDDEN, False, "Forbidden"),
        (500, {"status": 500, "message": "Internal Server Error"}, r.UNAVAILABLE, True, "HTTP 500"),
        (503, "<html>Service Unavailable</html>", r.UNAVAILABLE, True, "HTTP 503"),
        (504, "", r.UNAVAILABLE, True, "HTTP 504"),
        (422, '{"status": 422, "message": "Duplicate tr', r.UNAVAILABLE, True, "HTTP 422 but the body is not JSON"),
        (404, {"status": 404, "message": "Not Found"}, r.UNAVAILABLE, False, "check the account's BASE_URL"),
        (418, {"status": 418, "message": "teapot"}, r.REJECTED, False, "HTTP 418: teapot"),
    ],
)
@responses.activate
def test_every_answer_is_classified(backend, status, body, expected, unknown, words):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    if isinstance(body, str):
        responses.post(EARN_URL, status=status, body=body, content_type="text/html")
    else:
        responses.post(EARN_URL, status=status, json=body)
    result = earn(backend)
    assert (result.status, result.outcome_unknown, result.http_status) == (expected, unknown, status)
    assert words in result.message


@pytest.mark.parametrize(
    ("exc", "unknown", "words"),
    [
        (requests.ReadTimeout("read timed out"), True, "no answer within the read timeout"),
        (requests.ConnectTimeout("connect timed out"), False, "could not connect in time"),
        (requests.ConnectionError("Connection refused"), False, "could not connect"),
        (requests.ConnectionError("Connection reset by peer"), True, "connection broken"),
    ],
)
@responses.activate
def test_transport_failures(backend, exc, unknown, words):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    responses.post(EARN_URL, body=exc)
    result = earn(backend)
    assert (result.status, result.outcome_unknown, result.http_status) == (r.UNAVAILABLE, unknown, None)
    assert words in result.message


@responses.activate
def test_retry_after_is_read(backend):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    responses.post(EARN_URL, status=429, headers={"Retry-After": "7"}, json={"status": 429})
    assert earn(backend).retry_after == 7.0


# -- an earlier outcome unknown: look before resending -------------------------------------------------------


def transactions(*items) -> dict:
    return {"status": 200, "message": "Success", "errors": {}, "data": list(items)}


def earn_txn(reference="SO-2026-0021", code=CODE, kind="EARN", points=16) -> dict:
    return {
        "transactionCode": code,
        "transactionExternalReference": reference,
        "transactionType": kind,
        "transactionNumber": "LOYALTY-1",
        "points": points,
    }


@responses.activate
def test_an_earn_that_reached_fabric_is_awarded_without_a_second_post(backend):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    responses.get(TXN_URL, json=transactions(earn_txn()))
    result = earn(backend, outcome_unknown=True)
    assert (result.status, result.remote_id, result.remote_status, result.points) == (
        r.AWARDED,
        CODE,
        "found_by_lookup",
        Decimal("16"),
    )
    assert result.http_status == 200
    assert calls_to(EARN_URL) == []
    query = parse_qs(calls_to(TXN_URL)[0].request.url.split("?")[1])
    assert query == {
        "transactionExternalReference": ["SO-2026-0021"],
        "transactionType": ["EARN"],
        "profileId": [PROFILE],
    }


@pytest.mark.parametrize(
    "found",
    [[], [earn_txn(reference="SO-2026-00210")], [earn_txn(kind="EARN_REVERSE")], ["junk"]],
    ids=["none", "another reference", "a reversal", "junk"],
)
@responses.activate
def test_an_earn_that_did_not_reach_fabric_is_sent(backend, found):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    responses.get(TXN_URL, json=transactions(*found))
    responses.post(EARN_URL, status=201, json=earned())
    result = earn(backend, outcome_unknown=True)
    assert (result.status, result.remote_status) == (r.AWARDED, "")
    assert len(calls_to(EARN_URL)) == 1


@pytest.mark.parametrize(
    "answer",
    [
        (500, {"status": 500}),
        (404, {"status": 404, "message": "Not Found"}),
        (200, {"status": 200, "data": {"transactionCode": CODE}}),
        (200, "<html>"),
        requests.ReadTimeout("read timed out"),
    ],
)
@responses.activate
def test_when_fabric_cannot_be_asked_nothing_is_resent(backend, answer):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    if isinstance(answer, Exception):
        responses.get(TXN_URL, body=answer)
    elif isinstance(answer[1], str):
        responses.get(TXN_URL, status=answer[0], body=answer[1])
    else:
        responses.get(TXN_URL, status=answer[0], json=answer[1])
    result = earn(backend, outcome_unknown=True)
    assert (result.status, result.outcome_unknown) == (r.UNAVAILABLE, False)
    assert "could not check whether an earlier attempt reached fabric" in result.message
    assert calls_to(EARN_URL) == []


@responses.activate
def test_a_duplicate_after_an_unknown_outcome_fetches_the_earn(backend):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    responses.get(TXN_URL, json=transactions())  # not there yet...
    responses.post(EARN_URL, status=409, json={"status": 409, "message": "Duplicate transaction"})
    responses.get(TXN_URL, json=transactions(earn_txn()))  # ...the late first attempt landed meanwhile
    result = earn(backend, outcome_unknown=True)
    assert (result.status, result.remote_id) == (r.AWARDED, CODE)


@responses.activate
def test_a_duplicate_with_nothing_unknown_is_left_to_the_lifecycle(backend):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    responses.post(EARN_URL, status=409, json={"status": 409, "message": "Duplicate transaction"})
    assert earn(backend).status == r.DUPLICATE
    assert calls_to(TXN_URL) == []


# -- the member --------------------------------------------------------------------------------------------

LOOKUP_PAYLOAD = {"_memberPhone": "966512345678", "transactionExternalReference": "SO-2026-0021", "netAmount": 1}


@pytest.mark.parametrize(
    "data",
    [
        {"profileId": PROFILE, "loyaltyNumber": "10000147371"},
        [{"profileId": PROFILE}],
        [{"firstName": "Ahmed", "accounts": [{"profileId": PROFILE, "accountStatus": "Enabled"}]}],
    ],
    ids=["one object", "a list", "on its account"],
)
@responses.activate
def test_the_member_is_found_by_phone_and_kept(backend, data):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    responses.get(MEMBERS_URL, json={"status": 200, "message": "Success", "errors": {}, "data": data})
    responses.post(EARN_URL, status=201, json=earned())
    result = earn(backend, LOOKUP_PAYLOAD)
    assert result.status == r.AWARDED
    assert result.payload_update == {"profileId": PROFILE}
    assert calls_to(MEMBERS_URL)[0].request.url.endswith("?phonenumber=966512345678")
    sent = json.loads(calls_to(EARN_URL)[0].request.body)
    assert sent["profileId"] == PROFILE and "_memberPhone" not in sent


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, {"status": 200, "data": []}),
        (200, {"status": 200, "data": None}),
        (404, {"status": 404, "message": "Member not found", "errors": {}}),
    ],
)
@responses.activate
def test_no_member_is_rejected_or_skipped(backend, options, status, body):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    responses.get(MEMBERS_URL, status=status, json=body)
    result = earn(backend, LOOKUP_PAYLOAD)
    assert (result.status, result.message) == (r.REJECTED, "no fabric member has phone 9********678")
    assert earn(options(MISSING_MEMBER="skipped"), LOOKUP_PAYLOAD).status == r.SKIPPED
    assert calls_to(EARN_URL) == []


@responses.activate
def test_several_members_with_one_phone_need_a_profile_id(backend):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    members = [{"profileId": "a", "phoneNumber": "966512345678"}, {"profileId": "b", "phoneNumber": "966512345678"}]
    responses.get(MEMBERS_URL, json={"status": 200, "data": members})
    result = earn(backend, LOOKUP_PAYLOAD)
    assert result.status == r.REJECTED and "2 fabric members have phone" in result.message
    assert (result.body, result.raw_text) == (None, "")  # other customers' records are not kept


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ((500, {"status": 500}), r.UNAVAILABLE),
        ((404, "<html>not found</html>"), r.UNAVAILABLE),
        (requests.ConnectionError("Connection reset by peer"), r.UNAVAILABLE),
        ((400, {"status": 400, "errors": {"phonenumber": ["Digits only."]}}), r.REJECTED),
        ((429, {"status": 429}), r.RATE_LIMITED),
    ],
)
@responses.activate
def test_a_failed_member_lookup_never_posts(backend, answer, expected):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    if isinstance(answer, Exception):
        responses.get(MEMBERS_URL, body=answer)
    elif isinstance(answer[1], str):
        responses.get(MEMBERS_URL, status=answer[0], body=answer[1], content_type="text/html")
    else:
        responses.get(MEMBERS_URL, status=answer[0], json=answer[1])
    result = earn(backend, LOOKUP_PAYLOAD)
    assert (result.status, result.outcome_unknown) == (expected, False)
    assert calls_to(EARN_URL) == []


@pytest.mark.parametrize(
    ("status", "body", "shape"),
    [
        (200, {"status": 200, "members": [{"profileId": PROFILE}]}, "no data"),
        (200, {"status": 200, "data": {"content": [{"id": "1000"}], "totalElements": 1}}, "keys content"),
        (200, {"status": 200, "data": [{"id": "1000", "phoneNumber": "966512345678"}]}, "objects with keys id"),
        (200, {"status": 200, "data": [{"profileId": PROFILE}, {"id": "1001"}]}, "data is a list"),
        (200, {"status": 200, "data": "ok"}, "data is a str"),
        (200, {"status": 200, "data": [], "errors": {"phonenumber": ["timeout"]}}, "keys"),
        (200, {"status": 500, "data": []}, "keys"),
        (200, [], "a JSON list"),
        (404, {"status": 404, "message": "Not Found"}, None),
    ],
)
@responses.activate
def test_an_unrecognised_member_answer_is_cannot_tell_never_no_member(options, status, body, shape):
    """With MISSING_MEMBER="skipped", "no member" would earn nothing, silently: an answer we cannot read is retried."""
    backend = options(MISSING_MEMBER="skipped")
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    responses.get(MEMBERS_URL, status=status, json=body)
    result = earn(backend, LOOKUP_PAYLOAD)
    assert (result.status, result.outcome_unknown) == (r.UNAVAILABLE, False)
    if shape:
        assert "in a shape we do not recognise" in result.message and shape in result.message
        assert "cannot tell whether the customer is a member" in result.message
    else:
        assert "check the account's BASE_URL" in result.message
    assert "966512345678" not in result.message  # the phone is masked
    assert calls_to(EARN_URL) == []


@pytest.mark.parametrize(
    "item",
    [
        {
            k: v
            for k, v in earn_txn(reference="SO-OTHER", code="other-code").items()
            if k != "transactionExternalReference"
        },
        {"transactionCode": "other-code", "transactionType": "EARN", "points": 99},
        {"transactionExternalReference": "", "transactionCode": "other-code"},
        {"transactionExternalReference": None, "transactionCode": "other-code"},
    ],
    ids=["no reference field", "code only", "empty reference", "null reference"],
)
@responses.activate
def test_a_transaction_without_our_exact_reference_is_not_our_earn(backend, item):
    """A server that ignored the filter (and an item lacking the field) must not make another order's earn ours."""
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    responses.get(TXN_URL, json=transactions(item))
    responses.post(EARN_URL, status=201, json=earned())
    result = earn(backend, outcome_unknown=True)
    assert (result.status, result.remote_id, result.remote_status) == (r.AWARDED, CODE, "")
    assert len(calls_to(EARN_URL)) == 1


@responses.activate
def test_a_reversal_lookup_counts_only_our_exact_reference(backend):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    someone_elses = {"transactionCode": "other-reversal", "transactionType": "EARN_REVERSE", "points": -40}
    responses.get(TXN_URL, json=transactions(someone_elses))
    reversed_ = {**earned("our-reversal", points=-4), "message": "earn reversed"}
    responses.post(f"{FABRIC_URL}/v2/earn/reverse", status=201, json=reversed_)
    body = {"transactionExternalReference": "SO-2026-0021-R-1", "profileId": PROFILE}
    result = backend.reverse(None, body, request_id="r", before={}, outcome_unknown=True)
    assert (result.status, result.remote_id, result.points) == (r.AWARDED, "our-reversal", Decimal(4))
    assert len(calls_to(f"{FABRIC_URL}/v2/earn/reverse")) == 1


# -- lookup by transactionCode -----------------------------------------------------------------------------


@responses.activate
def test_lookup(backend):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    responses.get(TXN_URL, json=transactions({**earn_txn(), "status": "ACTIVE"}))
    responses.get(TXN_URL, json=transactions())
    found = backend.lookup(CODE)
    assert (found.found, found.remote_id, found.remote_status, found.points) == (True, CODE, "ACTIVE", Decimal(16))
    assert parse_qs(calls_to(TXN_URL)[0].request.url.split("?")[1]) == {"transactionCode": [CODE]}
    assert backend.lookup("unknown").found is False


@responses.activate
def test_lookup_counts_only_an_item_with_the_exact_code(backend):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    bare = {k: v for k, v in earn_txn(code="another").items() if k != "transactionCode"}
    responses.get(TXN_URL, json=transactions(bare, earn_txn(code="another")))
    assert backend.lookup(CODE).found is False


@responses.activate
def test_lookup_errors_raise(backend):
    responses.post(FABRIC_TOKEN_URL, json=token_answer())
    responses.get(TXN_URL, status=502, body="bad gateway")
    with pytest.raises(r.PlatformError) as info:
        backend.lookup(CODE)
    assert info.value.http_status == 502
    fabric_token.TOKENS.clear()
    responses.replace(responses.POST, FABRIC_TOKEN_URL, status=401, json={"error": "invalid_client"})
    with pytest.raises(r.PlatformError, match="refused the client credentials"):
        backend.lookup(CODE)
    responses.replace(responses.POST, FABRIC_TOKEN_URL, status=500, json={"error": "server_error"})
    with pytest.raises(r.PlatformError, match="answered HTTP 500"):
        backend.lookup(CODE)


# -- the account's settings in the backend, and the token cache ----------------------------------------------------


def test_a_misconfigured_account_is_refused_by_the_backend():
    from django.core.exceptions import ImproperlyConfigured

    with (
        override_settings(POINTS_EARN=fabric_settings(GRANT_STYLE="header")),
        pytest.raises(ImproperlyConfigured, match="GRANT_STYLE"),
    ):
        get_backend(get_settings().account("fabric"))


def test_refresh_margin_is_at_most_half_the_lifetime(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(fabric_token.time, "monotonic", lambda: clock[0])
    cache = fabric_token.TokenCache()
    token = cache.get(("k",), lambda: ("t", 30.0), margin=60)
    assert token.refresh_at == 15.0
    clock[0] = 14.9
    assert cache.get(("k",), lambda: ("u", 30.0), margin=60) is token
    clock[0] = 15.0
    assert cache.get(("k",), lambda: ("u", 30.0), margin=60).value == "u"
