"""Every single-column write on the gym's bookings by a login outside gym_server, from the catalog.

The gym trusts one group of writers (gym_server); any other login the gym's DBA grants
UPDATE on gym.bookings (a kiosk, a reporting tool) may change what moves no session and
nothing else. Each column of gym.bookings, read from the catalog, is written with every
value an attacker would try (tests/support/columns.py, the coaching app's generator) on an
attended booking already charged, a past booking not yet marked and a future one. Then the
server marks the past booking attended, as the gym does, and every package is exact.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

import psycopg

from listener.core.sql_files import query
from listener.devtools.driver import Ledger
from listener.devtools.example_apps import Gym

from support import columns

TABLE = "gym.bookings"
# What the ledger judges a gym booking by: its state, its package, its member, its class (the times).
JUDGED = (
    "SELECT id, status, package_id, member_id, class_id FROM gym.bookings WHERE id = ANY (%s) ORDER BY id"
)


def _kiosk(gym: Gym) -> str:
    """A login outside gym_server holding UPDATE on gym.bookings; its name."""
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
    gym.owner.execute("GRANT USAGE ON SCHEMA gym TO gym_kiosk")
    # SELECT for the UPDATE's WHERE; UPDATE on the bookings alone: only the ledger's guard
    # stands between it and a session.
    gym.owner.execute("GRANT SELECT ON gym.bookings, gym.classes, gym.packages TO gym_kiosk")
    gym.owner.execute("GRANT UPDATE ON gym.bookings TO gym_kiosk")
    return "gym_kiosk"


def _row(gym: Gym, booking: int) -> object:
    row = gym.owner.execute(
        "SELECT to_jsonb(b) AS row FROM gym.bookings b WHERE id = %s", [booking]
    ).fetchone()
    return None if row is None else row["row"]


def test_no_single_column_write_by_a_login_outside_gym_server_moves_a_session(gym: Gym) -> None:
    now = datetime.now().astimezone()
    ana, ben = gym.add_member("ana@example.com"), gym.add_member("ben@example.com")
    package = gym.sell_package(ana, 10, expires_on=now + timedelta(days=20))
    own_other = gym.sell_package(ana, 10)
    bens = gym.sell_package(ben, 10)
    yesterday, earlier = (
        gym.add_class("Spin", now - timedelta(days=1)),
        gym.add_class("Yoga", now - timedelta(days=2)),
    )
    next_week = gym.add_class("Row", now + timedelta(days=7))
    consuming, past = gym.book(ana, earlier, package), gym.book(ana, yesterday, package)
    future = gym.book(ana, next_week, package)
    gym.mark(consuming, "attended")
    Ledger(gym.dsn).drain(listener_running=False)
    assert gym.remaining(package) == 9
    before = gym.owner.execute(JUDGED, [[consuming, past]]).fetchall()
    table = columns.columns(gym.owner, TABLE)
    assert {"status", "package_id", "member_id", "class_id", "notes"} <= {c.name for c in table}
    # Keys whose type says nothing of what they point at: the member's other package, another
    # member's, none; the other member; a class in the past, one in the future.
    special = {
        "package_id": [str(own_other), str(bens), "NULL"],
        "member_id": [str(ben), "NULL"],
        "class_id": [str(earlier), str(yesterday), str(next_week), "NULL"],
    }
    login = _kiosk(gym)
    went_through: list[str] = []
    tried = 0
    with gym.server(login) as kiosk:
        for column in table:
            for value in columns.candidates(gym.owner, TABLE, column, special):
                statement = columns.single_column_update(TABLE, column, value)
                for booking in (consuming, past, future):
                    tried += 1
                    was = _row(gym, booking)
                    with contextlib.suppress(psycopg.Error):
                        kiosk.execute(statement, [booking])
                    if booking != future and _row(gym, booking) != was:
                        went_through.append(f"{column.name} = {value} on booking {booking}")
    assert tried > 50
    # The kiosk holds UPDATE on every column: the guard alone refused every change to the charged
    # and the past booking but a note (a future booking's may cancel it, which moves no session).
    assert {w.split(" ")[0] for w in went_through} == {"notes"}, went_through
    # Whatever went through (notes): the charged and the past booking are judged as they were.
    assert gym.owner.execute(JUDGED, [[consuming, past]]).fetchall() == before, went_through
    # The gym has no cron: its server marks the past class's attendance.
    gym.mark(past, "attended")
    Ledger(gym.dsn).drain(listener_running=False)
    assert (gym.remaining(package), gym.remaining(own_other), gym.remaining(bens)) == (8, 10, 10)
    assert (gym.ledger_state(consuming), gym.ledger_state(past)) == (("paid", None), ("paid", None))
    assert gym.ledger_state(future) is None
    assert gym.owner.execute(query("out_of_sync_count")).fetchone() == {"n": 0}
    assert gym.owner.execute("SELECT count(*) AS n FROM pgmq.q_booking_events_dlq").fetchone() == {"n": 0}
