"""Racing writers, several listeners, and listeners that die between read and commit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time

from pydantic import SecretStr

from listener.core.db import connect
from listener.core.worker import Worker
from listener.settings import Settings
from listener.testing.checker import check, snapshot_used
from listener.testing.ledger import ListenerThread

from support.world import LISTENER, World


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
        world.ledger.drain(listener_running=True)
    finally:
        for lt in listeners:
            lt.stop()
    verdict = check(world.conn, start)
    assert verdict.ok, verdict.examples
    assert world.used(pack) == 60


def test_complete_cancel_toggles_across_two_listeners_converge(world: World, ledger_dsn: str) -> None:
    pack_a, pack_b = world.pack(sessions_total=500), world.pack(sessions_total=500)
    bookings = world.bookings(pack_a, count=40)
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
        world.ledger.drain(listener_running=True)
    finally:
        for lt in listeners:
            lt.stop()
    verdict = check(world.conn, start)
    assert verdict.ok, verdict.examples
    noops = sum(lt.worker.stats.outcomes["no-op"] for lt in listeners)
    assert noops > 0  # the dedupe path ran


def test_listener_dying_between_read_and_commit_loses_nothing(world: World) -> None:
    pack = world.pack(sessions_total=50)
    bookings = world.bookings(pack, count=10)
    for b in bookings:
        world.set_status(b, "completed")
    # A listener that read the whole batch and died before committing anything.
    claimed = world.conn.execute("SELECT * FROM session_ledger.read_events(100, 1)").fetchall()
    assert len(claimed) == 10
    Worker(Settings(dsn=SecretStr(world.ledger.dsn), poll_interval_s=0.05)).run(drain=True)
    assert world.used(pack) == 0  # still invisible: the dead listener's claim holds
    time.sleep(1.2)
    Worker(Settings(dsn=SecretStr(world.ledger.dsn), poll_interval_s=0.05)).run(drain=True)
    assert world.used(pack) == 10
    redelivered = world.conn.execute("SELECT min(read_ct) AS r FROM pgmq.a_booking_events").fetchone()
    assert redelivered is not None and redelivered["r"] == 2


def test_kill_9_of_listener_processes_mid_run_loses_and_doubles_nothing(
    world: World, ledger_dsn: str
) -> None:
    packs = [world.pack(sessions_total=2000) for _ in range(4)]
    bookings = [b for p in packs for b in world.bookings(p, count=1000)]
    start = snapshot_used(world.conn)
    args = [
        *LISTENER,
        "run",
        "--dsn",
        ledger_dsn,
        "--batch-size",
        "20",
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
    # A kill counts only if events were still queued just before it: how fast the
    # listeners drain must not decide whether this test kills anything mid-run.
    kills_with_work_queued = 0
    try:
        with connect(ledger_dsn) as conn:
            for r in range(rounds):
                conn.execute(
                    "UPDATE public.bookings SET status = 'completed' WHERE id = ANY(%s)",
                    [bookings[r * chunk : (r + 1) * chunk]],
                )
                time.sleep(random.uniform(0.02, 0.15))
                victim = random.randrange(len(procs))
                queued = world.ledger.queue_depth()
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait()
                kills_with_work_queued += queued > 0
                procs[victim] = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
        world.ledger.drain(listener_running=True, timeout=60)
        _wait_registered(world, [p.pid for p in procs])
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(timeout=20) == 0
    assert kills_with_work_queued >= 3
    verdict = check(world.conn, start)
    assert verdict.ok, verdict.examples
    assert sum(world.used(p) for p in packs) == len(bookings)


def _wait_registered(world: World, pids: list[int]) -> None:
    """Wait until these processes have installed their signal handlers and registered."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = world.conn.execute(
            "SELECT count(DISTINCT pid) AS n FROM session_ledger.listeners WHERE pid = ANY(%s)", [pids]
        ).fetchone()
        if row is not None and row["n"] == len(pids):
            return
        time.sleep(0.05)
    raise TimeoutError("listeners did not register")


def test_sigterm_finishes_the_batch_and_exits_zero(world: World, ledger_dsn: str) -> None:
    pack = world.pack(sessions_total=10)
    [booking] = world.bookings(pack)
    proc = subprocess.Popen([*LISTENER, "run", "--dsn", ledger_dsn], stderr=subprocess.PIPE, text=True)
    _wait_registered(world, [proc.pid])
    with connect(ledger_dsn, autocommit=False) as blocker:
        # The pack's row is locked, so the listener's batch is in hand and waiting when SIGTERM arrives.
        blocker.execute("SELECT 1 FROM public.client_purchases WHERE id = %s FOR UPDATE", [pack])
        world.set_status(booking, "completed")
        _wait_blocked_on_a_lock(world)
        proc.send_signal(signal.SIGTERM)
        assert world.used(pack) == 0
        blocker.rollback()
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert world.used(pack) == 1  # the batch in hand was finished, not dropped
    assert world.queue() == []
    stopped = world.conn.execute(
        "SELECT count(*) AS n FROM session_ledger.listeners WHERE stopped_at IS NOT NULL"
    ).fetchone()
    assert stopped is not None and stopped["n"] == 1


def _wait_blocked_on_a_lock(world: World) -> None:
    """Wait until a listener's statement waits on a lock."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        row = world.conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name LIKE 'session-ledger %%' AND wait_event_type = 'Lock'"
        ).fetchone()
        if row is not None and row["n"] > 0:
            return
        time.sleep(0.02)
    raise TimeoutError("no listener blocked on the locked pack")


def test_sigterm_under_concurrent_write_load_exits_zero_within_seconds(world: World, ledger_dsn: str) -> None:
    packs = [world.pack(sessions_total=5000) for _ in range(2)]
    bookings = [b for p in packs for b in world.bookings(p, count=300)]
    start = snapshot_used(world.conn)
    proc = subprocess.Popen(
        [*LISTENER, "run", "--dsn", ledger_dsn, "--batch-size", "50"],
        stderr=subprocess.PIPE,
        text=True,
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

    writers = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(len(commits))]
    for w in writers:
        w.start()
    try:
        deadline = time.monotonic() + 20
        while sum(world.used(p) for p in packs) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # well into the load: batches in flight
        signalled, commits_then = time.monotonic(), sum(commits)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
        took = time.monotonic() - signalled
        commits_during_stop = sum(commits) - commits_then
    finally:
        stop.set()
        for w in writers:
            w.join(timeout=10)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert took < 5.0, f"took {took:.1f}s to stop under load"
    assert min(commits) > 0
    assert commits_during_stop > 0  # the writers kept committing while it stopped
    stopped = world.conn.execute(
        "SELECT count(*) AS n FROM session_ledger.listeners WHERE pid = %s AND stopped_at IS NOT NULL",
        [proc.pid],
    ).fetchone()
    assert stopped is not None and stopped["n"] == 1
    # What it left behind is charged exactly once by the next listener.
    world.drain()
    verdict = check(world.conn, start)
    assert verdict.ok, verdict.examples


def test_listener_notified_charges_quickly_without_waiting_for_a_poll(world: World, ledger_dsn: str) -> None:
    pack = world.pack(sessions_total=10)
    [booking] = world.bookings(pack)
    thread = ListenerThread(ledger_dsn, poll_interval_s=30).start()
    try:
        time.sleep(0.3)  # past the idle looks: only a NOTIFY can wake it now
        world.set_status(booking, "completed")
        deadline = time.monotonic() + 5
        while world.used(pack) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert world.used(pack) == 1
    finally:
        thread.stop()


def test_lost_wakeup_connection_reconnects_and_catches_up(world: World, ledger_dsn: str) -> None:
    pack = world.pack(sessions_total=10)
    bookings = world.bookings(pack, count=3)
    thread = ListenerThread(ledger_dsn, poll_interval_s=30).start()
    try:
        for b in bookings:
            time.sleep(0.3)
            world.conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name LIKE 'session-ledger %%'"
                " AND pid <> pg_backend_pid()"
            )
            world.set_status(b, "completed")
        deadline = time.monotonic() + 20
        while world.used(pack) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
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
    thread = ListenerThread(ledger_dsn, visibility_timeout_s=60).start()
    try:
        with connect(ledger_dsn, autocommit=False) as blocker:
            blocker.execute("SELECT 1 FROM public.client_purchases WHERE id = %s FOR UPDATE", [pack])
            world.set_status(booking, "completed")
            deadline = time.monotonic() + 10
            victim = None
            while victim is None and time.monotonic() < deadline:
                row = world.conn.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'session-ledger worker'"
                    " AND datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()
                victim = row["pid"] if row else None
                time.sleep(0.01)
            assert victim is not None, "the listener never blocked on the pack"
            world.conn.execute("SELECT pg_terminate_backend(%s)", [victim])
            blocker.rollback()
        started = time.monotonic()
        while world.used(pack) == 0 and time.monotonic() - started < 10:
            time.sleep(0.02)
        # Well inside the 60 s visibility timeout: the batch in hand was retried, not abandoned.
        assert world.used(pack) == 1
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
        deadline = time.monotonic() + 10
        while world.used(pack) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert world.used(pack) == 1
        proxy.stall()  # keeps every socket open and acknowledged, forwards nothing
        before = thread.worker.stats.reconnects
        world.set_status(second, "completed")
        deadline = time.monotonic() + 8
        while thread.worker.stats.reconnects == before and time.monotonic() < deadline:
            time.sleep(0.05)
        # The hung call was abandoned by the listener itself, while the middlebox was still silent.
        assert thread.worker.stats.reconnects > before
        proxy.reset_all()
        deadline = time.monotonic() + 20
        while world.used(pack) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert world.used(pack) == 2
    finally:
        proxy.reset_all()
        thread.stop()
        proxy.close()
