"""`listener cutover`: from this instant the listener charges, and the app's old code no longer does.

Events enqueued before the cut-over record what the app's old code already did to
the balance, without charging or releasing again (``session_ledger.config.adopt_until``,
honoured by ``apply_bookings``). The command also settles, under a lock on
``bookings``, every booking whose events all came before the cut-over: its ledger
row is set to the booking's state at this moment and its events are archived. A
booking the new code changes after the cut-over but before the listener catches up
is then charged or released for that change alone.
"""

from __future__ import annotations

import argparse
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from listener.core.db import Conn, connect
from listener.errors import ListenerError, SchemaOutOfDate
from listener.ops.uninstall import live_listeners

_UUID = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"

# Messages that are not a well-formed booking event are left to the listener,
# which dead-letters them with a reason.
_QUEUED = f"""
SELECT (q.message ->> 'booking_id')::uuid AS booking_id,
       bool_and(q.enqueued_at < %(until)s) AS all_before,
       bool_or(q.enqueued_at < %(until)s) AS any_before,
       array_agg(q.msg_id ORDER BY q.msg_id) AS msg_ids
FROM pgmq.q_booking_events q
WHERE jsonb_typeof(q.message) = 'object'
  AND q.message ->> 'type' = 'booking.changed'
  AND coalesce(q.message ->> 'booking_id', '') ~* '{_UUID}'
GROUP BY 1
ORDER BY 1
"""

# The old code moved the balance as the booking says: record that, touch no pack.
_SETTLE = """
INSERT INTO session_ledger.charges AS l (booking_id, purchase_id, state, reason, source, updated_at)
SELECT s.id, coalesce(s.want, s.l_pack), CASE WHEN s.want IS NOT NULL THEN 'paid' ELSE 'released' END,
       NULL, 'cut-over', clock_timestamp()
FROM (
    SELECT i.id,
           CASE WHEN b.status = ANY (c.consuming_statuses) THEN b.purchase_id END AS want,
           l.state AS l_state,
           l.purchase_id AS l_pack
    FROM unnest(%(ids)s::uuid[]) AS i(id)
    CROSS JOIN session_ledger.config c
    LEFT JOIN public.bookings b ON b.id = i.id
    LEFT JOIN session_ledger.charges l ON l.booking_id = i.id
) AS s
WHERE s.want IS NOT NULL OR s.l_state IN ('paid', 'unfunded')
ON CONFLICT (booking_id) DO UPDATE
   SET purchase_id = excluded.purchase_id, state = excluded.state, reason = NULL,
       source = excluded.source, updated_at = excluded.updated_at
"""


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
        _require_ledger(conn)
        running = live_listeners(conn)
        if running:
            where = ", ".join(f"{r['host']} pid {r['pid']}" for r in running)
            raise ListenerError(
                f"a listener is running ({where}): cut over with the listener stopped, then start it"
            )
        with conn.transaction():
            # Writers wait, so no event lands between the cut-over time and the settling.
            conn.execute("LOCK TABLE public.bookings IN SHARE ROW EXCLUSIVE MODE")
            row = conn.execute(
                "UPDATE session_ledger.config SET adopt_until = coalesce(%s, clock_timestamp()) RETURNING adopt_until",
                [at],
            ).fetchone()
            assert row is not None
            report = CutoverReport(adopt_until=row["adopt_until"])
            queued = conn.execute(_QUEUED, {"until": report.adopt_until}).fetchall()
            settled = [q for q in queued if q["all_before"]]
            report.straddling = [q["booking_id"] for q in queued if q["any_before"] and not q["all_before"]]
            if settled:
                conn.execute(_SETTLE, {"ids": [q["booking_id"] for q in settled]})
                msg_ids = [m for q in settled for m in q["msg_ids"]]
                conn.execute("SELECT pgmq.archive('booking_events', %s::bigint[])", [msg_ids])
                report.settled_bookings = len(settled)
                report.archived_events = len(msg_ids)
    return report


def _require_ledger(conn: Conn) -> None:
    row = conn.execute("SELECT to_regclass('session_ledger.config') IS NOT NULL AS present").fetchone()
    if not (row and row["present"]):
        raise SchemaOutOfDate("the database has no session ledger: run `listener migrate` first")


def cutover_command(args: argparse.Namespace, settings: Any) -> int:
    """The `listener cutover` command."""
    report = cutover(settings.require_dsn(), args.at)
    print(
        f"cut-over at {report.adopt_until.isoformat()}: events enqueued before it record what the "
        "app's old code did, without charging or releasing again"
    )
    if report.archived_events:
        print(
            f"settled {report.settled_bookings} booking(s) from {report.archived_events} waiting event(s) "
            "as the old code left them (ledger source 'cut-over'; no balance changed)"
        )
    if report.straddling:
        shown = ", ".join(str(b) for b in report.straddling[:10])
        more = f" and {len(report.straddling) - 10} more" if len(report.straddling) > 10 else ""
        print(
            f"check by hand: {len(report.straddling)} booking(s) changed both before and after the "
            f"cut-over time, and the listener will record them without charging: {shown}{more}"
        )
    print("next: start the listener (`listener run`)")
    return 0
