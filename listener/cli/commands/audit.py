"""`listener audit`: the sessions the app's old code gave away, per pack, and taking them."""

from __future__ import annotations

import argparse

from listener.cli.args import Subparsers, command, uuid_of
from listener.errors import ConfigError
from listener.settings import Settings


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
    from listener.cli.render import render_audit, render_charge, render_json
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
