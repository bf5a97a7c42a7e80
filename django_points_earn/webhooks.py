"""Points webhooks: a view that checks the shared secret, stores every delivery and answers fast, and the job
that applies it (a pending customer activated, a refund or cancellation made on the platform).

Deliveries may come twice and in any order. A redelivery has the same dedupe key and is counted, not applied
again; two different partial refunds of one order differ in their amounts, so both are applied.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import earning_states, reversals, settlement, webhook_input
from .conf import get_settings
from .models import EarningRecord, Reversal, ReversalStatus, Status, WebhookDelivery
from .providers.points import refund_tag

log = logging.getLogger("django_points_earn")

# Fields that tell two deliveries about one order apart (not the unsigned body timestamp).
KEY_FIELDS = ("id", "order_status", "updated_at", "refund_amount", "refund_points", "left_points", "left_amount")


def dedupe_key(account: str, payload: dict[str, Any]) -> str:
    order = payload.get("order") if isinstance(payload.get("order"), dict) else {}
    parts = [account, str(payload.get("event"))] + [str(order.get(k)) for k in KEY_FIELDS]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@csrf_exempt
@require_POST
def points_webhook(request: HttpRequest, account: str) -> HttpResponse:
    """``X-Webhook-Secret`` must equal the account's ``WEBHOOK_SECRET`` (constant-time); else 403, nothing kept.

    An unknown account is answered exactly like a wrong secret, so an outsider cannot learn account names. With
    the right secret: a body over ``WEBHOOK_MAX_BYTES`` is 413, a body that is not a storable JSON object with an
    event is 400 (the message says why); nothing of either is stored.
    """
    given = request.headers.get("X-Webhook-Secret", "")
    if not _secret_matches(account, given):
        return JsonResponse({"ok": False, "error": "forbidden"}, status=403)
    limit = int(get_settings().webhook_max_bytes)
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    try:
        body = request.body if declared <= limit else None
    except RequestDataTooBig:
        body = None
    if body is None or len(body) > limit:
        log.warning("webhook for account %s refused: body over %d bytes", account, limit)
        return JsonResponse({"ok": False, "error": f"body is larger than {limit} bytes"}, status=413)
    try:
        payload = webhook_input.parse(body)
    except webhook_input.BadBody as exc:
        log.warning("webhook for account %s refused: %s", account, exc)
        return JsonResponse({"ok": False, "error": str(exc)}, status=400)
    order = payload.get("order") if isinstance(payload.get("order"), dict) else {}
    key = dedupe_key(account, payload)
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                account=account,
                event=payload["event"][:64],
                order_uuid=str(order.get("id") or "")[:64],
                order_number=str(order.get("order_number") or "")[:100],
                dedupe_key=key,
                payload=payload,
            )
    except IntegrityError:
        WebhookDelivery.objects.filter(dedupe_key=key).update(redeliveries=F("redeliveries") + 1)
        return JsonResponse({"ok": True, "duplicate": True})
    _enqueue(delivery.pk)
    return JsonResponse({"ok": True})


def _secret_matches(account: str, given: str) -> bool:
    """Constant-time; an unknown account compares against a dummy so that it costs the same as a wrong secret."""
    try:
        secret = get_settings().account(account).secrets.get("WEBHOOK_SECRET", "")
        known = True
    except ImproperlyConfigured:
        secret, known = "", False
    matches = hmac.compare_digest(given.encode(), (secret or "\x00 no secret").encode())
    if not (known and secret and matches):
        shown = account.encode("ascii", "backslashreplace").decode()[:64]
        why = "unknown account" if not known else ("wrong secret" if given else "missing secret")
        log.warning("webhook for account %s refused: %s", shown, why)
    return known and bool(secret) and matches


def _enqueue(delivery_id: int) -> None:
    try:
        import django_rq

        from .queueing import WEBHOOK_JOB

        django_rq.get_queue(get_settings().queue, commit_mode="auto").enqueue(
            WEBHOOK_JOB, delivery_id, job_timeout=120, result_ttl=600
        )
    except Exception as exc:  # stored: the sweep processes it later
        log.warning("webhook delivery %s stored but not enqueued (%s); the sweep will process it", delivery_id, exc)


# -- processing (in a job) ---------------------------------------------------------------------------------------
def process(delivery_id: int) -> str:
    """Apply one stored delivery, once. Returns what was done, also kept on the delivery."""
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().filter(pk=delivery_id).first()
        if delivery is None or delivery.processed_at is not None:
            return "already processed"
        try:
            with transaction.atomic():  # a failure undoes this delivery's changes only, never the bookkeeping below
                result = _apply(delivery)
        except NotYet as exc:  # left unprocessed: the sweep (process_pending) applies it once the call is recorded
            result = f"waiting: {exc}"
            WebhookDelivery.objects.filter(pk=delivery.pk).update(result=result)
            return result
        except Exception as exc:  # kept for a human; the delivery is not retried blindly
            log.exception("webhook delivery %s could not be applied", delivery_id)
            result = f"error: {type(exc).__name__}: {exc}"
        WebhookDelivery.objects.filter(pk=delivery.pk).update(processed_at=timezone.now(), result=result[:2000])
    return result


class NotYet(Exception):
    """The delivery cannot be applied now (its earning is being sent); it stays unprocessed, for the sweep."""


def process_pending(limit: int = 500, older_than_seconds: float = 30) -> int:
    """Deliveries stored but never processed (Redis was down, a worker died); young ones are left to their job."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    qs = WebhookDelivery.objects.filter(processed_at__isnull=True, received_at__lte=cutoff)
    ids = list(qs.order_by("id").values_list("id", flat=True)[:limit])
    for delivery_id in ids:
        process(delivery_id)
    return len(ids)


def _apply(delivery: WebhookDelivery) -> str:
    order = delivery.payload.get("order") if isinstance(delivery.payload.get("order"), dict) else {}
    event = delivery.event
    if event not in ("approved", "refunded", "auto_refunded", "cancelled"):
        return f"ignored: {event} is not about earning"
    if str(order.get("type", "earning")) not in ("earning", "1"):
        return "ignored: not an earning order"
    record = _find(delivery.account, order)
    if record is None:
        return "ignored: no earning here for this order"
    uuid = str(order.get("id") or "")
    if event != "approved" and record.status == Status.SENDING:
        # A refund or cancellation can only be applied to an earning that is settled: the call in flight decides
        # whether it is, in a moment. Applied then (a reversal of an earning not yet awarded would be lost).
        raise NotYet(f"the earning is being sent right now; the {event} webhook is applied once its answer is in")
    if uuid and (not record.remote_id or earning_states.settled_by_platform_id(record.status, record.outcome_unknown)):
        # Whatever the record's state: a record being sent, or queued again after a lost answer, keeps the id for
        # its resend's "duplicate" answer; one the platform's word settles becomes awarded (lifecycle decides),
        # also when it got the id earlier (while it was being sent) and is still not settled.
        settlement.confirm_award(
            record,
            remote_id=uuid,
            remote_reference=str(order.get("reference_number") or ""),
            points=_number(order.get("total_points")) if event == "approved" else None,
            note=f"the platform's {event} webhook gave the id of this earning",
        )
        record.refresh_from_db()
    if event == "approved":
        return f"earning is {record.status} ({record.remote_id or 'no id'})"
    if event == "cancelled":
        settlement.apply_reversal(
            record, note=f"cancelled on the platform: {order.get('reason') or ''}".strip(), fully=True
        )
        return "earning cancelled on the platform"
    return _apply_refund(delivery, record, order)


def _apply_refund(delivery: WebhookDelivery, record: EarningRecord, order: dict[str, Any]) -> str:
    points = _number(order.get("refund_points"))
    amount = _number(order.get("refund_amount"))
    reason = str(order.get("reason") or "")
    ours = next((r for r in record.reversal_set.all() if refund_tag(r.refund_id) in reason), None)
    if ours is not None:
        fields = {"points": points} if points is not None else {}
        if ours.status == ReversalStatus.REVERSED:
            Reversal.objects.filter(pk=ours.pk).update(**fields)
            return f"refund {ours.refund_id} confirmed ({points} points)"
        # Our call's answer was lost (or not yet recorded): the platform's word settles it.
        moved = (
            Reversal.objects.filter(pk=ours.pk)
            .exclude(status__in=[ReversalStatus.CANCELLED])
            .update(
                status=ReversalStatus.REVERSED,
                completed_at=timezone.now(),
                lease_token="",
                lease_expires_at=None,
                status_reason="confirmed by the platform's refunded webhook",
                **fields,
            )
        )
        if moved:
            settlement.apply_reversal(record, note=f"refund {ours.refund_id}: points taken back (webhook)")
        return f"refund {ours.refund_id} settled by webhook ({points} points)"
    reversals.record_platform_refund(
        record,
        key=f"platform-{delivery.dedupe_key[:24]}",
        amount=amount,
        points=points,
        reason=reason or "refunded on the platform",
        remote_status=str(order.get("order_status") or ""),
    )
    return f"refund made on the platform recorded ({points} points)"


def _find(account: str, order: dict[str, Any]) -> EarningRecord | None:
    uuid, number = str(order.get("id") or ""), str(order.get("order_number") or "")
    qs = EarningRecord.objects.filter(account=account)
    return (uuid and qs.filter(remote_id=uuid).first()) or (number and qs.filter(order_number=number).first()) or None


# Points and amounts are kept in DecimalField(max_digits=14, decimal_places=2): anything from 10^12 up cannot be.
MAX_NUMBER = Decimal(10) ** 12


def _number(value: Any) -> Decimal | None:
    """A webhook's number, or None when it is missing or no column could keep it (NaN, infinite, too large)."""
    try:
        number = None if value is None or isinstance(value, bool) else Decimal(str(value))
    except InvalidOperation:
        return None
    if number is None or not number.is_finite() or abs(number) >= MAX_NUMBER:
        return None
    return number
