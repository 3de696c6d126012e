"""`listener audit`: the sessions the app's old code gave away, per pack, and taking them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from listener.cli.args import Subparsers, command, uuid_of
from listener.cli.render import render_json, short
from listener.errors import ConfigError
from listener.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from listener.ops.audit import AuditReport, ChargeReport


def register(subparsers: Subparsers) -> None:
    """Add `audit`."""
    p = command(subparsers, "audit", "sessions the app's old code gave away, per pack; take them", _audit)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument(
        "--org",
        type=uuid_of("an organisation id"),
        help="only this organisation's packs (default: every one)",
    )
    charge = p.add_mutually_exclusive_group()
    charge.add_argument(
        "--charge",
        type=uuid_of("a pack id"),
        nargs="+",
        metavar="PACK",
        help="take the given-away sessions of these packs",
    )
    charge.add_argument("--charge-all", action="store_true", help="take every pack's given-away sessions")
    p.add_argument("--yes", action="store_true", help="really charge (without it: a dry run)")
    p.add_argument("--wide", action="store_true", help="whole ids and the ledger's paid bookings by source")


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    """Show what the old code gave away, or charge it (a dry run without --yes)."""
    from listener.ops.audit import audit, charge

    if args.yes and not (args.charge or args.charge_all):
        raise ConfigError("--yes applies to --charge or --charge-all")
    if args.charge and args.org:
        raise ConfigError("--org narrows --charge-all; --charge names its packs itself")
    if args.charge or args.charge_all:
        charged = charge(settings.require_dsn(), packs=args.charge, org=args.org, dry_run=not args.yes)
        if args.json:
            render_json(charged.as_json())
        else:
            render_charge(charged)
        return 0
    report = audit(settings.require_dsn(), org=args.org)
    if args.json:
        render_json(report.as_json())
    else:
        render_audit(report, wide=args.wide)
    return 0


def render_audit(report: AuditReport, console: Console | None = None, *, wide: bool = False) -> None:
    """Print the packs that gave sessions away and those with manual deductions, side by side with the ledger.

    At 80 columns the table shows what to act on; `wide` adds the ledger's paid bookings by source.
    """
    from rich import box
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    console = console or Console()
    named = report.given_away + report.manual
    if named:
        table = Table(title="packs whose balance disagrees with their bookings", box=box.SIMPLE_HEAD)
        columns: tuple[str, ...] = ("pack", "kind", "used", "bookings", "given away", "manual", "to charge")
        if wide:
            columns += ("paid: adoption", "cut-over", "listener", "audit", "unfunded")
        for col in columns:
            table.add_column(col, justify="left" if col in ("pack", "kind") else "right")
        for p in named:
            values: list[object] = [p.consuming, p.given_away, p.manual, p.to_charge]
            if wide:
                values += [p.paid_adoption, p.paid_cutover, p.paid_listener, p.paid_audit, p.unfunded]
            table.add_row(
                str(p.purchase_id) if wide else short(p.purchase_id),
                p.kind.replace("-", " "),
                f"{p.sessions_used}/{'-' if p.sessions_total is None else p.sessions_total}",
                *(str(v) for v in values),
            )
        if wide:
            # Asked for width: never squeezed to the terminal, where it would show less than the
            # default view; lines longer than the terminal wrap instead.
            needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
            if needed > console.width:
                Console(
                    file=console.file,
                    width=needed,
                    force_terminal=console.is_terminal,
                    no_color=console.no_color,
                ).print(table)
            else:
                console.print(table)
        else:
            console.print(table)
    summary = report.as_json()
    console.print(
        f"{summary['packs_checked']} pack(s) checked: {summary['given_away_packs']} gave away "
        f"{summary['sessions_given_away']} session(s), {summary['sessions_to_charge']} of them still to charge; "
        f"{summary['manual_deduction_packs']} with manual deductions"
    )
    for note in summary["notes"]:
        console.print(f"{summary['not_audited_packs']} pack(s) not audited: {note}")
    if report.calls:
        absorbed = sum(c["absorbed"] for c in report.calls)
        legacy = sum(c["legacy_moved"] for c in report.calls)
        manual = sum(c["manual_moved"] for c in report.calls)
        console.print(
            f"direct calls on {len(report.calls)} pack(s): {absorbed} of the app's old calls absorbed as echoes "
            f"of booking writes, {legacy} moved a balance, {manual} manual adjustment(s) with a reason"
        )
    if summary["sessions_to_charge"]:
        console.print("next: `listener audit --charge-all` shows what charging would do; add --yes to do it")
    if named and not wide:
        console.print(
            "ids are shortened; `--wide` shows them whole with the ledger's paid bookings by source"
        )


def render_charge(report: ChargeReport, console: Console | None = None) -> None:
    """Print each booking a charge run judged, then the totals per pack."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    if report.outcomes:
        table = Table(title="given-away sessions" + (" (dry run)" if report.dry_run else ""))
        for col in ("pack", "booking", "session at", "outcome"):
            table.add_column(col)
        for o in report.outcomes:
            outcome = "charged" if o.charged else f"unfunded: {o.reason}"
            table.add_row(short(o.purchase_id), short(o.booking_id), o.start_time.isoformat()[:16], outcome)
        console.print(table)
    verb = "would charge" if report.dry_run else "charged"
    console.print(
        f"{verb} {report.charged} session(s) on {report.packs_charged} pack(s); "
        f"{report.unfunded} session(s) on {report.packs_unfunded} pack(s) could not be paid",
        soft_wrap=True,
    )
    if report.unfunded:
        console.print("(recorded as unfunded: the listener judges them again when their pack can pay)")
    if report.skipped:
        console.print(
            f"left {len(report.skipped)} pack(s) for a later run: a booking's event is still in flight "
            "(run the listener, or `listener reconcile`, then audit again)"
        )
    if report.dry_run and report.outcomes:
        console.print("dry run: nothing changed; add --yes to charge")
