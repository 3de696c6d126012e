"""The ledger on a cluster initialised as Supabase initialises one: postgres is no superuser,
migrations run as postgres, and the browser, the cron and pg_cron reach the ledger through
Supabase's roles."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from listener.core.db import connect
from listener.testing import app_data, supabase
from listener.testing.ledger import Ledger
from listener.testing.supabase import SupabaseAppDb, SupabaseCluster

from support.supabase_fixtures import APP_SCHEMA

# The slow tier: its own Supabase-shaped PostgreSQL 15 cluster.
pytestmark = pytest.mark.slow


def test_postgres_is_demoted_as_on_supabase(supabase_cluster: SupabaseCluster) -> None:
    with connect(supabase_cluster.postgres_dsn(), purpose="tests") as conn:
        roles = {
            r["rolname"]: r
            for r in conn.execute(
                "SELECT rolname, rolsuper, rolinherit, rolcanlogin, rolbypassrls, rolcreaterole, rolcreatedb,"
                " rolreplication FROM pg_roles"
                " WHERE rolname IN ('postgres', 'supabase_admin', 'anon', 'authenticated', 'service_role',"
                " 'authenticator')"
            ).fetchall()
        }
        postgres = roles["postgres"]
        assert not postgres["rolsuper"]
        assert postgres["rolcreatedb"] and postgres["rolcreaterole"] and postgres["rolcanlogin"]
        assert postgres["rolreplication"] and postgres["rolbypassrls"]
        assert roles["supabase_admin"]["rolsuper"]
        for api in ("anon", "authenticated", "service_role"):
            assert not roles[api]["rolcanlogin"] and not roles[api]["rolinherit"], api
        assert roles["service_role"]["rolbypassrls"] and not roles["anon"]["rolbypassrls"]
        assert roles["authenticator"]["rolcanlogin"] and not roles["authenticator"]["rolinherit"]
        members = conn.execute(
            "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid"
            " JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = 'authenticator' ORDER BY 1"
        ).fetchall()
        assert [m["rolname"] for m in members] == ["anon", "authenticated", "service_role"]
        row = conn.execute("SELECT current_setting('search_path') AS path").fetchone()
        assert row is not None and row["path"] == '"$user", public, extensions'
        # pg_cron was created by supabase_admin; postgres may schedule but not write cron.job
        row = conn.execute(
            "SELECT has_schema_privilege('cron', 'USAGE') AS usage,"
            " has_table_privilege('cron.job', 'INSERT') AS insert_job"
        ).fetchone()
        assert row == {"usage": True, "insert_job": False}


def test_migrate_as_postgres_installs_the_ledger_on_the_app_schema(supabase_cluster: SupabaseCluster) -> None:
    name = supabase.create_app_database(supabase_cluster, schema=[APP_SCHEMA], ledger=False)
    try:
        report = supabase.migrate_as_postgres(supabase_cluster, name)
        assert report.applied and report.applied[0] == "0001_session_ledger"
        assert report.pgmq != "present"
        again = supabase.migrate_as_postgres(supabase_cluster, name)
        assert again.applied == [] and again.pgmq == "present"
        with connect(supabase_cluster.postgres_dsn(name), purpose="tests") as conn:
            row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
            assert row == {"rolsuper": False}
            owners = conn.execute(
                "SELECT p.oid::regprocedure::text AS fn, p.proowner::regrole::text AS owner, p.proconfig"
                " FROM pg_proc p WHERE p.oid IN ('public.use_session(uuid)'::regprocedure,"
                " 'public.release_session(uuid)'::regprocedure, 'public.is_org_member(uuid)'::regprocedure)"
                " ORDER BY 1"
            ).fetchall()
            assert {o["owner"] for o in owners} == {"postgres"}
            hardened = {o["fn"]: o["proconfig"] for o in owners}
            assert hardened["use_session(uuid)"] == ["search_path=pg_catalog, pg_temp"]
            assert hardened["release_session(uuid)"] == ["search_path=pg_catalog, pg_temp"]
            trigger = conn.execute(
                "SELECT count(*) AS n FROM pg_trigger WHERE tgrelid = 'public.bookings'::regclass"
                " AND tgname LIKE 'session_ledger_%'"
            ).fetchone()
            assert trigger == {"n": 4}  # insert, update, delete, and the truncate refusal
    finally:
        supabase.drop_app_database(supabase_cluster, name)


def test_a_trainer_completing_through_the_api_is_charged(supabase_app_db: SupabaseAppDb) -> None:
    ledger = Ledger(supabase_app_db.postgres_dsn)
    try:
        studio = app_data.create_studio(ledger.conn)
        pack = app_data.create_pack(ledger.conn, studio, sessions_total=5)
        [booking] = app_data.create_bookings(ledger.conn, studio, pack)
        outsider = app_data.create_user(ledger.conn, "outsider@example.com")
        complete = "UPDATE public.bookings SET status = 'completed' WHERE id = %s"

        # RLS holds through the helper: a user of no organisation changes nothing.
        assert (
            supabase_app_db.request(complete, [booking], role="authenticated", user_id=outsider).rowcount == 0
        )
        assert (
            supabase_app_db.request(
                complete, [booking], role="authenticated", user_id=studio.trainer_user_id
            ).rowcount
            == 1
        )
        ledger.drain()

        assert ledger.sessions_used(pack) == 1
        row = ledger.ledger_row(booking)
        assert row is not None and row["state"] == "paid" and row["purchase_id"] == pack
        # the app's own trigger still runs beside the ledger's
        touched = ledger.conn.execute(
            "SELECT updated_at > created_at AS touched FROM public.bookings WHERE id = %s", [booking]
        ).fetchone()
        assert touched == {"touched": True}
    finally:
        ledger.close()


def test_the_crons_service_role_bulk_completion_charges_without_overdraw(
    supabase_app_db: SupabaseAppDb,
) -> None:
    ledger = Ledger(supabase_app_db.postgres_dsn)
    try:
        studio = app_data.create_studio(ledger.conn)
        pack = app_data.create_pack(ledger.conn, studio, sessions_total=2)
        bookings = app_data.create_bookings(ledger.conn, studio, pack, count=3)

        done = supabase_app_db.request(
            "UPDATE public.bookings SET status = 'completed' WHERE status = 'confirmed' AND end_time < now()",
            role="service_role",
        )
        assert done.rowcount == 3
        ledger.drain()

        assert ledger.sessions_used(pack) == 2
        states = sorted(r["state"] for r in (ledger.ledger_row(b) for b in bookings) if r is not None)
        assert states == ["paid", "paid", "unfunded"]
    finally:
        ledger.close()


def test_the_api_roles_reach_neither_the_queue_nor_the_ledger(supabase_app_db: SupabaseAppDb) -> None:
    # Supabase's default privileges grant the API roles ALL on every function postgres creates
    # in public, the ledger's included: the migration must have taken them back.
    with connect(supabase_app_db.postgres_dsn, purpose="tests") as conn:
        rows = conn.execute(
            """SELECT r AS role,
                      has_function_privilege(r, 'public.use_session(uuid, timestamptz)', 'EXECUTE') AS use_at,
                      has_function_privilege(r, 'public.use_session(uuid)', 'EXECUTE') AS use_now,
                      has_schema_privilege(r, 'session_ledger', 'USAGE') AS ledger,
                      has_table_privilege(r, 'pgmq.q_booking_events', 'SELECT') AS queue
               FROM unnest(ARRAY['anon', 'authenticated', 'service_role']) AS r ORDER BY 1"""
        ).fetchall()
    by_role = {r["role"]: r for r in rows}
    assert by_role["anon"] == {
        "role": "anon",
        "use_at": False,
        "use_now": False,
        "ledger": False,
        "queue": False,
    }
    assert by_role["authenticated"]["use_now"] and not by_role["authenticated"]["use_at"]
    assert not any(r["queue"] for r in rows)
    assert not by_role["authenticated"]["ledger"]


def test_auth_functions_read_both_claim_forms(supabase_app_db: SupabaseAppDb) -> None:
    user = uuid.uuid4()
    with connect(supabase_app_db.authenticator_dsn, autocommit=False, purpose="tests") as conn:
        conn.execute("SET LOCAL ROLE authenticated")
        conn.execute(
            "SELECT set_config('request.jwt.claims', %s, true)",
            [f'{{"sub": "{user}", "role": "authenticated", "email": "a@example.com"}}'],
        )
        row = conn.execute(
            "SELECT auth.uid() AS uid, auth.role() AS role, auth.email() AS email, auth.jwt() ->> 'sub' AS sub"
        ).fetchone()
        assert row == {"uid": user, "role": "authenticated", "email": "a@example.com", "sub": str(user)}
        conn.rollback()
        conn.execute("SET LOCAL ROLE authenticated")
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", [str(user)])
        row = conn.execute("SELECT auth.uid() AS uid").fetchone()
        assert row == {"uid": user}


def test_a_pg_cron_job_scheduled_by_postgres_completes_and_is_charged(supabase_app_db: SupabaseAppDb) -> None:
    cluster = supabase_app_db.cluster
    assert cluster.cron_database is not None
    ledger = Ledger(supabase_app_db.postgres_dsn)
    cron = connect(cluster.postgres_dsn(cluster.cron_database), purpose="tests")
    job = None
    try:
        studio = app_data.create_studio(ledger.conn)
        pack = app_data.create_pack(ledger.conn, studio, sessions_total=5)
        [booking] = app_data.create_bookings(ledger.conn, studio, pack)
        # Debian's pg_cron takes minutes only: the job runs at the next minute boundary.
        row = cron.execute(
            "SELECT cron.schedule_in_database('complete past', '* * * * *', %s, %s) AS job",
            [
                "UPDATE public.bookings SET status = 'completed' WHERE status = 'confirmed' AND end_time < now()",
                supabase_app_db.name,
            ],
        ).fetchone()
        assert row is not None
        job = row["job"]
        owner = cron.execute("SELECT username FROM cron.job WHERE jobid = %s", [job]).fetchone()
        assert owner == {"username": "postgres"}
        # The next minute boundary, and room for a loaded machine; ends as soon as the job has run.
        deadline = time.monotonic() + 150
        while True:
            run = cron.execute(
                "SELECT status, return_message FROM cron.job_run_details WHERE jobid = %s"
                " AND status IN ('succeeded', 'failed') ORDER BY runid LIMIT 1",
                [job],
            ).fetchone()
            if run is not None:
                break
            assert time.monotonic() < deadline, "the pg_cron job did not run within 150 s"
            time.sleep(0.5)
        assert run["status"] == "succeeded", run["return_message"]
        ledger.drain()
        assert ledger.sessions_used(pack) == 1
        charge = ledger.ledger_row(booking)
        assert charge is not None and charge["state"] == "paid"
    finally:
        if job is not None:
            cron.execute("SELECT cron.unschedule(%s)", [job])
        cron.close()
        ledger.close()


def test_use_1_session_through_the_api_is_for_the_packs_organisation_only(
    supabase_app_db: SupabaseAppDb,
) -> None:
    ledger = Ledger(supabase_app_db.postgres_dsn)
    try:
        studio = app_data.create_studio(ledger.conn)
        pack = app_data.create_pack(ledger.conn, studio, sessions_total=3)
        outsider = app_data.create_user(ledger.conn, "someone@example.com")
        use = "SELECT public.use_session(%s) AS ok"

        done = supabase_app_db.request(use, [pack], role="authenticated", user_id=studio.trainer_user_id)
        assert done.rows == [{"ok": True}]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            supabase_app_db.request(use, [pack], role="authenticated", user_id=outsider)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            supabase_app_db.request(use, [pack], role="anon")
        released = supabase_app_db.request(
            "SELECT public.release_session(%s) AS used",
            [pack],
            role="authenticated",
            user_id=studio.trainer_user_id,
        )
        assert released.rows == [{"used": 0}]
        assert ledger.sessions_used(pack) == 0
    finally:
        ledger.close()


def test_the_service_role_may_run_the_ledgers_own_cron_function(supabase_app_db: SupabaseAppDb) -> None:
    ledger = Ledger(supabase_app_db.postgres_dsn)
    try:
        studio = app_data.create_studio(ledger.conn)
        pack = app_data.create_pack(ledger.conn, studio, sessions_total=5)
        app_data.create_bookings(ledger.conn, studio, pack, count=2)
        done = supabase_app_db.request(
            "SELECT session_ledger.complete_past_bookings() AS n", role="service_role"
        )
        assert done.rows == [{"n": 2}]
        ledger.drain()
        assert ledger.sessions_used(pack) == 2
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            supabase_app_db.request(
                "SELECT session_ledger.complete_past_bookings()",
                role="authenticated",
                user_id=studio.trainer_user_id,
            )
    finally:
        ledger.close()
