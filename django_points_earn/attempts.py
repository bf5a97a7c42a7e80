"""An outbox row's attempt rows: one per call, committed before it and closed with the platform's answer.

Every kind's attempts (an earning's, a refund's) are numbered on their earning's timeline. The body sent is stored
whole when it differs from the timeline's previous attempt's, otherwise only its SHA-256 (:func:`attempt_body` finds
the attempt holding it): retries under a 429 storm add a few hundred bytes, not a copy. The ORM writes are here;
PostgreSQL's hot path (:mod:`django_points_earn.outbox_sql`) writes the same rows from the same values.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from django.utils import timezone

from .models import EarningAttempt
from .providers import base as results
from .providers.base import EarnResult


def payload_digest(payload: Any) -> str:
    """SHA-256 of the body as canonical JSON: equal bodies, equal digests."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def start(owner: dict[str, Any], body: Any, *, trigger: str, actor: str = "") -> EarningAttempt:
    """The attempt row of the next call on ``owner``'s timeline (``record_id``, and the refund's own key for a
    refund's), numbered after the timeline's last one; its body stored unless that one sent the same."""
    digest = payload_digest(body)
    last = EarningAttempt.objects.filter(record_id=owner["record_id"]).order_by("-number")
    previous = last.values_list("number", "request_sha256").first()
    return EarningAttempt.objects.create(
        **owner,
        number=previous[0] + 1 if previous else 1,
        trigger=trigger,
        actor=actor[:150],
        request_body=None if previous is not None and previous[1] == digest else body,
        request_sha256=digest,
        started_at=timezone.now(),
    )


def finished_fields(result: EarnResult, now: datetime) -> dict[str, Any]:
    """What closing an attempt with the platform's answer writes (the ORM's save and the SQL alike)."""
    return {
        "finished_at": now,
        "duration_ms": result.duration_ms,
        "http_status": result.http_status,
        "outcome": result.status,
        "outcome_unknown": result.outcome_unknown,
        "error": "" if result.status == results.AWARDED else result.message,
        "response_body": result.raw_text,
    }


def finish_attempt(attempt: EarningAttempt, result: EarnResult, now: datetime) -> None:
    """Close an attempt with the platform's answer (inside the transaction that moves its row)."""
    fields = finished_fields(result, now)
    for name, value in fields.items():
        setattr(attempt, name, value)
    attempt.save(update_fields=list(fields))


def attempt_body(attempt: EarningAttempt) -> tuple[Any, int | None]:
    """What an attempt sent: its own stored body, or (for one that sent the same body again) the body of the latest
    earlier attempt on its timeline that stored it, and that attempt's number (``None`` when it stored its own)."""
    if attempt.request_body is not None or not attempt.request_sha256:
        return attempt.request_body, None
    holder = (
        EarningAttempt.objects.filter(
            record_id=attempt.record_id,
            number__lt=attempt.number,
            request_sha256=attempt.request_sha256,
            request_body__isnull=False,
        )
        .order_by("-number")
        .values_list("number", "request_body")
        .first()
    )
    return (holder[1], holder[0]) if holder else (None, None)
