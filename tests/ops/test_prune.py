"""Retention: what `listener prune` removes, what its dry run counts, and what it never removes."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest

from listener.errors import ConfigError
from listener.ops.prune import prune

from support.world import World


def _as(world: World, user: uuid.UUID | None) -> None:
    world.conn.execute(
        "SELECT set_config('request.jwt.claims', %s, false)", [json.dumps({"sub": str(user)} if user else {})]
    )


def _count(world: World, table: str) -> int:
    row = world.conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()
    assert row is not None
    return int(row["n"])


def _pack_calls(world: World) -> list[tuple[str, uuid.UUID | None]]:
    return [
        (r["outcome"], r["booking_id"])
        for r in world.conn.execute("SELECT outcome, booking_id FROM session_ledger.pack_calls ORDER BY id")
    ]


def test_prune_removes_old_calls_and_expired_echoes_and_its_dry_run_counts_the_same(world: World) -> None:
    pack = world.pack(sessions_total=20)
    absorbed, waiting, expired, fresh = world.bookings(pack, count=4)
    _as(world, world.org.trainer_user_id)
    # The app's old code: a completion and its echo call, absorbed; and a manual adjustment.
    world.set_status(absorbed, "completed")
    world.conn.execute("SELECT public.use_session(%s)", [pack])
    world.conn.execute("SELECT public.use_session(%s, 'goodwill')", [pack])
    world.drain()
    # An absorbed call whose booking's event still waits: apply_bookings may still read it.
    world.set_status(waiting, "completed")
    world.conn.execute("SELECT public.use_session(%s)", [pack])
    world.conn.execute("UPDATE session_ledger.pack_calls SET called_at = called_at - interval '40 days'")
    world.conn.execute("UPDATE pgmq.a_booking_events SET archived_at = archived_at - interval '40 days'")
    # An echo long past the legacy-call window, and one inside it.
    world.set_status(expired, "completed")
    world.conn.execute(
        "UPDATE session_ledger.booking_writes SET written_at = written_at - interval '1 hour',"
        " last_absorbed_at = last_absorbed_at - interval '1 hour'"
    )
    world.set_status(fresh, "completed")
    _as(world, None)
    assert _count(world, "session_ledger.booking_writes") == 4
    used = world.used(pack)

    dry = prune(world.ledger.dsn, older_than=timedelta(days=30), dry_run=True)
    assert dry.dry_run
    assert (dry.archived_events, dry.pack_calls, dry.booking_writes) == (1, 2, 3)
    assert _count(world, "session_ledger.pack_calls") == 3
    assert _count(world, "session_ledger.booking_writes") == 4
    assert _count(world, "pgmq.a_booking_events") == 1

    done = prune(world.ledger.dsn, older_than=timedelta(days=30))
    assert done.as_json() == {**dry.as_json(), "dry_run": False}
    assert _pack_calls(world) == [("absorbed", waiting)]
    assert _count(world, "session_ledger.booking_writes") == 1
    assert _count(world, "pgmq.a_booking_events") == 0
    assert world.used(pack) == used
    # Charging goes on: waiting, expired and fresh are charged once each (waiting's old call was its echo).
    world.drain()
    assert world.used(pack) == used + 3


def test_a_retention_under_a_day_needs_force_but_its_dry_run_does_not(world: World) -> None:
    pack = world.pack(sessions_total=5)
    for booking in world.bookings(pack, count=2):
        world.set_status(booking, "completed")
    world.drain()
    for short in (timedelta(0), timedelta(hours=23, minutes=59)):
        with pytest.raises(ConfigError, match=r"a retention under one day .* pass --force"):
            prune(world.ledger.dsn, older_than=short)
    assert _count(world, "pgmq.a_booking_events") == 2
    dry = prune(world.ledger.dsn, older_than=timedelta(0), dry_run=True)
    assert dry.archived_events == 2 and _count(world, "pgmq.a_booking_events") == 2
    forced = prune(world.ledger.dsn, older_than=timedelta(0), force=True)
    assert forced.archived_events == 2 and _count(world, "pgmq.a_booking_events") == 0
    # A day is allowed as it is.
    assert prune(world.ledger.dsn, older_than=timedelta(days=1)).archived_events == 0
