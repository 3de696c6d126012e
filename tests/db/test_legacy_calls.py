"""The app's old use_session / release_session calls, absorbed when they echo a booking write, on the demo schema.

The whole rollout (the real app's code paths, racing, in a Supabase-initialised cluster) is in
tests/db/test_rollout.py; these pin each rule of absorbing on its own, in the quick tier.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

from listener.core.db import Conn, connect

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
    conn.execute("UPDATE session_ledger.booking_writes SET written_at = written_at - interval '16 seconds'")
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True  # the window is 15 seconds
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


def _age_writes(conn: Conn, seconds: float) -> None:
    """Move every recorded booking write (and its last absorption) this many seconds into the past."""
    conn.execute(
        "UPDATE session_ledger.booking_writes SET written_at = written_at - make_interval(secs => %(s)s),"
        " last_absorbed_at = last_absorbed_at - make_interval(secs => %(s)s)",
        {"s": seconds},
    )


def test_a_genuine_press_after_a_write_that_starts_or_stops_nothing_is_charged(world: World) -> None:
    pack = world.pack(sessions_total=20)
    conn = world.conn
    _as(conn, world.org.trainer_user_id)
    # Bookings completed a month ago, already charged.
    old = world.bookings(pack, count=8, status="completed")
    world.drain()
    assert world.used(pack) == 8
    conn.execute("DELETE FROM session_ledger.booking_writes")
    # A notes edit of one, then a press; a location edit of all eight, then three presses.
    conn.execute("UPDATE public.bookings SET notes = 'bring a towel' WHERE id = %s", [old[0]])
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True
    conn.execute("UPDATE public.bookings SET notes = 'studio 2' WHERE id = ANY (%s)", [old])
    for _ in range(3):
        assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True
    # A no-op status write of a booking completed long ago (not a repeat of a recent completion).
    world.set_status(old[1], "completed")
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True
    # An id change moves no money and records nothing.
    conn.execute("UPDATE public.bookings SET id = gen_random_uuid() WHERE id = %s", [old[2]])
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True
    world.drain()
    assert conn.execute("SELECT count(*) AS n FROM session_ledger.booking_writes").fetchone() == {"n": 0}
    assert [c[1] for c in _calls(conn)] == ["charged"] * 6
    assert world.used(pack) == 8 + 6


def test_a_press_after_the_window_of_the_new_apps_completion_or_cancel_moves_the_balance(
    world: World,
) -> None:
    pack = world.pack(sessions_total=10)
    done, cancelled = world.bookings(pack, count=2)
    conn = world.conn
    _as(conn, world.org.trainer_user_id)
    # The new calendar code completes and calls nothing; the trainer presses "Use 1 Session" 30 s later.
    world.set_status(done, "completed")
    world.drain()
    _age_writes(conn, 30)
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True
    # A cancel, then a genuine "Reinstate" 30 s later.
    world.set_status(cancelled, "completed")
    world.drain()
    world.set_status(cancelled, "cancelled")
    world.drain()
    _age_writes(conn, 30)
    assert _call(conn, "SELECT public.release_session(%s) AS r", pack) == 1
    assert [c[:2] for c in _calls(conn)] == [("use", "charged"), ("release", "released")]
    assert world.used(pack) == 1


def test_the_windows_edges_and_a_second_tab_only_just_after_the_transition(world: World) -> None:
    pack = world.pack(sessions_total=10)
    inside, outside, tab = world.bookings(pack, count=3)
    conn = world.conn
    _as(conn, world.org.trainer_user_id)
    window = 15
    world.set_status(inside, "completed")
    _age_writes(conn, window - 2)
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True  # absorbed, 2 s to spare
    world.set_status(outside, "completed")
    _age_writes(conn, window + 0.5)  # the earlier write is older still
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True  # charged, half a second late
    # A second tab repeating a completion inside the window records an echo; outside, nothing.
    world.set_status(tab, "completed")
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True  # the first tab's call
    world.set_status(tab, "completed")
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True  # the second tab's call
    _age_writes(conn, window + 0.5)
    world.set_status(tab, "completed")
    assert _call(conn, "SELECT public.use_session(%s) AS r", pack) is True  # a press: charged
    assert [(c[1], c[2]) for c in _calls(conn)] == [
        ("absorbed", inside),
        ("charged", None),
        ("absorbed", tab),
        ("absorbed", tab),
        ("charged", None),
    ]


def test_the_old_crons_loop_stays_live_while_its_calls_keep_coming(world: World) -> None:
    first, second = world.pack(sessions_total=10), world.pack(sessions_total=10)
    a, b = world.bookings(first, count=1)[0], world.bookings(second, count=1)[0]
    c = world.bookings(first, count=1)[0]
    conn = world.conn
    _as(conn, None)
    # One bulk completion of three bookings on two packs; the loop calls booking after booking.
    conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = ANY (%s)", [[a, b, c]])
    _age_writes(conn, 10)
    assert _call(conn, "SELECT public.use_session(%s) AS r", first) is True  # absorbs a, 10 s in
    _age_writes(conn, 10)  # the write is 20 s old; its last absorbed call 10 s
    assert _call(conn, "SELECT public.use_session(%s) AS r", second) is True  # still the same write's echo
    _age_writes(conn, 16)  # the write's last call was 16 s ago: the loop is over
    conn.execute("SELECT session_ledger.prune_booking_writes()")
    assert _call(conn, "SELECT public.use_session(%s) AS r", first) is True  # a press: charged
    assert [(x[1], x[2]) for x in _calls(conn)] == [("absorbed", a), ("absorbed", b), ("charged", None)]


def test_pruning_keeps_every_echo_that_is_still_live(world: World) -> None:
    pack, other = world.pack(sessions_total=10), world.pack(sessions_total=10)
    fresh = world.bookings(pack, count=1)[0]
    x, y = world.bookings(other, count=1)[0], world.bookings(pack, count=1)[0]
    conn = world.conn
    _as(conn, world.org.trainer_user_id)
    conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = ANY (%s)", [[x, y]])
    _age_writes(conn, 12)
    assert _call(conn, "SELECT public.use_session(%s) AS r", other) is True  # keeps that write live
    _age_writes(conn, 10)  # 22 s old, absorbed 10 s ago: live through its sibling
    world.set_status(fresh, "completed")  # 0 s old
    # A heartbeat, drain() and prune each sweep; none takes a live echo.
    conn.execute("SELECT session_ledger.heartbeat(gen_random_uuid(), 'h', 1, false)")
    conn.execute("SELECT session_ledger.drain()")
    conn.execute("SELECT session_ledger.prune_booking_writes()")
    left = {
        (r["purchase_id"], tuple(r["booking_ids"]))
        for r in conn.execute("SELECT purchase_id, booking_ids FROM session_ledger.booking_writes")
    }
    assert left == {(other, (x,)), (pack, (y,)), (pack, (fresh,))}
    _age_writes(conn, 16)
    conn.execute("SELECT session_ledger.prune_booking_writes()")
    assert conn.execute("SELECT count(*) AS n FROM session_ledger.booking_writes").fetchone() == {"n": 0}


def test_two_old_calls_racing_for_one_echo_absorb_it_once(world: World, ledger_dsn: str) -> None:
    pack = world.pack(sessions_total=10)
    [booking] = world.bookings(pack)
    _as(world.conn, world.org.trainer_user_id)
    world.set_status(booking, "completed")
    results: list[Any] = []
    with connect(ledger_dsn, purpose="tests") as first, connect(ledger_dsn, purpose="tests") as second:
        for conn in (first, second):
            _as(conn, world.org.trainer_user_id)
        first.execute("BEGIN")
        assert _call(first, "SELECT public.use_session(%s) AS r", pack) is True  # holds the echo's row lock
        pid = second.execute("SELECT pg_backend_pid() AS pid").fetchone()["pid"]  # type: ignore[index]
        racer = threading.Thread(
            target=lambda: results.append(_call(second, "SELECT public.use_session(%s) AS r", pack))
        )
        racer.start()
        deadline = time.monotonic() + 60
        while not world.conn.execute(
            "SELECT wait_event_type = 'Lock' AS waiting FROM pg_stat_activity WHERE pid = %s", [pid]
        ).fetchone()["waiting"]:  # type: ignore[index]
            assert time.monotonic() < deadline, "the second call never waited for the first's lock"
            time.sleep(0.02)
        first.execute("COMMIT")
        racer.join(60)
    assert results == [True]
    world.drain()
    assert sorted(c[1] for c in _calls(world.conn)) == ["absorbed", "charged"]
    assert world.used(pack) == 2
