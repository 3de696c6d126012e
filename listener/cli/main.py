"""The `listener` command line: one subcommand per job, one line per error."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any, NoReturn

import psycopg
from pydantic import ValidationError

from listener import logs
from listener.errors import ConfigError, ListenerError, first_line
from listener.settings import Settings

log = logging.getLogger("listener")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the problem and where help is."""
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="listener", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def with_dsn(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--dsn", help="PostgreSQL connection string (default: $DATABASE_URL)")
        return p

    p = with_dsn(sub.add_parser("migrate", help="install or upgrade the ledger, queue and trigger"))
    p.add_argument(
        "--with-demo-schema",
        action="store_true",
        help="first create the coaching app's tables on a blank database",
    )

    p = with_dsn(sub.add_parser("run", help="consume booking events and charge packs"))
    p.add_argument("--drain", action="store_true", help="exit once the queue is empty")
    p.add_argument("--batch-size", type=int, help="messages per batch (default 1000)")
    p.add_argument("--poll-interval", type=float, help="seconds between polls when idle (default 1)")
    p.add_argument("--visibility-timeout", type=int, help="seconds a read message stays hidden (default 30)")
    p.add_argument("--max-reads", type=int, help="reads before a message is dead-lettered (default 10)")
    p.add_argument("--log-format", choices=["text", "json"], help="log line format (default text)")
    p.add_argument(
        "--http-port",
        type=int,
        help="serve /metrics, /healthz, /readyz (and the dashboard, with $LISTENER_DASHBOARD_TOKEN) on this port",
    )
    p.add_argument("--http-host", help="address the HTTP port binds (default 127.0.0.1)")
    p.add_argument(
        "--http-timeout",
        type=int,
        help="seconds an HTTP connection may stay silent or take to send its request (default 5)",
    )

    p = with_dsn(sub.add_parser("status", help="queue, dead letters, ledger and listeners at a glance"))
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument(
        "--max-age",
        type=float,
        default=60.0,
        help="unhealthy when the oldest waiting event is older than this many seconds",
    )
    p.add_argument(
        "--no-listener-ok", action="store_true", help="do not count a missing listener heartbeat as unhealthy"
    )

    p = with_dsn(sub.add_parser("doctor", help="read-only security audit of the database and the DSN"))
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument(
        "--listener-dsn",
        help="the listener's own connection string: the listener checks judge its login "
        "(default: --dsn's login, and none when that is the owner's)",
    )

    with_dsn(
        sub.add_parser("complete-past", help="the cron path: complete confirmed bookings that have ended")
    )

    p = with_dsn(sub.add_parser("cutover", help="from now on the listener charges, not the app's old code"))
    p.add_argument("--at", type=_timestamp, help="the cut-over time, ISO 8601 (default: now)")

    p = with_dsn(sub.add_parser("uninstall", help="remove trigger, ledger and queues; keep the app's tables"))
    p.add_argument("--yes", action="store_true", help="really remove it")
    p.add_argument(
        "--keep-grants",
        action="store_true",
        help="leave EXECUTE on the restored use_session/release_session as it is "
        "(default: revoke it from PUBLIC, anon and authenticated; service_role keeps it)",
    )
    p.add_argument("--force", action="store_true", help="drop unresolved dead letters with the ledger")

    p = sub.add_parser("export-migrations", help="write the install as SQL files for supabase/migrations")
    p.add_argument("directory", help="where to write the files (created if missing)")
    p.add_argument(
        "--pgmq",
        choices=["extension", "script"],
        default="extension",
        help="PGMQ as `CREATE EXTENSION` (Supabase Queues; default) or as the bundled SQL-only script",
    )

    p = sub.add_parser(
        "dev", help="embedded PostgreSQL + the app's schema (demo or --schema) + listener in the foreground"
    )
    p.add_argument("--keep", action="store_true", help="keep the data directory after Ctrl-C")
    p.add_argument("--port", type=int, help="also accept TCP connections on 127.0.0.1:PORT")
    p.add_argument(
        "--schema",
        action="append",
        default=[],
        metavar="FILE",
        help="the app's own schema instead of the demo schema, on a Supabase-shaped base: a .sql file "
        "or a directory of them (applied in name order); repeatable, applied in the order given",
    )

    p = with_dsn(sub.add_parser("replay", help="put archived events or dead letters back on the queue"))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-archive", action="store_true", help="replay archived events")
    source.add_argument("--dead-letter", action="store_true", help="move dead letters back after a fix")
    p.add_argument(
        "--since", type=_timestamp, help="archive: events enqueued at or after this time (ISO 8601)"
    )
    p.add_argument("--until", type=_timestamp, help="archive: events enqueued before this time (ISO 8601)")
    p.add_argument("--booking", type=_uuid, nargs="+", default=[], help="archive: only these bookings")
    p.add_argument("--id", type=_message_id, nargs="+", default=[], help="dead letters: these message ids")
    p.add_argument("--all", action="store_true", help="dead letters: every one")
    p.add_argument("--dry-run", action="store_true", help="show what would happen, change nothing")
    p.add_argument("--json", action="store_true", help="print a JSON summary")

    p = with_dsn(sub.add_parser("reconcile", help="repair bookings whose ledger disagrees with their row"))
    p.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    p.add_argument("--json", action="store_true", help="print a JSON summary")

    p = with_dsn(sub.add_parser("audit", help="sessions the app's old code gave away, per pack; take them"))
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.add_argument("--org", type=_org_id, help="only this organisation's packs")
    charge = p.add_mutually_exclusive_group()
    charge.add_argument(
        "--charge",
        type=_pack_id,
        nargs="+",
        metavar="PACK",
        help="take the given-away sessions of these packs",
    )
    charge.add_argument("--charge-all", action="store_true", help="take every pack's given-away sessions")
    p.add_argument("--yes", action="store_true", help="really charge (without it: a dry run)")
    p.add_argument("--wide", action="store_true", help="whole ids and the ledger's paid bookings by source")

    p = with_dsn(
        sub.add_parser(
            "pause",
            help="stop charging everywhere (listeners and drain()) until resume; events keep queuing",
            description="Stop charging everywhere (every listener and drain()) until `listener resume`; "
            "the trigger keeps queuing events.",
        )
    )
    p.add_argument("--reason", help="why, shown by status, the dashboard and metrics (default: none)")
    with_dsn(
        sub.add_parser(
            "resume",
            help="start charging again after a pause",
            description="Start charging again after `listener pause`.",
        )
    )
    p = with_dsn(sub.add_parser("prune", help="delete archived events past retention"))
    p.add_argument("--older-than", required=True, help="retention, e.g. 30d, 12h, 2w")

    p = sub.add_parser("demo", help="the whole story on an embedded PostgreSQL, no setup needed")
    p.add_argument("--keep", action="store_true", help="keep the embedded server's data directory")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser, for tools and tests that check command lines."""
    return _parser()


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "dsn": getattr(args, "dsn", None),
        "batch_size": getattr(args, "batch_size", None),
        "poll_interval_s": getattr(args, "poll_interval", None),
        "visibility_timeout_s": getattr(args, "visibility_timeout", None),
        "max_reads": getattr(args, "max_reads", None),
        "log_format": getattr(args, "log_format", None),
        "http_port": getattr(args, "http_port", None),
        "http_host": getattr(args, "http_host", None),
    }
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][-1]) if first["loc"] else "setting"
        raise ConfigError(f"invalid {name}: {first['msg']}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; return the process exit code."""
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
        logs.configure(fmt=settings.log_format)
        handler = _COMMANDS[args.command]
        return handler(args, settings)
    except ListenerError as exc:
        print(f"listener {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except psycopg.Error as exc:
        print(f"listener {args.command}: database error {first_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"listener {args.command}: interrupted", file=sys.stderr)
        return 130


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from listener.ops.migrate import migrate

    report = migrate(settings.require_dsn(), with_demo_schema=args.with_demo_schema)
    if report.demo_schema:
        print("created the demo app schema")
    if report.pgmq != "present":
        print(f"installed PGMQ ({report.pgmq})")
    if report.applied:
        print("applied " + ", ".join(report.applied))
    if report.repeatables:
        print("re-applied functions, triggers and grants: " + ", ".join(report.repeatables))
    if not report.changed:
        print(f"already up to date (schema version {report.schema_version})")
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from listener.core.worker import Worker

    worker = Worker(settings)
    server = None
    if settings.http_port is not None:
        from listener.http.server import TIMEOUT_S, serve

        server = serve(
            worker,
            port=settings.http_port,
            host=settings.http_host,
            dashboard_token=settings.dashboard_token,
            timeout_s=TIMEOUT_S if args.http_timeout is None else args.http_timeout,
        )

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s; finishing the batch in hand", signal.Signals(signum).name)
        worker.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        worker.run(drain=args.drain)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    log.info("listener %s stopped; outcomes %s", worker.id, dict(worker.stats.outcomes))
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from listener.cli.render import render_status
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
        print(json.dumps(report, indent=2, default=str))
    else:
        render_status(report)
    return 0 if not problems else 3


def _doctor(args: argparse.Namespace, settings: Settings) -> int:
    from listener.ops.doctor import doctor

    report = doctor(settings.require_dsn(), listener_dsn=args.listener_dsn)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
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
    return 3 if report.has_high else 0


def _complete_past(args: argparse.Namespace, settings: Settings) -> int:
    from psycopg.errors import InsufficientPrivilege

    from listener.core.db import connect
    from listener.core.schema import NO_LEDGER, ledger_state
    from listener.core.store import Store
    from listener.errors import LedgerAccessDenied, LedgerMissing

    with connect(settings.require_dsn(), purpose="complete-past") as conn:
        # Not require_ledger(): the cron's own login (service_role) may complete bookings
        # without reading the ledger's version.
        state = ledger_state(conn)
        if not state.installed:
            raise LedgerMissing(NO_LEDGER)
        try:
            count = Store(conn).complete_past()
        except InsufficientPrivilege:
            raise LedgerAccessDenied(
                f"role {state.role} may not complete bookings through the ledger: connect as the "
                f"listener's login, service_role or the ledger's owner, {state.owner}"
            ) from None
    print(f"completed {count} past booking{'s' if count != 1 else ''}")
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from listener.cli.progress import progress_callback
    from listener.cli.render import render_dead_letters, render_replay_examples
    from listener.ops.replay import redrive_dead_letters, replay_archive

    console = Console()
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
            print(json.dumps(report.as_json(), indent=2))
        else:
            verb = "would enqueue" if args.dry_run else "enqueued"
            count = report.bookings if args.dry_run else report.enqueued
            console.print(f"{report.bookings} booking(s) in the archive match; {verb} {count} event(s)")
            console.print("what converging them does now: " + _counts(report.actions))
            render_replay_examples(report.examples, console)
            _render_packs(console, report.packs, "expected pack changes")
        return 0
    if args.since or args.until or args.booking:
        raise ConfigError("--since, --until and --booking apply to --from-archive, not --dead-letter")
    redrive = redrive_dead_letters(
        settings.require_dsn(), ids=args.id, all_letters=args.all, dry_run=args.dry_run
    )
    if args.json:
        print(json.dumps(redrive.as_json(), indent=2))
    else:
        render_dead_letters(redrive, console)
    return 0


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from listener.cli.progress import progress_callback
    from listener.ops.reconcile import reconcile

    with progress_callback(quiet=args.json) as progress:
        report = reconcile(settings.require_dsn(), dry_run=args.dry_run, progress=progress)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
        return 0
    console = Console()
    verb = "would change" if args.dry_run else "changed"
    console.print(f"{report.out_of_sync} booking(s) out of sync; " + _counts(report.outcomes))
    _render_packs(console, report.packs, f"packs {verb}")
    return 0


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from listener.cli.render import render_audit, render_charge
    from listener.ops.audit import audit, charge

    if args.yes and not (args.charge or args.charge_all):
        raise ConfigError("--yes applies to --charge or --charge-all")
    if args.charge and args.org:
        raise ConfigError("--org narrows --charge-all; --charge names its packs itself")
    if args.charge or args.charge_all:
        charged = charge(settings.require_dsn(), packs=args.charge, org=args.org, dry_run=not args.yes)
        if args.json:
            print(json.dumps(charged.as_json(), indent=2))
        else:
            render_charge(charged, Console())
        return 0
    report = audit(settings.require_dsn(), org=args.org)
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
    else:
        render_audit(report, Console(), wide=args.wide)
    return 0


def _prune(args: argparse.Namespace, settings: Settings) -> int:
    from listener.ops.prune import parse_duration, prune

    report = prune(settings.require_dsn(), older_than=parse_duration(args.older_than))
    print(
        f"removed {report.archived_events} archived event(s), {report.archived_dead_letters} archived dead "
        f"letter(s) and {report.stopped_listeners} old listener heartbeat(s)"
    )
    return 0


def _pause(args: argparse.Namespace, settings: Settings) -> int:
    from listener.ops.pause import pause

    paused = pause(settings.require_dsn(), reason=args.reason)
    why = f": {paused['reason']}" if paused.get("reason") else ""
    print(f"charging paused since {paused['paused_at']} by {paused['paused_by']}{why}; events keep queuing")
    return 0


def _resume(args: argparse.Namespace, settings: Settings) -> int:
    from listener.ops.pause import resume

    ended = resume(settings.require_dsn())
    if ended is None:
        print("charging was not paused")
    else:
        print(f"charging resumed; it was paused since {ended['paused_at']} by {ended['paused_by']}")
    return 0


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in counts.items()) or "nothing to do"


def _render_packs(console: Any, packs: list[dict[str, Any]], title: str) -> None:
    from listener.cli.render import render_pack_changes

    render_pack_changes(console, packs, title)


def _timestamp(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _uuid(text: str) -> uuid.UUID:
    """A booking id."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a booking id (UUID): {text!r}") from None


def _pack_id(text: str) -> uuid.UUID:
    """A pack (client_purchases) id."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a pack id (UUID): {text!r}") from None


def _org_id(text: str) -> uuid.UUID:
    """An organisation id."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an organisation id (UUID): {text!r}") from None


def _message_id(text: str) -> int:
    """A queue message id: a positive bigint."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value < 2**63:
        raise argparse.ArgumentTypeError(f"not a message id (a positive whole number): {text!r}")
    return value


def _cutover(args: argparse.Namespace, settings: Settings) -> int:
    from listener.ops.cutover import cutover

    report = cutover(settings.require_dsn(), args.at)
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
        shown = ", ".join(str(b) for b in report.straddling[:10])
        more = f" and {len(report.straddling) - 10} more" if len(report.straddling) > 10 else ""
        print(
            f"check by hand: {len(report.straddling)} booking(s) changed both before and after the "
            f"cut-over time, and the listener will record them without charging: {shown}{more}"
        )
    print("next: start the listener (`listener run`)")
    return 0


def _uninstall(args: argparse.Namespace, settings: Settings) -> int:
    from listener.ops.uninstall import REVOKED_FROM, uninstall

    if not args.yes:
        raise ConfigError(
            "this removes the bookings trigger, the session ledger and its queues; "
            "run `listener uninstall --yes` to do it"
        )
    report = uninstall(settings.require_dsn(), keep_grants=args.keep_grants, force=args.force)
    if not report.installed:
        print("nothing to uninstall: this database has no session ledger")
        return 0
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
    return 0


def _export_migrations(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from listener.ops.export import export_migrations

    if not args.directory.strip():
        # Path("") is the working directory: an empty argument is a slip, not a choice.
        raise ConfigError("no directory given: name where to write the files, e.g. supabase/migrations")
    target = Path(args.directory)
    written = export_migrations(target, pgmq=args.pgmq)
    for path in written:
        print(path)
    if not written:
        print(f"{target} already holds every session ledger migration")
    return 0


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    from listener.devtools.dev import run_dev

    run_dev(settings, keep=args.keep, port=args.port, schema_files=args.schema)
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from listener.devtools.demo import run_demo

    run_demo(keep=args.keep)
    return 0


_COMMANDS = {
    "replay": _replay,
    "reconcile": _reconcile,
    "audit": _audit,
    "prune": _prune,
    "pause": _pause,
    "resume": _resume,
    "migrate": _migrate,
    "run": _run,
    "status": _status,
    "doctor": _doctor,
    "complete-past": _complete_past,
    "demo": _demo,
    "cutover": _cutover,
    "uninstall": _uninstall,
    "export-migrations": _export_migrations,
    "dev": _dev,
}
