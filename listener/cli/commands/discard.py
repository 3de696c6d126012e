"""Closing what no fix will charge: `discard` dead letters, with who, when and why on record."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from listener.cli.args import Subparsers, command, message_id
from listener.cli.render import dead_letter_table, render_json
from listener.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from listener.ops.discard import DiscardReport


def register(subparsers: Subparsers) -> None:
    """Add `discard`."""
    p = command(
        subparsers,
        "discard",
        "archive dead letters no fix will make chargeable, recording who, when and why",
        _discard,
        description="Archive dead letters without handling them, recording who discarded them, when and why, "
        "so they stop counting against `listener status` and `listener uninstall`; the ids are those "
        "`listener status`, the log and the dashboard show, as for `listener replay --dead-letter`.",
    )
    p.add_argument("--dead-letter", action="store_true", required=True, help="discard dead letters")
    p.add_argument(
        "--id",
        type=message_id,
        nargs="+",
        default=[],
        help="these dead letters' ids (default: none; --all for every one)",
    )
    p.add_argument("--all", action="store_true", help="every dead letter there is now")
    p.add_argument("--reason", required=True, help="why they are dropped, kept with each one")
    p.add_argument("--dry-run", action="store_true", help="show what would be discarded, change nothing")
    p.add_argument("--json", action="store_true", help="print a JSON summary")


def _discard(args: argparse.Namespace, settings: Settings) -> int:
    """Discard the chosen dead letters, then show each one and how many went."""
    from listener.ops.discard import check_reason, dead_letter_choice, discard_dead_letters

    # Refused before connecting: these are usage questions, not the database's.
    dead_letter_choice(args.id, args.all)
    check_reason(args.reason)
    report = discard_dead_letters(
        settings.require_dsn(), ids=args.id, all_letters=args.all, reason=args.reason, dry_run=args.dry_run
    )
    if args.json:
        render_json(report.as_json())
    else:
        render_discarded(report)
    return 0


def render_discarded(report: DiscardReport, console: Console | None = None) -> None:
    """Print each dead letter with its reason, then how many were discarded and why."""
    from rich.console import Console

    console = console or Console()
    console.print(dead_letter_table(report.letters))
    verb = "would discard" if report.dry_run else "discarded"
    count = len(report.letters) if report.dry_run else report.discarded
    console.print(f"{verb} {count} dead letter(s), archived with the reason: {report.reason}", markup=False)
