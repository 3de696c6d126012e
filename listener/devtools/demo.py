"""`listener demo`: the whole story on an embedded PostgreSQL, printed as tables."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from rich.console import Console
from rich.table import Table

from listener.core.db import Conn
from listener.core.sql_files import query
from listener.devtools import demo_data
from listener.devtools.driver import Ledger, ListenerThread
from listener.devtools.embedded import embedded_server
from listener.devtools.throwaway import create_database
from listener.ops.migrate import migrate


def run_demo(*, keep: bool = False, console: Console | None = None) -> None:
    """Start a private server, install everything, play browser and cron, and show each pack's balance."""
    console = console or Console()
    logging.getLogger("listener").setLevel(logging.WARNING)
    with console.status("starting an embedded PostgreSQL (no server or Docker needed)..."):
        server_cm = embedded_server(keep=keep)
        admin = server_cm.__enter__().dsn()
    try:
        with console.status("installing PGMQ, the ledger and the bookings trigger..."):
            dsn = create_database(admin, prefix="demo")
            migrate(dsn, with_demo_schema=True)
        _story(dsn, console)
        if keep:
            console.print(f'data directory kept and server left running; connect with: psql "{dsn}"')
    finally:
        server_cm.__exit__(None, None, None)


def _story(dsn: str, console: Console) -> None:
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
        with console.status("the trainer's browser completes two sessions, one by one..."):
            for b, _, path in bookings:
                if path == "browser":
                    ledger.complete_as_user(b, org.trainer_user_id)
            ledger.drain(listener_running=True)
        with console.status("the cron job completes every past session in one UPDATE..."):
            completed = ledger.bulk_complete()
            ledger.drain(listener_running=True)
        cancelled = bookings[1][0]
        with console.status("the trainer cancels a completed session..."):
            conn.execute(query("demo_cancel_booking"), [cancelled])
            ledger.drain(listener_running=True)
    finally:
        listener.stop()

    console.print(
        f"cron completed {completed} bookings in one statement; "
        f"the listener handled {sum(listener.worker.stats.outcomes.values())} events\n"
    )
    _print_bookings(console, conn, bookings, names, cancelled)
    _print_packs(console, conn, packs, before)
    ledger.close()


def _print_bookings(
    console: Console,
    conn: Conn,
    bookings: list[tuple[uuid.UUID, uuid.UUID, str]],
    names: dict[uuid.UUID, str],
    cancelled: uuid.UUID,
) -> None:
    table = Table(title="bookings")
    for col in ("session", "pack", "completed by", "status", "ledger", "why"):
        table.add_column(col)
    for b, pack, path in bookings:
        row = conn.execute(
            query("demo_booking_row"),
            [b],
        ).fetchone()
        assert row is not None
        why = row["reason"] or ("session given back" if b == cancelled else "")
        table.add_row(row["at"], names[pack], path, row["status"], row["state"] or "-", why)
    console.print(table)


def _print_packs(
    console: Console, conn: Conn, packs: dict[str, uuid.UUID], before: dict[uuid.UUID, int]
) -> None:
    table = Table(title="packs: sessions used")
    for col in ("pack", "before", "after", "total"):
        table.add_column(col, justify="right" if col != "pack" else "left")
    for name, pack in packs.items():
        row = conn.execute(query("demo_pack_balance"), [pack]).fetchone()
        assert row is not None
        table.add_row(name, str(before[pack]), str(row["sessions_used"]), str(row["sessions_total"]))
    console.print(table)
