"""The guard's rule, branch by branch, on the demo schema (the quick tier): who may change what a booking
charges. The same rule on the real app's schema and policies, as PostgREST sends the writes, is in
tests/db/test_trust_boundary.py."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import pytest
from psycopg import errors

from listener.core.db import Conn
from listener.devtools import demo_data

from support.world import World

CONSUMING = "{completed}"


def _as(conn: Conn, user: uuid.UUID) -> None:
    conn.execute("SELECT set_config('request.jwt.claims', %s, false)", [json.dumps({"sub": str(user)})])


# A session next week: what a booking's times are unless a case says otherwise.
NEXT_WEEK = (
    datetime.now().astimezone() + timedelta(days=7),
    datetime.now().astimezone() + timedelta(days=7, hours=1),
)
YESTERDAY = (
    datetime.now().astimezone() - timedelta(days=1),
    datetime.now().astimezone() - timedelta(hours=23),
)


def _may(conn: Conn, old: tuple[object, ...] | None, new: tuple[object, ...] | None) -> bool:
    """may_write_booking for an untrusted writer; old and new are (status, pack, client, org[, start, end[,
    amount]]), None for absent; the times default to a session next week, the amount to 1."""
    o = (*old, *(*NEXT_WEEK, 1)[len(old) - 4 :]) if old else (None,) * 7
    n = (*new, *(*NEXT_WEEK, 1)[len(new) - 4 :]) if new else (None,) * 7
    row = conn.execute(
        "SELECT session_ledger.may_write_booking(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, false)"
        " AS ok",
        [*o, *n, CONSUMING],
    ).fetchone()
    assert row is not None
    return bool(row["ok"])


@pytest.fixture
def client_user(world: World) -> uuid.UUID:
    """The org's client as a signed-in user, who is no member of the org."""
    user = uuid.uuid4()
    world.conn.execute(
        "UPDATE public.clients SET auth_user_id = %s WHERE id = %s", [user, world.org.client_id]
    )
    return user


def test_a_member_may_change_what_a_booking_charges_and_a_client_may_not(
    world: World, client_user: uuid.UUID
) -> None:
    pack, other = world.pack(sessions_total=5), world.pack(sessions_total=5)
    c, o = world.org.client_id, world.org.id
    changes = {
        "stop consuming": (("completed", pack, c, o), ("cancelled", pack, c, o)),
        "start consuming": (("confirmed", pack, c, o), ("completed", pack, c, o)),
        "consume for another client": (("completed", pack, c, o), ("completed", pack, uuid.uuid4(), o)),
        "detach": (("confirmed", pack, c, o), ("confirmed", None, c, o)),
        "switch": (("confirmed", pack, c, o), ("confirmed", other, c, o)),
        "delete a booking with a pack": (("confirmed", pack, c, o), None),
        "insert a completed booking": (None, ("completed", pack, c, o)),
    }
    _as(world.conn, world.org.trainer_user_id)
    assert {name: _may(world.conn, *change) for name, change in changes.items()} == dict.fromkeys(
        changes, True
    )
    _as(world.conn, client_user)
    assert {name: _may(world.conn, *change) for name, change in changes.items()} == dict.fromkeys(
        changes, False
    )
    # What moves no session stays open to anyone: notes, times, a booking without a pack.
    assert _may(world.conn, ("confirmed", pack, c, o), ("confirmed", pack, c, o))
    assert _may(world.conn, ("confirmed", None, c, o), ("cancelled", None, c, o))


def test_a_client_may_attach_only_their_own_live_pack_to_a_booking_that_has_none(
    world: World, client_user: uuid.UUID
) -> None:
    c, o = world.org.client_id, world.org.id
    own = world.pack(sessions_total=5)
    expired = world.pack(sessions_total=5, expires_at=datetime.now().astimezone() - timedelta(days=1))
    refunded = world.pack(sessions_total=5, payment_status="refunded")
    _as(world.conn, client_user)
    bare = ("confirmed", None, c, o)
    assert _may(world.conn, bare, ("confirmed", own, c, o))
    assert _may(world.conn, None, ("confirmed", own, c, o))  # booking with it
    assert not _may(world.conn, bare, ("confirmed", expired, c, o))
    assert not _may(world.conn, bare, ("confirmed", refunded, c, o))
    assert not _may(world.conn, bare, ("confirmed", uuid.uuid4(), c, o))  # no such pack
    # another client's pack in the same organisation
    someone = world.conn.execute(
        "INSERT INTO public.clients (org_id, full_name) VALUES (%s, 'someone else') RETURNING id", [o]
    ).fetchone()
    assert someone is not None
    theirs = world.pack(sessions_total=5)
    world.conn.execute(
        "UPDATE public.client_purchases SET client_id = %s WHERE id = %s", [someone["id"], theirs]
    )
    assert not _may(world.conn, bare, ("confirmed", theirs, c, o))
    # a booking that had another pack: that is a switch, not an attach
    assert not _may(world.conn, ("confirmed", expired, c, o), ("confirmed", own, c, o))
    # handed to another client along the way
    assert not _may(world.conn, bare, ("confirmed", own, uuid.uuid4(), o))


def test_the_trigger_refuses_a_member_pointing_a_booking_at_another_orgs_pack(world: World) -> None:
    elsewhere = demo_data.create_org(world.conn, "Studio B")
    theirs = demo_data.create_pack(world.conn, elsewhere, sessions_total=5)
    [mine] = world.bookings(world.pack(sessions_total=5))
    conn = world.conn
    _as(conn, world.org.trainer_user_id)
    for statement in (
        "UPDATE public.bookings SET purchase_id = %s WHERE id = %s",
        # under a new id too: the old booking's pack detached, the new one's attached
        "UPDATE public.bookings SET id = gen_random_uuid(), purchase_id = %s WHERE id = %s",
    ):
        with conn.transaction():
            conn.execute("SET LOCAL ROLE authenticated")
            with pytest.raises(errors.InsufficientPrivilege, match=r"booking .*: role authenticated may not"):
                conn.execute(statement, [theirs, mine])
    row = conn.execute("SELECT purchase_id FROM public.bookings WHERE id = %s", [mine]).fetchone()
    assert row is not None and row["purchase_id"] != theirs


def test_an_id_change_is_the_old_booking_deleted_and_a_new_one_inserted(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    world.set_status(booking, "completed")
    world.drain()
    renamed = uuid.uuid4()
    world.conn.execute("UPDATE public.bookings SET id = %s WHERE id = %s", [renamed, booking])
    assert {str(m["message"]["booking_id"]) for m in world.queue()} == {str(booking), str(renamed)}  # type: ignore[index]
    world.drain()
    assert world.used(pack) == 1
    assert (world.ledger_state(booking), world.ledger_state(renamed)) == (("released", pack), ("paid", pack))


def test_a_paid_booking_handed_to_another_client_is_judged_again(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    world.set_status(booking, "completed")
    world.drain()
    assert world.used(pack) == 1
    other = world.conn.execute(
        "INSERT INTO public.clients (org_id, full_name) VALUES (%s, 'someone else') RETURNING id",
        [world.org.id],
    ).fetchone()
    assert other is not None
    world.conn.execute("UPDATE public.bookings SET client_id = %s WHERE id = %s", [other["id"], booking])
    assert len(world.queue()) == 1  # the charge key changed: same pack, another client
    world.drain()
    assert world.used(pack) == 0  # the pack pays only its own client's sessions
    row = world.conn.execute(
        "SELECT state, reason FROM session_ledger.charges WHERE booking_id = %s", [booking]
    ).fetchone()
    assert row == {"state": "unfunded", "reason": "pack belongs to another client"}


def test_a_pack_attached_over_another_needs_the_right_to_move_both(world: World) -> None:
    # A booking of this organisation carrying another organisation's pack (as a trusted writer
    # may leave it); that organisation's trainer may take their pack off, but not put on one of
    # this organisation's, even the client's own.
    elsewhere = demo_data.create_org(world.conn, "Studio B")
    theirs = demo_data.create_pack(world.conn, elsewhere, sessions_total=5)
    own = world.pack(sessions_total=5)
    c, o = world.org.client_id, world.org.id
    _as(world.conn, elsewhere.trainer_user_id)
    assert _may(world.conn, ("confirmed", theirs, c, o), ("confirmed", None, c, o))
    assert not _may(world.conn, ("confirmed", theirs, c, o), ("confirmed", own, c, o))


def test_what_a_session_is_judged_by_is_the_packs_business_once_it_started_or_for_its_times(
    world: World, client_user: uuid.UUID
) -> None:
    pack = world.pack(sessions_total=5)
    c, o = world.org.client_id, world.org.id
    later = (NEXT_WEEK[0] + timedelta(days=365 * 100), NEXT_WEEK[1] + timedelta(days=365 * 100))
    changes = {
        "cancel a session that already happened": (
            ("confirmed", pack, c, o, *YESTERDAY), ("cancelled", pack, c, o, *YESTERDAY)),
        "move a past session's start": (
            ("confirmed", pack, c, o, *YESTERDAY), ("confirmed", pack, c, o, later[0], YESTERDAY[1])),
        "move a past session's end out of the cron's reach": (
            ("confirmed", pack, c, o, *YESTERDAY), ("confirmed", pack, c, o, YESTERDAY[0], later[1])),
        "move a future session's start past its pack's expiry": (
            ("confirmed", pack, c, o), ("confirmed", pack, c, o, later[0], NEXT_WEEK[1])),
        "move a future session's end": (("confirmed", pack, c, o), ("confirmed", pack, c, o, NEXT_WEEK[0], later[1])),
        "attach a pack while moving the times": (("confirmed", None, c, o), ("confirmed", pack, c, o, *later)),
        "attach a pack to a past session": (
            ("confirmed", None, c, o, *YESTERDAY), ("confirmed", pack, c, o, *YESTERDAY)),
        "delete a future booking that names a pack": (("confirmed", pack, c, o), None),
    }  # fmt: skip
    _as(world.conn, world.org.trainer_user_id)
    assert {name: _may(world.conn, *change) for name, change in changes.items()} == dict.fromkeys(
        changes, True
    )
    _as(world.conn, client_user)
    assert {name: _may(world.conn, *change) for name, change in changes.items()} == dict.fromkeys(
        changes, False
    )
    # The client app's own flows: cancel and re-confirm a future booking, book one with their
    # own pack, and any write to a booking with no pack (no session can move).
    assert _may(world.conn, ("confirmed", pack, c, o), ("cancelled", pack, c, o))
    assert _may(world.conn, ("cancelled", pack, c, o), ("confirmed", pack, c, o))
    assert _may(world.conn, ("confirmed", None, c, o), ("confirmed", pack, c, o))
    assert _may(world.conn, ("confirmed", None, c, o, *YESTERDAY), ("cancelled", None, c, o, *later))


def test_the_trigger_refuses_a_client_moving_a_sessions_times(world: World, client_user: uuid.UUID) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    conn = world.conn
    # The real app's "bookings update by client" policy: a client may rewrite any column of their own booking.
    conn.execute("CREATE POLICY client_reads ON public.bookings FOR SELECT TO authenticated USING (true)")
    conn.execute("CREATE POLICY client_rewrites ON public.bookings FOR UPDATE TO authenticated USING (true)")
    _as(conn, client_user)
    for column in ("start_time", "end_time"):
        with conn.transaction():
            conn.execute("SET LOCAL ROLE authenticated")
            with pytest.raises(
                errors.InsufficientPrivilege, match=f"booking {booking}: role authenticated may not"
            ):
                conn.execute(
                    f"UPDATE public.bookings SET {column} = 'infinity' WHERE id = %s",
                    [booking],
                )
    # The trainer may.
    _as(conn, world.org.trainer_user_id)
    with conn.transaction():
        conn.execute("SET LOCAL ROLE authenticated")
        conn.execute(
            "UPDATE public.bookings SET end_time = end_time + interval '5 minutes' WHERE id = %s", [booking]
        )
