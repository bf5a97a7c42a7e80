"""``make demo``: the example shop earning points on local Points and fabric sandboxes, end to end, with real
processes.

It starts a private Redis, the sandbox (Points, with a few 429s and 5xx thrown in, and fabric Loyalty, with
short-lived tokens and answers lost after the earn was recorded), a fresh SQLite shop database and two RQ
workers; places and pays 50 orders at the shop's two brands (the café earns on Points, the boutique on fabric) and
approves three reviews (Points' rating channels: two product reviews, one of the shop); waits until every earning
has settled; then checks against each sandbox's ledger that each awarded order and review was credited exactly
once. Everything it started is stopped at the end, also on Ctrl-C or an error.

Run it from the repository root: ``.venv/bin/python example_project/demo.py`` (or ``make demo``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import demo_ops  # beside this file (run as a script, its directory is on sys.path)

from django_points_earn.redis_server import RunningRedis, free_port, start_redis

ROOT = Path(__file__).resolve().parent.parent
PROJECT = ROOT / "example_project"
MANAGE = PROJECT / "manage.py"
DEMO_DIR = ROOT / ".demo"
DB_PATH = DEMO_DIR / "shop.sqlite3"

ORDERS = 50
# Two shipped gift boxes at the café (Points), their points held for the return window (2 minutes in the demo):
# the first is kept and awarded when its window closes; the second is returned in its window and never sent.
RETURN_WINDOW_MINUTES = 2
HELD_KEPT, HELD_RETURNED = "GIFT-1001", "GIFT-2001"
METRICS_DIR = DEMO_DIR / "metrics"
WEBHOOK_SECRET = secrets.token_urlsafe(24)  # this run's, as points_webhook_register would store it
METRICS_TOKEN = secrets.token_urlsafe(24)
WORKERS = 2
SETTLE_TIMEOUT = 180.0  # seconds for every earning to leave queued/sending
MERCHANT = "demo-shop"
PENDING_PHONE = "500000003"  # the sandbox's customer without an activated Points account
SANDBOX_FAULTS = ["--rate-5xx", "0.05", "--rate-429", "0.05", "--latency-ms", "5", "--seed", "2024"]
FABRIC_MERCHANT = "oud-boutique"
FABRIC_CLIENT_ID = "demo-boutique"
FABRIC_FAULTS = [
    "--fabric-rate-created-500",  # fabric records the earn, the answer is lost: found by get-transaction
    "0.08",
    "--fabric-rate-5xx",
    "0.04",
    "--fabric-rate-429",
    "0.04",
    "--fabric-latency-ms",
    "5",
    "--fabric-token-lifetime",  # short, so the demo also shows tokens being renewed
    "20",
    "--fabric-discount-value-as",  # as the boutique's settings say fabric confirmed
    "number",
]
# Besides the random ones, these strike fabric's first earn calls for sure: answers lost after the earn was
# recorded (a 500, a cut-off body), which the next attempt must find with get-transaction instead of resending.
FABRIC_SCRIPT = ["created_500", "ok", "truncated", "ok", "500", "ok", "created_500"]
POINTS_SCRIPT = ["500", "ok", "429"]  # and a retry and a wait on Points, whatever the random rolls say
# (account, platform, ledger path under the sandbox, merchant in that ledger, the ledger's id of an earning)
PLATFORMS = [
    ("main", "Points", "/__sandbox__/ledger", MERCHANT, "uuid"),
    ("boutique", "fabric", "/__sandbox__/fabric/ledger", FABRIC_MERCHANT, "transactionCode"),
]


@dataclass
class Child:
    """A process the demo started, with its log file; stopped gently, then firmly."""

    name: str
    process: subprocess.Popen
    log: IO[bytes] = field(repr=False)
    terminated: bool = False

    def alive(self) -> bool:
        return self.process.poll() is None

    def terminate(self) -> None:
        """SIGTERM, once: an RQ worker then finishes its job first (a second one would kill the job)."""
        if self.alive() and not self.terminated:
            self.process.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            self.terminate()
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # The child leads its own process group (start_new_session): this also ends an RQ work-horse.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        self.log.close()


@dataclass
class Demo:
    env: dict[str, str] = field(default_factory=dict, repr=False)
    redis: RunningRedis | None = None
    children: list[Child] = field(default_factory=list)
    sandbox_url: str = ""

    # -- processes -----------------------------------------------------------------------------------------
    def spawn(self, name: str, *args: str) -> Child:
        log = (DEMO_DIR / f"{name}.log").open("wb")
        with INTERRUPTS.deferred():
            process = subprocess.Popen(
                [sys.executable, str(MANAGE), *args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches the demo only; the demo stops its children in order
            )
            child = Child(name, process, log)
            self.children.append(child)
        return child

    def manage(self, *args: str, log_name: str | None = None) -> str:
        """Run a management command to completion; its stdout is returned, its log lines go to a file."""
        log = (DEMO_DIR / f"{log_name}.log").open("wb") if log_name else subprocess.DEVNULL
        try:
            done = subprocess.run(
                [sys.executable, str(MANAGE), *args],
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        finally:
            if log_name:
                log.close()
        if done.returncode != 0:
            where = f"; see .demo/{log_name}.log" if log_name else ""
            raise DemoError(f"manage.py {args[0]} failed (exit {done.returncode}){where}")
        return done.stdout.decode(errors="replace")

    def stop_all(self) -> None:
        """Workers first, then the sandbox they call, then Redis; one failing stop does not spare the rest."""
        for child in self.children:
            if child.name.startswith("worker"):
                child.terminate()  # all workers wind down at once
        stops = [child.stop for child in reversed(self.children)]
        if self.redis is not None:
            stops.append(self.redis.stop)
        self.children, self.redis = [], None
        for stop in stops:
            try:
                stop()
            except Exception as exc:
                print(f"could not stop a demo process cleanly: {exc}", file=sys.stderr)

    # -- steps ---------------------------------------------------------------------------------------------
    def start_redis(self) -> None:
        with INTERRUPTS.deferred():
            self.redis = start_redis()
        say(f"Redis: {self.redis.describe()}")

    def start_sandbox(self, port: int, api_key: str, fabric_secret: str) -> None:
        child = self.spawn(
            "sandbox",
            "points_sandbox",
            "--port",
            str(port),
            "--api-key",
            f"{api_key}={MERCHANT}",
            "--pending-phone",
            PENDING_PHONE,
            *SANDBOX_FAULTS,
            "--fabric-client-id",
            FABRIC_CLIENT_ID,
            "--fabric-client-secret",
            fabric_secret,
            "--fabric-merchant",
            FABRIC_MERCHANT,
            *[arg for phone in fabric_members() for arg in ("--fabric-member", phone)],
            *FABRIC_FAULTS,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not child.alive():
                raise DemoError(
                    f"the Points sandbox exited at start (code {child.process.returncode}); see .demo/sandbox.log"
                )
            try:
                self.ledger(PLATFORMS[0][2])
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise DemoError("the Points sandbox did not answer within 30s; see .demo/sandbox.log")
        self.control("/__sandbox__/script", {"kinds": POINTS_SCRIPT})
        self.control("/__sandbox__/fabric/script", {"kinds": FABRIC_SCRIPT})
        say(
            f"Points sandbox: {self.sandbox_url}/api/v1 (5% HTTP 500, 5% HTTP 429, customer {PENDING_PHONE} "
            "not activated)"
        )
        say(
            f"fabric sandbox: {self.sandbox_url}/fabric/api (8% earns recorded then HTTP 500, 4% HTTP 500, 4% "
            f"HTTP 429, {sum(kind != 'ok' for kind in FABRIC_SCRIPT)} scripted faults, tokens valid 20s; "
            f"{len(fabric_members())} members)"
        )

    def prepare_database(self) -> None:
        for path in DEMO_DIR.glob(f"{DB_PATH.name}*"):  # the database and its -wal/-shm files
            path.unlink()
        self.manage("migrate", "--no-input", log_name="migrate")
        self.manage(
            "createsuperuser",
            "--no-input",
            "--username",
            "demo",
            "--email",
            "demo@example.com",
            log_name="createsuperuser",
        )
        say(
            f"Database: fresh SQLite at {DB_PATH.relative_to(ROOT)}, migrated; admin user demo / demo "
            "(a local demo database only)"
        )

    def start_workers(self) -> None:
        for n in range(1, WORKERS + 1):
            self.spawn(
                f"worker-{n}",
                "rqworker",
                "--worker-class",
                "django_points_earn.worker.EarningWorker",
                "default",
            )
        say(f"Workers: {WORKERS} x manage.py rqworker (EarningWorker); logs in .demo/worker-*.log")

    def place_orders(self) -> None:
        summary = self.manage("place_demo_orders", "--count", str(ORDERS), log_name="orders")
        say(f"Shop: {summary.strip()}")
        reviews = self.manage("review_demo_products", log_name="reviews")
        say(f"Shop: {reviews.strip()}")

    def place_held_orders(self) -> None:
        summary = self.manage("place_held_orders", log_name="held")
        say(f"Shop: {summary.strip()}")
        from django_points_earn.models import EarningRecord

        kept = EarningRecord.objects.get(order_number=HELD_KEPT)
        say(
            f"Admin: {HELD_KEPT} is {kept.status} until {kept.send_after:%H:%M:%S} UTC ({RETURN_WINDOW_MINUTES}-minute "
            f"return window); the customer's order page says: {customer_sees(HELD_KEPT)!r}"
        )

    def wait_for_the_hold(self) -> None:
        """The kept gift box is released by the workers' sweep when its window closes, then awarded."""
        from django_points_earn.models import EarningRecord, Status

        kept = EarningRecord.objects.get(order_number=HELD_KEPT)
        deadline = time.monotonic() + max(0.0, (kept.send_after - _now()).total_seconds()) + 60
        while kept.status != Status.AWARDED and time.monotonic() < deadline:
            left = (kept.send_after - _now()).total_seconds()
            progress(
                f"    {HELD_KEPT} held for its return window: {max(0, left):.0f}s left"
                if left > 0
                else f"    {HELD_KEPT}: window closed, {kept.status}"
            )
            time.sleep(1)
            kept.refresh_from_db()
        progress(None)
        if kept.status == Status.AWARDED:
            say(
                f"{HELD_KEPT}: released when its window closed and awarded; the customer's page now says: "
                f"{customer_sees(HELD_KEPT)!r}"
            )

    def wait_until_settled(self) -> None:
        from django_points_earn.models import IN_PROGRESS, EarningRecord, Reversal, ReversalStatus

        started = time.monotonic()
        last_line = ""
        while True:
            states = Counter(EarningRecord.objects.values_list("status", flat=True))
            busy = (
                sum(states[s] for s in IN_PROGRESS)
                + Reversal.objects.filter(status__in=[ReversalStatus.QUEUED, ReversalStatus.SENDING]).count()
            )
            elapsed = time.monotonic() - started
            line = (
                f"    waiting for the workers: {states['queued']} queued, {states['sending']} sending, "
                f"{sum(states.values()) - busy} settled ({elapsed:.0f}s)"
            )
            if line != last_line:
                progress(line)
                last_line = line
            if busy == 0:
                progress(None)
                say(f"All {sum(states.values())} earnings settled in {elapsed:.1f}s")
                return
            dead = [c.name for c in self.children if c.name.startswith("worker") and not c.alive()]
            if dead:
                progress(None)
                raise DemoError(f"{', '.join(dead)} stopped; see .demo/{dead[0]}.log")
            if elapsed > SETTLE_TIMEOUT:
                progress(None)
                raise DemoError(
                    f"{busy} earnings still queued or sending after {SETTLE_TIMEOUT:.0f}s; see .demo/worker-*.log"
                )
            time.sleep(1)

    def ledger(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.sandbox_url}{path}", timeout=5) as response:  # noqa: S310
            return json.load(response)

    def control(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - our own sandbox on a loopback port
            f"{self.sandbox_url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return json.load(response)


class DemoError(Exception):
    pass


class Interrupts:
    """Ctrl-C and SIGTERM become KeyboardInterrupt, but never between starting a process and recording it."""

    def __init__(self) -> None:
        self.deferring = False
        self.pending = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self.handle)
        signal.signal(signal.SIGTERM, self.handle)

    def handle(self, signum: int, frame: Any) -> None:
        if self.deferring:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.pending:
            raise KeyboardInterrupt

    @staticmethod
    def ignore() -> None:
        """For the clean-up: a second Ctrl-C must not cut it short."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


INTERRUPTS = Interrupts()


# -- output --------------------------------------------------------------------------------------------------
def say(text: str) -> None:
    print(f"==> {text}", flush=True)


_last_printed = 0.0


def progress(line: str | None) -> None:
    """One updating line on a terminal; elsewhere (CI, a pipe) a line every 5 seconds. ``None`` ends it."""
    global _last_printed
    if sys.stdout.isatty():
        print("\r\033[K" + (line or ""), end="" if line else "\n", flush=True)
    elif line and time.monotonic() - _last_printed >= 5:
        print(line, flush=True)
        _last_printed = time.monotonic()


def report_states() -> None:
    from django_points_earn.models import EarningRecord, Status

    counts = Counter(EarningRecord.objects.values_list("account", "status"))
    columns = [(account, f"{account} ({platform})") for account, platform, *_ in PLATFORMS]
    print("\n    state               " + "".join(f"{title:>20}" for _, title in columns))
    for status in Status:
        if any(counts[(account, status)] for account, _ in columns):
            print(f"    {status.value:<20}" + "".join(f"{counts[(account, status)]:>20}" for account, _ in columns))
    totals = [sum(n for (a, _), n in counts.items() if a == account) for account, _ in columns]
    print(f"    {'total':<20}" + "".join(f"{total:>20}" for total in totals))
    others = EarningRecord.objects.exclude(status=Status.AWARDED).order_by("order_number")
    if others:
        print("\n    not awarded, and why:")
        for record in others:
            print(
                f"    {record.order_number}  {record.provider:<6}  phone {record.masked_phone or '-':<10}  "
                f"{record.status}: {record.status_reason[:90]}"
            )
    awarded = EarningRecord.objects.filter(status=Status.AWARDED)
    retried = awarded.exclude(attempts=0, rate_limited=0).count()
    found = awarded.filter(remote_status="found_by_lookup").count()
    print(f"\n    {retried} awarded earnings needed a retry (HTTP 500, a lost answer) or a wait (HTTP 429) first")
    print(f"    {found} fabric earnings were recorded by fabric although its answer was lost: found, not sent twice")


def check(demo: Demo) -> bool:
    """The invariant, checked from both sides for each platform; prints PASS or FAIL with every problem found."""
    problems = record_problems()
    awarded = {}
    for account, platform, path, merchant_name, id_key in PLATFORMS:
        ledger = demo.ledger(path)
        merchant = ledger["merchants"][merchant_name]
        faults = ", ".join(f"{n}x {kind}" for kind, n in sorted(merchant["faults"].items())) or "none"
        extra = (
            f"{len(merchant['pending'])} pending activation"
            if "pending" in merchant
            else f"{merchant['lookups']} get-transaction lookups, {merchant['member_lookups']} member lookups, "
            f"{merchant['token_requests']} token requests"
        )
        print(
            f"\n    {platform} sandbox: {merchant['calls']} earning calls, injected faults: {faults}; "
            f"{merchant['awards']} credits for {len(merchant['orders'])} order numbers; {extra}; "
            f"overlapping calls: {merchant['overlaps']}"
        )
        problems += ledger_problems(account, platform, merchant, id_key)
        if account == "main":
            problems += held_problems(merchant["orders"])
        awarded[platform] = sum(entry["awards"] for entry in merchant["orders"].values())
    for problem in problems:
        print(f"    FAIL: {problem}")
    if problems:
        print(f"\nFAIL: {len(problems)} problems above")
        return False
    counts = " and ".join(f"{n} {platform}" for platform, n in awarded.items())
    ratings = rating_awards()
    print(
        f"\nPASS: {counts} earnings awarded ({ratings} of them for approved reviews), each credited exactly once "
        f"by its sandbox; no order or review credited twice; {HELD_KEPT} awarded after its "
        f"{RETURN_WINDOW_MINUTES}-minute return window, {HELD_RETURNED} returned while held and never sent"
    )
    return True


def rating_awards() -> int:
    from django_points_earn.models import RATING_KINDS, EarningRecord, Status

    return EarningRecord.objects.filter(kind__in=RATING_KINDS, status=Status.AWARDED).count()


def record_problems() -> list[str]:
    """Every paid order has exactly one earning record, and some earnings were awarded at all."""
    from shop.models import Order

    from django_points_earn.models import RATING_KINDS, EarningRecord, Status

    paid = set(Order.objects.filter(status=Order.Status.PAID).values_list("number", flat=True))
    recorded = Counter(EarningRecord.objects.values_list("order_number", flat=True))
    problems = [f"paid order {n} has no earning record" for n in sorted(paid - set(recorded))]
    problems += [f"order {n} has {c} earning records" for n, c in sorted(recorded.items()) if c > 1]
    for account, platform, *_ in PLATFORMS:
        if not EarningRecord.objects.filter(account=account, status=Status.AWARDED).exists():
            problems.append(f"no {platform} earning was awarded at all")
    held = (Status.AWARDED, Status.ACCEPTED)  # accepted: Points holds it (a lost answer), its webhook settles it
    if not EarningRecord.objects.filter(kind__in=RATING_KINDS, status__in=held).exists():
        problems.append("no review earned rating points")
    return problems


def ledger_problems(account: str, platform: str, merchant: dict[str, Any], id_key: str) -> list[str]:
    """Each awarded record was credited exactly once by its platform; the platform credited nothing else."""
    from django_points_earn.models import EarningRecord, Status

    credited = merchant["orders"]
    records = EarningRecord.objects.filter(account=account)
    # awarded (then maybe refunded), or accepted: held by the platform, awaiting its approved webhook
    credited_states = (Status.AWARDED, Status.ACCEPTED, Status.PARTIALLY_REVERSED, Status.REVERSED)
    awarded = {r.order_number: r for r in records.filter(status__in=credited_states)}
    problems = []
    for number, record in sorted(awarded.items()):
        entry = credited.get(number)
        if entry is None:
            problems.append(f"{number} is awarded in the shop but the {platform} sandbox never credited it")
        elif entry["awards"] != 1:
            problems.append(f"{number} was credited {entry['awards']} times by {platform}")
        elif record.remote_id and record.remote_id != entry[id_key]:
            problems.append(f"{number} has platform id {record.remote_id}, the {platform} sandbox says {entry[id_key]}")
    for number in sorted(set(credited) - set(awarded)):
        times = credited[number]["awards"]
        problems.append(
            f"{number} was credited {times}x by the {platform} sandbox but is {_status_of(number)} in the shop"
        )
    if "pending" in merchant:
        pending = records.filter(status=Status.PENDING_ACTIVATION).values_list("order_number", flat=True)
        sandbox_pending = {p["order_number"] for p in merchant["pending"]}
        problems += [
            f"{n} is pending activation in the shop but not in the sandbox" for n in pending if n not in sandbox_pending
        ]
    if merchant["overlaps"]:
        problems.append(f"{merchant['overlaps']} earning calls overlapped for the {platform} merchant")
    taken_key = "refunded_points" if "pending" in merchant else "reversed_points"
    for record in records.filter(status__in=(Status.PARTIALLY_REVERSED, Status.REVERSED)):
        entry = credited.get(record.order_number, {})
        taken = entry.get(taken_key) or 0
        full = record.status == Status.REVERSED
        if (full and taken != entry.get("points")) or (not full and not 0 < taken < (entry.get("points") or 0)):
            problems.append(f"{record.order_number} is {record.status} here; the {platform} sandbox took back {taken}")
    return problems


def report_refunds() -> None:
    from django_points_earn.models import Reversal

    reversals = Reversal.objects.select_related("record").order_by("record__order_number")
    if reversals:
        print("\n    refunds:")
        for r in reversals:
            amount = "all" if r.amount is None else f"{r.amount} SAR"
            print(
                f"    {r.record.order_number}  {r.record.provider:<6}  {amount:<10} {r.status}  -> earning "
                f"{r.record.status}"
            )


def customer_sees(number: str) -> str:
    """The order's points as its customer's order page shows them ({% points_for_order %}), as plain text."""
    import re

    from django.template import Context, Template
    from django.utils import translation
    from shop.models import Order

    with translation.override("en"):
        html = Template("{% load points_earn %}{% points_for_order order %}").render(
            Context({"order": Order.objects.get(number=number)})
        )
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def _now():
    from django.utils import timezone

    return timezone.now()


def held_problems(credited: dict[str, Any]) -> list[str]:
    """The kept gift box was awarded after its window; the one returned in its window never reached Points."""
    from django_points_earn.models import EarningRecord, Status

    found = EarningRecord.objects.filter(order_number__in=[HELD_KEPT, HELD_RETURNED])
    states = dict(found.values_list("order_number", "status"))
    problems = []
    if states.get(HELD_KEPT) != Status.AWARDED:
        problems.append(f"{HELD_KEPT} (held for its return window) is {states.get(HELD_KEPT)}, not awarded")
    if states.get(HELD_RETURNED) != Status.CANCELLED:
        problems.append(f"{HELD_RETURNED} (returned while held) is {states.get(HELD_RETURNED)}, not cancelled")
    if HELD_RETURNED in credited:
        problems.append(f"{HELD_RETURNED} was returned while held, yet the Points sandbox credited it")
    return problems


def fabric_members() -> list[str]:
    """The demo's regular customers are members of the boutique's fabric programme (phones as fabric stores them)."""
    from shop.management.commands.place_demo_orders import CUSTOMERS

    from django_points_earn.phones import normalize_ksa_mobile

    return ["966" + normalize_ksa_mobile(phone) for _, phone in CUSTOMERS]


def _status_of(order_number: str) -> str:
    from django_points_earn.models import EarningRecord

    status = EarningRecord.objects.filter(order_number=order_number).values_list("status", flat=True).first()
    return status or "unknown"


# -- main ----------------------------------------------------------------------------------------------------
def configure(demo: Demo, api_key: str, fabric_secret: str) -> None:
    """The environment the shop, the workers and this process share (django-environ reads it)."""
    demo.env = {
        **os.environ,
        "DEBUG": "1",
        "DATABASE_URL": f"sqlite:///{DB_PATH}",
        "REDIS_URL": demo.redis.url,
        "POINTS_API_KEY": api_key,
        "POINTS_BASE_URL": f"{demo.sandbox_url}/api/v1",
        "FABRIC_BASE_URL": f"{demo.sandbox_url}/fabric/api",
        "FABRIC_TOKEN_URL": f"{demo.sandbox_url}/fabric/oauth2/default/v1/token",
        "FABRIC_CLIENT_ID": FABRIC_CLIENT_ID,
        "FABRIC_CLIENT_SECRET": fabric_secret,
        "POINTS_RETRY_BASE_DELAY": "1",  # retries within seconds, not minutes: it is a demo
        "SHOP_RETURN_WINDOW_MINUTES": str(RETURN_WINDOW_MINUTES),
        "POINTS_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "POINTS_METRICS_TOKEN": METRICS_TOKEN,
        # Each worker's forked work horses write their counters here; the metrics view merges them.
        "PROMETHEUS_MULTIPROC_DIR": str(METRICS_DIR),
        "DJANGO_SUPERUSER_PASSWORD": "demo",
        "DJANGO_SETTINGS_MODULE": "shop_site.settings",
        "PYTHONUNBUFFERED": "1",
    }
    shutil.rmtree(METRICS_DIR, ignore_errors=True)
    METRICS_DIR.mkdir(parents=True)
    os.environ.update(demo.env)
    sys.path.insert(0, str(PROJECT))
    import django

    django.setup()


def run(demo: Demo) -> bool:
    DEMO_DIR.mkdir(exist_ok=True)
    api_key = f"sandbox-{secrets.token_urlsafe(18)}"  # throwaway, and still never printed
    fabric_secret = f"sandbox-{secrets.token_urlsafe(18)}"  # likewise
    demo.start_redis()
    port = free_port()
    demo.sandbox_url = f"http://127.0.0.1:{port}"
    configure(demo, api_key, fabric_secret)
    demo.start_sandbox(port, api_key, fabric_secret)
    demo.prepare_database()
    demo.start_workers()
    demo.place_held_orders()
    demo.place_orders()
    demo.wait_until_settled()
    say(f"Back office: {demo.manage('refund_demo_orders', log_name='refunds').strip()}")
    demo.wait_until_settled()
    demo.wait_for_the_hold()
    report_states()
    report_refunds()
    ok = check(demo)
    banner = demo_ops.low_balance_banner(demo.sandbox_url, MERCHANT, WEBHOOK_SECRET)
    say(f"Points sandbox sent low_balance_warning: the dashboard shows the balance banner ({banner})")
    scraped = demo_ops.scrape(METRICS_TOKEN)
    if scraped is None:
        say("Metrics: prometheus_client is not installed (pip install -e '.[metrics]'): nothing to scrape")
    else:
        say(
            "Metrics scraped from /loyalty/metrics/ (workers' processes merged): "
            + ", ".join(f"{name} {value:.0f}" for name, value in sorted(scraped.items()))
        )
        if not any(name.endswith(" earning awarded") and value for name, value in scraped.items()):
            print("    FAIL: the scrape shows no awarded call")
            ok = False
    return ok


def main() -> int:
    INTERRUPTS.install()
    demo = Demo()
    ok = False
    try:
        ok = run(demo)
    except KeyboardInterrupt:
        print("\ninterrupted", flush=True)
        return 130
    except (DemoError, RuntimeError) as exc:
        print(f"\nFAIL: {exc}", flush=True)
    finally:
        INTERRUPTS.ignore()
        try:
            say("Stopping the workers, the sandbox and Redis")
        except OSError:  # stdout is gone (a closed pipe): stop everything all the same
            pass
        demo.stop_all()
    if ok:
        print("\nSee it as the merchant: `make admin`, then open http://127.0.0.1:8000/admin/ as demo / demo.")
    print("Logs of this run: .demo/*.log (workers, sandbox, orders).")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
