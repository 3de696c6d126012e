"""The gym (examples/gym): its own PostgreSQL, integer ids, packages that count down, the times on
the class, one server login in gym_server. Its schema and mapping installed in a throwaway
database, its server's writes raced, the listener drained, every balance exact."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from psycopg import errors

from listener.core.db import connect
from listener.devtools.app_schema import apply_sql_file
from listener.devtools.driver import Ledger
from listener.devtools.example_apps import Gym
from listener.mapping import model
from listener.ops.mapping_propose import propose
from listener.ops.migrate import migrate

from support import ROOT

GYM = ROOT / "examples" / "gym"
NOW = datetime.now().astimezone()
REFUSED = errors.InsufficientPrivilege


def drain(gym: Gym) -> None:
    """Run a listener until the queue is empty."""
    Ledger(gym.dsn).drain(listener_running=False)


def past_classes(gym: Gym, n: int, *, name: str = "Spin") -> list[int]:
    """n classes that ended, a day apart, oldest first."""
    return [gym.add_class(f"{name} {i}", NOW - timedelta(days=n + 1 - i)) for i in range(n)]


def race(*writers: Callable[[], object]) -> list[object]:
    """Run the writers at once, each in its own thread, released together; re-raise the first error."""
    start = threading.Barrier(len(writers))

    def run(writer: Callable[[], object]) -> object:
        start.wait()
        return writer()

    with ThreadPoolExecutor(len(writers)) as pool:
        return [f.result() for f in [pool.submit(run, w) for w in writers]]


# --- the files --------------------------------------------------------------------------


def test_the_mapping_is_the_gyms() -> None:
    m = model.load(GYM / "mapping.toml")
    assert m.booking.table == "gym.bookings"
    assert m.booking.consuming_statuses == ("attended", "no_show")
    assert m.booking.session is not None
    assert (m.booking.session.table, m.booking.session.key) == ("gym.classes", "class_id")
    assert (m.booking.session.start, m.booking.session.end) == ("starts_at", "ends_at")
    assert (m.pack.table, m.pack.find, m.pack.column) == ("gym.packages", "column", "package_id")
    assert (m.pack.remaining, m.pack.used, m.pack.total) == ("sessions_remaining", None, None)
    assert (m.pack.client, m.booking.client) == ("member_id", "member_id")
    assert m.access.mode == "trusted_writers"
    assert (m.access.api_roles, m.access.trusted_roles) == ((), ("gym_server",))
    assert m.legacy is None, "nothing absorbs the gym's old deduction: the app removes it"
    assert m.completion is None


def test_the_servers_flows_run_on_the_plain_tables(plain_gym: Gym) -> None:
    gym = plain_gym
    ana = gym.add_member("ana@example.com")
    package = gym.sell_package(ana, 10)
    spin, yoga = past_classes(gym, 2)
    b1, b2 = gym.book(ana, spin, package), gym.book(ana, yoga, package)
    assert gym.mark(b1, "attended") == 1
    assert gym.mark_class([b1, b2], "no_show") == 2
    assert gym.add_note(b2, "knee injury") == 1
    assert [gym.status(b) for b in (b1, b2)] == ["no_show", "no_show"]
    assert gym.remaining(package) == 10, "without the ledger, marking attendance moves nothing"
    with gym.server() as desk:
        row = desk.execute("SELECT pg_has_role(current_user, 'gym_server', 'MEMBER') AS member").fetchone()
    assert row is not None and row["member"], "the server's login is in gym_server"


def test_the_legacy_path_takes_a_session_per_call_not_per_booking(plain_gym: Gym) -> None:
    """What the ledger replaces: the old function charges again on every repeated mark."""
    gym = plain_gym
    apply_sql_file(gym.dsn, GYM / "legacy.sql")
    ana = gym.add_member("ana@example.com")
    package = gym.sell_package(ana, 10)
    [spin] = past_classes(gym, 1)
    booking = gym.book(ana, spin, package)
    with gym.server() as desk:
        desk.execute("SELECT gym.mark_attendance(%s, 'attended')", [booking])
        desk.execute("SELECT gym.mark_attendance(%s, 'attended')", [booking])  # the second tablet
        desk.execute("SELECT gym.mark_attendance(%s, 'no_show')", [booking])
    assert gym.remaining(package) == 7


# --- charging -----------------------------------------------------------------------------


def test_attended_and_no_show_each_take_one_session_and_cancelled_none(gym: Gym) -> None:
    ana = gym.add_member("ana@example.com")
    package = gym.sell_package(ana, 10)
    classes = past_classes(gym, 4)
    bookings = [gym.book(ana, c, package) for c in classes]
    for booking, status in zip(bookings, ["attended", "attended", "no_show", "cancelled"], strict=True):
        assert gym.mark(booking, status) == 1
    drain(gym)
    assert gym.remaining(package) == 7
    assert [gym.ledger_state(b) for b in bookings[:3]] == [("paid", None)] * 3
    assert gym.ledger_state(bookings[3]) is None
    [drop_in] = past_classes(gym, 1, name="Drop-in")
    walk_in = gym.book(ana, drop_in, None)
    gym.mark(walk_in, "attended")
    drain(gym)
    assert gym.remaining(package) == 7, "a booking with no package charges none"


def test_two_tablets_and_the_coachs_sheet_marking_the_same_bookings_take_one_session_each(gym: Gym) -> None:
    members = [gym.add_member(f"m{i}@example.com") for i in range(3)]
    packages = [gym.sell_package(m, 10) for m in members]
    classes = past_classes(gym, 4)
    bookings = [gym.book(m, c, p) for m, p in zip(members, packages, strict=True) for c in classes]
    with gym.server() as tablet_a, gym.server() as tablet_b, gym.server() as coach:
        race(
            lambda: [gym.mark(b, "attended", conn=tablet_a) for b in bookings],
            lambda: [gym.mark(b, "attended", conn=tablet_b) for b in reversed(bookings)],
            lambda: gym.mark_class(bookings[::2], "no_show", conn=coach),
        )
        # and again once the first marks are charged: a retried request, a tablet back online
        drain(gym)
        race(
            lambda: gym.mark_class(bookings, "attended", conn=tablet_a),
            lambda: gym.mark_class(bookings, "no_show", conn=tablet_b),
        )
    drain(gym)
    assert [gym.remaining(p) for p in packages] == [6, 6, 6]
    assert {gym.ledger_state(b) for b in bookings} == {("paid", None)}


def test_a_booking_cancelled_after_attendance_gets_its_session_back(gym: Gym) -> None:
    ana = gym.add_member("ana@example.com")
    package = gym.sell_package(ana, 10)
    [spin] = past_classes(gym, 1)
    booking = gym.book(ana, spin, package)
    gym.mark(booking, "attended")
    drain(gym)
    assert gym.remaining(package) == 9
    with gym.server() as a, gym.server() as b:
        race(lambda: gym.mark(booking, "cancelled", conn=a), lambda: gym.mark(booking, "cancelled", conn=b))
    drain(gym)
    assert gym.remaining(package) == 10
    assert gym.ledger_state(booking) == ("released", None)
    gym.mark(booking, "no_show")
    drain(gym)
    assert gym.remaining(package) == 9


def test_an_exhausted_package_pays_its_earliest_classes_and_the_rest_after_a_renewal(gym: Gym) -> None:
    ana = gym.add_member("ana@example.com")
    package = gym.sell_package(ana, 2)
    classes = past_classes(gym, 3)
    bookings = [gym.book(ana, c, package) for c in classes]
    assert gym.mark_class(list(reversed(bookings)), "attended") == 3
    drain(gym)
    assert gym.remaining(package) == 0
    assert [gym.ledger_state(b) for b in bookings[:2]] == [("paid", None)] * 2
    state = gym.ledger_state(bookings[2])
    assert state is not None and state[0] == "unfunded"
    gym.renew(package, 5)
    drain(gym)
    assert gym.remaining(package) == 4
    assert gym.ledger_state(bookings[2]) == ("paid", None)


def test_an_expired_package_pays_nothing(gym: Gym) -> None:
    ana = gym.add_member("ana@example.com")
    flagged = gym.sell_package(ana, 5, is_expired=True)
    lapsed = gym.sell_package(ana, 5, expires_on=NOW - timedelta(days=3))
    before, after = past_classes(gym, 2)  # 2 days and 1 day ago: both after the lapse
    b1, b2 = gym.book(ana, before, flagged), gym.book(ana, after, lapsed)
    gym.mark_class([b1, b2], "attended")
    drain(gym)
    assert (gym.remaining(flagged), gym.remaining(lapsed)) == (5, 5)
    assert gym.ledger_state(b1) == ("unfunded", "package expired")
    state = gym.ledger_state(b2)
    assert state is not None and state[0] == "unfunded" and "expired" in (state[1] or "")


# --- who may move a session ------------------------------------------------------------


def test_a_login_outside_gym_server_cannot_mark_attendance_but_may_write_notes(gym: Gym) -> None:
    gym.owner.execute(
        """DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'gym_kiosk') THEN
                CREATE ROLE gym_kiosk LOGIN;
            END IF;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END
        $$"""
    )
    # The kiosk may read and update bookings as far as the table's grants go: only the ledger's
    # guard stands between it and a session.
    gym.owner.execute("GRANT USAGE ON SCHEMA gym TO gym_kiosk")
    gym.owner.execute("GRANT SELECT, UPDATE ON gym.bookings, gym.classes, gym.packages TO gym_kiosk")
    ana = gym.add_member("ana@example.com")
    package = gym.sell_package(ana, 10)
    [spin] = past_classes(gym, 1)
    booking = gym.book(ana, spin, package)
    with gym.server("gym_kiosk") as kiosk:
        for status in ("attended", "no_show"):
            with pytest.raises(REFUSED):
                gym.mark(booking, status, conn=kiosk)
        with pytest.raises(REFUSED):
            gym.mark_class([booking], "attended", conn=kiosk)
        assert gym.add_note(booking, "left early", conn=kiosk) == 1
    drain(gym)
    assert gym.status(booking) == "booked"
    assert gym.remaining(package) == 10
    gym.mark(booking, "attended")  # the server's login may
    drain(gym)
    assert gym.remaining(package) == 9
    with gym.server("gym_kiosk") as kiosk, pytest.raises(REFUSED):
        gym.mark(booking, "cancelled", conn=kiosk)
    drain(gym)
    assert gym.remaining(package) == 9


def test_from_listener_map_to_exact_charges_with_the_proposed_mapping_as_it_stands(plain_gym: Gym) -> None:
    """A new gym runs `listener map`, keeps every guess, and migrates with it: the proposal is
    a mapping that installs and charges exactly, not only one that parses."""
    with connect(plain_gym.dsn, purpose="tests") as conn:
        proposed = model.parse(propose(conn))
    migrate(plain_gym.dsn, mapping=proposed)
    ana = plain_gym.add_member("ana@example.com")
    package = plain_gym.sell_package(ana, 2)
    bookings = [plain_gym.book(ana, c, package) for c in past_classes(plain_gym, 3)]
    for booking, status in zip(bookings, ["attended", "no_show", "attended"], strict=True):
        plain_gym.mark(booking, status)
    drain(plain_gym)
    assert plain_gym.remaining(package) == 0
    states = [plain_gym.ledger_state(b) for b in bookings]
    assert [s[0] if s else None for s in states] == ["paid", "paid", "unfunded"]
