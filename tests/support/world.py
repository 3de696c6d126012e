"""A test database with an organisation, and the CLI run as a subprocess of the installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass

from listener.core.db import Conn
from listener.devtools import demo_data
from listener.testing.ledger import Ledger

# `python -P -m listener`: -P keeps the working directory (the checkout) off sys.path, so the
# subprocess runs the installed package, as the suite does.
LISTENER = (sys.executable, "-P", "-m", "listener")


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


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `python -P -m listener ...` and capture its output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*LISTENER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )
