"""The read-only earning page: what was sent, what came back, every attempt and every state change."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.urls import reverse
from django.utils.translation import gettext as _

from .. import attempts
from ..models import RATING_KINDS, EarningAttempt, EarningEvent, EarningRecord, Reversal, Status, Trigger
from ..phones import mask_phone
from ..providers import label
from .actions import SPECS
from .display import attempt_outcome, badge, pretty_json, pretty_text, shown

TIMELINE_LIMIT = 100  # the newest attempts and state changes shown; a 429 storm can leave hundreds


def _field(record: EarningRecord, name: str, value: Any = None) -> tuple[str, Any]:
    label = str(EarningRecord._meta.get_field(name).verbose_name)
    return label[:1].upper() + label[1:], getattr(record, name) if value is None else value


def summary(record: EarningRecord, calls: int | None = None) -> list[tuple[str, Any]]:
    """The earning's facts. ``calls``: how many attempt rows it has (earn and refund calls); the record's own
    ``attempts`` counts only the failed ones (the retry budget), so it is shown as "Failed attempts"."""
    if record.kind in RATING_KINDS:  # a review's earning: its reference and what it rated, not an order
        request = record.request or {}
        identity = [
            _field(record, "kind", record.get_kind_display()),
            (_("Review reference"), record.order_number),
            (_("Shop review id"), record.order_id),
            (_("Product"), " · ".join(str(v) for v in (request.get("product_id"), request.get("product_name")) if v)),
            (_("Rating"), request.get("rating")),
        ]
    else:
        identity = [_field(record, "order_number"), _field(record, "order_id")]
    return [
        _field(record, "account"),
        _field(record, "provider", label(record.provider)),
        *identity,
        _field(record, "phone", mask_phone(record.phone) or "—"),
        _field(record, "total"),
        _field(record, "points"),
        (_("Attempts"), record.attempts if calls is None else calls),
        (_("Failed attempts"), record.attempts),
        _field(record, "rate_limited"),
        _field(record, "outcome_unknown", _("yes") if record.outcome_unknown else _("no")),
        *_held(record),
        _field(record, "next_attempt_at"),
        _field(record, "lease_expires_at"),
        _field(record, "created_at"),
        _field(record, "updated_at"),
        _field(record, "completed_at"),
    ]


def _held(record: EarningRecord) -> list[tuple[str, Any]]:
    """When a held earning's hold ends (or that it waits for the order's delivery); nothing for the others."""
    if record.status != Status.HELD and record.send_after is None:
        return []
    return [_field(record, "send_after", record.send_after or _("until delivered"))]


def remote(record: EarningRecord) -> list[tuple[str, Any]]:
    return [
        _field(record, "remote_id"),
        _field(record, "remote_reference"),
        _field(record, "remote_status"),
        _field(record, "remote_checked_at"),
        _field(record, "drift", shown(record.drift)),
    ]


def requested_by(attempts: list[EarningAttempt], events: list[EarningEvent]) -> dict[int, str]:
    """Who asked for each attempt a worker made after a person (or reconcile) sent the earning again: the worker
    makes the call, but the timeline should say it followed e.g. an agent's retry. Attempt id -> who."""
    requeues = [e for e in events if e.to_status == Status.QUEUED and e.trigger in (Trigger.ADMIN, Trigger.RECONCILE)]
    found, previous = {}, None
    for attempt in attempts:
        asked = [e for e in requeues if (previous is None or e.at > previous) and e.at <= attempt.started_at]
        if asked:
            e = asked[-1]
            found[attempt.pk] = e.actor or e.get_trigger_display()
        previous = attempt.started_at
    return found


def timeline(record: EarningRecord, events: list[EarningEvent]) -> tuple[list[dict[str, Any]], int]:
    """The newest attempts, oldest first, each with its body and answer ready to show; and how many are hidden."""
    attempts = list(
        EarningAttempt.objects.filter(record=record)
        .select_related("reversal")
        .order_by("-number")[: TIMELINE_LIMIT + 1]
    )
    hidden = 0
    if len(attempts) > TIMELINE_LIMIT:
        hidden = EarningAttempt.objects.filter(record=record).count() - TIMELINE_LIMIT
        attempts = attempts[:TIMELINE_LIMIT]
    attempts.reverse()
    asked = requested_by(attempts, events)
    rows = [
        {
            "attempt": a,
            "requested_by": asked.get(a.pk, ""),
            "outcome": attempt_outcome(a),
            "refund_id": a.reversal.refund_id if a.reversal_id else "",
            "error": shown(a.error),
            "sent": _sent(a, attempts),
            "answer": pretty_text(a.response_body),
        }
        for a in attempts
    ]
    return rows, hidden


def _sent(attempt: EarningAttempt, listed: list[EarningAttempt]) -> str:
    """The body an attempt sent. One that sent the same body as an earlier attempt stores only its SHA-256: the
    body is shown from the attempt that holds it, and says so (found among the attempts already listed, else by
    one query)."""
    if attempt.request_body is not None or not attempt.request_sha256:
        return pretty_json(attempt.request_body)
    holder = next(
        (
            a
            for a in reversed(listed)
            if a.number < attempt.number and a.request_sha256 == attempt.request_sha256 and a.request_body is not None
        ),
        None,
    )
    body, number = (holder.request_body, holder.number) if holder else attempts.attempt_body(attempt)
    if number is None:
        return ""
    same = _("the same body as attempt %(number)d (SHA-256 %(digest)s…)") % {
        "number": number,
        "digest": attempt.request_sha256[:12],
    }
    return f"{same}\n{pretty_json(body)}"


def history(events: list[EarningEvent]) -> list[dict[str, Any]]:
    """The earning's timeline: its own state changes and its refunds' (in a refund's states, its note naming it)."""
    earning = dict(EarningRecord._meta.get_field("status").choices)
    refund = dict(Reversal._meta.get_field("status").choices)
    rows = []
    for e in events:
        labels = refund if e.reversal_id else earning
        rows.append(
            {
                "event": e,
                "from": labels.get(e.from_status, e.from_status or "—"),
                "to": labels.get(e.to_status, e.to_status),
                "note": shown(e.note),
            }
        )
    return rows


def reversals(record: EarningRecord) -> list[Any]:
    """The refunds of this earning, each with ``why`` (its reason, phones masked) ready to show."""
    found = list(record.reversal_set.order_by("id"))
    for reversal in found:
        reversal.why = shown(reversal.status_reason or reversal.reason)
    return found


def buttons(request: HttpRequest, record: EarningRecord) -> list[dict[str, str]]:
    """The actions this staff member may take on this earning in its current state."""
    found = []
    for spec in SPECS.values():
        if not spec.allowed(request):
            continue
        if spec.name == "verify" and not record.remote_id:
            continue
        if spec.states and record.status not in spec.states:
            continue
        url = reverse(f"admin:django_points_earn_earningrecord_{spec.name}", args=[record.pk])
        found.append({"name": spec.name, "title": str(spec.title), "url": url})
    return found


def context(request: HttpRequest, record: EarningRecord) -> dict[str, Any]:
    events = list(EarningEvent.objects.filter(record=record).order_by("-at", "-id")[:TIMELINE_LIMIT])
    events.reverse()
    attempts, hidden_attempts = timeline(record, events)
    return {
        "record": record,
        "badge": badge(record),
        "summary": summary(record, calls=len(attempts) + hidden_attempts),
        "remote": remote(record),
        "reason": shown(record.status_reason),
        "order_json": pretty_json(record.request),
        "payload_json": pretty_json(record.payload),
        "response_json": pretty_json(record.response),
        "attempts": attempts,
        "hidden_attempts": hidden_attempts,
        "events": history(events),
        "reversals": reversals(record),
        "buttons": buttons(request, record),
        "read_only": not any(spec.allowed(request) for spec in SPECS.values()),
    }
