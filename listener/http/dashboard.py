"""The operator dashboard's HTML: server-rendered, no script, no external asset, so it works offline.

Auto-refresh is a `<meta http-equiv="refresh">`, not a script: the page keeps its
script-free CSP, refreshes the same with JavaScript off, and the switch that turns it
off is a plain link whose state travels in the URL (`?refresh=off`), so it survives
reloads, bookmarks and every link the page renders. Only the overview and a pack's
page refresh; a confirm step, a search and a result never do.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import urlencode

from listener.http.dashboard_store import LAG_MINUTES, DashboardData, Key, Names, PackView, SearchResult

# The page loads nothing from anywhere and runs no script; forms post to this origin only.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;gap:24px;align-items:center}
header h1{font-size:18px;margin:0}
main{padding:16px 24px;max-width:1200px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px;margin:0 0 16px}
h2{font-size:15px;margin:0 0 8px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(104px,1fr));gap:10px}
.card{white-space:nowrap;background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:8px 12px;min-width:96px;
color:inherit;text-decoration:none}
.card:hover{border-color:#1d2330}
.card b{display:block;font-size:22px}
.bad{border-color:#e7b1ad;background:#fdf3f2}.bad b{color:#b3261e}.ok{color:#1b7f3b}.warn{color:#b3261e}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff3;vertical-align:top}
pre{margin:0;white-space:pre-wrap;word-break:break-all;max-width:520px;font-size:12px}
code{font-size:12px}
button{padding:4px 12px}.muted{color:#6b7280}
.facts{display:flex;flex-wrap:wrap;gap:8px 32px;margin:0 0 8px}
.when{white-space:nowrap}.id{font:12px/1.6 ui-monospace,monospace;white-space:nowrap}
.pager{display:flex;gap:16px;margin:8px 0 0}
header h1,#auto-refresh{white-space:nowrap}header form{margin-left:auto;display:flex;gap:6px}
header input{width:220px}header a{color:#9cc3ff}
"""

_PAYLOAD_CHARS = 400
# Shown of a user id or a trace id, as git shortens a commit; the whole is in the cell's title.
_SHORT_ID = 8
# The chart's colours for the p50 and p99 lag lines, their markers and their scale.
_P50 = "#1b7f3b"
_P99 = "#b3261e"
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-(?P<trace>[0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
# Seconds between automatic reloads of the overview and a pack's page; the status they
# read is itself cached for 15 s.
REFRESH_S = 30
# The longest reason a discard keeps.
MAX_REASON = 500


def render_page(
    data: DashboardData, *, ready: bool, listener_id: str, notice: str = "", refresh: bool = True
) -> str:
    """The whole dashboard: what needs an operator first, then the ledger's health and history."""
    status = data.status or {}
    now = datetime.now(UTC)
    here = _href("/", refresh, before=data.before.token() if data.before is not None else None)
    header = _header(
        ready=ready,
        database=data.status is not None,
        listener_id=listener_id,
        now=now,
        refresh=refresh,
        here=here,
    )
    parts = []
    if notice:
        parts.append(f'<section id="notice"><b>{escape(notice)}</b></section>')
    paused = status.get("paused")
    if paused:
        why = f": {paused['reason']}" if paused.get("reason") else ""
        parts.append(
            '<section id="paused"><b>Charging is paused</b> since '
            f"{escape(str(paused['paused_at'])[:19])} by {escape(str(paused['paused_by']))}{escape(why)}. "
            "Events keep queuing; <code>listener resume</code> starts charging again.</section>"
        )
    parts.append(_cards(status))
    parts.append(_dead_letters(data.dead_letters, status))
    parts.append(_unfunded(data.unfunded, status, data.names, refresh))
    parts.append(_out_of_sync(data.out_of_sync, status, data.names, refresh))
    parts.append(_replay_form())
    parts.append(_legacy_calls(status.get("legacy_calls") or {}, data.absorbed, data.names, refresh, now=now))
    parts.append(_listeners(status.get("listeners") or []))
    parts.append(_chart(data.lag, now=now))
    parts.append(_outcomes(status.get("outcomes") or {}, data, refresh))
    return _document("session ledger", "".join(parts), header=header, refresh=refresh)


def render_pack(view: PackView, *, ready: bool, listener_id: str, refresh: bool = True) -> str:
    """One pack: its balance, the bookings charged to it, those it could not pay, and its direct calls."""
    pack = view.pack
    assert pack is not None
    names = view.names
    pack_id: Key = pack["id"]
    now = datetime.now(UTC)
    header = _header(
        ready=ready,
        database=True,
        listener_id=listener_id,
        now=now,
        refresh=refresh,
        here=_href("/pack", refresh, id=str(pack_id)),
    )
    total = pack["sessions_total"]
    used = int(pack["sessions_used"])
    left = "-" if total is None else str(int(total) - used)
    offer = names.packs[pack_id].offer if pack_id in names.packs else None
    facts = (
        ("client", f'<span id="pack-client">{_client(names, pack["client_id"])}</span>'),
        ("offer", escape(offer) if offer else '<span class="muted">-</span>'),
        (
            "balance",
            f'<b id="pack-balance">{used}/{"-" if total is None else int(total)}</b> '
            f'<span class="muted">used, <span id="pack-left">{left}</span> left</span>',
        ),
        ("expires", escape(str(pack["expires_at"])[:19]) if pack["expires_at"] else "never"),
        ("payment", escape(str(pack["payment_status"]))),
        ("bought", escape(str(pack["purchased_at"])[:19])),
        (
            "ledger",
            f'<span id="pack-counts">{pack["paid"]} charged, {pack["unfunded"]} unfunded, '
            f"{pack['released']} released, {pack['calls']} direct call(s)</span>",
        ),
    )
    facts_html = "".join(
        f'<div><span class="muted">{label}</span><br>{value}</div>' for label, value in facts
    )
    charged = "".join(
        f'<tr><td class="id">{_booking_link(r["booking_id"])}</td>'
        f'<td class="when">{escape(str(r["start_time"] or "")[:16])}</td>'
        f"<td>{escape(str(r['booking_status'] or 'deleted'))}</td><td>{escape(str(r['source']))}</td>"
        f'<td class="when">{escape(str(r["updated_at"])[:19])}</td>'
        f'<td class="caused-by">{_caused_by(r["by_role"], r["by_uid"], r["trace"], r.get("by_login"))}</td></tr>'
        for r in view.charged
    )
    unfunded = "".join(
        f'<tr><td class="id">{_booking_link(r["booking_id"])}</td>'
        f'<td class="when">{escape(str(r["start_time"] or "")[:16])}</td>'
        f"<td>{escape(str(r['booking_status'] or 'deleted'))}</td><td>{escape(str(r['reason'] or ''))}</td>"
        f'<td class="when">{escape(str(r["updated_at"])[:19])}</td></tr>'
        for r in view.unfunded
    )
    calls = "".join(
        f'<tr><td class="when">{escape(str(c["called_at"])[:19])}</td>'
        f"<td><code>{'use_session' if c['kind'] == 'use' else 'release_session'}</code></td>"
        f"<td>{'legacy' if c['legacy'] else 'manual'}</td><td>{escape(str(c['outcome']))}</td>"
        f"<td>{escape(str(c['reason'] or ''))}</td>"
        f'<td class="id">{_booking_link(c["booking_id"]) if c["booking_id"] else ""}</td>'
        f'<td class="caused-by">{_caused_by(c["by_role"], c["by_uid"], c["trace"], c.get("by_login"))}</td></tr>'
        for c in view.calls
    )
    body = (
        f'<section id="pack-section"><h2>Pack {_pack(names, pack_id, refresh, link=False)}</h2>'
        f'<div class="facts">{facts_html}</div></section>'
        '<section id="pack-charged-section"><h2>Bookings charged to this pack</h2>'
        '<table id="pack-charged"><tr><th>booking</th><th>session at</th><th>booking status</th>'
        f"<th>source</th><th>charged (UTC)</th><th>caused by</th></tr>"
        f"{charged or '<tr><td colspan=6>none</td></tr>'}</table></section>"
        '<section id="pack-unfunded-section"><h2>Bookings this pack could not pay</h2>'
        '<table id="pack-unfunded"><tr><th>booking</th><th>session at</th><th>booking status</th>'
        f"<th>reason</th><th>since (UTC)</th></tr>{unfunded or '<tr><td colspan=5>none</td></tr>'}</table>"
        "</section>"
        '<section id="pack-calls-section"><h2>Direct calls</h2>'
        '<p class="muted">the app\'s use_session and release_session on this pack, and manual adjustments</p>'
        '<table id="pack-calls"><tr><th>when (UTC)</th><th>call</th><th>kind</th><th>outcome</th>'
        f"<th>reason</th><th>booking it echoed</th><th>by</th></tr>"
        f"{calls or '<tr><td colspan=7>none</td></tr>'}</table></section>"
    )
    return _document("pack", body, header=header, refresh=refresh)


def render_search(result: SearchResult, *, refresh: bool = True) -> str:
    """What a search found: bookings with their ledger state, clients, and packs with their balance."""
    names = result.names
    header = _header_plain(result.query, refresh)
    parts = [f'<section id="search-section"><h2>Search: {escape(result.query)}</h2>']
    if not (result.bookings or result.packs or result.clients):
        parts.append(
            f'<p id="no-match">No booking, pack or client matches {escape(result.query)!s}. '
            "Search takes a booking, pack or client id, or a part of a client's name.</p>"
        )
    parts.append("</section>")
    if result.bookings:
        rows = "".join(
            f'<tr><td class="id">{escape(str(b["booking_id"]))}</td>'
            f"<td>{_client(names, b['client_id'])}</td>"
            f'<td class="when">{escape(str(b["start_time"] or "")[:16])}</td>'
            f"<td>{escape(str(b['booking_status'] or 'not in the app'))}</td>"
            f"<td>{_pack(names, b['purchase_id'], refresh)}</td>"
            f"<td>{escape(str(b['ledger_state'] or 'no ledger row'))}</td>"
            f"<td>{_pack(names, b['ledger_purchase_id'], refresh)}</td>"
            f"<td>{'out of sync' if b['out_of_sync'] else 'in sync'}</td>"
            f'<td><a href="{_href("/replay", True, booking=str(b["booking_id"]))}">replay…</a></td></tr>'
            for b in result.bookings
        )
        parts.append(
            '<section id="search-bookings-section"><h2>Bookings</h2><table id="search-bookings"><tr>'
            "<th>booking</th><th>client</th><th>session at</th><th>status</th><th>booking pack</th>"
            f"<th>ledger</th><th>ledger pack</th><th>sync</th><th></th></tr>{rows}</table></section>"
        )
    if result.clients:
        items = "".join(f"<li>{_client(names, c)}</li>" for c in result.clients)
        parts.append(
            f'<section id="search-clients-section"><h2>Clients</h2><ul id="search-clients">{items}</ul></section>'
        )
    if result.packs:
        rows = "".join(
            f"<tr><td>{_pack(names, p['id'], refresh)}</td><td>{_client(names, p['client_id'])}</td>"
            f"<td>{p['sessions_used']}/{'-' if p['sessions_total'] is None else p['sessions_total']}</td>"
            f"<td>{escape(str(p['expires_at'])[:10]) if p['expires_at'] else 'never'}</td>"
            f"<td>{escape(str(p['payment_status']))}</td><td>{p['paid']}</td><td>{p['unfunded']}</td>"
            f"<td>{p['calls']}</td></tr>"
            for p in result.packs
        )
        parts.append(
            '<section id="search-packs-section"><h2>Packs</h2><table id="search-packs"><tr><th>pack</th>'
            "<th>client</th><th>used</th><th>expires</th><th>payment</th><th>charged</th><th>unfunded</th>"
            f"<th>direct calls</th></tr>{rows}</table></section>"
        )
    return _document("search", "".join(parts), header=header)


def _letter_rows(letters: list[dict[str, Any]]) -> tuple[str, str]:
    """A confirm step's table rows (id, reason, payload) and the hidden ids its form posts."""
    rows = "".join(
        f"<tr><td>{d['msg_id']}</td><td>{escape(str(d['reason']))}</td>"
        f"<td><pre>{escape(_payload(d['payload']))}</pre></td></tr>"
        for d in letters
    )
    hidden = "".join(f'<input type="hidden" name="id" value="{d["msg_id"]}">' for d in letters)
    return rows, hidden


def _none_waiting(title: str) -> str:
    body = '<section><p>None of the selected dead letters is still waiting.</p><a href="/">back</a></section>'
    return _document(title, body)


def render_redrive_confirm(letters: list[dict[str, Any]], *, nonce: str) -> str:
    """The confirm step before dead letters go back onto the queue."""
    if not letters:
        return _none_waiting("redrive dead letters")
    rows, hidden = _letter_rows(letters)
    body = (
        f"<section><h2>Redrive {len(letters)} dead letter(s)?</h2>"
        "<p>Each goes back onto the queue with its original payload; the dead letter is archived. "
        "Same as <code>listener replay --dead-letter --id ...</code>.</p>"
        f'<table id="redrive-table"><tr><th>id</th><th>reason</th><th>payload</th></tr>{rows}</table>'
        f'<form method="post" action="/redrive">{hidden}{_nonce(nonce)}'
        '<input type="hidden" name="confirm" value="yes">'
        f'<p><button type="submit" id="confirm-redrive">Redrive {len(letters)}</button> '
        '<a href="/">cancel</a></p></form></section>'
    )
    return _document("redrive dead letters", body)


def render_discard_confirm(letters: list[dict[str, Any]], *, nonce: str) -> str:
    """The confirm step before dead letters are archived for good: what each carried, and a reason to give."""
    if not letters:
        return _none_waiting("discard dead letters")
    rows, hidden = _letter_rows(letters)
    body = (
        f"<section><h2>Discard {len(letters)} dead letter(s)?</h2>"
        "<p>Each is archived with who discarded it, when and why, and never charged. "
        "Same as <code>listener discard --dead-letter --id ... --reason ...</code>.</p>"
        f'<table id="discard-table"><tr><th>id</th><th>reason</th><th>payload</th></tr>{rows}</table>'
        f'<form method="post" action="/discard">{hidden}{_nonce(nonce)}'
        '<input type="hidden" name="confirm" value="yes">'
        f'<p><label>why <input name="reason" id="discard-reason" size="60" maxlength="{MAX_REASON}" required '
        'placeholder="e.g. malformed by a test producer"></label></p>'
        f'<p><button type="submit" id="confirm-discard">Discard {len(letters)}</button> '
        '<a href="/">cancel</a></p></form></section>'
    )
    return _document("discard dead letters", body)


def render_replay_confirm(booking: dict[str, Any], names: Names, *, nonce: str) -> str:
    """The confirm step before one booking, which the app or the ledger holds, is enqueued again."""
    booking_id = str(booking["booking_id"])
    app = (
        f"booking status {escape(str(booking['booking_status']))}, pack "
        f"{_pack(names, booking['purchase_id'], True)}"
        if booking["in_app"]
        else "the app no longer has this booking"
    )
    ledger = (
        f"ledger {escape(str(booking['ledger_state']))} on pack {_pack(names, booking['ledger_purchase_id'], True)}"
        if booking["ledger_state"]
        else "no ledger row"
    )
    verdict = (
        "This booking is out of sync"
        if booking["out_of_sync"]
        else "The ledger agrees with this booking; replaying it changes nothing unless its row changes"
    )
    state = f'<p id="replay-state">{verdict}: {app}; {ledger}.</p>'
    body = (
        f"<section><h2>Replay booking {escape(booking_id)}?</h2>"
        f"<p>Client: {_client(names, booking['client_id'])}</p>{state}"
        "<p>An event goes onto the queue as the trigger would send it; the listener converges the "
        "booking's charge to its current row.</p>"
        f'<form method="post" action="/replay"><input type="hidden" name="booking" value="{escape(booking_id)}">'
        f'{_nonce(nonce)}<input type="hidden" name="confirm" value="yes">'
        '<p><button type="submit" id="confirm-replay">Replay</button> <a href="/">cancel</a></p>'
        "</form></section>"
    )
    return _document("replay booking", body)


def render_message(title: str, text: str) -> str:
    """A short page: an action's result, or why a request was refused."""
    return _document(title, f'<section><p id="message">{escape(text)}</p><a href="/">back</a></section>')


def _document(title: str, body: str, *, header: str = "", refresh: bool = False) -> str:
    meta = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if refresh else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">{meta}'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"{header}<main>{body}</main></body></html>"
    )


def _header(*, ready: bool, database: bool, listener_id: str, now: datetime, refresh: bool, here: str) -> str:
    """The header of a page that refreshes itself: readiness, the time, the switch, and search."""
    state = '<span class="ok">ready</span>' if ready else '<span class="warn">not ready</span>'
    db = "" if database else ' <span class="warn">database unreadable</span>'
    path, _, query = here.partition("?")
    params = [p for p in query.split("&") if p and p != "refresh=off"]
    on = path + ("?" + "&".join(params) if params else "")
    off = path + "?" + "&".join([*params, "refresh=off"])
    switch = (
        f'auto-refresh every {REFRESH_S} s · <a id="refresh-toggle" href="{escape(off)}">turn off</a>'
        if refresh
        else f'auto-refresh off · <a id="refresh-toggle" href="{escape(on)}">turn on</a>'
    )
    return (
        f'<header><h1><a href="{escape(_href("/", refresh))}" style="color:#fff;text-decoration:none">'
        f'session ledger</a></h1><span id="readiness">{state}</span>{db}'
        f'<span class="muted">listener {escape(listener_id)} · {now:%Y-%m-%d %H:%M:%S} UTC</span>'
        f'<a href="{escape(here)}">reload</a><span id="auto-refresh">{switch}</span>'
        f"{_search_form('', refresh)}</header>"
    )


def _header_plain(text: str, refresh: bool) -> str:
    """The header of a page that does not refresh: the way back, and search."""
    return (
        f'<header><h1><a href="{escape(_href("/", refresh))}" style="color:#fff;text-decoration:none">'
        f"session ledger</a></h1>{_search_form(text, refresh)}</header>"
    )


def _search_form(text: str, refresh: bool) -> str:
    keep = "" if refresh else '<input type="hidden" name="refresh" value="off">'
    return (
        '<form method="get" action="/search" role="search">'
        f'<input name="q" id="search" value="{escape(text)}" placeholder="booking, pack or client: id or name" '
        f'aria-label="search by booking, pack or client">{keep} <button type="submit" id="search-button">'
        "Search</button></form>"
    )


def _href(path: str, refresh: bool, **params: str | None) -> str:
    """A link within the dashboard that keeps auto-refresh as the reader set it."""
    given = {k: v for k, v in params.items() if v is not None}
    if not refresh:
        given["refresh"] = "off"
    return path + ("?" + urlencode(given) if given else "")


def _client(names: Names, client: Key | None) -> str:
    """A client by the app's name for it, the uuid in the title; the uuid itself when the app has no name."""
    if client is None:
        return '<span class="muted">-</span>'
    name = names.clients.get(client)
    if name is None:
        return f'<code class="client id" title="client {client}">{client}</code>'
    return f'<span class="client" title="client {client}">{escape(name)}</span>'


def _pack_label(names: Names, pack: Key) -> str | None:
    """A pack as the app names it: its offer, its client and the day it was bought; None without a name."""
    info = names.packs.get(pack)
    if info is None:
        return None
    client = names.clients.get(info.client_id) if info.client_id is not None else None
    if not (info.offer or client):
        return None
    parts = [info.offer or "pack", *([client] if client else [])]
    if info.purchased_at is not None:
        parts.append(f"{info.purchased_at:%Y-%m-%d}")
    return " · ".join(parts)


def _pack(names: Names, pack: Key | None, refresh: bool, *, link: bool = True) -> str:
    """A pack by name, linked to its page, the uuid in the title; the uuid itself when the app has no name."""
    if pack is None:
        return '<span class="muted">-</span>'
    label = _pack_label(names, pack)
    text = escape(label) if label else str(pack)
    cls = "pack" if label else "pack id"
    if not link:
        return f'<span class="{cls}" title="pack {pack}">{text}</span>'
    return f'<a class="{cls}" href="{escape(_href("/pack", refresh, id=str(pack)))}" title="pack {pack}">{text}</a>'


def _booking_link(booking: Key) -> str:
    """A booking's id, linked to what search knows of it."""
    return f'<a href="{escape(_href("/search", True, q=str(booking)))}">{booking}</a>'


def _cards(status: dict[str, Any]) -> str:
    """One card per number, the actionable ones first, each a link to the section that explains it."""
    age = status.get("oldest_event_age_s")
    listeners = status.get("listeners")
    legacy = status.get("legacy_calls") or {}
    cards = (
        ("dead-letters", "dead letters", status.get("dead_letter_depth", "-"), "dead-letters-section"),
        ("unfunded", "unfunded", status.get("unfunded_bookings", "-"), "unfunded-section"),
        ("out-of-sync", "out of sync", status.get("bookings_out_of_sync", "-"), "out-of-sync-section"),
        ("queue-depth", "queue depth", status.get("queue_depth", "-"), "listeners-section"),
        ("queue-in-flight", "in flight", status.get("queue_in_flight", "-"), "listeners-section"),
        ("oldest-age", "oldest event", "-" if age is None else f"{float(age):.1f}s", "lag-section"),
        (
            "live-listeners",
            "live listeners",
            "-" if listeners is None else len(listeners),
            "listeners-section",
        ),
        ("paid", "paid", status.get("paid_bookings", "-"), "recent-section"),
        ("legacy-absorbed", "absorbed calls", legacy.get("absorbed", "-"), "legacy-section"),
    )
    # Red when it needs someone: anything set aside or wrong, or no listener at all.
    bad = {
        "dead-letters": bool(status.get("dead_letter_depth")),
        "unfunded": bool(status.get("unfunded_bookings")),
        "out-of-sync": bool(status.get("bookings_out_of_sync")),
        "live-listeners": listeners == [],
    }
    inner = "".join(
        f'<a class="card{" bad" if bad.get(key) else ""}" href="#{anchor}"><span class="muted">{label}</span>'
        f'<b id="{key}">{escape(str(value))}</b></a>'
        for key, label, value, anchor in cards
    )
    return f'<section id="cards"><div class="cards">{inner}</div></section>'


def _listeners(listeners: list[dict[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{escape(str(x['host']))}</td><td>{escape(str(x['pid']))}</td>"
        f"<td>{escape(str(x['started_at'])[:19])}</td>"
        f'<td class="{"ok" if float(x["heartbeat_age_s"]) < 60 else "warn"}">{escape(str(x["heartbeat_age_s"]))}s</td>'
        f"<td>{escape(str(x['events_handled']))}</td><td>{'idle' if x['waiting'] else 'busy'}</td></tr>"
        for x in listeners
    )
    if not rows:
        rows = '<tr><td colspan="6" class="warn">no live listener</td></tr>'
    return (
        '<section id="listeners-section"><h2>Listeners</h2><table id="listeners"><tr><th>host</th><th>pid</th>'
        f"<th>started</th><th>heartbeat age</th><th>events</th><th>state</th></tr>{rows}</table></section>"
    )


def _chart(lag: list[dict[str, Any]], *, now: datetime) -> str:
    """Events per minute as bars, p50 and p99 commit-to-charge lag as marked lines, over the last hour."""
    # Drawn in these units and scaled to the card's width by the browser (viewBox, width 100%).
    width, height, left, right, top, bottom = 1100, 250, 56, 64, 30, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    base = top + plot_h
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=LAG_MINUTES - 1)
    slots: dict[int, dict[str, Any]] = {}
    for row in lag:
        index = int((row["minute"] - start).total_seconds() // 60)
        if 0 <= index < LAG_MINUTES:
            slots[index] = row
    max_events = max((int(r["events"]) for r in slots.values()), default=0) or 1
    max_lag = max((float(r["lag_p99_s"] or 0) for r in slots.values()), default=0.0) or 1.0
    step = plot_w / LAG_MINUTES
    bars: list[str] = []
    lines: dict[str, list[str]] = {"p50": [], "p99": []}
    dots: list[str] = []
    for i, row in sorted(slots.items()):
        h = plot_h * int(row["events"]) / max_events
        x = left + i * step
        p50, p99 = float(row["lag_p50_s"] or 0), float(row["lag_p99_s"] or 0)
        bars.append(
            f'<rect class="bar" x="{x:.1f}" y="{base - h:.1f}" width="{max(step - 2, 1):.1f}" height="{h:.1f}" '
            f'fill="#c7d7f2"><title>{row["minute"]:%H:%M}: {row["events"]} events, '
            f"lag p50 {p50:.3f}s, p99 {p99:.3f}s</title></rect>"
        )
        cx = x + step / 2
        for name, value, colour in (("p50", p50, _P50), ("p99", p99, _P99)):
            cy = base - plot_h * value / max_lag
            lines[name].append(f"{cx:.1f},{cy:.1f}")
            dots.append(f'<circle class="{name}" cx="{cx:.1f}" cy="{cy:.1f}" r="2.5" fill="{colour}"/>')
    grid = "".join(
        f'<line x1="{left}" y1="{base - plot_h * f:.1f}" x2="{left + plot_w}" y2="{base - plot_h * f:.1f}" '
        f'stroke="#e3e7ee" stroke-dasharray="3 3"/>'
        f'<text x="{left + plot_w + 6}" y="{base - plot_h * f + 4:.1f}" font-size="11" fill="{_P99}">'
        f"{max_lag * f:.2f}s</text>"
        for f in (0.5, 1.0)
    )
    ticks = "".join(
        f'<text x="{left + plot_w * (LAG_MINUTES - m) / LAG_MINUTES:.1f}" y="{height - 8}" font-size="11" '
        f'fill="#555" text-anchor="middle">{"now" if m == 0 else f"-{m} min"}</text>'
        for m in (45, 30, 15, 0)
    )
    legend = (
        f'<g font-size="12" fill="#333"><rect x="{left}" y="8" width="12" height="10" fill="#c7d7f2"/>'
        f'<text x="{left + 16}" y="17">events per minute</text>'
        f'<line x1="{left + 150}" y1="13" x2="{left + 172}" y2="13" stroke="{_P50}" stroke-width="2"/>'
        f'<circle cx="{left + 161}" cy="13" r="3" fill="{_P50}"/><text x="{left + 178}" y="17">p50 lag</text>'
        f'<line x1="{left + 240}" y1="13" x2="{left + 262}" y2="13" stroke="{_P99}" stroke-width="2"/>'
        f'<circle cx="{left + 251}" cy="13" r="3" fill="{_P99}"/><text x="{left + 268}" y="17">p99 lag</text></g>'
    )
    total = sum(int(r["events"]) for r in slots.values())
    svg = (
        f'<svg id="lag-chart" viewBox="0 0 {width} {height}" style="width:100%;height:auto;display:block" '
        'role="img" aria-label="commit-to-charge lag and throughput, last hour" '
        'xmlns="http://www.w3.org/2000/svg">'
        f"{legend}{grid}"
        f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="#999"/>'
        f"{''.join(bars)}"
        f'<polyline points="{" ".join(lines["p50"])}" fill="none" stroke="{_P50}" stroke-width="1.5"/>'
        f'<polyline points="{" ".join(lines["p99"])}" fill="none" stroke="{_P99}" stroke-width="1.5"/>'
        f"{''.join(dots)}"
        f'<text x="{left - 6}" y="{top + 4}" font-size="11" fill="#555" text-anchor="end">{max_events}/min</text>'
        f'<text x="{left - 6}" y="{base + 4}" font-size="11" fill="#555" text-anchor="end">0</text>'
        f'<text x="{left}" y="{height - 8}" font-size="11" fill="#555">{start:%H:%M}</text>'
        f"{ticks}</svg>"
    )
    return (
        '<section id="lag-section"><h2>Commit-to-charge lag and throughput, last hour</h2>'
        f'<p class="muted">bars: events charged per minute ({total} in all) · '
        f'<span style="color:{_P50}">p50</span> and <span style="color:{_P99}">p99</span> lag '
        "from enqueue to archive, per minute, on the right-hand scale</p>"
        f"{svg}</section>"
    )


def _outcomes(outcomes: dict[str, Any], data: DashboardData, refresh: bool) -> str:
    head = "".join(f"<th>{escape(k)}</th>" for k in outcomes)
    cells = "".join(f'<td id="outcome-{escape(k)}">{escape(str(v))}</td>' for k, v in outcomes.items())
    rows = "".join(
        f'<tr><td class="when">{escape(str(r["updated_at"])[:19])}</td>'
        f'<td class="id">{_booking_link(r["booking_id"])}</td>'
        f"<td>{_client(data.names, data.names.client_of(r['booking_id'], r['purchase_id']))}</td>"
        f"<td>{_pack(data.names, r['purchase_id'], refresh)}</td>"
        f"<td>{escape(str(r['state']))}</td><td>{escape(str(r['reason'] or ''))}</td>"
        f"<td>{escape(str(r['source']))}</td>"
        f'<td class="caused-by">{_caused_by(r["by_role"], r["by_uid"], r["trace"], r.get("by_login"))}</td></tr>'
        for r in data.recent
    )
    if not rows:
        rows = '<tr><td colspan="8">none</td></tr>'
    pager = []
    if data.before is not None:
        pager.append(f'<a id="newest" href="{escape(_href("/", refresh))}#recent-section">← newest</a>')
    if data.older is not None:
        older = _href("/", refresh, before=data.older.token())
        pager.append(f'<a id="older" href="{escape(older)}#recent-section">older →</a>')
    where = (
        f"changes before {data.before.updated_at:%Y-%m-%d %H:%M:%S} UTC"
        if data.before is not None
        else "the newest changes"
    )
    return (
        '<section id="recent-section"><h2>Outcomes (all listeners)</h2>'
        f'<table id="outcomes"><tr>{head}</tr><tr>{cells}</tr></table>'
        '<h2 style="margin-top:12px">Recent ledger changes</h2>'
        f'<p class="muted">{where}, {len(data.recent)} on this page; caused by: the role, signed-in user '
        "and trace of the booking write (or operator command) behind each row's last change</p>"
        '<table id="recent"><tr><th>when (UTC)</th><th>booking</th><th>client</th><th>pack</th><th>state</th>'
        "<th>reason</th>"
        f"<th>source</th><th>caused by</th></tr>{rows}</table>"
        f'<p class="pager">{"".join(pager)}</p></section>'
    )


def _dead_letters(letters: list[dict[str, Any]], status: dict[str, Any]) -> str:
    rows = "".join(
        f'<tr><td><input type="checkbox" name="id" value="{d["msg_id"]}" aria-label="select {d["msg_id"]}"></td>'
        f"<td>{d['msg_id']}</td><td>{escape(str(d['enqueued_at'])[:19])}</td>"
        f'<td class="reason">{escape(str(d["reason"]))}</td>'
        f"<td><pre>{escape(_payload(d['payload']))}</pre></td></tr>"
        for d in letters
    )
    reasons = "".join(
        f"<li>{escape(str(r['reason']))}: {escape(str(r['count']))}</li>"
        for r in status.get("dead_letter_reasons") or []
    )
    if not rows:
        return '<section id="dead-letters-section"><h2>Dead letters</h2><p id="no-dead-letters">none</p></section>'
    return (
        f'<section id="dead-letters-section"><h2>Dead letters</h2><ul>{reasons}</ul>'
        '<form method="get" action="/redrive"><table id="dead-letter-table"><tr><th></th><th>id</th>'
        f"<th>enqueued</th><th>reason</th><th>payload</th></tr>{rows}</table>"
        '<p><button type="submit" id="redrive">Redrive selected…</button> '
        '<button type="submit" id="discard" formaction="/discard">Discard selected…</button> '
        '<span class="muted">each asks for confirmation first; the ids are the ones '
        "<code>listener replay --dead-letter --id</code> and <code>listener discard --dead-letter --id</code> "
        "take</span></p></form></section>"
    )


def _unfunded(unfunded: list[dict[str, Any]], status: dict[str, Any], names: Names, refresh: bool) -> str:
    reasons = "".join(
        f"<li>{escape(str(r['reason']))}: {escape(str(r['count']))}</li>"
        for r in status.get("unfunded_reasons") or []
    )
    rows = "".join(
        f'<tr><td class="id">{_booking_link(u["booking_id"])}</td>'
        f"<td>{_client(names, names.client_of(u['booking_id'], u['purchase_id']))}</td>"
        f"<td>{_pack(names, u['purchase_id'], refresh)}</td>"
        f"<td>{escape(str(u['reason'] or ''))}</td><td>{escape(str(u['updated_at'])[:19])}</td></tr>"
        for u in unfunded
    )
    return (
        f'<section id="unfunded-section"><h2>Unfunded bookings</h2><ul>{reasons}</ul>'
        '<table id="unfunded-table"><tr><th>booking</th><th>client</th><th>pack</th><th>reason</th>'
        f"<th>since</th></tr>{rows or '<tr><td colspan=5>none</td></tr>'}</table></section>"
    )


def _out_of_sync(rows: list[dict[str, Any]], status: dict[str, Any], names: Names, refresh: bool) -> str:
    body = "".join(
        f'<tr><td class="id">{_booking_link(r["booking_id"])}</td>'
        f"<td>{_client(names, names.client_of(r['booking_id'], r['booking_purchase_id'] or r['ledger_purchase_id']))}</td>"
        f"<td>{escape(str(r['booking_status']))}</td>"
        f"<td>{_pack(names, r['booking_purchase_id'], refresh)}</td><td>{escape(str(r['ledger_state']))}</td>"
        f"<td>{_pack(names, r['ledger_purchase_id'], refresh)}</td>"
        f'<td><a href="/replay?booking={escape(str(r["booking_id"]))}">replay…</a></td></tr>'
        for r in rows
    )
    return (
        '<section id="out-of-sync-section"><h2>Bookings out of sync</h2>'
        '<p class="muted">repair all with <code>listener reconcile --dry-run</code>, then without it</p>'
        '<table id="out-of-sync-table"><tr><th>booking</th><th>client</th><th>status</th><th>booking pack</th>'
        f"<th>ledger</th><th>ledger pack</th><th></th></tr>{body or '<tr><td colspan=7>none</td></tr>'}"
        "</table></section>"
    )


def _replay_form() -> str:
    return (
        '<section id="replay-section"><h2>Replay one booking</h2>'
        '<form method="get" action="/replay"><input name="booking" size="40" placeholder="booking id" '
        'required> <button type="submit" id="replay">Replay…</button> '
        '<span class="muted">asks for confirmation first</span></form></section>'
    )


def _legacy_calls(
    legacy: dict[str, Any], absorbed: list[dict[str, Any]], names: Names, refresh: bool, *, now: datetime
) -> str:
    """The app's old use_session / release_session calls: whether they are absorbed, how many, and the latest."""
    if not legacy:
        return '<section id="legacy-section"><h2>Legacy calls</h2><p>not known yet</p></section>'
    absorbing = bool(legacy.get("absorbing"))
    window = escape(str(legacy.get("window_s")))
    kinds = legacy.get("absorbed_by_kind") or {}
    facts = (
        (
            "absorbing",
            f'<b id="legacy-absorbing" class="ok">on</b> <span class="muted">within {window}s of the write</span>'
            if absorbing
            else '<b id="legacy-absorbing" class="warn">off</b>',
        ),
        (
            "absorbed",
            f'<b id="legacy-absorbed-total">{escape(str(legacy.get("absorbed", 0)))}</b> <span class="muted">'
            f'(<b id="legacy-absorbed-hour">{escape(str(legacy.get("absorbed_last_hour", 0)))}</b> '
            "in the last hour)</span>",
        ),
        (
            "absorbed by kind",
            f'<b id="legacy-absorbed-use">{escape(str(kinds.get("use", 0)))}</b> use_session, '
            f'<b id="legacy-absorbed-release">{escape(str(kinds.get("release", 0)))}</b> release_session',
        ),
        (
            "since the new app",
            f'<b id="legacy-since-deployed">{escape(str(legacy.get("absorbed_since_app_deployed", 0)))}</b> '
            f'<span class="muted">(deployed {_when(legacy.get("app_deployed_at"), now)})</span>'
            if legacy.get("app_deployed_at")
            else '<span class="muted">not recorded: <code>listener app-deployed</code></span>',
        ),
        ("legacy calls", f'<b id="legacy-calls">{escape(str(legacy.get("legacy_calls", 0)))}</b>'),
        ("last legacy call", f'<b id="legacy-last-call">{_when(legacy.get("last_legacy_call_at"), now)}</b>'),
        ("last absorbed", f'<b id="legacy-last-absorbed">{_when(legacy.get("last_absorbed_at"), now)}</b>'),
        ("manual adjustments", f'<b id="manual-calls">{escape(str(legacy.get("manual_calls", 0)))}</b>'),
    )
    facts_html = "".join(
        f'<div><span class="muted">{label}</span><br>{value}</div>' for label, value in facts
    )
    rows = "".join(
        f'<tr><td class="when">{escape(str(a["called_at"])[:19])}</td>'
        f"<td><code>{'use_session' if a['kind'] == 'use' else 'release_session'}</code></td>"
        f"<td>{_pack(names, a['purchase_id'], refresh)}</td>"
        f'<td class="id">{_booking_link(a["booking_id"])}</td>'
        f'<td class="caused-by">{_caused_by(a["by_role"], a["by_uid"], a["trace"], a.get("by_login"))}</td></tr>'
        for a in absorbed
    )
    return (
        '<section id="legacy-section"><h2>Legacy calls: the app\'s old use_session and release_session</h2>'
        f'<div class="facts">{facts_html}</div>'
        '<p class="muted">A call of <code>use_session(pack)</code> or <code>release_session(pack)</code> by the '
        "same role and user, on the same pack, just after a booking write the ledger already charges or releases, "
        "is absorbed instead of moving the pack a second time. Once no legacy call comes after the app is "
        "redeployed, the old code is gone: "
        "<code>UPDATE session_ledger.config SET absorb_legacy_calls = false</code>.</p>"
        '<table id="absorbed-table"><tr><th>when (UTC)</th><th>call</th><th>pack</th>'
        f"<th>booking it echoed</th><th>by</th></tr>{rows or '<tr><td colspan=5>none</td></tr>'}"
        "</table></section>"
    )


# The login PostgREST connects as: only its requests carry claims a JWT was checked for.
API_LOGIN = "authenticator"


def _caused_by(role: str | None, uid: str | None, trace: str | None, login: str | None = None) -> str:
    """Who caused a change: role, then the signed-in user and the trace id shortened, each whole in its title.

    A user that came through any login but the API's is that login's claim, and is shown as one.
    """
    if not (role or uid or trace):
        return '<span class="muted">unknown</span>'
    parts = [escape(role or "?")]
    if uid:
        parts.append(f'<code class="uid" title="user {escape(uid)}">{escape(uid[:_SHORT_ID])}</code>')
        if login and login != API_LOGIN:
            parts.append(
                f'<span class="claim" title="set by login {escape(login)}, not a checked JWT">'
                f"claimed by {escape(login)}</span>"
            )
    if trace:
        match = _TRACEPARENT.match(trace)
        trace_id = match["trace"] if match else trace
        parts.append(
            f'<code class="trace" title="traceparent {escape(trace)}">trace {escape(trace_id[:_SHORT_ID])}</code>'
        )
    return " ".join(parts)


def _when(value: object, now: datetime) -> str:
    """A timestamp from status() as UTC to the second, with how long ago; "never" when there is none."""
    if value is None:
        return "never"
    try:
        at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return escape(str(value))
    ago = max((now - at).total_seconds(), 0.0)
    if ago < 120:
        age = f"{ago:.0f}s"
    elif ago < 7200:
        age = f"{ago / 60:.0f} min"
    elif ago < 172800:
        age = f"{ago / 3600:.0f} h"
    else:
        age = f"{ago / 86400:.0f} days"
    return f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S}, {age} ago"


def _nonce(nonce: str) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(nonce)}">'


def _payload(payload: Any) -> str:
    text = json.dumps(payload, ensure_ascii=False, default=str)
    return text if len(text) <= _PAYLOAD_CHARS else text[:_PAYLOAD_CHARS] + "…"
