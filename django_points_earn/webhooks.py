"""Platform webhooks: a view that checks the shared secret, stores every delivery and answers fast, and the job
that applies it (a pending customer activated, a refund or cancellation made on the platform).

What a delivery means is the platform's business: its backend's ``webhook_parser`` (e.g.
``providers/points_webhooks.py``) reads it into neutral events (``providers/events.py``), and this module applies
them through the modules that own the state, never writing it itself: ``settlement`` (the earning, on the
platform's word) and ``reversal_lifecycle``/``reversals`` (refunds).

Deliveries may come twice and in any order. A redelivery has the same dedupe key and is counted, not applied
again; two different partial refunds of one order differ in their amounts, so both are applied.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.module_loading import import_string
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import earning_states, merchant_alerts, metrics, reversal_lifecycle, reversals, settlement, webhook_input
from .conf import get_settings
from .models import EarningRecord, Kind, ReversalStatus, Status, WebhookDelivery
from .providers import platform
from .providers.events import (
    EarningCancelled,
    EarningConfirmed,
    Event,
    Ignored,
    MerchantBalance,
    ParsedDelivery,
    PointsTakenBack,
)

log = logging.getLogger("django_points_earn")

Parser = Callable[[dict[str, Any]], ParsedDelivery]


def dedupe_key(account: str, payload: dict[str, Any], parsed: ParsedDelivery) -> str:
    """The same for a redelivery; different for another delivery about the same order (the parser's ``key``)."""
    parts = [account, str(payload.get("event")), *parsed.key]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _platform(account: str) -> Any:
    """The account's backend class (ImproperlyConfigured for an account that is not in the settings)."""
    return platform(get_settings().account(account).provider)


def parser_for(account: str) -> Parser | None:
    """The account's platform's webhook parser, or None when its platform sends no webhooks."""
    backend = _platform(account)
    path = backend.webhook_parser if backend is not None else None
    return import_string(path) if path else None


@csrf_exempt
@require_POST
def receive(request: HttpRequest, account: str) -> HttpResponse:
    """:func:`answer`, counted by HTTP status (a 5xx too, when storing fails) for the metrics."""
    known = account in get_settings().account_names
    try:
        response = answer(request, account)
    except BaseException:
        metrics.webhook_request(account if known else "unknown", 500)
        raise
    metrics.webhook_request(account if known else "unknown", response.status_code)
    return response


def answer(request: HttpRequest, account: str) -> HttpResponse:
    """The webhook view of every platform with a ``webhook_parser``, at ``webhooks/<platform>/<account>/``.

    ``X-Webhook-Secret`` must equal the account's ``WEBHOOK_SECRET`` (constant-time); else 403, nothing kept.
    An unknown account (or one whose platform sends no webhooks) is answered exactly like a wrong secret, so an
    outsider cannot learn account names. With the right secret: a body over ``WEBHOOK_MAX_BYTES`` is 413, a body
    that is not a storable JSON object with an event is 400 (the message says why); nothing of either is stored.
    """
    given = request.headers.get("X-Webhook-Secret", "")
    parse = _parser_if_secret_matches(account, given)
    if parse is None:
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
    return _store(account, payload, parse(payload))


def _store(account: str, payload: dict[str, Any], parsed: ParsedDelivery) -> HttpResponse:
    """Keep the delivery (once: a redelivery is counted) and ask for the job that applies it."""
    key = dedupe_key(account, payload, parsed)
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                account=account,
                event=payload["event"][:64],
                order_uuid=parsed.remote_id[:64],
                order_number=parsed.order_number[:100],
                dedupe_key=key,
                payload=payload,
            )
    except IntegrityError:
        WebhookDelivery.objects.filter(dedupe_key=key).update(redeliveries=F("redeliveries") + 1)
        return JsonResponse({"ok": True, "duplicate": True})
    _enqueue(delivery.pk)
    return JsonResponse({"ok": True})


def _parser_if_secret_matches(account: str, given: str) -> Parser | None:
    """Constant-time; an unknown account compares against a dummy so that it costs the same as a wrong secret."""
    try:
        secret = get_settings().account(account).secrets.get("WEBHOOK_SECRET", "")
        parse = parser_for(account)
    except ImproperlyConfigured:
        secret, parse = "", None
    known = parse is not None
    matches = hmac.compare_digest(given.encode(), (secret or "\x00 no secret").encode())
    if not (known and secret and matches):
        shown = account.encode("ascii", "backslashreplace").decode()[:64]
        why = "unknown account" if not known else ("wrong secret" if given else "missing secret")
        log.warning("webhook for account %s refused: %s", shown, why)
        return None
    return parse


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
            metrics.webhook_delivery(delivery.account, result)
            return result
        except Exception as exc:  # kept for a human; the delivery is not retried blindly
            log.exception("webhook delivery %s could not be applied", delivery_id)
            result = f"error: {type(exc).__name__}: {exc}"
        WebhookDelivery.objects.filter(pk=delivery.pk).update(processed_at=timezone.now(), result=result[:2000])
    metrics.webhook_delivery(delivery.account, result)
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
    """What the delivery says, applied: the earning confirmed first (it may give the id a refund needs), then
    what was taken back. The result of the last event is the delivery's."""
    parse = parser_for(delivery.account)
    if parse is None:
        return "ignored: this account's platform sends no webhooks"
    events = parse(delivery.payload).events
    balance = [e for e in events if isinstance(e, MerchantBalance)]
    if balance:  # about the merchant's balance, not an earning
        return _balance(delivery, balance[0])
    ignored = next((e for e in events if isinstance(e, Ignored)), None)
    if ignored is not None or not events:
        return f"ignored: {ignored.why if ignored else 'nothing about an earning'}"
    record = _find(delivery.account, events[0])
    if record is None:
        return "ignored: no earning here for this order"
    if record.status == Status.SENDING and any(not isinstance(e, EarningConfirmed) for e in events):
        # A refund or cancellation can only be applied to an earning that is settled: the call in flight decides
        # whether it is, in a moment. Applied then (a reversal of an earning not yet awarded would be lost).
        raise NotYet(
            f"the earning is being sent right now; the {delivery.event} webhook is applied once its answer is in"
        )
    result = ""
    for event in events:
        if isinstance(event, EarningConfirmed):
            result = _confirm(delivery, record, event)
        elif isinstance(event, EarningCancelled):
            settlement.apply_reversal(record, note=f"cancelled on the platform: {event.reason}".strip(), fully=True)
            result = "earning cancelled on the platform"
        elif isinstance(event, PointsTakenBack):
            result = _taken_back(delivery, record, event)
    return result


def _balance(delivery: WebhookDelivery, event: MerchantBalance) -> str:
    alert, new = merchant_alerts.from_webhook(delivery.account, delivery.dedupe_key, event)
    if not new:
        return f"balance alert {alert.pk} already kept ({event.kind})"
    return f"balance alert {alert.pk} kept: {event.kind}, balance {event.current_balance}"


def _confirm(delivery: WebhookDelivery, record: EarningRecord, event: EarningConfirmed) -> str:
    if event.remote_id and (
        not record.remote_id or earning_states.settled_by_platform_id(record.status, record.outcome_unknown)
    ):
        # Whatever the record's state: a record being sent, or queued again after a lost answer, keeps the id for
        # its resend's "duplicate" answer; one the platform's word settles becomes awarded (lifecycle decides),
        # also when it got the id earlier (while it was being sent) and is still not settled.
        settlement.confirm_award(
            record,
            remote_id=event.remote_id,
            remote_reference=event.remote_reference,
            points=event.points,
            note=f"the platform's {delivery.event} webhook gave the id of this earning",
        )
        record.refresh_from_db()
    return f"earning is {record.status} ({record.remote_id or 'no id'})"


def _taken_back(delivery: WebhookDelivery, record: EarningRecord, event: PointsTakenBack) -> str:
    """Our own refund (the backend tells it by its reason) is settled by the platform's word; any other was made
    on the platform and is kept on the record, once per delivery."""
    backend = _platform(delivery.account)
    ours = next((r for r in record.reversal_set.all() if backend.is_our_refund(r.refund_id, event.reason)), None)
    if ours is not None:
        already = ours.status == ReversalStatus.REVERSED
        reversal_lifecycle.confirm_by_platform(
            ours, points=event.points, note=f"confirmed by the platform's {delivery.event} webhook"
        )
        if already:
            return f"refund {ours.refund_id} confirmed ({event.points} points)"
        # Our call's answer was lost (or not yet recorded): the platform's word settled it.
        return f"refund {ours.refund_id} settled by webhook ({event.points} points)"
    reversals.record_platform_refund(
        record,
        key=f"platform-{delivery.dedupe_key[:24]}",
        amount=event.amount,
        points=event.points,
        reason=event.reason or "refunded on the platform",
        remote_status=event.remote_status,
        fully=event.fully,
    )
    return f"refund made on the platform recorded ({event.points} points)"


def _find(account: str, event: Event) -> EarningRecord | None:
    """The earning an event is about: by the platform's id, else by the order number. A number is unique per kind
    only (a review's reference may equal an order's number): the platform's order is one we sent, so a record
    with a request body comes before one rejected before any call; among those, the oldest."""
    uuid, number = getattr(event, "remote_id", ""), getattr(event, "order_number", "")
    qs = EarningRecord.objects.filter(account=account)
    found = uuid and qs.filter(remote_id=uuid).first()
    if found or not number:
        return found or None
    same_number = list(qs.filter(order_number=number).order_by("pk")[: len(Kind)])
    return next((r for r in same_number if r.payload is not None), same_number[0] if same_number else None)
