"""The generated trigger beside 0.3.0's on the coaching app, and on the example apps' schemas.

Four arms, each its own database, all open through the run:

  - v030: the coaching app with release 0.3.0's ledger, installed by 0.3.0's own migrate
    from its commit (bench/releases.py): its trigger and every function it calls;
  - coaching: the coaching app with the ledger generated from its mapping (the bench template);
  - gym, marketplace: examples/gym and examples/marketplace, each with the ledger generated
    from its mapping.toml (listener.devtools.example_apps.install).

Each completes bookings as the app's own writer does: the coaching trainer signed in
(untrusted, so the guard judges every row), the gym's server login (gym_app, a trusted
writer), the marketplace's support desk as service_role (trusted; a user may not complete).
Three measurements, each interleaved across the arms round by round with the order
mirrored (A B C D, then D C B A), so a shared machine's drift cancels out of each ratio:

  - the writer: per-completion counters after a CHECKPOINT (WAL, buffers, rows, function
    calls; bench/writer.py's counted pass), then single-client µs in rounds;
  - the browser: pgbench TPS, 8 clients, one completion per transaction;
  - the bulk: one UPDATE completing `bulk_small` bookings as the owner (the cron's statement
    without the cron function, which differs between releases), its seconds.

A ratio is generated ÷ 0.3.0 round by round; its figure is the median round and its
spread the lowest and highest. The example apps' figures are a comparison, not a target.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql

from bench import releases, workload
from bench.browser import AS_TRAINER, CLIENTS
from bench.measurements import Sizes, pgbench
from bench.workload import Server
from bench.writer import _counted, _timed
from listener.core.db import Conn, connect
from listener.devtools import example_apps
from listener.devtools.throwaway import create_database, drop_database

ARMS = {
    "v030": "coaching app, release 0.3.0's trigger and what it calls (its own migrate, from its commit)",
    "coaching": "coaching app, the trigger generated from its mapping",
    "gym": "examples/gym: integer ids, countdown packages, a trusted server login",
    "marketplace": "examples/marketplace: Supabase, wallets found by user, completed as service_role",
}
_ORDER = list(ARMS)
_WARMUP = 3


@dataclass(frozen=True)
class App:
    """How one arm's app completes a booking."""

    table: str
    key_type: str
    # Statements opening the writer's transaction: its role and claims.
    as_writer: str
    booked: str
    done: str
    # The role the writer's statements run as, given read access to the bench schema.
    writer_role: str


_SERVICE = """SET LOCAL ROLE service_role;
SELECT set_config('request.jwt.claims', '{"role": "service_role"}', true);
SELECT set_config('request.jwt.claim.role', 'service_role', true);
"""

APPS = {
    "v030": App("public.bookings", "uuid", AS_TRAINER, "confirmed", "completed", "authenticated"),
    "coaching": App("public.bookings", "uuid", AS_TRAINER, "confirmed", "completed", "authenticated"),
    "gym": App("gym.bookings", "integer", "SET LOCAL ROLE gym_app;\n", "booked", "attended", "gym_server"),
    "marketplace": App("public.bookings", "uuid", _SERVICE, "confirmed", "completed", "service_role"),
}

# The numbered bookings every arm completes in order, as bench/workload.py's for the coaching app.
_BENCH_SCHEMA = """
CREATE SCHEMA bench;
CREATE TABLE bench.backlog (n bigint PRIMARY KEY, booking_id {key} NOT NULL);
CREATE SEQUENCE bench.next_booking;
GRANT USAGE ON SCHEMA bench TO {role};
GRANT SELECT ON bench.backlog TO {role};
GRANT USAGE, SELECT, UPDATE ON SEQUENCE bench.next_booking TO {role};
"""

# Gym: one member, packages of 10 bookings each, one class per booking, all in the past.
_GYM_POPULATE = """
WITH m AS (INSERT INTO gym.members (email) VALUES ('bench@gym.example') RETURNING id),
     p AS (INSERT INTO gym.packages (member_id, sessions_remaining)
           SELECT m.id, 1000000 FROM m, generate_series(1, %(packs)s) RETURNING id),
     c AS (INSERT INTO gym.classes (name, starts_at, ends_at)
           SELECT 'bench ' || n, now() - interval '60 days' + n * interval '1 second',
                  now() - interval '60 days' + n * interval '1 second' + interval '1 hour'
           FROM generate_series(1, %(n)s) AS n RETURNING id)
INSERT INTO gym.bookings (member_id, class_id, package_id)
SELECT (SELECT id FROM m), c.id, pk.id
FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM c) c
JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM p) pk ON pk.k = c.n %% %(packs)s
"""
_GYM_BACKLOG = (
    "INSERT INTO bench.backlog (n, booking_id) SELECT row_number() OVER (ORDER BY id), id FROM gym.bookings"
)

# Marketplace: one wallet per user, 10 bookings per user, paid in credits, all in the past.
# The class the bookings are of: its price is what a booking costs (the app's trigger copies it).
_MARKETPLACE_CLASS = (
    "INSERT INTO public.classes (name, credits) VALUES ('bench', 1) ON CONFLICT (name) DO NOTHING"
)
_MARKETPLACE_POPULATE = """
WITH w AS (INSERT INTO public.credit_wallets (user_id, credits_balance)
           SELECT gen_random_uuid(), 1000000 FROM generate_series(1, %(packs)s) RETURNING user_id),
     u AS (SELECT user_id, row_number() OVER (ORDER BY user_id) - 1 AS k FROM w)
INSERT INTO public.bookings (user_id, class_name, starts_at, ends_at, payment_method, credits_used)
SELECT u.user_id, 'bench', now() - interval '60 days' + n * interval '1 second',
       now() - interval '60 days' + n * interval '1 second' + interval '1 hour', 'credits', 1
FROM generate_series(1, %(n)s) AS n JOIN u ON u.k = n %% %(packs)s
"""
_MARKETPLACE_BACKLOG = """INSERT INTO bench.backlog (n, booking_id)
SELECT row_number() OVER (ORDER BY starts_at, id), id FROM public.bookings"""

# The tables a completion writes, whose autovacuum is off for the run (those that exist).
_QUIET_TABLES = (
    "public.bookings",
    "gym.bookings",
    "pgmq.q_booking_events",
    "session_ledger.booking_writes",
)
_TRIGGERS = workload.LEDGER_TRIGGERS

_EVENTS = "SELECT count(*) AS n FROM pgmq.q_booking_events"


def _completion(app: App) -> str:
    """One completion up to its COMMIT: the writer's role, then the UPDATE of the next booking."""
    return f"""BEGIN;
{app.as_writer}UPDATE {app.table} b SET status = '{app.done}'
FROM bench.backlog k WHERE k.n = (SELECT nextval('bench.next_booking')) AND b.id = k.booking_id;
"""


def _bulk(app: App, status: str) -> str:
    return f"""UPDATE {app.table} b SET status = '{status}'
FROM bench.backlog k WHERE k.n > %s AND k.n <= %s AND b.id = k.booking_id"""


def generated(server: Server, sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """Counters, µs, browser TPS and bulk seconds of every arm, and the ratios to 0.3.0's trigger."""
    per_writer = (
        sizes.writer_counted + _WARMUP + sizes.writer_rounds * (sizes.writer_timed_per_round + _WARMUP)
    )
    rounds = max(5, sizes.browser_rounds)
    per_browser = CLIENTS * sizes.browser_tx_per_client
    bulk_n = sizes.bulk_small
    needed = per_writer + rounds * per_browser + bulk_n
    with ExitStack() as stack:
        dsns = {arm: stack.enter_context(_database(server, arm)) for arm in _ORDER}
        conns = {arm: stack.enter_context(connect(dsns[arm], purpose="bench")) for arm in _ORDER}
        for arm in _ORDER:
            _populate(conns[arm], arm, needed)
        arms = _Arms(conns, writer=1, browser=per_writer + 1)

        counters: dict[str, dict[str, Any]] = {}
        for arm in _ORDER:
            with arms.writer(arm) as (conn, work):
                queued = _count(conn, _EVENTS)
                counters[arm] = _counted(conn, conn, work, sizes.writer_counted)
                counters[arm]["events"] = (_count(conn, _EVENTS) - queued) / sizes.writer_counted
        samples: dict[str, list[float]] = {arm: [] for arm in _ORDER}
        round_us: dict[str, list[float]] = {arm: [] for arm in _ORDER}
        commits: dict[str, list[float]] = {arm: [] for arm in _ORDER}
        cpu: dict[str, list[float]] = {arm: [] for arm in _ORDER}
        for r in range(sizes.writer_rounds):
            for arm in _mirrored(r):
                with arms.writer(arm) as (conn, work):
                    times, commit_times, cpu_times = _timed(conn, work, sizes.writer_timed_per_round)
                samples[arm] += times
                commits[arm] += commit_times
                cpu[arm] += cpu_times
                round_us[arm].append(statistics.median(times))

        tps: dict[str, list[float]] = {arm: [] for arm in _ORDER}
        browser_events: dict[str, list[int]] = {arm: [] for arm in _ORDER}
        for r in range(rounds):
            for arm in _mirrored(r):
                conn = arms.browser(arm, per_browser)
                conn.execute("CHECKPOINT")
                script = _completion(APPS[arm]) + "COMMIT;\n"
                tps[arm].append(
                    pgbench(
                        dsns[arm],
                        script,
                        clients=CLIENTS,
                        tx_per_client=sizes.browser_tx_per_client,
                        workdir=workdir,
                    )
                )
                browser_events[arm].append(_count(conn, _EVENTS))

        bulk: dict[str, list[float]] = {arm: [] for arm in _ORDER}
        bulk_events: dict[str, list[int]] = {arm: [] for arm in _ORDER}
        lo = needed - bulk_n
        for r in range(rounds):
            for arm in _mirrored(r):
                seconds, events = _bulk_once(conns[arm], APPS[arm], lo, needed)
                bulk[arm].append(seconds)
                bulk_events[arm].append(events)
        for conn in conns.values():
            conn.close()
    return _figures(
        counters=counters,
        samples=samples,
        round_us=round_us,
        commits=commits,
        cpu=cpu,
        tps=tps,
        bulk=bulk,
        evidence={
            "browser_completions_per_run": per_browser,
            "browser_events": browser_events,
            "bulk_completions_per_run": bulk_n,
            "bulk_events": bulk_events,
        },
    )


def _mirrored(r: int) -> list[str]:
    return _ORDER if r % 2 == 0 else _ORDER[::-1]


@contextmanager
def _database(server: Server, arm: str) -> Iterator[str]:
    """The arm's database, dropped afterwards: a clone of the bench template, or installed fresh."""
    if arm == "coaching":
        with server.database() as dsn:
            yield dsn
        return
    dsn = create_database(server.admin_dsn, prefix=f"bench_{arm}")
    try:
        if arm == "v030":
            with releases.extracted(releases.V030) as tree:
                releases.install_demo(tree, dsn)
            workload.seed(dsn)
        else:
            example_apps.install(example_apps.example(arm), dsn)
            with connect(dsn, purpose="bench") as conn:
                app = APPS[arm]
                conn.execute(_BENCH_SCHEMA.format(key=app.key_type, role=app.writer_role))
        yield dsn
    finally:
        drop_database(server.admin_dsn, dsn)


def _populate(conn: Conn, arm: str, n: int) -> None:
    """n bookings to complete, numbered in bench.backlog, ten per pack; pg_walinspect for the counters."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
    packs = max(1, min(20_000, n // 10))
    if arm in ("v030", "coaching"):
        workload.populate(conn, n)
    elif arm == "gym":
        conn.execute(_GYM_POPULATE, {"packs": packs, "n": n})
        conn.execute(_GYM_BACKLOG)
        workload.vacuum(conn)
    else:
        conn.execute(_MARKETPLACE_CLASS)
        conn.execute(_MARKETPLACE_POPULATE, {"packs": packs, "n": n})
        conn.execute(_MARKETPLACE_BACKLOG)
        workload.vacuum(conn)
    for table in _QUIET_TABLES:
        if _count(conn, "SELECT count(*) AS n FROM pg_class WHERE oid = to_regclass(%s)", table):
            conn.execute(
                sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(
                    sql.Identifier(*table.split("."))
                )
            )


class _Arms:
    """Each arm's connection, and where in its backlog the writer's and the browser's next completion is.

    The backlog is split in three ranges: the writer's, the browser's, then the bulk's. Every
    arm completes the same numbered bookings in the same order.
    """

    def __init__(self, conns: dict[str, Conn], *, writer: int, browser: int) -> None:
        self.conns = conns
        self.next_writer = dict.fromkeys(conns, writer)
        self.next_browser = dict.fromkeys(conns, browser)

    def browser(self, arm: str, completions: int) -> Conn:
        """The arm's connection, cleared, its sequence at the start of its next browser run."""
        conn = self.conns[arm]
        _clear(conn)
        conn.execute("SELECT setval('bench.next_booking', %s, false)", [self.next_browser[arm]])
        self.next_browser[arm] += completions
        return conn

    @contextmanager
    def writer(self, arm: str) -> Iterator[tuple[Conn, tuple[str, ...]]]:
        """The arm's connection, cleared and warmed, for a run of single completions."""
        conn = self.conns[arm]
        _clear(conn)
        conn.execute("SELECT setval('bench.next_booking', %s, false)", [self.next_writer[arm]])
        work = (_completion(APPS[arm]),)
        for _ in range(_WARMUP):
            conn.execute(work[0])
            conn.execute("COMMIT")
        yield conn, work
        self.next_writer[arm] = _count(conn, "SELECT last_value AS n FROM bench.next_booking") + 1


def _clear(conn: Conn) -> None:
    """No listener on record, an empty queue and echo log, vacuumed: every run starts alike."""
    conn.execute("DELETE FROM session_ledger.listeners")
    conn.execute("DELETE FROM pgmq.q_booking_events")
    conn.execute("DELETE FROM session_ledger.booking_writes")
    conn.execute("VACUUM pgmq.q_booking_events, session_ledger.booking_writes")


def _count(conn: Conn, query: str, *params: object) -> int:
    row = conn.execute(query, list(params)).fetchone()
    assert row is not None
    return int(row["n"])


def _set_triggers(conn: Conn, app: App, *, enabled: bool) -> None:
    verb = sql.SQL("ENABLE" if enabled else "DISABLE")
    for name in _TRIGGERS:
        conn.execute(
            sql.SQL("ALTER TABLE {} {} TRIGGER {}").format(
                sql.Identifier(*app.table.split(".")), verb, sql.Identifier(name)
            )
        )


def _bulk_once(conn: Conn, app: App, lo: int, hi: int) -> tuple[float, int]:
    """The bookings lo < n <= hi back to booked (trigger off), then completed in one timed UPDATE."""
    _set_triggers(conn, app, enabled=False)
    conn.execute(_bulk(app, app.booked), [lo, hi])
    _clear(conn)
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(*app.table.split("."))))
    conn.execute("CHECKPOINT")
    _set_triggers(conn, app, enabled=True)
    started = time.perf_counter()
    done = conn.execute(_bulk(app, app.done), [lo, hi]).rowcount
    seconds = time.perf_counter() - started
    if done != hi - lo:
        raise RuntimeError(f"the bulk UPDATE completed {done} bookings, expected {hi - lo}")
    return seconds, _count(conn, _EVENTS)


def _ratio(a: list[float], b: list[float]) -> tuple[float, list[float]]:
    per_round = [x / y for x, y in zip(a, b, strict=True)]
    return statistics.median(per_round), [min(per_round), max(per_round)]


def _figures(
    *,
    counters: dict[str, dict[str, Any]],
    samples: dict[str, list[float]],
    round_us: dict[str, list[float]],
    commits: dict[str, list[float]],
    cpu: dict[str, list[float]],
    tps: dict[str, list[float]],
    bulk: dict[str, list[float]],
    evidence: dict[str, Any],
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "generated_arms": ARMS,
        "generated_counters": counters,
        "generated_us": {arm: statistics.median(t) for arm, t in samples.items()},
        "generated_us_spread": {arm: [min(m), max(m)] for arm, m in round_us.items()},
        "generated_us_completions": {arm: len(t) for arm, t in samples.items()},
        "generated_commit_us": {arm: statistics.median(t) for arm, t in commits.items()},
        "generated_browser_tps": {arm: statistics.median(t) for arm, t in tps.items()},
        "generated_browser_runs": tps,
        "generated_browser_rounds": len(tps["coaching"]),
        "generated_bulk_seconds": {arm: statistics.median(t) for arm, t in bulk.items()},
        "generated_bulk_runs": bulk,
        "generated_bulk_size": evidence["bulk_completions_per_run"],
        "generated_evidence": evidence,
    }
    if all(cpu.values()):
        out["generated_cpu_us"] = {arm: statistics.fmean(t) for arm, t in cpu.items()}
        out["generated_cpu_vs_v030"] = out["generated_cpu_us"]["coaching"] / out["generated_cpu_us"]["v030"]
    # µs and bulk seconds: no slower is at most 1; browser TPS: at least 1.
    for what, runs in {"us": round_us, "browser": tps, "bulk": bulk}.items():
        for arm in _ORDER:
            if arm == "v030":
                continue
            key = f"generated_{what}_vs_v030" if arm == "coaching" else f"generated_{what}_{arm}_vs_v030"
            out[key], out[f"{key}_spread"] = _ratio(runs[arm], runs["v030"])
    for counter in ("wal_bytes", "wal_records", "buffers_hit"):
        out[f"generated_{counter}_vs_v030"] = float(counters["coaching"][counter]) / float(
            counters["v030"][counter]
        )
    return out
