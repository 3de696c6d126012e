"""The harness every scenario runs on: the result it reports, the writers and listeners it drives, and
the database probes it uses to inject a fault at a known point."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql

from faults.observe import Sampler, percentile, wait_drained
from faults.procs import Fleet
from faults.verify import checker, lag_and_redeliveries
from faults.world import History, World, Writer
from listener.core.db import Conn, connect

WORKER_APP = "session-ledger worker"
WAKEUP_APP = "session-ledger wakeup"


@dataclass
class Result:
    """One scenario's figures, verdict and pass/fail."""

    name: str
    title: str
    figures: dict[str, Any]
    verdict: dict[str, Any]
    failures: list[str]
    expect_checker_to_fail: bool = False
    seconds: float = 0.0
    workdir: str = ""

    @property
    def passed(self) -> bool:
        """All expectations met (for a broken listener: the checker caught it)."""
        return not self.failures

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "title": self.title,
            "passed": self.passed,
            "expect_checker_to_fail": self.expect_checker_to_fail,
            "failures": self.failures,
            "seconds": round(self.seconds, 1),
            "figures": self.figures,
            "verdict": self.verdict,
            "workdir": self.workdir,
        }


class Harness:
    """What every scenario shares: a world, fleets, writers, a sampler, a history, and the final check."""

    def __init__(self, name: str, title: str, dsn: str, workdir: Path, *, seed: int) -> None:
        self.name = name
        self.title = title
        self.dsn = dsn
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rng = random.Random(seed)  # noqa: S311 - fault timing, not a secret
        self.seed = seed
        self.history = History(self.dir / "history.jsonl")
        self.sampler = Sampler(dsn)
        self.fleets: list[Fleet] = []
        self.writers: list[Writer] = []
        self.stop_writers = threading.Event()
        self.writers_stopped_at: float | None = None
        self.failures: list[str] = []
        self.recoveries: list[float] = []
        self.faults = 0
        self.extra: dict[str, Any] = {}
        self.world: World | None = None
        self.started = time.monotonic()
        self.sampler.start()

    # -- setup ---------------------------------------------------------------

    def make_world(self, **kwargs: Any) -> World:
        """Create the scenario's organisation, packs and bookings."""
        self.world = World.create(self.dsn, **kwargs)
        return self.world

    def fleet(
        self,
        count: int,
        flags: list[str],
        *,
        module: str = "listener",
        name: str = "listener",
        dsn: str | None = None,
        netns: str | None = None,
        start: bool = True,
    ) -> Fleet:
        """Start count listener processes."""
        fleet = Fleet(dsn or self.dsn, count, flags, self.dir, module=module, name=name, netns=netns)
        self.fleets.append(fleet)
        if start:
            fleet.start()
            self.wait_registered(fleet)
        return fleet

    def wait_registered(self, fleet: Fleet, timeout: float = 40) -> None:
        """Wait until every process of the fleet has written its heartbeat row."""
        deadline = time.monotonic() + timeout
        while any(self.sampler.seen_at(p) is None for p in fleet.pids()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: listeners did not register")
            time.sleep(0.05)

    def writer(self, kind: str, rate: float, **kwargs: Any) -> Writer:
        """Add a writer thread (started by start_writers)."""
        assert self.world is not None
        w = Writer(
            self.world,
            self.history,
            f"{kind}-{len(self.writers)}",
            kind=kind,
            rate=rate,
            stop=self.stop_writers,
            seed=self.seed * 1000 + len(self.writers),
            **kwargs,
        )
        self.writers.append(w)
        return w

    def start_writers(self) -> None:
        """Start every writer thread."""
        for w in self.writers:
            w.start()

    def finish_writers(self) -> None:
        """Stop the writers and remember when, for the drain time."""
        if self.writers_stopped_at is None:
            self.stop_writers.set()
            for w in self.writers:
                if w.is_alive():
                    w.join(timeout=30)
            self.writers_stopped_at = time.monotonic()

    def expect(self, ok: bool, message: str) -> None:
        """Record a failed expectation."""
        if not ok:
            self.failures.append(message)

    def conn(self) -> Conn:
        """A fresh autocommit connection to the scenario's database."""
        return connect(self.dsn, purpose="faults")

    # -- the end -------------------------------------------------------------

    def finish(
        self, *, drain_timeout: float = 120, expect_checker_to_fail: bool = False, check_exit: bool = True
    ) -> Result:
        """Drain, stop listeners, run the checker, and gather the figures."""
        assert self.world is not None
        self.finish_writers()
        assert self.writers_stopped_at is not None
        try:
            drain_s: float | None = wait_drained(
                self.dsn, timeout=drain_timeout, since=self.writers_stopped_at
            )
        except TimeoutError:
            drain_s = None
            self.failures.append(f"queue not drained within {drain_timeout}s of the last write")
        time.sleep(0.4)  # one more sampler pass over the final counters
        codes: list[int | None] = []
        for f in self.fleets:
            codes += f.stop()
            crashed = f.crashed()
            self.expect(not crashed, f"a listener crashed with a traceback: {crashed}")
        if check_exit:
            self.expect(all(c == 0 for c in codes), f"listeners did not exit 0 on SIGTERM: {codes}")
        sampled = self.sampler.finish()
        self.history.close()
        with self.conn() as conn:
            verdict = checker.check(
                conn,
                self.world.starting_used,
                committed_msg_ids=self.history.committed,
                uncertain_msg_ids=self.history.uncertain,
                rolled_back_msg_ids=self.history.rolled_back,
                rolled_back_bookings=self.world.rollback_bookings,
            )
            lag = lag_and_redeliveries(conn)
        if expect_checker_to_fail:
            # Only the checker's verdict matters here: the listener is broken on purpose.
            self.failures = [f for f in self.failures if f.startswith("queue not drained")]
            self.expect(not verdict.ok, "the checker did not catch the broken listener")
        else:
            self.expect(verdict.ok, f"checker: {verdict.examples[:5]}")
            self.expect(
                self.history.trigger_mismatches == 0, "the trigger enqueued a different set of bookings"
            )
            self.expect(
                sampled["listener_idle_in_tx_max_s"] < 1.0,
                f"a listener sat idle in a transaction for {sampled['listener_idle_in_tx_max_s']}s",
            )
        figures = {
            "events": self.history.events,
            "lost": verdict.lost_total,
            "double_charged": verdict.double_charged,
            "duplicates_suppressed": sampled["duplicates_suppressed"],
            "dead_lettered": verdict.dead_lettered,
            "redelivered": lag["redelivered"],
            "lag_p50_s": lag["lag_p50_s"],
            "lag_p99_s": lag["lag_p99_s"],
            "lag_max_s": lag["lag_max_s"],
            "faults": self.faults,
            "recovery_p50_s": percentile(self.recoveries, 0.5),
            "recovery_max_s": round(max(self.recoveries), 3) if self.recoveries else None,
            "recoveries": [round(r, 3) for r in self.recoveries],
            "drain_s": drain_s,
            "writes": dict(self.history.ops),
            "uncertain_events": len(self.history.uncertain),
            "rolled_back_events": len(self.history.rolled_back),
            "listener_idle_in_tx_max_s": sampled["listener_idle_in_tx_max_s"],
            "queue_dead_tuples_max": sampled["queue_dead_tuples_max"],
            "history": str(self.history.path),
            **self.extra,
        }
        verdict_json = {k: v for k, v in vars(verdict).items() if k != "examples"}
        verdict_json["ok"] = verdict.ok
        verdict_json["examples"] = verdict.examples[:10]
        return Result(
            self.name,
            self.title,
            figures,
            verdict_json,
            self.failures,
            expect_checker_to_fail=expect_checker_to_fail,
            seconds=time.monotonic() - self.started,
            workdir=str(self.dir),
        )

    def abort(self) -> None:
        """Stop everything after an exception, so no process outlives the scenario."""
        self.stop_writers.set()
        for f in self.fleets:
            with contextlib.suppress(Exception):
                f.stop(timeout=10)
        self.sampler.stop_event.set()


# -- helpers on pg_stat_activity ----------------------------------------------


def active_batches(conn: Conn, *, waiting_on_lock: bool = False) -> list[dict[str, Any]]:
    """Worker backends of this database applying a batch right now.

    The real listener applies through handle_batch; the ack-first broken one calls
    apply_bookings itself, after its separate ack.
    """
    return conn.execute(
        """SELECT pid, client_port FROM pg_stat_activity
           WHERE datname = current_database() AND application_name = %s AND state = 'active'
             AND (query LIKE '%%handle_batch%%' OR query LIKE '%%apply_bookings%%')
             AND (NOT %s OR wait_event_type = 'Lock')""",
        [WORKER_APP, waiting_on_lock],
    ).fetchall()


def backends(conn: Conn, app: str) -> list[int]:
    """PIDs of this database's backends with this application_name."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
        [app],
    ).fetchall()
    return [int(r["pid"]) for r in rows]


def terminate(conn: Conn, pids: list[int]) -> int:
    """pg_terminate_backend each pid; return how many were signalled."""
    row = conn.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(p)) AS n FROM unnest(%s::int[]) AS p", [pids]
    ).fetchone()
    return int(row["n"]) if row else 0


def set_db(conn: Conn, setting: str, value: str) -> None:
    """ALTER DATABASE (current) SET setting = value, for sessions opened from now on."""
    name = conn.execute("SELECT current_database() AS d").fetchone()
    assert name is not None
    conn.execute(
        sql.SQL("ALTER DATABASE {} SET {} = {}").format(
            sql.Identifier(name["d"]), sql.Identifier(setting), sql.Literal(value)
        )
    )
