"""The dashboard's legacy-call section and provenance, served by a real listener from a real database."""

from __future__ import annotations

import re
import uuid
from datetime import UTC
from typing import Any

import pytest

from listener.http.dashboard import render_page
from listener.http.dashboard_store import DashboardData

from support import old_app
from support.http import request, running
from support.page import Cell, Page
from support.roles import listener_login
from support.world import World

# The slow tier: every case a CLI subprocess, a promtool run, or an embedded or HTTP server of its own.
pytestmark = pytest.mark.slow

TOKEN = "legacy-dashboard-token-" + uuid.uuid4().hex


def _short_trace(traceparent: str) -> str:
    return "trace " + traceparent.split("-")[1][:8]


def _assert_caused_by(cell: Cell, cause: dict[str, Any]) -> None:
    """The cell names the role, and the user and trace shortened, each whole in a title; a user set
    through any login but the API's (these requests come through the tests' own) is shown as its claim."""
    login = cause["login"]
    assert login != "authenticator"
    assert cell.text == (
        f"{cause['role']} {cause['uid'][:8]} claimed by {login} {_short_trace(cause['trace'])}"
    ), cell
    assert cell.titles == [
        f"user {cause['uid']}",
        f"set by login {login}, not a checked JWT",
        f"traceparent {cause['trace']}",
    ], cell


def test_absorbed_calls_are_listed_with_who_when_pack_and_booking(world: World) -> None:
    pack = world.pack(sessions_total=10)
    first, second = world.bookings(pack, count=2)
    traces = {first: old_app.new_trace(), second: old_app.new_trace()}
    for booking, trace in traces.items():
        assert old_app.complete_then_use_session(world, booking, pack, trace=trace)
    # A press with no booking write behind it: a legacy call, but nothing to absorb.
    assert old_app.request(world, "SELECT public.use_session(%s) AS ok", [pack]) == {"ok": True}

    with listener_login(world.ledger.dsn) as dsn, running(dsn, token=TOKEN) as proc:
        world.ledger.drain(listener_running=True)
        reply = request(f"{proc.base}/", token=TOKEN)
        proc.stop()
    assert reply.status == 200
    page = Page(reply.body)
    assert world.used(pack) == 3, "two bookings charged once each by the ledger, and the press"

    assert page.text("legacy-absorbing") == "on"
    assert page.text("legacy-absorbed-total") == "2"
    assert page.text("legacy-absorbed-hour") == "2"
    assert (page.text("legacy-absorbed-use"), page.text("legacy-absorbed-release")) == ("2", "0")
    assert page.text("legacy-calls") == "3"
    assert page.text("manual-calls") == "0"
    last = world.conn.execute(
        "SELECT max(called_at) AS at FROM session_ledger.pack_calls WHERE legacy"
    ).fetchone()
    assert last is not None
    assert re.fullmatch(
        rf"{last['at'].astimezone(UTC):%Y-%m-%d %H:%M:%S}, \d+s ago", page.text("legacy-last-call")
    )
    assert page.text("legacy-absorbed") == "2"
    assert ("#legacy-section", "absorbed calls 2") in page.links()

    absorbed = world.conn.execute(
        "SELECT called_at, purchase_id, booking_id, caused_by FROM session_ledger.pack_calls"
        " WHERE outcome = 'absorbed' ORDER BY id DESC"
    ).fetchall()
    assert [a["booking_id"] for a in absorbed] == [second, first]
    rows = page.rows("absorbed-table")
    assert len(rows) == 2
    # The pack by the app's names (no offers in this schema: its client and the day it was bought).
    bought = world.conn.execute(
        "SELECT purchased_at FROM public.client_purchases WHERE id = %s", [pack]
    ).fetchone()
    assert bought is not None
    label = f"pack · client of Studio A · {bought['purchased_at']:%Y-%m-%d}"
    for row, call in zip(rows, absorbed, strict=True):
        when, kind, on_pack, echoed, by = row
        assert when.text == str(call["called_at"])[:19]
        assert (kind.text, on_pack.text, echoed.text) == ("use_session", label, str(call["booking_id"]))
        assert on_pack.titles == [f"pack {pack}"]
        assert call["caused_by"] == {
            "role": "authenticated",
            "login": world.conn.info.user,
            "uid": str(world.org.trainer_user_id),
            "trace": traces[call["booking_id"]],
        }
        _assert_caused_by(by, call["caused_by"])

    # Provenance: every ledger row says who caused its last change, the booking write's trace included.
    recent = {row[1].text: row for row in page.rows("recent")}
    assert set(recent) == {str(first), str(second)}
    for booking in (first, second):
        cell = recent[str(booking)][7]
        _assert_caused_by(
            cell,
            {
                "role": "authenticated",
                "login": world.conn.info.user,
                "uid": str(world.org.trainer_user_id),
                "trace": traces[booking],
            },
        )


def test_rows_without_provenance_say_unknown_and_absorbing_off_shows(world: World) -> None:
    pack = world.pack(sessions_total=3)
    [booking] = world.bookings(pack)
    world.set_status(booking, "completed")
    world.drain()
    # A row written before the ledger recorded causes, as an upgraded install holds them.
    world.conn.execute("UPDATE session_ledger.charges SET caused_by = NULL WHERE booking_id = %s", [booking])
    world.conn.execute("UPDATE session_ledger.config SET absorb_legacy_calls = false")
    with listener_login(world.ledger.dsn) as dsn, running(dsn, token=TOKEN) as proc:
        page = Page(request(f"{proc.base}/", token=TOKEN).body)
        proc.stop()
    [row] = page.rows("recent")
    assert (row[1].text, row[7].text) == (str(booking), "unknown")
    assert page.text("legacy-absorbing") == "off"
    assert page.text("legacy-last-call") == "never"
    assert [c.text for c in page.rows("absorbed-table")[0]] == ["none"]


def test_the_owners_own_writes_name_the_owner(world: World) -> None:
    pack = world.pack(sessions_total=3)
    [booking] = world.bookings(pack)
    world.set_status(booking, "completed")
    world.drain()
    status = world.conn.execute("SELECT session_ledger.status() AS s").fetchone()
    assert status is not None
    recent = world.conn.execute(
        "SELECT booking_id, purchase_id, state, reason, source, updated_at,"
        " caused_by ->> 'role' AS by_role, caused_by ->> 'uid' AS by_uid, caused_by ->> 'trace' AS trace"
        " FROM session_ledger.charges"
    ).fetchall()
    role = world.conn.execute("SELECT session_user AS r").fetchone()
    assert role is not None and recent[0]["by_role"] == role["r"] and recent[0]["by_uid"] is None
    page = Page(render_page(DashboardData(status=status["s"], recent=recent), ready=True, listener_id="x"))
    [row] = page.rows("recent")
    assert row[7].text == role["r"] and row[7].titles == []
