"""Where one listener batch spends its time inside PostgreSQL (a warm batch: the second of the session).

    python -m bench.profile_batch [--dsn D] [--batch-size 500] [--backlog 5000]

On a fresh database with a preloaded backlog it reads one batch the way the listener does,
then runs handle_batch under EXPLAIN (ANALYZE, BUFFERS) with track_functions = 'all' and
prints the per-function calls and self time of that one transaction, then rolls it back.
The same batch is then applied by the bare batched SQL statement for comparison.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import workload
from bench.peers import BATCHED_APPLY
from bench.run import admin_server
from bench.workload import Server
from listener.core.db import connect
from listener.core.events import Accepted, RawMessage, judge


def profile(dsn: str, batch_size: int) -> dict[str, Any]:
    """Profile one batch of handle_batch and of the bare batched statement on the same messages."""
    out: dict[str, Any] = {}
    with connect(dsn, purpose="bench profile") as conn:
        # One real batch first, so the profiled one runs on warm plan caches, as a listener's do.
        conn.execute("SELECT session_ledger.heartbeat(%s, 'bench', 1, false)", [uuid.uuid4()])
        conn.execute(
            """WITH m AS (
                   SELECT array_agg(e.msg_id) AS ids,
                          array_agg((e.message::jsonb ->> 'booking_id')::uuid) AS bookings,
                          array_agg(e.enqueued_at) AS ats
                   FROM session_ledger.read_events(%s, 30) AS e
               )
               SELECT count(*) FROM m, LATERAL session_ledger.handle_batch(
                   %s, m.ids, m.bookings, m.ats, '{}'::bigint[], '{}'::text[], false) AS h""",
            [batch_size, uuid.uuid4()],
        )
        rows = conn.execute("SELECT * FROM session_ledger.read_events(%s, 30)", [batch_size]).fetchall()
        raws = [RawMessage(r["msg_id"], r["read_ct"], r["enqueued_at"], r["message"]) for r in rows]
        started = time.perf_counter()
        verdicts = [judge(r, max_payload_bytes=65_536, max_reads=10) for r in raws]
        out["python_judge_ms"] = (time.perf_counter() - started) * 1000
        accepted = [v for v in verdicts if isinstance(v, Accepted)]
        params = {
            "listener": uuid.uuid4(),
            "msg_ids": [a.msg_id for a in accepted],
            "booking_ids": [a.booking_id for a in accepted],
            "enqueued_at": [a.enqueued_at for a in accepted],
            "dead": [],
            "reasons": [],
        }
        with conn.transaction(force_rollback=True):
            conn.execute("SET LOCAL track_functions = 'all'")
            plan = conn.execute(
                """EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT)
                   SELECT * FROM session_ledger.handle_batch(%(listener)s, %(msg_ids)s, %(booking_ids)s,
                       %(enqueued_at)s, %(dead)s::bigint[], %(reasons)s::text[], false)""",
                params,
            ).fetchall()
            out["handle_batch_plan"] = [next(iter(r.values())) for r in plan]
            out["functions"] = conn.execute(
                """SELECT schemaname || '.' || funcname AS function, calls,
                          round(total_time::numeric, 2) AS total_ms, round(self_time::numeric, 2) AS self_ms
                   FROM pg_stat_xact_user_functions ORDER BY self_time DESC"""
            ).fetchall()
        with conn.transaction(force_rollback=True):
            plan = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT) " + BATCHED_APPLY,
                {"msg_ids": params["msg_ids"], "booking_ids": params["booking_ids"]},
            ).fetchall()
            out["batched_plan"] = [next(iter(r.values())) for r in plan]
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the per-function profile of one batch."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_batch", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dsn", help="admin DSN (default: embedded server)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--backlog", type=int, default=5000)
    args = parser.parse_args(argv)
    console = Console()
    with admin_server(args.dsn) as admin:
        server = Server(admin)
        server.setup_template()
        try:
            with server.database() as dsn:
                with connect(dsn, purpose="bench") as conn:
                    workload.preload_backlog(conn, args.backlog)
                res = profile(dsn, args.batch_size)
        finally:
            server.drop_template()
    console.print(f"python judge() of {args.batch_size} messages: {res['python_judge_ms']:.1f} ms")
    table = Table(title=f"handle_batch of {args.batch_size} events: functions in its transaction")
    for col in ("function", "calls", "total_ms", "self_ms"):
        table.add_column(col, justify="left" if col == "function" else "right")
    for f in res["functions"]:
        table.add_row(*(str(f[c]) for c in ("function", "calls", "total_ms", "self_ms")))
    console.print(table)
    console.print("[bold]EXPLAIN handle_batch[/bold]")
    console.print("\n".join(res["handle_batch_plan"]), markup=False)
    console.print("[bold]EXPLAIN bare batched apply, same messages[/bold]")
    console.print("\n".join(res["batched_plan"]), markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
