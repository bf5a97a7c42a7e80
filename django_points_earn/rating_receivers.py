"""The ``review_approved`` receiver: a review's earning, recorded in the shop's transaction (as ``order_paid``'s
is) and sent after it commits, by the same outbox machine. Runs inside the shop's moderation; never raises.

Bad review data becomes a ``rejected`` record with the reason; a platform without rating channels (fabric), or a
review the adapter says to skip, a ``skipped`` one: nothing is lost, nothing is sent twice (the record is unique per
account, kind and review reference).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.core.exceptions import ImproperlyConfigured

from . import announce, earning_insert
from .adapters import get_adapter
from .conf import get_settings
from .earning_request import InvalidEarningRequest
from .models import RATING_KINDS, EarningRecord, Kind, Status
from .phones import mask_phone
from .providers import get_backend
from .rating_request import RatingRequest
from .receiving import call_safely, drain_after_commit, normalized_or_raw, provider_of

log = logging.getLogger("django_points_earn")


def on_review_approved(sender: Any, review: Any = None, **kwargs: Any) -> None:
    """Signal receiver. Whatever happens here, the shop's moderation carries on."""
    if review is None:
        log.error("review_approved was sent without a review (sender=%r); nothing recorded", sender)
        return
    try:
        record = record_approved_review(review)
    except Exception:
        log.exception("could not record the earning for review %r; moderation continues", getattr(review, "pk", review))
        return
    if record is not None and record.status == Status.QUEUED:
        drain_after_commit(record.account)


def record_approved_review(review: Any) -> EarningRecord:
    """Freeze the review's earning request as a record (queued, rejected or skipped). Idempotent per reference."""
    adapter = get_adapter()
    status, reason, payload = Status.QUEUED, "", None
    try:
        request = adapter.build_rating_request(review)
    except Exception as exc:  # the shop's adapter failed: keep the review visible, with the reason
        reason = f"the review adapter failed: {type(exc).__name__}: {exc}"
        log.warning("review adapter failed for review %r: %s", getattr(review, "pk", review), reason)
        request, status = _fallback_request(adapter, review), Status.REJECTED
    if status == Status.QUEUED:
        status, reason, payload = _decide(adapter, review, request)
    values: dict[str, Any] = {
        "account": str(request.account)[:64],
        "provider": provider_of(request.account),
        "kind": request.kind if request.kind in RATING_KINDS else Kind.STORE_RATING,
        "order_number": str(request.reference)[:100] or f"review-pk-{request.review_id}",
        "order_id": str(request.review_id)[:64],
        "phone": normalized_or_raw(request.phone)[:32],
        "total": None,
        "request": _request_json(request),
        "payload": payload,
    }
    record, created = earning_insert.create(status=status, reason=reason, **values)
    if created:
        announce.earning_settled(record)  # rejected at moderation: the shop hears it needs a person
        log.log(
            logging.INFO if status == Status.QUEUED else logging.WARNING,
            "%s earning %s/%s phone=%s recorded as %s%s",
            record.kind,
            record.account,
            record.order_number,
            mask_phone(record.phone),
            status,
            f": {reason}" if reason else "",
        )
    return record


def _decide(adapter: Any, review: Any, request: RatingRequest) -> tuple[str, str, dict[str, Any] | None]:
    """Queued with its body, or skipped/rejected with the precise reason."""
    try:
        skip = adapter.get_review_skip_reason(review)
    except Exception as exc:
        return Status.REJECTED, f"the review adapter's get_review_skip_reason failed: {exc}", None
    if skip:
        return Status.SKIPPED, str(skip), None
    try:
        account = get_settings().account(request.account)
        backend = get_backend(account)
    except ImproperlyConfigured as exc:
        return Status.REJECTED, f"configuration error: {exc}", None
    if not backend.supports_ratings:
        return (
            Status.SKIPPED,
            f"{backend.label or backend.provider} has no rating earning channel: nothing sent for this review",
            None,
        )
    try:
        payload = backend.build_rating_payload(request)
    except InvalidEarningRequest as exc:
        return Status.REJECTED, str(exc), None
    except Exception as exc:
        log.exception("could not build the rating request for review %s", request.reference)
        return Status.REJECTED, f"could not build the request: {type(exc).__name__}: {exc}", None
    taken = _number_taken_by_another_kind(request)
    if taken:
        return Status.REJECTED, taken, None
    return Status.QUEUED, "", payload


def _number_taken_by_another_kind(request: RatingRequest) -> str:
    """Points keeps a rating as an order whose order number is the review reference, in the merchant's one set of
    order numbers: a reference equal to a purchase's order number (or another rating's) would be refused there as a
    duplicate. Said here, before any call."""
    other = (
        EarningRecord.objects.filter(account=request.account, order_number=request.reference)
        .exclude(kind=request.kind)
        .values_list("kind", flat=True)
        .first()
    )
    if other is None:
        return ""
    return (
        f"review reference {request.reference!r} is already the number of a {other.replace('_', ' ')} earning on "
        "this account, and Points keeps one set of order numbers per merchant: give reviews references of their "
        "own (e.g. 'review-<id>')"
    )


def _fallback_request(adapter: Any, review: Any) -> RatingRequest:
    """What can still be read of a review whose adapter failed, so its record says which review it was."""
    review_id = call_safely(adapter.get_review_id, review) or ""
    account = call_safely(adapter.get_review_account, review) or (get_settings().account_names or ["default"])[0]
    reference = call_safely(adapter.get_review_reference, review) or f"review-pk-{review_id}"
    kind = call_safely(adapter.get_review_kind, review) or Kind.STORE_RATING
    return RatingRequest(account=account, kind=kind, reference=str(reference), phone=None, review_id=review_id)


def _request_json(request: RatingRequest) -> dict[str, Any]:
    data = request.to_json()
    try:
        json.dumps(data, allow_nan=False)
        return data
    except (TypeError, ValueError):
        return {k: (v if isinstance(v, str | int | type(None)) else repr(v)[:2000]) for k, v in data.items()}
