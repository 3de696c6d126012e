"""`listener doctor`: a read-only security audit of the database and the DSNs that reach it."""

from __future__ import annotations

import argparse

from listener.cli.args import Subparsers, command
from listener.ops.doctor import LISTENER_DSN_OPTION
from listener.settings import Settings

# The exit code when any finding is high.
HIGH_FOUND = 3


def register(subparsers: Subparsers) -> None:
    """Add `doctor`."""
    p = command(subparsers, "doctor", "read-only security audit of the database and the DSN", _doctor)
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument(
        LISTENER_DSN_OPTION,
        help="the listener's own connection string: the listener checks judge its login "
        "(default: --dsn's login, and none when that is the owner's)",
    )


def _doctor(args: argparse.Namespace, settings: Settings) -> int:
    """Audit, show the findings; exit 3 when any is high."""
    from listener.cli.render import render_doctor, render_json
    from listener.ops.doctor import doctor

    report = doctor(settings.require_dsn(), listener_dsn=args.listener_dsn)
    if args.json:
        render_json(report.as_json())
    else:
        render_doctor(report)
    return HIGH_FOUND if report.has_high else 0
