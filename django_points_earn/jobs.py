"""RQ entry points. Thin on purpose: the work is in :mod:`dispatch` and :mod:`reconcile`."""

from __future__ import annotations

from typing import Any


def drain_account(account: str) -> dict[str, Any]:
    """Drain ``account`` and, in free slots, the accounts waiting longest (``DRAIN["ACCOUNTS_PER_PROCESS"]``). The
    result is ``account``'s report, with the others' under ``"also"``."""
    from .dispatch import drain_accounts

    reports = drain_accounts(account)
    result = reports.pop(account).as_dict()
    if reports:
        result["also"] = {name: report.as_dict() for name, report in reports.items()}
    return result


def sweep() -> dict[str, Any]:
    from .reconcile import sweep as run_sweep

    return run_sweep().as_dict()


def reconcile(verify_remote: bool = False, retry_failed: bool = False, since_days: int | None = None) -> dict[str, Any]:
    """The full reconcile as an RQ job, for rq-scheduler / cron-enqueued runs; returns the JSON report."""
    from datetime import timedelta

    from django.utils import timezone

    from . import reconcile as rec

    since = timezone.now() - timedelta(days=since_days) if since_days else None
    options = rec.Options(verify_remote=verify_remote, retry_failed=retry_failed, since=since)
    try:
        return rec.run(options).as_dict()
    except rec.AlreadyRunning as exc:
        return {"skipped": str(exc)}


def process_webhook(delivery_id: int) -> str:
    from .webhooks import process

    return process(delivery_id)
