"""Supabase-safety: the API roles reach neither the queue nor the ledger, and spend only their own packs."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from psycopg import errors
from pydantic import SecretStr

from listener.core.db import connect

from support.world import World

QUEUE_TABLES = ["pgmq.q_booking_events", "pgmq.a_booking_events", "pgmq.q_booking_events_dlq"]
LEDGER_TABLES = ["session_ledger.charges", "session_ledger.listeners", "session_ledger.config"]


def _as(
    dsn: str, role: str, sql: str, params: list[object] | None = None, user: uuid.UUID | None = None
) -> None:
    with connect(dsn, autocommit=False, purpose="tests") as conn:
        conn.execute(f"SET LOCAL ROLE {role}")
        if user is not None:
            conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", [str(user)])
        conn.execute(sql, params)
        conn.rollback()


@pytest.mark.parametrize("role", ["anon", "authenticated"])
@pytest.mark.parametrize("table", QUEUE_TABLES + LEDGER_TABLES)
def test_api_roles_cannot_read_queue_or_ledger(world: World, role: str, table: str) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        _as(world.ledger.dsn, role, f"SELECT * FROM {table}")


@pytest.mark.parametrize("role", ["anon", "authenticated"])
@pytest.mark.parametrize(
    "call",
    [
        "SELECT * FROM pgmq.read('booking_events', 30, 10)",
        "SELECT pgmq.send('booking_events', '{}'::jsonb)",
        "SELECT pgmq.purge_queue('booking_events')",
        "SELECT * FROM session_ledger.read_events(10, 30)",
        "SELECT session_ledger.status()",
    ],
)
def test_api_roles_cannot_call_queue_functions(world: World, role: str, call: str) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        _as(world.ledger.dsn, role, call)


def test_service_role_cannot_read_the_queue_either(world: World) -> None:
    with pytest.raises(errors.InsufficientPrivilege):
        _as(world.ledger.dsn, "service_role", "SELECT * FROM pgmq.q_booking_events")


@pytest.mark.parametrize("fn", ["public.use_session(%s)", "public.release_session(%s)"])
def test_anon_cannot_execute_session_functions(world: World, fn: str) -> None:
    pack = world.pack(sessions_total=5)
    with pytest.raises(errors.InsufficientPrivilege):
        _as(world.ledger.dsn, "anon", f"SELECT {fn}", [pack])
    assert world.used(pack) == 0


def test_signed_in_user_spends_own_org_pack_only(world: World) -> None:
    from listener.devtools import demo_data

    pack = world.pack(sessions_total=5)
    stranger = demo_data.create_org(world.conn, "Studio B")
    with pytest.raises(errors.InsufficientPrivilege):
        _as(
            world.ledger.dsn,
            "authenticated",
            "SELECT public.use_session(%s)",
            [pack],
            stranger.trainer_user_id,
        )
    with connect(world.ledger.dsn, autocommit=False) as conn:
        conn.execute("SET LOCAL ROLE authenticated")
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", [str(world.org.trainer_user_id)])
        row = conn.execute("SELECT public.use_session(%s) AS ok", [pack]).fetchone()
        conn.commit()
    assert row is not None and row["ok"] is True
    assert world.used(pack) == 1


def test_signed_in_user_cannot_judge_validity_at_a_chosen_time(world: World) -> None:
    pack = world.pack(sessions_total=5)
    with pytest.raises(errors.InsufficientPrivilege):
        _as(
            world.ledger.dsn,
            "authenticated",
            "SELECT public.use_session(%s, now() - interval '1 year')",
            [pack],
            world.org.trainer_user_id,
        )


def test_use_session_never_overdraws_under_concurrency(world: World) -> None:
    pack = world.pack(sessions_total=5, sessions_used=0)
    results: list[bool] = []
    lock = threading.Lock()
    barrier = threading.Barrier(12)

    def spend() -> None:
        with connect(world.ledger.dsn) as conn:
            barrier.wait()
            row = conn.execute("SELECT public.use_session(%s) AS ok", [pack]).fetchone()
        with lock:
            results.append(bool(row and row["ok"]))

    threads = [threading.Thread(target=spend) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 5
    assert world.used(pack) == 5


def test_release_session_returns_minus_one_at_zero(world: World) -> None:
    pack = world.pack(sessions_total=5, sessions_used=1)
    row = world.conn.execute("SELECT public.release_session(%s) AS n", [pack]).fetchone()
    assert row is not None and row["n"] == 0
    row = world.conn.execute("SELECT public.release_session(%s) AS n", [pack]).fetchone()
    assert row is not None and row["n"] == -1


def test_pg_temp_shadow_table_cannot_redirect_a_charge(world: World) -> None:
    pack = world.pack(sessions_total=5)
    with connect(world.ledger.dsn) as conn:
        conn.execute(
            "CREATE TEMP TABLE client_purchases (id uuid, sessions_used int, sessions_total int,"
            " expires_at timestamptz, payment_status text, org_id uuid)"
        )
        conn.execute("INSERT INTO pg_temp.client_purchases VALUES (%s, 0, 0, null, 'refunded', null)", [pack])
        conn.execute("SET search_path = pg_temp, public")
        row = conn.execute("SELECT public.use_session(%s) AS ok", [pack]).fetchone()
    assert row is not None and row["ok"] is True
    assert world.used(pack) == 1


def test_security_definer_functions_pin_search_path(world: World) -> None:
    rows = world.conn.execute(
        """SELECT p.oid::regprocedure::text AS fn, p.proconfig
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE p.prosecdef AND n.nspname IN ('session_ledger', 'public')"""
    ).fetchall()
    assert len(rows) >= 10
    unpinned = [
        r["fn"] for r in rows if not any(c.startswith("search_path=") for c in (r["proconfig"] or []))
    ]
    # is_org_member belongs to the app; everything of ours is pinned.
    assert unpinned == []


def test_listener_role_has_only_what_it_needs(world: World) -> None:
    login = f"ledger_login_{uuid.uuid4().hex[:8]}"
    world.conn.execute(f"CREATE ROLE {login} LOGIN IN ROLE session_ledger_listener")
    try:
        pack = world.pack(sessions_total=5)
        [booking] = world.bookings(pack)
        world.set_status(booking, "completed")
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        params = conninfo_to_dict(world.ledger.dsn)
        params["user"] = login
        params.pop("password", None)
        dsn = make_conninfo("", **{k: str(v) for k, v in params.items() if v is not None})
        from listener.core.worker import Worker
        from listener.settings import Settings

        Worker(Settings(dsn=SecretStr(dsn))).run(drain=True)
        assert world.used(pack) == 1
        with connect(dsn) as conn:
            for sql in (
                "SELECT * FROM public.client_purchases",
                "SELECT * FROM pgmq.q_booking_events",
                "SELECT * FROM session_ledger.charges",
                "UPDATE public.bookings SET notes = 'x'",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(sql)
    finally:
        world.conn.execute(f"DROP OWNED BY {login}")
        world.conn.execute(f"DROP ROLE {login}")
