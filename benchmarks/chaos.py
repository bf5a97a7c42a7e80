"""The chaos run: "never lost, never twice" while workers die, Redis forgets and the platform misbehaves.

    python benchmarks/chaos.py --orders 200            # the CI size (make chaos-quick)
    python benchmarks/chaos.py --orders 2000 --record  # the size recorded in docs/reliability.md (make chaos)

N paid orders over 3 accounts, 3 EarningWorker processes, PostgreSQL, a private Redis and the Points sandbox as its
own HTTP server. While the orders come in: a random worker is SIGKILLed (with its work horse) every few seconds and
a new one started; Redis is restarted once with its data lost; the sandbox answers 10% of calls with a 5xx, 5% by
creating the order and answering 500, 5% slower than the client's timeout (the order created), and 10% with 429.
Meanwhile the sandbox's webhooks reach the app's webhook view as Points would send them (shuffled, some twice).
Then ``points_reconcile`` runs until nothing is left to do. Pass: the sandbox awarded every order exactly once
(none missing, none twice), no two calls of one account overlapped, every record is final or waiting for a human,
every awarded record carries the platform's id (none left "accepted"), and the records agree with the ledger.
Exit 1 on any failure.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import fleet
from benchmarks.common import ROOT, commit, machine, markdown_table

SETTINGS = "benchmarks.chaos_settings"
ACCOUNTS = ("acct1", "acct2", "acct3")
FAULTS = {"rate_5xx": 0.10, "rate_created_500": 0.05, "rate_slow": 0.05, "rate_429": 0.10, "slow_seconds": 2.5}
DOC = ROOT / "docs" / "reliability.md"


@dataclass
class Chaos:
    """Kills a random worker every few seconds (and starts another), restarts Redis once, until stopped."""

    workers: fleet.Workers
    redis: object
    restart_redis_after: float
    rng: random.Random
    kills: int = 0
    redis_restarts: int = 0
    log: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.rng.uniform(2.0, 4.0)):
            victim = self.rng.randrange(len(self.workers.processes))
            process = self.workers.processes[victim]
            for pid in [*fleet.children(process.pid), process.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            process.wait(10)
            self.kills += 1
            self.workers.processes[victim] = self.workers.spawn_one(victim + 100 * self.kills)
            if not self.redis_restarts and time.monotonic() - started > self.restart_redis_after:
                self.redis.restart()  # nothing kept: queued jobs, drain flags and account locks are gone
                self.redis_restarts += 1
                self.log.append(f"Redis restarted with its data lost at {time.monotonic() - started:.0f}s")

    def stop(self) -> None:
        self._stop.set()


@dataclass
class WebhookRelay:
    """Points' webhooks, delivered the way Points does while the run goes on: every event of the sandbox posted to
    the app's webhook view (with the account's secret), in a shuffled order, one in ten twice. ``approved`` is what
    settles a record the platform holds without having said so (``accepted``, after a lost answer)."""

    sandbox: object
    rng: random.Random
    delivered: int = 0
    duplicated: int = 0
    refused: int = 0
    cursor: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            while not self._stop.wait(self.rng.uniform(0.3, 1.0)):
                self.flush()
        finally:
            from django.db import connection

            connection.close()

    def flush(self) -> None:
        from django.conf import settings
        from django.test import Client

        from benchmarks.settings import BENCH_MERCHANTS

        account_of = {merchant: account for account, merchant in BENCH_MERCHANTS.items()}
        events = self.sandbox.control("GET", f"events?since={self.cursor}")["events"]
        if not events:
            return
        self.cursor = max(e["seq"] for e in events)
        self.rng.shuffle(events)  # delivery order is not guaranteed
        client = Client()
        for event in events:
            account = account_of[event["merchant"]]
            secret = settings.POINTS_EARN["ACCOUNTS"][account]["WEBHOOK_SECRET"]
            times = 2 if self.rng.random() < 0.1 else 1
            for _ in range(times):
                answer = client.post(
                    f"/loyalty/webhooks/points/{account}/",
                    data=event["payload"],
                    content_type="application/json",
                    headers={"X-Webhook-Secret": secret, "X-Webhook-Event": event["event"]},
                )
                self.refused += answer.status_code != 200
            self.delivered += 1
            self.duplicated += times - 1

    def stop(self) -> None:
        self._stop.set()

    def finish(self) -> None:
        """The last events, and every stored delivery applied (their jobs may have died with Redis or a worker)."""
        from django_points_earn.webhooks import process_pending

        self.flush()
        while process_pending(older_than_seconds=0):
            pass


def reconcile_until_done(timeout: float) -> int:
    """``points_reconcile`` (as cron would run it) until nothing is queued or sending. Returns how many runs."""
    from django.core.management import call_command

    from django_points_earn.models import IN_PROGRESS, EarningRecord

    deadline, runs = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        try:
            call_command("points_reconcile", stdout=StringIO(), stderr=StringIO())
        except SystemExit:
            pass  # exit 1 = something needs a human; the checks below say what
        runs += 1
        if not EarningRecord.objects.filter(status__in=IN_PROGRESS).exists():
            return runs
        if os.environ.get("CHAOS_DEBUG"):
            for r in EarningRecord.objects.filter(status__in=IN_PROGRESS):
                print(
                    runs,
                    r.order_number,
                    r.status,
                    r.next_attempt_at,
                    r.lease_expires_at,
                    r.attempts,
                    r.status_reason[:80],
                    flush=True,
                )
        time.sleep(2)
    raise fleet.BenchmarkFailure(f"earnings still queued or sending after {timeout:.0f} s of reconcile")


def check(ledger: dict, placed: dict[str, list[str]]) -> tuple[list[str], Counter]:
    from benchmarks.settings import BENCH_MERCHANTS
    from django_points_earn.models import NEEDS_ATTENTION, EarningRecord, Status

    problems = fleet.exactly_once_problems(ledger, placed)
    states = Counter(EarningRecord.objects.values_list("status", flat=True))
    # Every approved webhook was delivered: none may stay "accepted" (held by the platform, unconfirmed).
    final = {Status.AWARDED, *NEEDS_ATTENTION}
    if set(states) - final:
        problems.append(f"records not final nor waiting for a human: {dict(states)}")
    for account in placed:
        merchant = ledger["merchants"][BENCH_MERCHANTS[account]]
        if merchant["overlaps"]:
            problems.append(f"{account}: {merchant['overlaps']} overlapping calls")
        orders = merchant["orders"]
        for record in EarningRecord.objects.filter(account=account):
            remote = orders.get(record.order_number)
            if record.status == Status.AWARDED and remote is None:
                problems.append(f"{record.order_number} is awarded here, unknown to the sandbox")
            elif record.status == Status.AWARDED and not record.remote_id:
                problems.append(f"{record.order_number} is awarded without the platform's id")
            elif record.status == Status.AWARDED and record.remote_id and record.remote_id != remote["uuid"]:
                problems.append(f"{record.order_number}: uuid {record.remote_id} here, {remote['uuid']} there")
            elif (
                record.status not in (Status.AWARDED, Status.ACCEPTED)
                and remote is not None
                and not record.outcome_unknown
            ):
                problems.append(f"{record.order_number} is {record.status} here but awarded by the sandbox")
    return problems, states


def main() -> None:
    parser = fleet_parser()
    args = parser.parse_args()
    os.environ["DJANGO_SETTINGS_MODULE"] = SETTINGS
    rng = random.Random(args.seed)
    with fleet.stack("chaos", latency_ms=args.latency_ms, settings_module=SETTINGS) as stack:
        stack.sandbox.control("POST", "faults", FAULTS)
        workers = fleet.Workers(3, stack.workdir, env={"DJANGO_SETTINGS_MODULE": SETTINGS}).start()
        chaos = Chaos(workers, stack.redis, restart_redis_after=args.place_seconds * 0.4, rng=rng)
        killer = threading.Thread(target=chaos.run, daemon=True)
        relay = WebhookRelay(stack.sandbox, random.Random(args.seed + 1))
        relaying = threading.Thread(target=relay.run, daemon=True)
        started = time.monotonic()
        killer.start()
        relaying.start()
        try:
            placed = place_over(args.orders, args.place_seconds)
            time.sleep(args.chaos_tail)
        finally:
            chaos.stop()
            killer.join(30)
        try:
            runs = reconcile_until_done(args.timeout)
        finally:
            relay.stop()
            relaying.join(30)
            relay.finish()
            workers.stop()
        elapsed = time.monotonic() - started
        ledger = stack.sandbox.ledger()
        problems, states = check(ledger, placed)
        if relay.refused:
            problems.append(f"{relay.refused} webhook deliveries were refused")
        print_table(args, ledger, states, chaos, runs, elapsed, problems, relay)
        if problems:  # keep the workers' and the sandbox's logs for whoever looks into it
            kept = Path(tempfile.gettempdir()) / f"points-chaos-failed-{args.seed}-{int(time.time())}"
            shutil.copytree(stack.workdir, kept)
            print(f"logs kept in {kept}", file=sys.stderr)
    fleet.fail_on(problems)


def fleet_parser():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--place-seconds", type=float, default=None, help="spread the orders over this long")
    parser.add_argument("--chaos-tail", type=float, default=5.0, help="keep killing this long after the last order")
    parser.add_argument("--latency-ms", type=float, default=20)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--record", action="store_true", help=f"append the result to {DOC.relative_to(ROOT)}")
    args = parser.parse_args()
    if args.place_seconds is None:
        args.place_seconds = max(15.0, args.orders / 20)
    parser.parse_args = lambda: args  # parsed once
    return parser


def place_over(count: int, seconds: float) -> dict[str, list[str]]:
    """Place ``count`` paid orders over ``seconds`` (so they arrive while workers die and Redis restarts)."""
    placed: dict[str, list[str]] = {account: [] for account in ACCOUNTS}
    gap = seconds / max(1, count)
    for n in range(count):
        account = ACCOUNTS[n % len(ACCOUNTS)]
        number = f"CH-{n:06d}"
        fleet.mark_paid(fleet.new_order(number, account, n))
        placed[account].append(number)
        time.sleep(gap)
    return placed


def settled_by_webhook() -> int:
    """Records the platform held without saying so (a lost answer) that its approved webhook settled."""
    from django_points_earn.models import EarningEvent, Status

    return EarningEvent.objects.filter(to_status=Status.AWARDED, note__contains="webhook").count()


def print_table(args, ledger, states, chaos, runs, elapsed, problems, relay) -> None:
    from benchmarks.settings import BENCH_MERCHANTS

    merchants = [ledger["merchants"][BENCH_MERCHANTS[a]] for a in ACCOUNTS]
    faults = Counter()
    for m in merchants:
        faults.update(m["faults"])
    awards = sum(m["awards"] for m in merchants)
    rows = [
        ("paid orders", args.orders),
        ("awarded (records)", states.get("awarded", 0)),
        ("awarded (sandbox ledger)", awards),
        ("awarded twice", sum(1 for m in merchants for o in m["orders"].values() if o["awards"] > 1)),
        ("overlapping calls", sum(m["overlaps"] for m in merchants)),
        ("waiting for a human", sum(n for s, n in states.items() if s != "awarded")),
        ("earning calls", sum(m["calls"] for m in merchants)),
        ("injected faults", ", ".join(f"{n} {kind}" for kind, n in sorted(faults.items()))),
        ("webhooks delivered (twice)", f"{relay.delivered} ({relay.duplicated})"),
        ("awarded by the approved webhook", settled_by_webhook()),
        ("workers SIGKILLed", chaos.kills),
        ("Redis restarts (data lost)", chaos.redis_restarts),
        ("reconcile runs at the end", runs),
        ("wall time", f"{elapsed:.0f} s"),
        ("result", "PASS" if not problems else f"FAIL ({len(problems)} problems)"),
    ]
    table = markdown_table(["chaos run", "figure"], rows)
    print(table)
    for line in chaos.log:
        print(line)
    if args.record:
        with DOC.open("a", encoding="utf-8") as out:
            out.write(
                f"\n### {args.orders:,} orders, 3 accounts, 3 workers\n\n{machine()}, commit {commit()}, "
                f"`python benchmarks/chaos.py --orders {args.orders} --record`\n\n{table}\n"
            )


if __name__ == "__main__":
    main()
