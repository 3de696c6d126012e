"""`listener uninstall`: the ledger goes, the app's tables, balances and own functions stay."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from psycopg import errors, sql

from listener.core.db import Conn
from listener.core.sql_files import migrations, query
from listener.ops.migrate import migrate
from listener.testing import app_data, supabase
from listener.testing.checker import check, snapshot_used
from listener.testing.ledger import Ledger, ListenerThread
from listener.testing.supabase import SupabaseAppDb

from support.world import World, run_cli


def _one(conn: Conn, sql: str, params: list[Any] | None = None) -> Any:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return next(iter(row.values()))


def _installed_objects(conn: Conn) -> dict[str, Any]:
    return {
        "schema": _one(conn, "SELECT to_regnamespace('session_ledger') IS NOT NULL"),
        "triggers": _one(
            conn,
            "SELECT count(*) FROM pg_trigger"
            " WHERE tgrelid IN ('public.bookings'::regclass, 'public.client_purchases'::regclass)"
            " AND tgname LIKE 'session_ledger%%'",
        ),
        "queues": _one(
            conn,
            "SELECT count(*) FROM pgmq.meta WHERE queue_name IN ('booking_events', 'booking_events_dlq')",
        ),
        "two_arg_use_session": _one(
            conn, "SELECT to_regprocedure('public.use_session(uuid, timestamptz)') IS NOT NULL"
        ),
    }


def _functiondef(conn: Conn, signature: str) -> str:
    return str(_one(conn, "SELECT pg_get_functiondef(to_regprocedure(%s))", [signature]))


def _use_session_as(conn: Conn, role: str, pack: uuid.UUID) -> Any:
    """The app's use_session(pack), called as role in a transaction of its own."""
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        return _one(conn, "SELECT public.use_session(%s)", [pack])


def _executors(conn: Conn) -> dict[str, list[str]]:
    """Who besides the owner may execute the app's use_session(uuid) and release_session(uuid)."""
    return {
        signature: [
            r["grantee"]
            for r in conn.execute(query("uninstall_function_executors"), {"signature": signature}).fetchall()
        ]
        for signature in ("public.use_session(uuid)", "public.release_session(uuid)")
    }


def test_uninstall_keeps_balances_restores_functions_and_migrate_reinstalls(world: World) -> None:
    conn, dsn = world.conn, world.ledger.dsn
    pack = world.pack(sessions_total=10, sessions_used=2)
    start = snapshot_used(conn)
    done, later = world.bookings(pack, count=2)
    world.set_status(done, "completed")
    world.drain()
    assert world.used(pack) == 3
    originals = {
        r["signature"]: r["definition"]
        for r in conn.execute(
            "SELECT signature, definition FROM session_ledger.replaced_functions"
        ).fetchall()
    }
    assert set(originals) == {"public.use_session(uuid)", "public.release_session(uuid)"}
    assert _functiondef(conn, "public.use_session(uuid)") != originals["public.use_session(uuid)"]
    described = "SELECT obj_description('public.use_session(uuid)'::regprocedure, 'pg_proc') AS d"
    assert _one(conn, described), "the ledger describes the app's function while installed"
    bookings_before = conn.execute("SELECT * FROM public.bookings ORDER BY id").fetchall()
    packs_before = conn.execute("SELECT * FROM public.client_purchases ORDER BY id").fetchall()

    result = run_cli("uninstall", "--dsn", dsn, "--yes")
    assert result.returncode == 0, result.stderr
    assert "pgmq schema" in result.stdout

    assert _installed_objects(conn) == {
        "schema": False,
        "triggers": 0,
        "queues": 0,
        "two_arg_use_session": False,
    }
    assert _one(conn, "SELECT to_regnamespace('pgmq') IS NOT NULL"), "pgmq itself stays for other queues"
    assert conn.execute("SELECT * FROM public.bookings ORDER BY id").fetchall() == bookings_before
    assert conn.execute("SELECT * FROM public.client_purchases ORDER BY id").fetchall() == packs_before
    assert _one(conn, described) is None, "the ledger's description leaves with it"
    pinned = "\n SET search_path TO 'public', 'extensions', 'pg_temp'\nAS $function$"
    for signature, definition in originals.items():
        # The app's own body, with its search_path pinned so a temporary table cannot shadow a pack.
        assert _functiondef(conn, signature) == definition.replace("\nAS $function$", pinned, 1)
    # Their bodies check nobody: only the server side may call them now.
    assert (
        "revoked EXECUTE on them from PUBLIC, anon, authenticated: their bodies check nobody; "
        "may execute them now: service_role; --keep-grants keeps the grants"
    ) in result.stdout
    assert _executors(conn) == {signature: ["service_role"] for signature in originals}
    for role in ("anon", "authenticated"):
        with pytest.raises(errors.InsufficientPrivilege):
            _use_session_as(conn, role, pack)

    # The app is on its own again: a completion enqueues nothing and charges nothing,
    # and its own use_session deducts as it always did, for the server side.
    world.set_status(later, "completed")
    assert world.used(pack) == 3
    assert _use_session_as(conn, "service_role", pack) is True
    assert world.used(pack) == 4

    again = run_cli("uninstall", "--dsn", dsn, "--yes")
    assert again.returncode == 0 and "nothing to uninstall" in again.stdout

    # Reinstall: both completed bookings are adopted as already paid, and the ledger works:
    # every pack's balance is again its start plus its paid bookings.
    report = migrate(dsn)
    assert report.applied == [f"{m.version:04d}_{m.name}" for m in migrations()]
    assert _installed_objects(conn) == {
        "schema": True,
        "triggers": 6,
        "queues": 2,
        "two_arg_use_session": True,
    }
    assert world.ledger_state(later) == ("paid", pack)
    world.set_status(done, "cancelled")
    world.drain()
    assert world.used(pack) == 3
    verdict = check(conn, start)
    assert verdict.ok, verdict.examples


def test_uninstall_refuses_without_yes_with_waiting_events_or_a_running_listener(world: World) -> None:
    conn, dsn = world.conn, world.ledger.dsn
    pack = world.pack(sessions_total=10)
    [booking] = world.bookings(pack)

    refused = run_cli("uninstall", "--dsn", dsn)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "--yes" in refused.stderr

    world.set_status(booking, "completed")
    waiting = run_cli("uninstall", "--dsn", dsn, "--yes")
    assert waiting.returncode == 1
    assert waiting.stderr.strip() == (
        "listener uninstall: 1 booking event is still waiting: run `listener run --drain` first, then uninstall"
    )
    assert _installed_objects(conn)["schema"], "a refused uninstall removes nothing"

    listener = ListenerThread(dsn).start()
    try:
        world.ledger.drain(listener_running=True)
        running = run_cli("uninstall", "--dsn", dsn, "--yes")
    finally:
        listener.stop()
    assert running.returncode == 1
    assert "a listener is running" in running.stderr and "stop it first, then uninstall" in running.stderr
    assert "Traceback" not in running.stderr
    assert _installed_objects(conn)["triggers"] == 6
    assert world.used(pack) == 1


def test_uninstall_keep_grants_keeps_them_and_says_so(world: World) -> None:
    conn, dsn = world.conn, world.ledger.dsn
    pack = world.pack(sessions_total=10)
    result = run_cli("uninstall", "--dsn", dsn, "--yes", "--keep-grants")
    assert result.returncode == 0, result.stderr
    assert (
        "kept their grants (--keep-grants): authenticated, service_role may execute them; "
        "WARNING: their bodies check nobody"
    ) in result.stdout
    assert "revoked" not in result.stdout
    assert _executors(conn) == {
        "public.use_session(uuid)": ["authenticated", "service_role"],
        "public.release_session(uuid)": ["authenticated", "service_role"],
    }
    # Which is what --keep-grants is for, and why it is not the default: a signed-in role moves a pack.
    assert _use_session_as(conn, "authenticated", pack) is True
    assert world.used(pack) == 1


def test_uninstall_refuses_unresolved_dead_letters_unless_forced(world: World) -> None:
    conn, dsn = world.conn, world.ledger.dsn
    world.send_raw('\'{"type": "something.else"}\'::jsonb')
    world.drain()
    assert len(world.dead_letters()) == 1

    refused = run_cli("uninstall", "--dsn", dsn, "--yes")
    assert refused.returncode == 1
    assert refused.stderr == (
        "listener uninstall: 1 dead letter is unresolved: redrive it (`listener replay --dead-letter --all`, "
        "then `listener run --drain`), discard it (`listener discard --dead-letter --all --reason TEXT`), "
        "or pass --force to drop it with the ledger\n"
    )
    assert _installed_objects(conn)["schema"] and len(world.dead_letters()) == 1, "a refusal removes nothing"

    forced = run_cli("uninstall", "--dsn", dsn, "--yes", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "dropped 1 unresolved dead letter(s) with the dead-letter queue (--force)" in forced.stdout
    assert _installed_objects(conn)["schema"] is False


@pytest.mark.slow  # its own Supabase-shaped cluster
def test_after_uninstall_on_supabase_no_api_role_moves_another_orgs_pack(
    supabase_app_db: SupabaseAppDb,
) -> None:
    dsn = supabase_app_db.postgres_dsn  # the owner, as Supabase runs migrations and uninstall
    ledger = Ledger(dsn)
    try:
        ours, theirs = app_data.create_studio(ledger.conn, "A"), app_data.create_studio(ledger.conn, "B")
        pack = app_data.create_pack(ledger.conn, theirs, sessions_total=10, sessions_used=2)
        result = run_cli("uninstall", "--dsn", dsn, "--yes")
        assert result.returncode == 0, result.stderr
        assert "may execute them now: service_role;" in result.stdout

        # Another organisation's client and trainer, and anon, as PostgREST sends their RPCs.
        callers = [
            ("authenticated", ours.client_user_id),
            ("authenticated", ours.trainer_user_id),
            ("anon", None),
        ]
        for role, user in callers:
            for call in ("SELECT public.use_session(%s)", "SELECT public.release_session(%s)"):
                with pytest.raises(errors.InsufficientPrivilege):
                    supabase_app_db.request(call, [pack], role=role, user_id=user)
        assert ledger.sessions_used(pack) == 2
        # The server side (the cron's service-role key) keeps its deduction.
        used = supabase_app_db.request("SELECT public.use_session(%s) AS ok", [pack], role="service_role")
        assert used.rows == [{"ok": True}] and ledger.sessions_used(pack) == 3

        # Reinstalled, then removed keeping the grants: the hole the default closes is open again.
        supabase.migrate_as_postgres(supabase_app_db.cluster, supabase_app_db.name)
        kept = run_cli("uninstall", "--dsn", dsn, "--yes", "--keep-grants")
        assert kept.returncode == 0, kept.stderr
        assert (
            "kept their grants (--keep-grants): authenticated, service_role may execute them" in kept.stdout
        )
        for _ in range(2):
            supabase_app_db.request(
                "SELECT public.use_session(%s)", [pack], role="authenticated", user_id=ours.client_user_id
            )
        assert ledger.sessions_used(pack) == 5
    finally:
        ledger.close()


def test_uninstall_then_migrate_adopts_a_booking_its_expired_pack_never_paid_for_as_unfunded(
    world: World,
) -> None:
    conn, dsn = world.conn, world.ledger.dsn
    now = datetime.now().astimezone()
    expired = world.pack(sessions_total=10, expires_at=now - timedelta(days=3))
    given = world.pack(sessions_total=10, sessions_used=0)
    [late] = world.bookings(expired, start=now - timedelta(days=2))
    [free] = world.bookings(given, start=now - timedelta(days=2))
    world.set_status(late, "completed")
    world.drain()
    assert world.ledger_state(late) == ("unfunded", expired)

    assert run_cli("uninstall", "--dsn", dsn, "--yes").returncode == 0
    # The app alone again: its cron completes a session and charges nothing.
    world.set_status(free, "completed")
    migrate(dsn)
    # The expired pack could never pay for a session after it expired: not adopted as paid.
    row = conn.execute(
        "SELECT state, reason, source FROM session_ledger.charges WHERE booking_id = %s", [late]
    ).fetchone()
    assert row == {"state": "unfunded", "reason": "pack expired before the session", "source": "adoption"}
    assert world.ledger_state(free) == ("paid", given)

    result = run_cli("audit", "--dsn", dsn, "--charge-all", "--yes")
    assert result.returncode == 0, result.stderr
    assert "charged 1 session(s) on 1 pack(s); 0 session(s) on 0 pack(s) could not be paid" in result.stdout
    assert (world.used(expired), world.used(given)) == (0, 1)
