"""What a person (the admin, an operator's command) does to an earning: send it again, correct its customer data
and send it, mark it resolved, resume its paused account, and keep what a check with the platform saw."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from .conf import get_settings
from .earning_request import EarningRequest
from .earning_states import EARNINGS, run_settled_hooks
from .models import RATING_KINDS, AccountState, EarningRecord, Status, Trigger
from .outbox import Audit, TransitionError
from .phones import mask_phone, normalize_ksa_mobile
from .providers import get_backend
from .rating_request import RatingRequest


def cannot_resend(record: EarningRecord) -> str:
    """Why this earning cannot be sent again as it is ("" if it can).

    A record rejected before any call (the order data was refused at checkout) has no request body: sending it
    "again" would send nothing (an empty body to Points, a crash on fabric). It can only be corrected, which
    rebuilds the body from the corrected data.
    """
    if record.payload is None:
        return gettext(
            "it was rejected before anything was sent, so there is no request to send again: correct its details "
            "(Correct customer details and send again), which rebuilds the request, or mark it resolved"
        )
    return ""


def requeue(record: EarningRecord, *, trigger: str, actor: str = "", note: str = "") -> bool:
    """A human (or an account resume) sends a rejected, blocked or failed earning again, with a fresh budget.

    ``outcome_unknown`` is kept: it is what lets a later "duplicate" answer count as awarded. A record without a
    request body is refused (:func:`cannot_resend`), also if it got one meanwhile only in another process's view:
    the UPDATE itself requires the body.
    """
    now = timezone.now()
    if record.status not in (Status.REJECTED, Status.BLOCKED, Status.FAILED) or cannot_resend(record):
        return False
    return EARNINGS.move(
        record,
        record.status,
        Status.QUEUED,
        {
            "attempts": 0,
            "rate_limited": 0,
            "next_attempt_at": now,
            "completed_at": None,
            "updated_at": now,
            "status_reason": note or "sent again",
        },
        audit=Audit(trigger, actor, note or "sent again"),
    )


def resume_account(account: str, *, actor: str = "", trigger: str = Trigger.ADMIN) -> int:
    """Unpause and send the account's blocked earnings again. Returns how many were requeued."""
    AccountState.objects.filter(pk=account).update(paused=False, resumed_at=timezone.now(), resumed_by=actor[:150])
    count = 0
    for record in EarningRecord.objects.filter(account=account, status=Status.BLOCKED).iterator():
        count += requeue(record, trigger=trigger, actor=actor, note="account resumed")
    return count


def resolve(record: EarningRecord, *, actor: str, note: str, trigger: str = Trigger.ADMIN) -> bool:
    """A human settled it outside the app (e.g. awarded by hand in the platform's dashboard): say so, and why."""
    if not note.strip():
        raise ValueError("a resolution needs a note saying what was done")
    now = timezone.now()
    with transaction.atomic():
        if not EARNINGS.move(
            record,
            record.status,
            Status.RESOLVED,
            {
                "completed_at": now,
                "updated_at": now,
                "next_attempt_at": None,
                "status_reason": f"resolved by {actor}: {note}",
            },
            audit=Audit(trigger, actor, note),
        ):
            return False
        record.status = Status.RESOLVED
        run_settled_hooks(record)  # a refund that waited for this earning's outcome ends, saying why
    return True


def correct_and_requeue(
    record: EarningRecord, changes: dict[str, Any], *, actor: str, trigger: str = Trigger.ADMIN
) -> EarningRecord:
    """Fix a rejected earning's customer data (e.g. the phone), rebuild the platform body, and send it again.

    Raises ``InvalidEarningRequest`` (nothing changed) when the corrected data is still not valid. The audit entry
    says who changed which fields from what to what (phones masked).
    """
    if record.status != Status.REJECTED:
        raise TransitionError(f"only rejected earnings can be corrected (this one is {record.status})")
    data = {**record.request, **changes}
    backend = get_backend(get_settings().account(record.account))
    request: EarningRequest | RatingRequest
    if record.kind in RATING_KINDS:  # a review's earning: its own request and body (no name, no total)
        request = RatingRequest.from_json(data)
        payload = backend.build_rating_payload(request)
    else:
        request = EarningRequest.from_json(data)
        payload = backend.build_payload(request)
    phone = normalize_ksa_mobile(request.phone) if request.phone else ""
    shown = {k: (mask_phone(phone) if k == "phone" else v) for k, v in changes.items()}
    before = {
        k: (mask_phone(str(record.request.get(k) or "")) if k == "phone" else record.request.get(k)) for k in changes
    }
    note = "corrected " + ", ".join(f"{k}: {before[k]!r} → {shown[k]!r}" for k in changes) + "; sent again"
    now = timezone.now()
    phone = normalize_ksa_mobile(request.phone) if request.phone else ""
    with transaction.atomic():
        if not EARNINGS.move(
            record,
            Status.REJECTED,
            Status.QUEUED,
            {
                "request": request.to_json(),
                "payload": payload,
                "phone": phone,
                "total": getattr(request, "total", None),
                "attempts": 0,
                "rate_limited": 0,
                "next_attempt_at": now,
                "completed_at": None,
                "updated_at": now,
                "status_reason": note,
            },
            audit=Audit(trigger, actor, note),
        ):
            raise TransitionError("the earning changed meanwhile; reload and try again")
    return EarningRecord.objects.get(pk=record.pk)


# -- remote checks ------------------------------------------------------------------------------------------------
def record_remote_check(
    record: EarningRecord, seen_status: str, drift: str, *, actor: str = "", trigger: str = Trigger.RECONCILE
) -> None:
    """Keep what a lookup on the platform saw: when, and how it differs from our record (``""``: it agrees).

    Drift is reported, never "fixed": the state stays as it is for a human to judge. The audit trail gets a note on
    the unchanged state when a person asked (``trigger`` admin) or when a new difference shows up; a nightly
    verification that finds everything as before adds nothing to it.
    """
    now = timezone.now()
    drift = drift[:255]
    with transaction.atomic():
        EarningRecord.objects.filter(pk=record.pk).update(remote_checked_at=now, drift=drift)
        if trigger == Trigger.ADMIN or (drift and drift != record.drift):
            seen = seen_status or "unknown"
            note = f"checked with the platform: {seen}" + (f"; differs: {drift}" if drift else "; agrees")
            EARNINGS.record_event(record, record.status, record.status, Audit(trigger, actor, note))
    record.remote_checked_at = now
    record.drift = drift
