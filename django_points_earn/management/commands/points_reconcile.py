"""``manage.py points_reconcile``: repair what was left half done, report what needs a human.

Exit codes: 0 nothing needs a human, 1 something does, 2 the command itself failed or was called wrongly
(a bad option, an unknown account, a failing system check): 2 never means "look at the earnings".
With ``--fail-on new`` (for a cron that alerts), 1 means something needs a human that no earlier
``--fail-on new`` run reported; see docs/operations.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from datetime import datetime, timedelta
from typing import Any

from django.core import checks
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from ... import reconcile
from ...conf import get_settings
from ...models import EarningRecord

SINCE_HELP = "expected 2026-11-01, 2026-11-01T08:00 or 2d / 12h / 30m"
FAIL_ON = ("any", "new")


def _since(value: str) -> datetime:
    """An ISO date or datetime, or a span back from now: ``2d``, ``12h``, ``30m``; never in the future."""
    units = {"d": "days", "h": "hours", "m": "minutes"}
    parsed: datetime | None
    if value and value[-1] in units and value[:-1].isascii() and value[:-1].isdigit():
        try:
            parsed = timezone.now() - timedelta(**{units[value[-1]]: int(value[:-1])})
        except OverflowError:
            raise argparse.ArgumentTypeError(f"{value!r} reaches back further than a calendar can") from None
        return parsed
    try:
        parsed = parse_datetime(value)
        if parsed is None and (day := parse_date(value)) is not None:
            parsed = datetime(day.year, day.month, day.day)
    except ValueError as exc:  # well formed but impossible, e.g. 2026-02-30
        raise argparse.ArgumentTypeError(f"{value!r}: {exc}") from None
    if parsed is None:
        raise argparse.ArgumentTypeError(f"{value!r}: {SINCE_HELP}")
    parsed = parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)
    if parsed > timezone.now():
        raise argparse.ArgumentTypeError(f"{value!r} is in the future")
    return parsed


def _minutes(value: str) -> timedelta:
    try:
        minutes = float(value)
        if not math.isfinite(minutes) or minutes <= 0:
            raise ValueError
        return timedelta(minutes=minutes)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{value!r}: expected a positive number of minutes, e.g. 30") from None


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a whole number of at least 1")
    return number


class Command(BaseCommand):
    help = (
        "Recover earnings whose worker died, re-enqueue lost jobs, backfill paid orders that have no earning, "
        "follow up pending customers, optionally verify awarded earnings with the platform, and list what "
        "needs a human (earnings and paused accounts). Exit 0: nothing does; 1: something does (with "
        "--fail-on new: something not reported before); 2: this command failed or was called wrongly."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--account", help="Only this account.")
        parser.add_argument("--since", type=_since, help="Backfill and verify from here (2026-11-01, 2d, 12h).")
        parser.add_argument("--dry-run", action="store_true", help="Say what would be repaired; change nothing.")
        parser.add_argument("--verify-remote", action="store_true", help="Check awarded earnings with the platform.")
        parser.add_argument(
            "--retry-failed", action="store_true", help="Send failed earnings and failed refunds again."
        )
        parser.add_argument("--limit", type=_positive, help="At most this many items per step.")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON (for machines).")
        parser.add_argument(
            "--stale-after",
            type=_minutes,
            default=timedelta(minutes=30),
            metavar="MINUTES",
            help="A queued earning overdue this long counts as stuck (default 30).",
        )
        parser.add_argument(
            "--fail-on",
            choices=FAIL_ON,
            default="any",
            help="any (default): exit 1 while anything needs a human. new: exit 1 only for what no earlier "
            "--fail-on new run reported (an earning that needs a human again after a retry is new again); "
            "for a cron job that alerts.",
        )

    # -- exit 2 and one line for every way of calling it wrongly ---------------------------------------------------
    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> Any:
        parser = super().create_parser(prog_name, subcommand, **kwargs)

        def error(message: str) -> None:
            raise CommandError(message, returncode=2)

        parser.error = error
        return parser

    def run_from_argv(self, argv: list[str]) -> None:
        try:
            super().run_from_argv(argv)
        except CommandError as exc:  # the options did not parse (errors in handle() are written by Django)
            self.stderr.write(f"points_reconcile: {exc}")
            sys.exit(2)

    def check(self, *args: Any, **kwargs: Any) -> None:
        """A failing system check is a broken setup, not an earning that needs a human: exit 2, one line."""
        found = checks.run_checks(
            app_configs=kwargs.get("app_configs"), tags=kwargs.get("tags"), databases=kwargs.get("databases")
        )
        serious = [e for e in found if e.is_serious() and not e.is_silenced()]
        for warning in (e for e in found if not e.is_serious() and not e.is_silenced()):
            self.stderr.write(f"system check warning: {warning.id}: {warning.msg}".replace("\n", " "))
        if serious:
            first = serious[0]
            more = f" (and {len(serious) - 1} more; run manage.py check)" if len(serious) > 1 else ""
            raise CommandError(f"system check failed: {first.id}: {first.msg}{more}".replace("\n", " "), returncode=2)

    def handle(self, *args: Any, **options: Any) -> None:
        opts = reconcile.Options(
            account=options["account"],
            dry_run=options["dry_run"],
            verify_remote=options["verify_remote"],
            retry_failed=options["retry_failed"],
            since=options["since"],
            limit=options["limit"],
            stale_after=options["stale_after"],
            mark_reported=options["fail_on"] == "new",
        )
        progress = _Progress(self.stderr) if sys.stderr.isatty() and not options["json"] else None
        try:
            if opts.account is not None:
                _known_account(opts.account)
            report = reconcile.run(opts, progress=progress)
        except CommandError:
            raise
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
            self.stdout.write(json.dumps(report.as_dict() | {"fail_on": options["fail_on"]}, indent=2, default=str))
        else:
            self.print_table(report)
        if report.new_for_a_human if options["fail_on"] == "new" else report.needs_a_human:
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
        held = steps["held"]
        if held["held"] or held["released"]:
            waiting = f", {held['waiting_for_delivery']} until delivered" if held["waiting_for_delivery"] else ""
            w(
                f"Held earnings (return window): {held['released']} released now, {held['held']} still held{waiting}; "
                f"next release {held['next_release'] or '—'}"
            )
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
        for state in report.paused_accounts:
            since = f" since {state['paused_at']:%Y-%m-%d %H:%M}" if state["paused_at"] else ""
            w(f"Paused account (needs a human; resume it in the admin once fixed): {state['account']}{since}")
            w(f"  {state['reason']}")
        w(f"Needs a human: {report.needs_attention_total} ({report.new_attention_total} not reported before)")
        for item in report.needs_attention:
            w(f"  {item['account']}/{item['order_number']} [{item['status']}] {item['phone']} {item['reason']}")
        if report.refunds_needing_attention_total:
            total, new = report.refunds_needing_attention_total, report.new_refund_attention_total
            w(f"Refunds that need a human: {total} ({new} not reported before)")
            for item in report.refunds_needing_attention:
                w(
                    f"  {item['account']}/{item['order_number']} refund {item['refund_id']} [{item['status']}] "
                    f"{item['reason']}"
                )


def _known_account(account: str) -> None:
    """A configured account, or one removed from settings whose earnings are still in the database."""
    names = get_settings().account_names
    if account in names or ("\x00" not in account and EarningRecord.objects.filter(account=account).exists()):
        return
    raise CommandError(f"--account {account!r} is not configured (configured: {', '.join(names)})", returncode=2)


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
