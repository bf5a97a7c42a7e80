"""fabric refunds (issue 12): the reversal always names the member, partial refunds are an explicit choice of the
account, and the earning never shows less taken back than fabric took. Real Redis, real database, the fabric
sandbox behind `responses`."""

import json
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
import requests
import responses as responses_lib
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from django_points_earn import lifecycle
from django_points_earn.conf import get_settings
from django_points_earn.models import EarningRecord, Reversal, ReversalStatus, Status
from django_points_earn.providers import get_backend
from django_points_earn.providers import results as r
from django_points_earn.sandbox import register_responses
from django_points_earn.signals import order_refunded
from tests.conftest import FABRIC_TOKEN_URL, FABRIC_URL, POINTS_URL, settle
from tests.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)
R = ReversalStatus


def refund(order, amount=None, refund_id="RMA-1", reason="returned"):
    order_refunded.send(sender=Order, order=order, amount=amount, reason=reason, refund_id=refund_id)


def fabric_options(**options):
    conf = {**settings.POINTS_EARN, "ACCOUNTS": {**settings.POINTS_EARN["ACCOUNTS"]}}
    conf["ACCOUNTS"]["fabric"] = {**conf["ACCOUNTS"]["fabric"], **options}
    return override_settings(POINTS_EARN=conf)


def fabric_backend():
    return get_backend(get_settings().account("fabric"))


def killed_after_the_earn(record: EarningRecord) -> None:
    """A worker looks the member up and earns, then dies before it records anything; its lease expires."""
    claimed, attempt = lifecycle.claim_and_start_attempt(record, lease_seconds=60, trigger="worker")
    fabric_backend().earn(claimed.payload, request_id=str(attempt.request_id))  # the answer dies with the worker
    EarningRecord.objects.filter(pk=record.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert lifecycle.recover_expired_leases() == 1


def sent_reversals(record: EarningRecord) -> list[dict]:
    return [a.request_body for a in record.attempt_set.filter(reversal__isnull=False).order_by("number")]


# -- item 3: the reversal names the member ----------------------------------------------------------------------


def test_an_earn_found_by_get_transaction_keeps_the_member_and_its_reversal_names_it(place_order, fabric_api):
    order = place_order("SO-KILLED", account="fabric")
    record = EarningRecord.objects.get()
    assert "profileId" not in record.payload  # found by phone at send time
    killed_after_the_earn(record)
    settle()
    record.refresh_from_db()
    assert (record.status, record.remote_status) == (Status.AWARDED, "found_by_lookup")
    profile = fabric_api.ledger()["merchants"]["fabric"]["orders"]["SO-KILLED"]["profileId"]
    assert record.payload["profileId"] == profile  # kept, as a first attempt would have kept it

    refund(order)
    settle()
    reversal = Reversal.objects.get()
    assert reversal.status == R.REVERSED, reversal.status_reason
    assert [body["profileId"] for body in sent_reversals(record)] == [profile]


def test_a_record_without_the_member_looks_it_up_before_reversing(place_order, fabric_api):
    """A record awarded before the member was kept (or whose lookup failed then): the reversal finds the member
    by phone first, and the body on the attempt is the one sent, never profileId null."""
    order = place_order("SO-OLD", account="fabric")
    settle()
    record = EarningRecord.objects.get()
    profile = record.payload.pop("profileId")
    EarningRecord.objects.filter(pk=record.pk).update(payload=record.payload)
    refund(order)
    settle()
    reversal = Reversal.objects.get()
    assert reversal.status == R.REVERSED, reversal.status_reason
    assert reversal.remote_before == {"profileId": profile}
    assert [body["profileId"] for body in sent_reversals(record)] == [profile]
    assert fabric_api.ledger()["merchants"]["fabric"]["orders"]["SO-OLD"]["reversed_points"] == record.points


@responses_lib.activate
def test_a_reversal_whose_member_cannot_be_found_now_is_not_sent(db):
    responses_lib.post(FABRIC_TOKEN_URL, json={"access_token": "tok-12345678", "expires_in": 600})
    responses_lib.get(f"{FABRIC_URL}/v1/members", status=503, json={"status": 503})
    record = SimpleNamespace(payload={"_memberPhone": "966512345678", "transactionExternalReference": "SO-9"})
    body = {"transactionExternalReference": "SO-9-R-1", "profileId": None}
    result = fabric_backend().reverse(record, body, request_id="r", before={})
    assert result.status == r.UNAVAILABLE
    assert result.message.startswith("the earn's fabric member is unknown and member lookup answered HTTP 503")
    assert not [c for c in responses_lib.calls if c.request.url.endswith("/v2/earn/reverse")]
    with pytest.raises(r.PlatformError, match="fabric member is unknown"):
        fabric_backend().snapshot(record)


@responses_lib.activate
def test_the_member_of_a_found_earn_comes_from_a_lookup_when_the_transaction_lacks_it(db):
    responses_lib.post(FABRIC_TOKEN_URL, json={"access_token": "tok-12345678", "expires_in": 600})
    txn = {"transactionCode": "code-1", "transactionExternalReference": "SO-9", "transactionType": "EARN"}
    responses_lib.get(f"{FABRIC_URL}/v2/earn/get-transaction", json={"status": 200, "data": [txn]})
    responses_lib.get(f"{FABRIC_URL}/v1/members", json={"status": 200, "data": [{"profileId": "p-1"}]})
    payload = {"_memberPhone": "966512345678", "transactionExternalReference": "SO-9", "netAmount": 10}
    result = fabric_backend().earn(payload, request_id="r", outcome_unknown=True)
    assert (result.status, result.remote_id, result.payload_update) == (r.AWARDED, "code-1", {"profileId": "p-1"})
    assert json.loads(responses_lib.calls[-1].response.text)["data"][0]["profileId"] == "p-1"


# -- item 2: partial refunds are the account's explicit choice -------------------------------------------------


def fabric_ledger(fabric) -> dict:
    return fabric.ledger()["merchants"]["fabric"]


def test_a_partial_refund_is_refused_at_once_by_default_and_nothing_is_sent(place_order, fabric_api):
    order = place_order("SO-P50", account="fabric", lines=[("Bakhoor", "200.00", 1)])
    settle()
    refund(order, Decimal("50"), refund_id="P-1")
    reversal = Reversal.objects.get()  # decided inside the shop's refund, before any worker
    assert (reversal.status, reversal.amount) == (R.REJECTED, Decimal("50.00"))
    assert reversal.status_reason.startswith("partial refund of 50.00 out of 200.00 not sent: fabric's /v2/earn/")
    assert 'set POINTS_EARN["ACCOUNTS"]["fabric"]["PARTIAL_REVERSALS"] to "pro_rata"' in reversal.status_reason
    settle()
    record = EarningRecord.objects.get()
    assert record.status == Status.AWARDED
    assert fabric_ledger(fabric_api)["reverse_calls"] == 0

    from django_points_earn import reversal_lifecycle

    assert reversal_lifecycle.requeue(reversal, actor="ops")  # sent again by hand: still refused, still nothing sent
    settle()
    reversal.refresh_from_db()
    assert reversal.status == R.REJECTED and "not sent" in reversal.status_reason
    assert fabric_ledger(fabric_api)["reverse_calls"] == 0

    refund(order, refund_id="FULL")  # a full refund is what fabric's reverse does
    settle()
    record.refresh_from_db()
    assert record.status == Status.REVERSED
    assert fabric_ledger(fabric_api)["orders"]["SO-P50"]["reversed_points"] == record.points


def test_a_refund_of_the_whole_amount_is_not_partial(place_order, fabric_api):
    order = place_order("SO-P200", account="fabric", lines=[("Bakhoor", "200.00", 1)])
    settle()
    refund(order, Decimal("200.00"), refund_id="ALL")
    settle()
    assert (Reversal.objects.get().status, EarningRecord.objects.get().status) == (R.REVERSED, Status.REVERSED)


def test_pro_rata_on_a_fabric_that_cancels_everything_records_the_earning_reversed(place_order, fabric_api):
    """Never record less than the platform took: fabric took every point back for a quarter of the order."""
    assert fabric_api.partial_reversals is False  # the sandbox plays the documented behaviour
    with fabric_options(PARTIAL_REVERSALS="pro_rata"):
        order = place_order("SO-PR", account="fabric", lines=[("Bakhoor", "200.00", 1)])
        settle()
        refund(order, Decimal("50"), refund_id="P-1")
        settle()
    record = EarningRecord.objects.get()
    reversal = Reversal.objects.get()
    assert (reversal.status, reversal.points) == (R.REVERSED, record.points)
    assert record.status == Status.REVERSED  # not partially_reversed
    assert "fabric took back every point of the earn (20 of 20" in reversal.status_reason
    sent = sent_reversals(record)[0]
    assert sent["totalAmountPaid"] == -50.0  # the share that was asked
    assert fabric_ledger(fabric_api)["orders"]["SO-PR"]["reversed_points"] == 20


def test_pro_rata_partials_where_fabric_confirmed_them_add_up(place_order, fabric_api):
    fabric_api.partial_reversals = True
    with fabric_options(PARTIAL_REVERSALS="pro_rata"):
        order = place_order("SO-PP", account="fabric", lines=[("Bakhoor", "200.00", 1)])
        settle()
        refund(order, Decimal("50"), refund_id="P-1")
        settle()
        record = EarningRecord.objects.get()
        assert record.status == Status.PARTIALLY_REVERSED
        refund(order, Decimal("150"), refund_id="P-2")
        settle()
    record.refresh_from_db()
    assert record.status == Status.REVERSED
    assert sorted(record.reversal_set.values_list("points", flat=True)) == [5, 15]


def test_partial_reversals_is_a_checked_choice():
    from django_points_earn.checks import check_settings

    with fabric_options(PARTIAL_REVERSALS="some"):
        found = {(m.id, m.msg) for m in check_settings()}
    assert (
        "points_earn.E009",
        'POINTS_EARN["ACCOUNTS"]["fabric"]["PARTIAL_REVERSALS"] is \'some\'; expected one of refuse, pro_rata.',
    ) in found


# -- item 9: the reversal's entity and type, never cut ---------------------------------------------------------


def test_a_reversal_whose_entity_fabric_would_refuse_is_not_sent_and_never_cut(place_order, fabric_api):
    with fabric_options(ENTITY_REFERENCE="Company LIBERTY CENTER"):
        order = place_order("SO-LONG", account="fabric")
        settle()
        assert EarningRecord.objects.get().status == Status.AWARDED  # the earn takes 1 to 100 characters
        refund(order)
        settle()
    reversal = Reversal.objects.get()
    assert reversal.status == R.REJECTED
    assert reversal.status_reason.startswith(
        'reversal not sent: POINTS_EARN["ACCOUNTS"]["fabric"]["ENTITY_REFERENCE"] is \'Company LIBERTY CENTER\''
    )
    assert fabric_ledger(fabric_api)["reverse_calls"] == 0  # not "Company LIBERTY"


def test_the_reversal_takes_its_own_entity_and_type(place_order, fabric_api):
    options = dict(ENTITY_REFERENCE="Company LIBERTY CENTER", REVERSE_ENTITY_REFERENCE="LIBERTY")
    with fabric_options(**options, REVERSE_TRANSACTION_TYPE="REFUND-WEB"):
        order = place_order("SO-OWN", account="fabric")
        settle()
        refund(order)
        settle()
    record = EarningRecord.objects.get()
    assert record.status == Status.REVERSED
    assert record.payload["entityReference"] == "Company LIBERTY CENTER"
    sent = sent_reversals(record)[0]
    assert (sent["entityReference"], sent["transactionTypeExternalReference"]) == ("LIBERTY", "REFUND-WEB")


# -- full, partial and lost-answer reversals through /v2/earn/reverse ---------------------------------------------
def fabric_order(fabric, number):
    return fabric.ledger()["merchants"]["fabric"]["orders"][number]


def test_fabric_full_refund_reverses_the_earn(place_order, fabric_api):
    order = place_order("SO-FX", account="fabric", lines=[("Perfume", "120.00", 1)])
    settle()
    refund(order, refund_id="RMA-9")
    settle()
    record = EarningRecord.objects.get()
    reversal = record.reversal_set.get()
    assert (record.status, reversal.status) == (Status.REVERSED, R.REVERSED), reversal.status_reason
    remote = fabric_order(fabric_api, "SO-FX")
    assert remote["reversed_points"] == remote["points"] == reversal.points
    sent = reversal.attempt_set.get().request_body
    assert sent["transactionExternalReference"] == "SO-FX-R-RMA-9"  # its own, stable reference
    assert sent["reverseTransactionExternalRef"] == "SO-FX"
    assert sent["totalAmountPaid"] == -120.0 and reversal.remote_reference  # fabric's transaction number


def test_fabric_partial_refunds_take_back_their_share(place_order, fabric_api):
    fabric_api.partial_reversals = True
    order = place_order("SO-FP", account="fabric", lines=[("Bakhoor", "200.00", 1)])
    settle()
    with fabric_options(PARTIAL_REVERSALS="pro_rata"):  # the default refuses them (issue 12 item 2)
        refund(order, Decimal("50"), refund_id="P-1")
        refund(order, Decimal("50"), refund_id="P-2")
        settle()
    record = EarningRecord.objects.get()
    assert record.status == Status.PARTIALLY_REVERSED
    remote = fabric_order(fabric_api, "SO-FP")
    taken = sorted(record.reversal_set.values_list("points", flat=True))
    assert sum(taken) == remote["reversed_points"] and len(taken) == 2 and all(p > 0 for p in taken)


def test_fabric_reversal_whose_answer_was_lost_is_found_not_resent(place_order, fabric_sandbox, sandbox):
    import re

    from django_points_earn.sandbox import register_fabric_responses
    from tests.conftest import FABRIC_TOKEN_URL, FABRIC_URL

    posts = []

    def lose_first(request):
        answer = fabric_sandbox.handle_api("POST", "/v2/earn/reverse", dict(request.headers), request.body)
        posts.append(answer.status)
        if len(posts) == 1:
            raise requests.ReadTimeout("read timed out")
        return answer.status, answer.headers, answer.body

    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.add_callback(
            responses_lib.POST, re.compile(re.escape(FABRIC_URL) + r"/v2/earn/reverse$"), callback=lose_first
        )
        register_fabric_responses(rsps, fabric_sandbox, FABRIC_URL, FABRIC_TOKEN_URL)
        register_responses(rsps, sandbox, POINTS_URL)
        order = place_order("SO-FL", account="fabric")
        settle()
        refund(order, refund_id="R-LOST")
        settle()
    reversal = Reversal.objects.get()
    assert reversal.status == R.REVERSED
    assert "found by get-transaction" in reversal.status_reason
    assert posts == [201]  # one reverse reached fabric; the retry only looked
    assert fabric_order(fabric_sandbox, "SO-FL")["reversed_points"] == reversal.points
