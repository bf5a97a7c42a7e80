"""One refund's call: read the order on the platform first (once), then ask it to take the points back, and record
the answer through :mod:`django_points_earn.reversal_lifecycle`. The drain sends refunds when no earning of the
account is due, one at a time, on its own thread (no overlap: they are rare)."""

from __future__ import annotations

import logging

from django.db import InterfaceError, OperationalError

from . import accounts, lifecycle, metrics, reversal_lifecycle, reversals
from .drain_common import DrainReport, Sent, local_error, still_ours
from .heartbeat import Heartbeat
from .models import EarningAttempt, Reversal
from .providers.base import REJECTED, UNAVAILABLE, BaseBackend, EarnResult, PlatformError
from .reversal_lifecycle import REVERSALS

log = logging.getLogger("django_points_earn")


def send_next_refund(
    account_name: str,
    backend: BaseBackend,
    lock,
    *,
    lease: float,
    cooldown: float,
    report: DrainReport,
    trigger: str,
    actor: str,
    heartbeat: Heartbeat,
) -> bool | None:
    """Claim the account's next due refund and send it. None: no refund is due; False: the account lock is gone
    (the claim was given back, the drain must stop); True: one was sent (or someone else got it first)."""
    reversal_id = REVERSALS.next_due(account_name)
    if reversal_id is None:
        return None
    reversal = REVERSALS.claim(reversal_id, lease_seconds=lease)
    if reversal is None:
        return True
    if not still_ours(lock):
        REVERSALS.release(reversal, "account lock lost")
        return False
    sent = send_reversal_safely(reversal, backend, trigger, actor, heartbeat)
    key = f"reversal_{sent.status}"
    report.outcomes[key] = report.outcomes.get(key, 0) + 1
    if sent.platform_may_be_busy:
        accounts.mark_account_busy(account_name, cooldown)
    return True


def send_reversal(reversal: Reversal, backend: BaseBackend, *, trigger: str, actor: str = "") -> Sent:
    """One refund call for a claimed reversal: read the order first (once), then ask the platform to refund."""
    record = reversal.record
    if not backend.supports_refunds:
        result = EarnResult(REJECTED, f"taking points back is not supported on {backend.provider} yet")
        return Sent(reversal_lifecycle.complete(reversal, None, result, trigger=trigger).status)
    amount = reversals.amount_to_take(reversal)
    if amount is not None and amount <= 0:
        result = EarnResult(REJECTED, "nothing is left to take back: the earning's other refunds took it all")
        return Sent(reversal_lifecycle.complete(reversal, None, result, trigger=trigger).status)
    if reversal.remote_before is None:
        try:
            reversal_lifecycle.remember_remote_before(reversal, backend.snapshot(record))
        except PlatformError as exc:
            result = EarnResult(UNAVAILABLE, f"could not read the order before refunding it: {exc}")
            return Sent(reversal_lifecycle.complete(reversal, None, result, trigger=trigger).status)
    # After the snapshot: fabric's may give the member's profileId.
    body = backend.refund_body(record, reversal, amount)
    attempt = reversal_lifecycle.start_attempt(reversal, body, trigger=trigger, actor=actor)
    result = backend.reverse(
        record,
        body,
        request_id=str(attempt.request_id),
        before=reversal.remote_before,
        outcome_unknown=reversal.outcome_unknown,
    )
    saved = reversal_lifecycle.complete(reversal, attempt, result, trigger=trigger)
    metrics.call(record.account, "refund", result.status, result.http_status, result.duration_ms)
    log.info(
        "refund %s of %s/%s attempt=%s -> %s (HTTP %s)%s",
        reversal.refund_id,
        record.account,
        record.order_number,
        attempt.number,
        saved.status,
        result.http_status,
        f": {result.message}" if result.message else "",
    )
    return Sent(saved.status, lifecycle.platform_may_be_busy(result))


def send_reversal_safely(reversal: Reversal, backend: BaseBackend, trigger: str, actor: str, heartbeat) -> Sent:
    """:func:`send_reversal` under the heartbeat; an exception of ours ends the refund's attempt with the error
    (retried with backoff, outcome unknown) instead of ending the drain."""
    token = reversal.lease_token
    heartbeat.hold(REVERSALS, token)
    try:
        return send_reversal(reversal, backend, trigger=trigger, actor=actor)
    except (OperationalError, InterfaceError):
        raise  # the database itself is failing, not this refund: the drain stops, the lease brings it back
    except Exception as exc:
        log.exception("refund %s: the call failed inside this app", reversal.pk)
        attempt = EarningAttempt.objects.filter(reversal=reversal, finished_at__isnull=True).order_by("-number")
        result = local_error("the refund failed inside this app", exc)
        reversal.lease_token = token
        return Sent(reversal_lifecycle.complete(reversal, attempt.first(), result, trigger=trigger).status)
    finally:
        heartbeat.drop(REVERSALS, token)
