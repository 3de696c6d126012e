"""The core path's acceptance run, end to end on a database shaped like the app's, with history."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from psycopg import errors

from listener.core.db import connect
from listener.core.sql_files import demo_schema
from listener.devtools import demo_data
from listener.devtools.throwaway import create_database, drop_database
from listener.ops.migrate import migrate
from listener.testing.checker import check, snapshot_used
from listener.testing.ledger import Ledger

from support.world import LISTENER


@pytest.fixture
def app_dsn(ledger_server: str) -> Iterator[str]:
    dsn = create_database(ledger_server, prefix="ledger_app")
    yield dsn
    drop_database(ledger_server, dsn)


def _charging(ledger: Ledger, pid: int) -> bool:
    """Whether the listener process `pid` has registered and some listener has charged a booking."""
    row = ledger.conn.execute(
        "SELECT bool_or(pid = %s) AS registered, coalesce(sum(paid), 0) AS paid FROM session_ledger.listeners",
        [pid],
    ).fetchone()
    return row is not None and bool(row["registered"]) and row["paid"] > 0


def test_history_rls_roles_racing_writers_and_a_killed_listener(app_dsn: str) -> None:
    # The app as it runs today: RLS, Supabase's roles, and bookings the old code already charged.
    with connect(app_dsn) as conn:
        conn.execute(demo_schema())
        org = demo_data.create_org(conn, "Studio")
        packs = [demo_data.create_pack(conn, org, sessions_total=400) for _ in range(3)]
        for p in packs:
            demo_data.create_bookings(conn, org, p, count=20, status="completed")
        for p in packs:
            conn.execute("UPDATE public.client_purchases SET sessions_used = 20 + 3 WHERE id = %s", [p])
        before_install = snapshot_used(conn)
        fresh = [b for p in packs for b in demo_data.create_bookings(conn, org, p, count=100)]

    migrate(app_dsn)
    ledger = Ledger(app_dsn)
    assert snapshot_used(ledger.conn) == before_install  # installing changes no balance
    start = {p: used - 20 for p, used in before_install.items()}  # history is charged in the ledger

    args = [
        *LISTENER,
        "run",
        "--dsn",
        app_dsn,
        "--batch-size",
        "25",
        "--visibility-timeout",
        "2",
        "--poll-interval",
        "0.2",
    ]
    listeners = [subprocess.Popen(args, stderr=subprocess.DEVNULL) for _ in range(2)]
    try:

        def browser() -> None:
            for b in random.sample(fresh, len(fresh)):
                ledger.complete_as_user(b, org.trainer_user_id)

        writers = [threading.Thread(target=browser) for _ in range(2)]
        for w in writers:
            w.start()
        # Mid-run: it has registered, and the listeners are charging the browsers' completions.
        deadline = time.monotonic() + 60
        while not _charging(ledger, listeners[0].pid):
            assert time.monotonic() < deadline, "the listeners never started charging"
            time.sleep(0.02)
        listeners[0].send_signal(signal.SIGKILL)  # one of two listeners dies mid-run
        listeners[0].wait()
        ledger.bulk_complete()  # the cron, as service_role, racing the browsers
        listeners[0] = subprocess.Popen(args, stderr=subprocess.DEVNULL)
        for w in writers:
            w.join()
        ledger.drain(listener_running=True, timeout=60)
    finally:
        for proc in listeners:
            proc.send_signal(signal.SIGTERM)
        for proc in listeners:
            proc.wait(timeout=60)

    verdict = check(ledger.conn, start)
    assert verdict.ok, verdict.examples
    for p in packs:
        completed = ledger.conn.execute(
            "SELECT count(*) AS n FROM public.bookings WHERE purchase_id = %s AND status = 'completed'", [p]
        ).fetchone()
        assert completed is not None
        assert ledger.sessions_used(p) == before_install[p] + completed["n"] - 20

    # anon cannot execute use_session; nobody on the API side can read the queue.
    with connect(app_dsn, autocommit=False) as conn:
        for role, sql in (
            ("anon", f"SELECT public.use_session('{packs[0]}')"),
            ("anon", "SELECT * FROM pgmq.q_booking_events"),
            ("authenticated", "SELECT * FROM pgmq.q_booking_events"),
            ("service_role", "SELECT * FROM pgmq.a_booking_events"),
        ):
            conn.execute(f"SET LOCAL ROLE {role}")
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(sql)
            conn.rollback()
    ledger.close()
