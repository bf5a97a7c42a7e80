"""The Points sandbox itself, through both transports (``responses`` in process, and real HTTP).

It must play the published contract (providers/points.md), since shops use it for their own staging and tests.
No database and no Redis here: the sandbox is plain Python.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from django_points_earn.sandbox import Faults, PointsSandbox, SandboxServer, register_responses, serve
from django_points_earn.sandbox.server import check_loopback

ROOT = Path(__file__).resolve().parent.parent
BASE = "https://sandbox.papp.sa/api/v1"
KEY = "sandbox-key"
OTHER_KEY = "other-key"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - only ever used to prove it is refused


@pytest.fixture(autouse=True)
def clean_redis() -> None:
    """Overrides the suite's autouse Redis fixture: nothing here needs Redis."""


def order(number: str = "SALE-1", phone: str = "512345678", total: Any = 115.0, **extra: Any) -> dict:
    """The contract's example order: 18.50 x 2 + 39.00 x 2 = 115.00 SAR."""
    return {
        "phone_number": phone,
        "total_price": total,
        "order_number": number,
        "products": [
            {"product_name": "Cappuccino", "product_price": 18.5, "quantity": 2},
            {"product_name": "Cheesecake", "product_price": 39.0, "quantity": 2},
        ],
        **extra,
    }


class Api:
    """A deliberately plain client: the sandbox is tested, not ours."""

    def __init__(self, base_url: str, transport: str, sandbox: PointsSandbox) -> None:
        self.base_url, self.transport, self.sandbox = base_url, transport, sandbox

    def call(self, method: str, path: str, key: str | None = KEY, timeout: Any = 5, **kw: Any) -> requests.Response:
        headers = {"Accept": "application/json", **kw.pop("headers", {})}
        if key is not None:
            headers["x-api-key"] = key
        return requests.request(method, self.base_url + path, headers=headers, timeout=timeout, **kw)

    def earn(self, body: Any, key: str | None = KEY, **kw: Any) -> requests.Response:
        return self.call("POST", "/orders/earning", key, json=body, **kw)

    def get(self, order_uuid: str, key: str = KEY) -> requests.Response:
        return self.call("GET", f"/orders/{order_uuid}", key)

    def refund(self, order_uuid: str, body: Any = None, key: str = KEY) -> requests.Response:
        return self.call("POST", f"/orders/{order_uuid}/refund", key, json={} if body is None else body)

    def cancel(self, order_uuid: str, body: Any = None, key: str = KEY) -> requests.Response:
        return self.call("POST", f"/orders/{order_uuid}/cancel", key, json={} if body is None else body)


@pytest.fixture
def sandbox() -> PointsSandbox:
    return PointsSandbox({KEY: "sandbox", OTHER_KEY: "other"}, seed=7)


@pytest.fixture(params=["responses", pytest.param("http", marks=pytest.mark.slow)])
def api(request: pytest.FixtureRequest, sandbox: PointsSandbox) -> Iterator[Api]:
    if request.param == "responses":
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            register_responses(rsps, sandbox)
            yield Api(BASE, "responses", sandbox)
    else:
        with SandboxServer(sandbox) as server:
            yield Api(server.points_base_url, "http", sandbox)


@pytest.fixture
def mocked(sandbox: PointsSandbox) -> Iterator[Api]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        register_responses(rsps, sandbox)
        yield Api(BASE, "responses", sandbox)


@pytest.fixture
def server(sandbox: PointsSandbox) -> Iterator[SandboxServer]:
    with SandboxServer(sandbox) as running:
        yield running


def wait_for(condition: Callable[[], bool], seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def merchant_ledger(sandbox: PointsSandbox, name: str = "sandbox") -> dict:
    return sandbox.ledger()["merchants"][name]


def error(message: str) -> dict:
    return {"status": False, "message": message, "appended_data": {}}


# -- authentication ----------------------------------------------------------------------------------------


def test_missing_key_is_400_not_401(api: Api) -> None:
    r = api.earn(order(), key=None)
    assert r.status_code == 400
    assert r.json() == error("API key is required")
    assert api.sandbox.ledger()["unauthenticated"] == 1


def test_unknown_and_revoked_keys_are_400(api: Api) -> None:
    assert api.earn(order(), key="nope").json() == error("Invalid or inactive API key")
    api.sandbox.revoke(KEY)
    r = api.earn(order())
    assert (r.status_code, r.json()) == (400, error("Invalid or inactive API key"))
    assert api.sandbox.total_awards() == 0


def test_header_name_is_case_insensitive(api: Api) -> None:
    r = api.earn(order(), key=None, headers={"X-API-KEY": KEY})
    assert r.status_code == 200


def test_forbidden_merchant_is_403_until_allowed(api: Api) -> None:
    api.sandbox.forbid("sandbox")
    r = api.earn(order())
    assert (r.status_code, r.json()) == (403, error("Merchant is not allowed to create earning orders"))
    api.sandbox.forbid(OTHER_KEY, "Your IP address is not allowed to access this API.")
    assert api.earn(order(), key=OTHER_KEY).json()["message"] == "Your IP address is not allowed to access this API."
    api.sandbox.allow("sandbox")
    assert api.earn(order()).status_code == 200
    assert merchant_ledger(api.sandbox)["responses"] == {"403": 1, "200": 1}


def test_two_keys_of_one_merchant_share_its_orders(api: Api) -> None:
    api.sandbox.add_merchant("rotated-key", "sandbox")
    created = api.earn(order()).json()["data"]
    assert api.get(created["uuid"], key="rotated-key").status_code == 200


# -- validation --------------------------------------------------------------------------------------------


def test_missing_fields_are_422_with_the_first_message_on_top(api: Api) -> None:
    r = api.earn({})
    assert r.status_code == 422
    assert r.json() == {
        "status": False,
        "message": "The phone number field is required.",
        "appended_data": {},
        "errors": {
            "phone_number": ["The phone number field is required."],
            "total_price": ["The total price field is required."],
            "order_number": ["The order number field is required."],
            "products": ["The products field is required."],
        },
    }
    assert api.sandbox.total_awards() == 0


def test_rule_violations_use_dot_keys(api: Api) -> None:
    body = order(
        total="abc",
        name="x" * 256,
        shipping_amount=-5,
        tax_amount="1.5",  # numeric strings pass, as with Laravel's numeric rule
        discount_amount=None,
        shipping_address={"city": "c" * 101, "line1": "l" * 256},
        metadata=["not", "an", "object"],
    )
    body["products"] = [
        {"product_name": "", "product_price": -1, "quantity": 0},
        {"product_name": "Tea", "product_price": "free", "quantity": 1.5},
    ]
    r = api.earn(body)
    assert r.status_code == 422
    assert r.json()["errors"] == {
        "total_price": ["The total price must be a number."],
        "products.0.product_name": ["The product name field is required."],
        "products.0.product_price": ["The product price must be at least 0."],
        "products.0.quantity": ["The quantity must be at least 1."],
        "products.1.product_price": ["The product price must be a number."],
        "products.1.quantity": ["The quantity must be an integer."],
        "name": ["The name must not be greater than 255 characters."],
        "shipping_amount": ["The shipping amount must be at least 0."],
        "shipping_address.city": ["The city must not be greater than 100 characters."],
        "shipping_address.line1": ["The line1 must not be greater than 255 characters."],
        "metadata": ["The metadata must be an array."],
    }
    assert r.json()["message"] == "The total price must be a number."


def test_empty_products_and_bad_types(api: Api) -> None:
    r = api.earn({**order(), "products": [], "order_number": 17, "phone_number": 512345678})
    assert r.json()["errors"] == {
        "phone_number": ["The phone number must be a string."],
        "order_number": ["The order number must be a string."],
        "products": ["The products field is required."],
    }


def test_limits_are_inclusive_and_nullables_accept_null(api: Api) -> None:
    body = order(
        total=0,
        name="n" * 255,
        shipping_amount=None,
        tax_amount=0,
        discount_amount=10,
        shipping_address={"city": "c" * 100, "line1": None},
        metadata=None,
    )
    r = api.earn(body)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["total_points"] == 0


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"total_price": NaN}'])
def test_a_body_that_is_not_a_json_object_is_400(api: Api, body: bytes) -> None:
    r = api.call("POST", "/orders/earning", data=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["status"] is False and r.json()["message"]


@pytest.mark.parametrize("phone", ["+966512345678", "00966512345678", "966512345678", "0512345678", "512345678"])
def test_documented_phone_forms_are_normalised(api: Api, phone: str) -> None:
    assert api.earn(order(phone=phone)).status_code == 200
    assert merchant_ledger(api.sandbox)["orders"]["SALE-1"]["phone_number"] == "512345678"


@pytest.mark.parametrize(
    "phone", ["0612345678", "51234567", "5123456789", "+15551234567", "05 1234 5678", "٠٥١٢٣٤٥٦٧٨"]
)
def test_other_phones_are_422(api: Api, phone: str) -> None:
    r = api.earn(order(phone=phone))
    assert r.status_code == 422
    assert r.json()["errors"] == {"phone_number": ["The phone number format is invalid."]}


def test_strings_are_trimmed_like_laravel(api: Api) -> None:
    created = api.earn(order(number="  SALE-T  ", phone=" 0512345678 ")).json()["data"]
    assert created["order_number"] == "SALE-T"
    assert api.earn(order(number="   ")).json()["errors"] == {"order_number": ["The order number field is required."]}


# -- success and pending shapes ----------------------------------------------------------------------------


def test_success_is_the_documented_envelope(api: Api) -> None:
    r = api.earn(order(metadata={"channel": "web", "branch_code": "RUH-01"}))
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert (body["status"], body["message"], body["appended_data"]) == (True, "", {})
    data = body["data"]
    assert uuid.UUID(data["uuid"]).version == 4
    assert re.fullmatch(r"REF-\d{4}-\d{6}", data["reference_number"])
    assert isinstance(data["id"], int)
    assert (data["order_status"], data["order_number"], data["type"]) == ("approved", "SALE-1", 1)
    assert (data["total_price"], data["total_points"]) == (115.0, 1150)
    assert data["metadata"] == {"channel": "web", "branch_code": "RUH-01"}
    assert data["items"] == [
        {"product_name": "Cappuccino", "product_price": 18.5, "quantity": 2},
        {"product_name": "Cheesecake", "product_price": 39.0, "quantity": 2},
    ]
    for stamp in ("created_at", "updated_at"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data[stamp])
    assert api.sandbox.awards("SALE-1") == 1
    [event] = api.sandbox.events
    assert event["event"] == "approved" and event["merchant"] == "sandbox"
    assert event["payload"]["order"]["id"] == data["uuid"]  # webhooks carry the uuid as the id
    assert event["payload"]["order"]["type"] == "earning"


def test_points_follow_the_merchant_rate_never_the_request() -> None:
    sandbox = PointsSandbox(points_per_sar=20)
    response = sandbox.handle(
        "POST",
        "/orders/earning",
        {"x-api-key": "sandbox-key"},
        json.dumps({**order(), "total_points": 5}).encode(),
    )
    assert response.json()["data"]["total_points"] == 2300


def test_pending_customer_gets_the_pending_shape_until_activation(api: Api) -> None:
    r = api.earn(order(number="SALE-P", phone="0500000003"))
    assert r.status_code == 200
    body = r.json()
    pending_id = body["data"]["pending_earning_order"]["id"]
    assert body == {
        "status": True,
        "message": "",
        "appended_data": {},
        "data": {
            "pending_client_activation": True,
            "pending_earning_order": {
                "id": pending_id,
                "merchant_order_number": "SALE-P",
                "total_price": 115.0,
                "total_points": 1150,
            },
        },
    }
    assert api.sandbox.awards("SALE-P") == 0
    assert merchant_ledger(api.sandbox)["pending"][0]["order_number"] == "SALE-P"

    resend = api.earn(order(number="SALE-P", phone="0500000003"))  # a resend while pending is a duplicate
    assert resend.json()["errors"] == {"order_number": ["The order number has already been taken."]}

    [activated] = api.sandbox.activate("+966500000003")
    assert (activated["order_number"], activated["order_status"], activated["total_points"]) == (
        "SALE-P",
        "approved",
        1150,
    )
    assert api.sandbox.awards("SALE-P") == 1
    assert merchant_ledger(api.sandbox)["pending"] == []
    assert api.get(activated["uuid"]).json()["data"]["uuid"] == activated["uuid"]
    assert api.sandbox.events[-1]["payload"]["order"]["order_number"] == "SALE-P"
    # The customer is active now: the next earning is approved at once.
    assert api.earn(order(number="SALE-P2", phone="500000003")).json()["data"]["order_status"] == "approved"


# -- duplicates and the lock -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "status", "awards"),
    [("422", 422, 1), ("400", 400, 1), ("409", 409, 1), ("replay", 200, 1), ("accept", 200, 2)],
)
def test_duplicate_order_number_modes(api: Api, mode: str, status: int, awards: int) -> None:
    api.sandbox.duplicate_mode = mode
    first = api.earn(order()).json()["data"]
    again = api.earn(order())
    assert again.status_code == status
    if mode == "422":
        assert again.json()["errors"] == {"order_number": ["The order number has already been taken."]}
    elif mode in ("400", "409"):
        assert again.json() == error("Order number already exists")
    elif mode == "replay":
        assert again.json()["data"]["uuid"] == first["uuid"]
    else:
        assert again.json()["data"]["uuid"] != first["uuid"]
    assert api.sandbox.awards("SALE-1") == awards
    assert api.sandbox.double_awards() == (["SALE-1"] if awards > 1 else [])
    # Another merchant may use the same order number.
    assert api.earn(order(), key=OTHER_KEY).status_code == 200
    assert api.sandbox.awards("SALE-1", "other") == 1


def test_a_call_during_the_lock_is_429_and_counted_as_an_overlap(api: Api) -> None:
    api.sandbox.set_faults(latency_ms=400)
    barrier = threading.Barrier(2)
    results: list[requests.Response] = []

    def send(number: str) -> None:
        barrier.wait()
        results.append(api.earn(order(number=number)))

    threads = [threading.Thread(target=send, args=(n,)) for n in ("SALE-A", "SALE-B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(r.status_code for r in results) == [200, 429]
    busy = next(r for r in results if r.status_code == 429)
    assert busy.json() == error("Another earning request is being processed, please retry shortly")
    ledger = merchant_ledger(api.sandbox)
    assert (ledger["overlaps"], ledger["max_concurrency"], ledger["faults"]) == (1, 2, {})
    assert api.sandbox.overlaps() == 1 and api.sandbox.total_awards() == 1
    # Other merchants have their own lock.
    assert api.sandbox.overlaps("other") == 0


def test_latency_is_spent_holding_the_lock(mocked: Api) -> None:
    mocked.sandbox.set_faults(latency_ms=150, latency_jitter_ms=20)
    started = time.monotonic()
    assert mocked.earn(order()).status_code == 200
    assert time.monotonic() - started >= 0.12
    # A validation error never reaches the lock, so it is not slowed down.
    started = time.monotonic()
    assert mocked.earn({}).status_code == 422
    assert time.monotonic() - started < 0.1


# -- faults ------------------------------------------------------------------------------------------------


def test_injected_429_does_nothing_and_is_not_an_overlap(api: Api) -> None:
    api.sandbox.script("429")
    r = api.earn(order())
    assert (r.status_code, r.json()) == (
        429,
        error("Another earning request is being processed, please retry shortly"),
    )
    ledger = merchant_ledger(api.sandbox)
    assert (ledger["faults"], ledger["overlaps"], ledger["awards"]) == ({"429": 1}, 0, 0)
    assert api.earn(order()).status_code == 200  # the retry goes through
    assert api.sandbox.awards("SALE-1") == 1


def test_injected_500_creates_nothing(api: Api) -> None:
    api.sandbox.script("500")
    r = api.earn(order())
    assert r.status_code == 500 and r.json() == {"message": "Server Error"}
    assert api.sandbox.awards("SALE-1") == 0
    assert api.earn(order()).status_code == 200


def test_created_then_500_awards_and_the_retry_is_a_duplicate(api: Api) -> None:
    api.sandbox.script("created_500")
    assert api.earn(order()).status_code == 500
    assert api.sandbox.awards("SALE-1") == 1
    assert api.earn(order()).status_code == 422
    assert api.sandbox.awards("SALE-1") == 1
    assert merchant_ledger(api.sandbox)["responses"] == {"500": 1, "422": 1}


def test_slow_does_the_work_and_the_client_times_out(api: Api) -> None:
    api.sandbox.set_faults(slow_seconds=0.8)
    api.sandbox.script("slow")
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.earn(order(), timeout=(2, 0.3))
    if api.transport == "responses":
        assert time.monotonic() - started < 0.2  # raised at once, no real wait
    assert api.sandbox.awards("SALE-1") == 1
    wait_for(lambda: merchant_ledger(api.sandbox)["responses"] == {"timeout": 1})
    assert merchant_ledger(api.sandbox)["faults"] == {"slow": 1}


def test_html_gateway_page_creates_nothing(api: Api) -> None:
    api.sandbox.script("html")
    r = api.earn(order())
    assert r.status_code == 502
    assert r.headers["Content-Type"].startswith("text/html")
    assert "502 Bad Gateway" in r.text
    assert api.sandbox.awards("SALE-1") == 0


def test_truncated_json_after_the_order_was_created(api: Api) -> None:
    api.sandbox.script("truncated")
    r = api.earn(order())
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    assert api.sandbox.awards("SALE-1") == 1


def test_reset_drops_the_connection_and_creates_nothing(api: Api) -> None:
    api.sandbox.script("reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        api.earn(order())
    assert api.sandbox.awards("SALE-1") == 0
    assert merchant_ledger(api.sandbox)["responses"] == {"reset": 1}
    assert api.earn(order()).status_code == 200  # the next call is served normally


def test_script_runs_in_order_and_ok_lets_a_call_through(mocked: Api) -> None:
    mocked.sandbox.set_faults(rate_5xx=1.0)
    mocked.sandbox.script("ok", "html")
    statuses = [mocked.earn(order(number=f"S-{n}")).status_code for n in range(3)]
    assert statuses == [200, 502, 500]  # script first, then the random rates
    assert mocked.sandbox.ledger()["script"] == []
    with pytest.raises(ValueError):
        mocked.sandbox.script("meteor")


def test_random_faults_are_reproducible_with_a_seed() -> None:
    def run() -> list[int]:
        sandbox = PointsSandbox(seed=42)
        sandbox.set_faults(rate_429=0.2, rate_5xx=0.2, rate_html=0.1)
        return [
            sandbox.handle(
                "POST",
                "/orders/earning",
                {"x-api-key": "sandbox-key"},
                json.dumps(order(number=f"S-{n}")).encode(),
            ).status
            for n in range(40)
        ]

    first = run()
    assert first == run()
    assert {200, 429, 500, 502} <= set(first)


def test_fault_config_is_validated() -> None:
    with pytest.raises(ValueError):
        Faults(rate_429=1.5)
    with pytest.raises(ValueError):
        Faults(rate_429=0.6, rate_5xx=0.6)
    with pytest.raises(ValueError):
        Faults(latency_ms=-1)
    with pytest.raises(TypeError):
        PointsSandbox().set_faults(rate_meteor=0.1)
    with pytest.raises(ValueError):
        PointsSandbox(duplicate_mode="418")


# -- lookups, refunds, cancel ------------------------------------------------------------------------------


def test_get_order_is_404_for_unknown_and_for_another_merchants_order(api: Api) -> None:
    created = api.earn(order()).json()["data"]
    r = api.get(created["uuid"])
    assert r.status_code == 200
    assert {k: r.json()["data"][k] for k in ("uuid", "order_status", "total_points")} == {
        "uuid": created["uuid"],
        "order_status": "approved",
        "total_points": 1150,
    }
    missing = api.get(str(uuid.uuid4()))
    assert (missing.status_code, missing.json()["status"]) == (404, False)
    assert set(missing.json()) == {"status", "message", "appended_data"}
    assert api.get(created["uuid"], key=OTHER_KEY).status_code == 404


def test_partial_refunds_take_back_proportional_points(api: Api) -> None:
    created = api.earn(order()).json()["data"]
    first = api.refund(created["uuid"], {"amount": 25, "reason": "One line item returned"})
    assert first.status_code == 200
    assert first.json()["data"]["order_status"] == "partially_refunded"
    entry = merchant_ledger(api.sandbox)["orders"]["SALE-1"]
    assert (entry["refunded_points"], entry["refunded_amount"]) == (250, 25.0)  # 1150 * 25 / 115

    too_much = api.refund(created["uuid"], {"amount": 90.01})
    assert too_much.status_code == 400 and too_much.json()["status"] is False

    rest = api.refund(created["uuid"])  # {} refunds whatever is left
    assert rest.json()["data"]["order_status"] == "fully_refunded"
    entry = merchant_ledger(api.sandbox)["orders"]["SALE-1"]
    assert (entry["status"], entry["refunded_points"], entry["refunded_amount"]) == (
        "fully_refunded",
        1150,
        115.0,
    )
    assert entry["awards"] == 1  # a refund is not an award

    again = api.refund(created["uuid"])
    assert again.status_code == 400
    refunds = [e["payload"]["order"] for e in api.sandbox.events if e["event"] == "refunded"]
    assert [(e["refund_amount"], e["refund_points"], e["left_points"], e["left_amount"]) for e in refunds] == [
        (25.0, 250, 900, 90.0),
        (90.0, 900, 0, 0.0),
    ]
    assert refunds[0]["reason"] == "One line item returned"


def test_refund_validation_and_ownership(api: Api) -> None:
    created = api.earn(order()).json()["data"]
    assert api.refund(created["uuid"], {"amount": -1}).json()["errors"] == {
        "amount": ["The amount must be at least 0."]
    }
    assert api.refund(created["uuid"], {"amount": 0}).status_code == 400
    assert api.refund(created["uuid"], {"reason": "r" * 501}).status_code == 422
    assert api.refund(created["uuid"], key=OTHER_KEY).status_code == 404
    assert api.refund(str(uuid.uuid4())).status_code == 404


def test_refund_window_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    from django_points_earn.sandbox import points

    sandbox = PointsSandbox(refund_window_days=3)
    earn = sandbox.handle("POST", "/orders/earning", {"x-api-key": KEY}, json.dumps(order()))
    refund_path = f"/orders/{earn.json()['data']['uuid']}/refund"
    created_at = points._now()
    monkeypatch.setattr(points, "_now", lambda: created_at + timedelta(days=3, seconds=1))
    refused = sandbox.handle("POST", refund_path, {"x-api-key": KEY}, b"{}")
    assert refused.status == 400 and "window" in refused.json()["message"]
    monkeypatch.setattr(points, "_now", lambda: created_at + timedelta(days=2))
    assert sandbox.handle("POST", refund_path, {"x-api-key": KEY}, b"{}").status == 200


def test_cancel_of_an_approved_earning_order_is_400_unless_configured(api: Api) -> None:
    created = api.earn(order()).json()["data"]
    r = api.cancel(created["uuid"], {"reason": "changed my mind"})
    assert r.status_code == 400 and r.json()["status"] is False
    api.sandbox.cancel_approved = True  # the other reading of the docs
    r = api.cancel(created["uuid"])
    assert r.json()["data"]["order_status"] == "cancelled"
    assert api.sandbox.events[-1]["payload"]["order"]["reason"] == "Order cancelled via API"
    assert api.cancel(created["uuid"]).status_code == 400


def test_unknown_path_is_404_json_and_wrong_method_405(api: Api) -> None:
    r = api.call("GET", "/nowhere")
    assert (r.status_code, r.json()["status"]) == (404, False)
    assert api.call("DELETE", "/orders/earning").status_code == 405


# -- the ledger --------------------------------------------------------------------------------------------


def test_ledger_counts_and_is_json(mocked: Api) -> None:
    sandbox = mocked.sandbox
    mocked.earn(order())
    mocked.earn(order())
    mocked.earn({})
    sandbox.script("500")
    mocked.earn(order(number="SALE-2"))
    mocked.earn(order(number="SALE-3", phone="500000003"))
    ledger = json.loads(json.dumps(sandbox.ledger()))
    mine = ledger["merchants"]["sandbox"]
    assert mine["calls"] == 5
    assert mine["responses"] == {"200": 2, "422": 2, "500": 1}
    assert mine["faults"] == {"500": 1}
    assert (mine["awards"], mine["points_awarded"], mine["max_concurrency"]) == (1, 1150, 1)
    assert mine["orders"]["SALE-1"]["awards"] == 1
    assert [p["order_number"] for p in mine["pending"]] == ["SALE-3"]
    assert sandbox.total_awards() == 1 and sandbox.double_awards() == []
    assert ledger["merchants"]["other"]["calls"] == 0
    assert KEY not in json.dumps(ledger)

    sandbox.reset()
    assert sandbox.total_awards() == 0 and sandbox.events == []
    assert merchant_ledger(sandbox)["calls"] == 0
    assert mocked.earn(order()).status_code == 200  # merchants and keys survive a reset


# -- the HTTP server ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", [ALL_INTERFACES, "", "192.168.1.10", "::", "example.com", "10.0.0.1"])
def test_server_refuses_non_loopback_addresses(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        SandboxServer(PointsSandbox(), host=host)


def test_loopback_names_are_accepted() -> None:
    assert check_loopback("localhost") == "127.0.0.1"
    assert check_loopback("127.0.0.2") == "127.0.0.2"
    assert check_loopback("::1") == "::1"


@pytest.mark.slow
def test_server_control_endpoints(server: SandboxServer, sandbox: PointsSandbox) -> None:
    control = server.control_url
    assert server.url.startswith("http://127.0.0.1:")
    assert server.points_base_url == server.url + "/api/v1"

    r = requests.post(control + "/merchants", json={"api_key": "k2", "name": "jeddah", "forbidden": True}, timeout=5)
    assert r.json() == {"ok": True, "merchant": "jeddah"}
    earn = requests.post(
        server.points_base_url + "/orders/earning", json=order(), headers={"x-api-key": "k2"}, timeout=5
    )
    assert earn.status_code == 403

    assert requests.post(control + "/faults", json={"latency_ms": 5}, timeout=5).json()["faults"]["latency_ms"] == 5
    assert requests.post(control + "/faults", json={"rate_429": 3}, timeout=5).status_code == 400
    assert requests.post(control + "/script", json={"kinds": ["html", "ok"]}, timeout=5).json() == {
        "script": ["html", "ok"]
    }
    assert sandbox.faults.latency_ms == 5

    headers = {"x-api-key": KEY}
    url = server.points_base_url + "/orders/earning"
    assert requests.post(url, json=order(phone="500000003"), headers=headers, timeout=5).status_code == 502
    assert requests.post(url, json=order(phone="500000003"), headers=headers, timeout=5).status_code == 200
    activated = requests.post(control + "/activate", json={"phone": "0500000003"}, timeout=5).json()["orders"]
    assert [o["order_number"] for o in activated] == ["SALE-1"]

    ledger = requests.get(control + "/ledger", timeout=5).json()
    assert ledger["merchants"]["sandbox"]["orders"]["SALE-1"]["awards"] == 1
    assert ledger["merchants"]["jeddah"]["responses"] == {"403": 1}
    assert [e["event"] for e in requests.get(control + "/events?since=0", timeout=5).json()["events"]] == ["approved"]

    assert requests.post(control + "/reset", json={"faults": True}, timeout=5).json() == {"ok": True}
    assert sandbox.total_awards() == 0 and sandbox.faults == Faults()
    assert requests.get(control + "/nothing", timeout=5).status_code == 404
    assert requests.get(server.url + "/elsewhere", timeout=5).status_code == 404


@pytest.mark.slow
def test_server_slow_call_holds_the_lock_while_it_hangs(server: SandboxServer, sandbox: PointsSandbox) -> None:
    sandbox.set_faults(slow_seconds=1.0)
    sandbox.script("slow")
    url, headers = server.points_base_url + "/orders/earning", {"x-api-key": KEY}
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(url, json=order(), headers=headers, timeout=(2, 0.2))
    busy = requests.post(url, json=order(), headers=headers, timeout=5)  # the retry comes too early
    assert busy.status_code == 429
    assert sandbox.overlaps() == 1 and sandbox.awards("SALE-1") == 1
    wait_for(lambda: merchant_ledger(sandbox)["in_flight"] == 0)
    assert requests.post(url, json=order(), headers=headers, timeout=5).status_code == 422  # now: a duplicate


@pytest.mark.slow
def test_server_keeps_quiet_and_never_prints_the_key(sandbox: PointsSandbox, capfd: pytest.CaptureFixture) -> None:
    with serve(sandbox) as server:
        session = requests.Session()  # keep-alive: several requests on one connection
        for n in range(3):
            r = session.post(
                server.points_base_url + "/orders/earning",
                json=order(number=f"Q-{n}"),
                headers={"x-api-key": KEY},
                timeout=5,
            )
            assert r.status_code == 200
        sandbox.script("reset")
        with pytest.raises(requests.exceptions.ConnectionError):
            session.post(
                server.points_base_url + "/orders/earning",
                json=order(number="Q-R"),
                headers={"x-api-key": KEY},
                timeout=5,
            )
        session.close()
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# -- the management command --------------------------------------------------------------------------------

_RUN_COMMAND = """
import sys
import django
from django.conf import settings
settings.configure()
django.setup()
from django_points_earn.management.commands.points_sandbox import Command
Command().run_from_argv(["manage.py", "points_sandbox", *sys.argv[1:]])
"""


def _start_command(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", _RUN_COMMAND, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_command_serves_until_a_signal_and_never_prints_the_key(signum: int) -> None:
    proc = _start_command(
        "--port",
        "0",
        "--api-key",
        "very-secret-key=riyadh",
        "--latency-ms",
        "1",
        "--rate-429",
        "0",
        "--seed",
        "3",
    )
    try:
        line = proc.stdout.readline()
        match = re.fullmatch(
            r"Points sandbox on (http://127\.0\.0\.1:\d+)/api/v1 \(ledger: \1/__sandbox__/ledger\)\n", line
        )
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        base = match.group(1)
        r = requests.post(
            base + "/api/v1/orders/earning", json=order(), headers={"x-api-key": "very-secret-key"}, timeout=5
        )
        assert r.status_code == 200
        assert requests.get(base + "/__sandbox__/ledger", timeout=5).json()["merchants"]["riyadh"]["awards"] == 1
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "very-secret-key" not in line + out + err


@pytest.mark.slow
def test_command_refuses_a_public_host() -> None:
    proc = _start_command("--host", ALL_INTERFACES, "--port", "0")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert "loopback" in err


def test_latency_is_the_round_trip_played_with_the_sandboxs_own_work_inside_it(monkeypatch):
    """Behind the HTTP server, the latency sleep only fills up the time since the request arrived; in process
    (no arrival noted) it is the whole latency."""
    from django_points_earn.sandbox import timing

    slept: list[float] = []
    monkeypatch.setattr(timing.time, "sleep", slept.append)
    timing.sleep_out(0.020)
    with timing.request_arrived(time.monotonic() - 0.015):  # 15 ms already spent reading and working
        timing.sleep_out(0.020)
    with timing.request_arrived(time.monotonic() - 1.0):  # slower than the latency: answer at once
        timing.sleep_out(0.020)
    assert slept[0] == 0.020
    assert 0 < slept[1] <= 0.005
    assert len(slept) == 2
