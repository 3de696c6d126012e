"""Where the bookings trigger spends its time on one signed-in completion: today's, without echo records, 0.2.0's.

    python -m bench.profile_trigger [--dsn D] [--completions 400] [--plans]

On a fresh database, one connection completes one booking per transaction as the signed-in
trainer (as the browser arm does, but one client, so contention does not blur the figures),
with track_functions = 'all'. For each arm it reports the median, per completion, of the
trigger function's total and self time and of every function it calls, read from
pg_stat_xact_user_functions inside the completion's own transaction. The arms run in a
mirrored order, each twice. With --plans, auto_explain prints the plan and time of every
statement the trigger runs for one completion of each arm.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import psycopg
from rich.console import Console
from rich.table import Table

from bench import variants, workload
from bench.browser import echoes_off
from bench.run import admin_server
from bench.workload import Server
from listener.core.db import Conn, connect

ARMS = {
    "quiet": "today's trigger: guard, provenance, echo records",
    "no_echo": "today's trigger, config.absorb_legacy_calls off",
    "v020": "0.2.0's trigger",
}

_COMPLETE = """UPDATE public.bookings b SET status = 'completed'
FROM bench.backlog k WHERE k.n = %s AND b.id = k.booking_id"""

# As pg_stat_xact_user_functions names it.
_TRIGGER = "session_ledger.enqueue_booking_changes"

_FUNCTIONS = """SELECT schemaname || '.' || funcname AS function, calls, total_time, self_time
FROM pg_stat_xact_user_functions"""


def _arm(conn: Conn, arm: str, original: str) -> AbstractContextManager[None]:
    if arm == "v020":
        return variants.installed(conn, variants.v020(), original)
    if arm == "no_echo":
        return echoes_off(conn)
    return nullcontext()


def _complete(conn: Conn, n: int) -> dict[str, tuple[int, float, float]]:
    """Complete booking n as the trainer, committed; calls, total and self ms of each function it ran."""
    with conn.transaction():
        conn.execute("SET LOCAL track_functions = 'all'")
        # The view holds every count not yet flushed to the shared statistics, which
        # may span earlier transactions: the UPDATE's own share is the difference.
        before = {r["function"]: r for r in conn.execute(_FUNCTIONS).fetchall()}
        conn.execute("SET LOCAL ROLE authenticated")
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", [str(workload.TRAINER)])
        conn.execute(_COMPLETE, [n])
        conn.execute("RESET ROLE")
        after = conn.execute(_FUNCTIONS).fetchall()
    ran: dict[str, tuple[int, float, float]] = {}
    for row in after:
        was = before.get(row["function"], {"calls": 0, "total_time": 0.0, "self_time": 0.0})
        calls = int(row["calls"]) - int(was["calls"])
        if calls:
            ran[row["function"]] = (
                calls,
                float(row["total_time"]) - float(was["total_time"]),
                float(row["self_time"]) - float(was["self_time"]),
            )
    return ran


def profile(dsn: str, completions: int, plans: bool) -> dict[str, Any]:
    """Per-completion medians of every function's total and self time (ms), by arm; and plans."""
    order = list(ARMS) + list(ARMS)[::-1]
    samples: dict[str, dict[str, list[tuple[int, float, float]]]] = {arm: defaultdict(list) for arm in ARMS}
    plan_text: dict[str, list[str]] = {}
    with connect(dsn, purpose="bench profile") as conn:
        workload.populate(conn, completions * len(order) + 2 * len(order))
        original = variants.definition(conn)
        n = 0
        for arm in order:
            conn.execute("DELETE FROM pgmq.q_booking_events")
            conn.execute("DELETE FROM session_ledger.booking_writes")
            with _arm(conn, arm, original):
                # The first completion of an arm plans the trigger's statements: not counted.
                n += 1
                _complete(conn, n)
                if plans and arm not in plan_text:
                    n += 1
                    plan_text[arm] = _explained(conn, n)
                for _ in range(completions):
                    n += 1
                    for function, sample in _complete(conn, n).items():
                        samples[arm][function].append(sample)
    out: dict[str, Any] = {"plans": plan_text, "functions": {}}
    for arm, by_function in samples.items():
        runs = len(by_function.get(_TRIGGER, [])) or 1
        out["functions"][arm] = {
            name: {
                "calls_per_completion": sum(c for c, _, _ in times) / runs,
                "total_ms": statistics.median(t for _, t, _ in times),
                "self_ms": statistics.median(s for _, _, s in times),
            }
            for name, times in by_function.items()
        }
    return out


def _explained(conn: Conn, n: int) -> list[str]:
    """auto_explain's plan of every statement one completion's trigger runs, rolled back."""
    lines: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        lines.append(diag.message_primary or "")

    conn.add_notice_handler(keep)
    try:
        with conn.transaction(force_rollback=True):
            conn.execute("LOAD 'auto_explain'")
            for setting, value in (
                ("auto_explain.log_min_duration", "0"),
                ("auto_explain.log_analyze", "on"),
                ("auto_explain.log_nested_statements", "on"),
                ("auto_explain.log_level", "notice"),
            ):
                conn.execute("SELECT set_config(%s, %s, true)", [setting, value])
            conn.execute("SET LOCAL ROLE authenticated")
            conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", [str(workload.TRAINER)])
            conn.execute(_COMPLETE, [n])
    finally:
        conn.remove_notice_handler(keep)
    return lines


def main(argv: list[str] | None = None) -> int:
    """Print the trigger's per-function profile by arm."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_trigger", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dsn", help="admin DSN (default: embedded server)")
    parser.add_argument("--completions", type=int, default=400, help="profiled completions per arm run")
    parser.add_argument("--plans", action="store_true", help="print auto_explain's plans of one completion")
    args = parser.parse_args(argv)
    console = Console()
    with admin_server(args.dsn) as admin:
        server = Server(admin)
        server.setup_template()
        try:
            with server.database() as dsn:
                res = profile(dsn, args.completions, args.plans)
        finally:
            server.drop_template()
    names = sorted({name for by_function in res["functions"].values() for name in by_function})
    table = Table(title="median per completion, ms (total / self)")
    table.add_column("function")
    for arm in ARMS:
        table.add_column(arm, justify="right")
    for name in names:
        cells = []
        for arm in ARMS:
            f = res["functions"][arm].get(name)
            cells.append(
                ""
                if f is None
                else f"{f['total_ms']:.3f} / {f['self_ms']:.3f} x{f['calls_per_completion']:g}"
            )
        table.add_row(name, *cells)
    console.print(table)
    for arm, lines in res["plans"].items():
        console.print(f"[bold]{arm}[/bold]: {ARMS[arm]}")
        console.print("\n".join(lines), markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
