"""`listener uninstall`: remove the trigger, the ledger and the queues; keep the app's tables and balances."""

from __future__ import annotations

from dataclasses import dataclass

from listener.core.db import connect
from listener.core.sql_files import query, uninstall_sql
from listener.errors import ListenerError
from listener.ops.guards import refuse_while_listener_runs, relation_exists
from listener.ops.migrate import migration_lock


class EventsWaiting(ListenerError):
    """Events nobody has handled yet: uninstalling would drop uncharged completions."""


@dataclass
class UninstallReport:
    """What an uninstall found and removed."""

    installed: bool
    dead_letters: int = 0
    restored: tuple[str, ...] = ()


def uninstall(dsn: str) -> UninstallReport:
    """Drop the triggers, the session_ledger schema and both queues, and put back the app's functions."""
    with connect(dsn, autocommit=True, purpose="uninstall") as conn, migration_lock(conn):
        if not relation_exists(conn, "session_ledger.migrations"):
            return UninstallReport(installed=False)
        refuse_while_listener_runs(conn, action="uninstall")
        with conn.transaction():
            conn.execute("LOCK TABLE public.bookings IN SHARE ROW EXCLUSIVE MODE")
            # Waiting events are completions nobody has charged yet: dropping them would
            # leave those bookings unpaid with no trace, so they must be handled first.
            depths = conn.execute(query("queue_depths")).fetchone()
            assert depths is not None
            waiting = int(depths["queue_depth"])
            if waiting:
                raise EventsWaiting(
                    f"{waiting} booking event{'s are' if waiting != 1 else ' is'} still waiting: "
                    "run `listener run --drain` first, then uninstall"
                )
            dead = int(depths["dead_letter_depth"])
            restored = (
                tuple(
                    r["signature"]
                    for r in conn.execute(
                        "SELECT signature FROM session_ledger.replaced_functions WHERE definition IS NOT NULL"
                        " ORDER BY signature"
                    )
                )
                if relation_exists(conn, "session_ledger.replaced_functions")
                else ()
            )
            conn.execute(uninstall_sql())
        return UninstallReport(installed=True, dead_letters=dead, restored=restored)
