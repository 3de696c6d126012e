"""One test per money rule that nothing else pinned: each one kills a mutant of tests/mutation.

Every test states its rule in its name, drives the real database (the trigger, the
queue, session_ledger.drain() or the ledger's functions) and checks balances and
ledger rows, so breaking the rule in sql/functions fails it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from listener.core.db import Conn, connect
from listener.devtools import demo_data

from support.world import World

REFUSED = psycopg.errors.InsufficientPrivilege
NOT_AN_EVENT = "not a booking.changed v1 event naming a booking by its canonical uuid"


def _now() -> datetime:
    return datetime.now().astimezone()


def _drain(world: World) -> int:
    """session_ledger.drain(): every visible message in one batch, as pg_cron runs it."""
    row = world.conn.execute("SELECT session_ledger.drain() AS n").fetchone()
    assert row is not None
    return int(row["n"])


def _event(world: World, booking: uuid.UUID) -> None:
    """Queue an event naming the booking, as a replay would."""
    world.send_raw(f"jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', '{booking}')")


def _ledger(world: World, booking: uuid.UUID) -> dict[str, Any]:
    row = world.ledger.ledger_row(booking)
    assert row is not None, f"no ledger row for {booking}"
    return row


def _client(world: World) -> uuid.UUID:
    """Another client of this world's organisation."""
    row = world.conn.execute(
        "INSERT INTO public.clients (org_id, full_name) VALUES (%s, 'another client') RETURNING id",
        [world.org.id],
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row["id"]))


def _booking(
    world: World,
    pack: uuid.UUID | None,
    *,
    start: datetime,
    client: uuid.UUID | None = None,
    status: str = "confirmed",
) -> uuid.UUID:
    """A booking an hour long at `start`, for the world's client unless told."""
    row = world.conn.execute(
        "INSERT INTO public.bookings (org_id, client_id, start_time, end_time, duration_mins, purchase_id, status)"
        " VALUES (%s, %s, %s, %s, 60, %s, %s) RETURNING id",
        [world.org.id, client or world.org.client_id, start, start + timedelta(hours=1), pack, status],
    ).fetchone()
    assert row is not None
    return uuid.UUID(str(row["id"]))


def _settle(
    world: World, requests: list[tuple[uuid.UUID, int, datetime, uuid.UUID | None]]
) -> list[dict[str, Any]]:
    """settle_packs() for (pack, delta, at, client) requests of this world's organisation, in order."""
    rows = world.conn.execute(
        "SELECT s.ord, s.ok, s.reason, s.sessions_used FROM session_ledger.settle_packs("
        " %s::uuid[], %s::int[], %s::timestamptz[], %s::uuid[], %s::uuid[]) AS s ORDER BY s.ord",
        [
            [r[0] for r in requests],
            [r[1] for r in requests],
            [r[2] for r in requests],
            [r[3] for r in requests],
            [world.org.id if r[3] else None for r in requests],
        ],
    ).fetchall()
    return list(rows)


def _apply(world: World, booking: uuid.UUID) -> dict[str, Any]:
    """apply_bookings() for one booking, as the listener's batch calls it; its one outcome row."""
    rows = world.conn.execute(
        "SELECT a.outcome, a.purchase_id, a.previous_purchase_id, a.reason"
        " FROM session_ledger.apply_bookings(ARRAY[%s]::uuid[], ARRAY[clock_timestamp()]) AS a",
        [booking],
    ).fetchall()
    assert len(rows) == 1, rows
    return dict(rows[0])


@contextmanager
def _as_role(world: World, role: str, user: uuid.UUID | None = None) -> Iterator[Conn]:
    """A transaction run as `role` (SET LOCAL ROLE, as the API does), signed in as `user` when given."""
    conn = connect(world.ledger.dsn, autocommit=False, purpose="tests")
    try:
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        if user is not None:
            conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", [str(user)])
        yield conn
        # A statement the test expected to be refused leaves the transaction failed: roll it back.
        if conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS:
            conn.commit()
        else:
            conn.rollback()
    finally:
        conn.close()


@pytest.fixture
def scratch_role(world: World) -> Iterator[str]:
    """A NOLOGIN role of its own for one test (roles are cluster-wide), dropped afterwards."""
    name = f"rules_pinned_{uuid.uuid4().hex[:10]}"
    world.conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(name)))
    yield name
    world.conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
    world.conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


# --- what a pack may pay for -----------------------------------------------------------


def test_a_pack_whose_payment_failed_pays_for_nothing(world: World) -> None:
    pack = world.pack(sessions_total=5, payment_status="failed")
    [booking] = world.bookings(pack, status="completed")
    world.drain()
    assert world.used(pack) == 0
    row = _ledger(world, booking)
    assert (row["state"], row["reason"]) == ("unfunded", "pack payment failed")


def test_a_pack_has_expired_for_a_session_starting_at_its_expiry(world: World) -> None:
    expiry = (_now() - timedelta(days=2)).replace(microsecond=500_000)
    pack = world.pack(sessions_total=5, expires_at=expiry)
    just_before = _booking(world, pack, start=expiry - timedelta(microseconds=1), status="completed")
    at_expiry = _booking(world, pack, start=expiry, status="completed")
    world.drain()
    assert world.used(pack) == 1
    assert world.ledger_state(just_before) == ("paid", pack)
    row = _ledger(world, at_expiry)
    assert (row["state"], row["reason"]) == ("unfunded", "pack expired before the session")


def test_use_session_judges_the_pack_at_the_sessions_time(world: World) -> None:
    pack = world.pack(sessions_total=5, expires_at=_now() - timedelta(days=1))
    row = world.conn.execute(
        "SELECT public.use_session(%s, now() - interval '2 days') AS before_expiry,"
        " public.use_session(%s, now()) AS after_expiry",
        [pack, pack],
    ).fetchone()
    assert row == {"before_expiry": True, "after_expiry": False}
    assert world.used(pack) == 1


def test_a_pack_pays_only_for_its_own_client_unless_packs_are_shared(world: World) -> None:
    pack = world.pack(sessions_total=5)
    other = _client(world)
    refused = _booking(world, pack, start=_now() - timedelta(days=3), client=other, status="completed")
    world.drain()
    assert world.used(pack) == 0
    row = _ledger(world, refused)
    assert (row["state"], row["reason"]) == ("unfunded", "pack belongs to another client")
    # Family packs, once the app says it sells them: another client of the organisation is paid for.
    world.conn.execute("UPDATE session_ledger.config SET allow_shared_packs = true")
    shared = _booking(world, pack, start=_now() - timedelta(days=2), client=other, status="completed")
    world.drain()
    assert world.used(pack) == 1
    assert world.ledger_state(shared) == ("paid", pack)
    # Never another organisation's, shared or not.
    elsewhere = demo_data.create_org(world.conn, "Studio B")
    [foreign] = demo_data.create_bookings(world.conn, elsewhere, pack, status="completed")
    world.drain()
    assert world.used(pack) == 1
    row = _ledger(world, foreign)
    assert (row["state"], row["reason"]) == ("unfunded", "pack belongs to another organisation")


# --- capacity and order ----------------------------------------------------------------


def test_an_exhausted_pack_pays_for_the_earliest_sessions_whatever_the_order_asked(world: World) -> None:
    pack = world.pack(sessions_total=3, sessions_used=1)
    day = _now() - timedelta(days=10)
    client = world.org.client_id
    # Asked latest first: the two earliest are paid, whatever their place in the request.
    results = _settle(
        world,
        [
            (pack, 1, day + timedelta(days=3), client),
            (pack, 1, day + timedelta(days=1), client),
            (pack, 1, day + timedelta(days=2), client),
        ],
    )
    assert [r["ok"] for r in results] == [False, True, True]
    assert results[0]["reason"] == "pack exhausted"
    assert world.used(pack) == 3


def test_a_refused_session_takes_no_place_in_the_pack(world: World) -> None:
    pack = world.pack(sessions_total=1)
    day = _now() - timedelta(days=10)
    # The earlier session is another client's: refused for that, it leaves the one session left
    # to the later session of the pack's own client.
    results = _settle(
        world, [(pack, 1, day, _client(world)), (pack, 1, day + timedelta(days=1), world.org.client_id)]
    )
    assert [(r["ok"], r["reason"]) for r in results] == [
        (False, "pack belongs to another client"),
        (True, None),
    ]
    assert world.used(pack) == 1


def test_a_pack_gives_back_no_more_sessions_than_it_used(world: World) -> None:
    pack = world.pack(sessions_total=5)
    first, second = world.bookings(pack, count=2, status="completed")
    world.drain()
    assert world.used(pack) == 2
    # The trainer reinstated one session by hand; then both bookings are cancelled in one batch.
    world.conn.execute("UPDATE public.client_purchases SET sessions_used = 1 WHERE id = %s", [pack])
    world.set_status(first, "cancelled")
    world.set_status(second, "cancelled")
    _drain(world)
    assert world.used(pack) == 0
    assert {world.ledger_state(first), world.ledger_state(second)} == {("released", pack)}
    # At zero, a release is refused with its reason and the balance stays at zero.
    [result] = _settle(world, [(pack, -1, _now(), None)])
    assert (result["ok"], result["reason"], result["sessions_used"]) == (
        False,
        "pack had nothing to give back",
        0,
    )
    assert world.used(pack) == 0


# --- what the ledger holds, and when a booking is judged again ---------------------------


def test_an_unfunded_booking_holds_no_session(world: World) -> None:
    pack = world.pack(sessions_total=1, sessions_used=1)
    [booking] = world.bookings(pack, status="completed")
    world.drain()
    assert world.ledger_state(booking) == ("unfunded", pack)
    world.set_status(booking, "cancelled")
    world.drain()
    assert world.used(pack) == 1, "a booking the pack refused gives nothing back"
    assert world.ledger_state(booking) == ("released", pack)


def test_an_unfunded_booking_that_consumes_again_is_judged_again(world: World) -> None:
    pack = world.pack(sessions_total=1, sessions_used=1)
    [booking] = world.bookings(pack, status="completed")
    world.drain()
    assert world.ledger_state(booking) == ("unfunded", pack)
    world.set_status(booking, "cancelled")
    world.drain()
    world.conn.execute("UPDATE public.client_purchases SET sessions_total = 5 WHERE id = %s", [pack])
    world.set_status(booking, "completed")
    world.drain()
    assert world.used(pack) == 2
    assert world.ledger_state(booking) == ("paid", pack)


def test_the_ledger_is_out_of_sync_only_where_it_has_not_judged_a_booking_as_it_stands(world: World) -> None:
    pack = world.pack(sessions_total=1)
    paid, refused = world.bookings(pack, count=2, status="completed")
    world.bookings(pack)  # confirmed: consumes nothing, and the ledger has nothing to say
    world.drain()
    assert (world.ledger_state(paid), world.ledger_state(refused)) == (("paid", pack), ("unfunded", pack))
    out_of_sync = "SELECT booking_id FROM session_ledger.out_of_sync"
    assert world.conn.execute(out_of_sync).fetchall() == []
    world.conn.execute("DELETE FROM session_ledger.charges WHERE booking_id = %s", [paid])
    assert world.conn.execute(out_of_sync).fetchall() == [{"booking_id": paid}]


def test_a_paid_booking_given_to_another_client_is_judged_again(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack, status="completed")
    world.drain()
    assert world.used(pack) == 1
    world.conn.execute("UPDATE public.bookings SET client_id = %s WHERE id = %s", [_client(world), booking])
    _event(world, booking)
    world.drain()
    assert world.used(pack) == 0, "the session goes back to the pack's own client"
    row = _ledger(world, booking)
    assert (row["state"], row["purchase_id"], row["reason"]) == (
        "unfunded",
        pack,
        "pack belongs to another client",
    )


def test_a_paid_booking_moved_to_another_organisation_is_judged_again(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack, status="completed")
    world.drain()
    assert world.used(pack) == 1
    elsewhere = demo_data.create_org(world.conn, "Studio B")
    world.conn.execute("UPDATE public.bookings SET org_id = %s WHERE id = %s", [elsewhere.id, booking])
    _event(world, booking)
    world.drain()
    assert world.used(pack) == 0
    row = _ledger(world, booking)
    assert (row["state"], row["reason"]) == ("unfunded", "pack belongs to another organisation")


def test_a_ledger_row_without_client_and_organisation_is_not_judged_again(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack, status="completed")
    world.drain()
    # As a row written before the ledger kept these columns; the pack was refunded since.
    world.conn.execute(
        "UPDATE session_ledger.charges SET client_id = NULL, org_id = NULL WHERE booking_id = %s", [booking]
    )
    world.conn.execute("UPDATE public.client_purchases SET payment_status = 'refunded' WHERE id = %s", [pack])
    _event(world, booking)
    world.drain()
    assert world.used(pack) == 1
    row = _ledger(world, booking)
    assert (row["state"], row["purchase_id"], row["client_id"]) == ("paid", pack, None)


def test_the_outcome_names_what_happened(world: World) -> None:
    first, second = world.pack(sessions_total=5), world.pack(sessions_total=5)
    [booking] = world.bookings(first)
    world.set_status(booking, "completed")
    assert _apply(world, booking) == {
        "outcome": "paid", "purchase_id": first, "previous_purchase_id": None, "reason": None,
    }  # fmt: skip
    world.conn.execute("UPDATE public.bookings SET purchase_id = %s WHERE id = %s", [second, booking])
    assert _apply(world, booking) == {
        "outcome": "moved", "purchase_id": second, "previous_purchase_id": first, "reason": None,
    }  # fmt: skip
    world.set_status(booking, "cancelled")
    assert _apply(world, booking) == {
        "outcome": "released", "purchase_id": second, "previous_purchase_id": second, "reason": None,
    }  # fmt: skip
    assert _apply(world, booking)["outcome"] == "no-op"
    assert (world.used(first), world.used(second)) == (0, 0)


# --- adoption and the cut-over -----------------------------------------------------------


def _queued(world: World, booking: uuid.UUID) -> list[int]:
    rows = world.conn.execute(
        "SELECT msg_id FROM pgmq.q_booking_events WHERE message ->> 'booking_id' = %s ORDER BY msg_id",
        [str(booking)],
    ).fetchall()
    return [int(r["msg_id"]) for r in rows]


def _enqueued_at(world: World, msg_id: int, at: datetime) -> None:
    world.conn.execute("UPDATE pgmq.q_booking_events SET enqueued_at = %s WHERE msg_id = %s", [at, msg_id])


def test_an_event_queued_at_the_cut_over_instant_is_charged(world: World) -> None:
    pack = world.pack(sessions_total=5)
    before, at_cut_over = world.bookings(pack, count=2, status="completed")
    cut_over = _now().replace(microsecond=250_000)
    world.conn.execute("UPDATE session_ledger.config SET adopt_until = %s", [cut_over])
    [m_before] = _queued(world, before)
    [m_at] = _queued(world, at_cut_over)
    _enqueued_at(world, m_before, cut_over - timedelta(microseconds=1))
    _enqueued_at(world, m_at, cut_over)
    _drain(world)
    assert world.used(pack) == 1, "only the event queued at the cut-over is charged by the ledger"
    assert (_ledger(world, before)["source"], _ledger(world, at_cut_over)["source"]) == (
        "cut-over",
        "listener",
    )


def test_the_cut_over_judges_a_booking_by_its_first_queued_event(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack, status="completed")
    cut_over = _now()
    world.conn.execute("UPDATE session_ledger.config SET adopt_until = %s", [cut_over])
    _event(world, booking)  # a replay, queued after the cut-over
    first, replay = _queued(world, booking)
    _enqueued_at(world, first, cut_over - timedelta(minutes=1))
    _enqueued_at(world, replay, cut_over + timedelta(minutes=1))
    _drain(world)
    assert world.used(pack) == 0, "the app's old code charged it before the cut-over"
    row = _ledger(world, booking)
    assert (row["state"], row["source"]) == ("paid", "cut-over")


def test_a_release_before_the_cut_over_moves_no_balance(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack, status="completed")
    world.drain()
    assert world.used(pack) == 1
    world.set_status(booking, "cancelled")
    [cancel] = _queued(world, booking)
    # The cancellation was queued before the cut-over: the app's old code gave nothing back then.
    world.conn.execute(
        "UPDATE session_ledger.config SET adopt_until ="
        " (SELECT enqueued_at + interval '1 second' FROM pgmq.q_booking_events WHERE msg_id = %s)",
        [cancel],
    )
    _drain(world)
    assert world.used(pack) == 1
    row = _ledger(world, booking)
    assert (row["state"], row["source"]) == ("released", "cut-over")


# --- the claim, the ack and dead letters ------------------------------------------------


def test_a_claimed_message_is_invisible_until_its_visibility_timeout(world: World) -> None:
    pack = world.pack(sessions_total=5)
    world.bookings(pack, status="completed")
    claim = "SELECT msg_id, read_ct FROM session_ledger.read_events(10, 3600)"
    [first] = world.conn.execute(claim).fetchall()
    assert first["read_ct"] == 1
    assert world.conn.execute(claim).fetchall() == []
    world.conn.execute("UPDATE pgmq.q_booking_events SET vt = clock_timestamp() - interval '1 second'")
    [again] = world.conn.execute(claim).fetchall()
    assert (again["msg_id"], again["read_ct"]) == (first["msg_id"], 2)


def test_a_handled_message_is_archived_with_its_charge(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack, status="completed")
    [msg] = _queued(world, booking)
    assert _drain(world) == 1
    assert world.used(pack) == 1
    assert world.queue() == []
    archived = world.conn.execute(
        "SELECT msg_id, read_ct, message ->> 'booking_id' AS booking FROM pgmq.a_booking_events"
    ).fetchall()
    assert archived == [{"msg_id": msg, "read_ct": 1, "booking": str(booking)}]


def test_the_database_dead_letters_what_is_not_exactly_our_event(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack, status="completed")
    b = str(booking)
    # Each would name the booking if the database were lenient; only the exact event is handled.
    near_misses = [
        f"jsonb_build_object('type', 'booking.changed', 'v', 2, 'booking_id', '{b}')",
        f"jsonb_build_object('type', 'booking.changed', 'v', '1', 'booking_id', '{b}')",
        f"jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', upper('{b}'))",
        f"jsonb_build_object('type', 'booking.created', 'v', 1, 'booking_id', '{b}')",
        "'\"not an event\"'::jsonb",
    ]
    for payload in near_misses:
        world.send_raw(payload)
    assert _drain(world) == len(near_misses) + 1
    assert world.used(pack) == 1
    assert world.queue() == []
    assert [d["reason"] for d in world.dead_letters()] == [NOT_AN_EVENT] * len(near_misses)


def test_drain_dead_letters_a_message_read_more_than_max_reads_times(world: World) -> None:
    pack = world.pack(sessions_total=5)
    at_limit, over_limit = world.bookings(pack, count=2, status="completed")
    config = world.conn.execute("SELECT max_reads FROM session_ledger.config").fetchone()
    assert config is not None
    max_reads = int(config["max_reads"])
    # drain()'s own read is the next one: the first message is then read max_reads times, the other once more.
    [m_at] = _queued(world, at_limit)
    [m_over] = _queued(world, over_limit)
    world.conn.execute(
        "UPDATE pgmq.q_booking_events SET read_ct = %s WHERE msg_id = %s", [max_reads - 1, m_at]
    )
    world.conn.execute("UPDATE pgmq.q_booking_events SET read_ct = %s WHERE msg_id = %s", [max_reads, m_over])
    assert _drain(world) == 2
    assert world.ledger_state(at_limit) == ("paid", pack)
    assert world.ledger.ledger_row(over_limit) is None
    assert world.used(pack) == 1
    [dead] = world.dead_letters()
    assert (dead["source_msg_id"], dead["reason"]) == (
        m_over,
        f"read {max_reads + 1} times without being handled",
    )


# --- who may move a session ---------------------------------------------------------------


def test_the_ledgers_owner_and_its_members_are_trusted(world: World, scratch_role: str) -> None:
    pack = world.pack(sessions_total=5)
    owner = world.conn.execute(
        "SELECT nspowner::regrole::text AS owner FROM pg_namespace WHERE nspname = 'session_ledger'"
    ).fetchone()
    assert owner is not None
    world.conn.execute(
        sql.SQL("GRANT {} TO {}").format(sql.Identifier(owner["owner"]), sql.Identifier(scratch_role))
    )
    # A member of the owner, signed in as nobody and a member of no API role: the SQL console.
    with _as_role(world, scratch_role) as conn:
        row = conn.execute("SELECT public.use_session(%s) AS ok", [pack]).fetchone()
    assert row == {"ok": True}
    assert world.used(pack) == 1


def test_the_listeners_role_is_trusted(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    # The listener's role runs the cron's completion (the dashboard's and drain()'s path).
    with _as_role(world, "session_ledger_listener") as conn:
        row = conn.execute("SELECT session_ledger.complete_past_bookings() AS n").fetchone()
    assert row == {"n": 1}
    world.drain()
    assert world.ledger_state(booking) == ("paid", pack)


def test_only_a_signed_in_member_of_the_packs_organisation_may_move_its_sessions(
    world: World, scratch_role: str
) -> None:
    pack = world.pack(sessions_total=5)
    trainer = world.org.trainer_user_id
    # A role outside `authenticated`, allowed to call the button, with a member's identity in its claims.
    world.conn.execute(
        sql.SQL("GRANT EXECUTE ON FUNCTION public.use_session(uuid) TO {}").format(
            sql.Identifier(scratch_role)
        )
    )
    with (
        _as_role(world, scratch_role, trainer) as conn,
        pytest.raises(REFUSED, match="may not move sessions"),
    ):
        conn.execute("SELECT public.use_session(%s)", [pack])
    stranger = demo_data.create_org(world.conn, "Studio B").trainer_user_id
    with (
        _as_role(world, "authenticated", stranger) as conn,
        pytest.raises(REFUSED, match="may not move sessions"),
    ):
        conn.execute("SELECT public.use_session(%s)", [pack])
    assert world.used(pack) == 0
    with _as_role(world, "authenticated", trainer) as conn:
        row = conn.execute("SELECT public.use_session(%s) AS ok", [pack]).fetchone()
    assert row == {"ok": True}
    assert world.used(pack) == 1


def test_an_unknown_membership_is_a_refusal(world: World) -> None:
    pack = world.pack(sessions_total=5)
    # An app whose membership check answers NULL, not false, for a non-member.
    world.conn.execute(
        """CREATE OR REPLACE FUNCTION public.is_org_member(_org uuid) RETURNS boolean
           LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
           AS $$ SELECT true FROM public.org_members m WHERE m.org_id = _org AND m.user_id = auth.uid() $$"""
    )
    with (
        _as_role(world, "authenticated", uuid.uuid4()) as conn,
        pytest.raises(REFUSED, match="may not move sessions"),
    ):
        conn.execute("SELECT public.use_session(%s)", [pack])
    with _as_role(world, "authenticated", world.org.trainer_user_id) as conn:
        row = conn.execute("SELECT public.use_session(%s) AS ok", [pack]).fetchone()
    assert row == {"ok": True}
    assert world.used(pack) == 1


def test_only_a_trusted_caller_learns_that_a_pack_does_not_exist(world: World) -> None:
    ghost = uuid.uuid4()
    with (
        _as_role(world, "authenticated", world.org.trainer_user_id) as conn,
        pytest.raises(REFUSED, match="may not move sessions"),
    ):
        conn.execute("SELECT public.use_session(%s)", [ghost])
    row = world.conn.execute("SELECT public.use_session(%s) AS ok", [ghost]).fetchone()
    assert row == {"ok": False}


# --- the audit ----------------------------------------------------------------------------


def _uncharged(world: World, pack: uuid.UUID) -> list[uuid.UUID]:
    rows = world.conn.execute(
        "SELECT booking_id FROM session_ledger.audit_uncharged(NULL, ARRAY[%s]::uuid[]) ORDER BY start_time",
        [pack],
    ).fetchall()
    return [r["booking_id"] for r in rows]


def test_audit_finds_the_sessions_a_packs_balance_does_not_cover(world: World) -> None:
    # The app's old code took one session of this pack, for one of the three bookings it completed.
    pack = world.pack(sessions_total=10, sessions_used=1)
    b1, b2, b3, b4 = world.bookings(pack, count=4)
    world.conn.execute("UPDATE session_ledger.config SET adopt_until = now() + interval '1 day'")
    for b in (b1, b2, b3):
        world.set_status(b, "completed")
    world.drain()
    assert {_ledger(world, b)["source"] for b in (b1, b2, b3)} == {"cut-over"}
    world.conn.execute("UPDATE session_ledger.config SET adopt_until = now() - interval '1 day'")
    world.set_status(b4, "completed")
    world.drain()
    assert world.used(pack) == 2
    # The balance, less the listener's certain charge, covers the earliest adopted booking.
    assert _uncharged(world, pack) == [b2, b3]
    charged = world.conn.execute(
        "SELECT booking_id, charged FROM session_ledger.audit_charge(ARRAY[%s]::uuid[])", [pack]
    ).fetchall()
    assert {(r["booking_id"], r["charged"]) for r in charged} == {(b2, True), (b3, True)}
    assert world.used(pack) == 4
    assert _uncharged(world, pack) == []
    # A session given back by hand since: audit's own charges count as certain, so b1 is now uncovered.
    world.conn.execute("UPDATE public.client_purchases SET sessions_used = 3 WHERE id = %s", [pack])
    assert _uncharged(world, pack) == [b1]


def test_audit_charges_a_pack_only_for_its_own_clients_bookings(world: World) -> None:
    pack = world.pack(sessions_total=5)
    world.conn.execute("UPDATE session_ledger.config SET adopt_until = now() + interval '1 day'")
    theirs = _booking(
        world, pack, start=_now() - timedelta(days=2), client=_client(world), status="completed"
    )
    world.drain()
    assert world.ledger_state(theirs) == ("paid", pack)  # adopted as the old code left it
    [result] = world.conn.execute(
        "SELECT booking_id, charged, reason FROM session_ledger.audit_charge(ARRAY[%s]::uuid[])", [pack]
    ).fetchall()
    assert result == {"booking_id": theirs, "charged": False, "reason": "pack belongs to another client"}
    assert world.used(pack) == 0
    row = _ledger(world, theirs)
    assert (row["state"], row["source"]) == ("unfunded", "audit")


def test_a_pause_holds_back_the_backlog_queued_before_it_whoever_calls(world: World) -> None:
    pack = world.pack(sessions_total=5)
    bookings = world.bookings(pack, count=2)
    for b in bookings:
        world.set_status(b, "completed")
    queued = [int(m["msg_id"]) for m in world.queue()]  # type: ignore[call-overload]
    assert len(queued) == 2
    world.conn.execute("SELECT session_ledger.pause_charging('investigation')")
    assert _drain(world) == 0
    # Nothing was even claimed: a paused ledger spends none of a message's reads.
    reads = world.conn.execute("SELECT read_ct FROM pgmq.q_booking_events ORDER BY msg_id").fetchall()
    assert [r["read_ct"] for r in reads] == [0, 0]
    # The listener's own entry point, called with the ids it guessed: nothing moves.
    rows = world.conn.execute(
        "SELECT * FROM session_ledger.handle_batch_v3(NULL, %s, NULL, NULL)", [queued]
    ).fetchall()
    assert rows == []
    assert world.used(pack) == 0
    assert [int(m["msg_id"]) for m in world.queue()] == queued  # type: ignore[call-overload]
    assert world.conn.execute("SELECT count(*) AS n FROM session_ledger.charges").fetchone() == {"n": 0}
    world.conn.execute("SELECT session_ledger.resume_charging()")
    assert _drain(world) == 2
    assert world.used(pack) == 2


def test_complete_past_bookings_takes_the_oldest_first_and_chunks_while_its_budget_lasts(
    world: World,
) -> None:
    pack = world.pack(sessions_total=10)
    # Created newest first, so neither insertion nor physical order is the age order.
    newest = world.bookings(pack, count=1, start=_now() - timedelta(days=1))
    middle = world.bookings(pack, count=1, start=_now() - timedelta(days=5))
    oldest = world.bookings(pack, count=2, start=_now() - timedelta(days=20))
    status = "SELECT id FROM public.bookings WHERE status = 'completed' ORDER BY id"
    # No budget left after the first chunk: one chunk, the oldest two.
    row = world.conn.execute("SELECT session_ledger.complete_past_bookings(2, interval '0') AS n").fetchone()
    assert row == {"n": 2}
    assert {r["id"] for r in world.conn.execute(status)} == set(oldest)
    # With a budget, chunk after chunk until nothing is left.
    world.conn.execute("UPDATE public.bookings SET status = 'confirmed'")
    row = world.conn.execute(
        "SELECT session_ledger.complete_past_bookings(1, interval '1 minute') AS n"
    ).fetchone()
    assert row == {"n": 4}
    assert {r["id"] for r in world.conn.execute(status)} == {*oldest, *middle, *newest}


def test_a_ledger_row_records_the_cause_of_its_latest_change(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    first, last = uuid.uuid4(), uuid.uuid4()
    for user, status in ((first, "completed"), (uuid.uuid4(), "cancelled"), (last, "completed")):
        world.conn.execute("SELECT set_config('request.jwt.claim.sub', %s, false)", [str(user)])
        world.set_status(booking, status)
    assert len(world.queue()) == 3
    _drain(world)  # one batch
    assert _ledger(world, booking)["caused_by"]["uid"] == str(last)


def test_switching_a_consuming_bookings_pack_needs_the_right_to_move_both(world: World) -> None:
    elsewhere = demo_data.create_org(world.conn, "Studio B")
    mine, theirs = (
        world.pack(sessions_total=5),
        demo_data.create_pack(world.conn, elsewhere, sessions_total=5),
    )
    c, o = world.org.client_id, world.org.id
    ask = (
        "SELECT session_ledger.may_write_booking('completed', %(old)s, %(c)s, %(o)s, NULL, NULL, 1,"
        " 'completed', %(new)s, %(c)s, %(o)s, NULL, NULL, 1, '{completed}', false) AS ok"
    )
    for trainer in (world.org.trainer_user_id, elsewhere.trainer_user_id):
        # untrusted (p_trusted false): the signed-in trainer's memberships decide
        world.conn.execute("SELECT set_config('request.jwt.claim.sub', %s, false)", [str(trainer)])
        for old, new in ((mine, theirs), (theirs, mine)):
            row = world.conn.execute(ask, {"old": old, "new": new, "c": c, "o": o}).fetchone()
            assert row == {"ok": False}, (trainer, old, new)
        row = world.conn.execute(ask, {"old": mine if trainer == world.org.trainer_user_id else theirs,
                                       "new": mine if trainer == world.org.trainer_user_id else theirs,
                                       "c": c, "o": o}).fetchone()  # fmt: skip
        assert row == {"ok": True}  # the same pack of their own organisation: nothing moves


def test_the_ledger_never_writes_a_table_as_its_owner_while_a_foreign_trigger_is_on_it(
    world: World, scratch_role: str
) -> None:
    pack = world.pack(sessions_total=5)
    done, waiting = world.bookings(pack, count=2)
    conn = world.conn
    # A trigger whose function belongs to a role that could not act as the owner (as a login in
    # authenticated attaches one with a grant of TRIGGER).
    conn.execute(
        "CREATE FUNCTION public.foreign_trap() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN PERFORM set_config('attack.ran_as', current_user::text, false); RETURN NULL; END $$"
    )
    conn.execute(
        sql.SQL("ALTER FUNCTION public.foreign_trap() OWNER TO {}").format(sql.Identifier(scratch_role))
    )
    for table in ("client_purchases", "bookings"):
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER zz AFTER UPDATE ON public.{} FOR EACH STATEMENT EXECUTE FUNCTION public.foreign_trap()"
            ).format(sql.Identifier(table))
        )
    world.set_status(done, "completed")
    conn.execute("SELECT set_config('attack.ran_as', '', false)")
    _drain(world)
    assert world.used(pack) == 0
    [letter] = world.dead_letters()
    assert "refusing to write public.client_purchases as its owner: trigger zz" in str(letter)
    with pytest.raises(REFUSED, match=r"refusing to write public\.bookings as its owner"):
        conn.execute("SELECT session_ledger.complete_past_bookings()")
    with pytest.raises(REFUSED):
        conn.execute("SELECT public.use_session(%s, 'by hand')", [pack])
    row = conn.execute("SELECT status FROM public.bookings WHERE id = %s", [waiting]).fetchone()
    assert row == {"status": "confirmed"}
    # The app's owner's own triggers are the app's business: owned by the owner, they run.
    conn.execute(sql.SQL("ALTER FUNCTION public.foreign_trap() OWNER TO CURRENT_USER"))
    assert conn.execute("SELECT session_ledger.complete_past_bookings() AS n").fetchone() == {"n": 1}


def test_only_a_trusted_caller_may_truncate_the_bookings_or_the_packs(world: World) -> None:
    world.bookings(world.pack(sessions_total=5))
    conn = world.conn
    conn.execute("GRANT TRUNCATE ON public.bookings, public.client_purchases TO authenticated")
    for table in ("bookings", "client_purchases"):
        with conn.transaction():
            conn.execute("SET LOCAL ROLE authenticated")
            with pytest.raises(REFUSED, match=f"role authenticated may not truncate public.{table}"):
                conn.execute(sql.SQL("TRUNCATE public.{} CASCADE").format(sql.Identifier(table)))
    assert conn.execute("SELECT count(*) AS n FROM public.bookings").fetchone() == {"n": 1}


def test_the_listener_listens_on_the_channel_the_ledger_notifies(world: World, ledger_dsn: str) -> None:
    from listener import WAKEUP_CHANNEL

    with connect(ledger_dsn, purpose="tests", autocommit=True) as listening:
        listening.execute(sql.SQL("LISTEN {}").format(sql.Identifier(WAKEUP_CHANNEL)))
        world.conn.execute("SELECT session_ledger.wake_listeners()")
        heard = [n.channel for n in listening.notifies(timeout=10, stop_after=1)]
    assert heard == [WAKEUP_CHANNEL]
