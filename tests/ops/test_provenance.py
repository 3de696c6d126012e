"""Who caused every charge: on the ledger row, in `listener replay --dry-run` and in `listener audit`."""

from __future__ import annotations

import json

from support.world import World, run_cli

TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_replay_dry_run_names_who_caused_each_archived_event(world: World) -> None:
    pack = world.pack(sessions_total=5)
    booking, other = world.bookings(pack, count=2)
    conn = world.conn
    with conn.transaction():
        conn.execute("SELECT set_config('request.headers', %s, true)", [json.dumps({"traceparent": TRACE})])
        conn.execute(
            "SELECT set_config('request.jwt.claims', %s, true)",
            [json.dumps({"sub": str(world.org.trainer_user_id)})],
        )
        conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [booking])
    world.set_status(other, "completed")
    world.drain()
    row = conn.execute(
        "SELECT caused_by FROM session_ledger.charges WHERE booking_id = %s", [booking]
    ).fetchone()
    assert row is not None and row["caused_by"]["trace"] == TRACE
    # Behind the trigger's back, the booking is cancelled: a replay from the archive would release it.
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE public.bookings SET status = 'cancelled' WHERE id = %s", [booking])
    dry = run_cli("replay", "--from-archive", "--dry-run", "--json", "--dsn", world.ledger.dsn)
    assert dry.returncode == 0, dry.stderr
    [example] = json.loads(dry.stdout)["examples"]
    assert example["booking_id"] == str(booking) and example["action"] == "released"
    assert example["caused_by"]["trace"] == TRACE
    assert example["caused_by"]["uid"] == str(world.org.trainer_user_id)
    text = run_cli("replay", "--from-archive", "--dry-run", "--dsn", world.ledger.dsn, env={"COLUMNS": "100"})
    assert text.returncode == 0, text.stderr
    assert f"trace {TRACE.split('-')[1][:8]}" in text.stdout and str(booking)[:8] in text.stdout


def test_audit_counts_the_old_codes_absorbed_calls_and_manual_adjustments(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack, count=1)
    conn = world.conn
    world.set_status(booking, "completed")
    assert conn.execute("SELECT public.use_session(%s) AS ok", [pack]).fetchone() == {"ok": True}  # an echo
    conn.execute("SELECT public.use_session(%s, 'extra session')", [pack])  # by hand
    world.drain()
    assert world.used(pack) == 2
    report = json.loads(run_cli("audit", "--json", "--dsn", world.ledger.dsn).stdout)
    [calls] = [c for c in report["calls"] if c["purchase_id"] == str(pack)]
    assert (calls["absorbed"], calls["legacy_moved"], calls["manual_moved"]) == (1, 0, 1)
    text = " ".join(run_cli("audit", "--dsn", world.ledger.dsn).stdout.split())
    assert "1 of the app's old calls absorbed as echoes of booking writes" in text
