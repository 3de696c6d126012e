"""The benchmark runs end to end on tiny sizes and reports every figure issue 5 names (no timing checked)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from bench.run import TARGETS

ROOT = Path(__file__).resolve().parents[2]

NEW_FIGURES = (
    "browser_tps_ratio_no_wakeup",
    "browser_vs_legacy",
    "drain_vs_listener",
    "guard_bulk_service_role_vs_owner",
    "guard_bulk_trusted_pct",
    "guard_untrusted_pct",
    "browser_guard_cost_pct",
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


def test_quick_benchmark_reports_every_figure(ledger_server: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--dsn", ledger_server, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(out.read_text())
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
