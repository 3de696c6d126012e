"""The operator's day: `complete-past` (the cron path), `pause` and `resume` charging, `prune` the archive."""

from __future__ import annotations

import argparse

from listener.cli.args import Subparsers, command
from listener.settings import Settings


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

    p = command(subparsers, "prune", "delete archived events past retention", _prune)
    p.add_argument("--older-than", required=True, help="retention, e.g. 30d, 12h, 2w")


def _complete_past(args: argparse.Namespace, settings: Settings) -> int:
    """Complete the confirmed bookings that have ended, as the app's cron does, and say how many."""
    from listener.cli.render import render_completed
    from listener.ops.complete_past import complete_past

    render_completed(complete_past(settings.require_dsn()))
    return 0


def _pause(args: argparse.Namespace, settings: Settings) -> int:
    """Pause charging, then say since when, by whom and why."""
    from listener.cli.render import render_paused
    from listener.ops.pause import pause

    render_paused(pause(settings.require_dsn(), reason=args.reason))
    return 0


def _resume(args: argparse.Namespace, settings: Settings) -> int:
    """Resume charging, then say which pause it ended."""
    from listener.cli.render import render_resumed
    from listener.ops.pause import resume

    render_resumed(resume(settings.require_dsn()))
    return 0


def _prune(args: argparse.Namespace, settings: Settings) -> int:
    """Delete archive rows past the retention, then say how many."""
    from listener.cli.render import render_pruned
    from listener.ops.prune import parse_duration, prune

    render_pruned(prune(settings.require_dsn(), older_than=parse_duration(args.older_than)))
    return 0
