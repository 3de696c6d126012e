"""Trying it out on an embedded PostgreSQL: `dev` (a listener in the foreground) and `demo` (the whole story)."""

from __future__ import annotations

import argparse
import logging
import signal
from types import FrameType
from typing import TYPE_CHECKING

from listener.cli.args import Subparsers, command
from listener.settings import Settings

if TYPE_CHECKING:
    from rich.console import Console

    from listener.devtools.demo import DemoResult

log = logging.getLogger("listener.dev")


def register(subparsers: Subparsers) -> None:
    """Add `dev` and `demo`."""
    p = command(
        subparsers,
        "dev",
        "embedded PostgreSQL + the app's schema (demo or --schema) + listener in the foreground",
        _dev,
        dsn=False,
    )
    p.add_argument("--keep", action="store_true", help="keep the data directory after Ctrl-C")
    p.add_argument(
        "--port",
        type=int,
        help="also accept TCP connections on 127.0.0.1:PORT (default: the Unix socket only)",
    )
    p.add_argument(
        "--http-port",
        type=int,
        metavar="PORT",
        help="serve /metrics, the probes and the dashboard on 127.0.0.1:PORT, with the dashboard's "
        "password printed ($LISTENER_DASHBOARD_TOKEN, else a fresh one) (default: no HTTP port)",
    )
    p.add_argument(
        "--schema",
        action="append",
        default=[],
        metavar="FILE",
        help="the app's own schema instead of the demo schema, on a Supabase-shaped base: a .sql file "
        "or a directory of them (applied in name order); repeatable, applied in the order given "
        "(default: the demo schema)",
    )
    p.add_argument(
        "--mapping",
        metavar="FILE",
        help="the app's schema mapped for the ledger, a TOML file as `listener migrate --mapping` takes "
        "(e.g. examples/gym/mapping.toml with --schema examples/gym/schema.sql) "
        "(default: the coaching app's mapping)",
    )

    p = command(
        subparsers, "demo", "the whole story on an embedded PostgreSQL, no setup needed", _demo, dsn=False
    )
    p.add_argument("--keep", action="store_true", help="keep the embedded server's data directory")
    p.add_argument(
        "--app",
        choices=("coaching", "gym", "marketplace"),
        default="coaching",
        help="whose story: the coaching app on Supabase, a gym on its own PostgreSQL (examples/gym), "
        "or a credits marketplace on Supabase (examples/marketplace) (default: coaching)",
    )


def _say(line: str) -> None:
    # Flushed line by line: a script reading the DSN from a pipe must not wait for a buffer to fill.
    print(line, flush=True)


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    """Serve an embedded database with a listener until Ctrl-C (SIGINT) or SIGTERM, saying how to connect."""
    from listener.devtools.dev import check_options, dev_session, load_mapping

    files = check_options(port=args.port, schema=args.schema)
    mapping = load_mapping(args.mapping)
    _say("starting an embedded PostgreSQL (no server or Docker needed)...")
    with dev_session(
        settings,
        keep=args.keep,
        port=args.port,
        schema_files=files,
        mapping=mapping,
        http_port=settings.http_port,
    ) as dev:
        worker = dev.worker

        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s; stopping", signal.Signals(signum).name)
            worker.request_stop()

        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        what = (
            f"the app schema from {dev.schema_files} file(s)" if dev.schema_files else "the demo app schema"
        )
        _say(f"PostgreSQL with PGMQ, {what} and the session ledger is ready.")
        _say(f"DATABASE_URL={dev.dsn}")
        if dev.tcp_dsn:
            _say(f"TCP_DATABASE_URL={dev.tcp_dsn}")
        _say(f'connect:  psql "{dev.tcp_dsn or dev.dsn}"')
        _say(f"data:     {dev.data_dir} ({'kept' if args.keep else 'deleted'} on exit)")
        if dev.dashboard_url is not None:
            password = (
                "$LISTENER_DASHBOARD_TOKEN" if dev.made_token is None else dev.made_token.get_secret_value()
            )
            _say(f"dashboard: {dev.dashboard_url} (HTTP Basic, any user name, password {password})")
        _say("the listener is running: complete a booking and watch it charged here; Ctrl-C stops everything")
        try:
            worker.run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    _say("stopped the listener and the server" + ("" if args.keep else "; deleted the data directory"))
    if args.keep:
        _say(f"data directory kept at {dev.data_dir}")
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    """Tell the whole story on an embedded database, a spinner per step, then show what it did."""
    from rich.console import Console

    from listener.devtools.demo import run_demo

    console = Console()
    logging.getLogger("listener").setLevel(logging.WARNING)
    result = run_demo(app=args.app, keep=args.keep, step=console.status)
    render_demo(result, console)
    if args.keep:
        console.print(f'data directory kept and server left running; connect with: psql "{result.dsn}"')
    return 0


def render_demo(result: DemoResult, console: Console) -> None:
    """The story's outcome: the cron's one UPDATE, then each booking and each pack's balance."""
    from rich.table import Table

    console.print(result.summary + "\n")
    bookings = Table(title="bookings")
    for col in ("session", "pack", result.by_title, "status", "ledger", "why"):
        bookings.add_column(col)
    for b in result.bookings:
        bookings.add_row(b.session_at, b.pack, b.completed_by, b.status, b.ledger or "-", b.why)
    console.print(bookings)
    packs = Table(title=result.packs_title)
    for col in ("pack", "before", "after", "total"):
        packs.add_column(col, justify="right" if col != "pack" else "left")
    for p in result.packs:
        packs.add_row(p.name, str(p.before), str(p.after), "-" if p.total is None else str(p.total))
    console.print(packs)
