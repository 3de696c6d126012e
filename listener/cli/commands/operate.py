"""The operator's day: `complete-past` (the cron path), `pause` and `resume` charging, `prune` the archive."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from listener.cli.args import Subparsers, command
from listener.cli.render import render_json
from listener.settings import Settings

if TYPE_CHECKING:
    from listener.ops.prune import PruneReport


def register(subparsers: Subparsers) -> None:
    """Add `complete-past`, `pause`, `resume` and `prune`."""
    command(
        subparsers,
        "complete-past",
        "the cron path: complete confirmed bookings that have ended",
        _complete_past,
    )

    p = command(
        subparsers,
        "pause",
        "stop charging everywhere (listeners and drain()) until resume; events keep queuing",
        _pause,
        description="Stop charging everywhere (every listener and drain()) until `listener resume`; "
        "the trigger keeps queuing events.",
    )
    p.add_argument("--reason", help="why, shown by status, the dashboard and metrics (default: none)")
    command(
        subparsers,
        "resume",
        "start charging again after a pause",
        _resume,
        description="Start charging again after `listener pause`.",
    )

    p = command(
        subparsers,
        "prune",
        "delete archived events, old pack calls and stopped listeners past retention",
        _prune,
        description="Delete archived events and dead letters, direct calls on the packs and heartbeats of "
        "stopped listeners older than the retention, and the echoes of booking writes that can absorb no call.",
    )
    p.add_argument(
        "--older-than",
        required=True,
        metavar="DURATION",
        help="retention: a whole number and s, min, h, d or w, e.g. 30d, 12h, 90min (under 1d needs --force)",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would be removed, remove nothing")
    p.add_argument("--force", action="store_true", help="allow a retention under one day")
    p.add_argument("--json", action="store_true", help="print a JSON summary")


def _complete_past(args: argparse.Namespace, settings: Settings) -> int:
    """Complete the confirmed bookings that have ended, as the app's cron does, and say how many."""
    from listener.ops.complete_past import complete_past

    render_completed(complete_past(settings.require_dsn()))
    return 0


def _pause(args: argparse.Namespace, settings: Settings) -> int:
    """Pause charging, then say since when, by whom and why."""
    from listener.ops.pause import pause

    render_paused(pause(settings.require_dsn(), reason=args.reason))
    return 0


def _resume(args: argparse.Namespace, settings: Settings) -> int:
    """Resume charging, then say which pause it ended."""
    from listener.ops.pause import resume

    render_resumed(resume(settings.require_dsn()))
    return 0


def _prune(args: argparse.Namespace, settings: Settings) -> int:
    """Delete (or with --dry-run count) what is past the retention, then say how many of each."""
    from listener.ops.prune import check_retention, parse_duration, prune

    older_than = parse_duration(args.older_than)
    # Refused before connecting: a retention too short is a usage question, not the database's.
    check_retention(older_than, force=args.force, dry_run=args.dry_run)
    report = prune(settings.require_dsn(), older_than=older_than, dry_run=args.dry_run, force=args.force)
    if args.json:
        render_json(report.as_json())
    else:
        render_pruned(report)
    return 0


def render_completed(count: int) -> None:
    """Print how many past bookings the cron path completed."""
    print(f"completed {count} past booking{'s' if count != 1 else ''}")


def render_paused(paused: dict[str, Any]) -> None:
    """Print since when, by whom and why charging is paused."""
    why = f": {paused['reason']}" if paused.get("reason") else ""
    print(f"charging paused since {paused['paused_at']} by {paused['paused_by']}{why}; events keep queuing")


def render_resumed(ended: dict[str, Any] | None) -> None:
    """Print the pause that resuming ended, or that there was none."""
    if ended is None:
        print("charging was not paused")
    else:
        print(f"charging resumed; it was paused since {ended['paused_at']} by {ended['paused_by']}")


def render_pruned(report: PruneReport) -> None:
    """Print what a prune removed, or would remove."""
    verb = "would remove" if report.dry_run else "removed"
    print(
        f"{verb} {report.archived_events} archived event(s), {report.archived_dead_letters} archived dead "
        f"letter(s), {report.pack_calls} old pack call(s), {report.booking_writes} expired booking write "
        f"echo(es) and {report.stopped_listeners} old listener heartbeat(s)"
    )
