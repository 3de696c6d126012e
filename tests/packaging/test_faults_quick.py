"""The fault suite's fast subset: kill -9 mid-run, pg_terminate_backend, and the checker catching broken listeners.

The full run is `python -m faults` (see README, "Reliability").
"""

from __future__ import annotations

from pathlib import Path

import pytest

from faults import scenarios

# The slow tier: processes under fault injection.
pytestmark = pytest.mark.slow


def test_kill_9_of_listeners_mid_run_loses_and_doubles_nothing(ledger_dsn: str, tmp_path: Path) -> None:
    result = scenarios.kills(ledger_dsn, tmp_path, quick=True)
    f = result.figures
    assert result.passed, result.failures
    assert f["kills"] >= 4
    assert f["kills_mid_batch"] >= 1  # at least one landed between read and commit
    assert f["events"] >= 1500
    assert f["lost"] == 0
    assert f["double_charged"] == 0
    assert result.verdict["unaccounted_events"] == 0
    assert result.verdict["rolled_back_effects"] == 0
    assert f["writes"].get("rolled_back", 0) > 0  # rolled-back completions were attempted
    assert f["recoveries"]  # every replacement listener registered


def test_terminated_listen_and_worker_connections_reconnect_and_catch_up(
    ledger_dsn: str, tmp_path: Path
) -> None:
    result = scenarios.terminate_backends(ledger_dsn, tmp_path, quick=True)
    f = result.figures
    assert result.passed, result.failures
    assert f["faults"] >= 4
    assert f["lost"] == 0
    assert f["double_charged"] == 0
    # Written while no LISTEN existed, charged long before the 5 s poll: the catch-up read did it.
    assert f["catch_up_max_s"] < f["poll_interval_s"]


def test_kill_9_while_a_batch_waits_on_a_lock_is_redelivered_not_lost(
    ledger_dsn: str, tmp_path: Path
) -> None:
    result = scenarios.kill_mid_batch(ledger_dsn, tmp_path, quick=True)
    f = result.figures
    assert result.passed, result.failures
    assert f["kills_mid_batch"] >= 3
    assert f["redelivered"] > 0
    assert f["lost"] == 0
    assert f["double_charged"] == 0


def test_checker_catches_a_listener_that_acks_before_it_commits(ledger_dsn: str, tmp_path: Path) -> None:
    result = scenarios.kill_mid_batch(ledger_dsn, tmp_path, quick=True, broken="ack-first")
    assert result.passed, result.failures  # passed means: the checker failed the run
    assert result.figures["kills_mid_batch"] >= 3
    assert result.figures["lost"] > 0
    assert result.verdict["ok"] is False


def test_checker_catches_a_listener_that_skips_the_ledger(ledger_dsn: str, tmp_path: Path) -> None:
    result = scenarios.broken_no_ledger(ledger_dsn, tmp_path, quick=True)
    assert result.passed, result.failures
    assert result.figures["double_charged"] > 0
    assert result.verdict["ok"] is False
