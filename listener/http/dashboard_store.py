"""Every statement the dashboard runs: reads and the two actions, through session_ledger.dashboard_* functions."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from listener.core.sql_files import query
from listener.http.snapshot import Snapshot

# Rows per table on the page: enough to act on, bounded so a flood of dead letters cannot make it huge.
ROWS = 50
LAG_MINUTES = 60


@dataclass
class DashboardData:
    """What the page shows, read in one go."""

    status: dict[str, Any] | None
    lag: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    unfunded: list[dict[str, Any]] = field(default_factory=list)
    out_of_sync: list[dict[str, Any]] = field(default_factory=list)
    recent: list[dict[str, Any]] = field(default_factory=list)


def read_dashboard(snapshot: Snapshot) -> DashboardData:
    """Read the page's data on the shared connection; raises DatabaseUnreachable when it cannot."""
    status = snapshot.status(max_age_s=1.0)

    def rows(name: str, **params: Any) -> list[dict[str, Any]]:
        return snapshot.call(lambda c: c.execute(query(name), params).fetchall())

    return DashboardData(
        status=status,
        lag=rows("dashboard_lag", minutes=LAG_MINUTES),
        dead_letters=rows("dashboard_dead_letters", limit=ROWS),
        unfunded=rows("dashboard_unfunded", limit=ROWS),
        out_of_sync=rows("dashboard_out_of_sync", limit=ROWS),
        recent=rows("dashboard_recent_charges", limit=ROWS),
    )


def dead_letters_by_id(snapshot: Snapshot, ids: list[int]) -> list[dict[str, Any]]:
    """The dead letters among `ids` that are still in the dead-letter queue."""
    wanted = set(ids)
    letters = snapshot.call(lambda c: c.execute(query("dashboard_dead_letters"), {"limit": 1000}).fetchall())
    return [d for d in letters if d["msg_id"] in wanted]


def redrive(snapshot: Snapshot, ids: list[int]) -> int:
    """Move these dead letters back onto the queue; how many moved."""
    row = snapshot.call(lambda c: c.execute(query("dashboard_redrive"), {"msg_ids": ids}).fetchone())
    return int(row["moved"]) if row else 0


def replay(snapshot: Snapshot, booking: uuid.UUID) -> int:
    """Enqueue one booking again; how many events were sent."""
    row = snapshot.call(lambda c: c.execute(query("dashboard_replay"), {"booking_id": booking}).fetchone())
    return int(row["enqueued"]) if row else 0
