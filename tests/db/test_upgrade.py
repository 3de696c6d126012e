"""The upgrade path's edges: a database release 0.1.0 installed (by its own code, from its git tag)
against this package's listener and migrate. tests/db/test_routes.py upgrades every release with
data in it and compares the result with a fresh install.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from listener.core.db import Conn, connect
from listener.core.worker import Worker
from listener.devtools.throwaway import create_database, drop_database
from listener.errors import SchemaOutOfDate, SchemaTooNew
from listener.ops.migrate import migrate
from listener.settings import Settings
from listener.testing.checker import check, snapshot_used

from support import releases
from support.world import run_cli

# What a 0.1.0 listener sends for a batch (its named query), booking ids and enqueue times included.
OLD_HANDLE_BATCH = """
SELECT booking_id::text, outcome FROM session_ledger.handle_batch(
    %(listener)s, %(msg_ids)s::bigint[], %(booking_ids)s::uuid[], %(enqueued_at)s::timestamptz[],
    '{}'::bigint[], '{}'::text[], false)
"""


@pytest.fixture
def old_dsn(ledger_server: str) -> Iterator[str]:
    """A database as release 0.1.0 installed it."""
    dsn = create_database(ledger_server, prefix="ledger_v010")
    tree = releases.tree("v0.1.0")
    with connect(dsn, purpose="tests") as conn:
        conn.execute(releases.sql_file(tree, "sql/demo_schema.sql"))
    releases.run(tree, "migrate", "--dsn", dsn)
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
    with pytest.raises(SchemaTooNew, match="upgrade session-ledger-listener"):
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
