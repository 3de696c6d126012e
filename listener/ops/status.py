"""`listener status`: one call to session_ledger.status(), plus API-role exposure warnings, judged healthy or not."""

from __future__ import annotations

from typing import Any

from listener.core.db import connect
from listener.core.schema import require_ledger
from listener.core.sql_files import query
from listener.ops.doctor import api_role_exposure


def fetch_status(dsn: str) -> dict[str, Any]:
    """The status document the database computes, with a warning per API-role exposure doctor finds."""
    with connect(dsn, purpose="status") as conn:
        require_ledger(conn)
        row = conn.execute(query("status")).fetchone()
        assert row is not None
        report: dict[str, Any] = row["status"]
        report["warnings"] = [f"{f.message} (fix: {f.fix})" for f in api_role_exposure(conn)]
    return report


def health_problems(
    report: dict[str, Any], *, max_age_s: float, require_consumer: bool, drain_counts: bool
) -> list[str]:
    """Why the system is unhealthy, one line each; empty when it is healthy.

    A consumer is a live listener (session_ledger.live_listeners) or, when drain_counts,
    a session_ledger.drain() run within the same window (a pg_cron-only install).
    """
    problems = []
    paused = report.get("paused")
    if paused:
        why = f": {paused['reason']}" if paused.get("reason") else ""
        problems.append(f"charging paused since {paused['paused_at']} by {paused['paused_by']}{why}")
    age = report.get("oldest_event_age_s")
    if age is not None and float(age) > max_age_s:
        problems.append(f"oldest event waited {float(age):.0f}s (limit {max_age_s:.0f}s)")
    if report.get("dead_letter_depth", 0):
        problems.append(f"{report['dead_letter_depth']} dead-lettered event(s)")
    drain_live = bool((report.get("drain") or {}).get("live"))
    if require_consumer and not report.get("listeners") and not (drain_counts and drain_live):
        problems.append(
            "no live listener"
            + (" and no recent drain() run" if drain_counts else "")
            + " is consuming the queue"
        )
    return problems
