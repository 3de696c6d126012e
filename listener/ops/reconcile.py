"""`listener reconcile`: find bookings whose ledger disagrees with their row, and repair them.

Triggers can be bypassed (restores and logical replication run with
session_replication_role = replica, a trigger gets disabled, queue rows get purged).
Repairs (and dry runs, rolled back) go through apply_bookings(), the function live events use, never through a
direct write of sessions_used. Adjustments made outside bookings (the trainer's
"use 1 session" and "reinstate") are not bookings, so they are left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from listener.core.db import connect
from listener.core.schema import require_ledger
from listener.ops.converge import Converged, converge
from listener.ops.pack_changes import PackChanges, summarise
from listener.ops.walk import Progress, chunks, count_rows, no_progress, stream

# Bookings a run lists one by one (text and JSON); the rest are counted.
BOOKINGS_SHOWN = 50


@dataclass
class ReconcileReport:
    """What a reconcile run found and changed."""

    dry_run: bool
    out_of_sync: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    packs: list[dict[str, Any]] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    # The out-of-sync bookings in the order found, each with what converging it does; at most BOOKINGS_SHOWN.
    bookings: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The machine-readable summary."""
        return {
            "dry_run": self.dry_run,
            "out_of_sync": self.out_of_sync,
            "outcomes": self.outcomes,
            "packs": self.packs,
            "examples": self.examples,
            "bookings": self.bookings,
        }


def reconcile(dsn: str, *, dry_run: bool = False, progress: Progress = no_progress) -> ReconcileReport:
    """Converge every out-of-sync booking, streaming the bookings table in chunks."""
    report = ReconcileReport(dry_run=dry_run)
    changes = PackChanges()
    seen: list[str] = []
    with (
        connect(dsn, purpose="reconcile") as conn,
        connect(dsn, autocommit=False, purpose="reconcile") as reader,
    ):
        require_ledger(conn, owner_action="read or repair the ledger")
        total = count_rows(conn, "out_of_sync_count", {})
        what = "checking" if dry_run else "repairing"
        progress(what, 0, total)
        for chunk in chunks(stream(reader, "out_of_sync_bookings", {})):
            # Each chunk commits on its own: an interrupted run keeps what it repaired.
            for r in converge(conn, chunk, dry_run=dry_run):
                seen.append(r.outcome)
                changes.add(r.outcome, r.purchase_id, r.previous_purchase_id)
                if len(report.examples) < 20 and r.outcome != "no-op":
                    report.examples.append(_example(r))
                if len(report.bookings) < BOOKINGS_SHOWN:
                    report.bookings.append(_example(r))
            report.out_of_sync += len(chunk)
            progress(what, report.out_of_sync, total)
    report.outcomes = summarise(seen)
    report.packs = changes.as_json()
    return report


def _example(r: Converged) -> dict[str, Any]:
    return {
        "booking_id": str(r.booking_id),
        "action": r.outcome,
        "purchase_id": str(r.purchase_id) if r.purchase_id else None,
        "previous_purchase_id": str(r.previous_purchase_id) if r.previous_purchase_id else None,
        "detail": r.reason,
    }
