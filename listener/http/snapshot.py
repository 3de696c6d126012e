"""The HTTP port's one database connection, and the cached reads that scrapes and probes share.

Every request of the HTTP port reads through one `Snapshot`: one long-lived
connection of its own (application_name "session-ledger metrics"), reopened on
the next read after a loss, and results cached so that any number of scrapes
costs the database at most one cheap read a second. Opening a connection per
request would exhaust a small Supabase plan's connection limit under a 5-second
scrape interval and a couple of probes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from listener.core.db import Conn, connect, watchdog
from listener.core.sql_files import query
from listener.errors import DatabaseUnreachable

log = logging.getLogger("listener.http.snapshot")

APPLICATION = "metrics"
# queue_depths() counts two small tables: cheap enough for once a second.
DEPTHS_EVERY_S = 1.0
# status() counts the out-of-sync bookings with a full join of bookings and the
# ledger, which grows with the app: refreshed at most this often, however often
# Prometheus scrapes. session_ledger_status_age_seconds says how old it is.
STATUS_EVERY_S = 15.0
# Past this age a status read that keeps failing is no longer reported at all.
STATUS_STALE_S = 60.0
_CALL_DEADLINE_S = 10.0

T = TypeVar("T")


class Snapshot:
    """One connection and the cached results read through it; safe to share between request threads."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: Conn | None = None
        self._lock = threading.Lock()
        self._depths: dict[str, Any] | None = None
        self._depths_at = float("-inf")
        self._status: dict[str, Any] | None = None
        self._status_tried = float("-inf")
        self._status_at = float("-inf")
        self._paused: dict[str, Any] | None = None
        self._paused_at = float("-inf")

    def paused(self) -> dict[str, Any] | None:
        """Who paused charging, when and why (session_ledger.pause_state()), at most a second old; None when
        charging runs or the database cannot be read."""
        with self._lock:
            now = time.monotonic()
            if now - self._paused_at >= DEPTHS_EVERY_S:
                self._paused_at = now
                row = self._read(lambda c: c.execute(query("pause_state")).fetchone())
                self._paused = row["paused"] if row is not None else None
            return self._paused

    def depths(self) -> dict[str, Any] | None:
        """queue_depths(), at most a second old; None while the database cannot be read."""
        with self._lock:
            now = time.monotonic()
            if now - self._depths_at >= DEPTHS_EVERY_S:
                # Stamped before the read, so a database that is down is retried once a second, not per request.
                self._depths_at = now
                row = self._read(lambda c: c.execute(query("queue_depths")).fetchone())
                self._depths = dict(row) if row is not None else None
            return self._depths

    def status(self, *, max_age_s: float = STATUS_EVERY_S) -> dict[str, Any] | None:
        """session_ledger.status(), at most `max_age_s` old; None when no read worked for a minute."""
        with self._lock:
            now = time.monotonic()
            if now - self._status_tried >= max(max_age_s, DEPTHS_EVERY_S):
                self._read_status(now)
            if now - self._status_at > STATUS_STALE_S:
                return None
            return self._status

    def status_now(self) -> dict[str, Any] | None:
        """session_ledger.status() read now, refreshing the cache; for a page that shows it beside rows it reads now."""
        # A person loads the dashboard; a scrape or probe never comes here, so this needs no throttle.
        with self._lock:
            now = time.monotonic()
            self._read_status(now)
            if now - self._status_at > STATUS_STALE_S:
                return None
            return self._status

    def _read_status(self, now: float) -> None:
        """Read status() into the cache; a failed read leaves the last good one."""
        self._status_tried = now
        row = self._read(lambda c: c.execute(query("status")).fetchone())
        if row is not None:
            self._status = row["status"]
            self._status_at = now

    def status_age_s(self) -> float:
        """Seconds since status() was last read successfully."""
        with self._lock:
            return time.monotonic() - self._status_at

    def call(self, read: Callable[[Conn], T]) -> T:
        """Run `read` on the shared connection; raise DatabaseUnreachable when it fails."""
        with self._lock:
            result = self._read(read)
        if result is None:
            raise DatabaseUnreachable("the database could not be read")
        return result

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _read(self, read: Callable[[Conn], T | None]) -> T | None:
        """Run `read`, reconnecting first when needed; None on failure, with the connection dropped."""
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = connect(self._dsn, purpose=APPLICATION, statement_timeout_s=_CALL_DEADLINE_S)
            with watchdog.guard(self._conn, _CALL_DEADLINE_S * 1.5):
                return read(self._conn)
        except DatabaseUnreachable as exc:
            log.warning("metrics connection: %s", exc)
        except psycopg.Error as exc:
            log.warning("metrics connection lost (%s); reconnecting on the next read", type(exc).__name__)
            if self._conn is not None:
                self._conn.close()
            self._conn = None
        return None
