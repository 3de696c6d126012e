"""The credits marketplace (examples/marketplace) on a cluster set up as Supabase sets one up:
uuid ids, one wallet per user found by the booking's user, bookings costing credits_used,
card bookings free, RLS `auth.uid() = user_id`. Users book and cancel through the API as
themselves; the cron and the payment webhook run as service_role. The ledger is migrated
as the non-superuser postgres from the app's mapping; writers race; the listener drains;
every wallet is exact."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial

import pytest
from psycopg import errors

from listener.devtools.app_schema import apply_sql_file
from listener.devtools.driver import Ledger
from listener.devtools.example_apps import Booked, Marketplace
from listener.mapping import model

from support import ROOT

pytestmark = pytest.mark.slow

MARKETPLACE = ROOT / "examples" / "marketplace"
REFUSED = errors.InsufficientPrivilege
WEEK = timedelta(days=7)


def next_week(hours: int = 0) -> datetime:
    """A session next week, `hours` later than the first."""
    return datetime.now().astimezone() + WEEK + timedelta(hours=hours)


def drain(market: Marketplace) -> None:
    """Run a listener until the queue is empty."""
    Ledger(market.owner_dsn).drain(listener_running=False)


def race(*writers: Callable[[], object]) -> list[object]:
    """Run the writers at once, each in its own thread, released together; each one's result or error."""
    start = threading.Barrier(len(writers))

    def run(writer: Callable[[], object]) -> object:
        start.wait()
        try:
            return writer()
        except Exception as exc:  # the caller asserts which writers were refused
            return exc

    with ThreadPoolExecutor(len(writers)) as pool:
        return [f.result() for f in [pool.submit(run, w) for w in writers]]


def happened(market: Marketplace, *bookings: Booked, days: int = 8) -> None:
    """The sessions, booked for next week, are now `days - 7` days in the past."""
    market.time_passes(bookings, timedelta(days=days))


# --- the files --------------------------------------------------------------------------


def test_the_mapping_is_the_marketplaces() -> None:
    m = model.load(MARKETPLACE / "mapping.toml")
    assert (m.booking.table, m.booking.start, m.booking.end) == ("public.bookings", "starts_at", "ends_at")
    assert m.booking.consuming_statuses == ("completed",)
    assert m.booking.consumes_when == "{row}.payment_method = 'credits'"
    assert (m.booking.client, m.booking.session) == ("user_id", None)
    assert (m.pack.table, m.pack.find, m.pack.column) == ("public.credit_wallets", "by_client", None)
    assert (m.pack.remaining, m.pack.amount_column, m.pack.client) == (
        "credits_balance",
        "credits_used",
        "user_id",
    )
    assert (m.access.mode, m.access.trusted_roles, m.access.membership_function) == (
        "supabase",
        ("service_role",),
        None,
    )
    assert m.completion is not None
    assert (m.completion.from_status, m.completion.to_status) == ("confirmed", "completed")
    assert m.legacy is None


def test_the_apps_flows_run_on_the_plain_tables_under_rls(plain_market: Marketplace) -> None:
    market = plain_market
    maya = market.add_user("maya@example.com", credits=10)
    noah = market.add_user("noah@example.com", credits=3)
    pottery = market.book(maya, "Pottery", next_week(), credits_used=3)
    painting = market.book(maya, "Painting", next_week(2), payment_method="card")
    assert market.cancel(pottery) == 1
    assert market.status(pottery) == "cancelled"
    with market.api(role="authenticated", user=noah) as conn:
        rows = conn.execute("SELECT id FROM public.bookings").fetchall()
        wallet = conn.execute("SELECT user_id, credits_balance FROM public.credit_wallets").fetchall()
    assert rows == [], "a user sees only their own bookings"
    assert wallet == [{"user_id": noah, "credits_balance": 3}]
    other = Booked(painting.id, noah, 1, "card")  # Noah tries Maya's booking: RLS hides it
    assert market.cancel(other) == 0
    # no policy lets a user write a wallet: the UPDATE finds no row it may change
    assert market.request("top_up", {"user": noah, "credits": 100}, role="authenticated", user=noah)[1] == 0
    assert market.credits(noah) == 3
    market.top_up(noah, 5)
    assert market.credits(noah) == 8
    happened(market, painting)
    assert market.app_cron() == 1
    assert market.status(painting) == "completed"
    assert market.credits(maya) == 10, "without the ledger, completing moves no credits"


def test_the_legacy_path_takes_credits_at_booking_and_refunds_every_cancel(plain_market: Marketplace) -> None:
    """What the ledger replaces: credits leave at booking, and a retried cancel refunds twice."""
    market = plain_market
    apply_sql_file(market.owner_dsn, MARKETPLACE / "legacy.sql")
    maya = market.add_user("maya@example.com", credits=10)
    market.price_class("Pottery", 3)
    start = next_week()
    rows, _ = market.request(
        "legacy_book",
        {"class_name": "Pottery", "starts_at": start, "ends_at": start + timedelta(hours=1), "credits": 3},
        role="authenticated",
        user=maya,
    )
    booking = rows[0]["id"]
    assert market.credits(maya) == 7, "charged for a class that has not happened"
    for _retry in range(2):
        market.request("legacy_cancel", {"booking": booking}, role="authenticated", user=maya)
    assert market.credits(maya) == 13, "the retried cancel refunded the credits twice"


# --- charging -----------------------------------------------------------------------------


def test_completed_credit_bookings_cost_their_credits_and_card_bookings_nothing(market: Marketplace) -> None:
    maya = market.add_user("maya@example.com", credits=10)
    pottery = market.book(maya, "Pottery", next_week(), credits_used=3)
    yoga = market.book(maya, "Yoga", next_week(2), credits_used=2)
    painting = market.book(maya, "Painting", next_week(4), payment_method="card", credits_used=4)
    open_day = market.book(maya, "Open day", next_week(6), credits_used=0)
    happened(market, pottery, yoga, painting, open_day)
    assert market.cron() == 4
    drain(market)
    assert market.credits(maya) == 5
    assert [market.status(b) for b in (pottery, yoga, painting, open_day)] == ["completed"] * 4
    assert [market.ledger_state(b) for b in (pottery, yoga)] == [("paid", None)] * 2
    assert market.ledger_state(open_day) == ("paid", None), "an amount of 0 is paid with 0"


def test_two_crons_and_the_apps_own_update_complete_each_booking_once(market: Marketplace) -> None:
    users = [market.add_user(f"u{i}@example.com", credits=20) for i in range(3)]
    bookings = [
        market.book(
            u, f"Class {j}", next_week(j), credits_used=j + 1, payment_method="card" if j == 3 else "credits"
        )
        for u in users
        for j in range(4)
    ]
    happened(market, *bookings)
    results = race(market.cron, market.cron, market.app_cron)
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(int(r) for r in results if isinstance(r, int)) == len(bookings)
    drain(market)
    # 1 + 2 + 3 credits each; the fourth booking was paid by card
    assert [market.credits(u) for u in users] == [14, 14, 14]
    assert market.cron() == 0


def test_the_cron_racing_a_users_cancels(market: Marketplace) -> None:
    maya = market.add_user("maya@example.com", credits=10)
    past = market.book(maya, "Pottery", next_week(), credits_used=2)
    future = market.book(maya, "Yoga", next_week(2), credits_used=3)
    happened(market, past)
    late_cancel, cron, cancel = race(lambda: market.cancel(past), market.cron, lambda: market.cancel(future))
    assert isinstance(late_cancel, REFUSED), "a session that has happened is not the user's to cancel"
    assert cancel == 1
    assert cron in (0, 1)  # 0 when the refused cancel held the row as the cron passed it
    market.cron()  # the next run
    drain(market)
    assert (market.status(past), market.status(future)) == ("completed", "cancelled")
    assert market.credits(maya) == 8
    assert market.ledger_state(future) is None


def test_an_exhausted_wallet_leaves_the_later_booking_unfunded_until_a_top_up(market: Marketplace) -> None:
    noah = market.add_user("noah@example.com", credits=3)
    dj = market.book(noah, "DJ workshop", next_week(), credits_used=2)
    boxing = market.book(noah, "Boxing", next_week(2), credits_used=2)
    happened(market, dj, boxing)
    assert market.cron() == 2
    drain(market)
    assert market.credits(noah) == 1, "charged whole or not at all: 3 credits pay one 2-credit class"
    assert market.ledger_state(dj) == ("paid", None)
    state = market.ledger_state(boxing)
    assert state is not None and state[0] == "unfunded"
    market.top_up(noah, 5)
    drain(market)
    assert market.credits(noah) == 4
    assert market.ledger_state(boxing) == ("paid", None)


def test_a_cancel_after_completion_gives_back_exactly_what_was_charged(market: Marketplace) -> None:
    maya = market.add_user("maya@example.com", credits=10)
    pottery = market.book(maya, "Pottery", next_week(), credits_used=3)
    painting = market.book(maya, "Painting", next_week(2), payment_method="card", credits_used=5)
    happened(market, pottery, painting)
    market.cron()
    drain(market)
    assert market.credits(maya) == 7
    # the support desk refunds both, each twice at once (a retried request)
    for booking in (pottery, painting):
        by_support = partial(market.cancel, booking, as_user=False)
        race(by_support, by_support)
    drain(market)
    assert market.credits(maya) == 10
    assert market.ledger_state(pottery) == ("released", None)


# --- who may move credits ----------------------------------------------------------------


def test_a_user_cannot_complete_move_or_cancel_their_own_past_credit_booking(market: Marketplace) -> None:
    maya = market.add_user("maya@example.com", credits=10)
    pottery = market.book(maya, "Pottery", next_week(), credits_used=3)
    happened(market, pottery)
    with pytest.raises(REFUSED):
        market.complete(pottery)
    with pytest.raises(REFUSED):
        market.reschedule(pottery, next_week())
    with pytest.raises(REFUSED):
        market.cancel(pottery)
    drain(market)
    assert market.status(pottery) == "confirmed"
    assert market.credits(maya) == 10
    assert market.cron() == 1
    drain(market)
    assert market.credits(maya) == 7
    with pytest.raises(REFUSED):
        market.cancel(pottery)
    drain(market)
    assert (market.status(pottery), market.credits(maya)) == ("completed", 7)


def test_a_user_may_book_and_cancel_a_future_class_and_never_pays_for_it(market: Marketplace) -> None:
    maya = market.add_user("maya@example.com", credits=10)
    yoga = market.book(maya, "Yoga", next_week(), credits_used=2)
    assert market.cancel(yoga) == 1
    drain(market)
    assert (market.status(yoga), market.credits(maya)) == ("cancelled", 10)
    with pytest.raises(REFUSED):  # nor complete one that has not happened
        market.complete(market.book(maya, "Spin", next_week(), credits_used=1))
    drain(market)
    assert market.credits(maya) == 10


# --- what a booking costs ------------------------------------------------------------------


def test_a_user_may_not_price_their_own_booking(market: Marketplace) -> None:
    maya = market.add_user("maya@example.com", credits=10)
    pottery = market.book(maya, "Pottery", next_week(), credits_used=3)
    assert pottery.credits_used == 3, "the booking costs what its class costs"
    with pytest.raises(REFUSED):  # the app's column privileges: credits_used is not the user's
        market.reprice(pottery, 0, as_user=True)
    happened(market, pottery)
    with pytest.raises(REFUSED):
        market.reprice(pottery, 0, as_user=True)
    assert market.cron() == 1
    drain(market)
    assert market.credits(maya) == 7


def test_support_repricing_a_completed_booking_converges_the_wallet(market: Marketplace) -> None:
    maya = market.add_user("maya@example.com", credits=10)
    pottery = market.book(maya, "Pottery", next_week(), credits_used=3)
    happened(market, pottery)
    assert market.cron() == 1
    drain(market)
    assert market.credits(maya) == 7
    # a partial refund: the class now costs 2, and exactly 1 credit comes back
    assert market.reprice(pottery, 2) == 1
    drain(market)
    assert market.credits(maya) == 8
    assert market.ledger_state(pottery) == ("paid", None)
    drain(market)  # nothing left to do: level-triggered
    assert market.credits(maya) == 8


def test_repricing_beyond_the_wallet_leaves_the_booking_unfunded_with_its_credits_given_back(
    market: Marketplace,
) -> None:
    noah = market.add_user("noah@example.com", credits=3)
    dj = market.book(noah, "DJ workshop", next_week(), credits_used=2)
    happened(market, dj)
    assert market.cron() == 1
    drain(market)
    assert market.credits(noah) == 1
    # 5 credits, of a wallet holding 1 (and the 2 the booking paid): not paid whole, so not at all
    assert market.reprice(dj, 5) == 1
    drain(market)
    assert market.credits(noah) == 3, "the 2 it paid came back, and nothing was taken"
    state = market.ledger_state(dj)
    assert state is not None and state[0] == "unfunded"
    market.top_up(noah, 1)
    drain(market)
    assert market.credits(noah) == 4, "4 credits do not pay a class of 5"
    state = market.ledger_state(dj)
    assert state is not None and state[0] == "unfunded"
    market.top_up(noah, 1)
    drain(market)
    assert (market.credits(noah), market.ledger_state(dj)) == (0, ("paid", None))
