"""Issue 13 items 9 and 12, issue 16 item 10: `points_reconcile` called wrongly says so in one line and exits 2
(never 1, which means "a human is needed"); paused accounts are named as needing a human; ``--fail-on new`` alerts
once per problem instead of on every run."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_points_earn.models import AccountState, EarningRecord, Status
from tests.admin_helpers import earning, make_blocked, make_failed
from tests.conftest import ROOT, worker_env

pytestmark = pytest.mark.django_db(transaction=True)


def cli(*args: str, settings: str = "tests.settings") -> subprocess.CompletedProcess:
    """The real command line (argument parsing, system checks and exit codes as cron sees them)."""
    env = worker_env(DJANGO_SETTINGS_MODULE=settings)
    cmd = [sys.executable, "-m", "django", "points_reconcile", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def reconcile_cmd(*args):
    out, err = StringIO(), StringIO()
    try:
        call_command("points_reconcile", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue() + err.getvalue()


CALLED_WRONGLY = [
    (["--since", "99999999999d"], "further than a calendar"),
    (["--since", "yesterday"], "expected 2026-11-01"),
    (["--since", ""], "expected 2026-11-01"),
    (["--since", "2026-02-30"], "day is out of range"),
    (["--since", "2999-01-01"], "in the future"),
    (["--since", "٣d"], "expected 2026-11-01"),
    (["--stale-after", "inf"], "positive number of minutes"),
    (["--stale-after", "nan"], "positive number of minutes"),
    (["--stale-after", "-5"], "positive number of minutes"),
    (["--stale-after", "0"], "positive number of minutes"),
    (["--stale-after", "1e300"], "positive number of minutes"),
    (["--limit", "-1"], "at least 1"),
    (["--fail-on", "sometimes"], "invalid choice"),
    (["--account", "nope"], "'nope' is not configured (configured: main, branch, fabric)"),
]


@pytest.mark.parametrize("args,words", CALLED_WRONGLY, ids=[" ".join(a) or "empty" for a, _ in CALLED_WRONGLY])
def test_called_wrongly_is_one_line_and_exit_2(args, words):
    done = cli(*args)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_failing_system_check_is_exit_2_not_1():
    done = cli(settings="tests.settings_check_fails")
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "system check failed: points_earn.E005" in lines[0], done.stderr[-2000:]


def test_call_command_gets_the_same_exit_code():
    with pytest.raises(CommandError) as raised:
        call_command("points_reconcile", "--stale-after", "inf")
    assert raised.value.returncode == 2
    with pytest.raises(CommandError) as raised:
        call_command("points_reconcile", "--account", "nope")
    assert raised.value.returncode == 2


def test_an_account_removed_from_settings_but_still_holding_earnings_is_accepted(place_order):
    place_order("SO-OLD")
    EarningRecord.objects.update(account="closed-branch")
    code, out = reconcile_cmd("--account", "closed-branch")
    assert code == 0 and "closed-branch" in out


def test_paused_accounts_are_named_as_needing_a_human(place_order, points_api):
    make_blocked(earning(place_order("SO-B", account="branch")))
    state = AccountState.objects.get(account="branch")
    assert state.paused
    EarningRecord.objects.filter(status=Status.BLOCKED).update(status=Status.RESOLVED)  # only the pause is left
    code, out = reconcile_cmd()
    assert code == 1
    assert "Paused account (needs a human; resume it in the admin once fixed): branch" in out
    assert state.reason[:40] in out
    code, out = reconcile_cmd("--json")
    assert code == 1 and [a["account"] for a in json.loads(out)["paused_accounts"]] == ["branch"]
    assert reconcile_cmd("--account", "main")[0] == 0  # another account's pause is not this run's business


def test_fail_on_new_alerts_once_per_problem(place_order, points_api):
    place_order("SO-GOOD")
    place_order("SO-REJ", phone="12345")  # rejected: a malformed phone, waiting for a human
    from tests.conftest import run_worker

    run_worker()
    assert EarningRecord.objects.get(order_number="SO-REJ").status == Status.REJECTED

    assert reconcile_cmd("--fail-on", "new", "--dry-run")[0] == 1  # a dry run reports but does not remember
    code, out = reconcile_cmd("--fail-on", "new")
    assert code == 1 and "Needs a human: 1 (1 not reported before)" in out
    code, out = reconcile_cmd("--fail-on", "new")
    assert code == 0 and "Needs a human: 1 (0 not reported before)" in out  # still listed, no new alert
    assert reconcile_cmd()[0] == 1  # --fail-on any (the default): exit 1 while anything needs a human

    failed = make_failed(earning(place_order("SO-FAIL")))  # a new problem alerts again
    assert reconcile_cmd("--fail-on", "new")[0] == 1
    assert reconcile_cmd("--fail-on", "new")[0] == 0

    # The failed one is sent again by a person, fails again: it needs a human again, so it is new again.
    from django_points_earn import corrections

    assert corrections.requeue(failed, trigger="admin", actor="agent", note="retry")
    make_failed(EarningRecord.objects.get(pk=failed.pk))
    code, out = reconcile_cmd("--fail-on", "new", "--json")
    assert code == 1 and json.loads(out)["new_attention_total"] == 1

    # Marked resolved in the admin: nothing needs a human, for either mode.
    EarningRecord.objects.filter(status__in=[Status.REJECTED, Status.FAILED]).update(
        status=Status.RESOLVED, updated_at=timezone.now() + timedelta(seconds=1)
    )
    assert reconcile_cmd("--fail-on", "new")[0] == 0
    assert reconcile_cmd()[0] == 0
