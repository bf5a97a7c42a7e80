"""How an earning looks to a merchant: state badges, one-line reasons, ages, and JSON with phones masked and
configured secrets scrubbed (defence in depth: secrets are never stored in the first place)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.timesince import timesince
from django.utils.translation import gettext as _

from ..models import EarningAttempt, EarningRecord, Status
from ..phones import mask_phone, mask_phones_in_text
from ..providers.scrubbing import scrub

BADGE_COLOURS = {
    Status.QUEUED: "#5c636a",
    Status.SENDING: "#0b5ed7",
    Status.AWARDED: "#146c43",
    Status.PENDING_ACTIVATION: "#6f42c1",
    Status.ACCEPTED: "#3d8bfd",
    Status.REJECTED: "#b02a37",
    Status.BLOCKED: "#842029",
    Status.FAILED: "#c35400",
    Status.REVERSED: "#495057",
    Status.PARTIALLY_REVERSED: "#495057",
    Status.SKIPPED: "#6c757d",
    Status.RESOLVED: "#0f5132",
}
PHONE_KEYS = re.compile(r"phone|mobile|msisdn", re.IGNORECASE)
ONE_LINE = 140


def badge(record: EarningRecord) -> SafeString:
    return format_html(
        '<span class="pe-badge" data-state="{}" style="background:{}">{}</span>',
        record.status,
        BADGE_COLOURS.get(record.status, "#5c636a"),
        record.get_status_display(),
    )


def shown(text: str) -> str:
    """Stored text as staff may see it: phones masked wherever they appear, configured secrets scrubbed."""
    return scrub(mask_phones_in_text(text)) if text else ""


def one_line(text: str, limit: int = ONE_LINE) -> str:
    first = text.strip().splitlines()[0] if text and text.strip() else ""
    return first[:limit] + ("…" if len(first) > limit else "")


def last_error(record: EarningRecord) -> str:
    """The reason a record is where it is, unless it is simply awarded (then there is nothing to explain)."""
    if record.status == Status.AWARDED and not record.drift:
        return ""
    return one_line(shown(record.drift or record.status_reason))


def last_error_cell(record: EarningRecord) -> SafeString | str:
    """:func:`last_error` on one line of the list; the whole first line in the tooltip."""
    text = last_error(record)
    if not text:
        return ""
    return format_html('<span class="pe-oneline" title="{}">{}</span>', text, text)


def age(moment: datetime | None, now: datetime | None = None) -> str:
    if moment is None:
        return "—"
    return timesince(moment, now or timezone.now(), depth=1)


def mask_phones(value: Any) -> Any:
    """A copy of a JSON value with every phone-like field masked, at any depth, and every Saudi mobile number
    masked wherever else it was typed (an address line, a note, a key)."""
    if isinstance(value, dict):
        return {
            mask_phones_in_text(str(k)): (
                mask_phone(str(v)) if PHONE_KEYS.search(str(k)) and isinstance(v, str | int) else mask_phones(v)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_phones(v) for v in value]
    if isinstance(value, str):
        return mask_phones_in_text(value)
    if isinstance(value, int) and not isinstance(value, bool):
        text = mask_phones_in_text(str(value))
        return value if text == str(value) else text
    return value


def pretty_json(value: Any) -> str:
    """Indented JSON (phones masked, secrets scrubbed), or "" when there is nothing."""
    if value in (None, "", {}, []):
        return ""
    return scrub(json.dumps(mask_phones(value), indent=2, ensure_ascii=False, sort_keys=True, default=str))


def pretty_text(text: str) -> str:
    """An answer stored as text: pretty-printed when it is JSON, scrubbed either way."""
    if not text:
        return ""
    try:
        return pretty_json(json.loads(text))
    except ValueError:
        return shown(text)


def attempt_outcome(attempt: EarningAttempt) -> str:
    """What an attempt did, in the merchant's words. A refund's call is answered in the providers' earn vocabulary
    (``awarded`` means the platform accepted it), so it is named for what it did: the points were taken back."""
    if not attempt.outcome:
        return _("in flight")
    if attempt.reversal_id is None:
        return attempt.outcome
    return {
        "awarded": _("points taken back"),
        "rejected": _("refund refused"),
        "abandoned": _("refund call abandoned"),
    }.get(attempt.outcome, _("refund: %(outcome)s") % {"outcome": attempt.outcome})
