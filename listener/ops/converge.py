"""Converging bookings from operator commands, through apply_bookings: the path live events take.

A dry run takes the same path in a transaction it rolls back, so a dry run can never
disagree with a real one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from listener.core.db import Conn
from listener.core.sql_files import query


@dataclass(frozen=True)
class Converged:
    """What converging one booking did (or would do)."""

    booking_id: uuid.UUID
    outcome: str
    purchase_id: uuid.UUID | None
    previous_purchase_id: uuid.UUID | None
    reason: str | None


def converge(conn: Conn, booking_ids: Sequence[uuid.UUID], *, dry_run: bool) -> list[Converged]:
    """Converge these bookings now, committing unless dry_run (then everything is rolled back)."""
    now = datetime.now(UTC)
    with conn.transaction(force_rollback=dry_run):
        rows = conn.execute(
            query("apply_bookings"),
            {"booking_ids": list(booking_ids), "enqueued_at": [now] * len(booking_ids)},
        ).fetchall()
    return [
        Converged(r["booking_id"], r["outcome"], r["purchase_id"], r["previous_purchase_id"], r["reason"])
        for r in rows
    ]
