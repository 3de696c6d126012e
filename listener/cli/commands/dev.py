"""Trying it out on an embedded PostgreSQL: `dev` (a listener in the foreground) and `demo` (the whole story)."""

from __future__ import annotations

import argparse

from listener.cli.args import Subparsers, command
from listener.settings import Settings


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

    p = command(
        subparsers, "demo", "the whole story on an embedded PostgreSQL, no setup needed", _demo, dsn=False
    )
    p.add_argument("--keep", action="store_true", help="keep the embedded server's data directory")


def _dev(args: argparse.Namespace, settings: Settings) -> int:
    """Serve an embedded database with a listener until Ctrl-C."""
    from listener.devtools.dev import run_dev

    run_dev(settings, keep=args.keep, port=args.port, schema_files=args.schema, http_port=settings.http_port)
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    """Tell the whole story on an embedded database."""
    from listener.devtools.demo import run_demo

    run_demo(keep=args.keep)
    return 0
