"""`listener cutover`: from this instant the listener charges, and the app's old code no longer does.

Events enqueued before the cut-over record what the app's old code already did to
the balance, without charging or releasing again (``session_ledger.config.adopt_until``,
honoured by ``apply_bookings``). The command also settles, under a lock on
``bookings``, every booking whose events all came before the cut-over: its ledger
row is set to the booking's state at this moment and its events are archived. A
booking the new code changes after the cut-over but before the listener catches up
is then charged or released for that change alone. The packs of the settled
bookings get their given-away count recorded (``session_ledger.record_given_away``).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from listener.core.db import connect
from listener.core.schema import require_ledger
from listener.core.sql_files import query
from listener.ops.guards import refuse_while_listener_runs


@dataclass
class CutoverReport:
    """What a cut-over set and settled."""

    adopt_until: datetime
    settled_bookings: int = 0
    archived_events: int = 0
    straddling: list[uuid.UUID] = field(default_factory=list)


def cutover(dsn: str, at: datetime | None = None) -> CutoverReport:
    """Set the cut-over time and settle every booking whose events all came before it."""
    with connect(dsn, autocommit=True, purpose="cutover") as conn:
        require_ledger(conn, owner_action="set the cut-over")
        refuse_while_listener_runs(conn, action="cut over, and start it again afterwards")
        with conn.transaction():
            # Writers wait, so no event lands between the cut-over time and the settling.
            conn.execute(query("lock_bookings"))
            row = conn.execute(query("set_cutover"), {"at": at}).fetchone()
            assert row is not None
            report = CutoverReport(adopt_until=row["adopt_until"])
            queued = conn.execute(query("queued_bookings"), {"until": report.adopt_until}).fetchall()
            settled = [q for q in queued if q["all_before"]]
            report.straddling = [q["booking_id"] for q in queued if q["any_before"] and not q["all_before"]]
            if settled:
                # The old code moved the balance as each booking says: apply_bookings'
                # cut-over path records that and touches no pack.
                ids = [q["booking_id"] for q in settled]
                conn.execute(query("settle_before_cutover"), {"booking_ids": ids})
                # Of what it adopted as paid, the old code may never have charged some:
                # their packs' given-away counts say how many, so a cancel cannot give them back.
                conn.execute(query("record_given_away_after_cutover"), {"booking_ids": ids})
                msg_ids = [m for q in settled for m in q["msg_ids"]]
                conn.execute(query("archive_events"), {"msg_ids": msg_ids})
                report.settled_bookings = len(settled)
                report.archived_events = len(msg_ids)
    return report


def mark_app_deployed(dsn: str, at: datetime | None = None) -> datetime:
    """Record when the new app was deployed (default: now); returns the time recorded."""
    with connect(dsn, autocommit=True, purpose="app-deployed") as conn:
        require_ledger(conn, owner_action="record the app's deployment")
        row = conn.execute(query("mark_app_deployed"), {"at": at}).fetchone()
        assert row is not None
        deployed: datetime = row["app_deployed_at"]
        return deployed
