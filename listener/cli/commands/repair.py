"""Putting bookings right: `reconcile` the ledger with the bookings, `replay` archived events or dead letters."""

from __future__ import annotations

import argparse

from listener.cli.args import Subparsers, command, message_id, timestamp, uuid_of
from listener.errors import ConfigError
from listener.settings import Settings


def register(subparsers: Subparsers) -> None:
    """Add `reconcile` and `replay`."""
    p = command(subparsers, "reconcile", "repair bookings whose ledger disagrees with their row", _reconcile)
    p.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    p.add_argument("--json", action="store_true", help="print a JSON summary")

    p = command(subparsers, "replay", "put archived events or dead letters back on the queue", _replay)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-archive", action="store_true", help="replay archived events")
    source.add_argument("--dead-letter", action="store_true", help="move dead letters back after a fix")
    p.add_argument(
        "--since",
        type=timestamp,
        metavar="TIME",
        help="archive: events enqueued at or after this ISO 8601 time (default: no lower bound)",
    )
    p.add_argument(
        "--until",
        type=timestamp,
        metavar="TIME",
        help="archive: events enqueued before this ISO 8601 time (default: no upper bound)",
    )
    p.add_argument(
        "--booking",
        type=uuid_of("a booking id"),
        nargs="+",
        default=[],
        help="archive: only these bookings (default: every booking)",
    )
    p.add_argument(
        "--id",
        type=message_id,
        nargs="+",
        default=[],
        help="dead letters: these message ids (default: none; --all for every one)",
    )
    p.add_argument("--all", action="store_true", help="dead letters: every one")
    p.add_argument("--dry-run", action="store_true", help="show what would happen, change nothing")
    p.add_argument("--json", action="store_true", help="print a JSON summary")


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """Converge every out-of-sync booking (or only show what that would do), with a progress bar."""
    from listener.cli.progress import progress_callback
    from listener.cli.render import render_json, render_reconcile
    from listener.ops.reconcile import reconcile

    with progress_callback(quiet=args.json) as progress:
        report = reconcile(settings.require_dsn(), dry_run=args.dry_run, progress=progress)
    if args.json:
        render_json(report.as_json())
    else:
        render_reconcile(report)
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    """Replay archived events or redrive dead letters, whichever was asked, then show what it did."""
    from listener.cli.progress import progress_callback
    from listener.cli.render import render_dead_letters, render_json, render_replay
    from listener.ops.replay import redrive_dead_letters, replay_archive

    if args.from_archive:
        if args.id or args.all:
            raise ConfigError("--id and --all apply to --dead-letter, not --from-archive")
        with progress_callback(quiet=args.json) as progress:
            report = replay_archive(
                settings.require_dsn(),
                since=args.since,
                until=args.until,
                bookings=args.booking,
                dry_run=args.dry_run,
                progress=progress,
            )
        if args.json:
            render_json(report.as_json())
        else:
            render_replay(report)
        return 0
    if args.since or args.until or args.booking:
        raise ConfigError("--since, --until and --booking apply to --from-archive, not --dead-letter")
    if args.all and args.id:
        raise ConfigError(
            "--all and --id contradict each other: name dead letters with --id, or take every one with --all"
        )
    redrive = redrive_dead_letters(
        settings.require_dsn(), ids=args.id, all_letters=args.all, dry_run=args.dry_run
    )
    if args.json:
        render_json(redrive.as_json())
    else:
        render_dead_letters(redrive)
    return 0
