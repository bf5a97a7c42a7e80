"""The fabric sandbox itself, through both transports (``responses`` in process, and real HTTP).

It must play the published contract (providers/fabric.md) and make each of its gaps a setting, since shops use it
for their own staging and tests. No database and no Redis here: the sandbox is plain Python.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import responses

from django_points_earn.sandbox import FabricSandbox, Faults, PointsSandbox, SandboxServer, register_fabric_responses

ROOT = Path(__file__).resolve().parent.parent
BASE = "https://loyalty.fabric.test/api"
TOKEN_URL = "https://login.fabric.test/oauth2/default/v1/token"
CLIENT, SECRET = "shop-client", "shop-secret-9f2"
PHONE = "966512345678"
PROFILE = "67460e74-02e3-11e8-b443-00163e990bdb"


@pytest.fixture(autouse=True)
def clean_redis() -> None:
    """Overrides the suite's autouse Redis fixture: nothing here needs Redis."""


def earn_body(reference: str = "123321abc", **changes: Any) -> dict:
    """fabric's documented example (gross 200, tax 20, discount 20, one item 90 x 2)."""
    body = {
        "profileId": PROFILE,
        "entityReference": "Company LIBERTY CENTER",
        "transactionTypeExternalReference": "Supplements",
        "activityTimestamp": "2020-02-08 09:30:26",
        "transactionExternalReference": reference,
        "transactionGrossAmount": 200,
        "checkForDuplicateTransaction": 1,
        "fetchUpdatedMemberPointTotals": 0,
        "totalAmountPaid": 180,
        "discountValue": 20,
        "totalTax": 20,
        "netAmount": 160,
        "issueAuditUser": "Joe",
        "discounts": [{"type": "promotion", "description": "Black Friday discount", "value": 20, "id": 23}],
        "transactionItems": [
            {
                "grossAmount": 200,
                "totalAmountPaid": 200,
                "taxAmount": 20,
                "netAmount": 180,
                "itemName": "demo item",
                "itemPrice": 90,
                "itemQuantity": 2,
                "SKU": "1123455",
                "UOM": "unit",
                "lineNumber": 0,
                "discounts": [{"type": "promotion", "description": "Black Friday discount", "id": 2345, "value": 0}],
                "couponCodes": ["H4B-1000"],
            }
        ],
        "setToPending": False,
    }
    body.update(changes)
    return body


def reverse_body(original: str = "123321abc", reference: str = "RMA-1", **changes: Any) -> dict:
    body = {
        "profileId": PROFILE,
        "entityReference": "LIBERTY",
        "reverseTransactionExternalRef": original,
        "transactionTypeExternalReference": "RETURN",
        "activityTimestamp": "2020-02-09 10:00:00",
        "transactionExternalReference": reference,
        "checkForDuplicateTransaction": 1,
        "fetchUpdatedMemberPointTotals": 1,
        "transactionGrossAmount": -200,
        "discountValue": -20,
        "totalAmountPaid": -180,
        "totalTax": -20,
        "netAmount": -160,
    }
    body.update(changes)
    return body


class Api:
    """A deliberately plain client: the sandbox is tested, not ours."""

    def __init__(self, base_url: str, token_url: str, sandbox: FabricSandbox) -> None:
        self.base_url, self.token_url, self.sandbox = base_url, token_url, sandbox
        self.token: str | None = None

    def get_token(self, client: str = CLIENT, secret: str = SECRET, **kw: Any) -> requests.Response:
        data = {"grant_type": "client_credentials", "scope": "s2s", **kw.pop("data", {})}
        return requests.post(self.token_url, data=data, auth=(client, secret), timeout=5, **kw)

    def call(
        self, method: str, path: str, bearer: str | None = "auto", timeout: float = 5, **kw: Any
    ) -> requests.Response:
        """``bearer="auto"`` fetches a token once and reuses it; None sends no Authorization header."""
        if bearer == "auto":
            if self.token is None:
                self.token = self.get_token().json()["access_token"]
            bearer = self.token
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        return requests.request(method, self.base_url + path, headers=headers, timeout=timeout, **kw)

    def earn(self, body: Any, **kw: Any) -> requests.Response:
        return self.call("POST", "/v2/earn", json=body, **kw)

    def reverse(self, body: Any) -> requests.Response:
        return self.call("POST", "/v2/earn/reverse", json=body)

    def transactions(self, **params: Any) -> requests.Response:
        return self.call("GET", "/v2/earn/get-transaction", params=params)

    def members(self, **params: Any) -> requests.Response:
        return self.call("GET", "/v1/members", params=params)


@pytest.fixture
def sandbox() -> FabricSandbox:
    fabric = FabricSandbox({CLIENT: SECRET}, merchant="shop", seed=7)
    fabric.add_member(PHONE, profile_id=PROFILE)
    return fabric


@pytest.fixture(params=["responses", pytest.param("http", marks=pytest.mark.slow)])
def api(request: pytest.FixtureRequest, sandbox: FabricSandbox) -> Iterator[Api]:
    if request.param == "responses":
        with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
            register_fabric_responses(rsps, sandbox, BASE, TOKEN_URL)
            yield Api(BASE, TOKEN_URL, sandbox)
    else:
        with SandboxServer(fabric=sandbox) as server:
            yield Api(server.fabric_base_url, server.fabric_token_url, sandbox)


@pytest.fixture
def mocked(sandbox: FabricSandbox) -> Iterator[Api]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        register_fabric_responses(rsps, sandbox, BASE, TOKEN_URL)
        yield Api(BASE, TOKEN_URL, sandbox)


def shop(sandbox: FabricSandbox) -> dict:
    return sandbox.ledger()["merchants"]["shop"]


# -- the token endpoint ------------------------------------------------------------------------------------


def test_client_credentials_get_a_bearer_token(api: Api) -> None:
    answer = api.get_token()
    assert answer.status_code == 200
    body = answer.json()
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 600, "s2s")
    assert len(body["access_token"]) > 20
    assert api.earn(earn_body(), bearer=body["access_token"]).status_code == 201
    assert shop(api.sandbox)["tokens_issued"] == 1


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"secret": "wrong"}, 401, "invalid_client"),
        ({"client": "nobody"}, 401, "invalid_client"),
        ({"data": {"grant_type": "password"}}, 400, "unsupported_grant_type"),
        ({"data": {"scope": "admin"}}, 400, "invalid_scope"),
    ],
)
def test_bad_token_requests_are_refused_the_oauth_way(api: Api, kwargs: dict, status: int, error: str) -> None:
    answer = api.get_token(**kwargs)
    assert answer.status_code == status
    assert answer.json()["error"] == error
    assert "access_token" not in answer.json()


def test_grant_style_is_enforced_and_configurable(mocked: Api) -> None:
    form = {"grant_type": "client_credentials", "scope": "s2s", "client_id": CLIENT, "client_secret": SECRET}
    refused = requests.post(TOKEN_URL, data=form, timeout=5)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_request")  # default: Basic
    mocked.sandbox.grant_style = "form"
    assert requests.post(TOKEN_URL, data=form, timeout=5).status_code == 200
    mocked.sandbox.grant_style = "json"
    assert requests.post(TOKEN_URL, json=form, timeout=5).status_code == 200
    assert requests.get(TOKEN_URL, timeout=5).status_code == 405
    with pytest.raises(ValueError, match="grant_style"):
        FabricSandbox(grant_style="header")


def test_tokens_expire(mocked: Api) -> None:
    token = mocked.get_token().json()["access_token"]
    assert mocked.earn(earn_body("A"), bearer=token).status_code == 201
    assert mocked.sandbox.expire_tokens() == 1
    expired = mocked.earn(earn_body("B"), bearer=token)
    assert expired.status_code == 401
    assert expired.json() == {
        "status": 401,
        "message": "Unauthorized",
        "errors": {"token": ["Token is invalid or expired."]},
        "data": None,
    }
    assert shop(mocked.sandbox)["unauthorized"] == 1
    assert mocked.earn(earn_body("B"), bearer=mocked.get_token().json()["access_token"]).status_code == 201

    short = FabricSandbox({CLIENT: SECRET}, token_lifetime=0)
    with responses.RequestsMock() as rsps:
        register_fabric_responses(rsps, short, BASE, TOKEN_URL)
        answer = Api(BASE, TOKEN_URL, short).get_token().json()
        assert answer["expires_in"] == 0
        assert Api(BASE, TOKEN_URL, short).earn(earn_body(), bearer=answer["access_token"]).status_code == 401


def test_calls_without_a_valid_token_are_401(mocked: Api) -> None:
    assert mocked.earn(earn_body(), bearer=None).json()["errors"] == {
        "token": ["Authentication credentials were not provided."]
    }
    assert mocked.earn(earn_body(), bearer="made-up").status_code == 401
    assert mocked.members(phonenumber=PHONE).status_code == 200  # "auto" fetches one
    mocked.sandbox.revoke_client(CLIENT)
    assert mocked.members(phonenumber=PHONE).status_code == 401  # a revoked client's tokens stop working
    assert mocked.get_token().status_code == 401
    assert mocked.sandbox.ledger()["unauthenticated"] == 2


@pytest.mark.parametrize(("kind", "status"), [("500", 500), ("html", 502)])
def test_token_outage(mocked: Api, kind: str, status: int) -> None:
    mocked.sandbox.set_token_outage(kind)
    assert mocked.get_token().status_code == status
    mocked.sandbox.set_token_outage(None)
    assert mocked.get_token().status_code == 200


def test_token_outage_reset(api: Api) -> None:
    api.sandbox.set_token_outage("reset")
    with pytest.raises(requests.ConnectionError):
        api.get_token()


# -- POST /v2/earn -----------------------------------------------------------------------------------------


def test_the_documented_example_earns(api: Api) -> None:
    answer = api.earn(earn_body())
    assert answer.status_code == 201
    body = answer.json()
    assert (body["status"], body["message"], body["errors"]) == (201, "earned", {})
    data = body["data"]
    assert re.fullmatch(r"[0-9a-f-]{36}", data["transactionCode"])
    assert (data["profileId"], data["points"], data["basePoints"]) == (PROFILE, 16, 16)  # 160 net x 0.1
    assert (data["totalAmountPaid"], data["totalTax"], data["transactionNetAmount"]) == (180, 20, 160)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", data["transactionDateTime"])  # no zone
    assert data["activityTimestamp"] == "2020-02-08T09:30:26.000000"
    assert "currentPointsBalance" not in data  # fetchUpdatedMemberPointTotals 0
    entry = shop(api.sandbox)["orders"]["123321abc"]
    assert (entry["awards"], entry["transactionCode"], entry["status"]) == (1, data["transactionCode"], "ACTIVE")


def test_balance_and_pending_when_asked(mocked: Api) -> None:
    data = mocked.earn(earn_body(fetchUpdatedMemberPointTotals=1, setToPending=True)).json()["data"]
    assert data["currentPointsBalance"] == 16
    assert shop(mocked.sandbox)["orders"]["123321abc"]["status"] == "PENDING"


@pytest.mark.parametrize("status", [422, 400])
def test_missing_fields_get_an_errors_map_with_the_configured_status(sandbox: FabricSandbox, status: int) -> None:
    sandbox.validation_status = status
    with responses.RequestsMock() as rsps:
        register_fabric_responses(rsps, sandbox, BASE, TOKEN_URL)
        body = earn_body()
        for key in ("entityReference", "netAmount", "checkForDuplicateTransaction", "profileId"):
            del body[key]
        answer = Api(BASE, TOKEN_URL, sandbox).earn(body)
    assert answer.status_code == status
    assert answer.json()["status"] == status
    assert answer.json()["errors"] == {
        "profileId": ["This field is required."],
        "entityReference": ["This field is required."],
        "checkForDuplicateTransaction": ["This field is required."],
        "netAmount": ["This field is required."],
    }
    assert answer.json()["message"] == "This field is required."
    assert shop(sandbox)["awards"] == 0


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        ({"checkForDuplicateTransaction": True}, {"checkForDuplicateTransaction": ["Must be the integer 0 or 1."]}),
        ({"fetchUpdatedMemberPointTotals": 2}, {"fetchUpdatedMemberPointTotals": ["Must be the integer 0 or 1."]}),
        (
            {"activityTimestamp": "2020-02-08T09:30:26Z"},
            {"activityTimestamp": ["Use the format YYYY-MM-DD HH:MM:SS (UTC)."]},
        ),
        (
            {"transactionExternalReference": "x" * 101},
            {"transactionExternalReference": ["Ensure this field has no more than 100 characters."]},
        ),
        ({"netAmount": "abc"}, {"netAmount": ["A valid number is required."]}),
        ({"totalTax": -1}, {"totalTax": ["Ensure this value is greater than or equal to 0."]}),
        ({"setToPending": 0}, {"setToPending": ["Must be a valid boolean."]}),
        ({"profileId": "not-a-member"}, {"profileId": ["Member not found."]}),
    ],
)
def test_rules(mocked: Api, changes: dict, errors: dict) -> None:
    answer = mocked.earn(earn_body(**changes))
    assert (answer.status_code, answer.json()["errors"]) == (422, errors)


def test_discount_value_must_be_an_integer_unless_configured(mocked: Api) -> None:
    body = earn_body(discountValue=20.5, totalAmountPaid=179.5, netAmount=159.5)
    assert mocked.earn(body).json()["errors"] == {"discountValue": ["A valid integer is required."]}
    assert mocked.earn(earn_body(discountValue=20.0)).status_code == 201  # 20.0 is an integer value
    mocked.sandbox.discount_value_as = "number"
    assert mocked.earn({**body, "transactionExternalReference": "B"}).status_code == 201


def test_item_keys_are_upper_case(mocked: Api) -> None:
    body = earn_body()
    item = body["transactionItems"][0]
    item["sku"], item["uom"] = item.pop("SKU"), item.pop("UOM")
    assert mocked.earn(body).json()["errors"] == {
        "transactionItems.0.sku": ["Unknown field; fabric spells it SKU."],
        "transactionItems.0.uom": ["Unknown field; fabric spells it UOM."],
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"totalAmountPaid": 181}, "totalAmountPaid"),  # 1. paid = gross - discount
        ({"netAmount": 161}, "netAmount"),  # 2. net = gross - tax - discount
        ({"transactionGrossAmount": 210, "totalAmountPaid": 190, "netAmount": 170}, "transactionGrossAmount"),  # 4.
    ],
)
def test_the_header_identities(mocked: Api, changes: dict, field: str) -> None:
    answer = mocked.earn(earn_body(**changes))
    assert answer.status_code == 422
    assert list(answer.json()["errors"]) == [field]


def test_the_item_identity_takes_item_discounts_per_unit(mocked: Api) -> None:
    body = earn_body()
    item = body["transactionItems"][0]
    item["discounts"][0]["value"] = 3  # 90 - 3/2 = 88.5 = net/2 only if net is 177
    assert list(mocked.earn(body).json()["errors"]) == ["transactionItems.0.netAmount"]
    item["netAmount"], item["grossAmount"], item["taxAmount"] = 177, 200, 23
    assert mocked.earn(body).status_code == 201


def test_identities_are_compared_after_rounding_to_two_places(mocked: Api) -> None:
    body = earn_body(
        transactionGrossAmount=10,
        totalAmountPaid=10,
        discountValue=0,
        totalTax=0,
        netAmount=10,
        discounts=[],
        transactionItems=[{"grossAmount": 10, "netAmount": 10, "itemPrice": 3.34, "itemQuantity": 3}],
    )
    assert list(mocked.earn(body).json()["errors"]) == ["transactionItems.0.netAmount"]  # 3.34 vs 3.33
    body["transactionItems"][0]["itemPrice"] = 3.33
    assert mocked.earn(body).status_code == 201  # 3.33 x 3 is not 10, but the two sides are equal once rounded


@pytest.mark.parametrize(("mode", "status"), [("400", 400), ("409", 409), ("422", 422)])
def test_a_repeated_reference_is_a_duplicate(mocked: Api, mode: str, status: int) -> None:
    mocked.sandbox.duplicate_mode = mode
    assert mocked.earn(earn_body()).status_code == 201
    again = mocked.earn(earn_body())
    assert again.status_code == status
    assert again.json()["errors"] == {
        "transactionExternalReference": ["Duplicate transaction: transactionExternalReference already exists."]
    }
    assert mocked.sandbox.awards("123321abc") == 1 and mocked.sandbox.double_awards() == []


def test_without_duplicate_checks_or_in_accept_mode_it_earns_again(mocked: Api) -> None:
    assert mocked.earn(earn_body(checkForDuplicateTransaction=0)).status_code == 201
    assert mocked.earn(earn_body(checkForDuplicateTransaction=0)).status_code == 201
    mocked.sandbox.duplicate_mode = "accept"
    assert mocked.earn(earn_body()).status_code == 201
    assert mocked.sandbox.awards("123321abc") == 3
    assert mocked.sandbox.double_awards() == ["123321abc"]


# -- faults ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "awards"),
    [("429", 429, 0), ("500", 500, 0), ("created_500", 500, 1), ("html", 502, 0)],
)
def test_faults_answer_as_scripted(api: Api, kind: str, status: int, awards: int) -> None:
    api.get_token()
    api.sandbox.script(kind)
    answer = api.earn(earn_body())
    assert answer.status_code == status
    assert api.sandbox.awards("123321abc") == awards
    assert shop(api.sandbox)["faults"] == {kind: 1}
    assert api.earn(earn_body()).status_code == (201 if awards == 0 else 400)  # then a duplicate


def test_slow_records_the_earn_and_the_client_times_out(api: Api) -> None:
    api.sandbox.set_faults(slow_seconds=0.5)
    api.sandbox.script("slow")
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.earn(earn_body(), timeout=0.2)
    assert api.sandbox.awards("123321abc") == 1
    found = api.transactions(transactionExternalReference="123321abc").json()["data"]
    assert [t["transactionType"] for t in found] == ["EARN"]


def test_truncated_and_reset(api: Api) -> None:
    api.get_token()
    api.sandbox.script("truncated", "reset")
    cut = api.earn(earn_body("T"))
    assert cut.status_code == 201
    with pytest.raises(ValueError):
        cut.json()
    with pytest.raises(requests.exceptions.ConnectionError):
        api.earn(earn_body("R"))
    assert (api.sandbox.awards("T"), api.sandbox.awards("R")) == (1, 0)


def test_random_faults_are_reproducible_with_a_seed() -> None:
    def run() -> list[int]:
        fabric = FabricSandbox({CLIENT: SECRET}, seed=3)
        fabric.add_member(PHONE, profile_id=PROFILE)
        fabric.set_faults(rate_429=0.3, rate_5xx=0.3)
        with responses.RequestsMock() as rsps:
            register_fabric_responses(rsps, fabric, BASE, TOKEN_URL)
            api = Api(BASE, TOKEN_URL, fabric)
            return [api.earn(earn_body(f"R-{n}")).status_code for n in range(20)]

    first = run()
    assert first == run() and {429, 500, 201} <= set(first)
    with pytest.raises(ValueError):
        FabricSandbox().script("explode")


@pytest.mark.slow
def test_overlapping_calls_are_counted(sandbox: FabricSandbox) -> None:
    sandbox.set_faults(latency_ms=200)
    with SandboxServer(fabric=sandbox) as server:
        api = Api(server.fabric_base_url, server.fabric_token_url, sandbox)
        api.get_token()
        threads = [threading.Thread(target=api.earn, args=(earn_body(f"O-{n}"),)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    ledger = shop(sandbox)
    assert (ledger["awards"], ledger["max_concurrency"]) == (3, 3) and ledger["overlaps"] == 2
    assert sandbox.overlaps() == 2


# -- get-transaction and members ---------------------------------------------------------------------------


def test_get_transaction_filters(api: Api) -> None:
    first = api.earn(earn_body("A")).json()["data"]
    api.earn(earn_body("B"))
    api.reverse(reverse_body("A", "RMA-A"))
    by_reference = api.transactions(transactionExternalReference="A").json()
    assert (by_reference["status"], by_reference["errors"]) == (200, {})
    assert [t["transactionCode"] for t in by_reference["data"]] == [first["transactionCode"]]
    by_code = api.transactions(transactionCode=first["transactionCode"]).json()["data"]
    assert [t["transactionExternalReference"] for t in by_code] == ["A"]
    earns = api.transactions(profileId=PROFILE, transactionType="EARN").json()["data"]
    assert [t["transactionExternalReference"] for t in earns] == ["A", "B"]
    reversals = api.transactions(transactionType="EARN_REVERSE").json()["data"]
    assert [(t["transactionExternalReference"], t["reverseTransactionExternalRef"]) for t in reversals] == [
        ("RMA-A", "A")
    ]
    assert len(api.transactions(limit=1, offset=1).json()["data"]) == 1
    assert api.transactions(transactionExternalReference="nope").json()["data"] == []
    assert api.transactions(transactionType="EARNED").status_code == 400
    assert api.sandbox.ledger()["merchants"]["shop"]["lookups"] == 7


def test_transactions_of_another_program_are_invisible(mocked: Api) -> None:
    mocked.earn(earn_body("MINE"))
    mocked.sandbox.add_client("other", "other-secret", "other-program")
    other = mocked.get_token("other", "other-secret").json()["access_token"]
    assert mocked.call("GET", "/v2/earn/get-transaction", bearer=other).json()["data"] == []
    assert mocked.sandbox.total_awards("other-program") == 0


def test_members_by_phone_profile_id_and_loyalty_number(api: Api) -> None:
    listed = api.members(phonenumber=PHONE).json()
    assert [m["profileId"] for m in listed["data"]] == [PROFILE]
    member = listed["data"][0]
    assert member["accounts"][0]["profileId"] == PROFILE and member["phoneNumber"] == PHONE
    assert api.members(phonenumber="966500000000").json()["data"] == []
    one = api.members(profileId=PROFILE).json()["data"]
    assert one["profileId"] == PROFILE  # a single member, not a list
    assert api.members(loyaltyNumber=member["loyaltyNumber"]).json()["data"]["profileId"] == PROFILE
    assert api.members(profileId="nobody").status_code == 404
    bad = api.members(phonenumber="+966 51")
    assert (bad.status_code, bad.json()["errors"]) == (400, {"phonenumber": ["Digits only, no spaces or dashes."]})
    assert shop(api.sandbox)["member_lookups"] == 6


def test_add_member_checks_the_phone() -> None:
    with pytest.raises(ValueError, match="digits"):
        FabricSandbox().add_member("+966512345678")
    assert re.fullmatch(r"[0-9a-f-]{36}", FabricSandbox().add_member("0512345678"))


# -- POST /v2/earn/reverse ---------------------------------------------------------------------------------


def test_a_reversal_takes_back_every_point_once(api: Api) -> None:
    api.earn(earn_body())
    answer = api.reverse(reverse_body())
    assert answer.status_code == 201
    body = answer.json()
    assert (body["message"], body["data"]["points"], body["data"]["currentPointsBalance"]) == ("earn reversed", -16, 0)
    again = api.reverse(reverse_body(reference="RMA-2"))
    assert (again.status_code, again.json()["errors"]) == (
        422,
        {"reverseTransactionExternalRef": ["This earn is already fully reversed."]},
    )
    ledger = shop(api.sandbox)
    assert ledger["points_reversed"] == 16
    assert ledger["orders"]["123321abc"]["status"] == "REVERSED"
    assert ledger["reversals"] == [
        {
            "reference": "RMA-1",
            "reverses": "123321abc",
            "transactionCode": body["data"]["transactionCode"],
            "points": -16,
        }
    ]


def test_partial_reversals_when_configured(mocked: Api) -> None:
    mocked.sandbox.partial_reversals = True
    mocked.earn(earn_body())  # 16 points on 160 net
    half = reverse_body(
        transactionGrossAmount=-100, discountValue=-10, totalAmountPaid=-90, totalTax=-10, netAmount=-80
    )
    assert mocked.reverse(half).json()["data"]["points"] == -8
    assert shop(mocked.sandbox)["orders"]["123321abc"]["status"] == "PARTIALLY_REVERSED"
    assert mocked.reverse({**half, "transactionExternalReference": "RMA-2"}).json()["data"]["points"] == -8
    assert mocked.reverse({**half, "transactionExternalReference": "RMA-3"}).status_code == 422


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"reverseTransactionExternalRef": "unknown"}, "reverseTransactionExternalRef"),
        ({"entityReference": "Company LIBERTY CENTER"}, "entityReference"),  # 3-15 characters here
        ({"transactionGrossAmount": 200}, "transactionGrossAmount"),  # negative header amounts
        ({"netAmount": -150}, "netAmount"),
        ({"profileId": None}, "profileId"),
    ],
)
def test_reverse_rules(mocked: Api, changes: dict, field: str) -> None:
    mocked.earn(earn_body())
    answer = mocked.reverse(reverse_body(**changes))
    assert answer.status_code == 422
    assert list(answer.json()["errors"]) == [field]


# -- ledger, reset, control --------------------------------------------------------------------------------


def test_ledger_is_json_and_never_holds_a_secret_or_a_token(mocked: Api) -> None:
    token = mocked.get_token().json()["access_token"]
    mocked.earn(earn_body(), bearer=token)
    text = json.dumps(mocked.sandbox.ledger())
    assert SECRET not in text and token not in text
    ledger = mocked.sandbox.ledger()
    assert (ledger["token_requests"], ledger["tokens_live"], ledger["members"]) == (1, 1, 1)
    assert shop(mocked.sandbox)["responses"] == {"201": 1}


def test_reset_forgets_transactions_but_keeps_clients_and_members(mocked: Api) -> None:
    mocked.earn(earn_body())
    mocked.sandbox.set_faults(rate_429=0.5)
    mocked.sandbox.reset()
    assert mocked.sandbox.total_awards() == 0 and mocked.sandbox.faults.rate_429 == 0.5
    mocked.sandbox.reset(faults=True)
    assert mocked.sandbox.faults == Faults()
    mocked.token = None  # tokens are forgotten too
    assert mocked.earn(earn_body()).status_code == 201


@pytest.mark.slow
def test_server_serves_both_platforms_and_the_fabric_controls(sandbox: FabricSandbox) -> None:
    points = PointsSandbox({"k": "main"})
    with SandboxServer(points, fabric=sandbox) as server:
        assert server.fabric_base_url == server.url + "/fabric/api"
        assert server.fabric_token_url == server.url + "/fabric/oauth2/default/v1/token"
        control = server.fabric_control_url
        assert control == server.url + "/__sandbox__/fabric"
        api = Api(server.fabric_base_url, server.fabric_token_url, sandbox)
        assert api.earn(earn_body()).status_code == 201
        assert requests.get(server.control_url + "/ledger", timeout=5).json()["merchants"]["main"]["calls"] == 0
        assert requests.get(control + "/ledger", timeout=5).json()["merchants"]["shop"]["awards"] == 1
        assert requests.post(control + "/members", json={"phone": "966500000001"}, timeout=5).status_code == 200
        assert len(api.members(phonenumber="966500000001").json()["data"]) == 1
        assert requests.post(control + "/expire-tokens", json={}, timeout=5).json() == {"expired": 1}
        assert api.members(phonenumber=PHONE).status_code == 401
        requests.post(control + "/token-outage", json={"kind": "500"}, timeout=5)
        assert api.get_token().status_code == 500
        requests.post(control + "/token-outage", json={"kind": None}, timeout=5)
        new = {"client_id": "c2", "client_secret": "s2", "merchant": "second"}
        assert requests.post(control + "/clients", json=new, timeout=5).json() == {"ok": True}
        assert api.get_token("c2", "s2").status_code == 200
        assert requests.post(control + "/script", json={"kinds": ["html"]}, timeout=5).json() == {"script": ["html"]}
        assert requests.post(control + "/faults", json={"rate_5xx": 2}, timeout=5).status_code == 400
        assert requests.post(control + "/reset", json={"faults": True}, timeout=5).json() == {"ok": True}
        assert requests.get(control + "/nothing", timeout=5).status_code == 404
        assert requests.get(server.url + "/fabric/elsewhere", timeout=5).status_code == 404
    assert sandbox.total_awards() == 0


def test_the_sandbox_refuses_bad_configuration() -> None:
    for kwargs in (
        {"validation_status": 500},
        {"duplicate_mode": "201"},
        {"discount_value_as": "float"},
        {"token_lifetime": -1},
    ):
        with pytest.raises(ValueError):
            FabricSandbox(**kwargs)
    with pytest.raises(ValueError):
        FabricSandbox().set_token_outage("boom")
    assert copy.deepcopy(Faults()) == Faults()


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


@pytest.mark.slow
def test_command_serves_fabric_and_never_prints_the_secret() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    args = [
        "--port",
        "0",
        "--fabric-client-id",
        "shop",
        "--fabric-client-secret",
        "very-secret-fabric",
        "--fabric-member",
        f"{PHONE}={PROFILE}",
        "--fabric-merchant",
        "boutique",
        "--fabric-token-lifetime",
        "30",
        "--fabric-discount-value-as",
        "number",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN_COMMAND, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        proc.stdout.readline()  # the Points line
        line = proc.stdout.readline()
        match = re.fullmatch(
            r"fabric sandbox on (http://127\.0\.0\.1:\d+)/fabric/api "
            r"\(token URL: \1/fabric/oauth2/default/v1/token; ledger: \1/__sandbox__/fabric/ledger\)\n",
            line,
        )
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        base = match.group(1)
        api = Api(base + "/fabric/api", base + "/fabric/oauth2/default/v1/token", FabricSandbox())
        token = api.get_token("shop", "very-secret-fabric").json()
        assert token["expires_in"] == 30
        assert api.earn(earn_body(discountValue=20.0), bearer=token["access_token"]).status_code == 201
        ledger = requests.get(base + "/__sandbox__/fabric/ledger", timeout=5).json()
        assert ledger["merchants"]["boutique"]["awards"] == 1
        assert ledger["discount_value_as"] == "number"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "very-secret-fabric" not in line + out + err


# -- quirks a client must survive (issue 12) ---------------------------------------------------------------


def test_get_transaction_can_ignore_its_filters(mocked: Api) -> None:
    mocked.earn(earn_body("A"))
    mocked.earn(earn_body("B"))
    mocked.sandbox.set_quirks(transactions="unfiltered")
    listed = mocked.transactions(transactionExternalReference="A").json()["data"]
    assert [t["transactionExternalReference"] for t in listed] == ["A", "B"]
    mocked.sandbox.set_quirks(transactions="unfiltered-bare")
    bare = mocked.transactions(transactionCode="nope").json()["data"]
    assert len(bare) == 2 and all("transactionExternalReference" not in t and "transactionCode" not in t for t in bare)
    mocked.sandbox.reset()
    assert mocked.sandbox.ledger()["transactions_answer"] == "exact"


def test_get_members_can_answer_a_shape_nobody_documented(mocked: Api) -> None:
    mocked.sandbox.set_quirks(members="unrecognised")
    data = mocked.members(phonenumber=PHONE).json()["data"]
    assert data["totalElements"] == 1 and "profileId" not in data["content"][0]
    mocked.sandbox.set_quirks(members="documented")
    assert mocked.members(phonenumber=PHONE).json()["data"][0]["profileId"] == PROFILE
    with pytest.raises(ValueError, match="members must be one of"):
        mocked.sandbox.set_quirks(members="odd")


def test_token_outage_slow_times_the_client_out(mocked: Api) -> None:
    mocked.sandbox.set_token_outage("slow")
    with pytest.raises(requests.ReadTimeout):
        mocked.get_token()
    mocked.sandbox.set_token_outage(None)
    assert mocked.get_token().status_code == 200


def test_a_reversal_cancels_every_point_unless_partial_reversals_are_on(mocked: Api) -> None:
    """fabric documents /v2/earn/reverse as cancelling all points of the earn: a part sent takes back everything."""
    earned = mocked.earn(earn_body("W")).json()["data"]["points"]
    part = reverse_body("W", "W-R1", transactionGrossAmount=-20, totalAmountPaid=-18, netAmount=-16)
    part.update(totalTax=-2, discountValue=-2)
    taken = mocked.reverse(part).json()["data"]["points"]
    assert taken == -earned
