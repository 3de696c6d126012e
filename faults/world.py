"""The workload: packs and bookings, writers that complete, cancel and move them, and their history.

Every write records, from inside its own transaction, which queue messages it
enqueued (rows of pgmq.q_booking_events whose xmin is the writer's xid). That
gives the checker an independent list of what must end up archived or
dead-lettered, and of what a rolled-back write must never have produced.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from listener.core.db import Conn, connect
from listener.devtools import demo_data
from listener.errors import first_line

CONSUMING = "completed"
STATUSES = ("completed", "cancelled", "confirmed")

_UPDATE = """
WITH old AS (
    SELECT id, status, purchase_id FROM public.bookings
    WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE
)
UPDATE public.bookings b
   SET status = coalesce(%(status)s, b.status), purchase_id = coalesce(%(pack)s, b.purchase_id)
  FROM old WHERE b.id = old.id
RETURNING b.id, old.status AS old_status, old.purchase_id AS old_pack,
          b.status AS new_status, b.purchase_id AS new_pack
"""

# The messages this transaction enqueued: uncommitted, so nobody else can have taken them.
_MINE = """
SELECT msg_id, message ->> 'booking_id' AS booking FROM pgmq.q_booking_events
WHERE xmin = pg_current_xact_id()::xid
"""


def _key(status: str, pack: uuid.UUID | None) -> uuid.UUID | None:
    return pack if status == CONSUMING else None


class History:
    """Append-only JSONL log of every write, with the sets the checker needs kept in memory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = path.open("w")
        self._lock = threading.Lock()
        self.committed: set[int] = set()
        self.uncertain: set[int] = set()
        self.rolled_back: set[int] = set()
        self.ops: dict[str, int] = {}
        self.trigger_mismatches = 0
        self.started = time.time()

    @property
    def events(self) -> int:
        """Events enqueued by committed writes."""
        return len(self.committed)

    def record(self, entry: dict[str, Any]) -> None:
        """Write one history line and update the aggregates."""
        msgs = [int(m) for m, _ in entry.get("msgs", [])]
        with self._lock:
            result = entry["result"]
            self.ops[result] = self.ops.get(result, 0) + 1
            if result == "ok":
                self.committed.update(msgs)
                expected = entry.get("expected")
                if expected is not None and sorted(expected) != sorted(b for _, b in entry["msgs"]):
                    self.trigger_mismatches += 1
            elif result == "indeterminate":
                self.uncertain.update(msgs)
            elif result == "rolled_back":
                self.rolled_back.update(msgs)
            entry["t"] = round(time.time() - self.started, 4)
            self._file.write(json.dumps(entry, default=str) + "\n")

    def note(self, kind: str, **fields: Any) -> None:
        """Record a fault or other suite action in the same timeline."""
        with self._lock:
            line = {"t": round(time.time() - self.started, 4), "note": kind, **fields}
            self._file.write(json.dumps(line, default=str) + "\n")

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            self._file.close()


@dataclass
class World:
    """One database's organisation, packs and bookings."""

    dsn: str
    org: demo_data.Org
    packs: list[uuid.UUID]
    bookings: list[uuid.UUID]
    rollback_pack: uuid.UUID
    rollback_bookings: list[uuid.UUID]
    starting_used: dict[uuid.UUID, int] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        dsn: str,
        *,
        packs: int = 6,
        bookings: int = 2000,
        sessions_total: int = 100_000,
        small_packs: int = 0,
        rollback_bookings: int = 20,
    ) -> World:
        """Insert an organisation, its packs and past confirmed bookings spread over the packs."""
        from faults.verify import snapshot_used

        with connect(dsn, purpose="faults-setup") as conn:
            org = demo_data.create_org(conn, "Fault Studio")
            ids = [demo_data.create_pack(conn, org, sessions_total=sessions_total) for _ in range(packs)]
            ids += [demo_data.create_pack(conn, org, sessions_total=3) for _ in range(small_packs)]
            made: list[uuid.UUID] = []
            per = -(-bookings // len(ids))
            for p in ids:
                made += demo_data.create_bookings(conn, org, p, count=min(per, bookings - len(made)))
            rb_pack = demo_data.create_pack(conn, org, sessions_total=1000)
            # In the future, so the cron's "complete every past booking" never touches them.
            future = datetime.now().astimezone() + timedelta(days=30)
            rb = demo_data.create_bookings(conn, org, rb_pack, count=rollback_bookings, start=future)
            world = cls(dsn, org, ids, made, rb_pack, rb)
            world.starting_used = snapshot_used(conn)
        return world


class Writer(threading.Thread):
    """One app client: a stream of writes of one flavour, each recorded in the history."""

    def __init__(
        self,
        world: World,
        history: History,
        name: str,
        *,
        kind: str,
        rate: float,
        stop: threading.Event,
        seed: int,
        batch: tuple[int, int] = (1, 1),
        move_share: float = 0.15,
        rollback_share: float = 0.03,
        targets: Sequence[uuid.UUID] | None = None,
        statuses: Sequence[str] = STATUSES,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.world = world
        self.history = history
        self.kind = kind
        self.rate = rate
        self.stop_event = stop
        self.rng = random.Random(seed)  # noqa: S311 - a workload, not a secret
        self.batch = batch
        self.move_share = move_share
        self.rollback_share = rollback_share
        self.targets = list(targets) if targets is not None else world.bookings
        self.statuses = list(statuses)
        self.conn: Conn | None = None
        self.errors = 0

    def run(self) -> None:
        """Write at the configured rate until stopped."""
        period = 1.0 / self.rate
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            self.once()
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                self.stop_event.wait(delay)
            else:
                next_at = time.monotonic()
        if self.conn is not None:
            self.conn.close()

    def _conn(self) -> Conn:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = connect(self.world.dsn, autocommit=False, purpose=f"faults-{self.kind}")
        return self.conn

    def once(self) -> None:
        """Perform one write of this writer's kind."""
        if self.kind == "cron":
            self._write("cron", [], None, None)
            return
        if self.rng.random() < self.rollback_share:
            ids = self.rng.sample(self.world.rollback_bookings, min(3, len(self.world.rollback_bookings)))
            self._write("rollback", ids, CONSUMING, None)
            return
        ids = self.rng.sample(self.targets, self.rng.randint(*self.batch))
        if self.kind != "browser" and self.rng.random() < self.move_share:
            self._write(self.kind, ids, None, self.rng.choice(self.world.packs))
        else:
            self._write(self.kind, ids, self.rng.choice(self.statuses), None)

    def _write(self, kind: str, ids: list[uuid.UUID], status: str | None, pack: uuid.UUID | None) -> None:
        entry: dict[str, Any] = {
            "writer": self.name,
            "kind": kind,
            "bookings": [str(b) for b in ids],
            "status": status,
            "pack": str(pack) if pack else None,
        }
        try:
            conn = self._conn()
        except Exception as exc:  # the server may be restarting: record and move on
            entry.update(result="fail", error=type(exc).__name__)
            self.history.record(entry)
            self.errors += 1
            self.stop_event.wait(0.1)
            return
        try:
            if kind == "cron":
                conn.execute("SET LOCAL ROLE service_role")
                conn.execute("SELECT session_ledger.complete_past_bookings()")
                conn.execute("RESET ROLE")
                expected = None
            else:
                if kind == "browser":
                    conn.execute("SET LOCAL ROLE authenticated")
                    conn.execute(
                        "SELECT set_config('request.jwt.claim.sub', %s, true)",
                        [str(self.world.org.trainer_user_id)],
                    )
                rows = conn.execute(_UPDATE, {"ids": ids, "status": status, "pack": pack}).fetchall()
                if kind == "browser":
                    conn.execute("RESET ROLE")
                expected = [
                    str(r["id"])
                    for r in rows
                    if _key(r["old_status"], r["old_pack"]) != _key(r["new_status"], r["new_pack"])
                ]
            mine = conn.execute(_MINE).fetchall()
            entry["msgs"] = [[r["msg_id"], r["booking"]] for r in mine]
            entry["expected"] = expected
        except psycopg.Error as exc:
            self.errors += 1
            entry.update(result="fail", error=first_line(exc))
            _rollback(conn)
            self.history.record(entry)
            return
        if kind == "rollback":
            _rollback(conn)
            entry["result"] = "rolled_back"
            self.history.record(entry)
            return
        try:
            conn.commit()
            entry["result"] = "ok"
        except psycopg.OperationalError as exc:
            # The commit may or may not have happened: Jepsen's "info" outcome.
            entry.update(result="indeterminate", error=first_line(exc))
        except psycopg.Error as exc:
            entry.update(result="fail", error=first_line(exc))
            _rollback(conn)
        self.history.record(entry)


def _rollback(conn: Conn) -> None:
    try:
        conn.rollback()
    except psycopg.Error:
        conn.close()


def run_writers(writers: Sequence[Writer], history: History, *, events: int, timeout: float) -> float:
    """Start the writers, stop them once the history holds enough committed events; return seconds taken."""
    started = time.monotonic()
    for w in writers:
        w.start()
    deadline = started + timeout
    while history.events < events and time.monotonic() < deadline:
        time.sleep(0.05)
    for w in writers:
        w.stop_event.set()
    for w in writers:
        w.join(timeout=30)
    return time.monotonic() - started
