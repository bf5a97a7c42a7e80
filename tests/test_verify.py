"""verify.verify_record: the platform is asked under the account lock, what it says is recorded, never "fixed",
and the audit trail hears of it when a person asked or a new difference shows up (not on every nightly check)."""

import pytest
import requests
from django.conf import settings

from django_points_earn import verify
from django_points_earn.models import EarningEvent, EarningRecord, Status, Trigger
from tests.admin_helpers import earning
from tests.conftest import POINTS_URL, run_worker

pytestmark = pytest.mark.django_db(transaction=True)


def notes(record) -> list[str]:
    return list(EarningEvent.objects.filter(record=record, note__startswith="checked").values_list("note", flat=True))


def test_nightly_checks_audit_only_new_differences(place_order, points_api):
    record = earning(place_order("SO-1"))
    run_worker()
    record.refresh_from_db()

    agreed = verify.verify_record(record, actor="reconcile", trigger=Trigger.RECONCILE, wait=True)
    assert (agreed.kind, agreed.seen_status, agreed.drift, agreed.error) == (verify.CHECKED, "approved", "", "")
    assert notes(record) == []  # agreeing, unattended: nothing to audit
    assert EarningRecord.objects.get(pk=record.pk).remote_checked_at is not None

    requests.post(
        f"{POINTS_URL}/orders/{record.remote_id}/refund",
        json={"reason": "refunded in the Points dashboard"},
        headers={"x-api-key": settings.POINTS_API_KEY},
        timeout=5,
    )
    for _ in range(2):
        record = EarningRecord.objects.get(pk=record.pk)
        drifted = verify.verify_record(record, actor="reconcile", trigger=Trigger.RECONCILE, wait=True)
        assert "approved → fully_refunded" in drifted.drift
    assert len(notes(record)) == 1  # the difference, once
    assert EarningRecord.objects.get(pk=record.pk).status == Status.AWARDED

    verify.verify_record(EarningRecord.objects.get(pk=record.pk), actor="noura", trigger=Trigger.ADMIN)
    assert EarningEvent.objects.filter(record=record, note__startswith="checked").latest("id").actor == "noura"


def test_nothing_to_look_up_without_a_platform_id(place_order):
    record = earning(place_order("SO-1", phone="bad"))
    outcome = verify.verify_record(record, actor="noura")
    assert outcome.kind == verify.NO_REMOTE_ID and outcome.error
    record.refresh_from_db()
    assert record.remote_checked_at is None
