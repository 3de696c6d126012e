"""The benchmark runs end to end on tiny sizes and reports every figure it names (no timing checked)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import table
from bench.run import TARGETS

# The slow tier: the benchmark.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

NEW_FIGURES = (
    "browser_tps_ratio_no_wakeup",
    "browser_vs_legacy",
    "drain_vs_listener",
    "guard_bulk_service_role_vs_owner",
    "guard_bulk_trusted_pct",
    "guard_untrusted_pct",
    "browser_guard_cost_pct",
    "browser_tps_no_echo",
    "browser_tps_v020",
    "browser_echo_cost_pct",
    "browser_quiet_vs_v020",
    "browser_no_echo_vs_v020",
    "writer_wal_vs_floor",
    "writer_wal_vs_floor_absorbing",
    "writer_us_vs_v020",
)

# Every figure measured in rounds: a median, and the lowest and highest round beside it.
SPREAD_FIGURES = (
    "browser_tps_ratio_no_wakeup",
    "browser_vs_legacy",
    "browser_quiet_vs_v020",
    "browser_guard_cost_pct",
    "writer_us_vs_v020",
)

REQUIRED_KEYS = {
    "throughput_vs_inline",
    "vs_batched_sql",
    "vs_pgmq_consumer",
    "vs_pgqueuer",
    "bulk_overhead_100k",
    "bulk_linearity",
    "browser_tps_ratio",
    "lag_p50_ms",
    "lag_p99_ms",
    "idle_wake_p50_ms",
    "drain_last_vs_first",
    "rss_mb_max",
    "rss_growth",
    "scale_rates",
    "postgresql",
    "synchronous_commit",
    "fsync",
    "machine",
} | set(NEW_FIGURES)


def _bench(dsn: str, out: Path, *extra: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--dsn", dsn, "--json", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    figures: dict[str, Any] = json.loads(out.read_text())
    return figures


def _assert_browser_arms_ran_their_trigger(figures: dict[str, Any]) -> None:
    """What each ledger arm's last run left in the queue and in booking_writes."""
    per = figures["browser_completions_per_arm_run"]
    assert per > 0
    evidence = figures["browser_arm_evidence"]
    assert evidence["off"] == {"events": 0, "events_with_cause": 0, "echo_records": 0}
    # today's trigger: every event says who caused it, and one echo record per completion
    assert evidence["quiet"] == {"events": per, "events_with_cause": per, "echo_records": per}
    # absorb_legacy_calls off: the same events, no echo records
    assert evidence["no_echo"] == {"events": per, "events_with_cause": per, "echo_records": 0}
    # 0.2.0's trigger: the events without their cause, and no echo records
    assert evidence["v020"] == {"events": per, "events_with_cause": 0, "echo_records": 0}


def test_quick_benchmark_reports_every_figure(ledger_server: str, tmp_path: Path) -> None:
    figures = _bench(ledger_server, tmp_path / "bench.json")
    missing = REQUIRED_KEYS - figures.keys()
    assert not missing, f"figures missing from the JSON: {sorted(missing)}"
    assert set(figures["scale_rates"]) == {"1", "2", "4"}
    # Correctness, not speed: every drain charged each booking exactly once.
    assert figures["scale_exactly_once"] is True
    assert figures["listener_ledger"]["exactly_once"] is True
    assert figures["scale_ledger"]["exactly_once"] is True
    assert figures["fsync"] == "on"
    # Every new figure is a finite number, and every target is a key of the run.
    for key in NEW_FIGURES:
        value = figures[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), (key, value)
        assert math.isfinite(value), (key, value)
    assert {key for key, _, _ in TARGETS} <= figures.keys()
    # The legacy arm really charged: the app's use_session used one session per completion.
    assert figures["browser_legacy_sessions_used"] == figures["browser_legacy_completions"] > 0
    assert figures["drain_exactly_once"] is True
    assert figures["drain_calls"] >= 2  # the last call finds the queue empty
    _assert_browser_arms_ran_their_trigger(figures)
    _assert_writer_counters(figures)
    assert figures["browser_rounds"] >= 5
    for key in SPREAD_FIGURES:
        low, high = figures[f"{key}_spread"]
        assert low <= figures[key] <= high, key


def _assert_writer_counters(figures: dict[str, Any]) -> None:
    """Every writer arm's counters are there, and each says what the arm wrote per completion."""
    counters = figures["writer_counters"]
    assert set(counters) == {"off", "floor", "v020", "no_echo", "quiet", "legacy"}
    for arm, c in counters.items():
        for key in ("wal_bytes", "wal_records", "pages_changed", "buffers_hit"):
            assert c[key] > 0, (arm, key)
        assert figures["writer_us_completions"][arm] >= 5 * 4, arm
    queue, echoes = "pgmq.q_booking_events", "session_ledger.booking_writes"
    assert counters["off"]["rows_inserted"] == {}
    assert counters["legacy"]["rows_inserted"] == {}
    for arm in ("floor", "v020", "no_echo"):
        assert counters[arm]["rows_inserted"] == {queue: 1.0}, arm
    assert counters["quiet"]["rows_inserted"] == {queue: 1.0, echoes: 1.0}
    # the trigger ran once per completion, and the two-call path called use_session once
    trigger = "session_ledger.enqueue_booking_changes"
    assert trigger not in counters["off"]["function_calls"]
    for arm in ("floor", "v020", "no_echo", "quiet"):
        assert counters[arm]["function_calls"][trigger] == 1.0, arm
    assert counters["legacy"]["function_calls"]["public.use_session"] == 1.0
    # the quiet writer's WAL is more than the bare UPDATE's: its queue row is in it
    assert counters["no_echo"]["wal_records"] > counters["off"]["wal_records"]


def test_only_browser_runs_the_browser_arms_alone(ledger_server: str, tmp_path: Path) -> None:
    figures = _bench(ledger_server, tmp_path / "browser.json", "--only", "browser")
    assert figures["steps"] == ["browser"]
    # no other step ran: none of their figures is there
    assert not {"listener_rate", "drain_vs_listener", "scale_rates", "lag_p50_ms"} & figures.keys()
    for key in ("browser_quiet_vs_v020", "browser_echo_cost_pct", "browser_quiet_vs_legacy"):
        value = figures[key]
        assert isinstance(value, float) and math.isfinite(value), (key, value)
    _assert_browser_arms_ran_their_trigger(figures)
    # the README's table of such a run has the browser rows and counts only the browser targets
    rendered = table.render(figures)
    assert "(`browser_echo_cost_pct`)" in rendered
    assert "| `browser_quiet_vs_v020` | ≥ 1 |" in rendered
    assert "`throughput_vs_inline`" not in rendered
    browser_targets = [key for key, _, _ in TARGETS if key.startswith("browser_")]
    assert rendered.rstrip().endswith(f"of {len(browser_targets)} targets met.")


def test_only_generated_runs_the_release_and_example_app_arms(ledger_server: str, tmp_path: Path) -> None:
    """The generated trigger beside 0.3.0's: every arm ran its own ledger, and every ratio is there."""
    figures = _bench(ledger_server, tmp_path / "generated.json", "--only", "generated")
    assert figures["steps"] == ["generated"]
    arms = ["v030", "coaching", "gym", "marketplace"]
    counters = figures["generated_counters"]
    assert list(counters) == arms
    trigger = "session_ledger.enqueue_booking_changes"
    queue, echoes = "pgmq.q_booking_events", "session_ledger.booking_writes"
    for arm, c in counters.items():
        # one event per completion, from one call of the arm's trigger
        assert c["events"] == 1.0, arm
        assert c["function_calls"][trigger] == 1.0, arm
        for key in ("wal_bytes", "wal_records", "buffers_hit"):
            assert c[key] > 0, (arm, key)
        assert figures["generated_us_completions"][arm] >= 5 * 4, arm
    # the coaching app absorbs its old use_session, so both its triggers record an echo;
    # the gym and the marketplace have no old deduction code mapped ([legacy]), so none
    for arm in ("v030", "coaching"):
        assert counters[arm]["rows_inserted"] == {queue: 1.0, echoes: 1.0}, arm
        # the signed-in trainer is not trusted: the guard judged the row
        assert counters[arm]["function_calls"]["session_ledger.may_write_booking"] == 1.0, arm
    for arm in ("gym", "marketplace"):
        assert counters[arm]["rows_inserted"] == {queue: 1.0}, arm
        # a trusted writer: no guard
        assert "session_ledger.may_write_booking" not in counters[arm]["function_calls"], arm
    evidence = figures["generated_evidence"]
    for what, per in (("browser", "browser_completions_per_run"), ("bulk", "bulk_completions_per_run")):
        assert evidence[per] > 0
        for arm in arms:
            runs = evidence[f"{what}_events"][arm]
            assert len(runs) >= 5 and set(runs) == {evidence[per]}, (what, arm, runs)
    for what in ("us", "browser", "bulk"):
        for key in (
            f"generated_{what}_vs_v030",
            *(f"generated_{what}_{a}_vs_v030" for a in ("gym", "marketplace")),
        ):
            low, high = figures[f"{key}_spread"]
            assert math.isfinite(figures[key]) and low <= figures[key] <= high, key
    for key in ("generated_us_vs_v030", "generated_browser_vs_v030", "generated_bulk_vs_v030"):
        assert key in {k for k, _, _ in TARGETS}
    # the README's table of such a run has the three targets and the arms' table
    rendered = table.render(figures)
    assert "| `generated_us_vs_v030` | ≤ 1 |" in rendered
    assert "| per completion | v030 | coaching | gym | marketplace |" in rendered
