"""`listener status`: the queue, dead letters, ledger and listeners at a glance, and whether that is healthy."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from listener.cli.args import Subparsers, command, seconds
from listener.cli.render import render_json
from listener.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

# The exit code of a status that is not healthy, so a probe or a script can act on it.
UNHEALTHY = 3


def register(subparsers: Subparsers) -> None:
    """Add `status`."""
    p = command(subparsers, "status", "queue, dead letters, ledger and listeners at a glance", _status)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument(
        "--max-age",
        type=seconds,
        default=60.0,
        metavar="SECONDS",
        help="unhealthy when the oldest waiting event is older than this many seconds (default: %(default)s)",
    )
    p.add_argument(
        "--no-listener-ok", action="store_true", help="do not count a missing listener heartbeat as unhealthy"
    )


def _status(args: argparse.Namespace, settings: Settings) -> int:
    """Read the status, judge its health, and show both; exit 3 when unhealthy."""
    from listener.ops.status import fetch_status, health_problems

    report = fetch_status(settings.require_dsn())
    problems = health_problems(
        report,
        max_age_s=args.max_age,
        require_consumer=not args.no_listener_ok,
        drain_counts=settings.drain_counts_as_consumer,
    )
    report["healthy"] = not problems
    report["problems"] = problems
    if args.json:
        render_json(report)
    else:
        render_status(report)
    return UNHEALTHY if problems else 0


def render_status(report: dict[str, Any], console: Console | None = None) -> None:
    """Print the status as readable tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    versions = report.get("versions") or {}
    if versions:
        console.print(
            f"session-ledger-listener {versions['package']}, schema version {versions['schema']}"
            + (f" (migrated by {versions['migrated_by']})" if versions.get("migrated_by") else ""),
            markup=False,
        )
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
    _render_dead_letter_ids(report, console)

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
    if (report.get("drain") or {}).get("last_at"):
        d = report["drain"]
        console.print(
            f"drain(): last run {d['last_age_s']}s ago handled {d['last_handled']}; "
            f"{d['runs_last_hour']} run(s) handled {d['handled_last_hour']} event(s) in the last hour"
        )
    legacy = report.get("legacy_calls") or {}
    if legacy:
        console.print(
            f"the app's old calls: {legacy['legacy_calls']} in all, {legacy['absorbed']} absorbed as echoes "
            f"({_by_kind(legacy.get('absorbed_by_kind'))}; {legacy['absorbed_last_hour']} in the last hour), "
            f"last absorbed {legacy['last_absorbed_at'] or 'never'}; "
            + ("absorbing" if legacy["absorbing"] else "not absorbing")
            + f" within {legacy['window_s']}s; {legacy['manual_calls']} manual adjustment(s)"
        )
        if legacy.get("app_deployed_at"):
            console.print(
                f"new app deployed at {legacy['app_deployed_at']}: "
                f"{legacy.get('absorbed_since_app_deployed', 0)} old call(s) absorbed since"
            )
    if report.get("paused"):
        p = report["paused"]
        why = f": {p['reason']}" if p.get("reason") else ""
        console.print(f"[bold red]charging paused[/] since {p['paused_at']} by {p['paused_by']}{why}")
    for warning in report.get("warnings") or []:
        console.print(f"[bold yellow]warning:[/] {warning}")
    problems = report.get("problems") or []
    if problems:
        console.print("[bold red]unhealthy:[/] " + "; ".join(problems))
    else:
        console.print("[bold green]healthy[/]")


def _render_dead_letter_ids(report: dict[str, Any], console: Console) -> None:
    """The oldest dead letters, by the id `replay --dead-letter` and `discard --dead-letter` take."""
    from rich.table import Table

    letters = report.get("dead_letters") or []
    if not letters:
        return
    table = Table(title="dead letters (ids for replay and discard)")
    for col in ("id", "dead-lettered at", "booking", "reason"):
        table.add_column(col)
    for d in letters:
        table.add_row(
            str(d["id"]), str(d["dead_lettered_at"])[:19], str(d.get("booking_id") or "-"), str(d["reason"])
        )
    console.print(table)
    more = int(report.get("dead_letter_depth") or 0) - len(letters)
    if more > 0:
        console.print(
            f"and {more} more: `listener replay --dead-letter --all --dry-run` lists them all", markup=False
        )
    console.print(
        f"after a fix: `listener replay --dead-letter --id {letters[0]['id']}`; never chargeable: "
        f"`listener discard --dead-letter --id {letters[0]['id']} --reason TEXT`",
        markup=False,
    )


def _by_kind(kinds: object) -> str:
    """Absorbed calls per kind, as status() counts them: 'use' echoes a completion, 'release' a cancel."""
    if not isinstance(kinds, dict):
        return "by kind: unknown"
    return f"{kinds.get('use', 0)} use_session, {kinds.get('release', 0)} release_session"
