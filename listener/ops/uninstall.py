"""`listener uninstall`: remove the trigger, the ledger and the queues; keep the app's tables and balances."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from listener.core.db import Conn, connect
from listener.core.sql_files import uninstall_sql
from listener.errors import ConfigError, ListenerError
from listener.ops.migrate import _LOCK_KEY


@dataclass
class UninstallReport:
    """What an uninstall found and removed."""

    installed: bool
    dead_letters: int = 0


def live_listeners(conn: Conn) -> list[dict[str, Any]]:
    """Listeners whose heartbeat is fresh and who have not said goodbye."""
    if not _exists(conn, "session_ledger.listeners"):
        return []
    return conn.execute(
        "SELECT host, pid FROM session_ledger.listeners"
        " WHERE stopped_at IS NULL AND heartbeat_at > now() - interval '30 seconds' ORDER BY started_at"
    ).fetchall()


def _exists(conn: Conn, relation: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS present", [relation]).fetchone()
    return bool(row and row["present"])


def _count(conn: Conn, relation: str) -> int:
    if not _exists(conn, relation):
        return 0
    # relation is one of our fixed queue table names, never user input.
    row = conn.execute(f"SELECT count(*) AS n FROM {relation}").fetchone()
    return int(row["n"]) if row else 0


def uninstall(dsn: str) -> UninstallReport:
    """Drop the triggers, the session_ledger schema and both queues, and restore the app's functions."""
    with connect(dsn, autocommit=True, purpose="uninstall") as conn:
        # The migration lock: an uninstall never interleaves with a `listener migrate`.
        conn.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])
        try:
            if not _exists(conn, "session_ledger.migrations") and not _exists(conn, "pgmq.q_booking_events"):
                return UninstallReport(installed=False)
            running = live_listeners(conn)
            if running:
                where = ", ".join(f"{r['host']} pid {r['pid']}" for r in running)
                raise ListenerError(f"a listener is still running ({where}): stop it first, then uninstall")
            with conn.transaction():
                conn.execute("LOCK TABLE public.bookings IN SHARE ROW EXCLUSIVE MODE")
                # Waiting events are completions nobody has charged yet: dropping them would
                # leave those bookings unpaid with no trace, so they must be handled first.
                waiting = _count(conn, "pgmq.q_booking_events")
                if waiting:
                    raise ListenerError(
                        f"{waiting} booking event{'s are' if waiting != 1 else ' is'} still waiting: "
                        "run `listener run --drain` first, then uninstall"
                    )
                dead = _count(conn, "pgmq.q_booking_events_dlq")
                conn.execute(uninstall_sql())
            return UninstallReport(installed=True, dead_letters=dead)
        finally:
            if not conn.closed and not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])


def uninstall_command(args: argparse.Namespace, settings: Any) -> int:
    """The `listener uninstall` command."""
    if not args.yes:
        raise ConfigError(
            "this removes the bookings trigger, the session ledger and its queues; "
            "run `listener uninstall --yes` to do it"
        )
    report = uninstall(settings.require_dsn())
    if not report.installed:
        print("nothing to uninstall: this database has no session ledger")
        return 0
    print(
        "removed the bookings triggers, the session_ledger schema and the queues booking_events, booking_events_dlq"
    )
    print("restored the app's own public.use_session(uuid) and public.release_session(uuid)")
    if report.dead_letters:
        print(f"dropped {report.dead_letters} dead-lettered event(s) with the dead-letter queue")
    print(
        "kept: the app's tables and every pack's balance; the pgmq schema (other queues may use it); "
        "the cluster-wide role session_ledger_listener (DROP ROLE it once no database uses it)"
    )
    return 0
