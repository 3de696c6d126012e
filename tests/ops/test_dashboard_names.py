"""The dashboard in the app's terms: clients and packs by name, search, a pack's page, auto-refresh,
discard, and replay of an id no booking has; against a real database and a real listener."""

from __future__ import annotations

import re
import urllib.parse
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from listener.core.db import connect
from listener.http.dashboard import REFRESH_S, render_pack, render_page, render_search
from listener.http.dashboard_store import read_dashboard, read_pack, search
from listener.http.snapshot import Snapshot
from listener.testing import app_data
from listener.testing.supabase import SupabaseAppDb

from support import old_app, roles
from support.http import ListenerProcess, Response, request, running
from support.page import Cell, Page
from support.roles import listener_login
from support.world import World

# Every case starts listeners or a Supabase-shaped cluster of its own.
pytestmark = pytest.mark.slow

TOKEN = "names-dashboard-token-" + uuid.uuid4().hex
CLIENT = "client of Studio A"
META_REFRESH = f'<meta http-equiv="refresh" content="{REFRESH_S}">'


@contextmanager
def _snapshot(world: World) -> Iterator[Snapshot]:
    """The dashboard's read path, logged in as the listener's role only."""
    with listener_login(world.ledger.dsn) as dsn:
        snapshot = Snapshot(dsn)
        try:
            yield snapshot
        finally:
            snapshot.close()


def _named(cell: Cell, text: str, title: str) -> None:
    assert (cell.text, cell.titles) == (text, [title]), cell


def _pack_label(world: World, pack: uuid.UUID) -> str:
    row = world.conn.execute(
        "SELECT to_char(purchased_at, 'YYYY-MM-DD') AS day FROM public.client_purchases WHERE id = %s", [pack]
    ).fetchone()
    assert row is not None
    return f"pack · {CLIENT} · {row['day']}"


def _post(
    proc: ListenerProcess, path: str, confirm_page: str, fields: dict[str, str | list[str]]
) -> Response:
    """Submit a confirm step's form as the browser would: its nonce, confirm=yes, same origin."""
    nonce = re.search(r'name="csrf" value="([^"]+)"', confirm_page)
    assert nonce is not None
    body = urllib.parse.urlencode({**fields, "confirm": "yes", "csrf": nonce.group(1)}, doseq=True).encode()
    return request(
        f"{proc.base}{path}", token=TOKEN, data=body, headers={"Origin": f"http://127.0.0.1:{proc.port}"}
    )


def test_clients_and_packs_show_by_the_apps_names_with_the_uuid_on_hover(world: World) -> None:
    pack = world.pack(sessions_total=1)
    first, second = world.bookings(pack, count=2)
    world.set_status(first, "completed")
    world.set_status(second, "completed")
    world.drain()
    assert world.ledger_state(second) == ("unfunded", pack)
    label = _pack_label(world, pack)
    client = world.org.client_id

    with _snapshot(world) as snapshot:
        page = Page(render_page(read_dashboard(snapshot), ready=True, listener_id="x"))
    [row] = page.rows("unfunded-table")
    assert row[0].text == str(second)
    _named(row[1], CLIENT, f"client {client}")
    _named(row[2], label, f"pack {pack}")
    recent = {r[1].text: r for r in page.rows("recent")}
    assert set(recent) == {str(first), str(second)}
    for r in recent.values():
        _named(r[2], CLIENT, f"client {client}")
        _named(r[3], label, f"pack {pack}")
    assert (f"/pack?id={pack}", label) in page.links()

    # An app that keeps no name where the dashboard looks: the uuid, still whole on hover.
    world.conn.execute("ALTER TABLE public.clients DROP COLUMN full_name")
    with _snapshot(world) as snapshot:
        page = Page(render_page(read_dashboard(snapshot), ready=True, listener_id="x"))
    [row] = page.rows("unfunded-table")
    _named(row[1], str(client), f"client {client}")
    _named(row[2], str(pack), f"pack {pack}")

    world.conn.execute("DROP TABLE public.clients CASCADE")
    with _snapshot(world) as snapshot:
        page = Page(render_page(read_dashboard(snapshot), ready=True, listener_id="x"))
        by_id = search(snapshot, str(client))
    [row] = page.rows("unfunded-table")
    _named(row[1], str(client), f"client {client}")
    # Without a clients table a client is still found by its id, through its bookings and packs.
    assert by_id.clients == [client] and [p["id"] for p in by_id.packs] == [pack]


def test_search_finds_bookings_packs_and_clients_by_id_or_name(world: World) -> None:
    pack = world.pack(sessions_total=5)
    other = world.pack(sessions_total=2)
    [booking] = world.bookings(pack)
    world.set_status(booking, "completed")
    world.drain()
    someone = world.conn.execute(
        "INSERT INTO public.clients (org_id, full_name) VALUES (%s, 'Zoë Brandt') RETURNING id",
        [world.org.id],
    ).fetchone()
    assert someone is not None

    with _snapshot(world) as snapshot:
        by_booking = search(snapshot, f"  {str(booking).upper()} ")
        by_pack = search(snapshot, str(pack))
        by_client = search(snapshot, str(world.org.client_id))
        by_name = search(snapshot, "STUDIO a")
        by_accent = search(snapshot, "zoë")
        nothing = search(snapshot, "nobody by this name")
        unknown = search(snapshot, str(uuid.uuid4()))
        wildcard = search(snapshot, "%")

    [found] = by_booking.bookings
    assert (found["booking_id"], found["ledger_state"], found["out_of_sync"]) == (booking, "paid", False)
    assert by_booking.packs == [] and by_booking.clients == []
    assert [p["id"] for p in by_pack.packs] == [pack] and by_pack.bookings == []
    assert by_pack.packs[0]["paid"] == 1 and by_pack.packs[0]["sessions_used"] == 1
    # A client, by id or by a part of its name, comes with every pack it holds.
    for result in (by_client, by_name):
        assert result.clients == [world.org.client_id]
        assert {p["id"] for p in result.packs} == {pack, other}
    assert by_accent.clients == [someone["id"]] and by_accent.packs == []
    for empty in (nothing, unknown, wildcard):
        assert (empty.bookings, empty.packs, empty.clients) == ([], [], [])

    page = Page(render_search(by_name))
    assert page.text("search-clients") == CLIENT
    assert {r[0].text for r in page.rows("search-packs")} == {
        _pack_label(world, pack),
        _pack_label(world, other),
    }
    booking_page = Page(render_search(by_booking))
    [row] = booking_page.rows("search-bookings")
    assert [c.text for c in row] == [
        str(booking),
        CLIENT,
        row[2].text,
        "completed",
        _pack_label(world, pack),
        "paid",
        _pack_label(world, pack),
        "in sync",
        "replay…",
    ]
    assert "no-match" in Page(render_search(nothing)).ids
    assert "No booking, pack or client matches nobody by this name" in Page(render_search(nothing)).text(
        "no-match"
    )


def test_a_packs_page_shows_its_balance_charges_unfunded_and_direct_calls(world: World) -> None:
    pack = world.pack(sessions_total=2)
    bookings = world.bookings(pack, count=3)
    trace = old_app.new_trace()
    # One completion echoed by the old code's use_session (absorbed), then two plain ones.
    assert old_app.complete_then_use_session(world, bookings[0], pack, trace=trace)
    for b in bookings[1:]:
        world.set_status(b, "completed")
    world.drain()
    # A press of the old "use 1 session" button with no booking behind it: the last session.
    assert old_app.request(world, "SELECT public.use_session(%s) AS ok", [pack]) is not None
    paid = world.conn.execute(
        "SELECT booking_id FROM session_ledger.charges WHERE purchase_id = %s AND state = 'paid'", [pack]
    ).fetchall()
    unfunded = world.conn.execute(
        "SELECT booking_id, reason FROM session_ledger.charges WHERE purchase_id = %s AND state = 'unfunded'",
        [pack],
    ).fetchall()
    calls = world.conn.execute(
        "SELECT outcome, booking_id FROM session_ledger.pack_calls WHERE purchase_id = %s ORDER BY id DESC",
        [pack],
    ).fetchall()
    assert (len(paid), len(unfunded), len(calls)) == (2, 1, 2)
    used = world.used(pack)

    with _snapshot(world) as snapshot:
        view = read_pack(snapshot, pack)
        assert read_pack(snapshot, uuid.uuid4()).pack is None
    page = Page(render_pack(view, ready=True, listener_id="x"))
    assert page.text("pack-balance") == f"{used}/2"
    assert page.text("pack-left") == str(2 - used)
    assert page.text("pack-client") == CLIENT
    assert page.text("pack-counts") == "2 charged, 1 unfunded, 0 released, 2 direct call(s)"
    assert {r[0].text for r in page.rows("pack-charged")} == {str(p["booking_id"]) for p in paid}
    [row] = page.rows("pack-unfunded")
    assert (row[0].text, row[3].text) == (str(unfunded[0]["booking_id"]), unfunded[0]["reason"])
    rows = page.rows("pack-calls")
    assert [(r[1].text, r[2].text, r[3].text, r[5].text) for r in rows] == [
        ("use_session", "legacy", c["outcome"], str(c["booking_id"] or "")) for c in calls
    ]
    assert "absorbed" in {r[3].text for r in rows}
    assert META_REFRESH in render_pack(view, ready=True, listener_id="x")


def test_auto_refresh_is_on_until_the_operator_turns_it_off(world: World) -> None:
    pack = world.pack(sessions_total=1)
    world.bookings(pack, count=2)
    with listener_login(world.ledger.dsn) as dsn, running(dsn, token=TOKEN) as proc:
        on = request(f"{proc.base}/", token=TOKEN)
        off = request(f"{proc.base}/?refresh=off", token=TOKEN)
        pack_off = request(f"{proc.base}/pack?id={pack}&refresh=off", token=TOKEN)
        pack_on = request(f"{proc.base}/pack?id={pack}", token=TOKEN)
        confirm = request(f"{proc.base}/redrive?id=1", token=TOKEN)
        found = request(f"{proc.base}/search?q={pack}&refresh=off", token=TOKEN)
        proc.stop()
    assert on.status == off.status == pack_on.status == pack_off.status == 200
    assert META_REFRESH in on.body and META_REFRESH in pack_on.body
    assert "http-equiv" not in off.body and "http-equiv" not in pack_off.body
    # Confirm steps and searches never reload under the operator.
    assert "http-equiv" not in confirm.body and "http-equiv" not in found.body
    on_page, off_page = Page(on.body), Page(off.body)
    assert on_page.text("auto-refresh") == f"auto-refresh every {REFRESH_S} s · turn off"
    assert ("/?refresh=off", "turn off") in on_page.links()
    assert off_page.text("auto-refresh") == "auto-refresh off · turn on"
    assert ("/", "turn on") in off_page.links()
    assert (f"/pack?id={pack}&refresh=off", "turn on") not in Page(pack_off.body).links()
    assert (f"/pack?id={pack}", "turn on") in Page(pack_off.body).links()
    # Off stays off as the operator moves on: search, and a pack's link from a search.
    assert '<input type="hidden" name="refresh" value="off">' in off.body
    assert any(href == f"/pack?id={pack}&refresh=off" for href, _ in Page(found.body).links())


def test_discard_through_the_dashboard_needs_the_confirm_step_and_a_reason(world: World) -> None:
    world.send_raw("'\"not an event\"'::jsonb")
    world.send_raw("'\"nor this\"'::jsonb")
    world.drain()
    letters = [int(str(d["msg_id"])) for d in world.dead_letters()]
    assert len(letters) == 2
    first = letters[0]
    with listener_login(world.ledger.dsn) as dsn, running(dsn, token=TOKEN) as proc:
        overview = request(f"{proc.base}/", token=TOKEN)
        page = Page(overview.body)
        assert [int(r[1].text) for r in page.rows("dead-letter-table")] == sorted(letters, reverse=True)
        assert 'id="discard" formaction="/discard"' in overview.body

        confirm = request(f"{proc.base}/discard?id={first}", token=TOKEN)
        assert confirm.status == 200
        assert [r[0].text for r in Page(confirm.body).rows("discard-table")] == [str(first)]
        assert 'name="reason"' in confirm.body and "required" in confirm.body

        # No nonce: refused, as every action is.
        forged = request(
            f"{proc.base}/discard",
            token=TOKEN,
            data=urllib.parse.urlencode({"id": str(first), "confirm": "yes", "reason": "x"}).encode(),
            headers={"Origin": "http://evil.example"},
        )
        assert forged.status == 403
        blank = _post(proc, "/discard", confirm.body, {"id": str(first), "reason": "   "})
        assert blank.status == 400 and Page(blank.body).text("message") == "A discard needs a reason."
        assert len(world.dead_letters()) == 2

        done = _post(
            proc, "/discard", confirm.body, {"id": str(first), "reason": "malformed by a test producer"}
        )
        assert done.status == 200
        assert Page(done.body).text("message") == (
            "Discarded 1 dead letter(s); each is archived with who, when and why."
        )
        again = _post(proc, "/discard", confirm.body, {"id": str(first), "reason": "twice"})
        assert Page(again.body).text("message").startswith("Discarded 0 dead letter(s)")
        logs = proc.stop()
    assert [d["msg_id"] for d in world.dead_letters()] == [letters[1]]
    archived = world.conn.execute(
        "SELECT message::text AS m FROM pgmq.a_booking_events_dlq WHERE msg_id = %s", [first]
    ).fetchone()
    assert archived is not None and "malformed by a test producer" in archived["m"]
    assert f"discarded 1 of 1 dead letter(s) [{first}]" in logs


def test_replaying_an_id_no_booking_has_says_so_and_enqueues_nothing(world: World) -> None:
    pack = world.pack(sessions_total=3)
    [booking] = world.bookings(pack)
    world.set_status(booking, "completed")
    world.drain()
    stranger = uuid.uuid4()
    with listener_login(world.ledger.dsn) as dsn, running(dsn, token=TOKEN) as proc:
        asked = request(f"{proc.base}/replay?booking={stranger}", token=TOKEN)
        known = request(f"{proc.base}/replay?booking={booking}", token=TOKEN)
        posted = _post(proc, "/replay", known.body, {"booking": str(stranger)})
        queued = world.queue()
        proc.stop()
    expected = f"No booking has id {stranger}: neither the app's bookings nor the ledger holds it. Nothing to replay."
    for reply in (asked, posted):
        assert reply.status == 404
        assert Page(reply.body).text("message") == expected
        assert "out of sync" not in reply.body and "confirm-replay" not in reply.body
    assert queued == []
    assert known.status == 200 and "confirm-replay" in Page(known.body).ids
    assert Page(known.body).text("replay-state") == (
        "The ledger agrees with this booking; replaying it changes nothing unless its row changes: "
        f"booking status completed, pack {_pack_label(world, pack)}; "
        f"ledger paid on pack {_pack_label(world, pack)}."
    )


def test_on_the_real_apps_schema_a_pack_is_named_by_its_offer_and_found_by_it(
    supabase_app_db: SupabaseAppDb,
) -> None:
    with connect(supabase_app_db.postgres_dsn, purpose="tests") as owner:
        studio = app_data.create_studio(owner, "Harbour")
        pack = app_data.create_pack(owner, studio, sessions_total=10)
        [booking] = app_data.create_bookings(owner, studio, pack, count=1)
        bought = owner.execute(
            "SELECT to_char(purchased_at, 'YYYY-MM-DD') AS day FROM public.client_purchases WHERE id = %s",
            [pack],
        ).fetchone()
    assert bought is not None
    with roles.login_role(supabase_app_db.admin_dsn, "session_ledger_listener") as dsn:
        snapshot = Snapshot(dsn)
        try:
            by_offer = search(snapshot, "10 SESS")
            by_client = search(snapshot, "client of harbour")
            by_booking = search(snapshot, str(booking))
        finally:
            snapshot.close()
    assert [p["id"] for p in by_offer.packs] == [pack] and by_offer.clients == []
    assert by_client.clients == [studio.client_id] and [p["id"] for p in by_client.packs] == [pack]
    page = Page(render_search(by_offer))
    [row] = page.rows("search-packs")
    _named(row[0], f"10 sessions · client of Harbour · {bought['day']}", f"pack {pack}")
    _named(row[1], "client of Harbour", f"client {studio.client_id}")
    [found] = by_booking.bookings
    assert (found["in_app"], found["booking_status"], found["ledger_state"]) == (True, "confirmed", None)
