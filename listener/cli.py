"""The `listener` command line: one subcommand per job, one line per error."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any, NoReturn

import psycopg
from pydantic import ValidationError

from listener import logs
from listener.errors import ConfigError, ListenerError

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
    p.add_argument("--batch-size", type=int, help="messages per batch (default 500)")
    p.add_argument("--poll-interval", type=float, help="seconds between polls when idle (default 1)")
    p.add_argument("--visibility-timeout", type=int, help="seconds a read message stays hidden (default 30)")
    p.add_argument("--max-reads", type=int, help="reads before a message is dead-lettered (default 10)")
    p.add_argument("--log-format", choices=["text", "json"], help="log line format (default text)")
    p.add_argument("--http-port", type=int, help="serve /metrics, /healthz and /readyz on this port")

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

    with_dsn(
        sub.add_parser("complete-past", help="the cron path: complete confirmed bookings that have ended")
    )

    p = sub.add_parser("demo", help="the whole story on an embedded PostgreSQL, no setup needed")
    p.add_argument("--keep", action="store_true", help="keep the embedded server's data directory")
    return parser


def _settings(args: argparse.Namespace) -> Any:
    from listener.settings import Settings

    overrides = {
        "dsn": getattr(args, "dsn", None),
        "batch_size": getattr(args, "batch_size", None),
        "poll_interval_s": getattr(args, "poll_interval", None),
        "visibility_timeout_s": getattr(args, "visibility_timeout", None),
        "max_reads": getattr(args, "max_reads", None),
        "log_format": getattr(args, "log_format", None),
        "http_port": getattr(args, "http_port", None),
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
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        code = f"{exc.sqlstate}: " if exc.sqlstate else ""
        print(f"listener {args.command}: database error {code}{first}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"listener {args.command}: interrupted", file=sys.stderr)
        return 130


def _migrate(args: argparse.Namespace, settings: Any) -> int:
    from listener.migrate import migrate

    report = migrate(settings.require_dsn(), with_demo_schema=args.with_demo_schema)
    if report.demo_schema:
        print("created the demo app schema")
    if report.pgmq != "present":
        print(f"installed PGMQ ({report.pgmq})")
    if report.applied:
        print("applied " + ", ".join(report.applied))
    else:
        print("already up to date")
    return 0


def _run(args: argparse.Namespace, settings: Any) -> int:
    from listener.worker import Worker

    worker = Worker(settings)
    server = None
    if settings.http_port is not None:
        from listener.health import serve

        server = serve(worker, port=settings.http_port)

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
    log.info("listener %s stopped; outcomes %s", worker.id, dict(worker.stats.outcomes))
    return 0


def _status(args: argparse.Namespace, settings: Any) -> int:
    from listener.status import fetch_status, health_problems, render

    report = fetch_status(settings.require_dsn())
    problems = health_problems(report, max_age_s=args.max_age, require_listener=not args.no_listener_ok)
    report["healthy"] = not problems
    report["problems"] = problems
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        render(report)
    return 0 if not problems else 3


def _complete_past(args: argparse.Namespace, settings: Any) -> int:
    from listener.db import connect
    from listener.store import Store

    with connect(settings.require_dsn(), purpose="complete-past") as conn:
        count = Store(conn).complete_past()
    print(f"completed {count} past booking{'s' if count != 1 else ''}")
    return 0


def _demo(args: argparse.Namespace, settings: Any) -> int:
    from listener.demo import run_demo

    run_demo(keep=args.keep)
    return 0


_COMMANDS = {
    "migrate": _migrate,
    "run": _run,
    "status": _status,
    "complete-past": _complete_past,
    "demo": _demo,
}
