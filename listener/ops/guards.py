"""Checks operator commands share: no listener is running (whether a ledger is installed: listener.core.schema)."""

from __future__ import annotations

from listener.core.db import Conn
from listener.core.schema import ledger_state, owner_needed
from listener.core.sql_files import query
from listener.errors import ListenerRunning, SchemaOutOfDate


def relation_exists(conn: Conn, relation: str) -> bool:
    """Whether a table or view exists (relation is schema-qualified), whatever the role may see of its schema."""
    schema, _, name = relation.partition(".")
    # The catalogs, not to_regclass(): that fails on a schema the role has no USAGE on.
    row = conn.execute(query("relation_exists"), {"schema": schema, "name": name}).fetchone()
    return bool(row and row["present"])


def refuse_while_listener_runs(conn: Conn, *, action: str) -> None:
    """Refuse `action` (an owner's: cut-over, uninstall) to another role, or while a live listener would race it."""
    state = ledger_state(conn)
    if state.installed and not state.acts_as_owner:
        raise owner_needed(state, action)
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
