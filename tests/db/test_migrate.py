"""Migrations: once each, checksummed, concurrent-safe; adoption of a live database changes no balance."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import SecretStr

from listener.core.db import connect
from listener.core.sql_files import demo_schema, migrations
from listener.core.worker import Worker
from listener.devtools import demo_data
from listener.devtools.throwaway import create_database, drop_database
from listener.errors import HostSchemaMissing, MigrateNotPermitted, MigrationChanged, NotLedgerOwner
from listener.ops.migrate import migrate
from listener.settings import Settings
from listener.testing.checker import check, snapshot_used


@pytest.fixture
def blank_dsn(ledger_server: str) -> Iterator[str]:
    dsn = create_database(ledger_server, prefix="ledger_blank")
    yield dsn
    drop_database(ledger_server, dsn)


def test_blank_database_without_flag_names_what_is_missing(blank_dsn: str) -> None:
    with pytest.raises(HostSchemaMissing) as err:
        migrate(blank_dsn)
    message = str(err.value)
    assert "table public.bookings" in message
    assert "table public.client_purchases" in message
    assert "function public.is_org_member(uuid)" in message
    assert "--with-demo-schema" in message


def test_missing_columns_are_named(blank_dsn: str) -> None:
    with connect(blank_dsn) as conn:
        conn.execute(demo_schema())
        conn.execute("ALTER TABLE public.bookings DROP COLUMN purchase_id")
    with pytest.raises(HostSchemaMissing, match=r"public\.bookings columns purchase_id"):
        migrate(blank_dsn)


def test_rerun_is_a_no_op_and_checksums_are_recorded(blank_dsn: str) -> None:
    first = migrate(blank_dsn, with_demo_schema=True)
    assert first.demo_schema and first.applied == [f"{m.version:04d}_{m.name}" for m in migrations()]
    second = migrate(blank_dsn, with_demo_schema=True)
    assert (second.demo_schema, second.applied, second.pgmq) == (False, [], "present")
    with connect(blank_dsn) as conn:
        rows = conn.execute("SELECT version, checksum FROM session_ledger.migrations").fetchall()
    assert {r["version"]: r["checksum"] for r in rows} == {m.version: m.checksum for m in migrations()}


def test_changed_migration_is_refused(blank_dsn: str) -> None:
    migrate(blank_dsn, with_demo_schema=True)
    with connect(blank_dsn) as conn:
        conn.execute("UPDATE session_ledger.migrations SET checksum = 'tampered' WHERE version = 1")
    with pytest.raises(MigrationChanged, match="0001"):
        migrate(blank_dsn)


def test_two_concurrent_runs_apply_once(blank_dsn: str) -> None:
    results: list[object] = []
    barrier = threading.Barrier(2)

    def run() -> None:
        barrier.wait()
        try:
            results.append(migrate(blank_dsn, with_demo_schema=True))
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    applied = [r.applied for r in results]  # type: ignore[attr-defined]
    assert sorted(len(a) for a in applied) == [0, len(migrations())]


def test_adoption_of_a_live_database_changes_no_balance(blank_dsn: str) -> None:
    with connect(blank_dsn) as conn:
        conn.execute(demo_schema())
        org = demo_data.create_org(conn)
        pack = demo_data.create_pack(conn, org, sessions_total=10, sessions_used=0)
        done = demo_data.create_bookings(conn, org, pack, count=3, status="completed")
        waiting = demo_data.create_bookings(conn, org, pack, count=2)
        # The old app code charged the completed ones itself.
        conn.execute("UPDATE public.client_purchases SET sessions_used = 4 WHERE id = %s", [pack])
    migrate(blank_dsn)
    with connect(blank_dsn) as conn:
        assert demo_data.sessions_used(conn, pack) == 4
        assert conn.execute("SELECT count(*) AS n FROM pgmq.q_booking_events").fetchone()["n"] == 0  # type: ignore[index]
        paid = conn.execute(
            "SELECT count(*) AS n FROM session_ledger.charges WHERE state = 'paid'"
        ).fetchone()
        assert paid is not None and paid["n"] == 3
        # Cancelling an adopted booking gives its session back; completing a new one charges.
        conn.execute("UPDATE public.bookings SET status = 'cancelled' WHERE id = %s", [done[0]])
        conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [waiting[0]])
    Worker(Settings(dsn=SecretStr(blank_dsn))).run(drain=True)
    with connect(blank_dsn) as conn:
        assert demo_data.sessions_used(conn, pack) == 4


def test_cut_over_records_old_code_charges_without_charging_again(ledger_dsn: str) -> None:
    dsn = ledger_dsn
    with connect(dsn) as conn:
        org = demo_data.create_org(conn)
        pack = demo_data.create_pack(conn, org, sessions_total=10)
        old, new = demo_data.create_bookings(conn, org, pack, count=2)
        start = snapshot_used(conn)
        # The old choreography: nothing absorbs the old code's calls, the cut-over comes later.
        conn.execute("UPDATE session_ledger.config SET absorb_legacy_calls = false")
        # Old app code, still deployed: completes and charges itself.
        conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [old])
        conn.execute("SELECT public.use_session(%s)", [pack])
        # The app without its own deduction is deployed: cut-over.
        conn.execute("UPDATE session_ledger.config SET adopt_until = clock_timestamp()")
        conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [new])
    Worker(Settings(dsn=SecretStr(dsn))).run(drain=True)
    with connect(dsn) as conn:
        assert demo_data.sessions_used(conn, pack) == 2
        verdict = check(conn, start)
        assert verdict.ok, verdict.examples
        row = conn.execute(
            "SELECT source FROM session_ledger.charges WHERE booking_id = %s", [old]
        ).fetchone()
        assert row is not None and row["source"] == "cut-over"


def test_a_late_cut_over_never_adopts_a_booking_whose_old_call_was_absorbed(ledger_dsn: str) -> None:
    with connect(ledger_dsn) as conn:
        org = demo_data.create_org(conn)
        pack = demo_data.create_pack(conn, org, sessions_total=10)
        absorbed, charged_by_old_code = demo_data.create_bookings(conn, org, pack, count=2)
        start = snapshot_used(conn)
        # Old app code, while the ledger absorbs its calls: the ledger charges this booking.
        conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [absorbed])
        assert conn.execute("SELECT public.use_session(%s) AS ok", [pack]).fetchone() == {"ok": True}
        # ... and once absorbing is off, it charges by itself again.
        conn.execute("UPDATE session_ledger.config SET absorb_legacy_calls = false")
        conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [charged_by_old_code])
        conn.execute("SELECT public.use_session(%s)", [pack])
        assert demo_data.sessions_used(conn, pack) == 1
        # An operator then runs the old choreography's cut-over anyway.
        conn.execute("UPDATE session_ledger.config SET adopt_until = clock_timestamp()")
    Worker(Settings(dsn=SecretStr(ledger_dsn))).run(drain=True)
    with connect(ledger_dsn) as conn:
        assert demo_data.sessions_used(conn, pack) == 2
        verdict = check(conn, start)
        assert verdict.ok, verdict.examples
        sources = {
            r["booking_id"]: r["source"]
            for r in conn.execute(
                "SELECT booking_id, source FROM session_ledger.charges WHERE state = 'paid'"
            )
        }
        assert sources == {absorbed: "listener", charged_by_old_code: "cut-over"}


# Every released migration's checksum. A released migration never changes: a change
# goes into a new migration (tables, backfills) or a repeatable file (functions, grants).
RELEASED = {
    1: "a3438bf9a685918b727aee8dfa2e7fb27511741775bf67c2eb79cfc7fd70af6c",  # 0.1.0
    2: "3b019805a4cbd8720bac00c263c5d45ee7539c0b060b16075b61bafe1d036024",  # 0.2.0
}


def test_migrations_are_numbered_without_gaps_and_released_ones_never_change() -> None:
    versions = [m.version for m in migrations()]
    assert versions == list(range(1, len(versions) + 1))
    for m in migrations():
        if m.version in RELEASED:
            assert m.checksum == RELEASED[m.version], (
                f"released migration {m.version:04d}_{m.name} was edited"
            )


@pytest.fixture
def login(ledger_server: str, blank_dsn: str) -> Iterator[str]:
    """A fresh login role with no rights of its own, dropped afterwards (with whatever it was granted)."""
    name = f"ledger_migrator_{uuid.uuid4().hex[:8]}"
    with connect(ledger_server, purpose="tests") as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    with connect(blank_dsn, purpose="tests") as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    with connect(ledger_server, purpose="tests") as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_a_role_that_cannot_reach_the_app_tables_is_told_so_not_sent_to_the_demo_schema(
    blank_dsn: str, login: str
) -> None:
    with connect(blank_dsn) as conn:
        conn.execute(demo_schema())
    as_login = make_conninfo(blank_dsn, user=login)
    with pytest.raises(MigrateNotPermitted) as err:
        migrate(as_login)
    message = str(err.value)
    assert message.startswith(f"role {login} lacks the rights `listener migrate` needs: ")
    assert "SELECT, UPDATE, TRIGGER on public.bookings (owned by" in message
    assert "SELECT, UPDATE on public.client_purchases (owned by" in message
    assert "incomplete" not in message and "--with-demo-schema" not in message

    # Some rights, not all: only what is still lacking is named.
    with connect(blank_dsn) as conn:
        who = sql.Identifier(login)
        conn.execute(
            sql.SQL("GRANT SELECT, UPDATE ON public.bookings, public.client_purchases TO {}").format(who)
        )
        conn.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(str(conninfo_to_dict(blank_dsn)["dbname"])), who
            )
        )
    with pytest.raises(MigrateNotPermitted) as err:
        migrate(as_login)
    assert str(err.value) == (
        f"role {login} lacks the rights `listener migrate` needs: TRIGGER on public.bookings "
        f"(owned by {_owner(blank_dsn)}): run it as the owner of the app's tables"
    )
    with connect(blank_dsn) as conn:
        row = conn.execute("SELECT to_regnamespace('session_ledger') IS NULL AS untouched").fetchone()
    assert row == {"untouched": True}

    # The app's tables that are really missing are still named as missing.
    with connect(blank_dsn) as conn:
        conn.execute("DROP TABLE public.bookings")
    with pytest.raises(HostSchemaMissing, match=r"missing table public\.bookings"):
        migrate(as_login)


def test_migrate_on_an_installed_ledger_needs_its_owner(blank_dsn: str, login: str) -> None:
    migrate(blank_dsn, with_demo_schema=True)
    with connect(blank_dsn) as conn:
        conn.execute(sql.SQL("GRANT session_ledger_listener TO {}").format(sql.Identifier(login)))
    with pytest.raises(NotLedgerOwner) as err:
        migrate(make_conninfo(blank_dsn, user=login))
    assert str(err.value) == (
        f"this command needs the ledger's owner (role {login} cannot change the ledger): "
        f"run it as {_owner(blank_dsn)} or a role that is a member of it"
    )


def _owner(dsn: str) -> str:
    with connect(dsn) as conn:
        row = conn.execute(
            "SELECT pg_get_userbyid(relowner)::text AS owner FROM pg_class WHERE oid = 'public.bookings'::regclass"
        ).fetchone()
    assert row is not None
    return str(row["owner"])
