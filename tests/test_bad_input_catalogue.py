"""The bad-input catalogue: bad data from the shop's adapter and bad answers from the platform.

Every case places the bad order next to a good one and checks: the bad one has a precise state and message, the
good one is awarded, and checkout committed. docs/reliability.md lists what each case yields.
"""

from __future__ import annotations

import json
import socket
import threading
from decimal import Decimal

import pytest
import requests
import responses as responses_lib

from django_points_earn.adapters import Line
from django_points_earn.models import EarningRecord, Status
from django_points_earn.sandbox import register_responses
from tests.conftest import POINTS_URL, run_worker, settle
from tests.shop.adapters import ShopAdapter
from tests.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)


def _lines(*specs):
    return list(specs)


# -- from the adapter: (id, order fields, adapter overrides, expected state, words in the reason) -----------------
ADAPTER_CASES = [
    ("phone-empty", {"phone": ""}, {}, Status.REJECTED, "no phone number"),
    ("phone-spaces-only", {"phone": "   "}, {}, Status.REJECTED, "no phone number"),
    ("phone-too-short", {"phone": "05123"}, {}, Status.REJECTED, "too short (5 digits)"),
    ("phone-too-long", {"phone": "0512345678901"}, {}, Status.REJECTED, "too long (13 digits)"),
    ("phone-landline", {"phone": "0112345678"}, {}, Status.REJECTED, "not a Saudi mobile"),
    ("phone-uae", {"phone": "+971 50 123 4567"}, {}, Status.REJECTED, "not Saudi"),
    ("phone-uk", {"phone": "+44 7700 900123"}, {}, Status.REJECTED, "not Saudi"),
    ("phone-letters", {"phone": "05l2345678"}, {}, Status.REJECTED, "characters other than digits"),
    ("phone-arabic-indic", {"phone": "٠٥١٢٣٤٥٦٧٨"}, {}, Status.AWARDED, ""),
    ("phone-spaces-dashes", {"phone": "+966 51-234-5678"}, {}, Status.AWARDED, ""),
    ("phone-not-text", {}, {"get_phone": lambda self, o: ["0512345678"]}, Status.REJECTED, "must be text"),
    ("total-negative", {"shipping": Decimal("-100")}, {}, Status.REJECTED, "total is negative"),
    ("total-nan", {}, {"get_total": lambda self, o: Decimal("NaN")}, Status.REJECTED, "not a finite number"),
    ("total-infinite", {}, {"get_total": lambda self, o: float("inf")}, Status.REJECTED, "not a finite number"),
    ("total-huge", {}, {"get_total": lambda self, o: Decimal("1e13")}, Status.REJECTED, "implausibly large"),
    ("total-text", {}, {"get_total": lambda self, o: "a lot"}, Status.REJECTED, "total is not a number"),
    ("total-float-artefact", {}, {"get_total": lambda self, o: 0.1 + 0.2}, Status.AWARDED, ""),
    ("total-none", {}, {"get_total": lambda self, o: None}, Status.REJECTED, "total is not a number"),
    ("lines-none", {"lines": []}, {}, Status.REJECTED, "order has no lines"),
    ("line-quantity-zero", {"lines": [("Tea", "5", 0)]}, {}, Status.REJECTED, "quantity is 0"),
    ("line-quantity-negative", {"lines": [("Tea", "5", -2), ("Cake", "20", 1)]}, {}, Status.REJECTED, "quantity is -2"),
    (
        "line-price-negative",
        {"lines": [("Tea", "5", 1), ("Voucher", "-1", 1)]},
        {},
        Status.REJECTED,
        "line 2 price is negative",
    ),
    ("line-price-zero", {"lines": [("Free sample", "0", 1), ("Tea", "5", 1)]}, {}, Status.AWARDED, ""),
    ("line-name-empty", {"lines": [("", "5", 1)]}, {}, Status.REJECTED, "line 1 has no product name"),
    ("lines-thousands", {"lines": [(f"Item {i}", "1.25", 1) for i in range(3000)]}, {}, Status.AWARDED, ""),
    ("line-name-very-long", {}, {"get_lines": lambda self, o: [Line("x" * 5000, "5", 1)]}, Status.AWARDED, ""),
    ("line-name-arabic-emoji", {"lines": [("قهوة عربية ☕️🇸🇦", "12.5", 2)]}, {}, Status.AWARDED, ""),
    (
        "lines-not-lines",
        {},
        {"get_lines": lambda self, o: [{"name": "Tea"}]},
        Status.REJECTED,
        "could not build the request",
    ),
    (
        "metadata-not-json",
        {},
        {"get_metadata": lambda self, o: {"at": object()}},
        Status.REJECTED,
        "metadata is not JSON-serialisable",
    ),
    ("metadata-not-dict", {}, {"get_metadata": lambda self, o: ["web"]}, Status.REJECTED, "metadata must be a dict"),
    ("order-number-empty", {}, {"get_order_number": lambda self, o: "  "}, Status.REJECTED, "no order number"),
    (
        "order-number-too-long",
        {},
        {"get_order_number": lambda self, o: "N" * 101},
        Status.REJECTED,
        "longer than 100 characters",
    ),
    (
        "adapter-raises",
        {},
        {"get_lines": lambda self, o: 1 / 0},
        Status.REJECTED,
        "the order adapter failed: ZeroDivisionError",
    ),
    ("account-unknown", {"account": "atlantis"}, {}, Status.REJECTED, 'POINTS_EARN["ACCOUNTS"]["atlantis"]'),
]


@pytest.mark.parametrize(
    ("fields", "overrides", "state", "words"), [c[1:] for c in ADAPTER_CASES], ids=[c[0] for c in ADAPTER_CASES]
)
def test_bad_data_from_the_adapter(place_order, points_api, monkeypatch, fields, overrides, state, words):
    for name, fn in overrides.items():
        monkeypatch.setattr(ShopAdapter, name, fn)
    place_order("SO-CASE", **fields)
    monkeypatch.undo()
    place_order("SO-OTHER")
    settle()
    assert Order.objects.filter(number="SO-CASE").exists()  # checkout committed whatever the data
    case = EarningRecord.objects.exclude(order_number="SO-OTHER").get()
    assert case.status == state, case.status_reason
    assert words in case.status_reason
    assert EarningRecord.objects.get(order_number="SO-OTHER").status == Status.AWARDED
    if state == Status.AWARDED:
        assert points_api.awards(case.order_number) == 1


# -- from the platform: the first answer for SO-CASE is bad; later calls (and every other order) go to the sandbox
HUGE = json.dumps(
    {
        "status": True,
        "data": {"uuid": "u-huge", "order_status": "approved", "total_points": 10, "padding": "x" * 3_000_000},
    }
)
PLATFORM_CASES = [
    # (id, status, body, content type, state after the first attempt, words in the first attempt's error)
    ("html-502", 502, "<html><h1>502 Bad Gateway</h1></html>", "text/html", Status.QUEUED, "HTTP 502"),
    ("html-200", 200, "<html>maintenance</html>", "text/html", Status.QUEUED, "body is not JSON (text/html"),
    ("empty-200", 200, "", "application/json", Status.QUEUED, "empty body"),
    (
        "truncated-200",
        200,
        '{"status": true, "data": {"uuid": "55',
        "application/json",
        Status.QUEUED,
        "body is not JSON",
    ),
    (
        "status-false-200",
        200,
        {"status": False, "message": "Temporary problem"},
        None,
        Status.QUEUED,
        "status false: Temporary problem",
    ),
    ("json-array-200", 200, [1, 2], None, Status.QUEUED, "unexpected body"),
    (
        "no-uuid-200",
        200,
        {"status": True, "data": {"order_status": "approved"}},
        None,
        Status.QUEUED,
        "without an order uuid",
    ),
    ("server-error-500", 500, {"message": "Server Error"}, None, Status.QUEUED, "HTTP 500: Server Error"),
    ("unavailable-503", 503, "Service Unavailable", "text/plain", Status.QUEUED, "HTTP 503"),
    ("garbled-422", 422, '{"message": "The given', "application/json", Status.QUEUED, "HTTP 422 but the body"),
    ("garbled-400", 400, "<html>400</html>", "text/html", Status.QUEUED, "HTTP 400 but the body"),
    ("not-found-404", 404, {"message": "Not Found"}, None, Status.QUEUED, "check the account's BASE_URL"),
    ("rate-limited-bad-retry-after", 429, {"message": "slow down"}, None, Status.QUEUED, "slow down"),
    (
        "validation-422",
        422,
        {
            "message": "The given data was invalid.",
            "errors": {"products.0.product_name": ["The product name is too long."]},
        },
        None,
        Status.REJECTED,
        "products.0.product_name: The product name is too long.",
    ),
    ("teapot-418", 418, {"message": "I'm a teapot"}, None, Status.REJECTED, "HTTP 418: I'm a teapot"),
    (
        "connection-reset",
        None,
        requests.ConnectionError("Connection reset by peer"),
        None,
        Status.QUEUED,
        "connection broken",
    ),
    (
        "read-timeout",
        None,
        requests.ReadTimeout("read timed out"),
        None,
        Status.QUEUED,
        "no answer within the read timeout",
    ),
]


@pytest.mark.parametrize(
    ("status", "body", "ctype", "state", "words"), [c[1:] for c in PLATFORM_CASES], ids=[c[0] for c in PLATFORM_CASES]
)
def test_bad_answers_from_the_platform(place_order, sandbox, status, body, ctype, state, words):
    served = []

    def bad_first(request):
        if b'"SO-CASE"' in (request.body or b"") and not served:
            served.append(1)
            if isinstance(body, Exception):
                raise body
            text = body if isinstance(body, str) else json.dumps(body)
            headers = {"Content-Type": ctype or "application/json"}
            if status == 429:
                headers["Retry-After"] = "soon"  # not a number: ignored, the default backoff applies
            return status, headers, text
        return None

    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(
            responses_lib.POST,
            f"{POINTS_URL}/orders/earning",
            callback=lambda req: bad_first(req) or _to_sandbox(sandbox, req),
        )
        register_responses(rsps, sandbox, POINTS_URL)
        place_order("SO-CASE")
        place_order("SO-OTHER")
        run_worker()
        case = EarningRecord.objects.get(order_number="SO-CASE")
        first = case.attempt_set.order_by("number").first()
        assert words in first.error
        assert case.status in (state, Status.AWARDED) if state == Status.QUEUED else case.status == state
        settle()
    case.refresh_from_db()
    assert case.status == (Status.REJECTED if state == Status.REJECTED else Status.AWARDED), case.status_reason
    assert EarningRecord.objects.get(order_number="SO-OTHER").status == Status.AWARDED
    assert sandbox.double_awards("main") == []


def _to_sandbox(sandbox, request):
    answer = sandbox.handle(request.method, "/orders/earning", dict(request.headers), request.body or b"")
    return answer.status, answer.headers, answer.body


def test_huge_answer_is_used_and_stored_cut(place_order):
    with responses_lib.RequestsMock() as rsps:
        rsps.post(f"{POINTS_URL}/orders/earning", body=HUGE, content_type="application/json")
        place_order("SO-HUGE")
        run_worker()
    case = EarningRecord.objects.get()
    assert (case.status, case.remote_id) == (Status.AWARDED, "u-huge")
    attempt = case.attempt_set.get()
    assert len(attempt.response_body) < 25_000 and "more characters]" in attempt.response_body


def test_unknown_fields_and_wrong_content_type_are_tolerated(place_order):
    body = json.dumps(
        {
            "status": True,
            "data": {"uuid": "u-1", "order_status": "approved", "total_points": 7, "brand_new_field": {"x": 1}},
            "another": [],
        }
    )
    with responses_lib.RequestsMock() as rsps:
        rsps.post(f"{POINTS_URL}/orders/earning", body=body, content_type="text/plain")
        place_order("SO-EXTRA")
        run_worker()
    case = EarningRecord.objects.get()
    assert (case.status, case.remote_id, case.points) == (Status.AWARDED, "u-1", 7)


def test_answer_that_never_ends_is_cut_at_the_deadline(place_order, settings):
    """A server that sends headers, then one byte every 0.3 s forever: never a per-read timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            try:
                server.settimeout(0.2)
                conn, _ = server.accept()
            except OSError:
                continue
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b" ")
                except OSError:
                    break
                stop.wait(0.3)
            conn.close()

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    accounts = {**settings.POINTS_EARN["ACCOUNTS"]}
    accounts["main"] = {**accounts["main"], "BASE_URL": f"http://127.0.0.1:{server.getsockname()[1]}/api/v1"}
    settings.POINTS_EARN = {
        **settings.POINTS_EARN,
        "ACCOUNTS": accounts,
        "RETRY": {**settings.POINTS_EARN["RETRY"], "MAX_ATTEMPTS": 1},
    }
    try:
        place_order("SO-FOREVER")
        run_worker()
    finally:
        stop.set()
        thread.join(5)
        server.close()
    case = EarningRecord.objects.get()
    attempt = case.attempt_set.get()
    assert "still arriving after the whole-call timeout" in attempt.error
    assert attempt.duration_ms < 5000  # connect 1 s + read 2 s in the test settings, not forever
    assert (case.status, case.outcome_unknown) == (Status.FAILED, True)
