"""Checks operator commands share: a ledger is installed, no listener is running."""

from __future__ import annotations

from listener.core.db import Conn
from listener.core.sql_files import query
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
    if not relation_exists(conn, "session_ledger.listeners"):
        return
    if not relation_exists(conn, "session_ledger.live_listeners"):
        raise SchemaOutOfDate(
            f"this database was installed by an older release: run `listener migrate`, then {action}"
        )
    rows = conn.execute(query("live_listeners")).fetchall()
    if rows:
        where = ", ".join(f"{r['host']} pid {r['pid']}" for r in rows)
        raise ListenerRunning(f"a listener is running ({where}): stop it first, then {action}")
