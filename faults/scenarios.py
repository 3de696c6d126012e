"""The scenarios. Each drives real writes against real listener processes, injects one kind of fault,
then drains and runs the checker over the final state and the write history (faults/harness.py)."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from faults.cluster import Cluster
from faults.harness import (
    WAKEUP_APP,
    WORKER_APP,
    Harness,
    Result,
    active_batches,
    backends,
    set_db,
    terminate,
)
from faults.network import NetNs, Proxy
from faults.observe import percentile
from faults.procs import owner_of_backend
from faults.world import Writer
from listener.core.db import connect
from listener.devtools import demo_data

# -- 1. kill -9 ------------------------------------------------------------------


def kills(dsn: str, workdir: Path, *, quick: bool, seed: int = 1) -> Result:
    """kill -9 of listener processes at random moments and in the middle of batches."""
    h = Harness("kills", "kill -9 of listeners mid-run", dsn, workdir, seed=seed)
    try:
        n_listeners, events, n_kills = (2, 1500, 4) if quick else (3, 20_000, 60)
        with h.conn() as conn:
            # Lets the server notice a killed client mid-statement and roll its batch back.
            set_db(conn, "client_connection_check_interval", "50ms")
        h.make_world(packs=8, bookings=600 if quick else 3000)
        flags = ["--visibility-timeout", "3", "--poll-interval", "0.5", "--batch-size", "200"]
        fleet = h.fleet(n_listeners, flags)
        h.writer("owner", 12, batch=(1, 40))
        h.writer("owner", 12, batch=(1, 40))
        h.writer("browser", 10)
        h.writer("cron", 0.25)
        h.start_writers()
        expected_s = events / (150 if quick else 330)
        gap = expected_s / (n_kills * 1.15)
        mid_batch = 0
        pending: list[tuple[float, int]] = []
        deadline = time.monotonic() + (120 if quick else 600)
        with h.conn() as conn:
            while (h.history.events < events or fleet.kills < n_kills) and time.monotonic() < deadline:
                time.sleep(h.rng.uniform(0.5, 1.5) * gap)
                victim = None
                if fleet.kills % 2 == 0:
                    # Aim for a listener that has read a batch and not committed it.
                    look_until = time.monotonic() + 1.0
                    while victim is None and time.monotonic() < look_until:
                        for b in active_batches(conn):
                            owner = owner_of_backend(b["pid"], b["client_port"], fleet.pids())
                            if owner is not None:
                                victim = fleet.slot_of(owner)
                                break
                        if victim is None:
                            time.sleep(0.005)
                    mid = victim is not None
                else:
                    mid = False
                if victim is None:
                    victim = h.rng.choice(fleet.slots)
                t = time.monotonic()
                fleet.kill(victim)
                h.faults += 1
                mid_batch += mid
                assert victim.proc is not None
                pending.append((t, victim.proc.pid))
                h.history.note("kill -9", slot=victim.index, mid_batch=mid, replacement=victim.proc.pid)
        h.finish_writers()
        h.wait_registered(fleet)
        for t, pid in pending:
            seen = h.sampler.seen_at(pid)
            if seen is not None:
                h.recoveries.append(seen - t)
        h.extra["kills"] = fleet.kills
        h.extra["kills_mid_batch"] = mid_batch
        result = h.finish(drain_timeout=120)
        h.expect(fleet.kills >= n_kills, f"only {fleet.kills} kills")
        h.expect(mid_batch >= (1 if quick else 10), f"only {mid_batch} kills landed mid-batch")
        h.expect(h.history.events >= events, f"only {h.history.events} events")
        return result
    except BaseException:
        h.abort()
        raise


# -- 2. PostgreSQL restarts --------------------------------------------------------


def restarts(dsn: str, workdir: Path, *, quick: bool, cluster: Cluster, seed: int = 2) -> Result:
    """pg_ctl restart -m fast and -m immediate of the suite's own cluster while events flow."""
    h = Harness("restarts", "PostgreSQL restarted (fast + immediate)", dsn, workdir, seed=seed)
    try:
        modes = ["fast", "immediate"] if quick else ["fast", "immediate"] * 3
        h.make_world(packs=6, bookings=400 if quick else 1500)
        fleet = h.fleet(3, ["--visibility-timeout", "5", "--poll-interval", "0.5"])
        h.writer("owner", 15, batch=(1, 20))
        h.writer("browser", 8)
        h.writer("cron", 0.2)
        h.start_writers()
        resumes: list[dict[str, Any]] = []
        for mode in modes:
            time.sleep(h.rng.uniform(4, 7))
            t0 = time.monotonic()
            h.history.note("restart", mode=mode)
            ready = cluster.restart(mode)
            h.faults += 1
            with connect(dsn, purpose="faults") as conn:
                row = conn.execute(
                    "SELECT clock_timestamp() - make_interval(secs => %s) AS ts", [time.monotonic() - ready]
                ).fetchone()
                assert row is not None
                ready_ts = row["ts"]
                pids = fleet.pids()
                back: dict[int, float] = {}
                limit = time.monotonic() + 30
                while len(back) < len(pids) and time.monotonic() < limit:
                    for r in conn.execute(
                        "SELECT pid FROM session_ledger.listeners WHERE heartbeat_at >= %s AND pid = ANY(%s)",
                        [ready_ts, pids],
                    ).fetchall():
                        back.setdefault(int(r["pid"]), time.monotonic() - ready)
                    time.sleep(0.05)
            worst = max(back.values()) if len(back) == len(pids) else None
            resumes.append(
                {
                    "mode": mode,
                    "down_s": round(ready - t0, 3),
                    "resume_s": None if worst is None else round(worst, 3),
                }
            )
            if worst is not None:
                h.recoveries.append(worst)
            h.expect(worst is not None and worst <= 5.0, f"listeners resumed {worst}s after a {mode} restart")
        h.extra["restarts"] = resumes
        return h.finish(drain_timeout=120)
    except BaseException:
        h.abort()
        raise


# -- 3. pg_terminate_backend -------------------------------------------------------


def terminate_backends(dsn: str, workdir: Path, *, quick: bool, seed: int = 3) -> Result:
    """pg_terminate_backend on the LISTEN and worker connections every few seconds."""
    h = Harness("terminate", "pg_terminate_backend of LISTEN + worker", dsn, workdir, seed=seed)
    try:
        rounds = 4 if quick else 20
        world = h.make_world(packs=4, bookings=400 if quick else 1200)
        with connect(dsn, purpose="faults-setup") as conn:
            probe_pack = demo_data.create_pack(conn, world.org, sessions_total=1000)
            probes = demo_data.create_bookings(conn, world.org, probe_pack, count=rounds)
            world.starting_used[probe_pack] = 0
        # A long poll interval: only a NOTIFY or the catch-up after a reconnect can be fast.
        poll = 5.0
        fleet = h.fleet(2, ["--visibility-timeout", "5", "--poll-interval", str(poll)])
        h.writer("owner", 8, batch=(1, 15))
        h.writer("browser", 5)
        probe_writer = Writer(
            world, h.history, "probe", kind="owner", rate=1, stop=h.stop_writers, seed=seed, rollback_share=0
        )
        h.start_writers()
        catch_up: list[float] = []
        with h.conn() as conn:
            for i in range(rounds):
                time.sleep(h.rng.uniform(1.5, 3.0))
                app = WAKEUP_APP if i % 2 == 0 else WORKER_APP
                victims = backends(conn, app)
                if app == WORKER_APP and i % 4 == 1:
                    busy = [int(b["pid"]) for b in active_batches(conn)]
                    victims = busy[:1] or victims[:1]
                t = time.monotonic()
                n = terminate(conn, victims)
                h.faults += n
                h.history.note("terminate", app=app, pids=victims)
                if app == WAKEUP_APP:
                    # Written while no LISTEN exists: only the catch-up read finds it quickly.
                    probe_writer._write("owner", [probes[i]], "completed", None)
                    w0 = time.monotonic()
                    limit = w0 + 3 * poll
                    while time.monotonic() < limit:
                        row = conn.execute(
                            "SELECT state FROM session_ledger.charges WHERE booking_id = %s", [probes[i]]
                        ).fetchone()
                        if row is not None and row["state"] == "paid":
                            catch_up.append(time.monotonic() - w0)
                            break
                        time.sleep(0.02)
                limit = t + 30
                while time.monotonic() < limit:
                    fresh = set(backends(conn, app)) - set(victims)
                    if len(fresh) >= len(fleet.pids()):
                        h.recoveries.append(time.monotonic() - t)
                        break
                    time.sleep(0.02)
        h.extra["catch_up_p50_s"] = percentile(catch_up, 0.5)
        h.extra["catch_up_max_s"] = round(max(catch_up), 3) if catch_up else None
        h.extra["poll_interval_s"] = poll
        h.expect(len(catch_up) == (rounds + 1) // 2, f"only {len(catch_up)} probes were charged")
        h.expect(bool(catch_up) and max(catch_up) < poll, f"catch-up took up to {h.extra['catch_up_max_s']}s")
        h.expect(len(h.recoveries) == rounds, "a listener did not reconnect after a terminate")
        return h.finish(drain_timeout=60)
    except BaseException:
        h.abort()
        raise


# -- 3b / checker proof: kill -9 while a batch waits on a pack lock, real and broken listener --


def kill_mid_batch(
    dsn: str, workdir: Path, *, quick: bool, broken: str | None = None, seed: int = 31
) -> Result:
    """kill -9 of a listener whose batch is blocked on a pack lock; with broken=..., an ack-first listener."""
    name = f"broken-{broken}" if broken else "kill-mid-batch"
    title = f"checker vs a broken listener ({broken})" if broken else "kill -9 while a batch waits on a lock"
    h = Harness(name, title, dsn, workdir, seed=seed)
    try:
        kills_wanted = 3 if quick else 8
        with h.conn() as conn:
            # The server notices the dead client during the lock wait and rolls the batch back.
            set_db(conn, "client_connection_check_interval", "50ms")
        world = h.make_world(packs=2, bookings=600)
        module = "faults.broken_listener" if broken else "listener"
        flags = ["--visibility-timeout", "3", "--poll-interval", "0.2"]
        if broken:
            flags += ["--mode", broken]
        fleet = h.fleet(1, flags, module=module, name=name)
        # Distinct completions only: an event whose batch is lost has nothing later to repair it.
        h.writer("owner", 10, batch=(5, 20), statuses=("completed",), move_share=0, rollback_share=0)
        holder = PackLocker(dsn, world.packs, hold_s=1.5, gap_s=0.3)
        holder.start()
        h.start_writers()
        pending: list[tuple[float, int]] = []
        deadline = time.monotonic() + (40 if quick else 90)
        with h.conn() as conn:
            while fleet.kills < kills_wanted and time.monotonic() < deadline:
                stuck = active_batches(conn, waiting_on_lock=True)
                owner = None
                if stuck:
                    owner = owner_of_backend(stuck[0]["pid"], stuck[0]["client_port"], fleet.pids())
                slot = fleet.slot_of(owner) if owner is not None else None
                if slot is None:
                    time.sleep(0.05)
                    continue
                t = time.monotonic()
                fleet.kill(slot)
                h.faults += 1
                assert slot.proc is not None
                pending.append((t, slot.proc.pid))
                h.history.note("kill -9 mid-batch", backend=stuck[0]["pid"], replacement=slot.proc.pid)
                h.wait_registered(fleet)
        h.finish_writers()
        holder.stop()
        for t, pid in pending:
            seen = h.sampler.seen_at(pid)
            if seen is not None:
                h.recoveries.append(seen - t)
        h.extra["kills_mid_batch"] = fleet.kills
        h.expect(fleet.kills >= kills_wanted, f"only {fleet.kills} kills landed mid-batch")
        if broken:
            # A correct listener drains whatever the broken one left: lost events stay lost.
            fleet.stop()
            h.fleet(1, ["--poll-interval", "0.2"], name="drainer")
        result = h.finish(drain_timeout=60, expect_checker_to_fail=bool(broken))
        if broken and not result.figures["lost"]:
            result.failures.append("the checker reported no lost event")
        return result
    except BaseException:
        h.abort()
        raise


class PackLocker(threading.Thread):
    """Holds a row lock on packs for hold_s at a time, as a slow app transaction would."""

    def __init__(self, dsn: str, packs: list[uuid.UUID], *, hold_s: float, gap_s: float) -> None:
        super().__init__(name="faults-pack-locker", daemon=True)
        self.dsn = dsn
        self.packs = packs
        self.hold_s = hold_s
        self.gap_s = gap_s
        self.stop_event = threading.Event()
        self.holds = 0

    def run(self) -> None:
        """Lock, wait, commit, repeat."""
        with connect(self.dsn, autocommit=False, purpose="faults-locker") as conn:
            while not self.stop_event.is_set():
                # NO KEY UPDATE: blocks use_session's UPDATE but not a booking's foreign-key check.
                conn.execute(
                    "SELECT id FROM public.client_purchases WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE",
                    [self.packs],
                )
                self.stop_event.wait(self.hold_s)
                conn.commit()
                self.holds += 1
                self.stop_event.wait(self.gap_s)

    def stop(self) -> None:
        """Release the lock and end the thread."""
        self.stop_event.set()
        self.join(timeout=10)


# -- the second broken listener: no ledger ------------------------------------------


def broken_no_ledger(dsn: str, workdir: Path, *, quick: bool, seed: int = 32) -> Result:
    """Toggles and pack moves against a listener that charges without the ledger."""
    h = Harness("broken-no-ledger", "checker vs a broken listener (no-ledger)", dsn, workdir, seed=seed)
    try:
        h.make_world(packs=3, bookings=200)
        h.fleet(1, ["--mode", "no-ledger", "--poll-interval", "0.2"], module="faults.broken_listener")
        h.writer("owner", 20, batch=(1, 10))
        h.start_writers()
        limit = time.monotonic() + 30
        while h.history.events < (400 if quick else 1500) and time.monotonic() < limit:
            time.sleep(0.05)
        result = h.finish(drain_timeout=60, expect_checker_to_fail=True)
        caught = result.figures["double_charged"] > 0 or result.figures["lost"] > 0
        if not caught:
            result.failures.append("the checker reported neither lost nor double charges")
        return result
    except BaseException:
        h.abort()
        raise


# -- 4. listeners down, and NOTIFY suppressed ------------------------------------------


def backlog(dsn: str, workdir: Path, *, quick: bool, seed: int = 4) -> Result:
    """Every listener down while completions land; they start and drain by reading the queue."""
    h = Harness("backlog", "listeners down while 2k completions land", dsn, workdir, seed=seed)
    try:
        n = 500 if quick else 2000
        world = h.make_world(packs=4, bookings=n + 200)
        fleet = h.fleet(2, ["--poll-interval", "1"])
        fleet.stop()
        h.faults += 1
        w = Writer(world, h.history, "bulk", kind="owner", rate=1, stop=h.stop_writers, seed=seed)
        for i in range(0, n, 50):
            w._write("owner", world.bookings[i : i + 50], "completed", None)
        with h.conn() as conn:
            row = conn.execute("SELECT count(*) AS n FROM pgmq.q_booking_events").fetchone()
            assert row is not None
            h.extra["backlog"] = int(row["n"])
        h.expect(h.extra["backlog"] == n, f"backlog was {h.extra['backlog']}, not {n}")
        h.writers_stopped_at = time.monotonic()
        fleet.start()
        h.wait_registered(fleet)
        result = h.finish(drain_timeout=120)
        result.figures["recovery_p50_s"] = result.figures["drain_s"]
        return result
    except BaseException:
        h.abort()
        raise


_SUPPRESS_NOTIFY = """
CREATE SCHEMA IF NOT EXISTS faults;
CREATE OR REPLACE FUNCTION faults.never_waiting() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.waiting := false;
    RETURN NEW;
END
$$;
CREATE TRIGGER faults_never_waiting BEFORE INSERT OR UPDATE ON session_ledger.listeners
    FOR EACH ROW EXECUTE FUNCTION faults.never_waiting();
"""


def no_notify(dsn: str, workdir: Path, *, quick: bool, seed: int = 41) -> Result:
    """No writer ever sees an idle listener, so no NOTIFY is ever sent; polling alone must drain."""
    h = Harness("no-notify", "NOTIFY suppressed: polling only", dsn, workdir, seed=seed)
    try:
        events = 300 if quick else 2000
        with h.conn() as conn:
            conn.execute(_SUPPRESS_NOTIFY)
        h.make_world(packs=4, bookings=800)
        heard = NotifyCounter(dsn)
        heard.start()
        h.fleet(2, ["--poll-interval", "1"])
        h.writer("owner", 25, batch=(1, 4), rollback_share=0.02)
        h.writer("browser", 10)
        h.start_writers()
        limit = time.monotonic() + 120
        while h.history.events < events and time.monotonic() < limit:
            time.sleep(0.05)
        h.finish_writers()
        result = h.finish(drain_timeout=60)
        heard.stop()
        result.figures["notifications_heard"] = heard.count
        if heard.count:
            result.failures.append(f"{heard.count} NOTIFYs were sent despite the suppression")
        return result
    except BaseException:
        h.abort()
        raise


class NotifyCounter(threading.Thread):
    """LISTENs on the wake-up channel and counts what arrives."""

    def __init__(self, dsn: str) -> None:
        super().__init__(name="faults-notify-counter", daemon=True)
        self.dsn = dsn
        self.count = 0
        self.ready = threading.Event()
        self.stop_event = threading.Event()

    def run(self) -> None:
        """Count notifications until stopped."""
        with connect(self.dsn, purpose="faults-listen") as conn:
            conn.execute("LISTEN booking_events")
            self.ready.set()
            while not self.stop_event.is_set():
                for _ in conn.notifies(timeout=0.2):
                    self.count += 1

    def stop(self) -> None:
        """End the thread."""
        self.stop_event.set()
        self.join(timeout=5)


# -- 5. every writer at once -----------------------------------------------------------


def races(dsn: str, workdir: Path, *, quick: bool, seed: int = 5) -> Result:
    """4 listeners; browsers, the cron and the owner toggling and moving the same bookings."""
    h = Harness("races", "4 listeners + browser + cron + toggles", dsn, workdir, seed=seed)
    try:
        events = 800 if quick else 6000
        h.make_world(packs=4, small_packs=1, bookings=300)
        h.fleet(4, ["--poll-interval", "1"])
        for _ in range(3):
            h.writer("browser", 25)
        h.writer("owner", 6, batch=(1, 5), move_share=0.5)
        h.writer("cron", 2)
        h.start_writers()
        limit = time.monotonic() + 180
        while h.history.events < events and time.monotonic() < limit:
            time.sleep(0.05)
        h.finish_writers()
        # One last cron pass, recorded like every other write, so the end state has many completions.
        assert h.world is not None
        Writer(h.world, h.history, "cron-final", kind="cron", rate=1, stop=h.stop_writers, seed=seed).once()
        return h.finish(drain_timeout=60)
    except BaseException:
        h.abort()
        raise


# -- 6. visibility timeout shorter than a batch -------------------------------------------


def short_vt(dsn: str, workdir: Path, *, quick: bool, seed: int = 6) -> Result:
    """--visibility-timeout 1 while a pack lock holds batches for 2.5 s.

    handle_batch_v2 locks the queue rows it handles before it waits on a pack, so a
    message whose first delivery is still waiting is not handed to a second listener
    when its visibility timeout passes (read_events skips locked rows): it is held
    past the timeout, then handled once.
    """
    h = Harness("short-vt", "visibility timeout < slowest batch", dsn, workdir, seed=seed)
    try:
        world = h.make_world(packs=2, bookings=400)
        h.fleet(3, ["--visibility-timeout", "1", "--batch-size", "50", "--poll-interval", "0.2"])
        holder = PackLocker(dsn, world.packs, hold_s=2.5, gap_s=0.5)
        holder.start()
        h.writer("owner", 10, batch=(1, 10))
        h.start_writers()
        time.sleep(8 if quick else 25)
        h.finish_writers()
        holder.stop()
        h.faults = holder.holds
        h.extra["lock_holds"] = holder.holds
        result = h.finish(drain_timeout=60)
        if not holder.holds or result.figures["lag_max_s"] <= 1.0:
            result.failures.append("no batch outlived the visibility timeout: the fault did not bite")
        return result
    except BaseException:
        h.abort()
        raise


# -- 7. a long REPEATABLE READ transaction ------------------------------------------------

_DEQUEUE_PROBE = """
SELECT msg_id FROM pgmq.q_booking_events WHERE vt <= clock_timestamp()
ORDER BY msg_id LIMIT 50 FOR UPDATE SKIP LOCKED
"""


def held_snapshot(dsn: str, workdir: Path, *, quick: bool, seed: int = 7) -> Result:
    """A REPEATABLE READ transaction held open for minutes while events flow."""
    h = Harness("held-snapshot", "REPEATABLE READ held open", dsn, workdir, seed=seed)
    try:
        baseline_s, hold_s = (5, 20) if quick else (20, 150)
        h.make_world(packs=4, bookings=1500)
        h.fleet(2, ["--poll-interval", "1"])
        h.writer("owner", 15, batch=(1, 20))
        h.writer("browser", 5)
        h.start_writers()
        base = _probe_dequeue(dsn, baseline_s)
        with connect(dsn, autocommit=False, purpose="faults-holder") as holder:
            holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            holder.execute("SELECT count(*) FROM public.bookings")
            h.faults = 1
            h.history.note("snapshot held")
            held = _probe_dequeue(dsn, hold_s)
            holder.rollback()
        h.history.note("snapshot released")
        h.finish_writers()
        h.extra.update(
            {
                "hold_s": hold_s,
                "dequeue_p50_ms_before": percentile(base, 0.5),
                "dequeue_p99_ms_before": percentile(base, 0.99),
                "dequeue_p50_ms_held": percentile(held, 0.5),
                "dequeue_p99_ms_held": percentile(held, 0.99),
            }
        )
        return h.finish(drain_timeout=60)
    except BaseException:
        h.abort()
        raise


def _probe_dequeue(dsn: str, seconds: float) -> list[float]:
    """Time pgmq.read's own scan (FOR UPDATE SKIP LOCKED, rolled back) every 200 ms; milliseconds."""
    out: list[float] = []
    end = time.monotonic() + seconds
    with connect(dsn, autocommit=False, purpose="faults-probe") as conn:
        while time.monotonic() < end:
            t = time.perf_counter()
            conn.execute(_DEQUEUE_PROBE).fetchall()
            conn.rollback()
            out.append((time.perf_counter() - t) * 1000)
            time.sleep(0.2)
    return out


# -- 8. a silent network drop ---------------------------------------------------------------


def _log_mark(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _wait_log(path: Path, mark: int, needles: dict[str, str], t0: float, timeout: float) -> dict[str, float]:
    """Seconds after t0 at which each needle first appeared in the log past mark."""
    found: dict[str, float] = {}
    end = time.monotonic() + timeout
    while len(found) < len(needles) and time.monotonic() < end:
        text = path.read_bytes()[mark:].decode(errors="replace") if path.exists() else ""
        for key, needle in needles.items():
            if key not in found and needle in text:
                found[key] = round(time.monotonic() - t0, 3)
        time.sleep(0.1)
    return found


_DETECT = {"worker": "transient database error", "wakeup": "wake-up connection lost"}


def net_drop(dsn: str, workdir: Path, *, quick: bool, stall: bool = False, seed: int = 8) -> Result:
    """A listener in its own network namespace, reaching the server through the suite's proxy, cut off silently.

    Default: blackhole routes on both sides of the veth pair (packets vanish in the
    kernel). With stall=True the proxy stops forwarding but keeps its sockets open.
    """
    name = "proxy-stall" if stall else "net-drop"
    title = "proxy stops forwarding, sockets open" if stall else "silent network drop (blackhole route)"
    h = Harness(name, title, dsn, workdir, seed=seed)
    ns = NetNs(os.getpid() + (1 if stall else 0))
    proxy: Proxy | None = None
    try:
        params = conninfo_to_dict(dsn)
        host = str(params.get("host") or "/var/run/postgresql")
        port = int(params.get("port") or 5432)
        target: tuple[str, int] | str = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        ns.create()
        proxy = Proxy(ns.host_ip, target)
        listener_dsn = make_conninfo(dsn, host=ns.host_ip, port=str(proxy.port))
        h.make_world(packs=4, bookings=800)
        fleet = h.fleet(
            1, ["--poll-interval", "1", "--visibility-timeout", "5"], dsn=listener_dsn, netns=ns.name
        )
        log = fleet.log_path(fleet.slots[0])
        h.writer("owner", 8, batch=(1, 10))
        h.start_writers()
        time.sleep(5)
        mark, t0 = _log_mark(log), time.monotonic()
        if stall:
            proxy.stall()
        else:
            ns.drop()
        h.faults += 1
        h.history.note("proxy stall" if stall else "blackhole")
        detected = _wait_log(log, mark, {"first": _DETECT["worker"]}, t0, timeout=90 if not quick else 70)
        detected.update(_wait_log(log, mark, {"wakeup": _DETECT["wakeup"]}, t0, timeout=0.5))
        if stall:
            proxy.reset_all()  # the middlebox gives up at last: RST on both sides
        else:
            ns.restore()
        healed_at = round(time.monotonic() - t0, 3)
        h.history.note("path restored")
        recovered = _wait_batch_after(dsn, timeout=60)
        # A dead LISTEN socket is only noticed on its next use, after the worker is back.
        detected.update(_wait_log(log, mark, {"wakeup": _DETECT["wakeup"]}, t0, timeout=15))
        h.extra["detect_s"] = detected.get("first")
        h.extra["phases"] = {
            "worker_detected_s": detected.get("first"),
            "listen_detected_s": detected.get("wakeup"),
            "path_restored_at_s": healed_at,
            "recovered_after_restore_s": recovered,
        }
        h.expect(
            "first" in detected and detected["first"] <= 60,
            f"dead connection not detected within 60s (path restored after {healed_at}s)",
        )
        if recovered is not None:
            h.recoveries.append(recovered)
        h.expect(recovered is not None, "no batch after the path came back")
        return h.finish(drain_timeout=90)
    except BaseException:
        h.abort()
        raise
    finally:
        if proxy is not None:
            proxy.close()
        ns.destroy()


def _wait_batch_after(dsn: str, *, timeout: float) -> float | None:
    """Seconds until some listener commits a batch that started after now."""
    t0 = time.monotonic()
    with connect(dsn, purpose="faults") as conn:
        row = conn.execute("SELECT clock_timestamp() AS ts").fetchone()
        assert row is not None
        while time.monotonic() - t0 < timeout:
            got = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM session_ledger.listeners WHERE last_batch_at > %s) AS b",
                [row["ts"]],
            ).fetchone()
            if got is not None and got["b"]:
                return round(time.monotonic() - t0, 3)
            time.sleep(0.05)
    return None
