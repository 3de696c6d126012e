"""`listener status`: one call to session_ledger.status(), shown as tables or JSON, judged healthy or not."""

from __future__ import annotations

from typing import Any

from listener.core.db import connect
from listener.core.sql_files import query


def fetch_status(dsn: str) -> dict[str, Any]:
    """The status document the database computes."""
    with connect(dsn, purpose="status") as conn:
        row = conn.execute(query("status")).fetchone()
    assert row is not None
    report: dict[str, Any] = row["status"]
    return report


def health_problems(report: dict[str, Any], *, max_age_s: float, require_listener: bool) -> list[str]:
    """Why the system is unhealthy, one line each; empty when it is healthy."""
    problems = []
    age = report.get("oldest_event_age_s")
    if age is not None and float(age) > max_age_s:
        problems.append(f"oldest event waited {float(age):.0f}s (limit {max_age_s:.0f}s)")
    if report.get("dead_letter_depth", 0):
        problems.append(f"{report['dead_letter_depth']} dead-lettered event(s)")
    if require_listener and not any(
        float(x.get("heartbeat_age_s", 1e9)) < 60 for x in report.get("listeners", [])
    ):
        problems.append("no listener heartbeat in the last 60s")
    return problems
