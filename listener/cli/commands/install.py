"""Putting the ledger in and taking it out: `migrate`, `export-migrations`, `cutover`, `uninstall`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from listener.cli.args import Subparsers, command, timestamp
from listener.errors import ConfigError
from listener.settings import Settings

if TYPE_CHECKING:
    from listener.ops.cutover import CutoverReport
    from listener.ops.migrate import MigrateReport
    from listener.ops.uninstall import UninstallReport

# The straddling bookings a cut-over names one by one; the rest are counted.
STRADDLING_SHOWN = 10


def register(subparsers: Subparsers) -> None:
    """Add `migrate`, `export-migrations`, `cutover`, `app-deployed` and `uninstall`."""
    p = command(subparsers, "migrate", "install or upgrade the ledger, queue and trigger", _migrate)
    p.add_argument(
        "--with-demo-schema",
        action="store_true",
        help="first create the coaching app's tables on a blank database",
    )
    p.add_argument(
        "--mapping",
        metavar="FILE",
        help="the app's schema mapped, a TOML file (docs/mapping.md; `listener map` proposes one); "
        "default: the mapping the install recorded, else the coaching app's",
    )

    p = command(
        subparsers,
        "export-migrations",
        "write the install as SQL files for supabase/migrations",
        _export_migrations,
        dsn=False,
    )
    p.add_argument("directory", help="where to write the files (created if missing)")
    p.add_argument(
        "--pgmq",
        choices=["extension", "script"],
        default="extension",
        help="PGMQ as `CREATE EXTENSION` (Supabase Queues) or as the bundled SQL-only script "
        "(default: %(default)s)",
    )

    p = command(subparsers, "cutover", "from now on the listener charges, not the app's old code", _cutover)
    p.add_argument("--at", type=timestamp, metavar="TIME", help="the cut-over time, ISO 8601 (default: now)")

    p = command(
        subparsers,
        "app-deployed",
        "record that the new app (which calls no use_session after its own writes) is deployed",
        _app_deployed,
        description="Record when the new app was deployed, so that old use_session / release_session calls "
        "still absorbed after it show as old code still running (in status, /metrics and the "
        "SessionLedgerOldCodeStillRunning alert); once none come, absorbing can be switched off.",
    )
    p.add_argument(
        "--at", type=timestamp, metavar="TIME", help="when it was deployed, ISO 8601 (default: now)"
    )

    p = command(
        subparsers, "uninstall", "remove trigger, ledger and queues; keep the app's tables", _uninstall
    )
    p.add_argument("--yes", action="store_true", help="really remove it")
    p.add_argument(
        "--keep-grants",
        action="store_true",
        help="leave EXECUTE on the restored use_session/release_session as it is, and give back the "
        "TRIGGER, TRUNCATE and REFERENCES privileges on the app's bookings and packs tables that migrate revoked "
        "(default: revoke EXECUTE from PUBLIC, anon and authenticated, service_role keeps it; the table "
        "privileges stay revoked)",
    )
    p.add_argument("--force", action="store_true", help="drop unresolved dead letters with the ledger")


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Install or upgrade the ledger, then say what changed."""
    from listener.mapping.model import MappingError, load
    from listener.ops.migrate import migrate

    mapping = None
    if args.mapping is not None:
        if args.with_demo_schema:
            raise ConfigError(
                "--with-demo-schema creates the coaching app's tables: it does not go with --mapping"
            )
        try:
            mapping = load(Path(args.mapping))
        except MappingError as exc:
            raise ConfigError(str(exc)) from None
    report = migrate(settings.require_dsn(), with_demo_schema=args.with_demo_schema, mapping=mapping)
    render_migrate(report, mapping_file=args.mapping)
    return 0


def _export_migrations(args: argparse.Namespace, settings: Settings) -> int:
    """Write the migration files, then list them."""
    from listener.ops.export import export_migrations

    if not args.directory.strip():
        # Path("") is the working directory: an empty argument is a slip, not a choice.
        raise ConfigError("no directory given: name where to write the files, e.g. supabase/migrations")
    target = Path(args.directory)
    render_exported(target, export_migrations(target, pgmq=args.pgmq))
    return 0


def _cutover(args: argparse.Namespace, settings: Settings) -> int:
    """Set the cut-over time, then say what it settled and what comes next."""
    from listener.ops.cutover import cutover

    render_cutover(cutover(settings.require_dsn(), args.at))
    return 0


def _app_deployed(args: argparse.Namespace, settings: Settings) -> int:
    """Record the new app's deployment time, then say what watches for old code."""
    from listener.ops.cutover import mark_app_deployed

    at = mark_app_deployed(settings.require_dsn(), args.at)
    print(
        f"new app deployed at {at.isoformat()}: absorbed calls after it are old code still running "
        "(`listener status`, alert SessionLedgerOldCodeStillRunning)"
    )
    return 0


def _uninstall(args: argparse.Namespace, settings: Settings) -> int:
    """Remove the ledger (only with --yes), then say what went and what stayed."""
    from listener.ops.uninstall import uninstall

    if not args.yes:
        raise ConfigError(
            "this removes the bookings trigger, the session ledger and its queues; "
            "run `listener uninstall --yes` to do it"
        )
    render_uninstall(uninstall(settings.require_dsn(), keep_grants=args.keep_grants, force=args.force))
    return 0


def render_migrate(report: MigrateReport, *, mapping_file: str | None = None) -> None:
    """Print what a migrate run changed, a line a kind, or that nothing needed to; and which mapping
    the ledger's functions are rendered from."""
    from listener.ops.migrate import GIVEN

    if report.demo_schema:
        print("created the demo app schema")
    if report.pgmq != "present":
        print(f"installed PGMQ ({report.pgmq})")
    if report.recovered:
        print(
            f"removed an install an earlier run left half-done ({report.recovered}) and installed again; "
            "completed bookings were adopted afresh"
        )
    if report.applied:
        print("applied " + ", ".join(report.applied))
    if report.repeatables:
        print("re-applied functions, triggers and grants: " + ", ".join(report.repeatables))
    for revoked in report.revoked:
        print(f"revoked {revoked}: no app flow needs it, and it would let a caller go around the ledger")
    used = mapping_file if report.mapping_from == GIVEN and mapping_file else report.mapping_from
    if not report.mapping_changed:
        print(f"mapping: {used} (unchanged)")
    elif not report.mapping_was_recorded:
        print(f"mapping: {used} (recorded)")
    else:
        print(f"mapping: {used} (changed since the last migrate: the functions were rendered from it again)")
    for warning in report.warnings:
        print(f"warning: {warning}")
    if not report.changed:
        print(f"already up to date (schema version {report.schema_version})")


def render_exported(target: Path, written: list[Path]) -> None:
    """Print each migration file written, or that the directory already held them all."""
    for path in written:
        print(path)
    if not written:
        print(f"{target} already holds every session ledger migration")


def render_cutover(report: CutoverReport) -> None:
    """Print the cut-over time, what it settled, the bookings to check by hand, and what to do next."""
    print(
        f"cut-over at {report.adopt_until.isoformat()}: events enqueued before it record what the "
        "app's old code did, without charging or releasing again"
    )
    if report.archived_events:
        print(
            f"settled {report.settled_bookings} booking(s) from {report.archived_events} waiting event(s) "
            "as the old code left them (ledger source 'cut-over'; no balance changed)"
        )
    if report.straddling:
        shown = ", ".join(str(b) for b in report.straddling[:STRADDLING_SHOWN])
        rest = len(report.straddling) - STRADDLING_SHOWN
        more = f" and {rest} more" if rest > 0 else ""
        print(
            f"check by hand: {len(report.straddling)} booking(s) changed both before and after the "
            f"cut-over time, and the listener will record them without charging: {shown}{more}"
        )
    print("next: start the listener (`listener run`)")


def render_uninstall(report: UninstallReport) -> None:
    """Print what an uninstall removed, what it restored and who may call it now, and what it kept."""
    from listener.ops.uninstall import REVOKED_FROM

    if not report.installed:
        print("nothing to uninstall: this database has no session ledger")
        return
    print(
        "removed the bookings triggers, the session_ledger schema and the queues booking_events, booking_events_dlq"
    )
    if report.restored:
        print("restored the app's own " + ", ".join(report.restored) + " with search_path pinned")
        callers = sorted({role for roles in report.executors.values() for role in roles})
        may = ", ".join(callers) if callers else "nobody but their owner"
        if report.kept_grants:
            print(
                f"kept their grants (--keep-grants): {may} may execute them; WARNING: their bodies check "
                "nobody: whoever may call them may move any pack's sessions"
            )
        else:
            print(
                f"revoked EXECUTE on them from {', '.join(REVOKED_FROM)}: their bodies check nobody; "
                f"may execute them now: {may}; --keep-grants keeps the grants"
            )
    if report.dead_letters:
        print(f"dropped {report.dead_letters} unresolved dead letter(s) with the dead-letter queue (--force)")
    print(
        "kept: the app's tables and every pack's balance; the pgmq schema (other queues may use it); "
        "the cluster-wide role session_ledger_listener (DROP ROLE it once no database uses it)"
    )
