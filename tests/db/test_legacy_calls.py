"""The app's old use_session / release_session calls, absorbed when they echo a booking write, on the demo schema.

The whole rollout (the real app's code paths, racing, in a Supabase-initialised cluster) is in
tests/db/test_rollout.py; these pin each rule of absorbing on its own, in the quick tier.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from listener.core.db import Conn

from support.world import World


def _as(conn: Conn, user: uuid.UUID | None) -> None:
    """Act as this signed-in user for the rest of the session (None: no one signed in)."""
    conn.execute(
        "SELECT set_config('request.jwt.claims', %s, false)", [json.dumps({"sub": str(user)} if user else {})]
    )


def _call(conn: Conn, statement: str, pack: uuid.UUID) -> Any:
    row = conn.execute(statement, [pack]).fetchone()
    assert row is not None
    return row["r"]


def _calls(conn: Conn) -> list[tuple[str, str, uuid.UUID | None]]:
    return [
        (r["kind"], r["outcome"], r["booking_id"])
        for r in conn.execute("SELECT kind, outcome, booking_id FROM session_ledger.pack_calls ORDER BY id")
    ]


def test_a_completion_then_use_session_by_the_same_caller_charges_once(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    conn = world.conn
    _as(conn, world.org.trainer_user_id)
    world.set_status(booking, "completed")
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True
    # A second tab: its update changes nothing, and its call is absorbed too.
    world.set_status(booking, "completed")
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True
    world.drain()
    assert world.used(pack) == 1
    assert _calls(conn) == [("use", "absorbed", booking), ("use", "absorbed", booking)]


def test_a_cancel_then_reinstate_releases_once(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    conn = world.conn
    _as(conn, world.org.trainer_user_id)
    world.set_status(booking, "completed")
    world.drain()
    assert world.used(pack) == 1
    world.set_status(booking, "cancelled")
    assert _call(conn, "SELECT public.release_session(%s) AS r", pack) == 1  # the balance as it stands
    world.drain()
    assert world.used(pack) == 0
    assert _calls(conn) == [("release", "absorbed", booking)]


def test_a_press_with_no_booking_write_behind_it_moves_the_balance(world: World) -> None:
    pack = world.pack(sessions_total=5)
    conn = world.conn
    _as(conn, world.org.trainer_user_id)
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True
    assert _call(conn, "SELECT public.release_session(%s) AS r", pack) == 1
    assert world.used(pack) == 1
    assert [c[:2] for c in _calls(conn)] == [("use", "charged"), ("use", "charged"), ("release", "released")]


def test_each_write_absorbs_one_call_and_only_its_own_callers(world: World) -> None:
    pack = world.pack(sessions_total=10)
    first, second = world.bookings(pack, count=2)
    conn = world.conn
    _as(conn, world.org.trainer_user_id)
    conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = ANY (%s)", [[first, second]])
    # Another signed-in user's call, and a call as another role, echo nothing of this trainer's.
    _as(conn, uuid.uuid4())
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True
    _as(conn, world.org.trainer_user_id)
    with conn.transaction():
        conn.execute("SET LOCAL ROLE service_role")
        assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True
    # The trainer's own two calls consume the write's two bookings, in session order; a third charges.
    for _ in range(3):
        assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True
    world.drain()
    assert world.used(pack) == 2 + 2 + 1
    assert _calls(conn) == [
        ("use", "charged", None),
        ("use", "charged", None),
        ("use", "absorbed", first),
        ("use", "absorbed", second),
        ("use", "charged", None),
    ]


def test_an_echo_outside_the_window_or_with_absorbing_off_is_not_absorbed(world: World) -> None:
    pack = world.pack(sessions_total=10)
    late, off = world.bookings(pack, count=2)
    conn = world.conn
    _as(conn, world.org.trainer_user_id)
    world.set_status(late, "completed")
    conn.execute("UPDATE session_ledger.booking_writes SET written_at = written_at - interval '11 minutes'")
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True  # the window is 10 minutes
    # Written while absorbing was on, called after it was switched off: the call charges.
    world.set_status(off, "completed")
    conn.execute("UPDATE session_ledger.config SET absorb_legacy_calls = false")
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True
    world.drain()
    assert world.used(pack) == 4
    assert [c[1] for c in _calls(conn)] == ["charged", "charged"]


def test_a_move_to_another_pack_is_no_echo_and_manual_adjustments_are_never_absorbed(world: World) -> None:
    pack, other = world.pack(sessions_total=10), world.pack(sessions_total=10)
    [booking] = world.bookings(pack)
    conn = world.conn
    _as(conn, world.org.trainer_user_id)
    world.set_status(booking, "completed")
    conn.execute("UPDATE public.bookings SET purchase_id = %s WHERE id = %s", [other, booking])
    # The move's write echoes neither a charge on the new pack nor a release on the old one.
    assert _call(conn, "SELECT public.use_session(%s) AS r", other) is True
    assert _call(conn, "SELECT public.release_session(%s) AS r", pack) == -1  # nothing to give back yet
    # The new app's buttons, with a reason, right after a completion of the same pack: never absorbed.
    [again] = world.bookings(pack)
    world.set_status(again, "completed")
    assert _call(conn, "SELECT public.use_session(%s, 'extra session') AS r", pack) is True
    world.drain()
    assert (world.used(pack), world.used(other)) == (1 + 1, 1 + 1)
    calls = conn.execute(
        "SELECT outcome, legacy, reason FROM session_ledger.pack_calls ORDER BY id"
    ).fetchall()
    assert [(c["outcome"], c["legacy"], c["reason"]) for c in calls] == [
        ("charged", True, None),
        ("nothing to give back", True, None),
        ("charged", False, "extra session"),
    ]
