"""Fault scenarios on the example apps (examples/gym, examples/marketplace), not the coaching app.

Each one installs the app's schema and the ledger rendered from its mapping, races the app's
own writers (listener/devtools/example_apps.py plays their flows), holds the packs' rows the
way a slow app transaction would so that a listener's batch waits mid-flight, SIGKILLs that
listener (faults.procs.Fleet), restarts it, and on the last kill takes every listener down
while the writers go on, so a backlog builds; then it drains and checks:

- each pack's balance equals its starting amount minus what its consuming bookings cost,
  paid earliest first, whole or not at all, computed here from the app's own rows (statuses,
  prices) and the amounts this module gave the packs, never from the ledger's tables: a
  charge taken twice leaves a balance too low, a charge lost one too high;
- the ledger's rows agree (one paid row per booking paid, on its pack, for what it costs);
- nothing is out of sync (session_ledger.out_of_sync), nothing dead-lettered, the queue is
  empty and every consuming booking's event archived, and the held batch was redelivered.

Every pack's bookings cost the same (a gym session is one, a marketplace user books one
priced class), so how many of them a pack can pay does not depend on which batch judged
which booking first: the expected balance is exact whatever the interleaving.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from faults.harness import Result, active_batches, set_db
from faults.observe import Sampler, wait_drained
from faults.procs import Fleet, owner_of_backend
from faults.verify import lag_and_redeliveries
from listener.core.db import connect
from listener.core.sql_files import query
from listener.devtools.example_apps import (
    Booked,
    Gym,
    Marketplace,
    Payment,
    example,
    install,
    named_statements,
)
from listener.devtools.throwaway import create_database
from listener.mapping import model
from listener.ops.migrate import migrate
from listener.testing import supabase
from listener.testing.supabase import SupabaseAppDb, SupabaseCluster

Q = named_statements(Path(__file__).with_name("apps.sql"))

FLAGS = ["--visibility-timeout", "3", "--poll-interval", "0.2", "--batch-size", "50"]


# -- installing the apps ---------------------------------------------------------------


def install_gym(admin_dsn: str) -> str:
    """A new database on this server with the gym's schema and the ledger from its mapping; its DSN."""
    dsn = create_database(admin_dsn, prefix="faults_gym")
    install(example("gym"), dsn)
    return dsn


def install_marketplace(cluster: SupabaseCluster) -> SupabaseAppDb:
    """A new marketplace database on a Supabase-shaped cluster, the ledger migrated as postgres."""
    app = example("marketplace")
    name = supabase.create_app_database(cluster, schema=[app.schema], ledger=False)
    migrate(cluster.postgres_dsn(name), mapping=model.load(app.mapping_file))
    return SupabaseAppDb(cluster, name)


# -- the fault: a batch held on the packs, its listener SIGKILLed ------------------------


class PackHolder(threading.Thread):
    """Holds a row lock on the packs for hold_s at a time, as a slow app transaction would."""

    def __init__(self, dsn: str, statement: str, packs: list[Any], *, hold_s: float, gap_s: float) -> None:
        super().__init__(name="faults-pack-holder", daemon=True)
        self.dsn = dsn
        self.statement = statement
        self.packs = packs
        self.hold_s = hold_s
        self.gap_s = gap_s
        self.stop_event = threading.Event()
        self.holds = 0

    def run(self) -> None:
        """Lock, wait, commit, repeat."""
        with connect(self.dsn, autocommit=False, purpose="faults-locker") as conn:
            while not self.stop_event.is_set():
                conn.execute(self.statement, {"packs": self.packs})
                self.stop_event.wait(self.hold_s)
                conn.commit()
                self.holds += 1
                self.stop_event.wait(self.gap_s)

    def stop(self) -> None:
        """Release the lock and end the thread."""
        self.stop_event.set()
        self.join(timeout=10)


@dataclass
class Writers:
    """The app's writer threads: each runs one step until stopped; what each step did, counted."""

    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    ops: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, step: Callable[[], str], pause: tuple[float, float], seed: int) -> None:
        """A thread calling step (which names what it did) every pause seconds (a uniform range)."""
        rng = random.Random(seed)  # noqa: S311 - timing, not a secret

        def loop() -> None:
            while not self.stop.is_set():
                try:
                    done = step()
                except psycopg.Error as exc:
                    # A deadlock between the two desks, or the guard refusing a user: the app's
                    # write failed as a whole, and the final check reads what did commit.
                    done = f"error:{type(exc).__name__}"
                with self.lock:
                    self.ops[done] += 1
                self.stop.wait(rng.uniform(*pause))

        self.threads.append(threading.Thread(target=loop, name=f"faults-{name}", daemon=True))

    def start(self) -> None:
        """Start every thread."""
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        """Stop every thread and wait for it."""
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


@dataclass
class Figures:
    """What the faulted run measured, and what went wrong."""

    failures: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    recoveries: list[float] = field(default_factory=list)
    kills: int = 0

    def expect(self, ok: bool, message: str) -> None:
        """Record a failed expectation."""
        if not ok:
            self.failures.append(message)


def _wait_registered(sampler: Sampler, fleet: Fleet, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while any(sampler.seen_at(p) is None for p in fleet.pids()):
        if time.monotonic() > deadline:
            raise TimeoutError("listeners did not register")
        time.sleep(0.05)


def faulted_run(
    name: str,
    dsn: str,
    workdir: Path,
    *,
    holder: PackHolder,
    writers: Writers,
    quick: bool,
    settings_dsn: str | None = None,
) -> Figures:
    """Two listeners, the writers and the holder; SIGKILLs of the listener whose batch waits on the
    packs, the last one taking every listener down while the writers go on; restart, drain."""
    fig = Figures()
    kills_wanted, min_run_s, backlog_s = (3, 8.0, 2.0) if quick else (6, 40.0, 4.0)
    # Kills spread over the run, so the listeners also charge between them while the writers race.
    spacing = min_run_s / (kills_wanted + 1)
    log_dir = workdir / name
    log_dir.mkdir(parents=True, exist_ok=True)
    with connect(settings_dsn or dsn, purpose="faults") as conn:
        # The server notices a killed client during the lock wait and rolls its batch back.
        set_db(conn, "client_connection_check_interval", "50ms")
    sampler = Sampler(dsn)
    sampler.start()
    fleet = Fleet(dsn, 2, FLAGS, log_dir, name=name)
    try:
        fleet.start()
        _wait_registered(sampler, fleet)
        holder.start()
        started = time.monotonic()
        writers.start()
        down: list[Any] = []
        deadline = started + (60 if quick else 180)
        with connect(dsn, purpose="faults") as conn:
            while fig.kills < kills_wanted and time.monotonic() < deadline:
                if time.monotonic() < started + spacing * (fig.kills + 1):
                    time.sleep(0.05)
                    continue
                stuck = active_batches(conn, waiting_on_lock=True)
                owner = (
                    owner_of_backend(stuck[0]["pid"], stuck[0]["client_port"], fleet.pids())
                    if stuck
                    else None
                )
                slot = fleet.slot_of(owner) if owner is not None else None
                if slot is None:
                    time.sleep(0.05)
                    continue
                last = fig.kills == kills_wanted - 1
                victims = [s for s in fleet.slots if s.proc is not None] if last else [slot]
                t = time.monotonic()
                for s in victims:
                    fleet.kill(s, restart=False)
                fig.kills += 1
                if last:
                    down = victims
                    break
                time.sleep(0.5)  # a moment with one listener short
                fleet.start(slot)
                _wait_registered(sampler, fleet)
                assert slot.proc is not None
                seen = sampler.seen_at(slot.proc.pid)
                if seen is not None:
                    fig.recoveries.append(round(seen - t, 3))
            # Every listener is down now: the writers go on, and what they write waits.
            time.sleep(max(backlog_s, started + min_run_s - time.monotonic()))
            writers.finish()
            stopped = time.monotonic()
            depth = conn.execute(query("queue_depths")).fetchone()
            assert depth is not None
            fig.extra["backlog"] = int(depth["queue_depth"])
        holder.stop()
        t = time.monotonic()
        for s in down:
            fleet.start(s)
        _wait_registered(sampler, fleet)
        fig.recoveries += [round(x - t, 3) for p in fleet.pids() if (x := sampler.seen_at(p)) is not None]
        try:
            fig.extra["drain_s"] = wait_drained(dsn, timeout=60, since=stopped)
        except TimeoutError:
            fig.failures.append("queue not drained within 60s of the last write")
        codes = fleet.stop()
        fig.expect(all(c == 0 for c in codes), f"listeners did not exit 0 on SIGTERM: {codes}")
        crashed = fleet.crashed()
        fig.expect(not crashed, f"a listener crashed with a traceback: {crashed}")
        fig.expect(fig.kills >= kills_wanted, f"only {fig.kills} kills landed mid-batch")
        fig.expect(fig.extra["backlog"] > 0, "no backlog built while every listener was down")
        sampled = sampler.finish()
        fig.expect(
            sampled["listener_idle_in_tx_max_s"] < 1.0,
            f"a listener sat idle in a transaction for {sampled['listener_idle_in_tx_max_s']}s",
        )
        fig.extra.update(sampled)
        fig.extra["lock_holds"] = holder.holds
        fig.extra["kills_mid_batch"] = fig.kills
        fig.extra["writes"] = dict(writers.ops)
        return fig
    except BaseException:
        writers.finish()
        holder.stop()
        with contextlib.suppress(Exception):
            fleet.stop(timeout=10)
        raise
    finally:
        sampler.stop_event.set()


# -- the check: balances computed from the app's rows -----------------------------------


def expected_balances(starting: dict[str, int], bookings: list[dict[str, Any]]) -> dict[str, int]:
    """What each pack must have left: its starting amount minus the cost of each of its consuming
    bookings, earliest session first, that it can still pay whole (one that cannot is unfunded)."""
    left = dict(starting)
    for b in sorted(bookings, key=lambda b: (b["starts_at"], b["booking"])):
        if b["consuming"] and b["pack"] in left and b["cost"] <= left[b["pack"]]:
            left[b["pack"]] -= b["cost"]
    return left


def check(dsn: str, app: str, starting: dict[str, int]) -> tuple[list[str], dict[str, Any]]:
    """The final state against the app's own rows: failures, and the figures lost / double_charged."""
    failures: list[str] = []
    with connect(dsn, purpose="faults-check") as conn:
        balances = {r["pack"]: int(r["remaining"]) for r in conn.execute(Q[f"{app}_packs"]).fetchall()}
        bookings = conn.execute(Q[f"{app}_bookings"]).fetchall()
        charges = {r["booking"]: r for r in conn.execute(Q["ledger_charges"]).fetchall()}
        depths = conn.execute(query("queue_depths")).fetchone()
        assert depths is not None
        out_of_sync = conn.execute(query("out_of_sync_bookings")).fetchall()
        archived = {
            str(r["booking_id"])
            for r in conn.execute(
                query("archived_bookings"), {"since": None, "until": None, "bookings": None}
            ).fetchall()
        }
        lag = lag_and_redeliveries(conn)
    expected = expected_balances(starting, bookings)
    lost = double = 0
    for pack, want in sorted(expected.items()):
        have = balances.get(pack)
        if have != want:
            failures.append(f"pack {pack}: {have} left, expected {want} (started with {starting[pack]})")
            if have is not None:
                lost += max(0, have - want)
                double += max(0, want - have)
    # The ledger's own rows must tell the same story: paid exactly what the balances say.
    paid: dict[str, int] = defaultdict(int)
    for b in bookings:
        row = charges.get(b["booking"])
        if b["consuming"]:
            if row is None or row["state"] not in ("paid", "unfunded") or row["pack"] != b["pack"]:
                failures.append(f"booking {b['booking']} consumes from {b['pack']}: ledger row {row}")
            elif row["state"] == "paid":
                paid[b["pack"]] += int(row["amount"])
                if int(row["amount"]) != b["cost"]:
                    failures.append(f"booking {b['booking']} costs {b['cost']}, paid {row['amount']}")
            elif b["cost"] <= balances.get(b["pack"], 0):
                failures.append(f"booking {b['booking']} left unfunded on {b['pack']}, which can pay it")
            if b["booking"] not in archived:
                failures.append(f"booking {b['booking']} consumes, but no event of it was archived")
        elif row is not None and row["state"] == "paid":
            failures.append(f"booking {b['booking']} ({b['status']}) still paid")
    for pack, start in starting.items():
        if start - paid[pack] != expected[pack]:
            failures.append(
                f"pack {pack}: the ledger's paid rows add to {paid[pack]}, not {start - expected[pack]}"
            )
    if out_of_sync:
        failures.append(
            f"{len(out_of_sync)} bookings out of sync: {[r['booking_id'] for r in out_of_sync[:5]]}"
        )
    if depths["queue_depth"]:
        failures.append(f"{depths['queue_depth']} events never archived")
    if depths["dead_letter_depth"]:
        failures.append(f"{depths['dead_letter_depth']} events dead-lettered")
    figures = {
        "events": lag["archived"],
        "lost": lost,
        "double_charged": double,
        "dead_lettered": int(depths["dead_letter_depth"]),
        "out_of_sync": len(out_of_sync),
        "redelivered": lag["redelivered"],
        "lag_p50_s": lag["lag_p50_s"],
        "lag_p99_s": lag["lag_p99_s"],
        "consuming": sum(1 for b in bookings if b["consuming"]),
        "unfunded": sum(1 for r in charges.values() if r["state"] == "unfunded"),
    }
    return failures, figures


def _result(
    name: str,
    title: str,
    *,
    dsn: str,
    app: str,
    starting: dict[str, int],
    fig: Figures,
    t0: float,
    workdir: Path,
) -> Result:
    failures, figures = check(dsn, app, starting)
    if not figures["redelivered"]:
        failures.append("no event was redelivered: the killed batches were not mid-flight")
    figures.update(fig.extra)
    figures["faults"] = fig.kills
    figures["recoveries"] = fig.recoveries
    figures["recovery_p50_s"] = sorted(fig.recoveries)[len(fig.recoveries) // 2] if fig.recoveries else None
    figures["recovery_max_s"] = max(fig.recoveries) if fig.recoveries else None
    figures["starting"] = starting
    return Result(
        name,
        title,
        figures,
        {"ok": not failures},
        fig.failures + failures,
        seconds=time.monotonic() - t0,
        workdir=str(workdir / name),
    )


# -- the gym -----------------------------------------------------------------------------


def gym(dsn: str, workdir: Path, *, quick: bool, seed: int = 61) -> Result:
    """Two desks marking the same classes attended / no-show / cancelled while a batch held on the
    packages loses its listener to SIGKILL; restart, drain, exact packages."""
    t0 = time.monotonic()
    rng = random.Random(seed)  # noqa: S311 - fault timing, not a secret
    n_members, n_classes = (6, 8) if quick else (12, 16)
    app = Gym(dsn)
    try:
        start = datetime.now().astimezone() - timedelta(days=2)
        classes = [app.add_class(f"class {i}", start + timedelta(hours=i)) for i in range(n_classes)]
        starting: dict[str, int] = {}
        by_class: dict[int, list[int]] = defaultdict(list)
        for m in range(n_members):
            member = app.add_member(f"member{m}@example.com")
            # Some packages run out before their member's classes do: those bookings stay unfunded.
            sessions = 1 if m == 0 else rng.randint(1, n_classes)
            package = app.sell_package(member, sessions)
            starting[str(package)] = sessions
            for c in classes:
                by_class[c].append(app.book(member, c, package))
    finally:
        app.close()

    writers = Writers()
    statuses = ["attended", "attended", "no_show", "cancelled"]

    def desk(conn: Any, desk_rng: random.Random) -> Callable[[], str]:
        def step() -> str:
            class_id = desk_rng.choice(classes)
            status = desk_rng.choice(statuses)
            if desk_rng.random() < 0.6:
                # The coach's sheet: part of the class, the other desk may be marking the rest.
                sheet = desk_rng.sample(by_class[class_id], desk_rng.randint(1, len(by_class[class_id])))
                app.mark_class(sorted(sheet), status, conn=conn)
                return f"sheet {status}"
            app.mark(desk_rng.choice(by_class[class_id]), status, conn=conn)
            return f"mark {status}"

        return step

    with contextlib.ExitStack() as stack:
        for i in range(2):
            conn = stack.enter_context(app.server())  # one server connection per desk
            writers.add(f"desk-{i}", desk(conn, random.Random(seed * 10 + i)), (0.03, 0.12), seed * 100 + i)  # noqa: S311
        holder = PackHolder(dsn, Q["gym_hold_packages"], [int(p) for p in starting], hold_s=1.5, gap_s=0.3)
        fig = faulted_run("gym", dsn, workdir, holder=holder, writers=writers, quick=quick)
    title = "gym: desks race, kill -9 mid-batch, backlog"
    return _result("gym", title, dsn=dsn, app="gym", starting=starting, fig=fig, t0=t0, workdir=workdir)


# -- the marketplace ---------------------------------------------------------------------


def marketplace(db: SupabaseAppDb, workdir: Path, *, quick: bool, seed: int = 62) -> Result:
    """The cron completing past bookings while users cancel future ones and support cancels completed
    ones, while a batch held on the wallets loses its listener to SIGKILL; restart, drain, exact wallets."""
    t0 = time.monotonic()
    rng = random.Random(seed)  # noqa: S311 - fault timing, not a secret
    n_users, per_user = (6, 12) if quick else (10, 24)
    market = Marketplace(db.postgres_dsn, db.authenticator_dsn)
    starting: dict[str, int] = {}
    future: list[Booked] = []
    passed: list[Booked] = []  # the clock's latest moves, which a user's stale screen still shows ahead
    try:
        first = datetime.now().astimezone() + timedelta(days=7)
        for u in range(n_users):
            price = rng.randint(1, 3)
            # Some wallets run dry; the first pays for one class only.
            credits = price if u == 0 else rng.randint(0, per_user * price // 2)
            member = market.add_user(f"user{u}@example.com", credits=credits)
            for i in range(per_user):
                # One class per user, so every credit booking of a wallet costs the same.
                method: Payment = "card" if i % 4 == 3 else "credits"
                future.append(
                    market.book(
                        member,
                        f"class {u}",
                        first + timedelta(minutes=7 * (u * per_user + i)),
                        payment_method=method,
                        credits_used=price,
                    )
                )
        wallets = market.owner.execute(Q["market_packs"]).fetchall()
        by_user = {r["client"]: r["pack"] for r in wallets}
        credits_of = {str(u): market.credits(u) for u in {b.user for b in future}}
        starting = {by_user[u]: c for u, c in credits_of.items()}
    except BaseException:
        market.close()
        raise

    writers = Writers()
    lock = threading.Lock()
    clock_rng, user_rng, support_rng = (random.Random(seed * 10 + i) for i in range(3))  # noqa: S311

    def clock() -> str:
        # Time passes: a few sessions booked for next week are now over.
        with lock:
            moved = [future.pop(clock_rng.randrange(len(future))) for _ in range(min(2, len(future)))]
        if not moved:
            return "clock idle"
        market.time_passes(moved, timedelta(days=8))
        with lock:
            passed[:] = [*passed[-6:], *moved]
        return "clock"

    def cron() -> str:
        return "cron completed" if market.cron() else "cron idle"

    def user() -> str:
        # A user cancels a class they believe is ahead: the clock may just have passed it.
        with lock:
            shown = passed if passed and user_rng.random() < 0.3 else future
            if not shown:
                return "user idle"
            booking = shown[user_rng.randrange(len(shown))]
        # The ledger's guard refuses the cancel of a class already completed: an error, counted.
        n = market.cancel(booking)
        if n:
            with lock, contextlib.suppress(ValueError):
                future.remove(booking)
        return f"user cancel {n}"

    def support() -> str:
        # Support refunds a class that was completed: the ledger gives its credits back.
        row = market.owner.execute(Q["market_completed_credit_booking"]).fetchone()
        if row is None or support_rng.random() < 0.5:
            return "support idle"
        booking = Booked(uuid.UUID(str(row["id"])), uuid.UUID(str(row["user_id"])), 0, "credits")
        return f"support cancel {market.cancel(booking, as_user=False)}"

    writers.add("clock", clock, (0.1, 0.25), seed * 100)
    writers.add("cron", cron, (0.1, 0.3), seed * 100 + 1)
    writers.add("user-0", user, (0.3, 0.9), seed * 100 + 2)
    writers.add("user-1", user, (0.3, 0.9), seed * 100 + 3)
    writers.add("support", support, (0.5, 1.0), seed * 100 + 4)
    holder = PackHolder(db.postgres_dsn, Q["market_hold_wallets"], list(starting), hold_s=1.5, gap_s=0.3)
    try:
        fig = faulted_run(
            "marketplace",
            db.postgres_dsn,
            workdir,
            holder=holder,
            writers=writers,
            quick=quick,
            settings_dsn=db.admin_dsn,
        )
    finally:
        market.close()
    title = "marketplace: cron vs cancels, kill -9 mid-batch, backlog"
    return _result(
        "marketplace",
        title,
        dsn=db.postgres_dsn,
        app="market",
        starting=starting,
        fig=fig,
        t0=t0,
        workdir=workdir,
    )
