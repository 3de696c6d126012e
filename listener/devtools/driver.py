"""Drive an installed ledger as the app does, and wait for the listener: no pytest here.

`listener demo` uses these as they are; listener.testing re-exports them and its pytest
plugin wraps them in fixtures.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

from pydantic import SecretStr

from listener.core.db import Conn, connect
from listener.core.sql_files import query
from listener.core.worker import Worker
from listener.settings import Settings


class Ledger:
    """Drive the app's writes the way the browser and the cron do, then wait for the listener."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: Conn | None = None

    @property
    def conn(self) -> Conn:
        """An autocommit owner connection for setup and assertions."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn, purpose="tests")
        return self._conn

    def close(self) -> None:
        """Close the helper's connection."""
        if self._conn is not None:
            self._conn.close()

    def complete_as_user(self, booking_id: uuid.UUID, user_id: uuid.UUID, status: str = "completed") -> int:
        """Set a booking's status as a signed-in user under RLS, as the trainer's browser does."""
        with connect(self.dsn, autocommit=False, purpose="browser") as conn:
            conn.execute(query("driver_role_authenticated"))
            conn.execute(query("set_jwt_sub"), [str(user_id)])
            cur = conn.execute(query("set_booking_status"), [status, booking_id])
            conn.commit()
            return cur.rowcount

    def bulk_complete(self) -> int:
        """Complete every past confirmed booking as the service role, as the cron does."""
        with connect(self.dsn, autocommit=False, purpose="cron") as conn:
            conn.execute(query("driver_role_service"))
            row = conn.execute(query("complete_past")).fetchone()
            conn.commit()
            assert row is not None
            return int(row["completed"])

    def queue_depth(self) -> int:
        """Messages still in the queue, visible or in flight."""
        row = self.conn.execute(query("driver_queue_depth")).fetchone()
        assert row is not None
        return int(row["n"])

    def drain(self, *, timeout: float = 30.0, listener_running: bool | None = None) -> None:
        """Wait until the queue is empty; with no listener running, run one until it is."""
        if listener_running is None:
            listener_running = _has_live_listener(self.conn)
        if not listener_running:
            Worker(Settings(dsn=SecretStr(self.dsn), poll_interval_s=0.05)).run(drain=True)
        deadline = time.monotonic() + timeout
        while self.queue_depth():
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue not drained within {timeout}s ({self.queue_depth()} left)")
            time.sleep(0.02)

    def sessions_used(self, pack: uuid.UUID) -> int:
        """A pack's sessions_used."""
        row = self.conn.execute(query("pack_sessions_used"), [pack]).fetchone()
        assert row is not None
        return int(row["sessions_used"])

    def ledger_row(self, booking: uuid.UUID) -> dict[str, Any] | None:
        """The booking's ledger row, or None."""
        return self.conn.execute(query("ledger_row"), [booking]).fetchone()


def _has_live_listener(conn: Conn) -> bool:
    row = conn.execute(query("driver_live_listener")).fetchone()
    return bool(row and row["live"])


class ListenerThread:
    """A listener running in a background thread of the test process."""

    def __init__(self, dsn: str, **settings: Any) -> None:
        self.worker = Worker(Settings(dsn=SecretStr(dsn), **{"poll_interval_s": 0.2, **settings}))
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ledger-listener", daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> ListenerThread:
        """Start the thread and wait until the listener has registered."""
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.worker.ready and self.error is None:
            if time.monotonic() > deadline:
                raise TimeoutError("listener did not become ready")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop the listener and re-raise anything it died of."""
        self.worker.request_stop()
        self._thread.join(timeout=15)
        if self.error is not None:
            raise self.error
