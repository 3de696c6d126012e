"""`listener doctor`: a read-only security audit of the database and the DSNs that reach it."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from listener.cli.args import Subparsers, command
from listener.cli.render import render_json
from listener.ops.doctor import LISTENER_DSN_OPTION
from listener.settings import Settings

if TYPE_CHECKING:
    from listener.ops.doctor import Report

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
    from listener.ops.doctor import doctor

    report = doctor(settings.require_dsn(), listener_dsn=args.listener_dsn)
    if args.json:
        render_json(report.as_json())
    else:
        render_doctor(report)
    return HIGH_FOUND if report.has_high else 0


def render_doctor(report: Report) -> None:
    """Print each finding with its fix, the checks skipped and why, the notes, and a count."""
    for finding in report.findings:
        print(f"{finding.severity.upper():<6} {finding.check}  {finding.object}")
        print(f"       {finding.message}")
        print(f"       fix: {finding.fix}")
    skipped: dict[str, list[str]] = {}
    for item in report.not_checked:
        skipped.setdefault(item.reason, []).append(item.check)
    for reason, checks in skipped.items():
        print(f"not checked: {', '.join(checks)}: {reason}")
    for note in report.notes:
        print(f"note: {note}")
    high = sum(f.severity == "high" for f in report.findings)
    print(f"{len(report.findings)} finding(s), {high} high" if report.findings else "no findings")
