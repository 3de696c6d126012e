"""The trust boundary, on the real app's schema and policies on a Supabase-initialised cluster.

Every request goes as PostgREST sends it: logged in as authenticator, SET LOCAL ROLE, JWT
claims. The project decides who may move a session, whatever the app's RLS allows:
each attack below is refused at write time, moves no balance, and leaves nothing for
`listener reconcile` to repair; the app's legitimate flows keep charging exactly once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from listener.core.db import Conn, connect
from listener.testing import app_data, supabase
from listener.testing.ledger import Ledger
from listener.testing.supabase import SupabaseAppDb, SupabaseCluster

from support import roles
from support.supabase_fixtures import APP_SCHEMA
from support.world import run_cli

# The slow tier: its own Supabase-shaped PostgreSQL 15 cluster.
pytestmark = pytest.mark.slow

REFUSED = psycopg.errors.InsufficientPrivilege


@dataclass
class App:
    """The app database with two studios, each with a trainer, a signed-in client and packs."""

    db: SupabaseAppDb
    owner: Conn
    a: app_data.Studio
    b: app_data.Studio

    def request(
        self,
        statement: str,
        params: Any = None,
        *,
        role: str = "authenticated",
        user: uuid.UUID | None = None,
    ) -> Any:
        """One API request; raises what the database raised."""
        return self.db.request(statement, params, role=role, user_id=user)

    def used(self, pack: uuid.UUID) -> int:
        """A pack's sessions_used."""
        row = self.owner.execute(
            "SELECT sessions_used FROM public.client_purchases WHERE id = %s", [pack]
        ).fetchone()
        assert row is not None
        return int(row["sessions_used"])

    def balances(self) -> dict[Any, int]:
        """Every pack's sessions_used."""
        return {
            r["id"]: r["sessions_used"]
            for r in self.owner.execute("SELECT id, sessions_used FROM public.client_purchases")
        }

    def drain(self) -> None:
        """Run a listener until the queue is empty."""
        Ledger(self.db.postgres_dsn).drain(listener_running=False)

    def second_client(self, studio: app_data.Studio) -> tuple[uuid.UUID, uuid.UUID]:
        """Another client of the studio, with a login: (client id, user id)."""
        user = app_data.create_user(self.owner, f"other-{uuid.uuid4().hex[:8]}@example.com")
        row = self.owner.execute(
            "INSERT INTO public.clients (org_id, full_name, auth_user_id) VALUES (%s, 'Other', %s) RETURNING id",
            [studio.org_id, user],
        ).fetchone()
        assert row is not None
        return row["id"], user

    def pack_of(self, studio: app_data.Studio, client: uuid.UUID) -> uuid.UUID:
        """A paid 5-session pack of the studio's offer, bought by this client."""
        row = self.owner.execute(
            "INSERT INTO public.client_purchases (org_id, client_id, offer_id, sessions_total, payment_status)"
            " VALUES (%s, %s, %s, 5, 'succeeded') RETURNING id",
            [studio.org_id, client, studio.offer_id],
        ).fetchone()
        assert row is not None
        return uuid.UUID(str(row["id"]))

    def future_booking(
        self, studio: app_data.Studio, pack: uuid.UUID | None, client: uuid.UUID | None = None
    ) -> uuid.UUID:
        """A confirmed booking next week."""
        start = datetime.now().astimezone() + timedelta(days=7)
        row = self.owner.execute(
            "INSERT INTO public.bookings (org_id, client_id, start_time, end_time, duration_mins, purchase_id)"
            " VALUES (%s, %s, %s, %s, 60, %s) RETURNING id",
            [studio.org_id, client or studio.client_id, start, start + timedelta(hours=1), pack],
        ).fetchone()
        assert row is not None
        return uuid.UUID(str(row["id"]))

    def reconcile_finds_nothing(self) -> None:
        """`listener reconcile --dry-run` has nothing to repair."""
        result = run_cli("reconcile", "--dry-run", "--json", "--dsn", self.db.postgres_dsn)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["out_of_sync"] == 0


@pytest.fixture
def app(supabase_app_db: SupabaseAppDb) -> Iterator[App]:
    with connect(supabase_app_db.postgres_dsn, purpose="tests") as owner:
        yield App(
            supabase_app_db, owner, app_data.create_studio(owner, "A"), app_data.create_studio(owner, "B")
        )


def _held(app: App, studio: app_data.Studio, pack: uuid.UUID, n: int = 1) -> list[uuid.UUID]:
    """n past bookings on the pack, completed by the trainer and charged."""
    bookings = app_data.create_bookings(app.owner, studio, pack, count=n)
    app.request(
        "UPDATE public.bookings SET status = 'completed' WHERE id = ANY (%s)",
        [bookings],
        user=studio.trainer_user_id,
    )
    app.drain()
    return bookings


def test_a_client_cannot_cancel_a_held_session_back_onto_their_pack(app: App) -> None:
    pack = app_data.create_pack(app.owner, app.a, sessions_total=5)
    [booking] = _held(app, app.a, pack)
    assert app.used(pack) == 1
    with pytest.raises(
        REFUSED, match=f"booking {booking}: role authenticated may not change which session pack"
    ):
        app.request(
            "UPDATE public.bookings SET status = 'cancelled' WHERE id = %s",
            [booking],
            user=app.a.client_user_id,
        )
    # Un-completing it to pending is the same release; the app's RLS lets clients delete nothing.
    with pytest.raises(REFUSED, match="may not change which session pack"):
        app.request(
            "UPDATE public.bookings SET status = 'pending' WHERE id = %s",
            [booking],
            user=app.a.client_user_id,
        )
    gone = app.request("DELETE FROM public.bookings WHERE id = %s", [booking], user=app.a.client_user_id)
    assert gone.rowcount == 0
    app.drain()
    assert app.used(pack) == 1
    row = app.owner.execute("SELECT status FROM public.bookings WHERE id = %s", [booking]).fetchone()
    assert row == {"status": "completed"}, "the whole statement failed"
    app.reconcile_finds_nothing()


def test_a_client_cannot_point_a_booking_at_another_clients_pack(app: App) -> None:
    mine = app_data.create_pack(app.owner, app.a, sessions_total=5)
    other_client, _ = app.second_client(app.a)
    theirs = app.pack_of(app.a, other_client)
    elsewhere = app_data.create_pack(app.owner, app.b, sessions_total=5)
    booking = app.future_booking(app.a, mine)
    before = app.balances()

    guard = "may not change which session pack"
    # The app's update policy has no WITH CHECK, so PostgreSQL checks the new row with its USING:
    # handing the booking to another client is stopped by RLS already; the rest only by the guard.
    rls = "new row violates row-level security policy"
    attacks = [
        # another client's pack in the same organisation, moved into the past for the cron
        ("UPDATE public.bookings SET purchase_id = %s, start_time = now() - interval '2 hours',"
         " end_time = now() - interval '1 hour' WHERE id = %s", [theirs, booking], guard),
        # a pack of another organisation, org_id rewritten to match it
        ("UPDATE public.bookings SET purchase_id = %s, org_id = %s WHERE id = %s",
         [elsewhere, app.b.org_id, booking], guard),
        # the booking handed to the other client, with that client's pack
        ("UPDATE public.bookings SET client_id = %s, purchase_id = %s WHERE id = %s",
         [other_client, theirs, booking], rls),
        # a new booking of their own, on someone else's pack
        ("INSERT INTO public.bookings (org_id, client_id, start_time, end_time, purchase_id)"
         " VALUES (%s, %s, now() + interval '1 day', now() + interval '25 hours', %s)",
         [app.a.org_id, app.a.client_id, theirs], guard),
        # a completed booking of their own, charging their own pack
        ("INSERT INTO public.bookings (org_id, client_id, start_time, end_time, purchase_id, status)"
         " VALUES (%s, %s, now() - interval '2 days', now() - interval '47 hours', %s, 'completed')",
         [app.a.org_id, app.a.client_id, mine], guard),
    ]  # fmt: skip
    for statement, params, why in attacks:
        with pytest.raises(REFUSED, match=why):
            app.request(statement, params, user=app.a.client_user_id)

    # The cron's bulk completion finds nothing of theirs to charge.
    app.request("SELECT session_ledger.complete_past_bookings()", role="service_role")
    app.drain()
    assert app.balances() == before
    app.reconcile_finds_nothing()


def test_a_pack_pays_only_for_its_own_clients_bookings(app: App) -> None:
    other_client, _ = app.second_client(app.a)
    theirs = app.pack_of(app.a, other_client)
    # Even a trusted writer (the owner) charging a pack for another client's booking: unfunded.
    [booking] = app_data.create_bookings(app.owner, app.a, theirs, status="completed")
    app.drain()
    assert app.used(theirs) == 0
    row = app.owner.execute(
        "SELECT state, reason FROM session_ledger.charges WHERE booking_id = %s", [booking]
    ).fetchone()
    assert row == {"state": "unfunded", "reason": "pack belongs to another client"}
    # Shared (family) packs, once the app says it sells them: the same booking is paid.
    app.owner.execute("UPDATE session_ledger.config SET allow_shared_packs = true")
    app_data.create_bookings(app.owner, app.a, theirs, status="completed")
    app.drain()
    assert app.used(theirs) == 1
    app.reconcile_finds_nothing()


def test_a_member_of_another_organisation_moves_nothing(app: App) -> None:
    pack = app_data.create_pack(app.owner, app.a, sessions_total=5)
    [held] = _held(app, app.a, pack)
    outsider = app.b.trainer_user_id
    # RLS hides studio A's bookings from B's trainer...
    result = app.request(
        "UPDATE public.bookings SET status = 'cancelled' WHERE id = %s", [held], user=outsider
    )
    assert result.rowcount == 0
    # ...but not B's own bookings, which must not be pointed at A's pack.
    [own] = app_data.create_bookings(app.owner, app.b, None)
    with pytest.raises(REFUSED):
        app.request(
            "UPDATE public.bookings SET purchase_id = %s, status = 'completed' WHERE id = %s",
            [pack, own],
            user=outsider,
        )
    # The manual buttons on A's pack.
    for call in ("SELECT public.use_session(%s)", "SELECT public.release_session(%s)"):
        with pytest.raises(REFUSED, match=f"may not move sessions of pack {pack}"):
            app.request(call, [pack], user=outsider)
    # A pack that does not exist: a signed-in user learns nothing, the cron's role hears 'no'.
    ghost = uuid.uuid4()
    with pytest.raises(REFUSED):
        app.request("SELECT public.use_session(%s)", [ghost], user=app.a.trainer_user_id)
    assert app.request("SELECT public.use_session(%s) AS ok", [ghost], role="service_role").rows == [
        {"ok": False}
    ]
    assert app.request("SELECT public.release_session(%s) AS n", [ghost], role="service_role").rows == [
        {"n": -1}
    ]
    app.drain()
    assert app.used(pack) == 1
    app.reconcile_finds_nothing()


@pytest.fixture
def custom_roles(app: App) -> Iterator[tuple[str, str]]:
    """Two API roles an app may add: one inheriting authenticated, one with EXECUTE granted directly.

    The inheriting one's name needs quoting, as a JWT's role claim may: the rule must
    look roles up by name, never by re-parsing the name as an identifier.
    """
    names = (f"Api Staff {uuid.uuid4().hex[:6]}", f"api_report_{uuid.uuid4().hex[:6]}")
    with connect(app.db.admin_dsn, purpose="tests") as admin:
        inheriting, direct = (sql.Identifier(n) for n in names)
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN INHERIT IN ROLE authenticated").format(inheriting))
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(direct))
        admin.execute(
            sql.SQL(
                "GRANT EXECUTE ON FUNCTION public.use_session(uuid), public.release_session(uuid) TO {}"
            ).format(direct)
        )
        admin.execute(sql.SQL("GRANT {}, {} TO authenticator").format(inheriting, direct))
    yield names
    with connect(app.db.admin_dsn, purpose="tests") as admin:
        for name in names:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_an_api_role_inheriting_authenticated_is_held_to_the_same_rule(
    app: App, custom_roles: tuple[str, str]
) -> None:
    inheriting, direct = custom_roles
    pack = app_data.create_pack(app.owner, app.a, sessions_total=5, sessions_used=2)
    # A member of another organisation under the custom role: refused.
    with pytest.raises(REFUSED):
        app.request("SELECT public.release_session(%s)", [pack], role=inheriting, user=app.b.trainer_user_id)
    # Not signed in as a member of anything, with EXECUTE granted outright: refused too (an allow-list).
    with pytest.raises(REFUSED):
        app.request("SELECT public.release_session(%s)", [pack], role=direct, user=app.a.trainer_user_id)
    assert app.used(pack) == 2
    # A member of the pack's own organisation under the inheriting role may press the button.
    result = app.request(
        "SELECT public.release_session(%s) AS n", [pack], role=inheriting, user=app.a.trainer_user_id
    )
    assert result.rows == [{"n": 1}]


def test_anon_moves_nothing(app: App) -> None:
    pack = app_data.create_pack(app.owner, app.a, sessions_total=5, sessions_used=1)
    [held] = _held(app, app.a, pack)
    for call in ("SELECT public.use_session(%s)", "SELECT public.release_session(%s)"):
        with pytest.raises(REFUSED):
            app.request(call, [pack], role="anon")
    assert (
        app.request(
            "UPDATE public.bookings SET status = 'cancelled' WHERE id = %s", [held], role="anon"
        ).rowcount
        == 0
    )
    with pytest.raises(REFUSED):
        app.request("SELECT * FROM session_ledger.charges", role="anon")
    assert app.used(pack) == 2
    app.reconcile_finds_nothing()


@pytest.fixture
def listener_login(app: App) -> Iterator[str]:
    """A login that is only a member of the listener's role, as the listener runs in production."""
    with roles.listener_login(app.db.admin_dsn) as dsn:
        yield dsn


def test_the_listener_role_can_only_process_what_is_queued(app: App, listener_login: str) -> None:
    pack = app_data.create_pack(app.owner, app.a, sessions_total=5)
    app.owner.execute("UPDATE session_ledger.config SET adopt_until = now() + interval '1 day'")
    [unqueued] = app_data.create_bookings(app.owner, app.a, pack)
    # Completed behind the trigger's back: no event names it.
    app.owner.execute("ALTER TABLE public.bookings DISABLE TRIGGER session_ledger_enqueue_update")
    app.owner.execute("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [unqueued])
    app.owner.execute("ALTER TABLE public.bookings ENABLE TRIGGER session_ledger_enqueue_update")
    with connect(listener_login, purpose="tests") as conn:
        # 0.1.0's entry point with a forged booking id and an enqueue time before the cut-over:
        # no queued message names it, so nothing is recorded, paid or not.
        rows = conn.execute(
            "SELECT * FROM session_ledger.handle_batch(gen_random_uuid(), ARRAY[]::bigint[], ARRAY[%s]::uuid[],"
            " ARRAY['-infinity']::timestamptz[], '{}', '{}', false)",
            [unqueued],
        ).fetchall()
        assert rows == []
        for forbidden in (
            "SELECT * FROM session_ledger.apply_bookings(ARRAY[gen_random_uuid()], ARRAY['-infinity'::timestamptz])",
            "SELECT * FROM session_ledger.settle_packs(ARRAY[gen_random_uuid()], ARRAY[-1], ARRAY[now()], NULL, NULL)",
            "UPDATE public.client_purchases SET sessions_used = 0",
            "SELECT * FROM pgmq.q_booking_events",
        ):
            with pytest.raises(REFUSED):
                conn.execute(forbidden)
    row = app.owner.execute(
        "SELECT count(*) AS n FROM session_ledger.charges WHERE booking_id = %s", [unqueued]
    ).fetchone()
    assert row == {"n": 0} and app.used(pack) == 0


def test_the_apps_legitimate_flows_charge_exactly_once(app: App) -> None:
    pack = app_data.create_pack(app.owner, app.a, sessions_total=10)
    spare = app_data.create_pack(app.owner, app.a, sessions_total=10)
    trainer, client = app.a.trainer_user_id, app.a.client_user_id
    b1, b2, _b3 = app_data.create_bookings(app.owner, app.a, pack, count=3)
    # The trainer completes, cancels and moves bookings in the calendar.
    app.request(
        "UPDATE public.bookings SET status = 'completed' WHERE id = ANY (%s)", [[b1, b2]], user=trainer
    )
    app.request("UPDATE public.bookings SET status = 'cancelled' WHERE id = %s", [b2], user=trainer)
    app.request("UPDATE public.bookings SET purchase_id = %s WHERE id = %s", [spare, b1], user=trainer)
    # The cron's bulk completion of what is left.
    app.request("SELECT session_ledger.complete_past_bookings()", role="service_role")
    # A client books a future session on their own pack, and cancels another.
    app.request(
        "INSERT INTO public.bookings (org_id, client_id, start_time, end_time, purchase_id, booking_source)"
        " VALUES (%s, %s, now() + interval '3 days', now() + interval '3 days 1 hour', %s, 'client_app')",
        [app.a.org_id, app.a.client_id, pack],
        user=client,
    )
    later = app.future_booking(app.a, pack)
    app.request("UPDATE public.bookings SET status = 'cancelled' WHERE id = %s", [later], user=client)
    app.drain()
    assert (app.used(pack), app.used(spare)) == (1, 1)  # b3 on pack, b1 moved to spare, b2 released
    # The trainer's manual buttons, as the new app calls them: never absorbed.
    use, release = (
        "SELECT public.use_session(%s, 'extra session') AS ok",
        "SELECT public.release_session(%s, 'goodwill') AS n",
    )
    assert app.request(use, [pack], user=trainer).rows == [{"ok": True}]
    assert app.request(release, [spare], user=trainer).rows == [{"n": 0}]
    assert app.request(release, [spare], user=trainer).rows == [{"n": -1}]
    assert (app.used(pack), app.used(spare)) == (2, 0)
    app.reconcile_finds_nothing()


_API_ROLES = ("anon", "authenticated")


def test_no_api_role_holds_any_privilege_on_pgmq_even_under_wide_default_privileges(
    supabase_cluster: SupabaseCluster,
) -> None:
    name = supabase.create_app_database(supabase_cluster, schema=[APP_SCHEMA], ledger=False)
    try:
        with connect(supabase_cluster.postgres_dsn(name), purpose="tests") as conn:
            # A project that granted the API roles everything, database-wide, before installing.
            conn.execute("ALTER DEFAULT PRIVILEGES GRANT ALL ON TABLES TO anon, authenticated, PUBLIC")
            conn.execute("ALTER DEFAULT PRIVILEGES GRANT ALL ON SEQUENCES TO anon, authenticated, PUBLIC")
        supabase.migrate_as_postgres(supabase_cluster, name)
        with connect(supabase_cluster.postgres_dsn(name), purpose="tests") as conn:
            conn.execute("GRANT USAGE ON SCHEMA pgmq TO anon, authenticated")
            relations = conn.execute(
                "SELECT c.oid::regclass::text AS rel, c.relkind::text AS kind FROM pg_class c"
                " WHERE c.relnamespace = 'pgmq'::regnamespace AND c.relkind IN ('r', 'S', 'p')"
            ).fetchall()
            assert {"pgmq.meta", "pgmq.q_booking_events", "pgmq.q_booking_events_msg_id_seq"} <= {
                r["rel"] for r in relations
            }
            for r in relations:
                for role in (*_API_ROLES, "public"):
                    privileges = (
                        ("SELECT", "UPDATE", "USAGE") if r["kind"] == "S"
                        else ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
                    )  # fmt: skip
                    check = "has_sequence_privilege" if r["kind"] == "S" else "has_table_privilege"
                    for privilege in privileges:
                        row = conn.execute(
                            sql.SQL("SELECT {}(%s, %s, %s) AS ok").format(sql.Identifier(check)),
                            [role, r["rel"], privilege],
                        ).fetchone()
                        assert row == {"ok": False}, (role, r["rel"], privilege)
            rls = conn.execute(
                "SELECT c.relname, c.relrowsecurity FROM pg_class c WHERE c.relnamespace = 'pgmq'::regnamespace"
                " AND c.relname IN ('q_booking_events', 'a_booking_events', 'q_booking_events_dlq', 'a_booking_events_dlq')"
            ).fetchall()
            assert len(rls) == 4 and all(r["relrowsecurity"] for r in rls)
        # anon cannot wedge every booking write by exhausting the queue's sequence.
        db = SupabaseAppDb(supabase_cluster, name)
        with pytest.raises(REFUSED):
            db.request("SELECT setval('pgmq.q_booking_events_msg_id_seq', 9223372036854775807)", role="anon")
        # `listener status` names the exposure that remains (USAGE on the schema).
        status = run_cli("status", "--json", "--no-listener-ok", "--dsn", supabase_cluster.postgres_dsn(name))
        warnings = json.loads(status.stdout)["warnings"]
        assert any("pgmq" in w and "anon" in w for w in warnings), warnings
    finally:
        supabase.drop_app_database(supabase_cluster, name)


def test_a_client_cannot_hide_a_write_behind_a_new_booking_id(app: App) -> None:
    mine = app_data.create_pack(app.owner, app.a, sessions_total=5)
    other_client, _ = app.second_client(app.a)
    theirs = app.pack_of(app.a, other_client)
    [paid] = _held(app, app.a, mine)
    future = app.future_booking(app.a, mine)
    bare = app.future_booking(app.a, None)
    before = app.balances()
    client = app.a.client_user_id
    # A paid booking cancelled under a new id: judged as the paid booking deleted.
    with pytest.raises(REFUSED, match=f"booking {paid}: role authenticated may not change"):
        app.request(
            "UPDATE public.bookings SET id = gen_random_uuid(), status = 'cancelled' WHERE id = %s",
            [paid],
            user=client,
        )
    # A new id with another client's pack: judged as a new booking on that pack.
    with pytest.raises(REFUSED, match="may not change which session pack"):
        app.request(
            "UPDATE public.bookings SET id = gen_random_uuid(), purchase_id = %s WHERE id = %s",
            [theirs, future],
            user=client,
        )
    # A new id alone still detaches the trainer's pack from the old id.
    with pytest.raises(REFUSED, match="may not change which session pack"):
        app.request("UPDATE public.bookings SET id = gen_random_uuid() WHERE id = %s", [future], user=client)
    # A booking without a pack moves no money under any id.
    app.request("UPDATE public.bookings SET id = gen_random_uuid() WHERE id = %s", [bare], user=client)
    app.drain()
    assert app.balances() == before
    app.reconcile_finds_nothing()


def test_a_trainer_changing_a_booking_id_releases_the_old_and_charges_the_new(app: App) -> None:
    pack = app_data.create_pack(app.owner, app.a, sessions_total=5)
    [paid] = _held(app, app.a, pack)
    renamed = uuid.uuid4()
    app.request(
        "UPDATE public.bookings SET id = %s WHERE id = %s", [renamed, paid], user=app.a.trainer_user_id
    )
    queued = {
        r["b"] for r in app.owner.execute("SELECT message ->> 'booking_id' AS b FROM pgmq.q_booking_events")
    }
    assert queued == {str(paid), str(renamed)}  # both ids get an event
    app.drain()
    assert app.used(pack) == 1
    states = {
        r["booking_id"]: r["state"]
        for r in app.owner.execute("SELECT booking_id, state FROM session_ledger.charges")
    }
    assert states == {paid: "released", renamed: "paid"}
    app.reconcile_finds_nothing()


def test_a_client_cannot_detach_or_switch_the_pack_the_trainer_assigned(app: App) -> None:
    assigned = app_data.create_pack(app.owner, app.a, sessions_total=5)
    own = app_data.create_pack(app.owner, app.a, sessions_total=5)
    [past] = app_data.create_bookings(app.owner, app.a, assigned)  # ended, still confirmed
    client = app.a.client_user_id
    for statement, params in (
        ("UPDATE public.bookings SET purchase_id = NULL WHERE id = %s", [past]),
        ("UPDATE public.bookings SET purchase_id = %s WHERE id = %s", [own, past]),
    ):
        with pytest.raises(REFUSED, match=f"booking {past}: role authenticated may not change"):
            app.request(statement, params, user=client)
    # The cron completes it, and the trainer's pack pays.
    app.request("SELECT session_ledger.complete_past_bookings()", role="service_role")
    app.drain()
    assert (app.used(assigned), app.used(own)) == (1, 0)
    app.reconcile_finds_nothing()


def test_the_client_apps_own_flows_keep_working(app: App) -> None:
    # apps/client-mobile/app/(tabs)/book.tsx: insert without a pack, cancel with status and cancelled_at.
    own = app_data.create_pack(app.owner, app.a, sessions_total=5)
    expired = app_data.create_pack(
        app.owner, app.a, sessions_total=5, expires_at=datetime.now().astimezone() - timedelta(days=1)
    )
    client = app.a.client_user_id
    booked = app.request(
        "INSERT INTO public.bookings (org_id, client_id, start_time, end_time, duration_mins, status,"
        " booked_by, booking_source, notes)"
        " VALUES (%s, %s, now() + interval '2 days', now() + interval '2 days 1 hour', 60, 'confirmed', %s,"
        " 'client', 'see you') RETURNING id",
        [app.a.org_id, app.a.client_id, client],
        user=client,
    ).rows[0]["id"]
    app.request(
        "UPDATE public.bookings SET status = 'cancelled', cancelled_at = now() WHERE id = %s",
        [booked],
        user=client,
    )
    # Attaching their own live pack to a booking that has none is still theirs to do ...
    bare = app.future_booking(app.a, None)
    app.request("UPDATE public.bookings SET purchase_id = %s WHERE id = %s", [own, bare], user=client)
    # ... but not a pack that can no longer pay.
    other = app.future_booking(app.a, None)
    with pytest.raises(REFUSED):
        app.request(
            "UPDATE public.bookings SET purchase_id = %s WHERE id = %s", [expired, other], user=client
        )
    rows = app.owner.execute(
        "SELECT id, status, purchase_id FROM public.bookings WHERE id = ANY (%s) ORDER BY id",
        [[booked, bare, other]],
    ).fetchall()
    assert {r["id"]: (r["status"], r["purchase_id"]) for r in rows} == {
        booked: ("cancelled", None),
        bare: ("confirmed", own),
        other: ("confirmed", None),
    }
    app.drain()
    assert (app.used(own), app.used(expired)) == (0, 0)
    app.reconcile_finds_nothing()


def test_complete_past_bookings_works_in_chunks_packs_first(app: App) -> None:
    pack = app_data.create_pack(app.owner, app.a, sessions_total=5)
    with_pack = app_data.create_bookings(app.owner, app.a, pack, count=3)
    # A flood of bookings without a pack, as a client could insert through the app's policy.
    app.owner.execute(
        "INSERT INTO public.bookings (org_id, client_id, start_time, end_time, status)"
        " SELECT %s, %s, now() - interval '3 hours', now() - interval '2 hours', 'confirmed'"
        " FROM generate_series(1, 2500)",
        [app.a.org_id, app.a.client_id],
    )

    def complete(chunk: int, budget: str) -> int:
        rows = app.request(
            "SELECT session_ledger.complete_past_bookings(%s, %s::interval) AS n",
            [chunk, budget],
            role="service_role",
        ).rows
        return int(rows[0]["n"])

    # No budget left after the first chunk: exactly one chunk per call, the pack's bookings first.
    assert complete(100, "0") == 100
    done = app.owner.execute(
        "SELECT count(*) AS n FROM public.bookings WHERE id = ANY (%s) AND status = 'completed'", [with_pack]
    ).fetchone()
    assert done == {"n": 3}
    assert complete(1000, "0") == 1000
    # Under Supabase's statement_timeout, a call stops within half of it and commits what it did.
    total = 0
    for _ in range(10):
        rows = app.request(
            "SELECT set_config('statement_timeout', '8s', true), session_ledger.complete_past_bookings() AS n",
            role="service_role",
        ).rows
        total += int(rows[0]["n"])
    assert total == 2503 - 1100
    assert complete(1000, "0") == 0
    app.drain()
    assert app.used(pack) == 3
