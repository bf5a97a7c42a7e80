"""The refunds and webhook deliveries in the admin: read-only lists, phones masked, and their two actions
("send the refund again", "apply again") each behind its permission and a confirmation page."""

import json

import pytest
from django.conf import settings
from django.contrib.admin import helpers
from django.contrib.auth.models import Permission
from django.utils import translation

from django_points_earn.models import EarningRecord, Reversal, ReversalStatus, Status, WebhookDelivery
from django_points_earn.phones import mask_phone, mask_phones_in_text
from django_points_earn.signals import order_refunded
from tests.conftest import run_worker, settle
from tests.shop.models import Order

pytestmark = pytest.mark.django_db(transaction=True)

REVERSALS = "/admin/django_points_earn/reversal/"
DELIVERIES = "/admin/django_points_earn/webhookdelivery/"
WEBHOOK = "/loyalty/webhooks/points/main/"
MASKED = mask_phone("0551234567")
UUID = "7f1c1d7e-5a4b-4c3d-9e2f-0a1b2c3d4e5f"


def user(django_user_model, name: str, *codenames: str):
    made = django_user_model.objects.create_user(name, f"{name}@example.com", "pw", is_staff=True)
    made.user_permissions.set(
        Permission.objects.filter(content_type__app_label="django_points_earn", codename__in=codenames)
    )
    return django_user_model.objects.get(pk=made.pk)


def post_webhook(client, payload):
    response = client.post(
        WEBHOOK,
        data=json.dumps(payload),
        content_type="application/json",
        headers={"X-Webhook-Secret": settings.POINTS_WEBHOOK_SECRET, "X-Webhook-Event": payload["event"]},
    )
    assert response.status_code == 200, response.content


def approved(number: str) -> dict:
    return {
        "event": "approved",
        "order": {
            "id": UUID,
            "order_number": number,
            "reference_number": "REF-77",
            "type": "earning",
            "order_status": "approved",
            "total_points": 185,
            "customer": {"mobile": "0551234567"},
        },
    }


def act(client, url: str, action: str, objects, *, confirm: bool, **kwargs):
    data = {"action": action, "index": 0, helpers.ACTION_CHECKBOX_NAME: [str(o.pk) for o in objects]}
    return client.post(url, {**data, **({"confirm": "yes"} if confirm else {})}, **kwargs)


@pytest.fixture
def early_delivery(client, place_order, points_api):
    """An approved webhook that came before its earning existed here, then the earning (pending activation)."""
    post_webhook(client, approved("SO-LATE"))
    run_worker()
    delivery = WebhookDelivery.objects.get()
    assert delivery.result == "ignored: no earning here for this order"
    place_order("SO-LATE", phone="0500000003")  # a customer without a Points account yet
    settle()
    assert EarningRecord.objects.get().status == Status.PENDING_ACTIVATION
    return delivery


def test_apply_again_settles_a_delivery_stored_before_its_earning(django_user_model, client, early_delivery):
    client.force_login(user(django_user_model, "agent", "view_webhookdelivery", "reapply_webhookdelivery"))
    page = act(client, DELIVERIES, "apply_again_selected", [early_delivery], confirm=False)
    assert page.status_code == 200 and 'id="pe-confirm-form"' in page.content.decode()
    assert EarningRecord.objects.get().status == Status.PENDING_ACTIVATION  # nothing before "Yes, I'm sure"

    done = act(client, DELIVERIES, "apply_again_selected", [early_delivery], confirm=True)
    assert done.status_code == 302
    record = EarningRecord.objects.get()
    assert (record.status, record.remote_id, record.points) == (Status.AWARDED, UUID, 185)
    early_delivery.refresh_from_db()
    assert early_delivery.processed_at is not None and early_delivery.result.startswith("earning is awarded")

    act(client, DELIVERIES, "apply_again_selected", [early_delivery], confirm=True)  # again: changes nothing
    assert record.event_set.filter(to_status=Status.AWARDED).count() == 1


def test_a_refunded_delivery_applied_again_records_the_platform_refund_once(
    django_user_model, client, place_order, points_api
):
    import requests

    from tests.conftest import POINTS_URL

    place_order("SO-DASH", lines=[("Oud", "100.00", 1)])
    settle()
    record = EarningRecord.objects.get()
    answer = requests.post(
        f"{POINTS_URL}/orders/{record.remote_id}/refund",
        json={"amount": 25, "reason": "refunded in the Points dashboard"},
        headers={"x-api-key": settings.POINTS_API_KEY},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text
    [refunded] = [e["payload"] for e in points_api.events_since(0) if e["event"] == "refunded"]
    post_webhook(client, refunded)
    run_worker()
    assert Reversal.objects.filter(source="platform").count() == 1

    client.force_login(user(django_user_model, "agent", "view_webhookdelivery", "reapply_webhookdelivery"))
    delivery = WebhookDelivery.objects.get()
    for _ in range(2):
        assert act(client, DELIVERIES, "apply_again_selected", [delivery], confirm=True).status_code == 302
    [reversal] = Reversal.objects.all()
    assert (reversal.source, reversal.amount, reversal.status) == ("platform", 25, ReversalStatus.REVERSED)
    record.refresh_from_db()
    assert record.status == Status.PARTIALLY_REVERSED
    assert record.event_set.filter(to_status=Status.PARTIALLY_REVERSED).count() == 1


def test_view_only_staff_see_both_lists_masked_and_cannot_act(django_user_model, client, early_delivery):
    client.force_login(user(django_user_model, "viewer", "view_webhookdelivery", "view_reversal"))
    listing = client.get(DELIVERIES).content.decode()
    assert "SO-LATE" in listing and 'name="action"' not in listing
    detail = client.get(f"{DELIVERIES}{early_delivery.pk}/change/").content.decode()
    assert 'id="pe-payload"' in detail and MASKED in detail
    assert "0551234567" not in detail and settings.POINTS_WEBHOOK_SECRET not in detail
    assert "Save" not in detail and "delete/" not in detail
    assert client.get(f"{DELIVERIES}add/").status_code == 403
    assert client.get(REVERSALS).status_code == 200

    refused = act(client, DELIVERIES, "apply_again_selected", [early_delivery], confirm=True)
    assert refused.status_code == 200  # the list again: the action does not exist for them
    assert EarningRecord.objects.get().status == Status.PENDING_ACTIVATION


@pytest.mark.parametrize(
    "url,action,codename",
    [
        (DELIVERIES, "apply_again_selected", "reapply_webhookdelivery"),
        (REVERSALS, "send_again_selected", "reverse_earningrecord"),
    ],
)
def test_the_action_permission_without_view_permission_is_403(django_user_model, client, url, action, codename):
    client.force_login(user(django_user_model, "actor", codename))
    assert client.get(url).status_code == 403
    assert client.post(url, {"action": action, "index": 0, helpers.ACTION_CHECKBOX_NAME: ["1"]}).status_code == 403


def test_a_refund_the_platform_rejected_is_sent_again_from_the_list(django_user_model, client, place_order, points_api):
    order = place_order("SO-RMA", lines=[("Abaya", "115.00", 1)])
    settle()
    points_api.refund_window_days = -1  # its refund window closed: the platform answers 400
    order_refunded.send(sender=Order, order=order, amount=None, reason="call 0551234567", refund_id="RMA-9")
    settle()
    reversal = Reversal.objects.get()
    assert reversal.status == ReversalStatus.REJECTED and reversal.attempt_set.exists()

    client.force_login(user(django_user_model, "viewer", "view_reversal"))
    listing = client.get(REVERSALS, {"q": "SO-RMA"}).content.decode()
    assert "RMA-9" in listing and 'data-state="rejected"' in listing and 'name="action"' not in listing
    assert "0551234567" not in listing and mask_phones_in_text("call 0551234567") in listing
    assert "RMA-9" not in client.get(REVERSALS, {"q": "SO-OTHER"}).content.decode()
    assert "RMA-9" in client.get(REVERSALS, {"q": "RMA-9"}).content.decode()
    assert "RMA-9" in client.get(REVERSALS, {"status__exact": "rejected", "source": "shop"}).content.decode()
    assert "RMA-9" not in client.get(REVERSALS, {"source": "platform"}).content.decode()
    assert "RMA-9" not in client.get(REVERSALS, {"account": "other"}).content.decode()
    detail = client.get(f"{REVERSALS}{reversal.pk}/change/").content.decode()
    assert "0551234567" not in detail and settings.POINTS_API_KEY not in detail

    client.force_login(user(django_user_model, "agent", "view_reversal", "reverse_earningrecord"))
    page = act(client, REVERSALS, "send_again_selected", [reversal], confirm=False)
    assert 'id="pe-confirm-form"' in page.content.decode()
    points_api.refund_window_days = None
    assert act(client, REVERSALS, "send_again_selected", [reversal], confirm=True).status_code == 302
    settle()
    reversal.refresh_from_db()
    assert reversal.status == ReversalStatus.REVERSED
    assert EarningRecord.objects.get().status == Status.REVERSED
    # The refund's own history, as the outbox machine audited it: refused, sent again by the agent, taken back.
    trail = list(reversal.event_set.order_by("id").values_list("from_status", "to_status", "actor"))
    assert trail == [("sending", "rejected", ""), ("rejected", "queued", "agent"), ("sending", "reversed", "")]
    detail = client.get(f"{REVERSALS}{reversal.pk}/change/").content.decode()
    assert "Rejected → Queued (Admin, agent): refund RMA-9: sent again from the admin by agent" in detail
    assert "0551234567" not in detail


def test_a_refund_refused_before_sending_cannot_be_sent_again(django_user_model, client, place_order, points_api):
    order = place_order("SO-BIG", lines=[("Oud", "100.00", 1)])
    settle()
    order_refunded.send(sender=Order, order=order, amount="500", reason="too much", refund_id="R-BIG")
    reversal = Reversal.objects.get()
    assert reversal.status == ReversalStatus.REJECTED and not reversal.attempt_set.exists()
    client.force_login(user(django_user_model, "agent", "view_reversal", "reverse_earningrecord"))
    page = act(client, REVERSALS, "send_again_selected", [reversal], confirm=False).content.decode()
    assert "refused before anything was sent" in page and 'id="pe-confirm-form"' not in page
    act(client, REVERSALS, "send_again_selected", [reversal], confirm=True)
    reversal.refresh_from_db()
    assert reversal.status == ReversalStatus.REJECTED


def test_both_lists_in_arabic(django_user_model, client, early_delivery):
    client.force_login(user(django_user_model, "viewer", "view_webhookdelivery", "view_reversal"))
    with translation.override("ar"):
        deliveries = client.get(DELIVERIES, headers={"accept-language": "ar"}).content.decode()
        refunds = client.get(REVERSALS, headers={"accept-language": "ar"}).content.decode()
    assert "تسليمات إشعارات الويب" in deliveries and "عمليات استرداد النقاط" in refunds


def test_the_actions_are_offered_in_arabic(django_user_model, client, early_delivery):
    client.force_login(user(django_user_model, "agent", "view_webhookdelivery", "reapply_webhookdelivery"))
    with translation.override("ar"):
        listing = client.get(DELIVERIES, headers={"accept-language": "ar"}).content.decode()
        page = act(
            client,
            DELIVERIES,
            "apply_again_selected",
            [early_delivery],
            confirm=False,
            headers={"accept-language": "ar"},
        ).content.decode()
    assert "تطبيق مرة أخرى" in listing
    assert "يُطبَّق كل تسليم مرة أخرى" in page
