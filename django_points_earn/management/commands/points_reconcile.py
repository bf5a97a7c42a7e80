"""``manage.py points_reconcile``: repair what was left half done, report what needs a human.

Exit codes: 0 nothing needs a human, 1 something does, 2 the command itself failed.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from ... import reconcile


def _since(value: str) -> datetime:
    """An ISO date or datetime, or a span back from now: ``2d``, ``12h``, ``30m``."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if value and value[-1] in units and value[:-1].isdigit():
        return timezone.now() - timedelta(**{units[value[-1]]: int(value[:-1])})
    parsed = parse_datetime(value)
    if parsed is None and (day := parse_date(value)) is not None:
        parsed = datetime(day.year, day.month, day.day)
    if parsed is None:
        raise CommandError(f"--since {value!r}: expected 2026-11-01, 2026-11-01T08:00 or 2d / 12h / 30m")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)


def _minutes(value: str) -> timedelta:
    return timedelta(minutes=float(value))


class Command(BaseCommand):
    help = (
        "Recover earnings whose worker died, re-enqueue lost jobs, backfill paid orders that have no earning, "
        "follow up pending customers, optionally verify awarded earnings with the platform, and list what "
        "needs a human. Exit 0: nothing does; 1: something does; 2: this command failed."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--account", help="Only this account.")
        parser.add_argument("--since", type=_since, help="Backfill and verify from here (2026-11-01, 2d, 12h).")
        parser.add_argument("--dry-run", action="store_true", help="Say what would be repaired; change nothing.")
        parser.add_argument("--verify-remote", action="store_true", help="Check awarded earnings with the platform.")
        parser.add_argument("--retry-failed", action="store_true", help="Send failed earnings again.")
        parser.add_argument("--limit", type=int, help="At most this many items per step.")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON (for machines).")
        parser.add_argument(
            "--stale-after",
            type=_minutes,
            default=timedelta(minutes=30),
            metavar="MINUTES",
            help="A queued earning overdue this long counts as stuck (default 30).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        opts = reconcile.Options(
            account=options["account"],
            dry_run=options["dry_run"],
            verify_remote=options["verify_remote"],
            retry_failed=options["retry_failed"],
            since=options["since"],
            limit=options["limit"],
            stale_after=options["stale_after"],
        )
        progress = _Progress(self.stderr) if sys.stderr.isatty() and not options["json"] else None
        try:
            report = reconcile.run(opts, progress=progress)
        except reconcile.AlreadyRunning as exc:
            self.stderr.write(str(exc))
            raise SystemExit(0) from exc  # the other run does the work; cron must not page anyone for this
        except Exception as exc:
            self.stderr.write(f"points_reconcile failed: {type(exc).__name__}: {exc}")
            raise SystemExit(2) from exc
        finally:
            if progress:
                progress.done()
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=2, default=str))
        else:
            self.print_table(report)
        if report.needs_attention_total:
            raise SystemExit(1)

    def print_table(self, report: reconcile.Report) -> None:
        w = self.stdout.write
        would = "would be " if report.dry_run else ""
        steps = report.steps
        missed = steps["missed_orders"]
        if "skipped" in missed:
            w(f"Missed orders: not checked ({missed['skipped']})")
        else:
            w(
                f"Missed orders: {missed['checked']} paid orders checked, {missed['missing']} without an earning "
                f"({would}recorded)"
            )
            for order in missed["orders"][:20]:
                w(f"  {order}")
        w(f"Expired leases (worker died mid-call): {steps['expired_leases']['recovered']} {would}recovered")
        if "retry_failed" in steps:
            w(f"Failed earnings {would}sent again: {steps['retry_failed']['requeued']}")
        enqueued = steps["lost_jobs"]["accounts_enqueued"]
        w(f"Due work without a job ({would}enqueued): {', '.join(enqueued) or 'none'}")
        pending = steps["pending_customers"]
        w(f"Pending customer activation: {pending['pending']} ({pending['older_than_limit']} older than the limit)")
        w(
            f"Accepted by the platform, awaiting confirmation (its approved webhook): {pending['accepted']} "
            f"({pending['accepted_older_than_limit']} older than the limit)"
        )
        if "remote_verification" in steps:
            v = steps["remote_verification"]
            if report.dry_run:
                w(f"Remote verification: would check {v['would_check']}")
            else:
                w(
                    f"Remote verification: {v['checked']} checked, {v['agree']} agree, {v['drift']} differ, "
                    f"{v['errors']} could not be checked; {v['unconfirmed']} accepted, awaiting confirmation"
                )
                for line in v["drifted"][:20]:
                    w(f"  {line}")
        w("")
        w(f"{'account':<16} {'state':<20} {'count':>9}")
        for row in report.by_state:
            w(f"{row['account']:<16} {row['status']:<20} {row['n']:>9}")
        w("")
        w(f"Needs a human: {report.needs_attention_total}")
        for item in report.needs_attention:
            w(f"  {item['account']}/{item['order_number']} [{item['status']}] {item['phone']} {item['reason']}")


class _Progress:
    """One self-overwriting line on a terminal; nothing at all on a pipe (the caller decides)."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.shown = False

    def __call__(self, step: str, done: int) -> None:
        if done % 100 == 0 or done < 100:
            self.stream.write(f"\r{step}: {done}", ending="")
            self.stream.flush()
            self.shown = True

    def done(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K", ending="")
