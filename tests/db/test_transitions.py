"""Every transition of a booking's charge, end to end through trigger, queue and listener."""

from __future__ import annotations

from datetime import datetime, timedelta

from support.world import World


def test_completion_charges_once_and_records_paid(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    world.set_status(booking, "completed")
    world.drain()
    assert world.used(pack) == 1
    assert world.ledger_state(booking) == ("paid", pack)
    assert world.queue() == []


def test_browser_completion_under_rls_is_charged(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    assert world.ledger.complete_as_user(booking, world.org.trainer_user_id) == 1
    world.drain()
    assert world.used(pack) == 1


def test_browser_of_another_org_cannot_complete(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    from listener.devtools import demo_data

    stranger = demo_data.create_org(world.conn, "Studio B")
    assert world.ledger.complete_as_user(booking, stranger.trainer_user_id) == 0
    assert world.queue() == []


def test_bulk_completion_enqueues_one_event_per_booking_and_charges_each(world: World) -> None:
    pack = world.pack(sessions_total=50)
    bookings = world.bookings(pack, count=30)
    assert world.ledger.bulk_complete() == 30
    assert len(world.queue()) == 30
    world.drain()
    assert world.used(pack) == 30
    assert {world.ledger_state(b) for b in bookings} == {("paid", pack)}


def test_cancel_releases_and_recomplete_charges_again(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    world.set_status(booking, "completed")
    world.drain()
    world.set_status(booking, "cancelled")
    world.drain()
    assert world.used(pack) == 0
    assert world.ledger_state(booking) == ("released", pack)
    world.set_status(booking, "completed")
    world.drain()
    assert world.used(pack) == 1
    assert world.ledger_state(booking) == ("paid", pack)


def test_toggle_within_one_batch_converges_to_final_state(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    for status in ("completed", "cancelled", "completed", "cancelled", "completed"):
        world.set_status(booking, status)
    assert len(world.queue()) == 5
    world.drain()
    assert world.used(pack) == 1


def test_moving_a_completed_booking_moves_the_session(world: World) -> None:
    first, second = world.pack(sessions_total=5), world.pack(sessions_total=5)
    [booking] = world.bookings(first)
    world.set_status(booking, "completed")
    world.drain()
    world.conn.execute("UPDATE public.bookings SET purchase_id = %s WHERE id = %s", [second, booking])
    world.drain()
    assert (world.used(first), world.used(second)) == (0, 1)
    assert world.ledger_state(booking) == ("paid", second)


def test_removing_the_pack_of_a_completed_booking_releases(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    world.set_status(booking, "completed")
    world.drain()
    world.conn.execute("UPDATE public.bookings SET purchase_id = NULL WHERE id = %s", [booking])
    world.drain()
    assert world.used(pack) == 0


def test_deleting_a_completed_booking_releases(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    world.set_status(booking, "completed")
    world.drain()
    world.conn.execute("DELETE FROM public.bookings WHERE id = %s", [booking])
    world.drain()
    assert world.used(pack) == 0
    assert world.ledger_state(booking) == ("released", pack)


def test_inserting_a_completed_booking_charges(world: World) -> None:
    pack = world.pack(sessions_total=5)
    world.bookings(pack, status="completed")
    world.drain()
    assert world.used(pack) == 1


def test_duplicate_and_replayed_events_do_not_charge_twice(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    world.set_status(booking, "completed")
    event = f"""jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', '{booking}')"""
    for _ in range(3):
        world.send_raw(event)
    world.drain()
    for _ in range(2):
        world.send_raw(event)
    world.drain()
    assert world.used(pack) == 1
    archived = world.conn.execute("SELECT count(*) AS n FROM pgmq.a_booking_events").fetchone()
    assert archived is not None and archived["n"] == 6


def test_unrelated_update_enqueues_nothing_and_does_not_fail(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack, status="completed")
    world.drain()
    world.conn.execute(
        "UPDATE public.bookings SET reminder_sent = true, notes = 'x' WHERE id = %s", [booking]
    )
    world.conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [booking])
    world.conn.execute("UPDATE public.bookings SET notes = 'none' WHERE false")
    assert world.queue() == []


def test_rolled_back_completion_leaves_no_event(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    conn = world.conn
    with conn.transaction(force_rollback=True):
        conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [booking])
        assert len(world.queue()) == 1  # visible inside the writer's transaction
    assert world.queue() == []
    world.drain()
    assert world.used(pack) == 0


def test_expiry_is_judged_at_the_sessions_start_not_at_processing(world: World) -> None:
    now = datetime.now().astimezone()
    pack = world.pack(sessions_total=5, expires_at=now - timedelta(days=2))
    [before] = world.bookings(pack, start=now - timedelta(days=3))
    [after] = world.bookings(pack, start=now - timedelta(days=1))
    world.set_status(before, "completed")
    world.set_status(after, "completed")
    world.drain()
    assert world.used(pack) == 1
    assert world.ledger_state(before) == ("paid", pack)
    row = world.ledger.ledger_row(after)
    assert row is not None and row["state"] == "unfunded"
    assert row["reason"] == "pack expired before the session"


def test_exhausted_pack_records_unfunded_and_a_replay_changes_nothing(world: World) -> None:
    pack = world.pack(sessions_total=2)
    bookings = world.bookings(pack, count=3)
    world.ledger.bulk_complete()
    world.drain()
    assert world.used(pack) == 2
    states = sorted(world.ledger_state(b)[0] for b in bookings)  # type: ignore[index]
    assert states == ["paid", "paid", "unfunded"]
    # The earliest sessions are the ones paid for.
    assert world.ledger_state(bookings[-1]) == ("unfunded", pack)
    # An event for it while the pack still cannot pay: judged again, still unfunded, nothing moves.
    event = f"jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', '{bookings[-1]}')"
    world.send_raw(event)
    world.drain()
    assert world.used(pack) == 2
    assert world.ledger_state(bookings[-1]) == ("unfunded", pack)
    assert world.dead_letters() == []
    status = world.conn.execute("SELECT session_ledger.status() AS s").fetchone()
    assert status is not None and status["s"]["unfunded_bookings"] == 1


def test_released_session_pays_for_another_in_the_same_batch(world: World) -> None:
    pack = world.pack(sessions_total=1)
    first, second = world.bookings(pack, count=2)
    world.set_status(first, "completed")
    world.drain()
    world.set_status(first, "cancelled")
    world.set_status(second, "completed")
    world.drain()
    assert world.used(pack) == 1
    assert world.ledger_state(second) == ("paid", pack)


def test_refunded_and_non_pack_purchases_are_unfunded(world: World) -> None:
    refunded = world.pack(sessions_total=5, payment_status="refunded")
    single = world.pack(sessions_total=None)
    [a] = world.bookings(refunded)
    [b] = world.bookings(single)
    world.set_status(a, "completed")
    world.set_status(b, "completed")
    world.drain()
    assert world.used(refunded) == 0
    ra, rb = world.ledger.ledger_row(a), world.ledger.ledger_row(b)
    assert ra is not None and ra["reason"] == "pack payment refunded"
    assert rb is not None and rb["reason"] == "purchase is not a session pack"


def test_pack_of_another_organisation_is_never_charged(world: World) -> None:
    from listener.devtools import demo_data

    other = demo_data.create_org(world.conn, "Studio B")
    foreign_pack = demo_data.create_pack(world.conn, other, sessions_total=5)
    [booking] = world.bookings(foreign_pack)
    world.set_status(booking, "completed")
    world.drain()
    assert world.used(foreign_pack) == 0
    row = world.ledger.ledger_row(booking)
    assert row is not None and row["state"] == "unfunded"
    assert row["reason"] == "pack belongs to another organisation"


def test_no_show_consumes_when_configured(world: World) -> None:
    world.conn.execute("UPDATE session_ledger.config SET consuming_statuses = '{completed,no_show}'")
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    world.set_status(booking, "no_show")
    world.drain()
    assert world.used(pack) == 1
    world.set_status(booking, "completed")  # still consuming, same pack: nothing to do
    world.drain()
    assert world.used(pack) == 1


def test_manual_adjustments_are_left_alone(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    world.conn.execute("SELECT public.use_session(%s)", [pack])  # the trainer's "use 1 session"
    world.set_status(booking, "completed")
    world.drain()
    assert world.used(pack) == 2
