"""Checks operator commands share: a ledger is installed, no listener is running."""

from __future__ import annotations

from listener.core.db import Conn
from listener.errors import ListenerRunning, SchemaOutOfDate


def relation_exists(conn: Conn, relation: str) -> bool:
    """Whether a table or view exists (relation is schema-qualified)."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS present", [relation]).fetchone()
    return bool(row and row["present"])


def require_ledger(conn: Conn) -> None:
    """Refuse to go on when the database has no session ledger."""
    if not relation_exists(conn, "session_ledger.config"):
        raise SchemaOutOfDate("the database has no session ledger: run `listener migrate` first")


def refuse_while_listener_runs(conn: Conn, *, action: str) -> None:
    """Refuse `action` while a live listener (session_ledger.live_listeners) would race it."""
    if relation_exists(conn, "session_ledger.live_listeners"):
        rows = conn.execute(
            "SELECT host, pid FROM session_ledger.live_listeners ORDER BY started_at"
        ).fetchall()
    elif relation_exists(conn, "session_ledger.listeners"):
        # A database of release 0.1.0, before its first `listener migrate` to this one.
        rows = conn.execute(
            "SELECT host, pid FROM session_ledger.listeners"
            " WHERE stopped_at IS NULL AND heartbeat_at > now() - interval '30 seconds' ORDER BY started_at"
        ).fetchall()
    else:
        return
    if rows:
        where = ", ".join(f"{r['host']} pid {r['pid']}" for r in rows)
        raise ListenerRunning(f"a listener is running ({where}): stop it first, then {action}")
