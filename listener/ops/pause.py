"""`listener pause` and `listener resume`: stop and restart charging everywhere, for incidents and investigations.

The flag lives in session_ledger.config, so every listener and every drain() honour it
within one poll, wherever they run; the trigger keeps queuing, so nothing is lost.
"""

from __future__ import annotations

from typing import Any

from listener.core.db import connect
from listener.core.schema import require_ledger
from listener.core.sql_files import query


def pause(dsn: str, *, reason: str | None) -> dict[str, Any]:
    """Pause charging; return who paused, when and why."""
    with connect(dsn, purpose="pause") as conn:
        require_ledger(conn, owner_action="pause charging")
        row = conn.execute(query("pause_charging"), {"reason": reason}).fetchone()
        assert row is not None
        paused: dict[str, Any] = row["paused"]
        return paused


def resume(dsn: str) -> dict[str, Any] | None:
    """Resume charging; return the pause it ended, or None when charging was not paused."""
    with connect(dsn, purpose="resume") as conn:
        require_ledger(conn, owner_action="resume charging")
        row = conn.execute(query("resume_charging")).fetchone()
        assert row is not None
        ended: dict[str, Any] | None = row["ended"]
        return ended
