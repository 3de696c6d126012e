"""Discarding dead letters: archived with who, when and why; status turns healthy; uninstall needs no --force.

The ids discard takes are the ones `listener status` (text and JSON) and `replay --dead-letter` show.
"""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import errors
from rich.console import Console

import listener
from listener.cli.commands.status import render_status
from listener.core.db import connect
from listener.core.sql_files import SCHEMA_VERSION
from listener.errors import ConfigError, NothingMatched
from listener.ops.discard import discard_dead_letters
from listener.ops.replay import redrive_dead_letters
from listener.ops.status import fetch_status, health_problems
from listener.ops.uninstall import uninstall

from support.roles import listener_login
from support.world import World

POISON = (
    "'\"not an event\"'::jsonb",
    '\'{"type": "booking.changed", "v": 1, "booking_id": "NOT-A-UUID"}\'::jsonb',
)


def _poisoned(world: World) -> list[int]:
    """Two malformed events, dead-lettered by a drain; their dead-letter ids, oldest first."""
    pack = world.pack(sessions_total=5)
    for booking in world.bookings(pack, count=2):
        world.set_status(booking, "completed")  # real events first: queue and dead-letter ids differ
    for payload in POISON:
        world.send_raw(payload)
    world.drain()
    ids = [int(str(r["msg_id"])) for r in world.dead_letters()]
    assert len(ids) == 2
    return ids


def _problems(report: dict[str, Any]) -> list[str]:
    return health_problems(report, max_age_s=60, require_consumer=False, drain_counts=True)


def _archived(world: World, msg_id: int) -> dict[str, Any]:
    row = world.conn.execute(
        "SELECT message FROM pgmq.a_booking_events_dlq WHERE msg_id = %s", [msg_id]
    ).fetchone()
    assert row is not None, f"dead letter {msg_id} is not in the archive"
    message: dict[str, Any] = row["message"]
    return message


def test_status_lists_the_dead_letter_ids_that_replay_and_discard_take(world: World) -> None:
    ids = _poisoned(world)
    report = fetch_status(world.ledger.dsn)
    assert [d["id"] for d in report["dead_letters"]] == ids
    assert report["versions"] == {
        "package": listener.__version__,
        "schema": SCHEMA_VERSION,
        "package_schema": SCHEMA_VERSION,
        "migrated_by": listener.__version__,
    }
    assert report["dead_letters"][1]["booking_id"] == "NOT-A-UUID"
    assert all(d["reason"] and d["source_msg_id"] not in ids for d in report["dead_letters"])
    out = io.StringIO()
    render_status({**report, "problems": _problems(report)}, Console(file=out, width=200))
    text = out.getvalue()
    assert "dead letters (ids for replay and discard)" in text
    for i in ids:
        assert f"│ {i} " in text
    assert f"listener discard --dead-letter --id {ids[0]}" in text
    assert f"session-ledger-listener {listener.__version__}, schema version {SCHEMA_VERSION}" in text
    # The same ids work for a redrive.
    assert [d["id"] for d in redrive_dead_letters(world.ledger.dsn, ids=ids, dry_run=True).letters] == ids


def test_status_names_how_many_dead_letters_it_leaves_out(world: World) -> None:
    for _ in range(23):
        world.send_raw(POISON[0])
    world.drain()
    report = fetch_status(world.ledger.dsn)
    assert report["dead_letter_depth"] == 23
    oldest = [int(str(r["msg_id"])) for r in world.dead_letters()][:20]
    assert [d["id"] for d in report["dead_letters"]] == oldest
    out = io.StringIO()
    render_status({**report, "problems": _problems(report)}, Console(file=out, width=200))
    assert "and 3 more" in out.getvalue()


def test_discard_archives_each_letter_with_who_when_and_why_and_status_turns_healthy(world: World) -> None:
    first, second = _poisoned(world)
    assert "2 dead-lettered event(s)" in _problems(fetch_status(world.ledger.dsn))

    dry = discard_dead_letters(world.ledger.dsn, ids=[first], reason="malformed by a test", dry_run=True)
    assert [d["id"] for d in dry.letters] == [first] and dry.discarded == 0
    assert len(world.dead_letters()) == 2

    report = discard_dead_letters(world.ledger.dsn, ids=[first], reason="  malformed by a test  ")
    assert report.discarded == 1 and report.reason == "malformed by a test"
    assert [int(str(r["msg_id"])) for r in world.dead_letters()] == [second]
    archived = _archived(world, first)
    record = archived["discarded"]
    login = world.conn.execute("SELECT session_user AS u").fetchone()
    assert login is not None
    assert record["by"] == login["u"] and record["login"] == login["u"]
    assert record["reason"] == "malformed by a test" and record["at"]
    # The dead letter's own story stays beside the record.
    assert archived["reason"] and archived["message"] == "not an event"

    everything = discard_dead_letters(world.ledger.dsn, all_letters=True, reason="the rest too")
    assert everything.discarded == 1 and world.dead_letters() == []
    assert _archived(world, second)["discarded"]["reason"] == "the rest too"
    assert _problems(fetch_status(world.ledger.dsn)) == []
    # Nothing of the discarded letters came back on the queue.
    world.drain()
    assert world.dead_letters() == [] and world.queue() == []


def test_a_redriven_letter_carries_no_discard_record(world: World) -> None:
    first, _ = _poisoned(world)
    redrive_dead_letters(world.ledger.dsn, ids=[first])
    assert "discarded" not in _archived(world, first)


def test_discard_refuses_without_a_reason_unknown_ids_and_both_id_and_all(world: World) -> None:
    first, _ = _poisoned(world)
    for reason in ("", "   ", None):
        with pytest.raises(ConfigError, match="--reason is required"):
            discard_dead_letters(world.ledger.dsn, ids=[first], reason=reason)
    with pytest.raises(ConfigError, match="not both"):
        discard_dead_letters(world.ledger.dsn, ids=[first], all_letters=True, reason="x")
    with pytest.raises(ConfigError, match="say which dead letters"):
        discard_dead_letters(world.ledger.dsn, reason="x")
    with pytest.raises(NothingMatched, match="no dead letter with id 424242; nothing was discarded"):
        discard_dead_letters(world.ledger.dsn, ids=[first, 424242], reason="x")
    assert len(world.dead_letters()) == 2


def test_the_database_function_requires_a_reason_itself(world: World) -> None:
    first, _ = _poisoned(world)
    for reason in ("", " ", None, "x" * 1001):
        with pytest.raises(errors.InvalidParameterValue):
            world.conn.execute("SELECT session_ledger.discard_dead_letters(%s, %s)", [[first], reason])
    assert len(world.dead_letters()) == 2
    row = world.conn.execute(
        "SELECT session_ledger.discard_dead_letters(%s, 'gone') AS n", [[first, 999999]]
    ).fetchone()
    assert row == {"n": 1}


def test_the_listeners_login_may_discard_and_is_recorded_by_name(world: World) -> None:
    """The dashboard's path: its button runs as the listener's login."""
    first, _ = _poisoned(world)
    with listener_login(world.ledger.dsn) as dsn, connect(dsn, purpose="tests") as conn:
        row = conn.execute(
            "SELECT session_ledger.discard_dead_letters(ARRAY[%s]::bigint[], 'from the dashboard') AS n",
            [first],
        ).fetchone()
        assert row == {"n": 1}
        login = conn.execute("SELECT session_user AS u").fetchone()
        assert login is not None
        details = conn.execute("SELECT session_ledger.status_details(5) AS d").fetchone()
        assert details is not None and len(details["d"]["dead_letters"]) == 1
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM pgmq.a_booking_events_dlq")
    record = _archived(world, first)["discarded"]
    assert record["login"] == login["u"] and record["by"] == login["u"]


@pytest.mark.parametrize("role", ["anon", "authenticated", "service_role"])
def test_the_api_roles_may_not_discard(world: World, role: str) -> None:
    first, _ = _poisoned(world)
    with connect(world.ledger.dsn, autocommit=False, purpose="tests") as conn:
        conn.execute(f"SET LOCAL ROLE {role}")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT session_ledger.discard_dead_letters(ARRAY[%s]::bigint[], 'x')", [first])
    with connect(world.ledger.dsn, autocommit=False, purpose="tests") as conn:
        conn.execute(f"SET LOCAL ROLE {role}")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT session_ledger.status_details(5)")
    assert len(world.dead_letters()) == 2


def test_a_letter_redriven_and_discarded_at_once_goes_one_way_only(world: World) -> None:
    first, _ = _poisoned(world)
    with connect(world.ledger.dsn, autocommit=False, purpose="tests") as holder:
        moved = holder.execute(
            "SELECT session_ledger.redrive_dead_letters(ARRAY[%s]::bigint[]) AS n", [first]
        )
        assert moved.fetchone() == {"n": 1}
        result: dict[str, Any] = {}

        def discard() -> None:
            with connect(world.ledger.dsn, purpose="tests") as conn:
                row = conn.execute(
                    "SELECT session_ledger.discard_dead_letters(ARRAY[%s]::bigint[], 'late') AS n", [first]
                ).fetchone()
                result["n"] = row["n"] if row else None

        t = threading.Thread(target=discard)
        t.start()
        _wait_until_blocked(world, holder)
        holder.commit()
        t.join(timeout=60)
        assert not t.is_alive()
    assert result == {"n": 0}
    assert "discarded" not in _archived(world, first)
    assert len(world.queue()) == 1  # the redrive's copy, once


def _wait_until_blocked(world: World, holder: psycopg.Connection[Any]) -> None:
    pid = holder.info.backend_pid
    deadline = time.monotonic() + 60
    while True:
        row = world.conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity WHERE %s = ANY (pg_blocking_pids(pid))", [pid]
        ).fetchone()
        if row is not None and row["n"] > 0:
            return
        assert time.monotonic() < deadline, "the discard never waited on the redrive's lock"
        time.sleep(0.01)


def test_uninstall_needs_no_force_once_the_dead_letters_are_discarded(world: World) -> None:
    _poisoned(world)
    with pytest.raises(Exception, match="2 dead letters are unresolved"):
        uninstall(world.ledger.dsn)
    discard_dead_letters(world.ledger.dsn, all_letters=True, reason="poison, never a booking")
    report = uninstall(world.ledger.dsn)
    assert report.dead_letters == 0
