"""The dashboard's recent changes page by cursor, and a dead letter of any age is found by id, against a real database."""

from __future__ import annotations

import re
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from listener.http.dashboard import render_page
from listener.http.dashboard_store import (
    ROWS,
    Cursor,
    DashboardData,
    dead_letters_by_id,
    parse_cursor,
    read_dashboard,
)
from listener.http.snapshot import Snapshot

from support.http import request, running
from support.page import Page
from support.roles import listener_login
from support.world import World

# The slow tier: every case a CLI subprocess, a promtool run, or an embedded or HTTP server of its own.
pytestmark = pytest.mark.slow

TOKEN = "paging-dashboard-token-" + uuid.uuid4().hex
# The functions the dashboard gained for these, with what the listener's role may call them with.
NEW_FUNCTIONS = {
    "session_ledger.dashboard_recent_changes(integer,timestamp with time zone,uuid)",
    "session_ledger.dashboard_dead_letters_by_id(bigint[])",
    "session_ledger.dashboard_absorbed_calls(integer)",
}


@contextmanager
def _snapshot(world: World) -> Iterator[Snapshot]:
    """The dashboard's read path, logged in as the listener's role only."""
    with listener_login(world.ledger.dsn) as dsn:
        snapshot = Snapshot(dsn)
        try:
            yield snapshot
        finally:
            snapshot.close()


def _complete(world: World, bookings: list[uuid.UUID]) -> None:
    """Complete bookings in one statement and charge them: their ledger rows share one updated_at."""
    world.conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = ANY (%s)", [bookings])
    world.drain()


def _ledger_newest_first(world: World) -> list[uuid.UUID]:
    rows = world.conn.execute(
        "SELECT booking_id FROM session_ledger.charges ORDER BY updated_at DESC, booking_id DESC"
    ).fetchall()
    return [r["booking_id"] for r in rows]


def _page_ids(data: DashboardData) -> list[uuid.UUID]:
    return [r["booking_id"] for r in data.recent]


def test_recent_changes_page_by_cursor_without_gaps_or_repeats(world: World) -> None:
    pack = world.pack(sessions_total=500)
    bookings = world.bookings(pack, count=ROWS * 2 + 20)
    # Three batches, so pages end inside a run of rows with the same updated_at.
    _complete(world, bookings[:25])
    _complete(world, bookings[25:65])
    _complete(world, bookings[65:])
    expected = _ledger_newest_first(world)
    stamps = world.conn.execute(
        "SELECT count(DISTINCT updated_at) AS n FROM session_ledger.charges"
    ).fetchone()
    assert len(expected) == ROWS * 2 + 20 and stamps == {"n": 3}

    with _snapshot(world) as snapshot:
        first = read_dashboard(snapshot)
        assert first.before is None and first.older is not None
        assert _page_ids(first) == expected[:ROWS]
        # Newer changes while someone reads older pages: the pages already cut do not shift.
        _complete(world, world.bookings(pack, count=5))
        second = read_dashboard(snapshot, before=first.older)
        assert second.before == first.older and second.older is not None
        assert _page_ids(second) == expected[ROWS : ROWS * 2]
        third = read_dashboard(snapshot, before=second.older)
        assert _page_ids(third) == expected[ROWS * 2 :] and third.older is None
        newest = read_dashboard(snapshot)
        assert _page_ids(newest)[5:] == expected[: ROWS - 5]

    # Each page links to the next older one with its cursor, and back to the newest.
    assert second.older is not None
    links = dict(Page(render_page(second, ready=True, listener_id="x")).links())
    assert links["/?before=" + second.older.token() + "#recent-section"] == "older →"
    assert links["/#recent-section"] == "← newest"
    last = Page(render_page(third, ready=True, listener_id="x"))
    assert "older" not in last.ids and "newest" in last.ids
    assert "newest" not in Page(render_page(first, ready=True, listener_id="x")).ids
    for cursor in (first.older, second.older):
        assert parse_cursor(cursor.token()) == cursor


@pytest.mark.parametrize(
    "text",
    [
        "",
        "older",
        "1700000000000000",
        "1700000000000000_not-a-uuid",
        "1700000000000000_" + "0" * 32,
        "17000000000000000000_" + str(uuid.UUID(int=1)),
        "999999999999999999_" + str(uuid.UUID(int=1)),
        "-999999999999999999_" + str(uuid.UUID(int=1)),
        "1.5_" + str(uuid.UUID(int=1)),
        "1700000000000000_" + str(uuid.UUID(int=1)) + "_x",
    ],
)
def test_a_cursor_that_is_not_one_is_refused(text: str) -> None:
    assert parse_cursor(text) is None


def test_a_cursor_is_exact_to_the_microsecond() -> None:
    at = datetime(2026, 3, 1, 12, 0, 0, 123457, tzinfo=UTC)
    booking = uuid.uuid4()
    cursor = Cursor(at, booking)
    assert re.fullmatch(r"\d+_[0-9a-f-]{36}", cursor.token())
    assert parse_cursor(cursor.token()) == cursor
    assert parse_cursor(cursor.token().upper()) == cursor
    before_1970 = Cursor(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), booking)
    assert parse_cursor(before_1970.token()) == before_1970
    assert parse_cursor(Cursor(at + timedelta(microseconds=1), booking).token()) != cursor


def _fill_dead_letters(world: World, count: int) -> list[int]:
    """Dead letters as listeners leave them, oldest first; their ids."""
    rows = world.conn.execute(
        """INSERT INTO pgmq.q_booking_events_dlq (vt, message)
           SELECT now(), jsonb_build_object('reason', 'payload is a JSON string, not an object',
                                            'message', to_jsonb('letter ' || i), 'source_msg_id', i)
           FROM generate_series(1, %s) AS i
           RETURNING msg_id""",
        [count],
    ).fetchall()
    return sorted(r["msg_id"] for r in rows)


def test_a_dead_letter_older_than_the_newest_thousand_is_found_and_redriven(world: World) -> None:
    ids = _fill_dead_letters(world, 1005)
    oldest, newest = ids[0], ids[-1]
    with _snapshot(world) as snapshot:
        found = dead_letters_by_id(snapshot, [oldest, newest, oldest, 2**70, -1, 0])
        assert [d["msg_id"] for d in found] == [oldest, newest]
        assert (
            found[0]["payload"] == "letter 1"
            and found[0]["reason"] == "payload is a JSON string, not an object"
        )
        assert dead_letters_by_id(snapshot, [2**70]) == []

    with listener_login(world.ledger.dsn) as dsn, running(dsn, token=TOKEN) as proc:
        confirm = request(f"{proc.base}/redrive?id={oldest}", token=TOKEN)
        assert confirm.status == 200
        page = Page(confirm.body)
        assert "confirm-redrive" in page.ids
        assert [row[0].text for row in page.rows("redrive-table")] == [str(oldest)]
        nonce = re.search(r'name="csrf" value="([^"]+)"', confirm.body)
        assert nonce is not None
        body = urllib.parse.urlencode({"id": str(oldest), "confirm": "yes", "csrf": nonce.group(1)}).encode()
        done = request(
            f"{proc.base}/redrive",
            token=TOKEN,
            data=body,
            headers={"Origin": f"http://127.0.0.1:{proc.port}"},
        )
        assert done.status == 200 and "Moved 1 dead letter(s)" in done.body
        proc.stop()
    archived = world.conn.execute(
        "SELECT count(*) AS n FROM pgmq.a_booking_events_dlq WHERE msg_id = %s", [oldest]
    ).fetchone()
    assert archived == {"n": 1}


def test_the_new_functions_are_definer_pinned_and_for_the_listener_only(world: World) -> None:
    rows = world.conn.execute(
        """SELECT p.oid::regprocedure::text AS fn, p.prosecdef, p.proconfig,
                  has_function_privilege('session_ledger_listener', p.oid, 'EXECUTE') AS listener,
                  has_function_privilege('anon', p.oid, 'EXECUTE') AS anon,
                  has_function_privilege('authenticated', p.oid, 'EXECUTE') AS authenticated,
                  has_function_privilege('service_role', p.oid, 'EXECUTE') AS service_role,
                  coalesce(array_to_string(p.proacl, ','), '') AS acl
           FROM pg_proc p
           WHERE p.oid::regprocedure::text = ANY (%s)""",
        [sorted(NEW_FUNCTIONS)],
    ).fetchall()
    assert {r["fn"] for r in rows} == NEW_FUNCTIONS
    for r in rows:
        assert r["prosecdef"] and r["proconfig"] == ["search_path=pg_catalog, pg_temp"], r
        assert r["listener"] and not (r["anon"] or r["authenticated"] or r["service_role"]), r
        assert not re.search(r"(^|,)=X", r["acl"]), f"PUBLIC may execute {r['fn']}"
