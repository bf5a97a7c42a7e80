"""Issue 16, sandbox as a dev platform: `manage.py points_sandbox` prints what a shop pastes, and delivers Points'
webhooks (approved, refunded; a pending customer approved after a delay or on a command) over real HTTP to the
shop's webhook view, with the secret that `points_webhook_register` stored. No mock: two processes, real sockets."""

import copy
import os
import re
import subprocess
import sys
import threading
import time
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings

from django_points_earn.conf import clear_cache
from django_points_earn.models import EarningRecord, Status, WebhookDelivery
from django_points_earn.signals import order_refunded
from tests.conftest import ROOT, run_worker, settle
from tests.shop.models import Order

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

_RUN_COMMAND = """
import sys
import django
from django.conf import settings
settings.configure()
django.setup()
from django_points_earn.management.commands.points_sandbox import Command
Command().run_from_argv(["manage.py", "points_sandbox", *sys.argv[1:]])
"""


class Sandbox:
    """`manage.py points_sandbox` in its own process; its output is read in a thread."""

    def __init__(self, *args: str):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _RUN_COMMAND, "--port", "0", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        first = self.proc.stdout.readline()
        found = re.match(r"Points sandbox on (http://127\.0\.0\.1:(\d+))/api/v1", first)
        assert found, first + self.proc.stdout.read()
        self.url, self.port = found.group(1), found.group(2)
        self.lines.append(first)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_for(condition, seconds: float = 15, work: bool = True) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if work:
            run_worker()  # the webhook view enqueues a processing job per delivery
        if condition():
            return
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


@pytest.fixture
def running_sandbox(request):
    """The sandbox with the test key; ``indirect`` parametrization adds arguments (e.g. an approval delay)."""
    sandbox = Sandbox(
        "--api-key",
        f"{settings.POINTS_API_KEY}=main",
        *getattr(request, "param", ()),
        "--webhook-interval",
        "0.2",
        "--pending-phone",
        "500000003",
        "--pending-phone",
        "500000004",
    )
    yield sandbox
    sandbox.stop()


@pytest.fixture
def shop_on_sandbox(running_sandbox, live_server, tmp_path, place_order):
    """The test shop's "main" account pointed at the running sandbox, its webhook registered and its secret set."""
    conf = copy.deepcopy(settings.POINTS_EARN)
    conf["ACCOUNTS"]["main"]["BASE_URL"] = running_sandbox.url + "/api/v1"
    with override_settings(POINTS_EARN=conf):
        clear_cache()
        secret_file = tmp_path / "points_webhook_secret"
        out = StringIO()
        url = live_server.url + "/loyalty/webhooks/points/main/"
        call_command(
            "points_webhook_register", "--account", "main", "--url", url, "--secret-file", secret_file, stdout=out
        )
        conf = copy.deepcopy(conf)
        conf["ACCOUNTS"]["main"]["WEBHOOK_SECRET"] = secret_file.read_text()
        with override_settings(POINTS_EARN=conf):
            clear_cache()
            yield running_sandbox
    clear_cache()


def test_the_sandbox_prints_its_url_key_and_a_settings_snippet():
    sandbox = Sandbox()
    try:
        wait_for(lambda: "Webhooks" in sandbox.output, seconds=10, work=False)
    finally:
        sandbox.stop()
    out = sandbox.output
    assert f'"API_KEY": "sandbox-key", "BASE_URL": "{sandbox.url}/api/v1"' in out
    assert f'"TOKEN_URL": "{sandbox.url}/fabric/oauth2/default/v1/token"' in out
    assert '"CLIENT_SECRET": "sandbox-secret"' in out
    assert "points_webhook_register" in out


def test_a_key_given_on_the_command_line_is_never_printed(running_sandbox):
    wait_for(lambda: "Webhooks" in running_sandbox.output, seconds=10, work=False)
    assert settings.POINTS_API_KEY not in running_sandbox.output
    assert 'os.environ["POINTS_API_KEY"]' in running_sandbox.output


@pytest.mark.parametrize("running_sandbox", [("--approve-pending-after", "1.5")], indirect=True)
def test_webhooks_reach_the_shop_pending_approved_after_a_delay_and_refunds(shop_on_sandbox, place_order):
    place_order("SO-E2E-1", phone="0500000003", lines=[("Kahwa", "60.00", 1)])
    paid = place_order("SO-E2E-2", lines=[("Dates", "100.00", 1)])
    settle()
    pending = EarningRecord.objects.get(order_number="SO-E2E-1")
    assert pending.status == Status.PENDING_ACTIVATION and not pending.remote_id
    # The sandbox approves it after 1.5 s and delivers `approved` to the live server; the job applies it.
    wait_for(lambda: EarningRecord.objects.get(pk=pending.pk).status == Status.AWARDED)
    pending.refresh_from_db()
    assert pending.remote_id  # the uuid the approved webhook carried
    # A refund: our call to the sandbox, then its `refunded` webhook brings the points taken back.
    order_refunded.send(sender=Order, order=paid, amount=None, reason="returned", refund_id="RMA-E2E")
    settle()
    record = EarningRecord.objects.get(order_number="SO-E2E-2")
    wait_for(lambda: record.reversal_set.get().points is not None)
    assert record.reversal_set.get().points == 1000
    events = set(WebhookDelivery.objects.values_list("event", flat=True))
    assert {"approved", "refunded"} <= events
    out = shop_on_sandbox.output
    assert re.search(r"webhook approved SO-E2E-1 -> http://\S+/loyalty/webhooks/points/main/: HTTP 200", out), out
    assert re.search(r"webhook refunded SO-E2E-2 -> \S+: HTTP 200", out), out
    secret = settings.POINTS_EARN["ACCOUNTS"]["main"]["WEBHOOK_SECRET"]
    assert secret not in out


def test_approve_pending_on_a_command(shop_on_sandbox, place_order):
    """Without --approve-pending-after a pending customer waits until someone asks, from another terminal."""
    place_order("SO-E2E-3", phone="0500000004", lines=[("Kahwa", "30.00", 1)])
    settle()
    record = EarningRecord.objects.get(order_number="SO-E2E-3")
    assert record.status == Status.PENDING_ACTIVATION
    out = StringIO()
    call_command("points_sandbox", "--activate", "0500000004", "--port", shop_on_sandbox.port, stdout=out)
    assert "approved 1 pending earning(s): SO-E2E-3" in out.getvalue()
    out = StringIO()
    call_command("points_sandbox", "--approve-pending", "--port", shop_on_sandbox.port, stdout=out)
    assert "approved 0 pending earning(s)" in out.getvalue()
    wait_for(lambda: EarningRecord.objects.get(pk=record.pk).status == Status.AWARDED)


def test_a_refund_and_a_cancellation_made_in_the_dashboard_reach_the_shop(shop_on_sandbox, place_order):
    """`points_sandbox --refund/--cancel` play the merchant's Points dashboard: the shop hears of it by webhook."""
    place_order("SO-E2E-4", lines=[("Dates", "100.00", 1)])
    place_order("SO-E2E-5", lines=[("Kahwa", "40.00", 1)])
    settle()
    out = StringIO()
    port = shop_on_sandbox.port
    call_command("points_sandbox", "--refund", "SO-E2E-4", "--amount", "25", "--port", port, stdout=out)
    call_command("points_sandbox", "--cancel", "SO-E2E-5", "--port", port, stdout=out)
    assert "SO-E2E-4 is partially_refunded on the sandbox" in out.getvalue()
    assert "SO-E2E-5 is cancelled on the sandbox" in out.getvalue()
    refunded = EarningRecord.objects.get(order_number="SO-E2E-4")
    wait_for(lambda: refunded.reversal_set.exists())
    reversal = refunded.reversal_set.get()
    assert (reversal.source, reversal.points) == ("platform", 250)
    wait_for(lambda: EarningRecord.objects.get(order_number="SO-E2E-5").status == Status.REVERSED)
    with pytest.raises(CommandError, match="no approved order 'SO-NOPE'"):
        call_command("points_sandbox", "--cancel", "SO-NOPE", "--port", port, stdout=StringIO())


def test_the_printed_settings_work_as_pasted_for_points_and_fabric(place_order):
    """The snippet the sandbox prints, pasted as it is: `check` is clean and both platforms award an order."""
    from django_points_earn.checks import check_settings

    adapter = settings.POINTS_EARN["ORDER_ADAPTER"]
    sandbox = Sandbox("--fabric-member", "966512345678")
    try:
        wait_for(lambda: "Any Saudi mobile" in sandbox.output, seconds=10, work=False)
        out = sandbox.output
        snippet = out[out.index("POINTS_EARN = {") : out.index("\n\nAny Saudi mobile")]
        namespace: dict = {}
        exec(snippet, namespace)  # noqa: S102 (what the sandbox printed for a shop to paste)
        conf = namespace["POINTS_EARN"]
        with override_settings(POINTS_EARN=conf, DEBUG=True):  # http:// to a loopback sandbox: a DEBUG setup
            clear_cache()
            assert check_settings() == []
            # The test shop's orders keep the phone on the order: its adapter reads them (ORDER_FIELDS is shown).
            with override_settings(POINTS_EARN={**conf, "ORDER_ADAPTER": adapter}):
                clear_cache()
                place_order("SO-SNIP-1", account="main")
                place_order("SO-SNIP-2", account="boutique")
                settle()
                states = dict(EarningRecord.objects.values_list("order_number", "status"))
        assert states == {"SO-SNIP-1": Status.AWARDED, "SO-SNIP-2": Status.AWARDED}
    finally:
        sandbox.stop()
        clear_cache()
