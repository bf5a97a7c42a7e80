"""Admin actions: each is registered, each needs its permission, each does what it says through the lifecycle,
and a double submission (double-click, two agents) changes and sends an earning once."""

import threading

import pytest
import requests
from django.conf import settings
from django.contrib import admin
from django.contrib.admin import helpers
from django.test import Client, RequestFactory

from django_points_earn import queueing, reconcile_report
from django_points_earn.conf import get_settings
from django_points_earn.models import AccountState, EarningEvent, EarningRecord, Status
from tests.admin_helpers import CHANGELIST, DASHBOARD, action_url, earning, make_blocked, make_failed, page, staff
from tests.conftest import POINTS_URL, run_worker

pytestmark = pytest.mark.django_db(transaction=True)

ARABIC_INDIC_PHONE = "\u0660\u0665\u0665 \u0661\u0662\u0663 \u0664\u0665\u0666\u0667"  # 055 123 4567
ACTIONS = {
    "retry_selected": "retry_earningrecord",
    "verify_selected": "verify_earningrecord",
    "resolve_selected": "resolve_earningrecord",
    "correct_selected": "correct_earningrecord",
    "reverse_selected": "reverse_earningrecord",
    "send_now_selected": "hold_earningrecord",
    "extend_hold_selected": "hold_earningrecord",
}


def model_admin():
    return admin.site._registry[EarningRecord]


def actions_for(user) -> set[str]:
    request = RequestFactory().get(CHANGELIST)
    request.user = user
    return set(model_admin().get_actions(request))


def choose(client: Client, action: str, records):
    """The list's first step: pick the action for the ticked rows (answers with the confirmation page)."""
    return client.post(
        CHANGELIST, {"action": action, "index": 0, helpers.ACTION_CHECKBOX_NAME: [str(r.pk) for r in records]}
    )


def confirm(client: Client, action: str, records, **fields):
    """The confirmation page's "Yes, I'm sure", as its form posts it."""
    ids = [str(r.pk) for r in records]
    return client.post(CHANGELIST, {"action": action, helpers.ACTION_CHECKBOX_NAME: ids, "confirm": "yes", **fields})


def bulk(client: Client, action: str, records, **fields):
    return choose(client, action, records), confirm(client, action, records, **fields)


def test_every_action_is_registered(admin_user):
    assert actions_for(admin_user) == set(ACTIONS)  # no delete: earnings are never deleted from the admin


@pytest.mark.parametrize("codename", sorted(set(ACTIONS.values())))
def test_each_action_needs_its_own_permission(django_user_model, codename):
    given = {action for action, needs in ACTIONS.items() if needs == codename}
    assert actions_for(staff(django_user_model, f"only-{codename}", codename)) == given


def test_staff_without_permissions_see_everything_read_only(django_user_model, place_order, client):
    record = make_failed(earning(place_order("SO-1")))
    client.force_login(staff(django_user_model, "viewer"))
    assert actions_for(staff(django_user_model, "viewer2")) == set()

    listing = client.get(CHANGELIST).content.decode()
    assert "SO-1" in listing and 'name="action"' not in listing  # no action menu at all
    detail = client.get(page(record)).content.decode()
    assert 'id="pe-read-only"' in detail and 'id="pe-actions"' not in detail
    for name in ("retry", "verify", "resolve", "correct"):
        refused = client.get(action_url(record, name))
        assert refused.status_code == 403
        assert f"django_points_earn.{name}_earningrecord" in refused.content.decode()
        assert client.post(action_url(record, name), {"confirm": "yes", "note": "x"}).status_code == 403
    # The list refuses an action posted by hand as well.
    bulk(client, "retry_selected", [record])
    record.refresh_from_db()
    assert record.status == Status.FAILED
    assert not EarningEvent.objects.filter(record=record, actor="viewer").exists()


def test_retry_from_the_list_confirms_then_sends_once(admin_client, place_order, points_api):
    failed = make_failed(earning(place_order("SO-FAIL")))
    awarded = earning(place_order("SO-OK"))
    run_worker()
    awarded.refresh_from_db()
    assert awarded.status == Status.AWARDED

    question = choose(admin_client, "retry_selected", [failed, awarded])
    text = question.content.decode()
    assert question.status_code == 200 and "Send these earnings to the platform again now?" in text
    assert "not applicable" in text  # the awarded one is shown, and left alone
    failed.refresh_from_db()
    assert failed.status == Status.FAILED  # the confirmation page itself changes nothing
    assert confirm(admin_client, "retry_selected", [failed, awarded]).status_code == 302

    failed.refresh_from_db()
    assert (failed.status, failed.attempts) == (Status.QUEUED, 0)
    event = failed.event_set.latest("id")
    assert (event.from_status, event.to_status, event.trigger, event.actor) == ("failed", "queued", "admin", "admin")
    run_worker()  # the drain job the action enqueued
    failed.refresh_from_db()
    assert failed.status == Status.AWARDED
    assert points_api.awards("SO-FAIL") == 1 and points_api.awards("SO-OK") == 1
    assert failed.attempt_set.latest("number").outcome == "awarded"
    timeline = admin_client.get(page(failed)).content.decode().split('id="pe-attempts"')[1]
    assert timeline.count("sent again by admin") == 1  # only the attempt that followed the agent's retry


def test_retry_button_on_the_earning_page(admin_client, place_order, points_api):
    record = make_failed(earning(place_order("SO-1")))
    detail = admin_client.get(page(record)).content.decode()
    assert f'href="{action_url(record, "retry")}"' in detail
    assert f'href="{action_url(record, "correct")}"' not in detail  # only for rejected earnings
    assert admin_client.get(action_url(record, "retry")).status_code == 200
    response = admin_client.post(action_url(record, "retry"), {"confirm": "yes"})
    assert response.status_code == 302 and response["Location"] == page(record)
    run_worker()
    record.refresh_from_db()
    assert record.status == Status.AWARDED


def test_retry_of_a_paused_accounts_earning_waits_for_resume(admin_client, place_order, points_api):
    record = make_blocked(earning(place_order("SO-1")))
    response = admin_client.post(action_url(record, "retry"), {"confirm": "yes"}, follow=True)
    assert "is paused" in response.content.decode()
    run_worker()
    record.refresh_from_db()
    assert record.status == Status.QUEUED  # nothing sent while the account is paused


def test_double_submission_changes_and_sends_once(admin_user, place_order, points_api):
    """Two agents (or one double-click) confirm the same retry at the same moment."""
    record = make_failed(earning(place_order("SO-1")))
    barrier = threading.Barrier(2)
    codes = []

    def agent():
        from django.db import connection

        client = Client()
        client.force_login(admin_user)
        barrier.wait()
        codes.append(client.post(action_url(record, "retry"), {"confirm": "yes"}).status_code)
        connection.close()

    threads = [threading.Thread(target=agent) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert codes == [302, 302]
    assert EarningEvent.objects.filter(record=record, to_status=Status.QUEUED, trigger="admin").count() == 1
    # A third, late click: told it no longer applies, nothing changes.
    client = Client()
    client.force_login(admin_user)
    late = client.post(action_url(record, "retry"), {"confirm": "yes"}, follow=True).content.decode()
    assert "not changed" in late
    run_worker()
    record.refresh_from_db()
    assert record.status == Status.AWARDED
    assert record.attempt_set.filter(outcome="awarded").count() == 1
    assert points_api.ledger()["merchants"]["main"]["calls"] == 1  # one call to the platform, not two
    assert points_api.awards("SO-1") == 1


def test_verify_records_agreement_then_drift_and_never_fixes(admin_client, place_order, points_api):
    record = earning(place_order("SO-1"))
    run_worker()
    record.refresh_from_db()
    response = admin_client.post(action_url(record, "verify"), {"confirm": "yes"}, follow=True)
    assert "agrees with the platform (approved)" in response.content.decode()
    record.refresh_from_db()
    assert record.remote_checked_at is not None and record.drift == ""
    assert record.event_set.latest("id").note == "checked with the platform: approved; agrees"

    requests.post(
        f"{POINTS_URL}/orders/{record.remote_id}/refund",
        json={"reason": "refunded in the Points dashboard"},
        headers={"x-api-key": settings.POINTS_API_KEY},
        timeout=5,
    )
    _, done = bulk(admin_client, "verify_selected", [record])
    assert done.status_code == 302
    record.refresh_from_db()
    assert record.status == Status.AWARDED  # drift is shown, never "fixed"
    assert "approved → fully_refunded" in record.drift
    assert "fully_refunded" in admin_client.get(page(record)).content.decode()
    assert reconcile_report.attention_queryset().filter(pk=record.pk).exists()  # the dashboard and the filter show it


def test_verify_waits_for_no_one_when_the_account_is_busy(admin_client, place_order, points_api):
    record = earning(place_order("SO-1"))
    run_worker()
    record.refresh_from_db()
    lock = queueing.account_lock(get_settings().account("main"))
    assert lock.acquire(blocking=False)  # a drain job is sending for this merchant
    try:
        response = admin_client.post(action_url(record, "verify"), {"confirm": "yes"}, follow=True)
    finally:
        lock.release()
    assert "try again in a moment" in response.content.decode()
    record.refresh_from_db()
    assert record.remote_checked_at is None


def test_resolve_needs_a_note_and_keeps_it(admin_client, place_order):
    record = make_failed(earning(place_order("SO-1")))
    empty = admin_client.post(action_url(record, "resolve"), {"confirm": "yes", "note": "  "})
    assert empty.status_code == 200 and "Say what was done." in empty.content.decode()
    record.refresh_from_db()
    assert record.status == Status.FAILED

    _, done = bulk(admin_client, "resolve_selected", [record], note="awarded by hand in the Points dashboard")
    assert done.status_code == 302
    record.refresh_from_db()
    assert record.status == Status.RESOLVED
    event = record.event_set.latest("id")
    assert (event.actor, event.note) == ("admin", "awarded by hand in the Points dashboard")
    # Resolved is final: a retry afterwards does nothing.
    admin_client.post(action_url(record, "retry"), {"confirm": "yes"})
    record.refresh_from_db()
    assert record.status == Status.RESOLVED


def test_correct_a_rejected_phone_and_resend(admin_client, place_order, points_api):
    record = earning(place_order("SO-1", phone="05123"))
    assert record.status == Status.REJECTED
    detail = admin_client.get(page(record)).content.decode()
    assert f'href="{action_url(record, "correct")}"' in detail

    still_bad = admin_client.post(action_url(record, "correct"), {"confirm": "yes", "phone": "+44 7700 900123"})
    assert still_bad.status_code == 200 and "not a Saudi mobile number" in still_bad.content.decode()
    record.refresh_from_db()
    assert record.status == Status.REJECTED

    done = admin_client.post(action_url(record, "correct"), {"confirm": "yes", "phone": ARABIC_INDIC_PHONE})
    assert done.status_code == 302
    record.refresh_from_db()
    assert (record.status, record.phone, record.payload["phone_number"]) == (Status.QUEUED, "551234567", "551234567")
    event = record.event_set.latest("id")
    assert event.actor == "admin" and "phone" in event.note and "5*****567" in event.note
    assert "551234567" not in event.note  # audited with the phone masked
    run_worker()
    record.refresh_from_db()
    assert record.status == Status.AWARDED
    assert points_api.awards("SO-1") == 1


def test_bulk_correct_takes_exactly_one_earning(admin_client, place_order):
    one = earning(place_order("SO-1", phone="bad"))
    two = earning(place_order("SO-2", phone="bad"))
    _, refused = bulk(admin_client, "correct_selected", [one, two], phone="0551234567")
    assert "Select exactly one earning" in refused.content.decode()
    assert set(EarningRecord.objects.values_list("status", flat=True)) == {Status.REJECTED}
    _, done = bulk(admin_client, "correct_selected", [one], phone="0551234567")
    assert done.status_code == 302
    one.refresh_from_db()
    assert one.status == Status.QUEUED


def test_resume_a_paused_account_from_the_dashboard(django_user_model, client, admin_client, place_order, points_api):
    record = make_blocked(earning(place_order("SO-1")))
    assert AccountState.objects.get(pk="main").paused
    dashboard = admin_client.get(DASHBOARD).content.decode()
    assert 'id="pe-paused"' in dashboard and "/resume/main/" in dashboard

    client.force_login(staff(django_user_model, "retrier", "retry_earningrecord"))
    assert client.get(f"{DASHBOARD}resume/main/").status_code == 403
    assert client.post(f"{DASHBOARD}resume/main/", {"confirm": "yes"}).status_code == 403
    assert AccountState.objects.get(pk="main").paused

    assert admin_client.get(f"{DASHBOARD}resume/main/").status_code == 200
    response = admin_client.post(f"{DASHBOARD}resume/main/", {"confirm": "yes"})
    assert response.status_code == 302
    state = AccountState.objects.get(pk="main")
    assert (state.paused, state.resumed_by) == (False, "admin")
    run_worker()
    record.refresh_from_db()
    assert record.status == Status.AWARDED


def test_run_reconcile_now(admin_client, django_user_model, client, place_order, points_api, clean_redis):
    place_order("SO-1")
    clean_redis.flushall()  # the job was lost: only reconcile can bring the earning back to a worker
    assert admin_client.get(f"{DASHBOARD}reconcile/").status_code == 405
    response = admin_client.post(f"{DASHBOARD}reconcile/", follow=True)
    assert "Reconcile finished" in response.content.decode()
    run_worker()
    assert EarningRecord.objects.get().status == Status.AWARDED

    client.force_login(staff(django_user_model, "viewer"))
    assert 'id="pe-reconcile"' not in client.get(DASHBOARD).content.decode()
    assert client.post(f"{DASHBOARD}reconcile/").status_code == 403


def test_no_secret_on_any_admin_page(admin_client, place_order, points_api):
    records = [make_failed(earning(place_order("SO-1"))), earning(place_order("SO-2", phone="bad"))]
    place_order("SO-3")
    run_worker()
    pages = [CHANGELIST, DASHBOARD, f"{CHANGELIST}?attention=yes"]
    for record in EarningRecord.objects.all():
        pages += [page(record)] + [action_url(record, a) for a in ("retry", "verify", "resolve", "correct")]
    for url in pages:
        text = admin_client.get(url).content.decode()
        assert settings.POINTS_API_KEY not in text, url
        assert "512345678" not in text, url  # phones masked everywhere, the JSON included
    assert records


def test_reverse_points_full_or_part_from_the_earning_page(
    admin_client, place_order, points_api, client, django_user_model
):
    import re

    from django_points_earn.models import Reversal

    record = earning(place_order("SO-REV", lines=[("Oud", "100.00", 1)]))
    run_worker()
    record.refresh_from_db()
    assert f'href="{action_url(record, "reverse")}"' in admin_client.get(page(record)).content.decode()

    client.force_login(staff(django_user_model, "no-refunds", "retry_earningrecord"))
    assert client.post(action_url(record, "reverse"), {"confirm": "yes", "reason": "x"}).status_code == 403

    form = admin_client.get(action_url(record, "reverse")).content.decode()
    refund_id = re.search(r'name="refund_id" value="([^"]+)"', form).group(1)
    answer = {"confirm": "yes", "amount": "40", "reason": "one bottle returned", "refund_id": refund_id}
    assert admin_client.post(action_url(record, "reverse"), answer).status_code == 302
    assert admin_client.post(action_url(record, "reverse"), answer).status_code == 302  # a double-click
    run_worker()
    reversal = Reversal.objects.get()
    assert (reversal.amount, reversal.status, reversal.reason) == (40, "reversed", "one bottle returned (by admin)")
    record.refresh_from_db()
    assert record.status == Status.PARTIALLY_REVERSED
    assert points_api.ledger()["merchants"]["main"]["orders"]["SO-REV"]["refunded_amount"] == 40.0
    detail = admin_client.get(page(record)).content.decode()
    assert 'id="pe-reversals"' in detail and refund_id in detail

    too_much = {"confirm": "yes", "amount": "70", "reason": "more", "refund_id": "admin-second"}
    admin_client.post(action_url(record, "reverse"), too_much)
    assert Reversal.objects.get(refund_id="admin-second").status == "rejected"
