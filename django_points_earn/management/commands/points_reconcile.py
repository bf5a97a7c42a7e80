"""``manage.py points_reconcile``: repair what was left half done, report what needs a human.

Exit codes: 0 nothing needs a human, 1 something does, 2 the command itself failed.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from ... import reconcile
from ...models import NEEDS_ATTENTION, EarningRecord
from ...phones import mask_phone


class Command(BaseCommand):
    help = "Recover earnings whose worker died, re-enqueue lost jobs, and list what needs a human."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--account", help="Only this account (for the report).")
        parser.add_argument("--dry-run", action="store_true", help="Say what would be repaired; change nothing.")
        parser.add_argument("--json", action="store_true", help="Print the report as JSON.")
        parser.add_argument("--limit", type=int, default=50, help="How many needing-attention earnings to list.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = self.run(options)
        except Exception as exc:
            self.stderr.write(f"points_reconcile failed: {type(exc).__name__}: {exc}")
            raise SystemExit(2) from exc
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=2, default=str))
        else:
            self.print_table(report)
        if report["needs_attention_total"]:
            raise SystemExit(1)

    def run(self, options: dict[str, Any]) -> dict[str, Any]:
        dry = options["dry_run"]
        with reconcile.exclusive_run() as got_it:
            if not got_it:
                raise CommandError("another points_reconcile is running; this one stops")
            recovered = reconcile.recover_expired_leases(dry_run=dry)
            requeued = reconcile.enqueue_due(dry_run=dry)
        qs = EarningRecord.objects.all()
        if options["account"]:
            qs = qs.filter(account=options["account"])
        by_state = list(qs.values("account", "status").annotate(n=Count("id")).order_by("account", "status"))
        attention = qs.filter(status__in=NEEDS_ATTENTION).order_by("-updated_at")
        return {
            "dry_run": dry,
            "expired_leases_recovered": recovered,
            "accounts_enqueued": requeued,
            "by_state": by_state,
            "needs_attention_total": attention.count(),
            "needs_attention": [
                {
                    "account": r.account,
                    "order_number": r.order_number,
                    "status": r.status,
                    "phone": mask_phone(r.phone),
                    "reason": r.status_reason[:200],
                }
                for r in attention[: options["limit"]]
            ],
        }

    def print_table(self, report: dict[str, Any]) -> None:
        verb = "would recover" if report["dry_run"] else "recovered"
        self.stdout.write(f"Expired leases (worker died mid-call): {verb} {report['expired_leases_recovered']}")
        self.stdout.write(f"Accounts with due work enqueued: {', '.join(report['accounts_enqueued']) or 'none'}")
        self.stdout.write("")
        self.stdout.write(f"{'account':<16} {'state':<20} {'count':>8}")
        for row in report["by_state"]:
            self.stdout.write(f"{row['account']:<16} {row['status']:<20} {row['n']:>8}")
        self.stdout.write("")
        total = report["needs_attention_total"]
        self.stdout.write(f"Needs a human: {total}")
        for item in report["needs_attention"]:
            self.stdout.write(f"  {item['account']}/{item['order_number']} [{item['status']}] {item['reason']}")
