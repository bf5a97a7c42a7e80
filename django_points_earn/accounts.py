"""An account's switches, kept in the database so that every worker sees them: paused (the platform refused its
credentials; a human resumes it), and busy (a call timed out, the platform may still be working on it: no call
before ``busy_until``, and the timed-out earning's resend goes first)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, NamedTuple

from django.db import transaction
from django.utils import timezone

from .backoff import clamp_delay
from .conf import get_settings
from .models import AccountState, EarningRecord, Status

log = logging.getLogger("django_points_earn")


def pause_account(account: str, reason: str) -> None:
    now = timezone.now()
    state, _ = AccountState.objects.get_or_create(account=account)
    if not state.paused:
        AccountState.objects.filter(pk=account).update(paused=True, reason=reason, paused_at=now)
        log.error("account %s paused: %s", account, reason)


def is_paused(account: str) -> bool:
    return AccountState.objects.filter(pk=account, paused=True).exists()


class Gate(NamedTuple):
    paused: bool
    wait: float  # seconds the account's next call must still wait
    resend_first: int | None  # the earning whose resend must be the account's next call (after a timeout)


def account_gate(account: str) -> Gate:
    """One query: whether the account is paused, how long its next call must still wait, and which record (if any)
    that call must be."""
    state = AccountState.objects.filter(pk=account).values_list("paused", "busy_until", "resend_first").first()
    if state is None:
        return Gate(False, 0.0, None)
    paused, busy_until, resend_first = state
    wait = (busy_until - timezone.now()).total_seconds() if busy_until else 0.0
    return Gate(paused, max(0.0, wait), resend_first)


def mark_account_busy(account: str, seconds: float, *, resend: EarningRecord | None = None) -> None:
    """A call timed out: the platform may be working on it for a while yet. Every worker holds back until then.

    ``resend``: the earning whose call timed out. The account's first call after the wait is its resend (due then,
    whatever its backoff said): the one call that cannot run into another earning's work on the platform, and the
    one whose answer says what became of the timed-out call (a duplicate: awarded).
    """
    until = timezone.now() + timedelta(seconds=clamp_delay(seconds) if seconds > 0 else 0.0)
    fields: dict[str, Any] = {"busy_until": until, "resend_first": resend.pk if resend is not None else None}
    with transaction.atomic():
        if resend is not None:
            EarningRecord.objects.filter(pk=resend.pk, status=Status.QUEUED).update(next_attempt_at=until)
        if not AccountState.objects.filter(pk=account).update(**fields):
            AccountState.objects.get_or_create(account=account, defaults=fields)


def hold_for_resend(account: str, record: EarningRecord) -> None:
    """The resend after a timeout was answered 429 (the platform is still working on it): the account waits until
    the record is due again, and the record stays first. Past its 429 budget it is on a long backoff: let go."""
    if record.status == Status.QUEUED and record.next_attempt_at is not None and record.rate_limited:
        budget = int(get_settings().retry["MAX_RATE_LIMITED"])
        if record.rate_limited <= budget:
            AccountState.objects.filter(pk=account).update(busy_until=record.next_attempt_at, resend_first=record.pk)
            return
    let_go_resend(account, record.pk)


def let_go_resend(account: str, record_id: int) -> None:
    """The account's first-after-a-timeout record got its answer (or is no longer waiting to be sent)."""
    AccountState.objects.filter(pk=account, resend_first=record_id).update(resend_first=None)
