"""Every attack of the third trust review, on the real app's schema in a Supabase-initialised cluster.

The attackers: a direct login in ``authenticated`` (``CREATE ROLE app_login LOGIN IN ROLE
authenticated``, as an app may create one), a signed-in client and a trainer of another
organisation through PostgREST-style requests. Each attack moves no session and runs
nothing as the owner; the app's own flows still charge exactly once.
"""

from __future__ import annotations

import contextlib
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from listener.core.db import Conn, connect
from listener.ops.doctor import doctor
from listener.testing import app_data, supabase
from listener.testing.ledger import Ledger
from listener.testing.supabase import SupabaseAppDb, SupabaseCluster

from support import columns, roles
from support.supabase_fixtures import APP_SCHEMA

# Every case starts listeners or a Supabase-shaped cluster of its own.
pytestmark = pytest.mark.slow

REFUSED = psycopg.errors.InsufficientPrivilege

# The attacker's trigger function: whoever it runs as, it says so; as the owner it would zero
# every pack and make the login a member of postgres.
_EVIL = """
CREATE FUNCTION pg_temp.evil() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('attack.ran_as', current_user::text, false);
    IF current_user = 'postgres' THEN
        UPDATE public.client_purchases SET sessions_used = 0;
        EXECUTE format('GRANT postgres TO %I', session_user);
    END IF;
    RETURN NULL;
END $$;
"""


@dataclass
class World:
    db: SupabaseAppDb
    owner: Conn
    studio: app_data.Studio
    logins: contextlib.ExitStack

    def login(self) -> str:
        """A direct login in authenticated that may create temporary objects; its DSN."""
        dsn = self.logins.enter_context(
            roles.login_role(self.db.admin_dsn, "authenticated", prefix="app_login")
        )
        name = str(conninfo_to_dict(dsn)["user"])
        self.owner.execute(
            sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(
                sql.Identifier(self.db.name), sql.Identifier(name)
            )
        )
        return dsn

    def used(self, pack: uuid.UUID) -> int:
        row = self.owner.execute(
            "SELECT sessions_used FROM public.client_purchases WHERE id = %s", [pack]
        ).fetchone()
        assert row is not None
        return int(row["sessions_used"])

    def balances(self) -> dict[Any, int]:
        return {
            r["id"]: r["sessions_used"]
            for r in self.owner.execute("SELECT id, sessions_used FROM public.client_purchases")
        }

    def drain(self) -> None:
        Ledger(self.db.postgres_dsn).drain(listener_running=False)

    def complete(self, booking: uuid.UUID) -> None:
        """The trainer's calendar completes it."""
        self.db.request(
            "UPDATE public.bookings SET status = 'completed' WHERE id = %s",
            [booking],
            role="authenticated",
            user_id=self.studio.trainer_user_id,
        )

    def as_client(self, statement: str, params: Any = None) -> Any:
        return self.db.request(statement, params, role="authenticated", user_id=self.studio.client_user_id)

    def is_member_of_postgres(self, dsn: str) -> bool:
        name = str(conninfo_to_dict(dsn)["user"])
        row = self.owner.execute("SELECT pg_has_role(%s, 'postgres', 'MEMBER') AS m", [name]).fetchone()
        assert row is not None
        return bool(row["m"])


@pytest.fixture
def world(supabase_app_db: SupabaseAppDb) -> Iterator[World]:
    with connect(supabase_app_db.postgres_dsn, purpose="tests") as owner:
        studio = app_data.create_studio(owner, "A")
        with contextlib.ExitStack() as logins:
            yield World(supabase_app_db, owner, studio, logins)


def _ran_as(conn: Conn) -> str | None:
    row = conn.execute("SELECT current_setting('attack.ran_as', true) AS who").fetchone()
    assert row is not None
    return row["who"] or None


def test_migrate_took_trigger_truncate_and_references_from_the_api_roles(world: World) -> None:
    for table in ("public.bookings", "public.client_purchases"):
        for role in ("anon", "authenticated"):
            for privilege in ("TRIGGER", "TRUNCATE", "REFERENCES"):
                row = world.owner.execute(
                    "SELECT has_table_privilege(%s, %s, %s) AS has", [role, table, privilege]
                ).fetchone()
                assert row == {"has": False}, (role, table, privilege)
    # What the app's flows use stays: the trainer and the client still read and write bookings.
    row = world.owner.execute(
        "SELECT has_table_privilege('authenticated', 'public.bookings', 'UPDATE') AS has"
    ).fetchone()
    assert row == {"has": True}
    # On record, for `listener uninstall --keep-grants`.
    recorded = {
        (r["table_name"], r["grantee"], r["privilege"])
        for r in world.owner.execute(
            "SELECT table_name, grantee, privilege FROM session_ledger.revoked_app_grants"
        )
    }
    assert ("public.bookings", "authenticated", "TRIGGER") in recorded
    assert ("public.client_purchases", "anon", "TRUNCATE") in recorded


def test_a_login_in_authenticated_can_no_longer_attach_a_trigger_or_truncate(world: World) -> None:
    dsn = world.login()
    with connect(dsn, purpose="tests") as evil:
        evil.execute(_EVIL)
        for table in ("public.client_purchases", "public.bookings"):
            with pytest.raises(REFUSED, match="permission denied"):
                evil.execute(
                    f"CREATE TRIGGER zz AFTER UPDATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.evil()"
                )
            with pytest.raises(REFUSED, match="permission denied"):
                evil.execute(f"TRUNCATE {table} CASCADE")


def test_a_trigger_attached_before_the_install_never_runs_as_the_owner(world: World) -> None:
    pack = app_data.create_pack(world.owner, world.studio, sessions_total=10, sessions_used=4)
    held, _cron = app_data.create_bookings(world.owner, world.studio, pack, count=2)
    dsn = world.login()
    # A project that granted more than Supabase's defaults (or a trigger attached before migrate).
    name = str(conninfo_to_dict(dsn)["user"])
    with connect(world.db.admin_dsn, purpose="tests") as admin:
        admin.execute(
            sql.SQL("GRANT TRIGGER ON public.client_purchases, public.bookings TO {}").format(
                sql.Identifier(name)
            )
        )
    with connect(dsn, purpose="tests") as evil:
        evil.execute(_EVIL)
        for table in ("public.client_purchases", "public.bookings"):
            evil.execute(
                f"CREATE TRIGGER zz AFTER UPDATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION pg_temp.evil()"
            )
        before = world.balances()
        world.complete(held)
        assert _ran_as(evil) is None  # the trainer's own write ran it as the trainer, in their session
        world.drain()
        # The ledger refused to write the packs as their owner: dead-lettered, naming the trigger.
        letters = world.owner.execute(
            "SELECT message ->> 'reason' AS reason FROM pgmq.q_booking_events_dlq"
        ).fetchall()
        assert len(letters) == 1 and re.search(
            r"refusing to write public\.client_purchases as its owner: trigger zz", letters[0]["reason"]
        )
        with pytest.raises(REFUSED, match=r"refusing to write public\.bookings as its owner: trigger zz"):
            world.owner.execute("SELECT session_ledger.complete_past_bookings()")
        assert world.balances() == before
        assert not world.is_member_of_postgres(dsn)
        # Doctor names both, as the app's to fix.
        found = {f.object for f in doctor(world.db.postgres_dsn).findings if f.check == "foreign_trigger"}
        assert found == {"zz on public.client_purchases", "zz on public.bookings"}
    # The login is gone and its triggers with it: the dead letter replays and charges once, the cron works.
    Ledger(world.db.postgres_dsn).conn.execute(
        "SELECT session_ledger.redrive_dead_letters(array(SELECT msg_id FROM pgmq.q_booking_events_dlq))"
    )
    world.owner.execute("SELECT session_ledger.complete_past_bookings()")
    world.drain()
    assert world.used(pack) == 4 + 2
    assert not world.is_member_of_postgres(dsn)


def test_truncate_is_refused_to_anyone_untrusted_even_when_granted(world: World) -> None:
    pack = app_data.create_pack(world.owner, world.studio, sessions_total=10)
    app_data.create_bookings(world.owner, world.studio, pack, count=1)
    dsn = world.login()
    name = str(conninfo_to_dict(dsn)["user"])
    with connect(world.db.admin_dsn, purpose="tests") as admin:
        admin.execute(
            sql.SQL("GRANT TRUNCATE ON public.bookings, public.client_purchases TO {}").format(
                sql.Identifier(name)
            )
        )
    with (
        connect(dsn, purpose="tests") as evil,
        pytest.raises(REFUSED, match=r"may not truncate public\.bookings"),
    ):
        evil.execute("TRUNCATE public.bookings")
    row = world.owner.execute("SELECT count(*) AS n FROM public.bookings").fetchone()
    assert row == {"n": 1}


def test_a_client_cannot_make_a_session_free_by_moving_its_times_or_cancelling_it_after_the_fact(
    world: World,
) -> None:
    expires = datetime.now().astimezone() + timedelta(days=20)
    pack = app_data.create_pack(world.owner, world.studio, sessions_total=10, expires_at=expires)
    past = app_data.create_bookings(world.owner, world.studio, pack, count=3)
    attacks = [
        ("UPDATE public.bookings SET start_time = 'infinity' WHERE id = %s", past[0]),
        ("UPDATE public.bookings SET end_time = 'infinity' WHERE id = %s", past[1]),
        ("UPDATE public.bookings SET status = 'cancelled', cancelled_at = now() WHERE id = %s", past[2]),
    ]
    for statement, booking in attacks:
        with pytest.raises(REFUSED, match=f"booking {booking}: role authenticated may not"):
            world.as_client(statement, [booking])
    # Completed by the trainer, not yet drained: moving the start now is refused too.
    world.complete(past[0])
    with pytest.raises(REFUSED):
        world.as_client("UPDATE public.bookings SET start_time = 'infinity' WHERE id = %s", [past[0]])
    world.owner.execute("SELECT session_ledger.complete_past_bookings()")
    world.drain()
    assert world.used(pack) == 3
    states = {r["state"] for r in world.owner.execute("SELECT state FROM session_ledger.charges")}
    assert states == {"paid"}


def test_a_direct_logins_claim_is_recorded_as_a_claim(world: World) -> None:
    pack = app_data.create_pack(world.owner, world.studio, sessions_total=10)
    [booking] = app_data.create_bookings(world.owner, world.studio, pack)
    # Through the API: the login is PostgREST's.
    world.complete(booking)
    world.drain()
    row = world.owner.execute(
        "SELECT caused_by FROM session_ledger.charges WHERE booking_id = %s", [booking]
    ).fetchone()
    assert row is not None and row["caused_by"]["login"] == "authenticator"
    # A direct login claiming to be the trainer: its release is recorded under its own login beside the claim.
    dsn = world.login()
    name = str(conninfo_to_dict(dsn)["user"])
    with connect(dsn, purpose="tests") as evil:
        evil.execute(
            "SELECT set_config('request.jwt.claims', %s, false)",
            [json.dumps({"sub": str(world.studio.trainer_user_id)})],
        )
        evil.execute("UPDATE public.bookings SET status = 'cancelled' WHERE id = %s", [booking])
    world.drain()
    row = world.owner.execute(
        "SELECT caused_by FROM session_ledger.charges WHERE booking_id = %s", [booking]
    ).fetchone()
    assert row is not None
    assert row["caused_by"]["login"] == name and row["caused_by"]["uid"] == str(world.studio.trainer_user_id)


# --- every column of bookings, from the catalog ----------------------------------------------------


def test_no_single_column_write_by_a_client_or_an_outsider_moves_a_session(world: World) -> None:
    """Generated from the catalog: a column the app adds later is covered with no change here."""
    other = app_data.create_studio(world.owner, "B")
    expires = datetime.now().astimezone() + timedelta(days=20)
    pack = app_data.create_pack(world.owner, world.studio, sessions_total=10, expires_at=expires)
    own_other = app_data.create_pack(world.owner, world.studio, sessions_total=10)
    their_pack = app_data.create_pack(world.owner, other, sessions_total=10)
    consuming, past = app_data.create_bookings(world.owner, world.studio, pack, count=2)
    world.complete(consuming)
    world.drain()
    start = datetime.now().astimezone() + timedelta(days=7)
    row = world.owner.execute(
        "INSERT INTO public.bookings (org_id, client_id, start_time, end_time, duration_mins, purchase_id)"
        " VALUES (%s, %s, %s, %s, 60, %s) RETURNING id",
        [world.studio.org_id, world.studio.client_id, start, start + timedelta(hours=1), pack],
    ).fetchone()
    assert row is not None
    future = row["id"]
    judged = "SELECT id, status, purchase_id, client_id, org_id, start_time, end_time FROM public.bookings WHERE id = ANY (%s) ORDER BY id"
    before = world.owner.execute(judged, [[consuming, past]]).fetchall()
    table = columns.columns(world.owner, "public.bookings")
    assert {"status", "purchase_id", "start_time", "end_time", "notes"} <= {c.name for c in table}
    attackers = {"client": world.studio.client_user_id, "other trainer": other.trainer_user_id}
    tried = 0
    # Another pack of the client's own, another organisation's, or none.
    packs = {"purchase_id": [f"'{own_other}'::uuid", f"'{their_pack}'::uuid", "NULL"]}
    for column in table:
        for value in columns.candidates(world.owner, "public.bookings", column, packs):
            statement = columns.single_column_update("public.bookings", column, value)
            for booking in (consuming, past, future):
                for user in attackers.values():
                    with contextlib.suppress(psycopg.Error):
                        world.db.request(
                            statement.as_string(world.owner), [booking], role="authenticated", user_id=user
                        )
                    tried += 1
    assert tried > 200
    # Whatever went through: the consuming and the past booking are judged as they were.
    assert world.owner.execute(judged, [[consuming, past]]).fetchall() == before
    world.owner.execute("SELECT session_ledger.complete_past_bookings()")
    world.drain()
    # The held session stays held, the past one is charged by the cron, nothing else moved.
    assert (world.used(pack), world.used(own_other), world.used(their_pack)) == (2, 0, 0)
    assert world.owner.execute("SELECT count(*) AS n FROM session_ledger.out_of_sync").fetchone() == {"n": 0}


# --- doctor before and after migrate ---------------------------------------------------------------


def test_doctor_reports_the_platforms_grants_before_migrate_and_only_the_apps_own_after(
    supabase_cluster: SupabaseCluster,
) -> None:
    name = supabase.create_app_database(supabase_cluster, schema=[APP_SCHEMA], ledger=False)
    try:
        dsn = supabase_cluster.postgres_dsn(name)
        before = doctor(dsn).findings
        grants = {(f.object, f.severity) for f in before if f.check == "app_table_privilege"}
        assert grants >= {("public.bookings", "high"), ("public.client_purchases", "high")}
        assert any(
            "TRIGGER" in f.message and "authenticated" in f.message
            for f in before
            if f.check == "app_table_privilege"
        )
        definers = {f.object: f for f in before if f.check == "security_definer_search_path"}
        # The policies of bookings and client_purchases call is_platform_admin(): high.
        assert definers["public.is_platform_admin()"].severity == "high"
        assert "row security policy of" in definers["public.is_platform_admin()"].message
        supabase.migrate_as_postgres(supabase_cluster, name)
        after = doctor(dsn).findings
        assert not [f for f in after if f.check == "app_table_privilege"]
        # What remains is the app's to fix: its own unpinned SECURITY DEFINER functions and its view.
        assert {f.check for f in after if f.severity == "high"} <= {
            "security_definer_search_path",
            "view_without_security_invoker",
        }
    finally:
        supabase.drop_app_database(supabase_cluster, name)


def _holds(dsn: str, role: str, table: str, privilege: str) -> bool:
    with connect(dsn, purpose="tests") as conn:
        row = conn.execute(
            "SELECT has_table_privilege(%s, %s, %s) AS has", [role, table, privilege]
        ).fetchone()
    assert row is not None
    return bool(row["has"])


@pytest.mark.parametrize("keep_grants", [False, True])
def test_migrate_says_what_it_revoked_and_uninstall_gives_it_back_only_with_keep_grants(
    supabase_cluster: SupabaseCluster, keep_grants: bool
) -> None:
    from listener.ops.uninstall import uninstall

    name = supabase.create_app_database(supabase_cluster, schema=[APP_SCHEMA], ledger=False)
    try:
        dsn = supabase_cluster.postgres_dsn(name)
        assert _holds(dsn, "authenticated", "public.bookings", "TRIGGER")
        report = supabase.migrate_as_postgres(supabase_cluster, name)
        assert "REFERENCES, TRIGGER, TRUNCATE on public.bookings from authenticated" in report.revoked
        assert "REFERENCES, TRIGGER, TRUNCATE on public.client_purchases from anon" in report.revoked
        assert not _holds(dsn, "authenticated", "public.bookings", "TRIGGER")
        assert supabase.migrate_as_postgres(supabase_cluster, name).revoked == []  # nothing left to take
        uninstall(dsn, keep_grants=keep_grants, force=False)
        for role in ("anon", "authenticated"):
            for privilege in ("TRIGGER", "TRUNCATE", "REFERENCES"):
                assert _holds(dsn, role, "public.client_purchases", privilege) is keep_grants
    finally:
        supabase.drop_app_database(supabase_cluster, name)


def test_the_trainers_genuine_old_buttons_are_charged_and_the_old_pages_own_calls_absorbed(
    world: World,
) -> None:
    pack = app_data.create_pack(world.owner, world.studio, sessions_total=30)
    old = app_data.create_bookings(world.owner, world.studio, pack, count=8, status="completed")
    fresh, quick, cancelled = app_data.create_bookings(world.owner, world.studio, pack, count=3)
    world.owner.execute("UPDATE public.client_purchases SET sessions_used = 8 WHERE id = %s", [pack])
    world.drain()
    world.owner.execute("DELETE FROM session_ledger.booking_writes")
    trainer = world.studio.trainer_user_id

    def press(function: str) -> Any:
        return world.db.request(
            f"SELECT public.{function}(%s) AS r", [pack], role="authenticated", user_id=trainer
        )

    def age(seconds: int) -> None:
        world.owner.execute(
            "UPDATE session_ledger.booking_writes SET written_at = written_at - make_interval(secs => %s)",
            [seconds],
        )

    used = world.used(pack)
    # The new calendar code completes and calls nothing; a press half a minute later is genuine.
    world.complete(fresh)
    age(30)
    press("use_session")
    # A notes edit of a month-old booking, then a press; an edit of all eight, then three presses.
    world.db.request(
        "UPDATE public.bookings SET notes = 'towel' WHERE id = %s",
        [old[0]],
        role="authenticated",
        user_id=trainer,
    )
    press("use_session")
    world.db.request(
        "UPDATE public.bookings SET notes = 'studio 2' WHERE id = ANY (%s)",
        [old],
        role="authenticated",
        user_id=trainer,
    )
    for _ in range(3):
        press("use_session")
    # A cancel, then a genuine "Reinstate" half a minute later.
    world.complete(cancelled)
    world.drain()
    world.db.request(
        "UPDATE public.bookings SET status = 'cancelled' WHERE id = %s",
        [cancelled],
        role="authenticated",
        user_id=trainer,
    )
    age(30)
    press("release_session")
    # The old calendar page's own sequence: its write, then its call a round trip later: absorbed.
    world.complete(quick)
    press("use_session")
    world.drain()
    # fresh + 5 presses + quick charged; cancelled charged then released by the ledger, and one reinstate.
    assert world.used(pack) == used + 1 + 5 + 1 - 1
    outcomes = [
        r["outcome"] for r in world.owner.execute("SELECT outcome FROM session_ledger.pack_calls ORDER BY id")
    ]
    assert outcomes == ["charged"] * 5 + ["released", "absorbed"]
    status = world.owner.execute("SELECT session_ledger.status() -> 'legacy_calls' AS l").fetchone()
    assert status is not None and status["l"]["absorbed_by_kind"] == {"use": 1, "release": 0}
