"""Helpers for the admin tests: earnings put into each state through the real lifecycle, and staff users."""

from __future__ import annotations

from django.contrib.auth.models import Permission
from django.utils import timezone

from django_points_earn import lifecycle
from django_points_earn.conf import get_settings
from django_points_earn.models import EarningRecord, Status
from django_points_earn.providers.results import UNAUTHORIZED, UNAVAILABLE, EarnResult

CHANGELIST = "/admin/django_points_earn/earningrecord/"
DASHBOARD = "/admin/django_points_earn/reconciliationdashboard/"


def page(record: EarningRecord) -> str:
    return f"{CHANGELIST}{record.pk}/change/"


def action_url(record: EarningRecord, action: str) -> str:
    return f"{CHANGELIST}{record.pk}/{action}/"


def earning(order) -> EarningRecord:
    return EarningRecord.objects.get(order_number=order.number)


def _send_once(record: EarningRecord, result: EarnResult) -> EarningRecord:
    EarningRecord.objects.filter(pk=record.pk, status=Status.QUEUED).update(next_attempt_at=timezone.now())
    claimed = lifecycle.claim(record.pk, lease_seconds=30)
    assert claimed is not None, f"{record} could not be claimed"
    attempt = lifecycle.start_attempt(claimed, trigger="worker")
    return lifecycle.complete(claimed, attempt, result)


def make_failed(record: EarningRecord) -> EarningRecord:
    """Transient errors until the attempts are used up, as a worker would record them."""
    for _ in range(int(get_settings().retry["MAX_ATTEMPTS"])):
        record = _send_once(
            record, EarnResult(UNAVAILABLE, message="Points answered HTTP 503: no detail", http_status=503)
        )
    assert record.status == Status.FAILED
    return record


def make_blocked(record: EarningRecord) -> EarningRecord:
    record = _send_once(
        record,
        EarnResult(UNAUTHORIZED, message="Points refused the API key: Invalid or inactive API key", http_status=400),
    )
    assert record.status == Status.BLOCKED
    return record


def staff(django_user_model, username: str, *codenames: str):
    """A staff member who may see earnings and holds exactly the given extra permissions."""
    user = django_user_model.objects.create_user(username, f"{username}@example.com", "pw", is_staff=True)
    wanted = {"view_earningrecord", "view_accountstate", *codenames}
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="django_points_earn", codename__in=wanted)
    )
    return django_user_model.objects.get(pk=user.pk)  # fresh: no cached permissions
