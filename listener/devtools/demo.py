"""`listener demo`'s story on an embedded PostgreSQL: what it did to each booking and pack, as data.

The command (listener/cli/commands/dev.py) shows the result as tables.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

from listener.core.db import Conn
from listener.core.sql_files import query
from listener.devtools import demo_data, example_apps
from listener.devtools.driver import Ledger, ListenerThread
from listener.devtools.embedded import embedded_server
from listener.devtools.example_apps import Booked, Gym, Marketplace
from listener.devtools.throwaway import create_database
from listener.ops.migrate import migrate

# Brackets each step of the story, named for whoever watches it (a spinner in the terminal).
Step = Callable[[str], AbstractContextManager[object]]


@dataclass(frozen=True)
class DemoBooking:
    """One of the story's bookings after it: when, whose pack, who completed it, and what the ledger says."""

    session_at: str
    pack: str
    completed_by: str
    status: str
    ledger: str | None
    why: str


@dataclass(frozen=True)
class DemoPack:
    """One of the story's packs: sessions used before and after, of how many."""

    name: str
    before: int
    after: int
    total: int | None


@dataclass(frozen=True)
class DemoResult:
    """What the story did: the bookings completed, the events the listener handled, each booking and pack."""

    dsn: str
    completed: int
    handled: int
    bookings: list[DemoBooking]
    packs: list[DemoPack]
    # What the tables are headed with: the coaching app's words unless the app's story says otherwise.
    app: str = "coaching"
    headline: str = ""
    by_title: str = "completed by"
    packs_title: str = "packs: sessions used"

    @property
    def summary(self) -> str:
        """The line shown above the tables."""
        return self.headline or (
            f"cron completed {self.completed} bookings in one statement; "
            f"the listener handled {self.handled} events"
        )


def _unwatched(_what: str) -> AbstractContextManager[object]:
    return nullcontext()


def run_demo(*, app: str = "coaching", keep: bool = False, step: Step = _unwatched) -> DemoResult:
    """Start a private server, install everything, play the app's writers (the coaching app's browser
    and cron by default, or an example app's), and read back each booking and pack."""
    example = None if app == "coaching" else example_apps.example(app)
    if example is not None:
        example.mapping()  # a missing or broken example fails before a server starts
    with step("starting an embedded PostgreSQL (no server or Docker needed)..."):
        server_cm = embedded_server(keep=keep)
        admin = server_cm.__enter__().dsn()
    try:
        with step("installing PGMQ, the ledger and the bookings trigger..."):
            dsn = create_database(admin, prefix="demo")
            if example is None:
                migrate(dsn, with_demo_schema=True)
            else:
                example_apps.install(example, dsn)
        if example is None:
            return _story(dsn, step)
        if example.name == "gym":
            return _gym_story(dsn, step)
        return _marketplace_story(dsn, step)
    finally:
        server_cm.__exit__(None, None, None)


def _story(dsn: str, step: Step) -> DemoResult:
    ledger = Ledger(dsn)
    conn = ledger.conn
    now = datetime.now().astimezone()
    org = demo_data.create_org(conn, "Northside Coaching")
    packs = {
        "Ana: 10-pack": demo_data.create_pack(conn, org, sessions_total=10, sessions_used=2),
        "Ben: 5-pack, expired yesterday": demo_data.create_pack(
            conn, org, sessions_total=5, sessions_used=1, expires_at=now - timedelta(days=1)
        ),
        "Cleo: 3-pack, one left": demo_data.create_pack(conn, org, sessions_total=3, sessions_used=2),
    }
    names = {v: k.split(":")[0] for k, v in packs.items()}
    ana, ben, cleo = packs.values()
    # Past sessions, still "confirmed": the trainer or the cron will complete them.
    plan = [
        (ana, 5, "browser"),
        (ana, 4, "browser"),
        (ana, 3, "cron"),
        (ana, 2, "cron"),
        (ben, 3, "cron"),  # held before the pack expired: charged even though processed after
        (ben, 0.5, "cron"),  # held after the pack expired: not charged
        (cleo, 3, "cron"),
        (cleo, 2, "cron"),  # only one session left: the second is unfunded
    ]
    bookings: list[tuple[uuid.UUID, uuid.UUID, str]] = []
    for pack, days_ago, path in plan:
        [b] = demo_data.create_bookings(conn, org, pack, start=now - timedelta(days=days_ago))
        bookings.append((b, pack, path))
    before = {p: demo_data.sessions_used(conn, p) for p in packs.values()}

    listener = ListenerThread(dsn, poll_interval_s=0.2).start()
    try:
        with step("the trainer's browser completes two sessions, one by one..."):
            for b, _, path in bookings:
                if path == "browser":
                    ledger.complete_as_user(b, org.trainer_user_id)
            ledger.drain(listener_running=True)
        with step("the cron job completes every past session in one UPDATE..."):
            completed = ledger.bulk_complete()
            ledger.drain(listener_running=True)
        cancelled = bookings[1][0]
        with step("the trainer cancels a completed session..."):
            conn.execute(query("demo_cancel_booking"), [cancelled])
            ledger.drain(listener_running=True)
    finally:
        listener.stop()

    result = DemoResult(
        dsn=dsn,
        completed=completed,
        handled=sum(listener.worker.stats.outcomes.values()),
        bookings=_bookings(conn, bookings, names, cancelled),
        packs=_packs(conn, packs, before),
    )
    ledger.close()
    return result


def _bookings(
    conn: Conn,
    bookings: list[tuple[uuid.UUID, uuid.UUID, str]],
    names: dict[uuid.UUID, str],
    cancelled: uuid.UUID,
) -> list[DemoBooking]:
    rows = []
    for b, pack, path in bookings:
        row = conn.execute(
            query("demo_booking_row"),
            [b],
        ).fetchone()
        assert row is not None
        why = row["reason"] or ("session given back" if b == cancelled else "")
        rows.append(DemoBooking(row["at"], names[pack], path, row["status"], row["state"], why))
    return rows


def _packs(conn: Conn, packs: dict[str, uuid.UUID], before: dict[uuid.UUID, int]) -> list[DemoPack]:
    rows = []
    for name, pack in packs.items():
        row = conn.execute(query("demo_pack_balance"), [pack]).fetchone()
        assert row is not None
        rows.append(DemoPack(name, before[pack], row["sessions_used"], row["sessions_total"]))
    return rows


def _state(state: tuple[str, str | None] | None) -> tuple[str | None, str]:
    return (None, "") if state is None else (state[0], state[1] or "")


def _gym_story(dsn: str, step: Step) -> DemoResult:
    """The gym: two tablets mark the same class, the coach's sheet, a package that runs out, a mistake undone."""
    gym = Gym(dsn)
    now = datetime.now().astimezone()
    ana, ben, cleo = (gym.add_member(f"{n}@example.com") for n in ("ana", "ben", "cleo"))
    packages = {
        "Ana: 10 classes": gym.sell_package(ana, 10),
        "Ben: 5 classes, flagged expired": gym.sell_package(ben, 5, is_expired=True),
        "Cleo: 2 classes left": gym.sell_package(cleo, 2),
    }
    a_pkg, b_pkg, c_pkg = packages.values()
    names = {v: k.split(":")[0] for k, v in packages.items()}
    spin, yoga, hiit, boxing = (
        gym.add_class(name, now - timedelta(days=d))
        for name, d in (("Spin", 4), ("Yoga", 3), ("HIIT", 2), ("Boxing", 1))
    )
    plan = [  # (member, package, class, who marks it, how)
        (ana, a_pkg, spin, "two tablets at once", "attended"),
        (cleo, c_pkg, spin, "two tablets at once", "attended"),
        (ana, a_pkg, yoga, "coach's sheet", "attended"),
        (ben, b_pkg, yoga, "coach's sheet", "attended"),
        (cleo, c_pkg, yoga, "coach's sheet", "no_show"),
        (cleo, c_pkg, hiit, "coach's sheet", "attended"),
        (ana, a_pkg, boxing, "front desk, then undone", "attended"),
    ]
    bookings = [(gym.book(m, c, p), p, who, how) for m, p, c, who, how in plan]
    before = {p: gym.remaining(p) for p in packages.values()}

    listener = ListenerThread(dsn, poll_interval_s=0.2).start()
    try:
        with step("two front-desk tablets mark Spin's bookings attended at the same moment..."):
            spin_ids = [b for b, _, who, _ in bookings if who == "two tablets at once"]
            with gym.server() as one, gym.server() as two:
                threads = [
                    threading.Thread(target=gym.mark_class, args=(spin_ids, "attended"), kwargs={"conn": c})
                    for c in (one, two)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            Ledger(dsn).drain(listener_running=True)
        with step("the coaches submit their attendance sheets..."):
            # the no-show sheet first: Cleo's Yoga, the earlier class, takes her last session
            for how in ("no_show", "attended"):
                sheet = [b for b, _, who, h in bookings if who == "coach's sheet" and h == how]
                gym.mark_class(sheet, how)
            Ledger(dsn).drain(listener_running=True)
        undone = bookings[-1][0]
        with step("the front desk marks Ana at Boxing, then sees she was not there and cancels..."):
            gym.mark(undone, "attended")
            Ledger(dsn).drain(listener_running=True)
            gym.mark(undone, "cancelled")
            Ledger(dsn).drain(listener_running=True)
    finally:
        listener.stop()

    rows = {r["id"]: r for r in gym.booking_rows([b for b, *_ in bookings])}
    shown = []
    for b, p, who, _ in bookings:
        state, why = _state(gym.ledger_state(b))
        if b == undone:
            why = "session given back"
        shown.append(
            DemoBooking(
                f"{rows[b]['class_name']} {rows[b]['at']}", names[p], who, rows[b]["status"], state, why
            )
        )
    result = DemoResult(
        dsn=dsn,
        completed=len(bookings),
        handled=sum(listener.worker.stats.outcomes.values()),
        bookings=shown,
        packs=[DemoPack(n, before[p], gym.remaining(p), None) for n, p in packages.items()],
        app="gym",
        headline=f"the gym's server marked {len(bookings)} bookings; "
        f"the listener handled {sum(listener.worker.stats.outcomes.values())} events",
        by_title="marked by",
        packs_title="packages: sessions remaining",
    )
    gym.close()
    return result


def _marketplace_story(dsn: str, step: Step) -> DemoResult:
    """The marketplace: users book with credits or card, two crons race, a wallet runs dry and is topped up."""
    market = Marketplace(dsn)
    maya = market.add_user("maya@example.com", credits=10)
    noah = market.add_user("noah@example.com", credits=3)
    zoe = market.add_user("zoe@example.com", credits=0)
    names = {maya: "Maya", noah: "Noah", zoe: "Zoe"}
    soon = datetime.now().astimezone() + timedelta(days=7)
    with step("users book classes through the API, with credits or by card..."):
        booked = [
            (market.book(maya, "Pottery", soon, credits_used=3), "cron"),
            (
                market.book(maya, "Yoga", soon + timedelta(hours=2), credits_used=2),
                "cron, then support refund",
            ),
            (market.book(noah, "DJ workshop", soon, credits_used=2), "cron"),
            (
                market.book(noah, "Boxing", soon + timedelta(hours=3), credits_used=2),
                "cron, paid after top-up",
            ),
            (market.book(zoe, "Painting", soon, payment_method="card", credits_used=4), "cron"),
        ]
        later = market.book(maya, "Ceramics", soon + timedelta(days=7), credits_used=3)
    before = {u: market.credits(u) for u in names}
    listener = ListenerThread(dsn, poll_interval_s=0.2).start()
    try:
        with step("a week passes; Maya cancels next week's class while two cron runs race..."):
            market.time_passes([b for b, _ in booked], timedelta(days=8))
            runs: list[int] = []
            threads = [threading.Thread(target=lambda: runs.append(market.cron())) for _ in range(2)]
            threads.append(threading.Thread(target=market.cancel, args=(later,)))
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            Ledger(dsn).drain(listener_running=True)
        with step("Noah's wallet ran dry; the payment webhook adds 5 credits..."):
            market.top_up(noah, 5)
            Ledger(dsn).drain(listener_running=True)
        refunded = booked[1][0]
        with step("support cancels Maya's completed Yoga: its credits go back..."):
            market.cancel(refunded, as_user=False)
            Ledger(dsn).drain(listener_running=True)
    finally:
        listener.stop()

    everything: list[tuple[Booked, str]] = [*booked, (later, "Maya, before it happened")]
    rows = {r["id"]: r for r in market.booking_rows([b for b, _ in everything])}
    shown = []
    for b, who in everything:
        r = rows[b.id]
        state, why = _state(market.ledger_state(b))
        if b == refunded:
            why = "credits given back"
        elif b.payment_method == "card":
            why = "paid by card"
        label = (
            f"{r['class_name']} {r['at']} ({b.credits_used} credits)"
            if b.payment_method == "credits"
            else (f"{r['class_name']} {r['at']} (card)")
        )
        shown.append(DemoBooking(label, names[b.user], who, r["status"], state, why))
    handled = sum(listener.worker.stats.outcomes.values())
    result = DemoResult(
        dsn=dsn,
        completed=sum(runs),
        handled=handled,
        bookings=shown,
        packs=[DemoPack(f"{n}'s wallet", before[u], market.credits(u), None) for u, n in names.items()],
        app="marketplace",
        headline=f"two cron runs completed {sum(runs)} bookings between them; the listener handled {handled} events",
        by_title="completed by",
        packs_title="wallets: credits",
    )
    market.close()
    return result
