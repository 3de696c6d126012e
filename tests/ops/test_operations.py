"""Operators' commands: reconcile, replay, dead-letter redrive and prune, against real databases."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from listener.core.db import connect
from listener.ops.walk import CHUNK
from listener.testing.checker import check, snapshot_used
from listener.testing.ledger import ListenerThread

from support.world import LISTENER, World, run_cli


def _bypassed(world: World, sql: str, params: list[object]) -> None:
    """Write as a restore or logical replication would: triggers do not fire."""
    with connect(world.ledger.dsn, autocommit=False) as conn:
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(sql, params)
        conn.commit()


def test_reconcile_repairs_bypassed_completions_cancels_and_moves(world: World) -> None:
    a, b = world.pack(sessions_total=10), world.pack(sessions_total=10)
    done, to_cancel, to_move, never_seen, untouched = world.bookings(a, count=5)
    start = snapshot_used(world.conn)
    for booking in (to_cancel, to_move, untouched):
        world.set_status(booking, "completed")
    world.drain()
    world.conn.execute("SELECT public.use_session(%s)", [b])  # the trainer's manual "use 1 session"
    start[b] += 1
    _bypassed(
        world, "UPDATE public.bookings SET status = 'completed' WHERE id = ANY(%s)", [[done, never_seen]]
    )
    _bypassed(world, "UPDATE public.bookings SET status = 'cancelled' WHERE id = %s", [to_cancel])
    _bypassed(world, "UPDATE public.bookings SET purchase_id = %s WHERE id = %s", [b, to_move])
    assert world.queue() == []
    before = snapshot_used(world.conn)

    dry = run_cli("reconcile", "--dsn", world.ledger.dsn, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["out_of_sync"] == 4
    assert plan["outcomes"] == {"paid": 2, "moved": 1, "released": 1}
    assert snapshot_used(world.conn) == before  # a dry run changes nothing
    # In text too, each booking by its whole id (what `replay` and the dashboard take) and its action.
    text = run_cli("reconcile", "--dsn", world.ledger.dsn, "--dry-run", env={"COLUMNS": "80"})
    assert text.returncode == 0, text.stderr
    actions = {done: "paid", never_seen: "paid", to_cancel: "released", to_move: "moved"}
    listed = {
        line.split()[0]: line.split()[1]
        for line in text.stdout.splitlines()
        if line.strip()[:36] in map(str, actions)
    }
    assert listed == {str(b): a for b, a in actions.items()}, text.stdout
    assert "bookings out of sync (each): what reconcile would change" in text.stdout
    assert max(len(line) for line in text.stdout.splitlines()) <= 80
    assert {b["booking_id"] for b in plan["bookings"]} == {str(b) for b in actions}
    assert snapshot_used(world.conn) == before

    result = run_cli("reconcile", "--dsn", world.ledger.dsn, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["outcomes"] == {"moved": 1, "paid": 2, "released": 1}
    per_pack = {p["purchase_id"]: p for p in report["packs"]}
    assert per_pack[str(a)]["net"] == 2 - 1 - 1
    assert per_pack[str(b)]["net"] == 1
    verdict = check(world.conn, start)
    assert verdict.ok, verdict.examples
    assert world.used(b) == 2  # the manual adjustment survives

    again = json.loads(run_cli("reconcile", "--dsn", world.ledger.dsn, "--json").stdout)
    assert again["out_of_sync"] == 0 and again["packs"] == []


def _wait_until_blocked(world: World, proc: subprocess.Popen[str], blocker_pid: int) -> None:
    """Return once reconcile's connection waits on a lock held by blocker_pid; fail if it exits instead."""
    deadline = time.monotonic() + 60
    while True:
        row = world.conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'session-ledger reconcile'"
            " AND %s = ANY (pg_blocking_pids(pid))",
            [blocker_pid],
        ).fetchone()
        if row is not None and row["n"] > 0:
            return
        assert proc.poll() is None, f"reconcile exited before it was blocked: {proc.communicate()}"
        assert time.monotonic() < deadline, "reconcile never waited on the test's lock"
        time.sleep(0.01)


def test_reconcile_interrupted_and_rerun_charges_each_booking_once(world: World) -> None:
    """Interrupted between two chunks, at a point the test holds it: the first chunk stays, the rest waits."""
    packs = [world.pack(sessions_total=10_000) for _ in range(3)]
    total = CHUNK + CHUNK // 2  # two chunks: one to commit, one to interrupt
    bookings = [b for p in packs for b in world.bookings(p, count=total // len(packs))]
    assert len(bookings) == total
    start = snapshot_used(world.conn)
    _bypassed(world, "UPDATE public.bookings SET status = 'completed' WHERE id = ANY(%s)", [bookings])
    with (
        connect(world.ledger.dsn, autocommit=False, purpose="tests packs") as packs_lock,
        connect(world.ledger.dsn, purpose="tests bookings") as bookings_lock,
    ):
        # 1. The packs, locked: the first chunk takes its bookings' locks, then waits on a pack.
        packs_lock.execute(
            "SELECT 1 FROM public.client_purchases WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [packs]
        )
        proc = subprocess.Popen(
            [*LISTENER, "reconcile", "--dsn", world.ledger.dsn],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_until_blocked(world, proc, packs_lock.info.backend_pid)
            # 2. Every booking lock the first chunk does not hold (apply_bookings' per-booking
            # advisory lock): the second chunk cannot start. Then the packs go free.
            row = bookings_lock.execute(
                "SELECT count(*) FILTER (WHERE pg_try_advisory_lock(7391, hashtext(b::text))) AS n"
                " FROM unnest(%s::uuid[]) AS b",
                [bookings],
            ).fetchone()
            assert row is not None and 0 < row["n"] <= total - CHUNK
            packs_lock.rollback()
            # 3. The first chunk committed; the second waits on the test: interrupt it there.
            _wait_until_blocked(world, proc, bookings_lock.info.backend_pid)
            committed = world.conn.execute("SELECT count(*) AS n FROM session_ledger.charges").fetchone()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert "Traceback" not in err
    assert proc.returncode == 130, err  # interrupted mid-run, not finished
    assert "interrupted" in err
    assert committed is not None and committed["n"] == CHUNK
    partial = world.conn.execute("SELECT count(*) AS n FROM session_ledger.charges").fetchone()
    assert partial is not None and partial["n"] == CHUNK, "the interrupted chunk left nothing behind"
    assert sum(world.used(p) for p in packs) == CHUNK
    rerun = run_cli("reconcile", "--dsn", world.ledger.dsn, "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["out_of_sync"] == total - CHUNK
    verdict = check(world.conn, start)
    assert verdict.ok, verdict.examples
    assert sum(world.used(p) for p in packs) == total


def test_replay_from_archive_repairs_and_never_double_charges(world: World) -> None:
    pack = world.pack(sessions_total=10)
    kept, stale = world.bookings(pack, count=2)
    world.set_status(kept, "completed")
    world.set_status(stale, "completed")
    world.drain()
    _bypassed(world, "UPDATE public.bookings SET status = 'cancelled' WHERE id = %s", [stale])
    assert world.used(pack) == 2

    dry = run_cli("replay", "--from-archive", "--dsn", world.ledger.dsn, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["actions"] == {"no-op": 1, "released": 1}
    assert world.queue() == []

    for _ in range(2):
        result = run_cli("replay", "--from-archive", "--dsn", world.ledger.dsn, "--json")
        assert json.loads(result.stdout)["enqueued"] == 2
        world.drain()
    assert world.used(pack) == 1
    assert world.ledger_state(stale) == ("released", pack)


def test_replay_filters_by_booking_and_time(world: World) -> None:
    pack = world.pack(sessions_total=10)
    first, second = world.bookings(pack, count=2)
    world.set_status(first, "completed")
    world.set_status(second, "completed")
    world.drain()
    one = json.loads(
        run_cli(
            "replay", "--from-archive", "--dsn", world.ledger.dsn, "--booking", str(first), "--json"
        ).stdout
    )
    assert one["enqueued"] == 1
    assert [m["message"]["booking_id"] for m in world.queue()] == [str(first)]  # type: ignore[index]
    future = json.loads(
        run_cli(
            "replay", "--from-archive", "--dsn", world.ledger.dsn, "--since", "2999-01-01T00:00:00", "--json"
        ).stdout
    )
    assert future["bookings"] == 0 and future["enqueued"] == 0


def test_replay_bad_input_changes_nothing(world: World) -> None:
    pack = world.pack(sessions_total=10)
    [b] = world.bookings(pack)
    world.set_status(b, "completed")
    world.drain()
    unknown = run_cli(
        "replay",
        "--from-archive",
        "--dsn",
        world.ledger.dsn,
        "--booking",
        "00000000-0000-0000-0000-000000000000",
    )
    assert unknown.returncode == 1
    assert "no archived events for booking(s) 00000000-0000-0000-0000-000000000000" in unknown.stderr
    overlap = run_cli(
        "replay",
        "--from-archive",
        "--dsn",
        world.ledger.dsn,
        "--since",
        "2026-02-01",
        "--until",
        "2026-01-01",
    )
    assert overlap.returncode == 2 and "--since must be earlier than --until" in overlap.stderr
    for args in (
        ["--from-archive", "--dead-letter"],
        [],
        ["--dead-letter"],
        ["--from-archive", "--booking", "x"],
    ):
        bad = run_cli("replay", *args, "--dsn", world.ledger.dsn)
        assert bad.returncode == 2, args
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    missing = run_cli("replay", "--dead-letter", "--id", "424242", "--dsn", world.ledger.dsn)
    assert missing.returncode == 1 and "no dead letter with id 424242" in missing.stderr
    assert world.queue() == []
    assert world.used(pack) == 1


def test_dead_letter_shows_in_status_and_is_handled_once_after_redrive(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    world.conn.execute(
        f"ALTER TABLE public.client_purchases ADD CONSTRAINT frozen CHECK (sessions_used = 0 OR id <> '{pack}')"
    )
    world.set_status(booking, "completed")
    world.drain()
    [dead] = world.dead_letters()
    assert "23514" in str(dead["reason"])
    status = json.loads(run_cli("status", "--dsn", world.ledger.dsn, "--json").stdout)
    assert status["dead_letter_depth"] == 1
    assert "23514" in status["dead_letter_reasons"][0]["reason"]

    dry = run_cli(
        "replay", "--dead-letter", "--id", str(dead["msg_id"]), "--dsn", world.ledger.dsn, "--dry-run"
    )
    assert dry.returncode == 0 and "23514" in dry.stdout and "would move 1" in dry.stdout
    assert len(world.dead_letters()) == 1 and world.queue() == []

    world.conn.execute("ALTER TABLE public.client_purchases DROP CONSTRAINT frozen")  # the cause, fixed
    moved = json.loads(
        run_cli("replay", "--dead-letter", "--all", "--dsn", world.ledger.dsn, "--json").stdout
    )
    assert moved["moved"] == 1 and moved["dead_letters"][0]["reason"] == dead["reason"]
    world.drain()
    assert world.used(pack) == 1
    assert world.dead_letters() == []
    again = run_cli("replay", "--dead-letter", "--all", "--dsn", world.ledger.dsn, "--json")
    assert json.loads(again.stdout)["moved"] == 0
    world.drain()
    assert world.used(pack) == 1


def test_prune_removes_only_archive_rows_past_retention(world: World) -> None:
    pack = world.pack(sessions_total=10)
    bookings = world.bookings(pack, count=6)
    for b in bookings:
        world.set_status(b, "completed")
    world.drain()
    world.conn.execute(
        "UPDATE pgmq.a_booking_events SET archived_at = now() - interval '40 days'"
        " WHERE msg_id IN (SELECT msg_id FROM pgmq.a_booking_events ORDER BY msg_id LIMIT 4)"
    )
    result = run_cli("prune", "--older-than", "30d", "--dsn", world.ledger.dsn)
    assert result.returncode == 0, result.stderr
    assert "removed 4 archived event(s)" in result.stdout
    left = world.conn.execute("SELECT count(*) AS n FROM pgmq.a_booking_events").fetchone()
    assert left is not None and left["n"] == 2
    assert world.used(pack) == 6
    bad = run_cli("prune", "--older-than", "thirty days", "--dsn", world.ledger.dsn)
    assert bad.returncode == 2 and "cannot read duration" in bad.stderr


def test_prune_never_removes_a_live_listeners_row(world: World) -> None:
    # A wide live window: the running listener stays live however slowly this machine runs.
    world.conn.execute("UPDATE session_ledger.config SET listener_live_window = interval '1 hour'")
    pack = world.pack(sessions_total=10)
    first, second = world.bookings(pack, count=2)
    listener = ListenerThread(world.ledger.dsn).start()
    try:
        world.set_status(first, "completed")
        world.ledger.drain(listener_running=True)
        before = world.conn.execute(
            "SELECT started_at, paid FROM session_ledger.listeners WHERE id = %s", [listener.worker.id]
        ).fetchone()
        assert before is not None and before["paid"] == 1
        # A listener that stopped a minute ago, and one that died two hours ago without saying so.
        world.conn.execute(
            "INSERT INTO session_ledger.listeners (id, host, pid, started_at, heartbeat_at, stopped_at) VALUES"
            " (gen_random_uuid(), 'old', 1, now() - interval '1 day', now() - interval '1 minute',"
            "  now() - interval '1 minute'),"
            " (gen_random_uuid(), 'crashed', 2, now() - interval '1 day', now() - interval '2 hours', NULL)"
        )

        result = run_cli("prune", "--older-than", "0s", "--force", "--dsn", world.ledger.dsn)
        assert result.returncode == 0, result.stderr
        assert "and 2 old listener heartbeat(s)" in result.stdout
        left = world.conn.execute("SELECT id, started_at, paid FROM session_ledger.listeners").fetchall()
        assert left == [{"id": listener.worker.id, **before}]

        # Its counters go on from where they were; it was never re-registered.
        world.set_status(second, "completed")
        world.ledger.drain(listener_running=True)
        after = world.conn.execute(
            "SELECT started_at, paid FROM session_ledger.listeners WHERE id = %s", [listener.worker.id]
        ).fetchone()
        assert after == {"started_at": before["started_at"], "paid": 2}
    finally:
        listener.stop()
    # Stopped now: past a zero retention, its row goes too.
    result = run_cli("prune", "--older-than", "0s", "--force", "--dsn", world.ledger.dsn)
    assert "and 1 old listener heartbeat(s)" in result.stdout
    assert world.conn.execute("SELECT count(*) AS n FROM session_ledger.listeners").fetchone() == {"n": 0}
