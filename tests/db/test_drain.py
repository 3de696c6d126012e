"""session_ledger.drain(): the in-database consumer pg_cron runs, beside or instead of the listener."""

from __future__ import annotations

import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from listener.core.db import connect
from listener.testing import app_data
from listener.testing.checker import check, snapshot_used
from listener.testing.ledger import Ledger, ListenerThread
from listener.testing.supabase import SupabaseAppDb

from support.world import World, run_cli


def _drain(dsn: str, limit: int = 10_000) -> int:
    with connect(dsn, purpose="tests") as conn:
        row = conn.execute("SELECT session_ledger.drain(%s) AS n", [limit]).fetchone()
    assert row is not None
    return int(row["n"])


def test_drain_handles_the_queue_through_the_listeners_path_and_leaves_a_trace(world: World) -> None:
    pack = world.pack(sessions_total=3)
    bookings = world.bookings(pack, count=5)
    start = snapshot_used(world.conn)
    for b in bookings:
        world.set_status(b, "completed")
    world.send_raw("'\"not an event\"'::jsonb")
    world.send_raw("jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', 'NOT-A-UUID')")

    assert _drain(world.ledger.dsn, limit=3) == 3, "stops at its limit"
    assert _drain(world.ledger.dsn) == 4, "then takes the rest"
    assert _drain(world.ledger.dsn) == 0

    assert world.used(pack) == 3  # earliest three paid, the pack is exhausted
    states = [world.ledger_state(b) for b in bookings]
    assert [s[0] for s in states if s] == ["paid"] * 3 + ["unfunded"] * 2
    reasons = [d["reason"] for d in world.dead_letters()]
    assert reasons == ["not a booking.changed v1 event naming a booking by its canonical uuid"] * 2
    assert check(world.conn, start).ok

    runs = world.conn.execute("SELECT handled, run_by FROM session_ledger.drain_runs ORDER BY id").fetchall()
    assert [r["handled"] for r in runs] == [3, 4, 0]
    status = run_cli("status", "--json", "--dsn", world.ledger.dsn)
    report = json.loads(status.stdout)
    assert report["drain"]["runs_last_hour"] == 3 and report["drain"]["handled_last_hour"] == 7
    assert report["drain"]["live"] is True
    # A recent drain counts as a consumer: with no listener at all, only the dead letters are a problem.
    assert report["problems"] == ["2 dead-lettered event(s)"]
    ignored = run_cli(
        "status", "--json", "--dsn", world.ledger.dsn, env={"LISTENER_DRAIN_COUNTS_AS_CONSUMER": "false"}
    )
    assert any("no live listener" in p for p in json.loads(ignored.stdout)["problems"])


def _waiting_drain_ran_past(dsn: str, seconds: float) -> bool:
    """Whether a drain() call waits on a lock and started more than `seconds` ago."""
    with connect(dsn, purpose="tests") as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = 'session-ledger tests drain' AND wait_event_type = 'Lock'"
            " AND clock_timestamp() - query_start > %s * interval '1 second'",
            [seconds],
        ).fetchone()
    return row is not None and row["n"] == 1


def test_drain_stops_at_half_the_statement_timeout_instead_of_being_cancelled(world: World) -> None:
    pack = world.pack(sessions_total=100_000)
    world.bookings(pack, count=20_000, status="completed")  # 20000 events from one INSERT
    timeout_s = 20
    dsn = world.ledger.dsn

    def drain_under_timeout(limit: int) -> int:
        with connect(dsn, purpose="tests drain") as conn:
            conn.execute(
                psycopg.sql.SQL("SET statement_timeout = {}").format(psycopg.sql.Literal(f"{timeout_s}s"))
            )
            row = conn.execute("SELECT session_ledger.drain(%s) AS n", [limit]).fetchone()
        assert row is not None
        return int(row["n"])

    with connect(dsn, autocommit=False, purpose="tests blocker") as blocker:
        # The pack locked: drain()'s first batch waits in hand until half the timeout has gone by,
        # however fast or slow this machine charges.
        blocker.execute("SELECT 1 FROM public.client_purchases WHERE id = %s FOR UPDATE", [pack])
        with ThreadPoolExecutor(max_workers=1) as pool:
            # A limit above the backlog: only the time budget can stop it short.
            first = pool.submit(drain_under_timeout, 20_000)
            deadline = time.monotonic() + timeout_s * 3
            while not _waiting_drain_ran_past(dsn, timeout_s / 2):
                assert not first.done(), first.result()
                assert time.monotonic() < deadline, "drain() never waited on the locked pack"
                time.sleep(0.05)
            blocker.rollback()
            handled = first.result(timeout=timeout_s * 3)
    # It finished the batch in hand and stopped, committing it, instead of starting another
    # batch past its budget and being cancelled with all of its work.
    assert 0 < handled < 20_000, "it stops at half the timeout instead of being cancelled"
    assert world.used(pack) == handled
    left = 20_000 - handled
    while left:
        n = drain_under_timeout(5_000)
        assert n > 0
        left -= n
    assert world.used(pack) == 20_000


def test_drain_beside_running_listeners_charges_every_booking_exactly_once(
    world: World, ledger_dsn: str
) -> None:
    packs = [world.pack(sessions_total=40), world.pack(sessions_total=1000)]
    bookings = [b for p in packs for b in world.bookings(p, count=60)]
    start = snapshot_used(world.conn)
    stop = threading.Event()
    drained: list[int] = []

    def cron() -> None:
        while not stop.is_set():
            drained.append(_drain(ledger_dsn, limit=50))

    def writer(seed: int) -> None:
        rng = random.Random(seed)
        with connect(ledger_dsn, purpose="tests") as conn:
            for _ in range(150):
                b = rng.choice(bookings)
                status = rng.choice(["completed", "completed", "cancelled", "confirmed"])
                conn.execute("UPDATE public.bookings SET status = %s WHERE id = %s", [status, b])

    # A backlog first, taken by drain() alone, so it surely takes part; then both consumers race the writers.
    writer(99)
    drains = [threading.Thread(target=cron) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(s,)) for s in range(3)]
    listeners: list[ListenerThread] = []
    try:
        for t in drains:
            t.start()
        deadline = time.monotonic() + 60
        while sum(drained) == 0:
            assert time.monotonic() < deadline, "drain() never took part"
            time.sleep(0.02)
        listeners = [ListenerThread(ledger_dsn, batch_size=9).start() for _ in range(2)]
        for t in writers:
            t.start()
        for t in writers:
            t.join()
        world.ledger.bulk_complete()
        world.ledger.drain(listener_running=True, timeout=60)
    finally:
        stop.set()
        for t in drains:
            t.join()
        for lt in listeners:
            lt.stop()
    assert sum(drained) > 0, "drain() took part"
    verdict = check(world.conn, start)
    assert verdict.ok, verdict.examples


def test_only_the_owner_and_the_listeners_role_may_drain(world: World) -> None:
    pack = world.pack(sessions_total=5)
    by_owner, by_listener = world.bookings(pack, count=2)
    owner = world.conn.execute(
        "SELECT nspowner::regrole::text AS owner FROM pg_namespace WHERE nspname = 'session_ledger'"
    ).fetchone()
    assert owner is not None
    world.set_status(by_owner, "completed")
    for role in ("anon", "authenticated", "service_role"):
        with connect(world.ledger.dsn, autocommit=False, purpose="tests") as conn:
            conn.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(role)))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SELECT session_ledger.drain()")
    assert world.used(pack) == 0 and len(world.queue()) == 1
    # The ledger's owner drains what is queued ...
    with connect(world.ledger.dsn, purpose="tests") as conn:
        assert conn.execute("SELECT current_user AS me").fetchone() == {"me": owner["owner"]}
        assert conn.execute("SELECT session_ledger.drain() AS n").fetchone() == {"n": 1}
    assert world.used(pack) == 1
    # ... and so does the listener's role.
    world.set_status(by_listener, "completed")
    with connect(world.ledger.dsn, autocommit=False, purpose="tests") as conn:
        conn.execute("SET ROLE session_ledger_listener")
        assert conn.execute("SELECT session_ledger.drain() AS n").fetchone() == {"n": 1}
        conn.commit()
    assert world.used(pack) == 2 and world.queue() == []
    runs = world.conn.execute("SELECT run_by FROM session_ledger.drain_runs ORDER BY id").fetchall()
    assert [r["run_by"] for r in runs] == [owner["owner"], "session_ledger_listener"]


@pytest.mark.slow  # its own Supabase-shaped cluster
def test_pg_cron_drains_a_completion_within_one_period_with_no_listener(
    supabase_app_db: SupabaseAppDb,
) -> None:
    cluster = supabase_app_db.cluster
    assert cluster.cron_database is not None
    ledger = Ledger(supabase_app_db.postgres_dsn)
    cron = connect(cluster.postgres_dsn(cluster.cron_database), purpose="tests")
    job = None
    try:
        studio = app_data.create_studio(ledger.conn)
        pack = app_data.create_pack(ledger.conn, studio, sessions_total=5)
        [booking] = app_data.create_bookings(ledger.conn, studio, pack)
        # Completed before the job exists, so its first run must take it, whenever that run starts.
        supabase_app_db.request(
            "UPDATE public.bookings SET status = 'completed' WHERE id = %s",
            [booking],
            role="authenticated",
            user_id=studio.trainer_user_id,
        )
        # As the README says for pg_cron before 1.5 (Debian's 1.4 takes minutes only);
        # Supabase's takes '10 seconds'. Scheduled by postgres, so it runs as postgres.
        row = cron.execute(
            "SELECT cron.schedule_in_database('session-ledger-drain', '* * * * *',"
            " 'select session_ledger.drain()', %s) AS job",
            [supabase_app_db.name],
        ).fetchone()
        assert row is not None
        job = row["job"]
        # The first run starts at the next minute boundary; the deadline leaves a loaded machine room.
        deadline = time.monotonic() + 150
        while ledger.sessions_used(pack) == 0:
            assert time.monotonic() < deadline, "pg_cron's drain did not charge the completion"
            time.sleep(0.5)
        assert ledger.queue_depth() == 0
        charge = ledger.ledger_row(booking)
        assert charge is not None and charge["state"] == "paid"
        # Within one period: the job's first run charged it.
        runs = ledger.conn.execute(
            "SELECT handled, run_by FROM session_ledger.drain_runs ORDER BY id"
        ).fetchall()
        assert runs and runs[0]["handled"] == 1 and runs[0]["run_by"] == "postgres"
    finally:
        if job is not None:
            cron.execute("SELECT cron.unschedule(%s)", [job])
        cron.close()
        ledger.close()
