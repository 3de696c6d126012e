"""Every single-column write on the marketplace's bookings by its users, from the catalog.

A user writes their own bookings through the API (role authenticated, RLS
`auth.uid() = user_id`); another user tries the same rows. Each column of public.bookings,
read from the catalog, is written with every value an attacker would try
(tests/support/columns.py, the coaching app's generator) on a completed booking already
charged, a past confirmed one and a future one. Then the cron completes what has ended
and every wallet is exact: the credits a booking costs are what it cost when it was
booked, whatever its user wrote since.
"""

from __future__ import annotations

import contextlib
import uuid
from datetime import datetime, timedelta

import psycopg
import pytest

from listener.core.sql_files import query
from listener.devtools.driver import Ledger
from listener.devtools.example_apps import Marketplace

from support import columns

pytestmark = pytest.mark.slow

TABLE = "public.bookings"
# What the ledger judges a marketplace booking by: its state, its user (the wallet), its
# times, whether and how much it costs.
JUDGED = (
    "SELECT id, status, user_id, starts_at, ends_at, payment_method, credits_used"
    " FROM public.bookings WHERE id = ANY (%s) ORDER BY id"
)


def _judged(market: Marketplace, booking: uuid.UUID) -> object:
    return market.owner.execute(JUDGED, [[booking]]).fetchall()


def test_no_single_column_write_by_a_user_or_another_user_moves_credits(market: Marketplace) -> None:
    week = datetime.now().astimezone() + timedelta(days=7)
    maya = market.add_user("maya@example.com", credits=20)
    noah = market.add_user("noah@example.com", credits=20)
    consuming = market.book(maya, "Pottery", week, credits_used=3)
    past = market.book(maya, "Yoga", week + timedelta(hours=2), credits_used=2)
    future = market.book(maya, "Spin", week + timedelta(hours=4), credits_used=4)
    market.time_passes([consuming, past], timedelta(days=8))
    market.complete(consuming, as_user=False)
    Ledger(market.owner_dsn).drain(listener_running=False)
    assert market.credits(maya) == 17
    before = market.owner.execute(JUDGED, [[consuming.id, past.id]]).fetchall()
    table = columns.columns(market.owner, TABLE)
    assert {"status", "user_id", "starts_at", "ends_at", "payment_method", "credits_used"} <= {
        c.name for c in table
    }
    # The other user's id: whose wallet would pay.
    special = {"user_id": [f"'{noah}'::uuid", "gen_random_uuid()", "NULL"]}
    went_through: list[str] = []
    tried = 0
    for column in table:
        for value in columns.candidates(market.owner, TABLE, column, special):
            statement = columns.single_column_update(TABLE, column, value).as_string(market.owner)
            for booking in (consuming, past, future):
                for user in (maya, noah):
                    tried += 1
                    was = _judged(market, booking.id)
                    with (
                        contextlib.suppress(psycopg.Error),
                        market.api(role="authenticated", user=user) as api,
                    ):
                        api.execute(statement, [booking.id])
                    if booking is not future and _judged(market, booking.id) != was:
                        who = "its user" if user == maya else "another user"
                        went_through.append(
                            f"{column.name} = {value} on the {_name(booking, consuming)} by {who}"
                        )
    assert tried > 100
    # Nothing a user may write changes how the charged or the ended booking is judged.
    assert not went_through, went_through
    assert market.owner.execute(JUDGED, [[consuming.id, past.id]]).fetchall() == before
    assert market.cron() == 1
    Ledger(market.owner_dsn).drain(listener_running=False)
    # The charged booking stays charged, the ended one costs its 2 credits, Noah's wallet is untouched.
    assert (market.credits(maya), market.credits(noah)) == (15, 20)
    assert (market.ledger_state(consuming), market.ledger_state(past)) == (("paid", None), ("paid", None))
    assert market.owner.execute(query("out_of_sync_count")).fetchone() == {"n": 0}
    assert market.owner.execute("SELECT count(*) AS n FROM pgmq.q_booking_events_dlq").fetchone() == {"n": 0}


def _name(booking: object, consuming: object) -> str:
    return "completed booking" if booking is consuming else "past confirmed booking"
