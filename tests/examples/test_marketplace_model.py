"""The marketplace against a model of the ledger's rules (support/app_model.py): random sequences
of its users', cron's and support's writes and the listener's drains, step by step.

Rules: a user books a priced class (a free one among them) with credits or by card, through
the API as themselves; time passes for a booking (the owner moves its session a week back);
the cron completes the bookings that have ended; support (service_role) completes one,
cancels a completed one, reprices one (credits_used) or switches how it is paid; a user
cancels a future booking (refused by the guard when it already consumes their wallet); the
payment webhook tops a wallet up; the listener drains at random points. After every drain
each wallet's credits_balance and each booking's ledger row (state, wallet, amount) equal
the model's; nothing is out of sync and nothing is dead-lettered. A sequence ends with a drain,
then a top-up of exactly what each wallet owes and a drain that pays every unfunded booking.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import errors

from listener.core.sql_files import query
from listener.devtools.driver import Ledger
from listener.devtools.example_apps import Booked, Marketplace, Payment

from support.app_model import AppModel, Pack

pytestmark = pytest.mark.slow

# The price list: what a booking of each class costs when it is booked (public.price_booking).
# Dearest first, as are the new prices below: hypothesis favours the first choice, and the
# dear ones are those a wallet cannot always pay.
CLASSES = {"reformer": 3, "spin": 2, "yoga": 1, "open mat": 0}
PRICES = st.sampled_from((5, 4, 3, 2, 1, 0))
METHODS: tuple[Payment, ...] = ("credits", "card")
WEEK = timedelta(days=7)

# How a booking the sequence starts with stands: completed by support, ended, or still ahead.
FATES = ("completed", "ended", "upcoming")

# A booking: which user, which class, how it is paid, how many days ahead.
Booking = tuple[int, str, Payment, int]
BOOKINGS: st.SearchStrategy[Booking] = st.tuples(
    st.integers(0, 2), st.sampled_from(list(CLASSES)), st.sampled_from(METHODS), st.integers(1, 3)
)

# Every sequence starts on empty tables of one database. The bookings go first: their
# delete queues events, which the queue's own deletes then drop.
_RESET = (
    "DELETE FROM public.bookings",
    "DELETE FROM public.credit_wallets",
    "DELETE FROM session_ledger.charges",
    "DELETE FROM session_ledger.booking_writes",
    "DELETE FROM pgmq.q_booking_events",
    "DELETE FROM pgmq.a_booking_events",
    "DELETE FROM pgmq.q_booking_events_dlq",
)


@dataclass
class Row:
    """What the machine knows of a booking's row in the app."""

    booked: Booked
    start: datetime
    status: str = "confirmed"
    method: Payment = "credits"

    @property
    def consuming(self) -> bool:
        """Whether it consumes its user's wallet (the mapping's consuming_statuses and consumes_when)."""
        return self.status == "completed" and self.method == "credits"


class MarketMachine(RuleBasedStateMachine):
    """The marketplace's database and the model; they must agree after every drain."""

    market: ClassVar[Marketplace | None] = None

    def __init__(self) -> None:
        super().__init__()
        assert self.market is not None, "bind a Marketplace to MarketMachine.market first"
        self.m: Marketplace = self.market
        for statement in _RESET:
            self.m.owner.execute(statement)
        self.model = AppModel()
        self.users: list[uuid.UUID] = []
        self.rows: dict[uuid.UUID, Row] = {}
        self.now = datetime.now().astimezone()

    @initialize(
        credits=st.lists(st.integers(0, 3), min_size=2, max_size=3),
        booked=st.lists(st.tuples(BOOKINGS, st.sampled_from(FATES)), min_size=3, max_size=8),
    )
    def setup(self, credits: list[int], booked: list[tuple[Booking, str]]) -> None:
        """Two or three users, each with a wallet (the model's pack is the user: wallets are found by
        user), and a few bookings to start with: some of them a week old, some of those completed."""
        for i, n in enumerate(credits):
            user = self.m.add_user(f"u{i}@example.com", credits=n)
            self.users.append(user)
            self.model.packs[user] = Pack(n)
        for booking, fate in booked:
            self.book(*booking)
            if fate != "upcoming":
                self.time_passes(len(self.rows) - 1)
            if fate == "completed":
                self.support_completes(len(self.rows) - 1)

    def pick(self, place: int, among: Callable[[Row], bool] = lambda _: True) -> Row | None:
        """One of the bookings `among` (in the order booked), or none."""
        found = [r for r in self.rows.values() if among(r)]
        return found[place % len(found)] if found else None

    def judged(self, row: Row) -> bool:
        """Whether the booking consumes and the model holds it paid or unfunded."""
        charge = self.model.ledger.get(row.booked.id)
        return row.consuming and charge is not None and charge.state in ("paid", "unfunded")

    def unfunded(self, row: Row) -> bool:
        """Whether the model holds the booking unfunded: a top-up of its wallet may pay it."""
        charge = self.model.ledger.get(row.booked.id)
        return charge is not None and charge.state == "unfunded"

    def wrote(self, row: Row, *, status: str | None = None, method: Payment | None = None) -> None:
        """The model follows a write of the booking's status or payment method."""
        row.status = status or row.status
        row.method = method or row.method
        self.model.write(row.booked.id, consuming=row.consuming)

    @rule(booking=BOOKINGS)
    def book_class(self, booking: Booking) -> None:
        """A user books a class."""
        self.book(*booking)

    def book(self, user: int, name: str, method: Payment, days: int) -> None:
        """A user books a class `days` ahead through the API. Each session starts a minute after the
        last one booked, and time moves them by whole weeks: no two ever start together (the model
        orders the charges of a batch by session)."""
        who = self.users[user % len(self.users)]
        start = self.now + timedelta(days=days, minutes=len(self.rows))
        booked = self.m.book(who, name, start, payment_method=method, credits_used=CLASSES[name])
        assert booked.credits_used == CLASSES[name]
        self.rows[booked.id] = Row(booked, start, method=method)
        self.model.book(booked.id, who, start, cost=CLASSES[name])

    @precondition(lambda self: self.rows)
    @rule(place=st.integers(0, 50))
    def time_passes(self, place: int) -> None:
        """A week passes for one booking: its session moves a week back (as the owner, the tests' clock)."""
        row = self.pick(place)
        assert row is not None
        self.m.time_passes([row.booked], WEEK)
        row.start -= WEEK
        self.model.write(row.booked.id, start=row.start)

    @rule()
    def cron(self) -> None:
        """The cron completes every confirmed booking that has ended."""
        ended = [
            r
            for r in self.rows.values()
            if r.status == "confirmed" and r.start + timedelta(hours=1) < self.now
        ]
        assert self.m.cron() == len(ended)
        for row in ended:
            self.wrote(row, status="completed")

    @precondition(lambda self: self.rows)
    @rule(place=st.integers(0, 50))
    def support_completes(self, place: int) -> None:
        """Support completes one booking by hand, whatever its status or time."""
        row = self.pick(place)
        assert row is not None
        assert self.m.complete(row.booked, as_user=False) == 1
        self.wrote(row, status="completed")

    @precondition(lambda self: any(r.start > self.now for r in self.rows.values()))
    @rule(place=st.integers(0, 50))
    def user_cancels(self, place: int) -> None:
        """The user cancels a future booking; one that already consumes their wallet is the ledger's
        to give back, and the guard refuses them."""
        row = self.pick(place, lambda r: r.start > self.now)
        assert row is not None
        if row.consuming:
            with pytest.raises(errors.InsufficientPrivilege):
                self.m.cancel(row.booked)
            return
        assert self.m.cancel(row.booked) == 1
        self.wrote(row, status="cancelled")

    @precondition(lambda self: any(r.status == "completed" for r in self.rows.values()))
    @rule(place=st.integers(0, 50), owing=st.booleans())
    def support_cancels(self, place: int, owing: bool) -> None:
        """Support cancels a completed booking: when `owing`, one the model holds unfunded (where
        there is one), which is released having paid nothing."""
        completed = self.pick(place, lambda r: r.status == "completed")
        row = (self.pick(place, self.unfunded) if owing else None) or completed
        assert row is not None
        assert self.m.cancel(row.booked, as_user=False) == 1
        self.wrote(row, status="cancelled")

    @rule(user=st.integers(0, 2), credits=st.integers(1, 4), owing=st.booleans())
    def top_up(self, user: int, credits: int, owing: bool) -> None:
        """The payment webhook adds bought credits to a wallet: when `owing`, one the model holds a
        booking unfunded on (where there is one), so the sequences pay them often."""
        row = self.pick(user, self.unfunded) if owing else None
        who = row.booked.user if row else self.users[user % len(self.users)]
        self.m.top_up(who, credits)
        self.model.pack_changed(who, more=credits)

    @precondition(lambda self: self.rows)
    @rule(place=st.integers(0, 50), credits=PRICES, judged=st.booleans())
    def reprice(self, place: int, credits: int, judged: bool) -> None:
        """Support changes what one booking costs: when `judged`, one that consumes its wallet and
        that the ledger has paid or left unfunded (where there is one), whose row the listener
        then converges to the new price."""
        row = (self.pick(place, self.judged) if judged else None) or self.pick(place)
        assert row is not None
        assert self.m.reprice(row.booked, credits) == 1
        self.model.write(row.booked.id, cost=credits)

    @precondition(lambda self: self.rows)
    @rule(place=st.integers(0, 50), completed=st.booleans())
    def switch_payment(self, place: int, completed: bool) -> None:
        """Support switches how one booking is paid, credits to card or card to credits: when
        `completed`, a completed one (where there is one), which starts or stops consuming."""
        row = (self.pick(place, lambda r: r.status == "completed") if completed else None) or self.pick(place)
        assert row is not None
        method: Payment = "card" if row.method == "credits" else "credits"
        assert self.m.switch_payment(row.booked, method) == 1
        self.wrote(row, method=method)

    @rule()
    def drain(self) -> None:
        """The listener drains the queue; the database and the model agree."""
        Ledger(self.m.owner_dsn).drain(listener_running=False)
        self.model.drain()
        self.agree()

    def teardown(self) -> None:
        """The end of a sequence is a drain too; then each wallet that owes is topped up by exactly
        what its unfunded bookings cost, together, and one more drain pays every one of them."""
        if not self.users:
            return
        self.drain()
        owed = dict.fromkeys(self.users, 0)
        for row in self.rows.values():
            if self.unfunded(row):
                owed[row.booked.user] += self.model.bookings[row.booked.id].cost
        for user, credits in owed.items():
            if credits:
                self.m.top_up(user, credits)
                self.model.pack_changed(user, more=credits)
        self.drain()
        assert not any(self.unfunded(row) for row in self.rows.values())

    def agree(self) -> None:
        """Wallets, ledger rows, out_of_sync, the queue and its dead letters."""
        owner = self.m.owner
        wallets = self.m.wallets()
        assert dict(wallets.values()) == self.model.balances()
        rows = {}
        for booking in self.rows:
            row = owner.execute(query("ledger_row"), [booking]).fetchone()
            if row is not None:
                rows[booking] = (row["state"], wallets[row["purchase_id"]][0], row["amount"])
        assert rows == self.model.rows()
        assert owner.execute(query("out_of_sync_count")).fetchone() == {"n": 0}
        depths = owner.execute(query("queue_depths")).fetchone()
        assert depths is not None
        assert (depths["queue_depth"], depths["dead_letter_depth"]) == (0, 0)


@pytest.fixture
def bound(market: Marketplace) -> Iterator[Marketplace]:
    """The machine's database, bound for the test's duration."""
    MarketMachine.market = market
    try:
        yield market
    finally:
        MarketMachine.market = None


def test_the_marketplace_agrees_with_the_model(bound: Marketplace) -> None:
    run_state_machine_as_test(
        MarketMachine,
        settings=settings(
            # The same sequences every run (a failure replays as it was found), about 25 s.
            max_examples=30,
            stateful_step_count=30,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
