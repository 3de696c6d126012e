"""Putting bookings right: `reconcile` the ledger with the bookings, `replay` archived events or dead letters."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from listener.cli.args import Subparsers, command, message_id, timestamp, uuid_of
from listener.cli.render import counts_text, dead_letter_table, render_json, short
from listener.errors import ConfigError
from listener.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from listener.ops.reconcile import ReconcileReport
    from listener.ops.replay import RedriveReport, ReplayReport


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


def render_reconcile(report: ReconcileReport, console: Console | None = None) -> None:
    """Print how many bookings were out of sync, what converging them did, and the packs it moved."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    verb = "would change" if report.dry_run else "changed"
    console.print(f"{report.out_of_sync} booking(s) out of sync; " + counts_text(report.outcomes))
    if report.bookings:
        shown = len(report.bookings)
        which = f"the first {shown} of {report.out_of_sync}" if shown < report.out_of_sync else "each"
        table = Table(title=f"bookings out of sync ({which}): what reconcile {verb}", box=box.SIMPLE_HEAD)
        for col in ("booking", "action", "pack", "from pack"):
            table.add_column(col, no_wrap=col == "booking")
        for b in report.bookings:
            table.add_row(
                b["booking_id"],
                b["action"] if b["action"] != "no-op" else f"no-op: {b['detail']}",
                short(b["purchase_id"]) if b["purchase_id"] else "-",
                short(b["previous_purchase_id"]) if b["previous_purchase_id"] else "-",
            )
        console.print(table)
    render_pack_changes(console, report.packs, f"packs {verb}")


def render_replay(report: ReplayReport, console: Console | None = None) -> None:
    """Print what replaying the archive matched, what converging does now, the first bookings and the packs."""
    from rich.console import Console

    console = console or Console()
    verb = "would enqueue" if report.dry_run else "enqueued"
    count = report.bookings if report.dry_run else report.enqueued
    console.print(f"{report.bookings} booking(s) in the archive match; {verb} {count} event(s)")
    console.print("what converging them does now: " + counts_text(report.actions))
    render_replay_examples(report.examples, console)
    render_pack_changes(console, report.packs, "expected pack changes")


def render_replay_examples(examples: list[dict[str, Any]], console: Console) -> None:
    """The first bookings a replay moves: what it does to each, and who caused its archived event."""
    from rich.table import Table

    if not examples:
        return
    table = Table(title="bookings it moves (first few)")
    for col in ("booking", "action", "pack", "from pack", "caused by"):
        table.add_column(col)
    for e in examples:
        table.add_row(
            short(e["booking_id"]),
            e["action"],
            short(e["purchase_id"]) if e["purchase_id"] else "-",
            short(e["previous_purchase_id"]) if e["previous_purchase_id"] else "-",
            cause_text(e["caused_by"]),
        )
    console.print(table)


def cause_text(cause: dict[str, Any] | None) -> str:
    """Who caused a change, in a few words: role, user and trace id, each shortened."""
    if not cause:
        return "unknown"
    parts = [str(cause.get("role") or "?")]
    if cause.get("uid"):
        parts.append(f"user {short(cause['uid'])}")
    if cause.get("trace"):
        parts.append(f"trace {str(cause['trace']).split('-')[1][:8]}")
    return " ".join(parts)


def render_pack_changes(console: Console, rows: list[dict[str, Any]], title: str) -> None:
    """Print per-pack changes (as from PackChanges.as_json) as a table."""
    from rich.table import Table

    if not rows:
        console.print(f"{title}: no pack changed")
        return
    table = Table(title=title)
    for col in ("pack", "charged", "released", "net"):
        table.add_column(col, justify="left" if col == "pack" else "right")
    for r in rows:
        table.add_row(r["purchase_id"], str(r["charged"]), str(r["released"]), f"{r['net']:+d}")
    console.print(table)


def render_dead_letters(report: RedriveReport, console: Console | None = None) -> None:
    """Print each dead letter with its reason, then what was done."""
    from rich.console import Console

    console = console or Console()
    console.print(dead_letter_table(report.letters))
    verb = "would move" if report.dry_run else "moved"
    count = len(report.letters) if report.dry_run else report.moved
    console.print(f"{verb} {count} dead letter(s) back to the queue")
