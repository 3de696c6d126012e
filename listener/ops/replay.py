"""`listener replay`: archived events back onto the queue, or dead letters after their cause is fixed.

Replaying is safe by construction: the handler converges each booking to its current
row, so a replayed event can repair a ledger but never charge a booking twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from listener.core.db import Conn, connect
from listener.core.schema import require_ledger
from listener.core.sql_files import query
from listener.errors import ConfigError, NothingMatched
from listener.ops.converge import converge
from listener.ops.pack_changes import PackChanges, summarise
from listener.ops.walk import Progress, chunks, count_rows, no_progress, stream


@dataclass
class ReplayReport:
    """What a replay run found and did."""

    dry_run: bool
    bookings: int = 0
    enqueued: int = 0
    actions: dict[str, int] = field(default_factory=dict)
    packs: list[dict[str, Any]] = field(default_factory=list)
    # The first bookings whose replay moves a session: what it does, and who caused the archived event.
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The machine-readable summary."""
        return {
            "dry_run": self.dry_run,
            "bookings": self.bookings,
            "enqueued": self.enqueued,
            "actions": self.actions,
            "packs": self.packs,
            "examples": self.examples,
        }


def replay_archive(
    dsn: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    bookings: Sequence[uuid.UUID] = (),
    dry_run: bool = False,
    progress: Progress = no_progress,
) -> ReplayReport:
    """Enqueue one event per booking found in the archive within the filters."""
    if since is not None and until is not None and since >= until:
        raise ConfigError("--since must be earlier than --until: the filters select nothing")
    params = {
        "since": since,
        "until": until,
        "bookings": [str(b) for b in bookings] or None,
    }
    report = ReplayReport(dry_run=dry_run)
    changes = PackChanges()
    actions: list[str] = []
    with connect(dsn, purpose="replay") as conn, connect(dsn, autocommit=False, purpose="replay") as reader:
        require_ledger(conn, owner_action="read the queue's archive")
        total = count_rows(conn, "archived_bookings_count", params)
        if bookings:
            found = {str(r["booking_id"]) for r in reader.execute(query("archived_bookings"), params)}
            reader.rollback()
            unknown = [str(b) for b in bookings if str(b) not in found]
            if unknown:
                raise NothingMatched(
                    "no archived events for booking(s) " + ", ".join(unknown) + "; nothing was replayed"
                )
        what = "planning" if dry_run else "replaying"
        progress(what, 0, total)
        for chunk in chunks(stream(reader, "archived_bookings", params)):
            # What converging them does now, found by doing it and rolling it back.
            for r in converge(conn, chunk, dry_run=True):
                actions.append(r.outcome)
                changes.add(r.outcome, r.purchase_id, r.previous_purchase_id)
                if len(report.examples) < EXAMPLES and r.outcome != "no-op":
                    report.examples.append(
                        _example(r.booking_id, r.outcome, r.purchase_id, r.previous_purchase_id)
                    )
            if not dry_run:
                row = conn.execute(
                    query("enqueue_bookings"), {"booking_ids": chunk, "source": "replay"}
                ).fetchone()
                report.enqueued += int(row["enqueued"]) if row else 0
            report.bookings += len(chunk)
            progress(what, report.bookings, total)
        _add_causes(conn, report.examples)
    report.actions = summarise(actions)
    report.packs = changes.as_json()
    return report


# How many of the bookings a replay would move are named, with who caused them.
EXAMPLES = 20


def _example(booking: object, action: str, pack: object, previous: object) -> dict[str, Any]:
    return {
        "booking_id": str(booking),
        "action": action,
        "purchase_id": str(pack) if pack else None,
        "previous_purchase_id": str(previous) if previous else None,
        "caused_by": None,
    }


def _add_causes(conn: Conn, examples: list[dict[str, Any]]) -> None:
    """Who caused each example's latest archived event (role, signed-in user, trace), when it says."""
    if not examples:
        return
    rows = conn.execute(
        query("archived_causes"), {"bookings": [e["booking_id"] for e in examples]}
    ).fetchall()
    causes = {str(r["booking_id"]): r["caused_by"] for r in rows}
    for e in examples:
        e["caused_by"] = causes.get(e["booking_id"])


@dataclass
class RedriveReport:
    """What a dead-letter redrive found and did."""

    dry_run: bool
    letters: list[dict[str, Any]] = field(default_factory=list)
    moved: int = 0

    def as_json(self) -> dict[str, Any]:
        """The machine-readable summary."""
        return {"dry_run": self.dry_run, "moved": self.moved, "dead_letters": self.letters}


def read_dead_letters(
    conn: Conn, ids: Sequence[int], *, undone: str
) -> tuple[set[int], list[dict[str, Any]]]:
    """The dead letters named (all of them when none is), each with its reason and a preview; an id that
    names none is refused, saying what was not done."""
    rows = conn.execute(query("dead_letters"), {"ids": list(ids) or None}).fetchall()
    found = {r["msg_id"] for r in rows}
    unknown = [i for i in ids if i not in found]
    if unknown:
        raise NothingMatched("no dead letter with id " + ", ".join(map(str, unknown)) + f"; {undone}")
    letters = [
        {
            "id": r["msg_id"],
            "dead_lettered_at": r["enqueued_at"].isoformat(),
            "reason": r["reason"],
            "source_msg_id": r["source_msg_id"],
            "preview": r["preview"],
            "size": r["size"],
        }
        for r in rows
    ]
    return found, letters


def redrive_dead_letters(
    dsn: str, *, ids: Sequence[int] = (), all_letters: bool = False, dry_run: bool = False
) -> RedriveReport:
    """Move chosen dead letters back to the queue; report each one's reason first."""
    if not ids and not all_letters:
        raise ConfigError("say which dead letters: --id N ... or --all")
    report = RedriveReport(dry_run=dry_run)
    with connect(dsn, purpose="redrive") as conn:
        require_ledger(conn, owner_action="read the dead letters")
        found, report.letters = read_dead_letters(conn, ids, undone="nothing was moved")
        if not dry_run:
            for chunk in chunks(iter(sorted(found))):
                row = conn.execute(query("redrive_dead_letters"), {"ids": chunk}).fetchone()
                report.moved += int(row["moved"]) if row else 0
    return report
