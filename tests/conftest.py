"""Real Redis (a private redis-server per test session), a real database, the sandbox for the platform."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis
import responses as responses_lib
from django.conf import settings
from django.db import connection, transaction

from django_points_earn import conf
from django_points_earn.providers.fabric_token import TOKENS
from django_points_earn.redis_server import RunningRedis, start_redis
from django_points_earn.sandbox import (
    FabricSandbox,
    PointsSandbox,
    SandboxServer,
    register_fabric_responses,
    register_responses,
)
from django_points_earn.signals import order_paid

ROOT = Path(__file__).resolve().parent.parent
POINTS_URL = "https://sandbox.papp.sa/api/v1"
FABRIC_URL = "https://loyalty.fabric.test/api"
FABRIC_TOKEN_URL = "https://login.fabric.test/oauth2/default/v1/token"
FABRIC_MEMBER_PHONE = "966512345678"  # place_order's default phone, as fabric stores it


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RunningRedis]:
    server = start_redis()
    print(f"\n[tests] Redis: {server.describe()}")
    settings.RQ_QUEUES["default"]["URL"] = server.url
    os.environ["REDIS_URL"] = server.url
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def clean_redis(redis_server: RunningRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    conf.clear_cache()
    yield client
    conf.clear_cache()


@pytest.fixture(autouse=True)
def fresh_fabric_tokens() -> Iterator[None]:
    """fabric tokens are cached per process: each test starts without one (its sandbox never issued it)."""
    TOKENS.clear()
    yield
    TOKENS.clear()


@pytest.fixture
def sandbox() -> PointsSandbox:
    return PointsSandbox({settings.POINTS_API_KEY: "main"}, seed=1)


@pytest.fixture
def fabric_sandbox() -> FabricSandbox:
    """fabric with the test account's client, and a member for place_order's default phone."""
    fabric = FabricSandbox({settings.FABRIC_CLIENT_ID: settings.FABRIC_CLIENT_SECRET}, merchant="fabric", seed=1)
    fabric.add_member(FABRIC_MEMBER_PHONE)
    return fabric


@pytest.fixture
def fabric_api(fabric_sandbox: FabricSandbox, sandbox: PointsSandbox) -> Iterator[FabricSandbox]:
    """Both sandboxes behind one `responses` mock (fabric's API and token URL, and Points), in process."""
    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        register_responses(rsps, sandbox, POINTS_URL)
        register_fabric_responses(rsps, fabric_sandbox, FABRIC_URL, FABRIC_TOKEN_URL)
        yield fabric_sandbox


@pytest.fixture
def points_api(sandbox: PointsSandbox) -> Iterator[PointsSandbox]:
    """The sandbox behind `responses`: every call to the Points URL goes to it, in process."""
    with responses_lib.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        register_responses(rsps, sandbox, POINTS_URL)
        yield sandbox


@pytest.fixture
def sandbox_server(sandbox: PointsSandbox) -> Iterator[SandboxServer]:
    with SandboxServer(sandbox) as server:
        yield server


@pytest.fixture
def place_order(db) -> Callable[..., object]:
    """Create an order with lines and mark it paid the way a shop does: in one transaction, sending order_paid."""
    from tests.shop.models import Order, OrderLine

    counter = iter(range(1, 10**6))

    def place(
        number: str | None = None,
        *,
        phone: str = "0512345678",
        lines: list[tuple[str, str, int]] | None = None,
        account: str = "main",
        **fields,
    ) -> Order:
        with transaction.atomic():
            order = Order.objects.create(
                number=number or f"SO-{next(counter):05d}", phone=phone, account=account, paid=True, **fields
            )
            for name, price, qty in lines if lines is not None else [("Cappuccino", "18.50", 2)]:
                OrderLine.objects.create(order=order, name=name, price=Decimal(price), quantity=qty)
            order_paid.send(sender=Order, order=order)
        return order

    return place


def run_worker(burst: bool = True) -> None:
    """Work the queue in this process (real Redis, real RQ), until it is empty."""
    import django_rq
    from rq import SimpleWorker

    queue = django_rq.get_queue("default")
    SimpleWorker([queue], connection=queue.connection).work(burst=burst, with_scheduler=False)


def settle(max_rounds: int = 50) -> None:
    """Sweep and work until nothing is queued or sending (retries come due quickly in the test settings)."""
    from django_points_earn.models import EarningRecord, Reversal, Status
    from django_points_earn.reconcile import sweep

    for _ in range(max_rounds):
        run_worker()
        if not EarningRecord.objects.filter(status__in=[Status.QUEUED, Status.SENDING]).exists() and not (
            Reversal.objects.filter(status__in=["queued", "sending"]).exists()
        ):
            return
        time.sleep(0.1)
        sweep()
    raise AssertionError("earnings did not settle")


def worker_env(**extra: str) -> dict[str, str]:
    """Environment for a worker subprocess: same settings, same test database, same Redis."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "PYTHONPATH": str(ROOT)}
    db = connection.settings_dict
    if db["ENGINE"].endswith("postgresql"):
        env["DATABASE_URL"] = (
            f"postgres://{db['USER'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    env.update(extra)
    return env


def start_worker(*, name: str, env: dict[str, str] | None = None, burst: bool = False) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "django",
        "rqworker",
        "--worker-class",
        "django_points_earn.worker.EarningWorker",
        "--name",
        name,
        "default",
    ]
    if burst:
        cmd.append("--burst")
    return subprocess.Popen(cmd, cwd=ROOT, env=env or worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def kill_worker(proc: subprocess.Popen) -> None:
    """SIGKILL the worker and its work horse (RQ puts the horse in its own process group): no cleanup, no
    goodbye, like an OOM kill or a lost machine."""
    victims = [proc.pid]
    for pid in victims:
        victims.extend(child for child in _children(pid) if child not in victims)
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(10)


class _EveryLogLine(logging.Handler):
    """Keeps every log line of the whole session (messages and tracebacks) for the secrets check below."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a badly formatted record is still searched, raw
            text = f"{record.msg!r} {record.args!r}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log_line() -> Iterator[None]:
    """After the whole suite (rough runs, bad answers, refused keys included): no configured secret and no bearer
    token in any log line or traceback any test produced. Searched for, not assumed."""
    handler = _EveryLogLine()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(handler)
    root.setLevel(previous)
    secrets = [s for s in conf.all_secret_values() if len(s) >= 8]
    assert len(secrets) >= 4  # the API keys, the fabric client secret and the webhook secret are all configured
    leaks = [(s[:4] + "…", line[:200]) for line in handler.lines for s in secrets if s in line]
    leaks += [("Bearer", line[:200]) for line in handler.lines if "Bearer " in line]
    assert handler.lines  # something was logged: the search is real (the whole suite logs thousands of lines)
    assert leaks == [], f"secrets found in log lines: {leaks[:5]}"
