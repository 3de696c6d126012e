"""No side door: nothing below the ledger's owner runs code as the owner.

With `SET search_path = ''` PostgreSQL still searches the session's temporary schema
first for types and relations, so a login that may create temporary objects could
name a domain `pg_temp.text` with a CHECK calling its own function and have a
SECURITY DEFINER function run it as the owner. Every function the ledger installs
therefore pins `pg_catalog, pg_temp`, and nothing privileged calls PGMQ's functions,
which pin nothing. These tests run the attack, on the real app's schema in a
Supabase-initialised cluster, from the listener's least-privilege login and from a
plain login in `authenticated`.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from listener.core.db import Conn, connect
from listener.testing import app_data
from listener.testing.ledger import Ledger
from listener.testing.supabase import SupabaseAppDb

from support import roles

# The slow tier: its own Supabase-shaped PostgreSQL 15 cluster.
pytestmark = pytest.mark.slow

# Type names a function body may spell without a schema. Keywords (integer, bigint,
# boolean, numeric, interval, ...) always mean pg_catalog's type; domains named like
# them are created too, quoted, in case a parser ever treats them as names.
SHADOWED_TYPES = (
    "text", "uuid", "name", "int2", "int4", "int8", "bool", "timestamptz", "timestamp", "date",
    "jsonb", "json", "oid", "regrole", "regclass", "regprocedure", "regnamespace", "float4", "float8",
    "bytea", "bpchar", "varchar", "numeric", "integer", "bigint", "boolean", "interval",
)  # fmt: skip

# The trap: runs as whoever casts a value to one of the domains. As anyone but the
# attacker it takes every pack's sessions and leaves a mark in the session.
_TRAP = """
CREATE TABLE pg_temp.decoy (id pg_catalog.uuid);
CREATE FUNCTION pg_temp.evil(v pg_catalog.text) RETURNS pg_catalog.bool
LANGUAGE plpgsql AS $fn$
BEGIN
    IF current_user::pg_catalog.text OPERATOR(pg_catalog.<>) pg_catalog.current_setting('attack.me') THEN
        PERFORM pg_catalog.set_config('attack.hijacked_as', current_user::pg_catalog.text, false);
        UPDATE public.client_purchases SET sessions_used = 9;
    END IF;
    RETURN true;
END
$fn$;
"""


def _arm(conn: Conn) -> None:
    """Create the trap in this session: a domain named like every built-in type, each checking with evil()."""
    conn.execute("SELECT set_config('attack.me', current_user::text, false)")
    conn.execute("SET check_function_bodies = off")
    conn.execute(_TRAP)
    for name in SHADOWED_TYPES:
        base = {"integer": "int4", "bigint": "int8", "boolean": "bool"}.get(name, name)
        conn.execute(
            sql.SQL(
                "CREATE DOMAIN pg_temp.{} AS pg_catalog.{} CHECK (pg_temp.evil(VALUE::pg_catalog.text))"
            ).format(sql.Identifier(name), sql.Identifier(base))
        )
    # A temporary table named like each of the ledger's tables and the app's, too.
    for table in (
        "charges", "config", "bookings", "client_purchases", "org_members", "q_booking_events", "clients",
        "offers", "pack_calls", "q_booking_events_dlq",
    ):  # fmt: skip
        conn.execute(sql.SQL("CREATE TABLE pg_temp.{} (id pg_catalog.uuid)").format(sql.Identifier(table)))


def _hijacked(conn: Conn) -> str | None:
    row = conn.execute("SELECT current_setting('attack.hijacked_as', true) AS who").fetchone()
    assert row is not None
    return row["who"] or None


@dataclass
class World:
    db: SupabaseAppDb
    owner: Conn
    studio: app_data.Studio
    pack: uuid.UUID
    bookings: list[uuid.UUID]
    logins: contextlib.ExitStack

    def balances(self) -> dict[Any, int]:
        return {
            r["id"]: r["sessions_used"]
            for r in self.owner.execute("SELECT id, sessions_used FROM public.client_purchases ORDER BY id")
        }

    def login(self, prefix: str, member_of: str) -> str:
        """A login role in member_of that may create temporary objects (dropped by the fixture); its DSN."""
        dsn = self.logins.enter_context(roles.login_role(self.db.admin_dsn, member_of, prefix=prefix))
        name = str(conninfo_to_dict(dsn)["user"])
        self.owner.execute(
            sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(
                sql.Identifier(self.db.name), sql.Identifier(name)
            )
        )
        return dsn


@pytest.fixture
def world(supabase_app_db: SupabaseAppDb) -> Iterator[World]:
    with connect(supabase_app_db.postgres_dsn, purpose="tests") as owner:
        studio = app_data.create_studio(owner, "A")
        pack = app_data.create_pack(owner, studio, sessions_total=10)
        bookings = app_data.create_bookings(owner, studio, pack, count=6)
        with contextlib.ExitStack() as logins:
            yield World(supabase_app_db, owner, studio, pack, bookings, logins)


def _fix_app_functions(owner: Conn) -> list[str]:
    """What `listener doctor` tells the app to run: pin pg_temp last on its SECURITY DEFINER functions."""
    fixed = []
    for row in owner.execute(
        "SELECT p.oid::regprocedure::text AS fn, coalesce(("
        "   SELECT substr(c, length('search_path=') + 1) FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%'"
        " ), 'public') AS path"
        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE p.prosecdef AND n.nspname IN ('public', 'auth') AND p.proowner = 'postgres'::regrole"
        "   AND NOT coalesce(p.proconfig::text LIKE '%pg_temp%', false)"
    ).fetchall():
        path = row["path"] if row["path"] not in ('""', "") else "pg_catalog"
        owner.execute(f"ALTER FUNCTION {row['fn']} SET search_path = {path}, pg_temp")
        fixed.append(row["fn"])
    return fixed


def test_every_function_of_the_ledger_puts_pg_temp_last(world: World) -> None:
    rows = world.owner.execute(
        """SELECT p.oid::regprocedure::text AS fn, n.nspname AS schema, p.prosecdef, p.proconfig, p.prosrc
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname IN ('session_ledger', 'pgmq')
              OR p.oid IN ('public.use_session(uuid)'::regprocedure, 'public.use_session(uuid, timestamptz)'::regprocedure,
                           'public.use_session(uuid, text)'::regprocedure, 'public.release_session(uuid)'::regprocedure,
                           'public.release_session(uuid, text)'::regprocedure)"""
    ).fetchall()  # fmt: skip
    ours = [r for r in rows if r["schema"] != "pgmq"]
    pgmq = [r for r in rows if r["schema"] == "pgmq"]
    assert len(ours) > 40 and pgmq
    for r in ours:
        assert r["proconfig"] is not None, r["fn"]
        paths = [c for c in r["proconfig"] if c.startswith("search_path=")]
        assert paths == ["search_path=pg_catalog, pg_temp"], (r["fn"], r["proconfig"])
    # PGMQ's functions pin no path, so they must never run with anyone's rights but their
    # caller's: none is SECURITY DEFINER, and no function of ours calls one.
    assert [r["fn"] for r in pgmq if r["prosecdef"]] == []
    calls = re.compile(r"\bpgmq\s*\.\s*(\w+)\s*\(", re.IGNORECASE)
    functions = {r["fn"].split("(")[0].removeprefix("pgmq.") for r in pgmq}
    called = {r["fn"]: set(calls.findall(r["prosrc"])) & functions for r in ours}
    assert {fn: names for fn, names in called.items() if names} == {}


def test_the_apps_unpinned_security_definer_function_runs_a_temporary_type_as_its_owner(world: World) -> None:
    # The app's own hole, which `listener doctor` reports: is_org_member (SECURITY DEFINER,
    # search_path = public) casts to uuid with the caller's pg_temp searched first. This
    # shows the trap below bites; the fix is to pin pg_temp last.
    dsn = world.login("evil_user", "authenticated")
    with connect(dsn, purpose="tests") as evil:
        _arm(evil)
        evil.execute(
            "SELECT set_config('request.jwt.claims', %s, false)",
            [f'{{"sub": "{world.studio.trainer_user_id}"}}'],
        )
        evil.execute("SELECT public.is_org_member(%s)", [world.studio.org_id])
        assert _hijacked(evil) == "postgres"
    assert set(world.balances().values()) == {9}


def test_a_temporary_type_runs_nothing_as_the_owner_from_the_listeners_login(world: World) -> None:
    _fix_app_functions(world.owner)
    Ledger(world.db.postgres_dsn)  # the ledger is installed in the template
    # Work for the listener's functions to do: completions queued, one charged already.
    world.owner.execute(
        "UPDATE public.bookings SET status = 'completed' WHERE id = ANY (%s)", [world.bookings[:3]]
    )
    before = world.balances()
    dsn = world.login("evil_listener", "session_ledger_listener")
    listener = str(uuid.uuid4())
    calls = {
        "session_ledger.read_events(integer,integer)": "SELECT * FROM session_ledger.read_events(1, 0)",
        "session_ledger.handle_batch_v3(uuid,bigint[],bigint[],text[])":
            "SELECT * FROM session_ledger.handle_batch_v3(%(l)s, (SELECT array_agg(msg_id) FROM"
            " session_ledger.read_events(1, 0)), ARRAY[]::bigint[], ARRAY[]::text[])",
        "session_ledger.handle_batch_v2(uuid,bigint[],bigint[],text[])":
            "SELECT * FROM session_ledger.handle_batch_v2(%(l)s, (SELECT array_agg(msg_id) FROM"
            " session_ledger.read_events(1, 0)), NULL, NULL)",
        "session_ledger.handle_batch(uuid,bigint[],uuid[],timestamp with time zone[],bigint[],text[],boolean)":
            "SELECT * FROM session_ledger.handle_batch(%(l)s, (SELECT array_agg(msg_id) FROM"
            " session_ledger.read_events(1, 0)), NULL, NULL, NULL, NULL, false)",
        "session_ledger.heartbeat(uuid,text,integer,boolean)": "SELECT session_ledger.heartbeat(%(l)s, 'h', 1, true)",
        "session_ledger.stop_listener(uuid)": "SELECT session_ledger.stop_listener(%(l)s)",
        "session_ledger.status()": "SELECT session_ledger.status()",
        "session_ledger.queue_depths()": "SELECT * FROM session_ledger.queue_depths()",
        "session_ledger.installed_schema()": "SELECT session_ledger.installed_schema()",
        "session_ledger.drain(integer)": "SELECT session_ledger.drain()",
        "session_ledger.complete_past_bookings(integer,interval)": "SELECT session_ledger.complete_past_bookings()",
        "session_ledger.dashboard_lag(integer)": "SELECT * FROM session_ledger.dashboard_lag(60)",
        "session_ledger.dashboard_dead_letters(integer)": "SELECT * FROM session_ledger.dashboard_dead_letters(10)",
        "session_ledger.dashboard_unfunded(integer)": "SELECT * FROM session_ledger.dashboard_unfunded(10)",
        "session_ledger.dashboard_out_of_sync(integer)": "SELECT * FROM session_ledger.dashboard_out_of_sync(10)",
        "session_ledger.dashboard_redrive(bigint[])": "SELECT session_ledger.dashboard_redrive(ARRAY[1]::bigint[])",
        "session_ledger.dashboard_replay(uuid)": "SELECT session_ledger.dashboard_replay(%(b)s)",
        "session_ledger.dashboard_recent_changes(integer,timestamp with time zone,uuid)":
            "SELECT * FROM session_ledger.dashboard_recent_changes(10, now(), %(b)s)",
        "session_ledger.dashboard_dead_letters_by_id(bigint[])":
            "SELECT * FROM session_ledger.dashboard_dead_letters_by_id(ARRAY[1]::bigint[])",
        "session_ledger.dashboard_absorbed_calls(integer)": "SELECT * FROM session_ledger.dashboard_absorbed_calls(10)",
        "session_ledger.dashboard_discard(bigint[],text)":
            "SELECT session_ledger.dashboard_discard(ARRAY[1]::bigint[], 'why')",
        "session_ledger.dashboard_names(text[])":
            "SELECT * FROM session_ledger.dashboard_names(ARRAY[%(b)s, %(p)s, %(c)s]::text[])",
        "session_ledger.app_keys()": "SELECT session_ledger.app_keys()",
        "session_ledger.dashboard_search(text,integer)": "SELECT * FROM session_ledger.dashboard_search('client', 10)",
        "session_ledger.dashboard_packs(uuid[],uuid[],integer)":
            "SELECT * FROM session_ledger.dashboard_packs(ARRAY[%(p)s]::uuid[], ARRAY[%(c)s]::uuid[], 10)",
        "session_ledger.dashboard_pack_charges(uuid,text,integer)":
            "SELECT * FROM session_ledger.dashboard_pack_charges(%(p)s, 'paid', 10)",
        "session_ledger.dashboard_pack_calls(uuid,integer)": "SELECT * FROM session_ledger.dashboard_pack_calls(%(p)s, 10)",
        "session_ledger.dashboard_bookings(uuid[])": "SELECT * FROM session_ledger.dashboard_bookings(ARRAY[%(b)s]::uuid[])",
        "session_ledger.pause_state()": "SELECT session_ledger.pause_state()",
        "session_ledger.discard_dead_letters(bigint[],text)":
            "SELECT session_ledger.discard_dead_letters(ARRAY[1]::bigint[], 'a reason')",
        "session_ledger.status_details(integer)": "SELECT session_ledger.status_details(5)",
    }  # fmt: skip
    with connect(dsn, purpose="tests") as evil:
        executable = {
            r["fn"].replace(" ", "").replace("timestampwithtimezone", "timestamp with time zone")
            for r in evil.execute(
                "SELECT p.oid::regprocedure::text AS fn FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                " WHERE n.nspname IN ('session_ledger', 'public', 'pgmq', 'auth')"
                "   AND has_function_privilege(p.oid, 'EXECUTE') AND p.prosecdef"
            )
        }
        normalised = {
            k.replace(" ", "").replace("timestampwithtimezone", "timestamp with time zone") for k in calls
        }
        # every SECURITY DEFINER function the login may execute is attacked (the app's own are pinned above)
        assert {f for f in executable if f.startswith("session_ledger.")} == normalised
        _arm(evil)
        for fn, statement in calls.items():
            evil.execute(
                statement,
                {"l": listener, "b": world.bookings[0], "p": world.pack, "c": world.studio.client_id},
            )
            assert _hijacked(evil) is None, fn
    after = world.balances()
    assert set(after.values()) != {9}
    # the listener's own work moved only what the ledger charges: the three completions
    assert sum(after.values()) - sum(before.values()) <= 3


def test_a_temporary_type_runs_nothing_as_the_owner_from_a_signed_in_login(world: World) -> None:
    _fix_app_functions(world.owner)
    trainer = world.studio.trainer_user_id
    dsn = world.login("evil_user", "authenticated")
    future = app_data.create_bookings(world.owner, world.studio, world.pack, count=1)[0]
    with connect(dsn, purpose="tests") as evil:
        _arm(evil)
        evil.execute("SELECT set_config('request.jwt.claims', %s, false)", [f'{{"sub": "{trainer}"}}'])
        evil.execute("SELECT set_config('request.jwt.claim.sub', %s, false)", [str(trainer)])
        evil.execute(
            "SELECT set_config('request.headers', %s, false)",
            ['{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}'],
        )
        statements: list[tuple[str, list[Any]]] = [
            ("UPDATE public.bookings SET notes = notes WHERE false", []),
            ("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [world.bookings[0]]),
            ("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [world.bookings[0]]),
            ("UPDATE public.bookings SET status = 'cancelled' WHERE id = %s", [world.bookings[0]]),
            ("UPDATE public.bookings SET id = gen_random_uuid() WHERE id = %s", [world.bookings[1]]),
            ("INSERT INTO public.bookings (org_id, client_id, start_time, end_time, purchase_id)"
             " VALUES (%s, %s, now() + interval '1 day', now() + interval '25 hours', %s)",
             [world.studio.org_id, world.studio.client_id, world.pack]),
            ("DELETE FROM public.bookings WHERE id = %s", [future]),
            ("SELECT public.use_session(%s)", [world.pack]),
            ("SELECT public.release_session(%s)", [world.pack]),
            ("SELECT public.use_session(%s, 'by hand')", [world.pack]),
            ("SELECT public.release_session(%s, 'by hand')", [world.pack]),
        ]  # fmt: skip
        for statement, params in statements:
            # refused is fine; what matters is who ran the trap
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                evil.execute(statement, params)
            assert _hijacked(evil) is None, statement
    assert set(world.balances().values()) != {9}
