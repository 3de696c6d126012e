"""`listener status`: the queue, dead letters, ledger and listeners at a glance, and whether that is healthy."""

from __future__ import annotations

import argparse

from listener.cli.args import Subparsers, command, seconds
from listener.settings import Settings

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
    from listener.cli.render import render_json, render_status
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
