"""`listener run`: the always-on listener, and its HTTP port."""

from __future__ import annotations

import argparse
import logging
import signal
from types import FrameType

from listener.cli.args import Subparsers, command, from_env
from listener.cli.render import counts_text
from listener.settings import Settings

log = logging.getLogger("listener")


def register(subparsers: Subparsers) -> None:
    """Add `run`; each option that overrides a setting has that setting's name as its dest."""
    p = command(subparsers, "run", "consume booking events and charge packs", _run)
    p.add_argument("--drain", action="store_true", help="exit once the queue is empty")
    p.add_argument("--batch-size", type=int, metavar="N", help=f"messages per batch {from_env('batch_size')}")
    p.add_argument(
        "--poll-interval",
        dest="poll_interval_s",
        type=float,
        metavar="SECONDS",
        help=f"seconds between polls when idle {from_env('poll_interval_s')}",
    )
    p.add_argument(
        "--visibility-timeout",
        dest="visibility_timeout_s",
        type=int,
        metavar="SECONDS",
        help=f"seconds a read message stays hidden {from_env('visibility_timeout_s')}",
    )
    p.add_argument(
        "--max-reads",
        type=int,
        metavar="N",
        help=f"reads before a message is dead-lettered {from_env('max_reads')}",
    )
    p.add_argument("--log-format", choices=["text", "json"], help=f"log line format {from_env('log_format')}")
    p.add_argument(
        "--http-port",
        type=int,
        metavar="PORT",
        help="serve /metrics, /livez, /healthz, /readyz (and the dashboard, with $LISTENER_DASHBOARD_TOKEN) "
        f"on this port {from_env('http_port', unset='no HTTP port')}",
    )
    p.add_argument("--http-host", metavar="HOST", help=f"address the HTTP port binds {from_env('http_host')}")
    p.add_argument(
        "--http-timeout",
        dest="http_timeout_s",
        type=int,
        metavar="SECONDS",
        help=f"seconds an HTTP connection may stay silent or take to send its request {from_env('http_timeout_s')}",
    )


def _run(args: argparse.Namespace, settings: Settings) -> int:
    """Charge until told to stop (or, with --drain, until the queue is empty), serving HTTP if asked."""
    from listener.core.worker import Worker

    worker = Worker(settings)
    server = None
    if settings.http_port is not None:
        from listener.http.server import serve

        server = serve(
            worker,
            port=settings.http_port,
            host=settings.http_host,
            dashboard_token=settings.dashboard_token,
            timeout_s=settings.http_timeout_s,
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
    log.info("listener %s stopped; outcomes: %s", worker.id, counts_text(worker.stats.outcomes, empty="none"))
    return 0
