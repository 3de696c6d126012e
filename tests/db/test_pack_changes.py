"""Packs: an unfunded booking judged again when its pack can newly pay, and sessions given away kept given away."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import pytest

from listener.ops.audit import charge

from support.world import World

DAY = timedelta(days=1)


def _queued_bookings(world: World) -> list[uuid.UUID]:
    return [uuid.UUID(str(m["message"]["booking_id"])) for m in world.queue()]  # type: ignore[index]


def _reason(world: World, booking: uuid.UUID) -> str | None:
    row = world.ledger.ledger_row(booking)
    assert row is not None
    return row["reason"]  # type: ignore[no-any-return]


def _exhausted(world: World, *, unfunded: int = 1) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A 2-pack with its two sessions paid and `unfunded` more it could not pay."""
    pack = world.pack(sessions_total=2)
    bookings = world.bookings(pack, count=2 + unfunded)
    world.ledger.bulk_complete()
    world.drain()
    assert [world.ledger_state(b) for b in bookings] == [("paid", pack)] * 2 + [("unfunded", pack)] * unfunded
    return pack, bookings


def test_a_topped_up_pack_pays_for_its_unfunded_booking_with_no_command(world: World) -> None:
    pack, bookings = _exhausted(world)
    world.conn.execute("UPDATE public.client_purchases SET sessions_total = 10 WHERE id = %s", [pack])
    assert _queued_bookings(world) == [bookings[-1]]
    event = world.queue()[0]["message"]
    assert event["source"] == "pack" and event["cause"]["role"]  # type: ignore[index]
    world.drain()
    assert world.used(pack) == 3
    assert world.ledger_state(bookings[-1]) == ("paid", pack)
    assert _reason(world, bookings[-1]) is None


@pytest.mark.parametrize(
    "change",
    [
        "sessions_total = sessions_total + 1",
        "sessions_used = sessions_used - 1",
        "payment_status = 'succeeded'",
        "expires_at = NULL",
        "expires_at = expires_at + interval '10 days'",
    ],
)
def test_every_change_that_may_let_a_pack_pay_judges_its_unfunded_bookings_again(
    world: World, change: str
) -> None:
    now = datetime.now().astimezone()
    pack = world.pack(sessions_total=1, expires_at=now - 3.5 * DAY, payment_status="refunded")
    [booking] = world.bookings(pack, start=now - 2 * DAY, status="completed")
    world.conn.execute("UPDATE public.client_purchases SET sessions_used = 1 WHERE id = %s", [pack])
    world.drain()
    assert world.ledger_state(booking) == ("unfunded", pack)
    world.conn.execute(f"UPDATE public.client_purchases SET {change} WHERE id = %s", [pack])
    assert _queued_bookings(world) == [booking]
    world.drain()
    # One change alone never makes this pack able to pay: judged again, still unfunded, nothing moves.
    assert world.ledger_state(booking) == ("unfunded", pack)
    assert world.used(pack) == (0 if change.startswith("sessions_used") else 1)


def test_a_still_unfunded_booking_gets_todays_reason_and_its_event_changes_nothing_else(world: World) -> None:
    pack, bookings = _exhausted(world)
    assert _reason(world, bookings[-1]) == "pack exhausted"
    before = _outcomes(world)
    world.conn.execute(
        "UPDATE public.client_purchases SET payment_status = 'refunded', sessions_total = 10 WHERE id = %s",
        [pack],
    )
    world.drain()
    assert world.ledger_state(bookings[-1]) == ("unfunded", pack)
    assert _reason(world, bookings[-1]) == "pack payment refunded"
    assert world.used(pack) == 2
    # Reported as a no-op: the listeners' count of unfunded outcomes does not rise again.
    after = _outcomes(world)
    assert (after["unfunded"] - before["unfunded"], after["no-op"] - before["no-op"]) == (0, 1)


def _outcomes(world: World) -> dict[str, int]:
    row = world.conn.execute("SELECT session_ledger.status() -> 'outcomes' AS o").fetchone()
    assert row is not None
    return {k: int(v) for k, v in row["o"].items()}


def test_a_change_that_cannot_let_a_pack_pay_enqueues_nothing(world: World) -> None:
    pack, bookings = _exhausted(world)
    for change in (
        "sessions_used = sessions_used + 1",  # what every charge does
        "sessions_total = 1",
        "payment_status = 'failed'",
        "expires_at = now() - interval '30 days'",
        "amount_paid_cents = 1",
    ):
        world.conn.execute(f"UPDATE public.client_purchases SET {change} WHERE id = %s", [pack])
        assert world.queue() == [], change
    # A change the other way never takes back a session already paid.
    world.drain()
    assert [world.ledger_state(b) for b in bookings[:2]] == [("paid", pack)] * 2


def test_a_session_given_back_pays_for_the_earliest_unfunded_booking_first(world: World) -> None:
    pack, bookings = _exhausted(world, unfunded=3)
    world.set_status(bookings[0], "cancelled")
    world.drain()
    assert world.used(pack) == 2
    assert [world.ledger_state(b)[0] for b in bookings] == [  # type: ignore[index]
        "released",
        "paid",
        "paid",
        "unfunded",
        "unfunded",
    ]
    # The trainer's reinstate gives one back too: the next earliest takes it.
    world.conn.execute("SELECT public.release_session(%s, 'goodwill')", [pack])
    assert _queued_bookings(world) == bookings[3:]
    world.drain()
    assert world.ledger_state(bookings[3]) == ("paid", pack)
    assert world.ledger_state(bookings[4]) == ("unfunded", pack)
    assert world.used(pack) == 2


def _adopted(world: World, *, used: int, completed: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A pack the app's old code left with `used` sessions used and `completed` completed bookings, adopted."""
    pack = world.pack(sessions_total=10, sessions_used=used)
    with world.conn.transaction():
        world.conn.execute("SET LOCAL session_replication_role = replica")
        bookings = world.bookings(pack, count=completed, status="completed")
        world.conn.execute(
            """INSERT INTO session_ledger.charges (booking_id, purchase_id, state, source, client_id, org_id)
               SELECT b.id, b.purchase_id, 'paid', 'adoption', b.client_id, b.org_id
               FROM public.bookings b WHERE b.id = ANY (%s)""",
            [bookings],
        )
    world.conn.execute("SELECT session_ledger.record_given_away(%s::uuid[])", [[pack]])
    return pack, bookings


def _given_away(world: World, pack: uuid.UUID) -> int | None:
    row = world.conn.execute(
        "SELECT sessions FROM session_ledger.given_away WHERE purchase_id = %s", [pack]
    ).fetchone()
    return None if row is None else int(row["sessions"])


@pytest.mark.parametrize("cancelled", [0, 1, 2, 3, 4])
def test_cancelled_adopted_bookings_give_back_only_what_the_old_code_charged(
    world: World, cancelled: int
) -> None:
    # Adopted with u = 2 sessions used and n = 4 completed bookings: 2 were given away.
    pack, bookings = _adopted(world, used=2, completed=4)
    assert _given_away(world, pack) == 2
    for b in bookings[:cancelled]:
        world.set_status(b, "cancelled")
    world.drain()
    # The pack holds min(u, n - k) for them.
    assert world.used(pack) == min(2, 4 - cancelled)
    assert _given_away(world, pack) == max(2 - cancelled, 0)
    assert {world.ledger_state(b) for b in bookings[:cancelled]} <= {("released", pack)}


def test_a_move_of_an_adopted_booking_uses_up_the_count_too(world: World) -> None:
    pack, bookings = _adopted(world, used=0, completed=1)
    other = world.pack(sessions_total=5)
    world.conn.execute("UPDATE public.bookings SET purchase_id = %s WHERE id = %s", [other, bookings[0]])
    world.drain()
    assert (world.used(pack), world.used(other), _given_away(world, pack)) == (0, 1, 0)


def test_audit_charge_sets_the_count_to_zero_as_it_charges(world: World) -> None:
    pack, bookings = _adopted(world, used=1, completed=3)
    assert _given_away(world, pack) == 2
    report = charge(world.ledger.dsn, dry_run=False)
    assert (report.charged, report.skipped) == (2, [])
    assert (world.used(pack), _given_away(world, pack)) == (3, 0)
    # Every session is now charged: a cancel gives one back.
    world.set_status(bookings[-1], "cancelled")
    world.drain()
    assert world.used(pack) == 2


def test_audit_leaves_a_pack_with_an_event_in_flight_for_a_later_run(world: World) -> None:
    pack, bookings = _adopted(world, used=2, completed=6)
    world.conn.execute("UPDATE public.bookings SET status = 'cancelled' WHERE id = ANY (%s)", [bookings[:2]])
    in_flight = charge(world.ledger.dsn, dry_run=False)
    assert (in_flight.outcomes, in_flight.skipped) == ([], [pack])
    assert (world.used(pack), _given_away(world, pack)) == (2, 4)
    world.drain()
    later = charge(world.ledger.dsn, dry_run=False)
    assert (later.charged, later.skipped) == (2, [])
    world.conn.execute("UPDATE public.bookings SET status = 'cancelled' WHERE id = ANY (%s)", [bookings[2:4]])
    world.drain()
    # Two bookings left, both charged by audit: the pack holds two sessions.
    assert world.used(pack) == 2


def test_the_checker_counts_the_ledgers_own_events_as_no_phantom_but_still_finds_one(world: World) -> None:
    from listener.testing.checker import check, snapshot_used

    pack = world.pack(sessions_total=1)
    first, second = world.bookings(pack, count=2)
    start = snapshot_used(world.conn)
    written: list[int] = []

    def write(booking: uuid.UUID, status: str) -> None:
        before = {int(m["msg_id"]) for m in world.queue()}  # type: ignore[call-overload]
        world.set_status(booking, status)
        written.extend({int(m["msg_id"]) for m in world.queue()} - before)  # type: ignore[call-overload]

    write(first, "completed")
    write(second, "completed")
    world.drain()  # the second is unfunded
    write(first, "cancelled")
    world.drain()  # the release lets the pack pay: the ledger queues the second again, and pays it
    assert world.ledger_state(second) == ("paid", pack)
    verdict = check(world.conn, start, committed_msg_ids=written)
    assert verdict.ok and verdict.phantom_events == 0, verdict.examples
    # An event nobody wrote is still found.
    world.send_raw(f"jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', '{first}')")
    world.drain()
    assert check(world.conn, start, committed_msg_ids=written).phantom_events == 1
