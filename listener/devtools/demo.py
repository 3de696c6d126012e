"""`listener demo`'s story on an embedded PostgreSQL: what it did to each booking and pack, as data.

The command (listener/cli/commands/dev.py) shows the result as tables.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from listener.core.db import Conn
from listener.core.sql_files import query
from listener.devtools import demo_data
from listener.devtools.driver import Ledger, ListenerThread
from listener.devtools.embedded import embedded_server
from listener.devtools.throwaway import create_database
from listener.ops.migrate import migrate

# Brackets each step of the story, named for whoever watches it (a spinner in the terminal).
Step = Callable[[str], AbstractContextManager[object]]


@dataclass(frozen=True)
class DemoBooking:
    """One of the story's bookings after it: when, whose pack, who completed it, and what the ledger says."""

    session_at: str
    pack: str
    completed_by: str
    status: str
    ledger: str | None
    why: str


@dataclass(frozen=True)
class DemoPack:
    """One of the story's packs: sessions used before and after, of how many."""

    name: str
    before: int
    after: int
    total: int | None


@dataclass(frozen=True)
class DemoResult:
    """What the story did: the cron's one UPDATE, the events the listener handled, each booking and pack."""

    dsn: str
    completed: int
    handled: int
    bookings: list[DemoBooking]
    packs: list[DemoPack]


def _unwatched(_what: str) -> AbstractContextManager[object]:
    return nullcontext()


def run_demo(*, keep: bool = False, step: Step = _unwatched) -> DemoResult:
    """Start a private server, install everything, play browser and cron, and read back each booking and pack."""
    with step("starting an embedded PostgreSQL (no server or Docker needed)..."):
        server_cm = embedded_server(keep=keep)
        admin = server_cm.__enter__().dsn()
    try:
        with step("installing PGMQ, the ledger and the bookings trigger..."):
            dsn = create_database(admin, prefix="demo")
            migrate(dsn, with_demo_schema=True)
        return _story(dsn, step)
    finally:
        server_cm.__exit__(None, None, None)


def _story(dsn: str, step: Step) -> DemoResult:
    ledger = Ledger(dsn)
    conn = ledger.conn
    now = datetime.now().astimezone()
    org = demo_data.create_org(conn, "Northside Coaching")
    packs = {
        "Ana: 10-pack": demo_data.create_pack(conn, org, sessions_total=10, sessions_used=2),
        "Ben: 5-pack, expired yesterday": demo_data.create_pack(
            conn, org, sessions_total=5, sessions_used=1, expires_at=now - timedelta(days=1)
        ),
        "Cleo: 3-pack, one left": demo_data.create_pack(conn, org, sessions_total=3, sessions_used=2),
    }
    names = {v: k.split(":")[0] for k, v in packs.items()}
    ana, ben, cleo = packs.values()
    # Past sessions, still "confirmed": the trainer or the cron will complete them.
    plan = [
        (ana, 5, "browser"),
        (ana, 4, "browser"),
        (ana, 3, "cron"),
        (ana, 2, "cron"),
        (ben, 3, "cron"),  # held before the pack expired: charged even though processed after
        (ben, 0.5, "cron"),  # held after the pack expired: not charged
        (cleo, 3, "cron"),
        (cleo, 2, "cron"),  # only one session left: the second is unfunded
    ]
    bookings: list[tuple[uuid.UUID, uuid.UUID, str]] = []
    for pack, days_ago, path in plan:
        [b] = demo_data.create_bookings(conn, org, pack, start=now - timedelta(days=days_ago))
        bookings.append((b, pack, path))
    before = {p: demo_data.sessions_used(conn, p) for p in packs.values()}

    listener = ListenerThread(dsn, poll_interval_s=0.2).start()
    try:
        with step("the trainer's browser completes two sessions, one by one..."):
            for b, _, path in bookings:
                if path == "browser":
                    ledger.complete_as_user(b, org.trainer_user_id)
            ledger.drain(listener_running=True)
        with step("the cron job completes every past session in one UPDATE..."):
            completed = ledger.bulk_complete()
            ledger.drain(listener_running=True)
        cancelled = bookings[1][0]
        with step("the trainer cancels a completed session..."):
            conn.execute(query("demo_cancel_booking"), [cancelled])
            ledger.drain(listener_running=True)
    finally:
        listener.stop()

    result = DemoResult(
        dsn=dsn,
        completed=completed,
        handled=sum(listener.worker.stats.outcomes.values()),
        bookings=_bookings(conn, bookings, names, cancelled),
        packs=_packs(conn, packs, before),
    )
    ledger.close()
    return result


def _bookings(
    conn: Conn,
    bookings: list[tuple[uuid.UUID, uuid.UUID, str]],
    names: dict[uuid.UUID, str],
    cancelled: uuid.UUID,
) -> list[DemoBooking]:
    rows = []
    for b, pack, path in bookings:
        row = conn.execute(
            query("demo_booking_row"),
            [b],
        ).fetchone()
        assert row is not None
        why = row["reason"] or ("session given back" if b == cancelled else "")
        rows.append(DemoBooking(row["at"], names[pack], path, row["status"], row["state"], why))
    return rows


def _packs(conn: Conn, packs: dict[str, uuid.UUID], before: dict[uuid.UUID, int]) -> list[DemoPack]:
    rows = []
    for name, pack in packs.items():
        row = conn.execute(query("demo_pack_balance"), [pack]).fetchone()
        assert row is not None
        rows.append(DemoPack(name, before[pack], row["sessions_used"], row["sessions_total"]))
    return rows
