"""The charge on apps shaped unlike the coaching app: a gym (integer keys, packs counted down,
the session's times on its class) and a credits marketplace (a wallet found by the user, bookings
that cost what they say, card bookings that cost nothing). Each is installed in a database of
its own with `migrate(dsn, mapping=...)`; bookings are written as the owner and charged by
calling session_ledger.apply_bookings with their ids, as drain() does with an event's."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from listener.core.db import Conn, connect
from listener.devtools.throwaway import create_database, drop_database
from listener.mapping import model
from listener.mapping.model import Mapping
from listener.ops.migrate import migrate

from support.mapped_apps import GYM_MAPPING, GYM_TABLES, MARKET_MAPPING, MARKET_TABLES

# Each event queued now, after the install's cut-over: charged, not adopted.
_APPLY = {
    "integer": "SELECT a.booking_id, a.outcome FROM session_ledger.apply_bookings("
    "%(ids)s::integer[], array_fill(clock_timestamp(), ARRAY[%(n)s])) AS a",
    "uuid": "SELECT a.booking_id, a.outcome FROM session_ledger.apply_bookings("
    "%(ids)s::uuid[], array_fill(clock_timestamp(), ARRAY[%(n)s])) AS a",
}


@dataclass
class App:
    """One installed app: its connection (as the owner) and its mapping."""

    conn: Conn

    def one(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        row = self.conn.execute(sql, params or {}).fetchone()
        assert row is not None
        return next(iter(row.values()))

    def charge(self, ids: list[Any], key_type: str) -> dict[Any, str]:
        """Apply these bookings as an event for each, queued now; each booking's outcome."""
        rows = self.conn.execute(_APPLY[key_type], {"ids": ids, "n": len(ids)}).fetchall()
        return {r["booking_id"]: r["outcome"] for r in rows}

    def ledger(self, booking: Any) -> tuple[str, int]:
        row = self.conn.execute(
            "SELECT state, amount FROM session_ledger.charges WHERE booking_id = %(b)s", {"b": booking}
        ).fetchone()
        assert row is not None
        return row["state"], row["amount"]


def _install(admin: str, schema: str, mapping: Mapping) -> Iterator[App]:
    dsn = create_database(admin, prefix="ledger_mapped")
    try:
        with connect(dsn, autocommit=True, purpose="tests") as conn:
            conn.execute(schema)
        migrate(dsn, mapping=mapping)
        with connect(dsn, autocommit=True, purpose="tests") as conn:
            yield App(conn)
    finally:
        drop_database(admin, dsn)


@pytest.fixture
def gym(ledger_server: str) -> Iterator[App]:
    """A gym, installed from its mapping."""
    yield from _install(ledger_server, GYM_TABLES, model.parse(GYM_MAPPING, source="gym"))


@pytest.fixture
def market(ledger_server: str) -> Iterator[App]:
    """A credits marketplace, installed from its mapping."""
    yield from _install(ledger_server, MARKET_TABLES, model.parse(MARKET_MAPPING, source="marketplace"))


def _gym_booking(app: App, member: int, package: int | None, status: str, hours_ago: int) -> int:
    class_id = app.one(
        "INSERT INTO gym.classes (name, starts_at, ends_at) "
        "VALUES ('spin', now() - make_interval(hours => %(h)s), now() - make_interval(hours => %(h)s) + interval '1 hour') "
        "RETURNING id",
        {"h": hours_ago},
    )
    return int(
        app.one(
            "INSERT INTO gym.bookings (member_id, class_id, package_id, status) "
            "VALUES (%(m)s, %(c)s, %(p)s, %(s)s) RETURNING id",
            {"m": member, "c": class_id, "p": package, "s": status},
        )
    )


def _remaining(app: App, package: int) -> int:
    return int(app.one("SELECT sessions_remaining FROM gym.packages WHERE id = %(p)s", {"p": package}))


def test_the_ledger_of_an_app_with_integer_keys_is_keyed_by_integers(gym: App) -> None:
    types = {
        r["column_name"]: r["data_type"]
        for r in gym.conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'session_ledger' AND table_name = 'charges'"
        )
    }
    assert types["booking_id"] == "integer"
    assert types["purchase_id"] == "integer"
    assert types["client_id"] == "integer"
    assert gym.one("SELECT consuming_statuses FROM session_ledger.config") == ["attended", "no_show"]


def test_a_gym_package_counts_down_one_per_attended_or_missed_class(gym: App) -> None:
    member = gym.one("INSERT INTO gym.members (email) VALUES ('a@gym.test') RETURNING id")
    package = gym.one(
        "INSERT INTO gym.packages (member_id, sessions_remaining) VALUES (%(m)s, 3) RETURNING id",
        {"m": member},
    )
    attended = _gym_booking(gym, member, package, "attended", 5)
    missed = _gym_booking(gym, member, package, "no_show", 4)
    booked = _gym_booking(gym, member, package, "booked", 3)

    outcomes = gym.charge([attended, missed, booked], "integer")

    assert outcomes == {attended: "paid", missed: "paid", booked: "no-op"}
    assert _remaining(gym, package) == 1
    assert gym.ledger(attended) == ("paid", 1)

    # a cancel gives back exactly what was charged; a replay changes nothing
    gym.conn.execute("UPDATE gym.bookings SET status = 'cancelled' WHERE id = %(b)s", {"b": missed})
    assert gym.charge([missed], "integer") == {missed: "released"}
    assert gym.charge([missed, attended], "integer") == {missed: "no-op", attended: "no-op"}
    assert _remaining(gym, package) == 2


def test_an_empty_or_expired_gym_package_pays_for_nothing(gym: App) -> None:
    member = gym.one("INSERT INTO gym.members (email) VALUES ('b@gym.test') RETURNING id")
    one_left = gym.one(
        "INSERT INTO gym.packages (member_id, sessions_remaining) VALUES (%(m)s, 1) RETURNING id",
        {"m": member},
    )
    expired = gym.one(
        "INSERT INTO gym.packages (member_id, sessions_remaining, is_expired) VALUES (%(m)s, 5, true) RETURNING id",
        {"m": member},
    )
    first = _gym_booking(gym, member, one_left, "attended", 5)
    second = _gym_booking(gym, member, one_left, "attended", 4)
    on_expired = _gym_booking(gym, member, expired, "attended", 3)

    # asked latest first: the package still pays for its earliest class
    assert gym.charge([second, on_expired, first], "integer") == {
        first: "paid",
        second: "unfunded",
        on_expired: "unfunded",
    }
    assert _remaining(gym, one_left) == 0
    assert _remaining(gym, expired) == 5
    reason = gym.one("SELECT reason FROM session_ledger.charges WHERE booking_id = %(b)s", {"b": on_expired})
    assert reason == "package expired"

    # a top-up pays for the unfunded class when it is judged again
    gym.conn.execute("UPDATE gym.packages SET sessions_remaining = 1 WHERE id = %(p)s", {"p": one_left})
    gym.charge([second], "integer")
    assert gym.ledger(second)[0] == "paid"
    assert _remaining(gym, one_left) == 0


def _market_booking(app: App, user: Any, method: str, credits: int, status: str = "completed") -> Any:
    return app.one(
        "INSERT INTO public.bookings (user_id, class_name, starts_at, ends_at, status, payment_method, credits_used) "
        "VALUES (%(u)s, 'yoga', now() - interval '2 hours', now() - interval '1 hour', %(s)s, %(m)s, %(c)s) "
        "RETURNING id",
        {"u": user, "s": status, "m": method, "c": credits},
    )


def _balance(app: App, user: Any) -> int:
    return int(
        app.one("SELECT credits_balance FROM public.credit_wallets WHERE user_id = %(u)s", {"u": user})
    )


def test_a_wallet_pays_completed_credit_bookings_whole_or_not_at_all(market: App) -> None:
    user = market.one("SELECT gen_random_uuid()")
    market.conn.execute(
        "INSERT INTO public.credit_wallets (user_id, credits_balance) VALUES (%(u)s, 5)", {"u": user}
    )
    first = _market_booking(market, user, "credits", 3)
    second = _market_booking(market, user, "credits", 3)
    by_card = _market_booking(market, user, "card", 4)
    upcoming = _market_booking(market, user, "credits", 2, status="confirmed")

    outcomes = market.charge([first, second, by_card, upcoming], "uuid")

    # 5 credits: the first booking's 3, never part of the second's
    assert outcomes == {first: "paid", second: "unfunded", by_card: "no-op", upcoming: "no-op"}
    assert _balance(market, user) == 2
    assert market.ledger(first) == ("paid", 3)
    assert market.ledger(second)[0] == "unfunded"

    # a cancel gives back exactly the 3 credits charged
    market.conn.execute("UPDATE public.bookings SET status = 'cancelled' WHERE id = %(b)s", {"b": first})
    assert market.charge([first], "uuid") == {first: "released"}
    assert _balance(market, user) == 5
    assert market.ledger(first) == ("released", 3)

    # a top-up lets the unfunded booking be charged when it is judged again
    market.conn.execute(
        "UPDATE public.credit_wallets SET credits_balance = 6 WHERE user_id = %(u)s", {"u": user}
    )
    market.charge([second], "uuid")
    assert market.ledger(second) == ("paid", 3)
    assert _balance(market, user) == 3


def test_a_booking_that_costs_nothing_is_paid_with_nothing(market: App) -> None:
    user = market.one("SELECT gen_random_uuid()")
    market.conn.execute(
        "INSERT INTO public.credit_wallets (user_id, credits_balance) VALUES (%(u)s, 0)", {"u": user}
    )
    free = _market_booking(market, user, "credits", 0)
    assert market.charge([free], "uuid") == {free: "paid"}
    assert market.ledger(free) == ("paid", 0)
    market.conn.execute("UPDATE public.bookings SET status = 'cancelled' WHERE id = %(b)s", {"b": free})
    assert market.charge([free], "uuid") == {free: "released"}
    assert _balance(market, user) == 0


def test_a_booking_paid_by_card_after_credits_gives_the_credits_back(market: App) -> None:
    user = market.one("SELECT gen_random_uuid()")
    market.conn.execute(
        "INSERT INTO public.credit_wallets (user_id, credits_balance) VALUES (%(u)s, 4)", {"u": user}
    )
    booking = _market_booking(market, user, "credits", 2)
    market.charge([booking], "uuid")
    assert _balance(market, user) == 2
    market.conn.execute("UPDATE public.bookings SET payment_method = 'card' WHERE id = %(b)s", {"b": booking})
    assert market.charge([booking], "uuid") == {booking: "released"}
    assert _balance(market, user) == 4


def test_marketplace_a_repriced_booking_converges(market: App) -> None:
    """A paid booking's amount changed: what it paid comes back and its new amount is charged, whole or
    not at all; an unfunded one is judged again at its new amount."""
    user = market.one("SELECT gen_random_uuid()")
    market.conn.execute(
        "INSERT INTO public.credit_wallets (user_id, credits_balance) VALUES (%(u)s, 4)", {"u": user}
    )
    booking = _market_booking(market, user, "credits", 3)
    assert market.charge([booking], "uuid") == {booking: "paid"}
    assert (_balance(market, user), market.ledger(booking)) == (1, ("paid", 3))
    reprice = "UPDATE public.bookings SET credits_used = %(c)s WHERE id = %(b)s"
    # 3 to 2: exactly 1 comes back
    market.conn.execute(reprice, {"c": 2, "b": booking})
    assert market.charge([booking], "uuid") == {booking: "moved"}
    assert (_balance(market, user), market.ledger(booking)) == (2, ("paid", 2))
    # judged again, nothing moves: the row already says what the booking costs
    assert market.charge([booking], "uuid") == {booking: "no-op"}
    assert _balance(market, user) == 2
    # 2 to 5 with 2 left (4 with its own 2 back): unfunded, its 2 given back
    market.conn.execute(reprice, {"c": 5, "b": booking})
    assert market.charge([booking], "uuid") == {booking: "unfunded"}
    assert (_balance(market, user), market.ledger(booking)) == (4, ("unfunded", 5))
    # still unfunded at 5 on 4 credits; down to 4, paid whole
    assert market.charge([booking], "uuid") == {booking: "no-op"}
    market.conn.execute(reprice, {"c": 4, "b": booking})
    assert market.charge([booking], "uuid") == {booking: "paid"}
    assert (_balance(market, user), market.ledger(booking)) == (0, ("paid", 4))
    # a cancel gives back what the row now says it paid
    market.conn.execute("UPDATE public.bookings SET status = 'cancelled' WHERE id = %(b)s", {"b": booking})
    assert market.charge([booking], "uuid") == {booking: "released"}
    assert _balance(market, user) == 4
