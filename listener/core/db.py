"""Opening connections: keep-alives, timeouts, and a DSN that never reaches a log."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from listener.errors import ConfigError, DatabaseUnreachable, first_line

Conn = psycopg.Connection[dict[str, Any]]

# Detect a silently dropped peer in well under a minute: keep-alive probes for
# idle sockets, tcp_user_timeout for sockets with unacknowledged data.
_LIVENESS = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
    "connect_timeout": 10,
}


def describe(dsn: str) -> str:
    """Where a DSN points, as user@host:port/db, with no password or other secret."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparsable DSN>"
    host = str(parts.get("host") or "localhost")
    port = str(parts.get("port") or "5432")
    user = parts.get("user")
    db = parts.get("dbname") or user or ""
    who = f"{user}@" if user else ""
    return f"{who}{host}:{port}/{db}"


def connect(
    dsn: str, *, autocommit: bool = True, purpose: str = "listener", statement_timeout_s: float | None = None
) -> Conn:
    """Open a dict-row connection; a failure becomes one readable line without the DSN's secrets."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"the DSN is not a valid connection string ({type(exc).__name__})") from None
    options: dict[str, Any] = {k: v for k, v in _LIVENESS.items() if k not in params}
    options.setdefault("application_name", f"session-ledger {purpose}")
    if statement_timeout_s is not None:
        # A lock wait that long is abnormal: the server cancels it (57014) and the batch is retried.
        options["options"] = (
            f"{params.get('options', '')} -c statement_timeout={int(statement_timeout_s * 1000)}"
        )
    try:
        return psycopg.connect(dsn, autocommit=autocommit, row_factory=dict_row, **options)
    except psycopg.OperationalError as exc:
        reason = _scrub(first_line(exc), dsn)
        raise DatabaseUnreachable(f"cannot connect to {describe(dsn)}: {reason}") from None


def _scrub(text: str, dsn: str) -> str:
    """Remove the password from a message, in case a driver ever echoes it."""
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        return text
    if password:
        text = text.replace(str(password), "***")
    return text


log = logging.getLogger("listener.core.db")


class Watchdog:
    """Breaks a connection whose call outlives its deadline.

    Keep-alives and tcp_user_timeout cannot see a middlebox (a hung pooler or
    load balancer) that keeps acknowledging bytes but forwards nothing, and
    statement_timeout cannot help when the server never got the query. Shutting
    the socket down makes the blocked call fail at once, as a lost connection,
    which the caller already handles by reconnecting and retrying.
    """

    def __init__(self) -> None:
        self._calls: dict[int, tuple[float, Conn]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def guard(self, conn: Conn, seconds: float) -> Iterator[None]:
        """Give the calls made inside this block `seconds` to return before the connection is broken."""
        key = id(conn)
        with self._lock:
            self._calls[key] = (time.monotonic() + seconds, conn)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="connection-watchdog", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._calls.pop(key, None)

    def _watch(self) -> None:
        while True:
            time.sleep(0.5)
            now = time.monotonic()
            with self._lock:
                late = [conn for deadline, conn in self._calls.values() if deadline < now]
            for conn in late:
                self._break(conn)

    def _break(self, conn: Conn) -> None:
        try:
            fd = conn.pgconn.socket
            sock = socket.socket(fileno=os.dup(fd))
        except (OSError, psycopg.Error):
            return  # already closed
        try:
            sock.shutdown(socket.SHUT_RDWR)
            log.warning("a database call outlived its deadline; dropped the connection to retry")
        except OSError:
            pass
        finally:
            sock.close()
        with self._lock:
            self._calls.pop(id(conn), None)


watchdog = Watchdog()
