"""The guard's own cost: the bookings trigger's check of who may change what a booking charges.

- Trusted writers pay one caller_is_trusted() per statement: the cron's bulk UPDATE as
  service_role against the same UPDATE as the database owner, and against the owner
  with the guard removed.
- Untrusted writers (a signed-in member) also pay may_write_booking() per changed row:
  one completion per transaction, one pgbench client, rolled back so commits do not
  hide the statement's own time, with and without the guard.

"Without the guard" is the installed trigger function minus its guard, installed in
this measurement's throwaway database only (bench.variants).
"""

from __future__ import annotations

import statistics
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from psycopg import sql

from bench import variants, workload
from bench.browser import AS_TRAINER, NEXT_BOOKING
from bench.measurements import Sizes, pgbench
from bench.workload import Server
from listener.core.db import Conn, connect

_CRON_UPDATE = (
    "UPDATE public.bookings SET status = 'completed' WHERE status = 'confirmed' AND end_time < now()"
)

_UNTRUSTED_SCRIPT = f"""
BEGIN;
{AS_TRAINER}UPDATE public.bookings b SET status = 'completed'
{NEXT_BOOKING};
ROLLBACK;
"""


def _bulk_as(conn: Conn, n: int, *, role: str | None) -> float:
    """Reset n bookings to confirmed, then time the cron's UPDATE completing them, as role (None: the owner)."""
    workload.set_ledger_triggers(conn, enabled=False)
    conn.execute("UPDATE public.bookings SET status = 'confirmed' WHERE status <> 'confirmed'")
    conn.execute("DELETE FROM pgmq.q_booking_events")
    conn.execute("VACUUM ANALYZE public.bookings")
    conn.execute("VACUUM ANALYZE pgmq.q_booking_events")
    conn.execute("CHECKPOINT")
    workload.set_ledger_triggers(conn, enabled=True)
    workload.fake_idle_listener(conn)
    if role is not None:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
    try:
        started = time.perf_counter()
        done = conn.execute(_CRON_UPDATE).rowcount
        seconds = time.perf_counter() - started
    finally:
        conn.execute("RESET ROLE")
    queued = conn.execute("SELECT count(*) AS n FROM pgmq.q_booking_events").fetchone()
    if done != n or queued is None or queued["n"] != n:
        raise RuntimeError(
            f"bulk as {role or 'owner'}: {done} completed, {queued and queued['n']} queued, not {n}"
        )
    return seconds


def bulk_roles(server: Server, n: int) -> dict[str, Any]:
    """The cron's bulk UPDATE of n bookings as the owner, as service_role, and as the owner without the guard."""
    times: dict[str, list[float]] = {"owner": [], "service_role": [], "no_guard": []}
    with server.database() as dsn, connect(dsn, purpose="bench") as conn:
        workload.populate(conn, n)
        original = variants.definition(conn)
        bare = variants.without_guard(original)
        _bulk_as(conn, n, role=None)  # warm-up: later runs all start from an updated table
        for arm in ("owner", "service_role", "no_guard", "no_guard", "service_role", "owner"):
            if arm == "no_guard":
                with variants.installed(conn, bare, original):
                    times[arm].append(_bulk_as(conn, n, role=None))
            else:
                times[arm].append(_bulk_as(conn, n, role="service_role" if arm == "service_role" else None))
    med = {arm: statistics.median(t) for arm, t in times.items()}
    return {
        "guard_bulk_n": n,
        "guard_bulk_seconds": med,
        "guard_bulk_service_role_vs_owner": med["service_role"] / med["owner"],
        "guard_bulk_trusted_pct": 100.0 * (1.0 - med["no_guard"] / med["owner"]),
    }


def untrusted(server: Server, sizes: Sizes, workdir: Path) -> dict[str, Any]:
    """One signed-in member completing one booking per transaction (rolled back): guard and no guard."""
    per_run = sizes.guard_statements
    order = ("guard", "no_guard", "no_guard", "guard")
    tps: dict[str, list[float]] = {"guard": [], "no_guard": []}
    with server.database() as dsn, connect(dsn, purpose="bench") as conn:
        workload.populate(conn, per_run * len(order))
        original = variants.definition(conn)
        bare = variants.without_guard(original)
        conn.execute("SELECT setval('bench.next_booking', 1, false)")
        for arm in order:
            conn.execute("CHECKPOINT")
            variant: AbstractContextManager[None] = nullcontext()
            if arm == "no_guard":
                variant = variants.installed(conn, bare, original)
            with variant:
                tps[arm].append(_one_client(dsn, per_run, workdir))
        completed = conn.execute(
            "SELECT count(*) AS n FROM public.bookings WHERE status = 'completed'"
        ).fetchone()
    if completed is None or completed["n"] != 0:
        raise RuntimeError(
            "the untrusted-writer arm left completed bookings: its transactions did not roll back"
        )
    mean = {arm: statistics.mean(runs) for arm, runs in tps.items()}
    guard, bare_tps = mean["guard"], mean["no_guard"]
    return {
        "guard_untrusted_tps": guard,
        "guard_untrusted_tps_no_guard": bare_tps,
        "guard_untrusted_us_per_statement": 1e6 / guard - 1e6 / bare_tps,
        "guard_untrusted_pct": 100.0 * (1.0 - guard / bare_tps),
        "guard_untrusted_runs": tps,
    }


def _one_client(dsn: str, transactions: int, workdir: Path) -> float:
    return pgbench(dsn, _UNTRUSTED_SCRIPT, clients=1, tx_per_client=transactions, workdir=workdir)
