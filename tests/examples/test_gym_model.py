"""The gym against a model of the ledger's rules (support/app_model.py): random sequences of the
server's writes and drains, step by step.

Rules: a member books a past class on one of their packages (or none), the front desk marks a
booking attended, no-show, cancelled or booked again (one tablet, or the coach's sheet for
several), the gym renews a package or flags it expired or not, and the listener drains the
queue at random points. After every drain each package's sessions_remaining and each
booking's ledger row (state, package) equal the model's; nothing is out of sync and nothing
is dead-lettered.
"""

from __future__ import annotations

from collections.abc import Iterator
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

from listener.core.sql_files import query
from listener.devtools.driver import Ledger
from listener.devtools.example_apps import Gym

from support.app_model import AppModel, Pack

STATUSES = st.sampled_from(["attended", "no_show", "cancelled", "booked", "attended"])
CONSUMING = frozenset({"attended", "no_show"})

# Every sequence starts on empty tables of one database.
_RESET = (
    "DELETE FROM gym.bookings",
    "DELETE FROM gym.classes",
    "DELETE FROM gym.packages",
    "DELETE FROM gym.members",
    "DELETE FROM session_ledger.charges",
    "DELETE FROM session_ledger.adjustments",
    "DELETE FROM session_ledger.booking_writes",
    "DELETE FROM pgmq.q_booking_events",
    "DELETE FROM pgmq.a_booking_events",
    "DELETE FROM pgmq.q_booking_events_dlq",
)


class GymMachine(RuleBasedStateMachine):
    """The gym's database and the model; they must agree after every drain."""

    gym: ClassVar[Gym | None] = None

    def __init__(self) -> None:
        super().__init__()
        assert self.gym is not None, "bind a Gym to GymMachine.gym first"
        self.g: Gym = self.gym
        for statement in _RESET:
            self.g.owner.execute(statement)
        self.model = AppModel()
        self.members: list[int] = []
        self.packages: dict[int, list[int]] = {}
        self.bookings: list[int] = []
        self.now = datetime.now().astimezone()

    @initialize(
        sessions=st.lists(st.integers(0, 3), min_size=2, max_size=4),
        booked=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 2)), min_size=2, max_size=6),
    )
    def setup(self, sessions: list[int], booked: list[tuple[int, int]]) -> None:
        """Two members, the packages alternating between them, and a few bookings to start with."""
        self.members = [self.g.add_member(f"m{i}@example.com") for i in range(2)]
        self.packages = {m: [] for m in self.members}
        for i, n in enumerate(sessions):
            member = self.members[i % 2]
            package = self.g.sell_package(member, n)
            self.packages[member].append(package)
            self.model.packs[package] = Pack(n)
        for member, choice in booked:
            self.book(member, choice)

    def all_packages(self) -> list[int]:
        """Every package, in the order sold."""
        return sorted(p for own in self.packages.values() for p in own)

    def package(self, member: int, choice: int) -> int | None:
        """One of the member's packages, or none (a drop-in)."""
        own = self.packages[member]
        return None if choice >= len(own) else own[choice]

    @rule(member=st.integers(0, 1), choice=st.integers(0, 2))
    def book(self, member: int, choice: int) -> None:
        """A booking of a class that has happened, each at its own time (the model orders by it)."""
        who = self.members[member]
        package = self.package(who, choice)
        start = self.now - timedelta(days=2) + timedelta(minutes=len(self.bookings))
        class_id = self.g.add_class(f"class {len(self.bookings)}", start)
        booking = self.g.book(who, class_id, package)
        self.bookings.append(booking)
        self.model.book(booking, package, start)

    @precondition(lambda self: self.bookings)
    @rule(place=st.integers(0, 50), status=STATUSES)
    def mark(self, place: int, status: str) -> None:
        """The front desk's tablet marks one booking."""
        booking = self.bookings[place % len(self.bookings)]
        assert self.g.mark(booking, status) == 1
        self.model.write(booking, consuming=status in CONSUMING)

    @precondition(lambda self: self.bookings)
    @rule(places=st.lists(st.integers(0, 50), min_size=1, max_size=4), status=STATUSES)
    def mark_class(self, places: list[int], status: str) -> None:
        """The coach's sheet: several bookings marked at once."""
        chosen = sorted({self.bookings[p % len(self.bookings)] for p in places})
        assert self.g.mark_class(chosen, status) == len(chosen)
        for booking in chosen:
            self.model.write(booking, consuming=status in CONSUMING)

    @rule(place=st.integers(0, 3), sessions=st.integers(1, 2))
    def renew(self, place: int, sessions: int) -> None:
        """More sessions on a package."""
        package = self.all_packages()[place % len(self.all_packages())]
        self.g.renew(package, sessions)
        self.model.pack_changed(package, more=sessions)

    @rule(place=st.integers(0, 3), expired=st.booleans())
    def flag_expired(self, place: int, expired: bool) -> None:
        """The gym flags a package expired, or lifts the flag."""
        package = self.all_packages()[place % len(self.all_packages())]
        with self.g.server() as desk:
            desk.execute("UPDATE gym.packages SET is_expired = %s WHERE id = %s", [expired, package])
        self.model.pack_changed(package, unusable=expired)

    @rule()
    def drain(self) -> None:
        """The listener drains the queue; the database and the model agree."""
        Ledger(self.g.dsn).drain(listener_running=False)
        self.model.drain()
        self.agree()

    def teardown(self) -> None:
        """The end of a sequence is a drain too."""
        if self.members:
            self.drain()

    def agree(self) -> None:
        """Balances, ledger rows, out_of_sync, dead letters."""
        owner = self.g.owner
        balances = {
            r["id"]: r["sessions_remaining"]
            for r in owner.execute("SELECT id, sessions_remaining FROM gym.packages")
        }
        assert balances == self.model.balances()
        states = {
            r["booking_id"]: (r["state"], r["purchase_id"])
            for r in owner.execute("SELECT booking_id, state, purchase_id FROM session_ledger.charges")
        }
        assert states == self.model.states()
        assert owner.execute(query("out_of_sync_count")).fetchone() == {"n": 0}
        assert owner.execute("SELECT count(*) AS n FROM pgmq.q_booking_events_dlq").fetchone() == {"n": 0}


@pytest.fixture
def bound(gym: Gym) -> Iterator[Gym]:
    """The machine's database, bound for the test's duration."""
    GymMachine.gym = gym
    try:
        yield gym
    finally:
        GymMachine.gym = None


def test_the_gym_agrees_with_the_model(bound: Gym) -> None:
    run_state_machine_as_test(
        GymMachine,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
