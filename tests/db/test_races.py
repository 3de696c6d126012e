"""Racing writers, several listeners, and listeners that die between read and commit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from psycopg import sql
from pydantic import SecretStr

from listener.core.db import connect
from listener.core.worker import Worker
from listener.settings import Settings
from listener.testing.checker import check, snapshot_used
from listener.testing.ledger import ListenerThread

from support.world import LISTENER, World

# Every wait below ends as soon as its condition holds; the deadline only bounds a failure,
# so it is generous enough for a loaded two-core machine.
WAIT_S = 60.0


def _wait_until(condition: Callable[[], bool], failure: str, timeout: float = WAIT_S) -> None:
    """Poll `condition` until it holds; fail with `failure` if it has not after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{failure} (waited {timeout:.0f}s)"
        time.sleep(0.02)


def _workers_waiting_on_a_lock(world: World) -> set[int]:
    """Backend pids of listener worker connections whose statement waits on a lock."""
    rows = world.conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'session-ledger worker' AND wait_event_type = 'Lock'"
    ).fetchall()
    return {int(r["pid"]) for r in rows}


def _backends_alive(world: World, pids: set[int]) -> set[int]:
    """Those of these backend pids that still exist."""
    rows = world.conn.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)]).fetchall()
    return {int(r["pid"]) for r in rows}


def test_browser_and_cron_racing_on_the_same_bookings_charge_once(world: World, ledger_dsn: str) -> None:
    pack = world.pack(sessions_total=200)
    bookings = world.bookings(pack, count=60)
    start = snapshot_used(world.conn)
    listeners = [ListenerThread(ledger_dsn, batch_size=7).start() for _ in range(2)]
    try:

        def browser() -> None:
            for b in random.sample(bookings, len(bookings)):
                world.ledger.complete_as_user(b, world.org.trainer_user_id)

        threads = [threading.Thread(target=browser) for _ in range(2)]
        for t in threads:
            t.start()
        for _ in range(3):
            world.ledger.bulk_complete()
        for t in threads:
            t.join()
        world.ledger.drain(listener_running=True, timeout=WAIT_S)
    finally:
        for lt in listeners:
            lt.stop()
    verdict = check(world.conn, start)
    assert verdict.ok, verdict.examples
    assert world.used(pack) == 60


def test_complete_cancel_toggles_across_two_listeners_converge(world: World, ledger_dsn: str) -> None:
    pack_a, pack_b = world.pack(sessions_total=500), world.pack(sessions_total=500)
    bookings = world.bookings(pack_a, count=40)
    # Three events for one booking, queued before any listener runs: whichever comes second
    # finds the ledger already converged, so the dedupe path runs however the race below goes.
    [toggled] = world.bookings(pack_a)
    for status in ("completed", "cancelled", "completed"):
        world.set_status(toggled, status)
    start = snapshot_used(world.conn)
    listeners = [ListenerThread(ledger_dsn, batch_size=5).start() for _ in range(2)]
    rng = random.Random(7)
    try:

        def writer(seed: int) -> None:
            local = random.Random(seed)
            with connect(ledger_dsn) as conn:
                for _ in range(150):
                    b = local.choice(bookings)
                    if local.random() < 0.2:
                        conn.execute(
                            "UPDATE public.bookings SET purchase_id = %s WHERE id = %s",
                            [local.choice([pack_a, pack_b]), b],
                        )
                    else:
                        conn.execute(
                            "UPDATE public.bookings SET status = %s WHERE id = %s",
                            [local.choice(["completed", "cancelled", "confirmed"]), b],
                        )

        threads = [threading.Thread(target=writer, args=(rng.random(),)) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        world.ledger.drain(listener_running=True, timeout=WAIT_S)
    finally:
        for lt in listeners:
            lt.stop()
    verdict = check(world.conn, start)
    assert verdict.ok, verdict.examples
    assert world.ledger_state(toggled) == ("paid", pack_a)
    noops = sum(lt.worker.stats.outcomes["no-op"] for lt in listeners)
    assert noops > 0  # the dedupe path ran


def test_listener_dying_between_read_and_commit_loses_nothing(world: World) -> None:
    pack = world.pack(sessions_total=50)
    bookings = world.bookings(pack, count=10)
    for b in bookings:
        world.set_status(b, "completed")
    # A listener that read the whole batch and died before committing anything. Its claim
    # lasts an hour, so nothing this test does can outlast it by accident.
    claimed = world.conn.execute("SELECT * FROM session_ledger.read_events(100, 3600)").fetchall()
    assert len(claimed) == 10
    Worker(Settings(dsn=SecretStr(world.ledger.dsn), poll_interval_s=0.05)).run(drain=True)
    assert world.used(pack) == 0  # still invisible: the dead listener's claim holds
    # The claim runs out, as it would at the end of that hour.
    world.conn.execute(
        "SELECT pgmq.set_vt('booking_events', id, 0) FROM unnest(%s::bigint[]) AS id",
        [[m["msg_id"] for m in claimed]],
    )
    Worker(Settings(dsn=SecretStr(world.ledger.dsn), poll_interval_s=0.05)).run(drain=True)
    assert world.used(pack) == 10
    redelivered = world.conn.execute(
        "SELECT count(*) AS n, min(read_ct) AS lo, max(read_ct) AS hi FROM pgmq.a_booking_events"
    ).fetchone()
    assert redelivered == {"n": 10, "lo": 2, "hi": 2}  # each read by the dead listener, then once more


def test_kill_9_of_listener_processes_mid_run_loses_and_doubles_nothing(
    world: World, ledger_dsn: str
) -> None:
    packs = [world.pack(sessions_total=2000) for _ in range(4)]
    bookings = [b for p in packs for b in world.bookings(p, count=1000)]
    start = snapshot_used(world.conn)
    # A backend whose client was killed notices within 50 ms, even while it waits on a lock, and
    # rolls the batch back; without this it would finish the batch for its dead client.
    db = world.conn.execute("SELECT current_database() AS db").fetchone()
    assert db is not None
    world.conn.execute(
        sql.SQL("ALTER DATABASE {} SET client_connection_check_interval = '50ms'").format(
            sql.Identifier(db["db"])
        )
    )
    batch_size = 20
    args = [
        *LISTENER,
        "run",
        "--dsn",
        ledger_dsn,
        "--batch-size",
        str(batch_size),
        "--visibility-timeout",
        "1",
        "--poll-interval",
        "0.1",
        "--log-format",
        "json",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL) for _ in range(2)]
    rounds = 5
    chunk = len(bookings) // rounds
    try:
        with connect(ledger_dsn) as conn:
            for r in range(rounds):
                with connect(ledger_dsn, autocommit=False, purpose="tests blocker") as blocker:
                    # Every pack locked: each listener's next batch stops in its hands, uncommitted.
                    blocker.execute(
                        "SELECT 1 FROM public.client_purchases WHERE id = ANY(%s) FOR UPDATE", [packs]
                    )
                    conn.execute(
                        "UPDATE public.bookings SET status = 'completed' WHERE id = ANY(%s)",
                        [bookings[r * chunk : (r + 1) * chunk]],
                    )
                    _wait_until(
                        lambda: len(_workers_waiting_on_a_lock(world)) == len(procs),
                        "the listeners never both held a batch",
                    )
                    in_hand = _workers_waiting_on_a_lock(world)
                    victim = random.randrange(len(procs))
                    procs[victim].send_signal(signal.SIGKILL)
                    procs[victim].wait()
                    # The dead listener's backend gives up its batch while the lock still holds it back.
                    _wait_until(
                        lambda: len(_backends_alive(world, in_hand)) == len(in_hand) - 1,
                        "the killed listener's backend never noticed",
                    )
                    procs[victim] = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
                    blocker.rollback()
        world.ledger.drain(listener_running=True, timeout=WAIT_S)
        _wait_registered(world, [p.pid for p in procs])
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(timeout=WAIT_S) == 0
    verdict = check(world.conn, start)
    assert verdict.ok, verdict.examples
    assert sum(world.used(p) for p in packs) == len(bookings)
    # The killed batches came back once their claims ran out, and were charged once.
    again = world.conn.execute(
        "SELECT count(*) AS n FROM pgmq.a_booking_events WHERE read_ct >= 2"
    ).fetchone()
    assert again is not None and again["n"] >= batch_size


def _wait_registered(world: World, pids: list[int]) -> None:
    """Wait until these processes have installed their signal handlers and registered."""

    def registered() -> bool:
        row = world.conn.execute(
            "SELECT count(DISTINCT pid) AS n FROM session_ledger.listeners WHERE pid = ANY(%s)", [pids]
        ).fetchone()
        return row is not None and row["n"] == len(pids)

    _wait_until(registered, "listeners did not register")


def test_sigterm_finishes_the_batch_and_exits_zero(world: World, ledger_dsn: str) -> None:
    pack = world.pack(sessions_total=10)
    [booking] = world.bookings(pack)
    proc = subprocess.Popen([*LISTENER, "run", "--dsn", ledger_dsn], stderr=subprocess.PIPE, text=True)
    _wait_registered(world, [proc.pid])
    with connect(ledger_dsn, autocommit=False) as blocker:
        # The pack's row is locked, so the listener's batch is in hand and waiting when SIGTERM arrives.
        blocker.execute("SELECT 1 FROM public.client_purchases WHERE id = %s FOR UPDATE", [pack])
        world.set_status(booking, "completed")
        _wait_until(lambda: bool(_workers_waiting_on_a_lock(world)), "no listener blocked on the locked pack")
        proc.send_signal(signal.SIGTERM)
        assert world.used(pack) == 0
        blocker.rollback()
    _, err = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert world.used(pack) == 1  # the batch in hand was finished, not dropped
    assert world.queue() == []
    stopped = world.conn.execute(
        "SELECT count(*) AS n FROM session_ledger.listeners WHERE stopped_at IS NOT NULL"
    ).fetchone()
    assert stopped is not None and stopped["n"] == 1


def test_sigterm_under_concurrent_write_load_stops_after_the_batch_in_hand(
    world: World, ledger_dsn: str, tmp_path: Path
) -> None:
    packs = [world.pack(sessions_total=5000) for _ in range(2)]
    bookings = [b for p in packs for b in world.bookings(p, count=300)]
    start = snapshot_used(world.conn)
    # A file, not a pipe: a pipe nobody reads until the end would stall the listener's logging.
    log_path = tmp_path / "listener.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [*LISTENER, "run", "--dsn", ledger_dsn, "--batch-size", "50"], stderr=log, text=True
        )
    _wait_registered(world, [proc.pid])
    stop = threading.Event()
    commits = [0] * 4

    def writer(index: int) -> None:
        # pgbench-like: short transactions back to back, each completing or reopening a few bookings.
        rng = random.Random(index)
        with connect(ledger_dsn, purpose="tests writer") as conn:
            while not stop.is_set():
                chosen = rng.sample(bookings, rng.randint(1, 5))
                status = rng.choice(["completed", "confirmed"])
                with conn.transaction():
                    conn.execute(
                        "UPDATE public.bookings SET status = %s WHERE id = ANY(%s)", [status, chosen]
                    )
                commits[index] += 1

    def unread() -> list[int]:
        rows = world.conn.execute("SELECT msg_id FROM pgmq.q_booking_events WHERE read_ct = 0").fetchall()
        return [int(r["msg_id"]) for r in rows]

    writers = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(len(commits))]
    for w in writers:
        w.start()
    try:
        _wait_until(lambda: sum(world.used(p) for p in packs) > 0, "the listener never charged under load")
        with connect(ledger_dsn, autocommit=False, purpose="tests blocker") as blocker:
            # Both packs locked: the listener's next batch is in hand and waiting when SIGTERM arrives.
            blocker.execute("SELECT 1 FROM public.client_purchases WHERE id = ANY(%s) FOR UPDATE", [packs])
            _wait_until(
                lambda: bool(_workers_waiting_on_a_lock(world)), "no listener blocked on the locked packs"
            )
            proc.send_signal(signal.SIGTERM)
            commits_then = sum(commits)
            # While it stops, the writers keep committing, and queue events behind its batch.
            _wait_until(
                lambda: sum(commits) >= commits_then + 20 and len(unread()) > 0,
                "the writers stalled while the listener was stopping",
            )
            assert proc.poll() is None, "it left without finishing the batch in hand"
            behind = unread()
            blocker.rollback()
        proc.wait(timeout=WAIT_S)
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=WAIT_S)
        if proc.poll() is None:
            proc.kill()
    err = log_path.read_text()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert min(commits) > 0
    # It finished the batch in hand and left: what was queued behind it was never read by it.
    still_unread = world.conn.execute(
        "SELECT count(*) AS n FROM pgmq.q_booking_events WHERE msg_id = ANY(%s) AND read_ct = 0", [behind]
    ).fetchone()
    assert still_unread == {"n": len(behind)}
    stopped = world.conn.execute(
        "SELECT count(*) AS n FROM session_ledger.listeners WHERE pid = %s AND stopped_at IS NOT NULL",
        [proc.pid],
    ).fetchone()
    assert stopped is not None and stopped["n"] == 1
    # What it left behind is charged exactly once by the next listener.
    world.drain()
    verdict = check(world.conn, start)
    assert verdict.ok, verdict.examples


def _wait_asleep(world: World, listener: uuid.UUID) -> None:
    """Wait until the listener has said it sleeps and has made its last look: only a NOTIFY wakes it now."""

    def said_so() -> bool:
        row = world.conn.execute(
            "SELECT waiting FROM session_ledger.listeners WHERE id = %s", [listener]
        ).fetchone()
        return row is not None and bool(row["waiting"])

    _wait_until(said_so, "the listener never said it was waiting for a NOTIFY")

    def looked_again() -> bool:
        # After saying so it reads the queue once more, closing the race with writers, then sleeps.
        row = world.conn.execute(
            "SELECT state, query FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'session-ledger worker'"
        ).fetchone()
        return row is not None and row["state"] == "idle" and "read_events" in row["query"]

    _wait_until(looked_again, "the listener never made its last look before sleeping")


def test_a_sleeping_listener_is_woken_by_a_notify_not_a_poll(world: World, ledger_dsn: str) -> None:
    pack = world.pack(sessions_total=10)
    [booking] = world.bookings(pack)
    # Neither a poll nor a heartbeat wakes it for an hour: within the wait below, only a NOTIFY can.
    thread = ListenerThread(ledger_dsn, poll_interval_s=3600, heartbeat_interval_s=3600).start()
    try:
        _wait_asleep(world, thread.worker.id)
        world.set_status(booking, "completed")
        _wait_until(lambda: world.used(pack) == 1, "the sleeping listener was not woken by the NOTIFY")
    finally:
        thread.stop()


def test_lost_wakeup_connection_reconnects_and_catches_up(world: World, ledger_dsn: str) -> None:
    pack = world.pack(sessions_total=10)
    bookings = world.bookings(pack, count=3)
    thread = ListenerThread(ledger_dsn, poll_interval_s=30).start()
    terminated: set[int] = set()

    def connected() -> bool:
        rows = world.conn.execute(
            "SELECT DISTINCT application_name AS app FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name IN ('session-ledger worker', 'session-ledger wakeup') AND pid <> ALL(%s)",
            [list(terminated)],
        ).fetchall()
        return len(rows) == 2

    try:
        for b in bookings:
            # Each loss hits a listener whose two connections are up: the first ones, then the new ones.
            _wait_until(connected, "the listener did not reconnect")
            rows = world.conn.execute(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name IN ('session-ledger worker', 'session-ledger wakeup')"
            ).fetchall()
            terminated |= {int(r["pid"]) for r in rows}
            world.set_status(b, "completed")
        _wait_until(lambda: world.used(pack) == 3, "the listener did not catch up")
        assert world.used(pack) == 3
        assert thread.worker.stats.reconnects + thread.worker.wakeup.reconnects >= 1
        # one listener, reconnected under its own id: not a second registration
        listeners = world.conn.execute("SELECT id FROM session_ledger.listeners").fetchall()
        assert [r["id"] for r in listeners] == [thread.worker.id]
    finally:
        thread.stop()


def test_batch_in_hand_is_retried_after_its_connection_dies(world: World, ledger_dsn: str) -> None:
    pack = world.pack(sessions_total=10)
    [booking] = world.bookings(pack)
    # Its claim lasts an hour: a charge within the wait below is a retry in hand, not a redelivery.
    thread = ListenerThread(ledger_dsn, visibility_timeout_s=3600).start()
    try:
        with connect(ledger_dsn, autocommit=False) as blocker:
            blocker.execute("SELECT 1 FROM public.client_purchases WHERE id = %s FOR UPDATE", [pack])
            world.set_status(booking, "completed")
            _wait_until(
                lambda: bool(_workers_waiting_on_a_lock(world)), "the listener never blocked on the pack"
            )
            [victim] = _workers_waiting_on_a_lock(world)
            world.conn.execute("SELECT pg_terminate_backend(%s)", [victim])
            blocker.rollback()
        _wait_until(lambda: world.used(pack) == 1, "the batch in hand was not retried")
        assert thread.worker.stats.reconnects >= 1
    finally:
        thread.stop()


def test_a_silent_middlebox_is_detected_by_the_call_deadline(world: World, ledger_dsn: str) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from faults.network import Proxy

    params = conninfo_to_dict(ledger_dsn)
    host, port = str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)
    target = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
    proxy = Proxy("127.0.0.1", target)
    via_proxy = make_conninfo(ledger_dsn, host="127.0.0.1", port=proxy.port)
    pack = world.pack(sessions_total=10)
    first, second = world.bookings(pack, count=2)
    # A read whose reply the middlebox swallowed still claimed its messages: a short visibility
    # timeout lets them come back soon after the path does.
    thread = ListenerThread(
        via_proxy, call_deadline_s=2, statement_timeout_s=1, poll_interval_s=0.2, visibility_timeout_s=3
    ).start()
    try:
        world.set_status(first, "completed")
        _wait_until(lambda: world.used(pack) == 1, "the first completion was not charged")
        proxy.stall()  # keeps every socket open and acknowledged, forwards nothing
        before = thread.worker.stats.reconnects
        world.set_status(second, "completed")
        # Keep-alives and tcp_user_timeout never fire (the proxy acknowledges everything) and the
        # server never sees the query: only the listener's own call deadline can end the hung call.
        _wait_until(lambda: thread.worker.stats.reconnects > before, "the hung call was never abandoned")
        proxy.reset_all()
        _wait_until(
            lambda: world.used(pack) == 2, "the second completion was not charged after the path came back"
        )
    finally:
        proxy.reset_all()
        thread.stop()
        proxy.close()
