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
            conn.execute("SET LOCAL ROLE authenticated")
            conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", [str(user_id)])
            cur = conn.execute("UPDATE public.bookings SET status = %s WHERE id = %s", [status, booking_id])
            conn.commit()
            return cur.rowcount

    def bulk_complete(self) -> int:
        """Complete every past confirmed booking as the service role, as the cron does."""
        with connect(self.dsn, autocommit=False, purpose="cron") as conn:
            conn.execute("SET LOCAL ROLE service_role")
            row = conn.execute("SELECT session_ledger.complete_past_bookings() AS n").fetchone()
            conn.commit()
            assert row is not None
            return int(row["n"])

    def queue_depth(self) -> int:
        """Messages still in the queue, visible or in flight."""
        row = self.conn.execute("SELECT queue_depth AS n FROM session_ledger.queue_depths()").fetchone()
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
        row = self.conn.execute(
            "SELECT sessions_used FROM public.client_purchases WHERE id = %s", [pack]
        ).fetchone()
        assert row is not None
        return int(row["sessions_used"])

    def ledger_row(self, booking: uuid.UUID) -> dict[str, Any] | None:
        """The booking's ledger row, or None."""
        return self.conn.execute(
            "SELECT * FROM session_ledger.charges WHERE booking_id = %s", [booking]
        ).fetchone()


def _has_live_listener(conn: Conn) -> bool:
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM session_ledger.live_listeners) AS live").fetchone()
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
