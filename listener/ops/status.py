"""`listener status`: one call to session_ledger.status(), shown as tables or JSON, judged healthy or not."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

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


def render(report: dict[str, Any], console: Console | None = None) -> None:
    """Print the status as readable tables."""
    console = console or Console()
    summary = Table(title="session ledger", show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    age = report.get("oldest_event_age_s")
    for label, value in (
        ("queue depth", report["queue_depth"]),
        ("  visible", report["queue_visible"]),
        ("  in flight", report["queue_in_flight"]),
        ("  redelivered", report["queue_redelivered"]),
        ("oldest event age", "-" if age is None else f"{float(age):.1f}s"),
        ("dead letters", report["dead_letter_depth"]),
        ("paid bookings", report["paid_bookings"]),
        ("unfunded bookings", report["unfunded_bookings"]),
        ("bookings out of sync", report["bookings_out_of_sync"]),
        ("consuming statuses", ", ".join(report["consuming_statuses"])),
    ):
        summary.add_row(label, str(value))
    console.print(summary)

    outcomes = Table(title="outcomes (all listeners)")
    for name in report["outcomes"]:
        outcomes.add_column(name, justify="right")
    outcomes.add_row(*(str(v) for v in report["outcomes"].values()))
    console.print(outcomes)

    for title, key in (
        ("dead-letter reasons", "dead_letter_reasons"),
        ("unfunded reasons", "unfunded_reasons"),
    ):
        if report[key]:
            reasons = Table(title=title)
            reasons.add_column("reason")
            reasons.add_column("count", justify="right")
            for item in report[key]:
                reasons.add_row(str(item["reason"]), str(item["count"]))
            console.print(reasons)

    listeners = Table(title="live listeners")
    for col in ("host", "pid", "started", "heartbeat age", "events", "idle"):
        listeners.add_column(col)
    for x in report["listeners"]:
        listeners.add_row(
            x["host"],
            str(x["pid"]),
            str(x["started_at"])[:19],
            f"{x['heartbeat_age_s']}s",
            str(x["events_handled"]),
            "yes" if x["waiting"] else "no",
        )
    console.print(listeners)
    console.print("migrations: " + ", ".join(f"{m['version']:04d}_{m['name']}" for m in report["migrations"]))
    problems = report.get("problems") or []
    if problems:
        console.print("[bold red]unhealthy:[/] " + "; ".join(problems))
    else:
        console.print("[bold green]healthy[/]")
