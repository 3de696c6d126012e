"""`listener status`: one call to session_ledger.status(), plus API-role exposure warnings, judged healthy or not."""

from __future__ import annotations

from typing import Any

from listener import __version__
from listener.core.db import connect
from listener.core.schema import require_ledger
from listener.core.sql_files import SCHEMA_VERSION, query
from listener.ops.doctor import api_role_exposure

# The dead letters status names one by one, oldest first, with the id replay and discard take.
DEAD_LETTERS_SHOWN = 20


def fetch_status(dsn: str) -> dict[str, Any]:
    """The status document the database computes, with the oldest dead letters' ids, the versions,
    and a warning per API-role exposure doctor finds."""
    with connect(dsn, purpose="status") as conn:
        require_ledger(conn)
        row = conn.execute(query("status")).fetchone()
        assert row is not None
        report: dict[str, Any] = row["status"]
        details = conn.execute(query("status_details"), {"limit": DEAD_LETTERS_SHOWN}).fetchone()
        assert details is not None
        report["dead_letters"] = details["details"]["dead_letters"]
        report["versions"] = {
            "package": __version__,
            "schema": report.get("schema_version"),
            "package_schema": SCHEMA_VERSION,
            "migrated_by": details["details"]["migrated_by"],
        }
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
