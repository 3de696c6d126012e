"""The upgrade path: a database installed by release 0.1.0 upgrades in place with `listener migrate`.

tests/fixtures/release_0_1_0/ holds what 0.1.0 installed (its demo app schema and
its migrate's SQL), frozen. A database built from it is charged by 0.1.0's own
functions, then upgraded while events still wait in the queue.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from listener.core.db import Conn, connect
from listener.core.sql_files import SCHEMA_VERSION, sql_dir
from listener.core.worker import Worker
from listener.devtools import schema_dump
from listener.devtools.throwaway import create_database, drop_database
from listener.errors import SchemaOutOfDate, SchemaTooNew
from listener.ops.migrate import ensure_pgmq, migrate
from listener.settings import Settings
from listener.testing.checker import check, snapshot_used

from support import SUPPORT
from support.world import run_cli

RELEASE = SUPPORT / "fixtures" / "release_0_1_0"

# What a 0.1.0 listener sends for a batch (its named query), booking ids and enqueue times included.
OLD_HANDLE_BATCH = """
SELECT booking_id::text, outcome FROM session_ledger.handle_batch(
    %(listener)s, %(msg_ids)s::bigint[], %(booking_ids)s::uuid[], %(enqueued_at)s::timestamptz[],
    '{}'::bigint[], '{}'::text[], false)
"""


def _install_release_0_1_0(dsn: str) -> None:
    with connect(dsn, purpose="tests") as conn:
        with conn.transaction():
            conn.execute((RELEASE / "demo_schema.sql").read_text(encoding="utf-8"))
        ensure_pgmq(conn)
        with conn.transaction():
            conn.execute((RELEASE / "install.sql").read_text(encoding="utf-8"))


@pytest.fixture
def old_dsn(ledger_server: str) -> Iterator[str]:
    """A database as release 0.1.0 installed it."""
    dsn = create_database(ledger_server, prefix="ledger_v010")
    _install_release_0_1_0(dsn)
    yield dsn
    drop_database(ledger_server, dsn)


def _org(conn: Conn) -> dict[str, uuid.UUID]:
    ids = {k: uuid.uuid4() for k in ("org", "trainer", "client")}
    conn.execute("INSERT INTO public.orgs (id, name) VALUES (%s, 'Studio')", [ids["org"]])
    conn.execute(
        "INSERT INTO public.org_members (org_id, user_id, role) VALUES (%s, %s, 'trainer')",
        [ids["org"], ids["trainer"]],
    )
    conn.execute(
        "INSERT INTO public.clients (id, org_id, name) VALUES (%s, %s, 'Client')", [ids["client"], ids["org"]]
    )
    return ids


def _pack(conn: Conn, org: dict[str, uuid.UUID], *, total: int, used: int = 0) -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO public.client_purchases (org_id, client_id, sessions_total, sessions_used)"
        " VALUES (%s, %s, %s, %s) RETURNING id",
        [org["org"], org["client"], total, used],
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row["id"]))


def _bookings(conn: Conn, org: dict[str, uuid.UUID], pack: uuid.UUID, n: int) -> list[uuid.UUID]:
    start = datetime.now().astimezone() - timedelta(days=n + 1)
    rows = conn.execute(
        "INSERT INTO public.bookings (org_id, client_id, start_time, end_time, purchase_id)"
        " SELECT %s, %s, t, t + interval '1 hour', %s"
        " FROM generate_series(%s::timestamptz, %s::timestamptz + (%s - 1) * interval '1 day', interval '1 day') t"
        " RETURNING id",
        [org["org"], org["client"], pack, start, start, n],
    ).fetchall()
    return [uuid.UUID(str(r["id"])) for r in rows]


def _complete(conn: Conn, bookings: list[uuid.UUID]) -> None:
    conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = ANY (%s)", [bookings])


def _as_old_listener(
    conn: Conn, listener: uuid.UUID, *, forged_at: str | None = None
) -> list[dict[str, Any]]:
    """Claim every queued event and hand it to handle_batch the way 0.1.0's listener did."""
    conn.execute(
        "SELECT session_ledger.heartbeat(%s, 'old-host', 1, false)", [listener]
    )  # 0.1.0 registered itself first
    batch = conn.execute(
        "SELECT msg_id, enqueued_at, message::jsonb ->> 'booking_id' AS booking_id"
        " FROM session_ledger.read_events(1000, 30)"
    ).fetchall()
    return conn.execute(
        OLD_HANDLE_BATCH,
        {
            "listener": listener,
            "msg_ids": [r["msg_id"] for r in batch],
            "booking_ids": [r["booking_id"] for r in batch],
            "enqueued_at": [forged_at or r["enqueued_at"] for r in batch],
        },
    ).fetchall()


def _balances(conn: Conn) -> dict[Any, Any]:
    return {
        r["id"]: r["sessions_used"]
        for r in conn.execute("SELECT id, sessions_used FROM public.client_purchases")
    }


def _ledger(conn: Conn) -> dict[Any, Any]:
    return {
        r["booking_id"]: (r["purchase_id"], r["state"], r["source"])
        for r in conn.execute("SELECT booking_id, purchase_id, state, source FROM session_ledger.charges")
    }


def test_a_0_1_0_database_upgrades_in_place_keeps_every_balance_and_goes_on_charging(old_dsn: str) -> None:
    with connect(old_dsn, purpose="tests") as conn:
        org = _org(conn)
        busy, full = _pack(conn, org, total=10, used=2), _pack(conn, org, total=2, used=1)
        start = snapshot_used(conn)
        charged_by_old = _bookings(conn, org, busy, 3)
        _complete(conn, charged_by_old)
        outcomes = _as_old_listener(conn, uuid.uuid4())
        assert sorted(o["outcome"] for o in outcomes) == ["paid"] * 3
        waiting = _bookings(conn, org, busy, 2) + _bookings(conn, org, full, 2)
        _complete(conn, waiting)  # enqueued by 0.1.0's trigger, handled after the upgrade
        assert _balances(conn)[busy] == 5
        balances, ledger = _balances(conn), _ledger(conn)

    first = run_cli("migrate", "--dsn", old_dsn)
    assert first.returncode == 0, first.stderr
    assert "applied 0002_upgrade_path" in first.stdout
    assert "re-applied functions, triggers and grants" in first.stdout
    second = run_cli("migrate", "--dsn", old_dsn)
    assert second.returncode == 0 and f"already up to date (schema version {SCHEMA_VERSION})" in second.stdout

    with connect(old_dsn, purpose="tests") as conn:
        assert _balances(conn) == balances, "the upgrade moves no session"
        assert _ledger(conn) == ledger, "the upgrade rewrites no ledger row"
        queued = conn.execute("SELECT count(*) AS n FROM pgmq.q_booking_events").fetchone()
        assert queued is not None and queued["n"] == 4, "events waiting at the upgrade survive it"

    Worker(Settings(dsn=SecretStr(old_dsn), poll_interval_s=0.05)).run(drain=True)
    with connect(old_dsn, purpose="tests") as conn:
        assert _balances(conn)[busy] == 7 and _balances(conn)[full] == 2
        # New completions and cancellations after the upgrade: each charged or released once.
        later = _bookings(conn, org, busy, 2)
        _complete(conn, later)
        conn.execute("UPDATE public.bookings SET status = 'cancelled' WHERE id = %s", [charged_by_old[0]])
        Worker(Settings(dsn=SecretStr(old_dsn), poll_interval_s=0.05)).run(drain=True)
        assert _balances(conn)[busy] == 8
        verdict = check(conn, start)
        assert verdict.ok, verdict.examples


def test_an_old_listener_against_the_new_schema_charges_from_the_queue_not_from_its_arguments(
    old_dsn: str,
) -> None:
    migrate(old_dsn)
    with connect(old_dsn, purpose="tests") as conn:
        org = _org(conn)
        pack = _pack(conn, org, total=5)
        bookings = _bookings(conn, org, pack, 2)
        conn.execute("UPDATE session_ledger.config SET adopt_until = now() - interval '1 day'")
        _complete(conn, bookings)
        start = snapshot_used(conn)
        # 0.1.0's call, with every enqueue time forged to before the cut-over: still charged.
        outcomes = _as_old_listener(conn, uuid.uuid4(), forged_at="-infinity")
        assert sorted(o["outcome"] for o in outcomes) == ["paid", "paid"]
        assert _balances(conn)[pack] == 2
        assert check(conn, start).ok


def test_the_listener_refuses_a_schema_it_does_not_know(old_dsn: str) -> None:
    worker = Worker(Settings(dsn=SecretStr(old_dsn)))
    with pytest.raises(
        SchemaOutOfDate, match=r"schema version 1, this listener needs \d+: run `listener migrate`"
    ):
        worker.check_schema()
    worker.close()

    migrate(old_dsn)
    with connect(old_dsn, purpose="tests") as conn:
        conn.execute("UPDATE session_ledger.schema_info SET version = version + 1")
    worker = Worker(Settings(dsn=SecretStr(old_dsn)))
    with pytest.raises(SchemaTooNew, match="upgrade the listener"):
        worker.check_schema()
    worker.close()
    with pytest.raises(SchemaTooNew, match="upgrade session-ledger-listener"):
        migrate(old_dsn)

    with connect(old_dsn, purpose="tests") as conn:
        conn.execute("UPDATE session_ledger.schema_info SET version = version - 1")
        conn.execute("INSERT INTO session_ledger.migrations VALUES (99, 'from_the_future', 'x')")
    result = run_cli("migrate", "--dsn", old_dsn)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "migration 0099, newer than this package" in result.stderr


# Everything a schema is made of, as text: tables and columns, indexes, constraints,
# functions with their bodies and grants, triggers, views, table grants and RLS, policies.
_SNAPSHOT = """
WITH ns AS (SELECT oid, nspname FROM pg_namespace WHERE nspname IN ('public', 'session_ledger', 'pgmq'))
SELECT 'column' AS kind, c.table_schema || '.' || c.table_name || '.' || c.column_name AS name,
       c.data_type || ' ' || c.is_nullable || ' ' || coalesce(c.column_default, '') AS def
FROM information_schema.columns c WHERE c.table_schema IN (SELECT nspname FROM ns)
UNION ALL
SELECT 'index', i.schemaname || '.' || i.indexname, i.indexdef
FROM pg_indexes i WHERE i.schemaname IN (SELECT nspname FROM ns)
UNION ALL
SELECT 'constraint', k.conrelid::regclass::text || '.' || k.conname, pg_get_constraintdef(k.oid)
FROM pg_constraint k WHERE k.connamespace IN (SELECT oid FROM ns)
UNION ALL
SELECT 'function', p.oid::regprocedure::text, pg_get_functiondef(p.oid) || coalesce(p.proacl::text, '')
FROM pg_proc p WHERE p.pronamespace IN (SELECT oid FROM ns WHERE nspname <> 'pgmq') AND p.prokind = 'f'
UNION ALL
SELECT 'trigger', t.tgrelid::regclass::text || '.' || t.tgname, pg_get_triggerdef(t.oid) || t.tgenabled::text
FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid
WHERE NOT t.tgisinternal AND r.relnamespace IN (SELECT oid FROM ns)
UNION ALL
SELECT 'view', v.oid::regclass::text, pg_get_viewdef(v.oid) || coalesce(v.reloptions::text, '')
FROM pg_class v WHERE v.relkind = 'v' AND v.relnamespace IN (SELECT oid FROM ns)
UNION ALL
SELECT 'relation', r.oid::regclass::text,
       r.relkind::text || ' ' || coalesce(r.relacl::text, '') || ' rls=' || r.relrowsecurity
FROM pg_class r WHERE r.relnamespace IN (SELECT oid FROM ns) AND r.relkind IN ('r', 'v', 'S')
UNION ALL
SELECT 'policy', p.schemaname || '.' || p.tablename || '.' || p.policyname,
       p.cmd || ' ' || p.roles::text || ' ' || coalesce(p.qual, '') || ' ' || coalesce(p.with_check, '')
FROM pg_policies p WHERE p.schemaname IN (SELECT nspname FROM ns)
UNION ALL
SELECT 'schema', n.nspname, coalesce(n.nspacl::text, '') FROM pg_namespace n WHERE n.oid IN (SELECT oid FROM ns)
ORDER BY 1, 2
"""


def _snapshot(dsn: str) -> list[tuple[str, str, str]]:
    with connect(dsn, purpose="tests") as conn:
        return [(r["kind"], r["name"], r["def"]) for r in conn.execute(_SNAPSHOT).fetchall()]


def test_a_fresh_install_and_an_upgraded_one_have_the_same_schema(old_dsn: str, ledger_server: str) -> None:
    migrate(old_dsn)
    fresh = create_database(ledger_server, prefix="ledger_fresh")
    try:
        with connect(fresh, purpose="tests") as conn, conn.transaction():
            conn.execute((RELEASE / "demo_schema.sql").read_text(encoding="utf-8"))
        migrate(fresh)
        upgraded, installed = _snapshot(old_dsn), _snapshot(fresh)
        assert len(installed) > 100
        missing = sorted(set(installed) - set(upgraded))
        extra = sorted(set(upgraded) - set(installed))
        assert (missing, extra) == ([], [])
    finally:
        drop_database(ledger_server, fresh)


def test_sql_schema_file_is_what_a_fresh_install_and_an_upgrade_both_hold(
    old_dsn: str, ledger_dsn: str
) -> None:
    migrate(old_dsn)
    with connect(old_dsn, purpose="tests") as old, connect(ledger_dsn, purpose="tests") as fresh:
        upgraded, installed = schema_dump.render(old), schema_dump.render(fresh)
    assert upgraded == installed
    path = sql_dir() / "schema.sql"
    if os.environ.get("LISTENER_WRITE_SCHEMA") == "1":
        path.write_text(installed, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == installed, (
        "sql/schema.sql is not the schema the migrations build: "
        "regenerate it with `LISTENER_WRITE_SCHEMA=1 pytest tests/db/test_upgrade.py -k schema_file`"
    )


def test_a_failed_upgrade_leaves_the_old_install_whole(old_dsn: str) -> None:
    with connect(old_dsn, purpose="tests") as conn:
        # Something the upgrade needs is in the way: 0002 creates this table.
        conn.execute("CREATE TABLE session_ledger.repeatables (blocking int)")
    with pytest.raises(psycopg.errors.DuplicateTable):
        migrate(old_dsn)
    with connect(old_dsn, purpose="tests") as conn:
        versions = [r["version"] for r in conn.execute("SELECT version FROM session_ledger.migrations")]
        assert versions == [1], "migrations and repeatables commit together or not at all"
        assert conn.execute("SELECT to_regclass('session_ledger.schema_info') AS t").fetchone() == {"t": None}
