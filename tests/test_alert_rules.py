"""Issue 18, item 4: the example Prometheus rules (docs/ops/alerts.yml) load, name only metrics this app exports,
and fire on the series it writes. ``promtool`` (Debian's ``prometheus`` package; CI unpacks it) checks and
unit-tests them when it is on the PATH; the parse below runs everywhere."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from django_points_earn import metrics
from tests.conftest import ROOT

RULES = ROOT / "docs" / "ops" / "alerts.yml"
RULE_TESTS = ROOT / "docs" / "ops" / "alerts_test.yml"
NAME = re.compile(r"\bpoints_earn_[a-z_]+\b")


def exported_samples() -> set[str]:
    """The sample names our metrics write: each counter's ``_total``, each histogram's ``_bucket``/``_sum``/
    ``_count``, the database collector's gauges (read here from an empty database)."""
    names = set()
    for metric in metrics._METRICS.values():
        for family in metric.describe():
            if isinstance(family, CounterMetricFamily) or family.type == "counter":
                names.add(f"{family.name}_total")
            elif isinstance(family, HistogramMetricFamily) or family.type == "histogram":
                names |= {f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count")}
            else:
                names.add(family.name)
    names |= {family.name for family in metrics.DatabaseCollector().collect()}
    return names


@pytest.mark.django_db
def test_every_rule_names_only_metrics_we_export_and_says_what_to_do():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    exported = exported_samples()
    assert {"points_earn_calls_total", "points_earn_earnings", "points_earn_oldest_due_seconds"} <= exported
    unknown = {(r["alert"], n) for r in rules for n in NAME.findall(r["expr"]) if n not in exported}
    assert unknown == set()
    assert all(
        r["labels"]["severity"] in ("info", "warning", "critical") and r["annotations"]["summary"] for r in rules
    )
    names = {r["alert"] for r in rules}
    assert len(names) == len(rules)
    # What the issue (and Points' go-live checklist) asks to alert on
    wanted = {
        "PointsEarnRefusedSpike",
        "PointsEarnRateLimitedSpike",
        "PointsEarnWebhook5xx",
        "PointsEarnOldestDueEarning",
        "PointsEarnAccountPaused",
        "PointsEarnFailedEarnings",
        "PointsEarnBalanceEvent",
    }
    assert wanted <= names
    exprs = " ".join(r["expr"] for r in rules)
    for status in ("400", "403", "422", "429"):
        assert status in exprs


def promtool() -> str | None:
    return shutil.which("promtool")


@pytest.mark.skipif(promtool() is None, reason="promtool is not installed (.ci/run unpacks Debian's prometheus)")
def test_promtool_loads_the_rules_and_they_fire_on_our_series():
    checked = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 12 rules found" in checked.stdout
    tested = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_rules_are_linked_from_the_operations_page():
    page = (ROOT / "docs" / "operations.md").read_text()
    assert "ops/alerts.yml" in page and Path(RULES).exists()
