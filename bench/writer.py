"""The writer's cost per completion: counters that do not depend on the machine's load, and µs.

Every arm completes one booking per transaction as the signed-in trainer, on one connection:
one round trip for the transaction's work up to its COMMIT, then one for the COMMIT (the
app's two-call path does that twice). The µs of a completion are those of its work: the
COMMIT waits for the WAL flush, a property of the disk the same for every arm (and the
fsync of a shared machine's disk varies from 1 to 4 ms), so it is timed apart and each
arm's commits per completion are counted instead.

Counted pass, one per arm, after a CHECKPOINT: `writer_counted` completions, then per completion
  - WAL bytes, records, full-page-image bytes and block references (pages the completion
    changed), read with pg_walinspect from the records that touch this throwaway database
    and from the transactions that wrote them, so other databases' WAL is left out. The
    full-page images depend on how long ago the last checkpoint was, not on the writer:
    the WAL targets compare the bytes without them;
  - buffers hit and read (pg_stat_database: only this connection uses the database, and
    autovacuum is off on its tables for the run);
  - rows inserted per table (pg_stat_all_tables);
  - calls per function (track_functions = 'all'; an inlined SQL function is not called).
Timed pass: `writer_rounds` interleaved rounds (the arm order mirrored round by round), each
arm's completions timed one by one at the client, without track_functions. Each arm's figure
is the median over all its completions; its spread is the lowest and highest round median.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from psycopg import sql

from bench import variants, workload
from bench.browser import AS_TRAINER, NEXT_BOOKING, echoes_off
from bench.measurements import Sizes
from bench.workload import Server
from listener.core.db import Conn, connect

ARMS = {
    "off": "the bare UPDATE: ledger installed, its bookings triggers disabled",
    "floor": "the bare UPDATE plus one queue row (bench/floor_trigger.sql): the floor",
    "v020": "0.2.0's trigger (bench/v020_trigger.sql)",
    "no_echo": "today's trigger, config.absorb_legacy_calls off: no echo records",
    "quiet": "today's trigger with echo records (absorbing on, the default), no listener asleep",
    "legacy": "no ledger: the UPDATE, then the app's own use_session in a second transaction",
}
_ORDER = list(ARMS)

# One completion with the ledger installed, up to its COMMIT: the UPDATE; its trigger guards and enqueues.
LEDGER_WORK = (
    f"""BEGIN;
{AS_TRAINER}UPDATE public.bookings b SET status = 'completed'
{NEXT_BOOKING};
""",
)

# The app's two calls, each up to its COMMIT: the pack the UPDATE returns is handed to the
# second transaction in a session setting, as the browser hands it to its second request.
LEGACY_WORK = (
    f"""BEGIN;
{AS_TRAINER}WITH u AS (UPDATE public.bookings b SET status = 'completed'
{NEXT_BOOKING}
RETURNING b.purchase_id)
SELECT set_config('bench.pack', u.purchase_id::text, false) FROM u;
""",
    f"""BEGIN;
{AS_TRAINER}SELECT public.use_session(current_setting('bench.pack')::uuid);
""",
)


# The tables whose rows a completion inserts or updates, and whose autovacuum is off for the run.
_QUIET_TABLES = (
    "public.bookings",
    "public.client_purchases",
    "pgmq.q_booking_events",
    "session_ledger.booking_writes",
)

_DB_STATS = """SELECT oid::bigint AS oid, blks_hit, blks_read FROM pg_stat_database d
JOIN pg_database p ON p.datname = d.datname WHERE d.datname = current_database()"""
_TABLE_STATS = """SELECT schemaname || '.' || relname AS t, n_tup_ins FROM pg_stat_all_tables
WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"""
_FUNCTION_STATS = "SELECT schemaname || '.' || funcname AS f, calls FROM pg_stat_user_functions"

# The WAL of one database's completions: the records touching its relations, and every
# record (commits included) of the transactions that wrote those.
_WAL = """
WITH r AS (
    SELECT xid::text AS x, record_length, fpi_length, block_ref,
           coalesce(block_ref ~ %(ours)s, false) AS ours
    FROM pg_get_wal_records_info(%(start)s::pg_lsn, %(end)s::pg_lsn)
), mine AS (SELECT DISTINCT x FROM r WHERE ours AND x <> '0')
SELECT count(*) AS records, coalesce(sum(record_length), 0)::bigint AS bytes,
       coalesce(sum(fpi_length), 0)::bigint AS fpi_bytes,
       coalesce(sum(regexp_count(coalesce(block_ref, ''), 'blkref #')), 0)::bigint AS blocks
FROM r WHERE ours OR x IN (SELECT x FROM mine)
"""


def writer(
    server: Server, sizes: Sizes, *, order: list[str] | None = None, candidates: dict[str, str] | None = None
) -> dict[str, Any]:
    """Per-completion counters and single-client µs of every arm (or of those in order).

    candidates: more ledger arms, each a trigger function definition to measure (a lever).
    """
    order = order or _ORDER
    candidates = candidates or {}
    per_run = sizes.writer_timed_per_round + _WARMUP
    needed = sizes.writer_counted + _WARMUP + sizes.writer_rounds * per_run
    with (
        server.database() as dsn,
        server.database(legacy=True) as legacy_dsn,
        connect(dsn, purpose="bench") as conn,
        connect(legacy_dsn, purpose="bench") as legacy_conn,
    ):
        ledger_arms = [arm for arm in order if arm != "legacy"]
        workload.populate(conn, needed * len(ledger_arms))
        workload.populate(legacy_conn, needed)
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        for c in (conn, legacy_conn):
            for table in _QUIET_TABLES:
                found = c.execute("SELECT to_regclass(%s) IS NOT NULL AS r", [table]).fetchone()
                if found and found["r"]:
                    c.execute(
                        sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(
                            sql.Identifier(*table.split("."))
                        )
                    )
        original = variants.definition(conn)
        arms = _Arms(
            conn,
            legacy_conn,
            original=original,
            needed=needed,
            ledger_arms=ledger_arms,
            candidates=candidates,
        )
        counters: dict[str, dict[str, Any]] = {}
        for arm in order:
            with arms.prepared(arm) as (worker, work):
                counters[arm] = _counted(conn, worker, work, sizes.writer_counted)
        samples: dict[str, list[float]] = {arm: [] for arm in order}
        round_medians: dict[str, list[float]] = {arm: [] for arm in order}
        commits: dict[str, list[float]] = {arm: [] for arm in order}
        cpu: dict[str, list[float]] = {arm: [] for arm in order}
        for r in range(sizes.writer_rounds):
            for arm in order if r % 2 == 0 else order[::-1]:
                with arms.prepared(arm) as (worker, work):
                    times, commit_times, cpu_times = _timed(worker, work, sizes.writer_timed_per_round)
                samples[arm] += times
                commits[arm] += commit_times
                cpu[arm] += cpu_times
                round_medians[arm].append(statistics.median(times))
    out = _figures(counters, samples, round_medians)
    # What the disk adds per COMMIT (the WAL flush), the same for every arm.
    out["writer_commit_us"] = {arm: statistics.median(times) for arm, times in commits.items()}
    # The server process's own CPU time for the work (a local server only): what the
    # machine's load changes least. Its mean, since the scheduler counts in slices.
    if all(cpu.values()):
        out["writer_cpu_us"] = {arm: statistics.fmean(times) for arm, times in cpu.items()}
        if "quiet" in cpu and "v020" in cpu:
            out["writer_cpu_vs_v020"] = out["writer_cpu_us"]["quiet"] / out["writer_cpu_us"]["v020"]
    return out


_WARMUP = 3  # completions that plan the arm's statements, not counted


class _Arms:
    """Each arm's database, trigger and booking range; a fresh range for every run of an arm."""

    def __init__(
        self,
        conn: Conn,
        legacy_conn: Conn,
        *,
        original: str,
        needed: int,
        ledger_arms: list[str],
        candidates: dict[str, str],
    ):
        self.candidates = candidates
        self.conn = conn
        self.legacy_conn = legacy_conn
        self.original = original
        self.next = {arm: i * needed + 1 for i, arm in enumerate(ledger_arms)} | {"legacy": 1}

    @contextmanager
    def prepared(self, arm: str) -> Iterator[tuple[Conn, tuple[str, ...]]]:
        worker = self.legacy_conn if arm == "legacy" else self.conn
        if arm != "legacy":
            conn = self.conn
            workload.set_ledger_triggers(conn, enabled=arm != "off")
            conn.execute("DELETE FROM session_ledger.listeners")
            conn.execute("DELETE FROM pgmq.q_booking_events")
            conn.execute("DELETE FROM session_ledger.booking_writes")
            conn.execute("VACUUM pgmq.q_booking_events, session_ledger.booking_writes")
        variant: AbstractContextManager[None] = nullcontext()
        if arm == "floor":
            variant = variants.installed(self.conn, variants.floor(), self.original)
        elif arm == "v020":
            variant = variants.installed(self.conn, variants.v020(), self.original)
        elif arm == "no_echo":
            variant = echoes_off(self.conn)
        elif arm in self.candidates:
            variant = variants.installed(self.conn, self.candidates[arm], self.original)
        worker.execute("SELECT setval('bench.next_booking', %s, false)", [self.next[arm]])
        with variant:
            work = LEGACY_WORK if arm == "legacy" else LEDGER_WORK
            for _ in range(_WARMUP):
                _complete(worker, work)
            yield worker, work
        row = worker.execute("SELECT last_value FROM bench.next_booking").fetchone()
        assert row is not None
        self.next[arm] = int(row["last_value"]) + 1


def _complete(worker: Conn, work: tuple[str, ...], cpu: Path | None = None) -> tuple[float, float, float]:
    """One completion: µs of its work, µs of its COMMITs, and the backend's CPU µs for its work."""
    busy = committing = on_cpu = 0
    for part in work:
        c0 = _cpu_ns(cpu)
        t0 = time.perf_counter_ns()
        worker.execute(part)
        t1 = time.perf_counter_ns()
        on_cpu += _cpu_ns(cpu) - c0
        worker.execute("COMMIT")
        busy += t1 - t0
        committing += time.perf_counter_ns() - t1
    return busy / 1000, committing / 1000, on_cpu / 1000


def _backend_cpu(worker: Conn) -> Path | None:
    """The server process's CPU-time file, when the server runs on this machine and it is readable."""
    row = worker.execute("SELECT pg_backend_pid() AS pid").fetchone()
    path = Path(f"/proc/{row['pid'] if row else 0}/schedstat")
    try:
        path.read_text()
    except OSError:
        return None
    return path


def _cpu_ns(path: Path | None) -> int:
    # The first field: ns the process has run on a CPU, whatever else the machine does.
    return int(path.read_text().split()[0]) if path else 0


def _counted(conn: Conn, worker: Conn, work: tuple[str, ...], n: int) -> dict[str, Any]:
    """n completions after a CHECKPOINT, and what they cost per completion."""
    worker.execute("CHECKPOINT")
    # A temporary slot keeps the pass's WAL until it is read: on a shared server another
    # session's checkpoint may otherwise recycle it first.
    conn.execute(_CREATE_SLOT)
    try:
        return _counted_pass(conn, worker, work, n)
    finally:
        conn.execute(_DROP_SLOT)


# One per connection, so two benchmarks on one server never share it.
_CREATE_SLOT = (
    "SELECT pg_create_physical_replication_slot('session_ledger_bench_' || pg_backend_pid(), true, true)"
)
_DROP_SLOT = "SELECT pg_drop_replication_slot('session_ledger_bench_' || pg_backend_pid())"


def _counted_pass(conn: Conn, worker: Conn, work: tuple[str, ...], n: int) -> dict[str, Any]:
    worker.execute("SET track_functions = 'all'")
    before = _stats(worker)
    start = _lsn(worker, "insert")
    for _ in range(n):
        _complete(worker, work)
    end = _lsn(worker, "insert")
    after = _stats(worker)
    worker.execute("RESET track_functions")
    # pg_walinspect reads only flushed WAL; the last commit flushed its own.
    deadline = time.monotonic() + 10
    while _lsn(conn, "flush") < end and time.monotonic() < deadline:
        time.sleep(0.05)
    wal = conn.execute(
        _WAL, {"ours": f"rel [0-9]+/{before['oid']}/", "start": _lsn_text(start), "end": _lsn_text(end)}
    ).fetchone()
    assert wal is not None
    tables = {
        t: (after["tables"].get(t, 0) - before["tables"].get(t, 0)) / n
        for t in after["tables"]
        if after["tables"].get(t, 0) != before["tables"].get(t, 0)
    }
    functions = {
        f: (calls - before["functions"].get(f, 0)) / n
        for f, calls in after["functions"].items()
        if calls != before["functions"].get(f, 0)
    }
    return {
        "completions": n,
        "wal_bytes": (int(wal["bytes"]) - int(wal["fpi_bytes"])) / n,
        "wal_fpi_bytes": int(wal["fpi_bytes"]) / n,
        "wal_records": int(wal["records"]) / n,
        "commits": len(work),
        "pages_changed": int(wal["blocks"]) / n,
        "buffers_hit": (after["blks_hit"] - before["blks_hit"]) / n,
        "buffers_read": (after["blks_read"] - before["blks_read"]) / n,
        "rows_inserted": dict(sorted(tables.items())),
        "function_calls": dict(sorted(functions.items())),
    }


def _stats(conn: Conn) -> dict[str, Any]:
    """This database's statistics, with this connection's own counts flushed first."""
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_clear_snapshot()")
    db = conn.execute(_DB_STATS).fetchone()
    assert db is not None
    return {
        "oid": int(db["oid"]),
        "blks_hit": int(db["blks_hit"]),
        "blks_read": int(db["blks_read"]),
        "tables": {r["t"]: int(r["n_tup_ins"]) for r in conn.execute(_TABLE_STATS).fetchall()},
        "functions": {r["f"]: int(r["calls"]) for r in conn.execute(_FUNCTION_STATS).fetchall()},
    }


_LSNS = {
    "insert": "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn AS n",
    "flush": "SELECT pg_current_wal_flush_lsn() - '0/0'::pg_lsn AS n",
}


def _lsn(conn: Conn, which: str) -> int:
    row = conn.execute(_LSNS[which]).fetchone()
    assert row is not None
    return int(row["n"])


def _lsn_text(n: int) -> str:
    return f"{n >> 32:X}/{n & 0xFFFFFFFF:X}"


def _timed(worker: Conn, work: tuple[str, ...], n: int) -> tuple[list[float], list[float], list[float]]:
    """µs of the work of each of n completions, of their COMMITs, and the backend's CPU µs."""
    cpu = _backend_cpu(worker)
    busy, committing, on_cpu = [], [], []
    for _ in range(n):
        b, c, u = _complete(worker, work, cpu)
        busy.append(b)
        committing.append(c)
        on_cpu.append(u)
    return busy, committing, on_cpu if cpu else []


def _figures(
    counters: dict[str, dict[str, Any]],
    samples: dict[str, list[float]],
    round_medians: dict[str, list[float]],
) -> dict[str, Any]:
    us = {arm: statistics.median(times) for arm, times in samples.items()}
    spread = {arm: [min(m), max(m)] for arm, m in round_medians.items()}

    def wal(arm: str) -> float:
        return float(counters[arm]["wal_bytes"]) if arm in counters else math.nan

    def us_ratio(a: str, b: str) -> tuple[float, list[float]]:
        if a not in us or b not in us:
            return math.nan, [math.nan, math.nan]
        per_round = [x / y for x, y in zip(round_medians[a], round_medians[b], strict=True)]
        return us[a] / us[b], [min(per_round), max(per_round)]

    out: dict[str, Any] = {
        "writer_arms": ARMS,
        "writer_counters": counters,
        "writer_us": us,
        "writer_us_spread": spread,
        "writer_us_completions": {arm: len(times) for arm, times in samples.items()},
        # WAL (without full-page images) against the floor: today's quiet writer once
        # absorbing is off, and with it on.
        "writer_wal_vs_floor": wal("no_echo") / wal("floor"),
        "writer_wal_vs_floor_absorbing": wal("quiet") / wal("floor"),
        "writer_wal_v020_vs_floor": wal("v020") / wal("floor"),
    }
    for key, (a, b) in {
        "writer_us_vs_v020": ("quiet", "v020"),
        "writer_us_no_echo_vs_v020": ("no_echo", "v020"),
        "writer_us_vs_floor": ("quiet", "floor"),
        "writer_us_vs_legacy": ("quiet", "legacy"),
    }.items():
        out[key], out[f"{key}_spread"] = us_ratio(a, b)
    for arm in counters:
        out[f"writer_us_{arm}"] = us[arm]
        out[f"writer_wal_bytes_{arm}"] = wal(arm)
    return out
