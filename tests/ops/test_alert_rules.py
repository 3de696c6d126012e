"""deploy/prometheus/alerts.yml and deploy/grafana/dashboard.json: valid, tested, and only about exported metrics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from support import ROOT
from support.http import request, running
from support.world import World

# The slow tier: every case a CLI subprocess, a promtool run, or an embedded or HTTP server of its own.
pytestmark = pytest.mark.slow

DEPLOY = ROOT / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERTS_TEST = DEPLOY / "prometheus" / "alerts_test.yml"
GRAFANA = DEPLOY / "grafana" / "dashboard.json"
_METRIC = re.compile(r"\bsession_ledger_[a-z0-9_]+\b")


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install -y prometheus")
    return path


def _rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    return rules


def _grafana_exprs() -> list[str]:
    return [t["expr"] for p in json.loads(GRAFANA.read_text())["panels"] for t in p["targets"]]


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = subprocess.run(
        [_promtool(), "test", "rules", str(ALERTS_TEST)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_summary_a_runbook_command_and_both_kinds_of_case() -> None:
    rules = _rules()
    names = {r["alert"] for r in rules}
    assert names == {
        "SessionLedgerNoLiveListener",
        "SessionLedgerBacklogTooOld",
        "SessionLedgerDeadLettersGrowing",
        "SessionLedgerUnfundedRising",
        "SessionLedgerBookingsOutOfSync",
        "SessionLedgerChargeLagHigh",
        "SessionLedgerReconnectStorm",
        "SessionLedgerPaused",
        "SessionLedgerOldCodeStillRunning",
    }
    for rule in rules:
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert re.search(r"`listener (status|replay|reconcile)[^`]*`", rule["annotations"]["runbook"]), rule
    cases = [c for t in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for c in t["alert_rule_test"]]
    for name in names:
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no case where it stays quiet"


@pytest.mark.parametrize("broken", ["always", "never"])
def test_the_unit_tests_catch_a_broken_rule(tmp_path: Path, broken: str) -> None:
    """Each alert's cases fail when its expression always fires, and when it never does."""
    shutil.copy(ALERTS_TEST, tmp_path / "alerts_test.yml")
    for rule in _rules():
        doc = yaml.safe_load(ALERTS.read_text())
        for r in doc["groups"][0]["rules"]:
            if r["alert"] == rule["alert"]:
                r["expr"] = "vector(1)" if broken == "always" else "vector(0) > 1"
                r.pop("for", None)
        (tmp_path / "alerts.yml").write_text(yaml.safe_dump(doc))
        result = subprocess.run(
            [_promtool(), "test", "rules", str(tmp_path / "alerts_test.yml")],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode != 0, f"{rule['alert']} {broken}: the unit tests did not notice"


def test_alerts_and_grafana_use_only_metrics_a_running_listener_exports(world: World) -> None:
    used = {m for r in _rules() for m in _METRIC.findall(r["expr"])}
    used |= {m for e in _grafana_exprs() for m in _METRIC.findall(e)}
    assert len(used) >= 15
    pack = world.pack(sessions_total=1)
    bookings = world.bookings(pack, count=2)
    with running(world.ledger.dsn) as proc:
        for b in bookings:
            world.set_status(b, "completed")
        world.send_raw("'\"not an event\"'::jsonb")
        world.ledger.drain(listener_running=True)
        text = request(f"{proc.base}/metrics").body
        proc.stop()
    exported = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    missing = sorted(used - exported)
    assert missing == [], f"used but not exported: {missing}"
