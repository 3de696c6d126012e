"""A background sampler: listener counters, idle-in-transaction time, dead tuples, registrations."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import Any

import psycopg

from listener.core.db import Conn, connect


class Sampler(threading.Thread):
    """Polls the scenario's database; survives server restarts by reconnecting."""

    def __init__(self, dsn: str, *, interval: float = 0.1) -> None:
        super().__init__(name="faults-sampler", daemon=True)
        self.dsn = dsn
        self.interval = interval
        self.stop_event = threading.Event()
        self._last: dict[uuid.UUID, int] = {}
        self.noop = 0
        self.idle_in_tx_max = 0.0
        self.dead_tuples_max = 0
        self.first_seen: dict[int, float] = {}
        self.samples = 0
        self._lock = threading.Lock()

    def run(self) -> None:
        """Sample until stopped."""
        conn: Conn | None = None
        while not self.stop_event.is_set():
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = connect(self.dsn, purpose="faults-sampler")
                self._sample(conn)
            except (psycopg.Error, Exception):  # the server may be down for a moment
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
            self.stop_event.wait(self.interval)
        if conn is not None:
            conn.close()

    def _sample(self, conn: Conn) -> None:
        rows = conn.execute("SELECT id, pid, noop FROM session_ledger.listeners").fetchall()
        now = time.monotonic()
        with self._lock:
            for r in rows:
                self.first_seen.setdefault(int(r["pid"]), now)
                before = self._last.get(r["id"])
                value = int(r["noop"])
                # An unlogged table is emptied by crash recovery: a smaller value is a fresh count.
                self.noop += max(0, value if before is None or value < before else value - before)
                self._last[r["id"]] = value
            stuck = conn.execute(
                """SELECT coalesce(max(extract(epoch FROM clock_timestamp() - state_change)), 0) AS s
                   FROM pg_stat_activity
                   WHERE datname = current_database()
                     AND application_name IN ('session-ledger worker', 'session-ledger wakeup')
                     AND state LIKE 'idle in transaction%%'"""
            ).fetchone()
            if stuck is not None:
                self.idle_in_tx_max = max(self.idle_in_tx_max, float(stuck["s"]))
            dead = conn.execute(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'pgmq.q_booking_events'::regclass"
            ).fetchone()
            if dead is not None:
                self.dead_tuples_max = max(self.dead_tuples_max, int(dead["n_dead_tup"]))
            self.samples += 1

    def seen_at(self, pid: int) -> float | None:
        """When a listener with this pid first appeared in the heartbeat table."""
        with self._lock:
            return self.first_seen.get(pid)

    def finish(self) -> dict[str, Any]:
        """Stop sampling and return the figures."""
        self.stop_event.set()
        self.join(timeout=10)
        return {
            "duplicates_suppressed": self.noop,
            "listener_idle_in_tx_max_s": round(self.idle_in_tx_max, 3),
            "queue_dead_tuples_max": self.dead_tuples_max,
        }


def queue_empty(conn: Conn) -> bool:
    """No message left in the queue, visible or in flight."""
    row = conn.execute("SELECT NOT EXISTS (SELECT 1 FROM pgmq.q_booking_events) AS empty").fetchone()
    return bool(row and row["empty"])


def wait_drained(dsn: str, *, timeout: float, since: float | None = None) -> float:
    """Wait until the queue is empty; return seconds since `since` (monotonic), or raise TimeoutError."""
    start = since if since is not None else time.monotonic()
    deadline = time.monotonic() + timeout
    conn: Conn | None = None
    try:
        while True:
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = connect(dsn, purpose="faults-drain")
                if queue_empty(conn):
                    return round(time.monotonic() - start, 3)
            except psycopg.Error:
                conn = None
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue not drained within {timeout}s")
            time.sleep(0.05)
    finally:
        if conn is not None:
            conn.close()


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile, or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return round(ordered[k], 3)
