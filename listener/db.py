"""Opening connections: keep-alives, timeouts, and a DSN that never reaches a log."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from listener.errors import ConfigError, DatabaseUnreachable

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


def connect(dsn: str, *, autocommit: bool = True, purpose: str = "listener") -> Conn:
    """Open a dict-row connection; a failure becomes one readable line without the DSN's secrets."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"the DSN is not a valid connection string ({type(exc).__name__})") from None
    options: dict[str, Any] = {k: v for k, v in _LIVENESS.items() if k not in params}
    options.setdefault("application_name", f"session-ledger {purpose}")
    try:
        return psycopg.connect(dsn, autocommit=autocommit, row_factory=dict_row, **options)
    except psycopg.OperationalError as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        reason = lines[0] if lines else type(exc).__name__
        raise DatabaseUnreachable(f"cannot connect to {describe(dsn)}: {_scrub(reason, dsn)}") from None


def _scrub(text: str, dsn: str) -> str:
    """Remove the password from a message, in case a driver ever echoes it."""
    try:
        password = conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        return text
    if password:
        text = text.replace(str(password), "***")
    return text
