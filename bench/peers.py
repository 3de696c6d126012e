"""The other ways to do the same charge, each run as its own process and timed by itself.

`python -m bench.peers KIND DSN` prints one JSON line: {"start": epoch, "end": epoch, "handled": n}.

- batched: the bare batched SQL loop, the ceiling (read 100 autocommitted; one transaction
  inserting the ledger rows, adding per-pack counts and archiving).
- pgmq: a straightforward consumer on the `pgmq` PyPI client, one message per transaction.
- pgqueuer: PgQueuer on asyncpg with its defaults, the charge as its job.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shlex
import sys
import time
import uuid
from typing import Any

from bench.workload import CHARGE_ONE_SQL
from listener.core.db import connect

_BATCHED_READ = (
    "SELECT msg_id, (message ->> 'booking_id')::uuid AS booking_id FROM pgmq.read('booking_events', 30, 100)"
)

BATCHED_APPLY = """
WITH m AS (
    SELECT u.msg_id, u.booking_id
    FROM unnest(%(msg_ids)s::bigint[], %(booking_ids)s::uuid[]) AS u(msg_id, booking_id)
), b AS (
    SELECT DISTINCT bk.id, bk.purchase_id FROM m JOIN public.bookings bk ON bk.id = m.booking_id
), ledger AS (
    INSERT INTO session_ledger.charges (booking_id, purchase_id, state)
    SELECT b.id, b.purchase_id, 'paid' FROM b
), counts AS (
    UPDATE public.client_purchases p SET sessions_used = p.sessions_used + c.n
    FROM (SELECT purchase_id, count(*) AS n FROM b GROUP BY purchase_id) AS c
    WHERE p.id = c.purchase_id
)
SELECT count(*) AS archived FROM pgmq.archive('booking_events', %(msg_ids)s::bigint[])
"""


def run_batched(dsn: str) -> dict[str, Any]:
    """Drain the queue with the bare batched SQL loop."""
    handled = 0
    with connect(dsn, purpose="bench batched") as conn:
        start = time.time()
        while True:
            rows = conn.execute(_BATCHED_READ, prepare=True).fetchall()
            if not rows:
                break
            with conn.transaction():
                conn.execute(
                    BATCHED_APPLY,
                    {"msg_ids": [r["msg_id"] for r in rows], "booking_ids": [r["booking_id"] for r in rows]},
                    prepare=True,
                )
            handled += len(rows)
        end = time.time()
    return {"start": start, "end": end, "handled": handled}


def run_pgmq(dsn: str) -> dict[str, Any]:
    """Drain the queue one message per transaction with the pgmq client: read one, charge, archive."""
    from pgmq import PGMQueue
    from psycopg_pool import ConnectionPool

    # Our own pool on the DSN as given: PGMQueue's conn_string parser keeps host, port,
    # user and database only, so the DSN's `options` (e.g. -c jit=off) would be lost.
    pool = ConnectionPool(dsn, min_size=1, max_size=1, open=True)
    queue = PGMQueue(pool=pool, init_extension=False)
    assert queue.pool is not None
    charge = CHARGE_ONE_SQL.format(param="%s")
    handled = 0
    start = time.time()
    while True:
        with queue.pool.connection() as conn, conn.transaction():
            msg = queue.read("booking_events", vt=30, qty=1, conn=conn)
            if msg is None:
                break
            assert not isinstance(msg, list)  # qty=1 reads one message or None
            conn.execute(charge, [uuid.UUID(msg.message["booking_id"])])
            queue.archive("booking_events", msg.msg_id, conn=conn)
        handled += 1
    end = time.time()
    queue.close()
    pool.close()
    return {"start": start, "end": end, "handled": handled}


def asyncpg_params(dsn: str) -> dict[str, Any]:
    """asyncpg's connect() arguments for a libpq DSN in either form."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(dsn)
    names = {"host": "host", "port": "port", "user": "user", "password": "password", "dbname": "database"}
    params: dict[str, Any] = {
        names[k]: (int(v) if k == "port" else v) for k, v in parts.items() if k in names and v
    }
    # The DSN's `options=-c name=value` settings (asyncpg has no `options`), so every peer's
    # sessions run with the same server settings as the listener's and pgbench's.
    settings = _option_settings(str(parts.get("options") or ""))
    if settings:
        params["server_settings"] = settings
    return params


def _option_settings(options: str) -> dict[str, str]:
    """The `-c name=value` (and `-cname=value`) pairs of a libpq options string."""
    words = shlex.split(options)
    pairs = [b for a, b in itertools.pairwise(words) if a == "-c"]
    pairs += [w[2:] for w in words if w.startswith("-c") and len(w) > 2]
    return dict(p.split("=", 1) for p in pairs if "=" in p)


async def pgqueuer_setup(dsn: str, n: int) -> None:
    """Install PgQueuer's schema and enqueue one job per numbered booking."""
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(**asyncpg_params(dsn))
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        ids = [r["booking_id"] for r in await conn.fetch("SELECT booking_id FROM bench.backlog ORDER BY n")]
        for lo in range(0, len(ids), 10_000):
            chunk = ids[lo : lo + 10_000]
            await queries.enqueue(["charge"] * len(chunk), [str(i).encode() for i in chunk], [0] * len(chunk))
    finally:
        await conn.close()


async def _pgqueuer_run(dsn: str) -> dict[str, Any]:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
    from pgqueuer.domain.types import QueueExecutionMode

    conn = await asyncpg.connect(**asyncpg_params(dsn))
    pool = await asyncpg.create_pool(**asyncpg_params(dsn))
    charge = CHARGE_ONE_SQL.format(param="$1::uuid")
    handled = 0
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint("charge")
    async def _charge(job: Job) -> None:
        nonlocal handled
        assert job.payload is not None
        async with pool.acquire() as c:
            await c.execute(charge, job.payload.decode())
        handled += 1

    start = time.time()
    await qm.run(mode=QueueExecutionMode.drain)
    end = time.time()
    await pool.close()
    await conn.close()
    return {"start": start, "end": end, "handled": handled}


def run_pgqueuer(dsn: str) -> dict[str, Any]:
    """Drain PgQueuer's queue with its defaults, asyncpg driver."""
    return asyncio.run(_pgqueuer_run(dsn))


_KINDS = {"batched": run_batched, "pgmq": run_pgmq, "pgqueuer": run_pgqueuer}


def main(argv: list[str]) -> int:
    """Run one peer to completion and print its timing as JSON."""
    kind, dsn = argv
    print(json.dumps(_KINDS[kind](dsn)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
