"""Each measurement of the benchmark, on its own fresh database cloned from the bench template."""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench import variants, workload
from bench.workload import Server
from faults.observe import percentile
from listener.core.db import connect

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    backlog: int = 100_000
    bulk_large: int = 100_000
    bulk_small: int = 10_000
    bulk_repeats_large: int = 1
    bulk_repeats_small: int = 3
    browser_tx_per_client: int = 600
    browser_rounds: int = 5
    writer_counted: int = 2_000
    writer_rounds: int = 5
    writer_timed_per_round: int = 400
    guard_statements: int = 2_000
    lag_rate: int = 200
    lag_seconds: float = 20.0
    idle_samples: int = 20
    scale: int = 1_000_000
    sweep: int = 50_000
    sweep_batch_sizes: tuple[int, ...] = (50, 100, 250, 500, 1000, 2000)


FULL = Sizes()
QUICK = Sizes(
    backlog=300,
    bulk_large=1_000,
    bulk_small=100,
    bulk_repeats_large=1,
    bulk_repeats_small=1,
    browser_tx_per_client=10,
    writer_counted=20,
    writer_timed_per_round=4,
    guard_statements=20,
    lag_seconds=1.0,
    idle_samples=2,
    scale=2_000,
    sweep=0,
    sweep_batch_sizes=(),
)


# -- listener drains ---------------------------------------------------------------------------


@dataclass
class Drain:
    """One timed drain of a preloaded backlog by listener processes."""

    n: int
    processes: int
    seconds: float
    rate: float
    ledger: dict[str, int | bool]
    samples: list[tuple[float, int, float]]
    queue_table: dict[str, int]


def drain_with_listeners(
    server: Server,
    n: int,
    *,
    processes: int = 1,
    batch_size: int | None = None,
    logs: Path,
    sample_every: float = 0.0,
) -> Drain:
    """Preload n completions, run `listener run --drain` processes, time them from registration to exit."""
    with server.database() as dsn, connect(dsn, purpose="bench") as conn:
        workload.preload_backlog(conn, n)
        procs = [
            workload.start_listener(
                dsn, logs / f"listener-{n}-{processes}-{i}.log", drain=True, batch_size=batch_size
            )
            for i in range(processes)
        ]
        samples: list[tuple[float, int, float]] = []
        watched = psutil.Process(procs[0].pid) if sample_every else None
        while any(p.poll() is None for p in procs):
            if watched is not None:
                try:
                    rss = watched.memory_info().rss / 2**20
                except psutil.NoSuchProcess:
                    rss = 0.0
                handled, _ = workload.handled_total(conn)
                samples.append((time.time(), handled, rss))
                time.sleep(sample_every)
            else:
                time.sleep(0.01)
        end = time.time()
        failed = [p.returncode for p in procs if p.returncode != 0]
        if failed:
            raise RuntimeError(f"listener exited with {failed}; see {logs}")
        handled, started = workload.handled_total(conn)
        if watched is not None:
            samples.append((end, handled, samples[-1][2] if samples else 0.0))
        assert started is not None
        ledger = workload.check_ledger(conn, n)
        queue: dict[str, int] = {}
        if sample_every:
            time.sleep(1.0)  # let the server publish the last table statistics
            queue = queue_table_stats(dsn)
    seconds = end - started
    return Drain(n, processes, seconds, n / seconds, ledger, samples, queue)


def horizontal(server: Server, sizes: Sizes, logs: Path, batch_size: int | None) -> dict[str, Any]:
    """1, 2 and 4 listener processes on the same backlog."""
    runs = {
        k: drain_with_listeners(server, sizes.backlog, processes=k, batch_size=batch_size, logs=logs)
        for k in (1, 2, 4)
    }
    return {
        "scale_rates": {str(k): round(d.rate, 1) for k, d in runs.items()},
        "scale_exactly_once": all(bool(d.ledger["exactly_once"]) for d in runs.values()),
        "listener_rate": runs[1].rate,
        "listener_ledger": runs[1].ledger,
    }


def drain_in_database(server: Server, n: int, *, max_events: int = 10_000) -> dict[str, Any]:
    """Preload n completions; call session_ledger.drain(max_events) until it handles none, as pg_cron would."""
    with server.database() as dsn, connect(dsn, purpose="bench drain") as conn:
        workload.preload_backlog(conn, n)
        calls = 0
        started = time.perf_counter()
        while True:
            row = conn.execute("SELECT session_ledger.drain(%s) AS n", [max_events], prepare=True).fetchone()
            calls += 1
            if row is None or not row["n"]:
                break
        seconds = time.perf_counter() - started
        ledger = workload.check_ledger(conn, n)
    return {"rate": n / seconds, "seconds": seconds, "calls": calls, "ledger": ledger}


def drain_pair(server: Server, sizes: Sizes, logs: Path, batch_size: int | None) -> dict[str, Any]:
    """In-database drain against one listener process on the same backlog, in ABBA order."""
    n = sizes.backlog
    drains: list[dict[str, Any]] = []
    listeners: list[Drain] = []
    for arm in ("drain", "listener", "listener", "drain"):
        if arm == "drain":
            drains.append(drain_in_database(server, n))
        else:
            listeners.append(drain_with_listeners(server, n, batch_size=batch_size, logs=logs))
    drain_rate = statistics.mean(d["rate"] for d in drains)
    listener_rate = statistics.mean(d.rate for d in listeners)
    return {
        "drain_rate": drain_rate,
        "drain_listener_rate": listener_rate,
        "drain_vs_listener": drain_rate / listener_rate,
        "drain_calls": drains[0]["calls"],
        "drain_runs": {"drain": [d["rate"] for d in drains], "listener": [d.rate for d in listeners]},
        "drain_exactly_once": all(bool(d["ledger"]["exactly_once"]) for d in drains)
        and all(bool(d.ledger["exactly_once"]) for d in listeners),
    }


def batch_sweep(server: Server, sizes: Sizes, logs: Path) -> dict[str, float]:
    """Drain rate of one listener by batch size."""
    return {
        str(bs): round(drain_with_listeners(server, sizes.sweep, batch_size=bs, logs=logs).rate, 1)
        for bs in sizes.sweep_batch_sizes
    }


def _crossing(samples: Sequence[tuple[float, int, float]], level: float) -> tuple[float, float]:
    """(time, rss) when the handled count first reached level, interpolated between samples."""
    prev = samples[0]
    for cur in samples:
        if cur[1] >= level:
            if cur[1] == prev[1]:
                return cur[0], cur[2]
            frac = (level - prev[1]) / (cur[1] - prev[1])
            return prev[0] + frac * (cur[0] - prev[0]), cur[2]
        prev = cur
    return samples[-1][0], samples[-1][2]


def scale(server: Server, sizes: Sizes, logs: Path, batch_size: int | None) -> dict[str, Any]:
    """Drain a large backlog with one listener: rate over the first and last 10%, and its RSS."""
    n = sizes.scale
    d = drain_with_listeners(server, n, batch_size=batch_size, logs=logs, sample_every=0.1)
    started = next(s for s in d.samples if s[1] > 0)
    t10, rss10 = _crossing(d.samples, 0.1 * n)
    t90, rss90 = _crossing(d.samples, 0.9 * n)
    t100, _ = _crossing(d.samples, n)
    first = (0.1 * n - started[1]) / max(t10 - started[0], 1e-6) if t10 > started[0] else float("nan")
    last = 0.1 * n / max(t100 - t90, 1e-6)
    rss_max = max(s[2] for s in d.samples)
    return {
        "scale_n": n,
        "scale_rate": d.rate,
        "scale_rate_first_10pct": first,
        "scale_rate_last_10pct": last,
        "drain_last_vs_first": last / first,
        "rss_mb_max": rss_max,
        "rss_mb_at_10pct": rss10,
        "rss_mb_at_90pct": rss90,
        "rss_growth": rss90 / rss10 if rss10 else float("nan"),
        "scale_ledger": d.ledger,
        "queue_table_after_drain": d.queue_table,
    }


def queue_table_stats(dsn: str) -> dict[str, int]:
    """Dead and live tuples and size of the queue table."""
    with connect(dsn, purpose="bench") as conn:
        row = conn.execute(
            """SELECT n_dead_tup, n_live_tup, autovacuum_count, vacuum_count,
                      pg_relation_size('pgmq.q_booking_events') AS bytes
               FROM pg_stat_user_tables WHERE schemaname = 'pgmq' AND relname = 'q_booking_events'"""
        ).fetchone()
    return {k: int(v) for k, v in (row or {}).items()}


# -- peers ---------------------------------------------------------------------------------------


def _peer(kind: str, dsn: str, processes: int = 1) -> dict[str, Any]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.peers", kind, dsn], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(processes)
    ]
    outs = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"peer {kind} exited with {p.returncode}")
        outs.append(json.loads(out.strip().splitlines()[-1]))
    start = min(o["start"] for o in outs)
    end = max(o["end"] for o in outs)
    handled = sum(o["handled"] for o in outs)
    return {"rate": handled / (end - start), "handled": handled, "seconds": end - start}


def peer_queue(server: Server, n: int, kind: str, processes: int = 1) -> dict[str, Any]:
    """A peer draining the same preloaded PGMQ backlog the listener drains."""
    with server.database() as dsn:
        with connect(dsn, purpose="bench") as conn:
            workload.preload_backlog(conn, n)
        result = _peer(kind, dsn, processes)
        with connect(dsn, purpose="bench") as conn:
            result["ledger"] = workload.check_ledger(conn, n)
    return result


def peer_pgqueuer(server: Server, n: int) -> dict[str, Any]:
    """PgQueuer (asyncpg, defaults) draining n jobs whose work is the same charge."""
    from bench import peers

    with server.database() as dsn:
        with connect(dsn, purpose="bench") as conn:
            workload.populate(conn, n)
        asyncio.run(peers.pgqueuer_setup(dsn, n))
        with connect(dsn, purpose="bench") as conn:
            workload.vacuum(conn)
        result = _peer("pgqueuer", dsn)
        with connect(dsn, purpose="bench") as conn:
            result["ledger"] = workload.check_ledger(conn, n)
    return result


# -- pgbench ---------------------------------------------------------------------------------------


def pgbench(dsn: str, script: str, *, clients: int, tx_per_client: int, workdir: Path) -> float:
    """Run a pgbench script with prepared statements; return its TPS without connection time."""
    path = workdir / f"pgbench-{abs(hash(script))}.sql"
    path.write_text(script)
    cmd = [
        workload.find_pgbench(),
        "-n",
        "-M",
        "prepared",
        "-c",
        str(clients),
        "-j",
        str(min(clients, 2)),
        "-t",
        str(tx_per_client),
        "-f",
        str(path),
        dsn,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed: {out.stderr.strip()[-500:]}")
    match = re.search(r"tps = ([0-9.]+) \((?:without|excluding) initial connection", out.stdout)
    if not match:
        raise RuntimeError(f"no TPS in pgbench output: {out.stdout[-500:]}")
    return float(match.group(1))


_INLINE_SCRIPT = """
WITH k AS (SELECT nextval('bench.next_booking') AS n)
INSERT INTO session_ledger.charges (booking_id, purchase_id, state)
SELECT b.id, b.purchase_id,
       CASE WHEN public.use_session(b.purchase_id, b.start_time) THEN 'paid' ELSE 'unfunded' END
FROM k JOIN bench.backlog bl ON bl.n = k.n JOIN public.bookings b ON b.id = bl.booking_id;
"""


def inline(server: Server, n: int, workdir: Path) -> dict[str, Any]:
    """The same charge done inline by pgbench: one transaction per booking, 4 clients, no repeats."""
    clients = 4
    per_client = max(1, n // clients)
    with server.database() as dsn:
        with connect(dsn, purpose="bench") as conn:
            workload.populate(conn, n)
        tps = pgbench(dsn, _INLINE_SCRIPT, clients=clients, tx_per_client=per_client, workdir=workdir)
        with connect(dsn, purpose="bench") as conn:
            ledger = workload.check_ledger(conn, clients * per_client)
    return {"rate": tps, "ledger": ledger}


# -- bulk writer -------------------------------------------------------------------------------


def _bulk_once(conn: Any, n: int, *, trigger: bool) -> float:
    workload.set_ledger_triggers(conn, enabled=False)
    conn.execute("UPDATE public.bookings SET status = 'confirmed' WHERE status <> 'confirmed'")
    conn.execute("DELETE FROM pgmq.q_booking_events")
    conn.execute("VACUUM ANALYZE public.bookings")
    conn.execute("VACUUM ANALYZE pgmq.q_booking_events")
    conn.execute("CHECKPOINT")
    workload.set_ledger_triggers(conn, enabled=trigger)
    workload.fake_idle_listener(conn)
    started = time.perf_counter()
    row = conn.execute("SELECT session_ledger.complete_past_bookings() AS n").fetchone()
    seconds = time.perf_counter() - started
    if row is None or row["n"] != n:
        raise RuntimeError(f"the cron completed {row and row['n']} bookings, expected {n}")
    queued = conn.execute("SELECT count(*) AS n FROM pgmq.q_booking_events").fetchone()
    assert queued is not None
    if queued["n"] != (n if trigger else 0):
        raise RuntimeError(f"{queued['n']} events queued after a bulk completion of {n}")
    return seconds


def bulk(server: Server, n: int, repeats: int) -> dict[str, Any]:
    """The cron's single UPDATE completing n bookings, trigger on and off, in ABBA order.

    A third arm, reported only, is a lever: the trigger on, with the per-row rules made
    inlinable (bench.variants.rules_inlinable) in this throwaway database.
    """
    times: dict[str, list[float]] = {"on": [], "off": [], "inlined": []}
    with server.database() as dsn, connect(dsn, purpose="bench") as conn:
        workload.populate(conn, n)
        _bulk_once(conn, n, trigger=False)  # warm-up: later runs all start from an updated table
        for _ in range(repeats):
            for arm in ("off", "on", "inlined", "inlined", "on", "off"):
                lever: AbstractContextManager[None] = (
                    variants.rules_inlinable(conn) if arm == "inlined" else nullcontext()
                )
                with lever:
                    times[arm].append(_bulk_once(conn, n, trigger=arm != "off"))
    on, off = statistics.median(times["on"]), statistics.median(times["off"])
    inlined = statistics.median(times["inlined"])
    return {
        "seconds_on": on,
        "seconds_off": off,
        "ratio": on / off,
        "seconds_inlined_rules": inlined,
        "ratio_inlined_rules": inlined / off,
    }


# -- latency -------------------------------------------------------------------------------------

# Bench instrumentation: one NOTIFY per ledger write statement, so an observer sees the
# charge commit the moment it happens. Chunked to stay under NOTIFY's 8000-byte payload limit.
_LAG_PROBE = """
CREATE FUNCTION bench.charged_notify() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog AS $$
DECLARE
    chunk text;
BEGIN
    FOR chunk IN
        SELECT string_agg(s.booking_id::text, ',')
        FROM (SELECT r.booking_id, (row_number() OVER () - 1) / 150 AS g FROM new_rows r) AS s
        GROUP BY s.g
    LOOP
        PERFORM pg_notify('bench_charged', chunk);
    END LOOP;
    RETURN NULL;
END
$$;
CREATE TRIGGER bench_charged AFTER INSERT ON session_ledger.charges
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bench.charged_notify();
"""


class _Observer(threading.Thread):
    """Records when each booking's charge became visible, from the probe's NOTIFYs."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.conn = connect(dsn, purpose="bench observer")
        self.conn.execute("LISTEN bench_charged")
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        """Collect notifications until stopped."""
        while not self.stop.is_set():
            for note in self.conn.notifies(timeout=0.2):
                now = time.perf_counter()
                for booking in note.payload.split(","):
                    self.seen.setdefault(booking, now)

    def wait_for(self, bookings: Sequence[str], timeout: float) -> None:
        """Block until every booking was seen, or the timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(b not in self.seen for b in bookings):
            time.sleep(0.005)


def latency(server: Server, sizes: Sizes, logs: Path) -> dict[str, Any]:
    """Commit-to-charge lag at a steady completion rate, then the lag of lone completions into a quiet system."""
    steady = int(sizes.lag_rate * sizes.lag_seconds)
    n = steady + sizes.idle_samples
    with server.database() as dsn, connect(dsn, purpose="bench writer") as conn:
        workload.populate(conn, n)
        conn.execute(_LAG_PROBE)
        ids = [str(r["booking_id"]) for r in conn.execute("SELECT booking_id FROM bench.backlog ORDER BY n")]
        observer = _Observer(dsn)
        observer.start()
        listener = workload.start_listener(dsn, logs / "listener-latency.log", drain=False)
        try:
            workload.wait_idle_listener(conn)
            time.sleep(0.5)
            complete = "UPDATE public.bookings SET status = 'completed' WHERE id = %s"
            committed: dict[str, float] = {}
            t0 = time.perf_counter()
            for i, booking in enumerate(ids[:steady]):
                pause = t0 + i / sizes.lag_rate - time.perf_counter()
                if pause > 0:
                    time.sleep(pause)
                conn.execute(complete, [booking], prepare=True)
                committed[booking] = time.perf_counter()
            achieved = steady / (time.perf_counter() - t0)
            observer.wait_for(ids[:steady], timeout=30)
            warmup = int(sizes.lag_rate * min(1.0, sizes.lag_seconds / 4))
            lags = [
                (observer.seen[b] - committed[b]) * 1000 for b in ids[warmup:steady] if b in observer.seen
            ]
            idle: list[float] = []
            for booking in ids[steady:]:
                # Long enough for the listener to finish its quick re-looks and settle into waiting.
                time.sleep(random.uniform(0.3, 0.6))  # noqa: S311
                conn.execute(complete, [booking], prepare=True)
                at = time.perf_counter()
                observer.wait_for([booking], timeout=5)
                if booking in observer.seen:
                    idle.append((observer.seen[booking] - at) * 1000)
        finally:
            listener.send_signal(signal.SIGTERM)
            listener.wait(timeout=60)
            observer.stop.set()
            observer.join(timeout=5)
            observer.conn.close()
        ledger = workload.check_ledger(conn, n)
    missing = (steady - warmup) - len(lags)
    return {
        "lag_p50_ms": percentile(lags, 0.5),
        "lag_p90_ms": percentile(lags, 0.9),
        "lag_p99_ms": percentile(lags, 0.99),
        "lag_max_ms": max(lags),
        "lag_rate_achieved": achieved,
        "lag_samples": len(lags),
        "lag_missing": missing,
        "idle_wake_p50_ms": statistics.median(idle) if idle else float("nan"),
        "idle_wake_max_ms": max(idle) if idle else float("nan"),
        "idle_samples": len(idle),
        "latency_ledger": ledger,
        "_lags": lags,
    }
