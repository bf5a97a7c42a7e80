"""fabric end to end in one process: real Redis queue, real database, the fabric sandbox behind `responses`."""

import logging
from decimal import Decimal

import pytest
from django.apps import apps
from django.conf import settings
from django.core import serializers
from django.test import override_settings

from django_points_earn import corrections
from django_points_earn.models import AccountState, EarningAttempt, EarningRecord, Status
from django_points_earn.sandbox import SandboxServer
from tests.conftest import FABRIC_MEMBER_PHONE, run_worker, settle

pytestmark = pytest.mark.django_db(transaction=True)


def fabric_ledger(fabric) -> dict:
    return fabric.ledger()["merchants"]["fabric"]


def with_fabric_options(**options):
    conf = {**settings.POINTS_EARN, "ACCOUNTS": {**settings.POINTS_EARN["ACCOUNTS"]}}
    conf["ACCOUNTS"]["fabric"] = {**conf["ACCOUNTS"]["fabric"], **options}
    return override_settings(POINTS_EARN=conf)


def test_paid_order_is_earned_once_with_fabric_ids_and_the_member_is_kept(place_order, fabric_api):
    profile_id = fabric_api.add_member("966551234567")
    place_order("SO-F1", account="fabric", phone="+966 55 123 4567")
    run_worker()
    record = EarningRecord.objects.get()
    assert (record.provider, record.status) == ("fabric", Status.AWARDED)
    entry = fabric_ledger(fabric_api)["orders"]["SO-F1"]
    assert record.remote_id == entry["transactionCode"]
    assert record.points == entry["points"] == 4  # 37.00 net at the sandbox's 0.1 point per unit
    assert entry["profileId"] == profile_id
    assert record.payload["profileId"] == profile_id  # found once, kept for any later attempt
    attempt = record.attempt_set.get()
    assert (attempt.outcome, attempt.http_status) == ("awarded", 201)
    assert "profileId" not in attempt.request_body  # written before the call: the lookup came after
    assert fabric_api.awards("SO-F1") == 1


def test_the_member_is_looked_up_once_across_attempts(place_order, fabric_api):
    fabric_api.script("500")  # refused before any work: retried
    place_order("SO-F2", account="fabric")
    settle()
    record = EarningRecord.objects.get()
    assert record.status == Status.AWARDED
    ledger = fabric_ledger(fabric_api)
    assert (ledger["member_lookups"], ledger["calls"], ledger["awards"]) == (1, 2, 1)
    # The 500 made the outcome unknown: the second attempt asked get-transaction before posting again.
    assert ledger["lookups"] == 1
    assert list(record.attempt_set.values_list("outcome", flat=True)) == ["unavailable", "awarded"]


def test_token_is_cached_across_jobs_and_refreshed_once_on_401(place_order, fabric_api):
    place_order("SO-T1", account="fabric")
    place_order("SO-T2", account="fabric")
    run_worker()  # one drain job
    place_order("SO-T3", account="fabric")
    run_worker()  # another job, same process: same token
    assert fabric_api.token_requests("fabric") == 1
    assert fabric_ledger(fabric_api)["awards"] == 3

    fabric_api.expire_tokens()  # fabric ends the token before our cached expiry
    place_order("SO-T4", account="fabric")
    run_worker()
    record = EarningRecord.objects.get(order_number="SO-T4")
    assert record.status == Status.AWARDED
    assert fabric_api.token_requests("fabric") == 2  # exactly one refresh
    assert fabric_ledger(fabric_api)["unauthorized"] == 1  # the one 401 that caused it
    assert record.attempt_set.count() == 1  # the retry after the refresh is part of the same attempt


@pytest.mark.parametrize("fault", ["slow", "created_500"])
def test_a_lost_answer_is_resolved_by_get_transaction_without_a_second_post(place_order, fabric_api, fault):
    fabric_api.script(fault)  # fabric records the earn; the client sees a timeout or a 500
    place_order("SO-LOST", account="fabric")
    settle()
    record = EarningRecord.objects.get()
    ledger = fabric_ledger(fabric_api)
    assert record.status == Status.AWARDED
    assert (ledger["awards"], ledger["calls"], ledger["lookups"]) == (1, 1, 1)  # one POST, then one lookup
    assert record.remote_id == ledger["orders"]["SO-LOST"]["transactionCode"]
    assert record.remote_status == "found_by_lookup"
    assert record.points == ledger["orders"]["SO-LOST"]["points"]
    attempts = list(record.attempt_set.values_list("outcome", "http_status", "outcome_unknown"))
    assert attempts[0][0] == "unavailable" and attempts[0][2] is True
    assert attempts[1] == ("awarded", 200, False)


def test_an_unknown_outcome_that_did_not_earn_is_sent_again(place_order, fabric_api):
    fabric_api.script("html")  # a 502 page from a gateway: nothing was recorded, but we cannot know that
    place_order("SO-502", account="fabric")
    settle()
    record = EarningRecord.objects.get()
    ledger = fabric_ledger(fabric_api)
    assert record.status == Status.AWARDED and record.remote_status == ""
    assert (ledger["awards"], ledger["calls"], ledger["lookups"]) == (1, 2, 1)


def test_a_shop_with_a_points_and_a_fabric_account_routes_each_order(place_order, fabric_api, sandbox):
    place_order("SO-P", account="main")
    place_order("SO-F", account="fabric")
    place_order("SO-P2", account="main")
    run_worker()
    records = {r.order_number: r for r in EarningRecord.objects.all()}
    assert {n: (r.provider, r.status) for n, r in records.items()} == {
        "SO-P": ("points", Status.AWARDED),
        "SO-F": ("fabric", Status.AWARDED),
        "SO-P2": ("points", Status.AWARDED),
    }
    assert sandbox.total_awards("main") == 2 and sandbox.awards("SO-F") == 0
    assert fabric_api.total_awards("fabric") == 1 and fabric_api.awards("SO-P") == 0
    assert records["SO-F"].remote_id == fabric_ledger(fabric_api)["orders"]["SO-F"]["transactionCode"]
    assert records["SO-P"].remote_id == sandbox.ledger()["merchants"]["main"]["orders"]["SO-P"]["uuid"]


@pytest.mark.parametrize(
    ("outage", "words"),
    [
        ("500", "answered HTTP 500"),
        ("html", "answered HTTP 502"),
        ("reset", "could not be reached: connection broken"),
        ("slow", "could not be reached: no answer within the read timeout"),
    ],
)
def test_token_endpoint_down_is_retried_and_never_pauses_the_account(place_order, fabric_api, outage, words):
    """Issue 12 item 7: a token endpoint that is down or slow is an outage like any other: the records wait and are
    sent again (each real try is an attempt), nothing is blocked, the account is not paused, Points carries on."""
    fabric_api.set_token_outage(outage)
    for n in range(3):
        place_order(f"SO-D{n}", account="fabric")
    place_order("SO-PTS", account="main")
    run_worker()
    fabric = EarningRecord.objects.filter(account="fabric")
    assert set(fabric.values_list("status", flat=True)) <= {Status.QUEUED, Status.FAILED}
    assert not fabric.filter(status=Status.BLOCKED).exists()
    tried = fabric.exclude(attempts=0).first()
    assert "fabric's token endpoint" in tried.status_reason and words in tried.status_reason
    assert not AccountState.objects.filter(account="fabric", paused=True).exists()
    assert fabric_ledger(fabric_api)["calls"] == 0  # no earn was attempted without a token
    assert EarningRecord.objects.get(order_number="SO-PTS").status == Status.AWARDED  # Points carries on

    fabric_api.set_token_outage(None)
    for record in fabric.filter(status=Status.FAILED):
        corrections.requeue(record, trigger="admin", note="the token endpoint is back")
    settle()
    assert set(EarningRecord.objects.values_list("status", flat=True)) == {Status.AWARDED}
    assert fabric_api.total_awards("fabric") == 3


def test_refused_credentials_block_with_a_clear_reason(place_order, fabric_api):
    fabric_api.revoke_client(settings.FABRIC_CLIENT_ID)
    place_order("SO-CRED", account="fabric")
    run_worker()
    record = EarningRecord.objects.get()
    assert record.status == Status.BLOCKED
    assert "refused the client credentials: HTTP 401 invalid_client" in record.status_reason
    assert settings.FABRIC_CLIENT_SECRET not in record.status_reason
    assert AccountState.objects.get(account="fabric").paused


def test_no_member_is_rejected_with_a_masked_phone(place_order, fabric_api):
    place_order("SO-NM", account="fabric", phone="0559876543")
    run_worker()
    record = EarningRecord.objects.get()
    assert record.status == Status.REJECTED
    assert record.status_reason == "no fabric member has phone 9********543"
    assert fabric_ledger(fabric_api)["calls"] == 0


def test_no_member_is_skipped_when_the_account_says_so(place_order, fabric_api):
    from django_points_earn.signals import earning_failed

    heard = []
    earning_failed.connect(heard.append, dispatch_uid="test-skip")
    try:
        with with_fabric_options(MISSING_MEMBER="skipped"):
            place_order("SO-SK", account="fabric", phone="0559876543")
            run_worker()
    finally:
        earning_failed.disconnect(dispatch_uid="test-skip")
    record = EarningRecord.objects.get()
    assert record.status == Status.SKIPPED
    assert "skipped (MISSING_MEMBER)" in record.status_reason
    assert record.completed_at is not None and record.next_attempt_at is None
    event = record.event_set.get()
    assert (event.from_status, event.to_status) == (Status.SENDING, Status.SKIPPED)
    assert record.attempt_set.get().outcome == "skipped"
    assert heard == []  # not a failure


def test_an_order_fabric_cannot_take_is_rejected_before_any_call(place_order, fabric_api):
    with with_fabric_options(MEMBER_PHONE_FORMAT="international"):
        place_order("SO-BAD", account="fabric", phone="+44 20 7946 0958")
    record = EarningRecord.objects.get()
    assert record.status == Status.REJECTED
    assert "phone number is not Saudi" in record.status_reason and "as-given" in record.status_reason
    run_worker()
    assert fabric_api.token_requests() == 0 and fabric_ledger(fabric_api)["calls"] == 0


def test_shipping_goes_as_an_item_and_fabric_accepts_the_amounts(place_order, fabric_api):
    place_order("SO-SHIP", account="fabric", shipping=Decimal("25.00"), lines=[("Dates", "60.00", 3)])
    run_worker()
    record = EarningRecord.objects.get()
    assert record.status == Status.AWARDED
    items = record.payload["transactionItems"]
    assert [(i["itemName"], i.get("SKU")) for i in items] == [("Dates", None), ("Shipping", "SHIPPING")]
    assert record.payload["totalAmountPaid"] == 205.0 == float(record.total)


@pytest.mark.slow
def test_client_secret_and_tokens_are_nowhere(place_order, fabric_sandbox, caplog, client, django_user_model):
    """Over real HTTP, so requests and urllib3 log what they log; DEBUG everywhere."""
    caplog.set_level(logging.DEBUG)
    secret = settings.FABRIC_CLIENT_SECRET
    issued = []
    original = fabric_sandbox.handle_token

    def spy(*args):
        answer = original(*args)
        if answer.status == 200:
            issued.append(answer.json()["access_token"])
        return answer

    fabric_sandbox.handle_token = spy
    fabric_sandbox.script("slow", "500", "html", "truncated")
    fabric_sandbox.set_faults(slow_seconds=3)
    with (
        SandboxServer(fabric=fabric_sandbox) as server,
        with_fabric_options(BASE_URL=server.fabric_base_url, TOKEN_URL=server.fabric_token_url, GRANT_STYLE="basic"),
    ):
        for n in range(5):
            place_order(f"SO-S{n}", account="fabric")
        place_order("SO-NOBODY", account="fabric", phone="0559876543")
        settle()
        fabric_sandbox.expire_tokens()
        place_order("SO-REFRESH", account="fabric")
        settle()
        fabric_sandbox.revoke_client(settings.FABRIC_CLIENT_ID)
        fabric_sandbox.expire_tokens()
        place_order("SO-REVOKED", account="fabric")
        run_worker()
    assert EarningRecord.objects.get(order_number="SO-REVOKED").status == Status.BLOCKED
    assert EarningRecord.objects.filter(status=Status.AWARDED).count() == 6
    assert len(issued) == 2 and EarningAttempt.objects.count() >= 9

    dump = serializers.serialize(
        "json", [obj for model in apps.get_models() if model._meta.managed for obj in model.objects.all()]
    )
    assert "SO-REVOKED" in dump
    admin = django_user_model.objects.create_superuser("admin", "a@example.com", "pw")
    client.force_login(admin)
    pages = [client.get("/admin/django_points_earn/earningrecord/").content.decode()]
    for record in EarningRecord.objects.all():
        pages.append(client.get(f"/admin/django_points_earn/earningrecord/{record.pk}/change/").content.decode())
    logs = caplog.text + "".join(str(r.exc_info) for r in caplog.records)
    assert "SO-REVOKED" in logs and "/v1/members?phonenumber=" in logs  # urllib3 did log the URLs
    for text in [dump, logs, *pages]:
        assert secret not in text
        assert all(token not in text for token in issued)
    assert FABRIC_MEMBER_PHONE[3:] not in logs and "559876543" not in logs  # phones masked, URLs included


# -- issue 12 item 8: lookups that match too much ------------------------------------------------------------


def test_a_get_transaction_that_ignores_its_filter_never_makes_another_orders_earn_ours(place_order, fabric_api):
    place_order("SO-A", account="fabric")
    run_worker()
    fabric_api.script("500")  # SO-B's first POST fails before fabric records it: its outcome is unknown
    fabric_api.set_quirks(transactions="unfiltered-bare")  # every earn of the program, without references
    place_order("SO-B", account="fabric")
    settle()
    record = EarningRecord.objects.get(order_number="SO-B")
    ledger = fabric_ledger(fabric_api)
    assert (record.status, record.remote_status) == (Status.AWARDED, "")  # sent, not "found"
    assert (
        record.remote_id == ledger["orders"]["SO-B"]["transactionCode"] != ledger["orders"]["SO-A"]["transactionCode"]
    )
    assert ledger["awards"] == 2 and ledger["lookups"] == 1


def test_an_unrecognised_member_answer_is_retried_never_skipped(place_order, fabric_api):
    fabric_api.set_quirks(members="unrecognised")
    with with_fabric_options(MISSING_MEMBER="skipped"):
        place_order("SO-UM", account="fabric")
        run_worker()
        record = EarningRecord.objects.get()
        assert record.status in (Status.QUEUED, Status.FAILED)  # retried (the drain waits for short backoffs)
        assert set(record.attempt_set.values_list("outcome", flat=True)) == {"unavailable"}
        assert "cannot tell whether the customer is a member" in record.status_reason
        assert "9********678" in record.status_reason
        fabric_api.set_quirks(members="documented")
        corrections.requeue(record, trigger="admin", note="fabric fixed its answer")
        settle()
    record.refresh_from_db()
    assert record.status == Status.AWARDED
    assert fabric_api.awards("SO-UM") == 1


def test_an_order_with_nothing_to_earn_is_skipped_and_sent_to_no_platform(place_order, fabric_api, sandbox):
    """Issue 12 item 9: a net amount of 0 is sent to nobody, on fabric and on Points alike."""
    place_order("SO-FREE-F", account="fabric", lines=[("Gift", "0.00", 1)])
    place_order("SO-FREE-P", account="main", lines=[("Gift", "0.00", 2)])
    with with_fabric_options(SHIPPING="exclude"):
        place_order("SO-SHIP-ONLY", account="fabric", lines=[("Gift", "0.00", 1)], shipping=Decimal("25.00"))
    run_worker()
    reasons = dict(EarningRecord.objects.values_list("order_number", "status_reason"))
    assert set(EarningRecord.objects.values_list("status", flat=True)) == {Status.SKIPPED}
    assert reasons["SO-FREE-F"] == reasons["SO-FREE-P"] == "the order's total is 0: nothing to earn, nothing sent"
    assert reasons["SO-SHIP-ONLY"].startswith("the order's net amount (before tax, after discounts) is 0")
    assert fabric_api.token_requests() == 0 and fabric_ledger(fabric_api)["calls"] == 0
    assert sandbox.total_awards("main") == 0 and sandbox.ledger()["merchants"].get("main", {}).get("calls", 0) == 0
