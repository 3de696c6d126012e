"""`listener uninstall`: the ledger goes, the app's tables, balances and own functions stay."""

from __future__ import annotations

from typing import Any

from listener.core.db import Conn
from listener.core.sql_files import migrations
from listener.ops.migrate import migrate
from listener.testing.checker import check, snapshot_used
from listener.testing.ledger import ListenerThread

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
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.bookings'::regclass"
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
    pinned = "\n SET search_path TO 'public', 'extensions', 'pg_temp'\nAS $function$"
    for signature, definition in originals.items():
        # The app's own body, with its search_path pinned so a temporary table cannot shadow a pack.
        assert _functiondef(conn, signature) == definition.replace("\nAS $function$", pinned, 1)
    assert "WARNING: the app's original bodies check nobody" in result.stdout

    # The app is on its own again: a completion enqueues nothing and charges nothing,
    # and its own use_session deducts as it always did.
    world.set_status(later, "completed")
    assert world.used(pack) == 3
    assert _one(conn, "SELECT public.use_session(%s)", [pack]) is True
    assert world.used(pack) == 4

    again = run_cli("uninstall", "--dsn", dsn, "--yes")
    assert again.returncode == 0 and "nothing to uninstall" in again.stdout

    # Reinstall: both completed bookings are adopted as already paid, and the ledger works:
    # every pack's balance is again its start plus its paid bookings.
    report = migrate(dsn)
    assert report.applied == [f"{m.version:04d}_{m.name}" for m in migrations()]
    assert _installed_objects(conn) == {
        "schema": True,
        "triggers": 3,
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
    assert _installed_objects(conn)["triggers"] == 3
    assert world.used(pack) == 1
