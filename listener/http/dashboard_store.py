"""Every statement the dashboard runs: reads and the two actions, through session_ledger.dashboard_* functions."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from listener.core.sql_files import query
from listener.http.snapshot import Snapshot

# Rows per table on the page: enough to act on, bounded so a flood of dead letters cannot make it huge.
ROWS = 50
LAG_MINUTES = 60
# The most dead letters one redrive confirm step shows (dashboard_dead_letters_by_id's own bound).
MAX_REDRIVE = 1000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_CURSOR = re.compile(
    r"^(?P<micros>-?\d{1,18})_(?P<booking>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$"
)


@dataclass(frozen=True)
class Cursor:
    """Where a page of recent ledger changes ended: its last row's updated_at and booking."""

    updated_at: datetime
    booking_id: uuid.UUID

    def token(self) -> str:
        """The cursor as a URL-safe `?before=` value; exact to the microsecond, as timestamptz is."""
        return f"{(self.updated_at - _EPOCH) // _MICROSECOND}_{self.booking_id}"


def parse_cursor(text: str) -> Cursor | None:
    """The cursor an "older" link carries; None when `text` is not one."""
    match = _CURSOR.match(text.strip().lower())
    if match is None:
        return None
    try:
        at = _EPOCH + timedelta(microseconds=int(match["micros"]))
    except OverflowError:
        return None
    return Cursor(at, uuid.UUID(match["booking"]))


@dataclass
class DashboardData:
    """What the page shows, read in one go."""

    status: dict[str, Any] | None
    lag: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    unfunded: list[dict[str, Any]] = field(default_factory=list)
    out_of_sync: list[dict[str, Any]] = field(default_factory=list)
    recent: list[dict[str, Any]] = field(default_factory=list)
    absorbed: list[dict[str, Any]] = field(default_factory=list)
    # Paging of `recent`: the cursor this page starts after (None: the newest page), and
    # the one its "older" link carries (None: this is the oldest page).
    before: Cursor | None = None
    older: Cursor | None = None


def read_dashboard(snapshot: Snapshot, *, before: Cursor | None = None) -> DashboardData:
    """Read the page's data on the shared connection, recent changes from `before` on; raises DatabaseUnreachable when it cannot."""
    # Read now, so the cards agree with the tables read just after them.
    status = snapshot.status_now()

    def rows(sql: str, **params: Any) -> list[dict[str, Any]]:
        return snapshot.call(lambda c: c.execute(sql, params).fetchall())

    # One row more than a page says whether an older page exists.
    recent = rows(
        query("dashboard_recent_changes"),
        limit=ROWS + 1,
        before_at=before.updated_at if before else None,
        before_booking=before.booking_id if before else None,
    )
    older = None
    if len(recent) > ROWS:
        recent = recent[:ROWS]
        older = Cursor(recent[-1]["updated_at"], recent[-1]["booking_id"])
    return DashboardData(
        status=status,
        lag=rows(query("dashboard_lag"), minutes=LAG_MINUTES),
        dead_letters=rows(query("dashboard_dead_letters"), limit=ROWS),
        unfunded=rows(query("dashboard_unfunded"), limit=ROWS),
        out_of_sync=rows(query("dashboard_out_of_sync"), limit=ROWS),
        recent=recent,
        absorbed=rows(query("dashboard_absorbed_calls"), limit=ROWS),
        before=before,
        older=older,
    )


def dead_letters_by_id(snapshot: Snapshot, ids: list[int]) -> list[dict[str, Any]]:
    """The dead letters among `ids` that are still in the dead-letter queue, however old."""
    wanted = _msg_ids(ids)[:MAX_REDRIVE]
    if not wanted:
        return []
    return snapshot.call(
        lambda c: c.execute(query("dashboard_dead_letters_by_id"), {"msg_ids": wanted}).fetchall()
    )


def redrive(snapshot: Snapshot, ids: list[int]) -> int:
    """Move these dead letters back onto the queue; how many moved."""
    wanted = _msg_ids(ids)
    if not wanted:
        return 0
    row = snapshot.call(lambda c: c.execute(query("dashboard_redrive"), {"msg_ids": wanted}).fetchone())
    return int(row["moved"]) if row else 0


def replay(snapshot: Snapshot, booking: uuid.UUID) -> int:
    """Enqueue one booking again; how many events were sent."""
    row = snapshot.call(lambda c: c.execute(query("dashboard_replay"), {"booking_id": booking}).fetchone())
    return int(row["enqueued"]) if row else 0


def _msg_ids(ids: list[int]) -> list[int]:
    """The distinct ids a queue message can have (a positive bigint), in order; others name no dead letter."""
    return sorted({i for i in ids if 0 < i < 2**63})
