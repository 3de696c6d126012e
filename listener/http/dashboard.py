"""The operator dashboard's HTML: server-rendered, no script, no external asset, so it works offline."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from listener.http.dashboard_store import LAG_MINUTES, DashboardData

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
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:22px}
.bad b{color:#b3261e}.ok{color:#1b7f3b}.warn{color:#b3261e}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eceff3;vertical-align:top}
pre{margin:0;white-space:pre-wrap;word-break:break-all;max-width:520px;font-size:12px}
button{padding:4px 12px}.muted{color:#6b7280}
"""

_PAYLOAD_CHARS = 400


def render_page(data: DashboardData, *, ready: bool, listener_id: str, notice: str = "") -> str:
    """The whole dashboard."""
    status = data.status or {}
    now = datetime.now(UTC)
    header = _header(ready=ready, database=data.status is not None, listener_id=listener_id, now=now)
    parts = []
    if notice:
        parts.append(f'<section id="notice"><b>{escape(notice)}</b></section>')
    parts.append(_cards(status))
    parts.append(_listeners(status.get("listeners") or []))
    parts.append(_chart(data.lag, now=now))
    parts.append(_outcomes(status.get("outcomes") or {}, data.recent))
    parts.append(_dead_letters(data.dead_letters, status))
    parts.append(_unfunded(data.unfunded, status))
    parts.append(_out_of_sync(data.out_of_sync, status))
    parts.append(_replay_form())
    return _document("session ledger", "".join(parts), header=header)


def render_redrive_confirm(letters: list[dict[str, Any]], *, nonce: str) -> str:
    """The confirm step before dead letters go back onto the queue."""
    if not letters:
        body = '<section><p>None of the selected dead letters is still waiting.</p><a href="/">back</a></section>'
        return _document("redrive dead letters", body)
    rows = "".join(
        f"<tr><td>{d['msg_id']}</td><td>{escape(str(d['reason']))}</td>"
        f"<td><pre>{escape(_payload(d['payload']))}</pre></td></tr>"
        for d in letters
    )
    hidden = "".join(f'<input type="hidden" name="id" value="{d["msg_id"]}">' for d in letters)
    body = (
        f"<section><h2>Redrive {len(letters)} dead letter(s)?</h2>"
        "<p>Each goes back onto the queue with its original payload; the dead letter is archived. "
        "Same as <code>listener replay --dead-letter --id ...</code>.</p>"
        f"<table><tr><th>id</th><th>reason</th><th>payload</th></tr>{rows}</table>"
        f'<form method="post" action="/redrive">{hidden}{_nonce(nonce)}'
        '<input type="hidden" name="confirm" value="yes">'
        f'<p><button type="submit" id="confirm-redrive">Redrive {len(letters)}</button> '
        '<a href="/">cancel</a></p></form></section>'
    )
    return _document("redrive dead letters", body)


def render_replay_confirm(booking: str, sync_row: dict[str, Any] | None, *, nonce: str) -> str:
    """The confirm step before one booking is enqueued again."""
    state = (
        "<p>This booking is out of sync: booking status "
        f"{escape(str(sync_row['booking_status']))}, ledger {escape(str(sync_row['ledger_state']))}.</p>"
        if sync_row
        else "<p>This booking is not out of sync; replaying it changes nothing unless its row changed.</p>"
    )
    body = (
        f"<section><h2>Replay booking {escape(booking)}?</h2>{state}"
        "<p>An event goes onto the queue as the trigger would send it; the listener converges the "
        "booking's charge to its current row.</p>"
        f'<form method="post" action="/replay"><input type="hidden" name="booking" value="{escape(booking)}">'
        f'{_nonce(nonce)}<input type="hidden" name="confirm" value="yes">'
        '<p><button type="submit" id="confirm-replay">Replay</button> <a href="/">cancel</a></p>'
        "</form></section>"
    )
    return _document("replay booking", body)


def render_message(title: str, text: str) -> str:
    """A short page: an action's result, or why a request was refused."""
    return _document(title, f'<section><p id="message">{escape(text)}</p><a href="/">back</a></section>')


def _document(title: str, body: str, *, header: str = "") -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        f"{header}<main>{body}</main></body></html>"
    )


def _header(*, ready: bool, database: bool, listener_id: str, now: datetime) -> str:
    state = '<span class="ok">ready</span>' if ready else '<span class="warn">not ready</span>'
    db = "" if database else ' <span class="warn">database unreadable</span>'
    return (
        f'<header><h1>session ledger</h1><span id="readiness">{state}</span>{db}'
        f'<span class="muted">listener {escape(listener_id)} · {now:%Y-%m-%d %H:%M:%S} UTC</span>'
        '<a href="/" style="color:#9cc3ff">refresh</a></header>'
    )


def _cards(status: dict[str, Any]) -> str:
    age = status.get("oldest_event_age_s")
    cards = (
        ("queue-depth", "queue depth", status.get("queue_depth", "-"), False),
        ("queue-in-flight", "in flight", status.get("queue_in_flight", "-"), False),
        ("oldest-age", "oldest event", "-" if age is None else f"{float(age):.1f}s", False),
        (
            "dead-letters",
            "dead letters",
            status.get("dead_letter_depth", "-"),
            bool(status.get("dead_letter_depth")),
        ),
        ("paid", "paid bookings", status.get("paid_bookings", "-"), False),
        ("unfunded", "unfunded", status.get("unfunded_bookings", "-"), bool(status.get("unfunded_bookings"))),
        (
            "out-of-sync",
            "out of sync",
            status.get("bookings_out_of_sync", "-"),
            bool(status.get("bookings_out_of_sync")),
        ),
    )
    inner = "".join(
        f'<div class="card{" bad" if bad else ""}"><span class="muted">{label}</span>'
        f'<b id="{key}">{escape(str(value))}</b></div>'
        for key, label, value, bad in cards
    )
    return f'<section><div class="cards">{inner}</div></section>'


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
        '<section><h2>Listeners</h2><table id="listeners"><tr><th>host</th><th>pid</th><th>started</th>'
        f"<th>heartbeat age</th><th>events</th><th>state</th></tr>{rows}</table></section>"
    )


def _chart(lag: list[dict[str, Any]], *, now: datetime) -> str:
    """Events per minute as bars, p50 and p99 commit-to-charge lag as lines, over the last hour."""
    width, height, left, bottom, top = 720, 200, 48, 24, 12
    plot_w, plot_h = width - left - 48, height - bottom - top
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=LAG_MINUTES - 1)
    slots: dict[int, dict[str, Any]] = {}
    for row in lag:
        index = int((row["minute"] - start).total_seconds() // 60)
        if 0 <= index < LAG_MINUTES:
            slots[index] = row
    max_events = max((int(r["events"]) for r in slots.values()), default=0) or 1
    max_lag = max((float(r["lag_p99_s"] or 0) for r in slots.values()), default=0.0) or 1.0
    step = plot_w / LAG_MINUTES
    bars = []
    p50: list[str] = []
    p99: list[str] = []
    dots: list[str] = []
    for i, row in sorted(slots.items()):
        h = plot_h * int(row["events"]) / max_events
        x = left + i * step
        bars.append(
            f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{max(step - 1, 1):.1f}" height="{h:.1f}" '
            f'fill="#c7d7f2"><title>{row["minute"]:%H:%M}: {row["events"]} events, '
            f"p99 lag {float(row['lag_p99_s'] or 0):.3f}s</title></rect>"
        )
        cx = x + step / 2
        p50.append(f"{cx:.1f},{top + plot_h - plot_h * float(row['lag_p50_s'] or 0) / max_lag:.1f}")
        y99 = top + plot_h - plot_h * float(row["lag_p99_s"] or 0) / max_lag
        p99.append(f"{cx:.1f},{y99:.1f}")
        dots.append(f'<circle cx="{cx:.1f}" cy="{y99:.1f}" r="2" fill="#b3261e"/>')
    total = sum(int(r["events"]) for r in slots.values())
    svg = (
        f'<svg id="lag-chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        'aria-label="commit-to-charge lag and throughput, last hour" xmlns="http://www.w3.org/2000/svg">'
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#999"/>'
        f"{''.join(bars)}"
        f'<polyline points="{" ".join(p50)}" fill="none" stroke="#1b7f3b" stroke-width="1.5"/>'
        f'<polyline points="{" ".join(p99)}" fill="none" stroke="#b3261e" stroke-width="1.5"/>'
        f"{''.join(dots)}"
        f'<text x="4" y="{top + 10}" font-size="11" fill="#555">{max_events}/min</text>'
        f'<text x="{left + plot_w + 4}" y="{top + 10}" font-size="11" fill="#b3261e">{max_lag:.2f}s</text>'
        f'<text x="{left}" y="{height - 6}" font-size="11" fill="#555">{start:%H:%M}</text>'
        f'<text x="{left + plot_w - 30}" y="{height - 6}" font-size="11" fill="#555">{now:%H:%M}</text>'
        "</svg>"
    )
    return (
        "<section><h2>Commit-to-charge lag and throughput, last hour</h2>"
        f'<p class="muted">bars: events charged per minute ({total} in all) · '
        '<span style="color:#1b7f3b">p50</span> and <span style="color:#b3261e">p99</span> lag '
        "from enqueue to archive</p>"
        f"{svg}</section>"
    )


def _outcomes(outcomes: dict[str, Any], recent: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{escape(k)}</th>" for k in outcomes)
    cells = "".join(f'<td id="outcome-{escape(k)}">{escape(str(v))}</td>' for k, v in outcomes.items())
    rows = "".join(
        f"<tr><td>{escape(str(r['updated_at'])[:19])}</td><td>{escape(str(r['booking_id']))}</td>"
        f"<td>{escape(str(r['state']))}</td><td>{escape(str(r['reason'] or ''))}</td>"
        f"<td>{escape(str(r['source']))}</td></tr>"
        for r in recent
    )
    return (
        "<section><h2>Outcomes (all listeners)</h2>"
        f'<table id="outcomes"><tr>{head}</tr><tr>{cells}</tr></table>'
        '<h2 style="margin-top:12px">Recent ledger changes</h2>'
        '<table id="recent"><tr><th>when (UTC)</th><th>booking</th><th>state</th><th>reason</th>'
        f"<th>source</th></tr>{rows}</table></section>"
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
        return '<section><h2>Dead letters</h2><p id="no-dead-letters">none</p></section>'
    return (
        f"<section><h2>Dead letters</h2><ul>{reasons}</ul>"
        '<form method="get" action="/redrive"><table id="dead-letter-table"><tr><th></th><th>id</th>'
        f"<th>enqueued</th><th>reason</th><th>payload</th></tr>{rows}</table>"
        '<p><button type="submit" id="redrive">Redrive selected…</button> '
        '<span class="muted">asks for confirmation first</span></p></form></section>'
    )


def _unfunded(unfunded: list[dict[str, Any]], status: dict[str, Any]) -> str:
    reasons = "".join(
        f"<li>{escape(str(r['reason']))}: {escape(str(r['count']))}</li>"
        for r in status.get("unfunded_reasons") or []
    )
    rows = "".join(
        f"<tr><td>{escape(str(u['booking_id']))}</td><td>{escape(str(u['purchase_id']))}</td>"
        f"<td>{escape(str(u['reason'] or ''))}</td><td>{escape(str(u['updated_at'])[:19])}</td></tr>"
        for u in unfunded
    )
    return (
        f"<section><h2>Unfunded bookings</h2><ul>{reasons}</ul>"
        '<table id="unfunded-table"><tr><th>booking</th><th>pack</th><th>reason</th><th>since</th></tr>'
        f"{rows or '<tr><td colspan=4>none</td></tr>'}</table></section>"
    )


def _out_of_sync(rows: list[dict[str, Any]], status: dict[str, Any]) -> str:
    body = "".join(
        f"<tr><td>{escape(str(r['booking_id']))}</td><td>{escape(str(r['booking_status']))}</td>"
        f"<td>{escape(str(r['booking_purchase_id']))}</td><td>{escape(str(r['ledger_state']))}</td>"
        f"<td>{escape(str(r['ledger_purchase_id']))}</td>"
        f'<td><a href="/replay?booking={escape(str(r["booking_id"]))}">replay…</a></td></tr>'
        for r in rows
    )
    return (
        "<section><h2>Bookings out of sync</h2>"
        '<p class="muted">repair all with <code>listener reconcile --dry-run</code>, then without it</p>'
        '<table id="out-of-sync-table"><tr><th>booking</th><th>status</th><th>booking pack</th>'
        f"<th>ledger</th><th>ledger pack</th><th></th></tr>{body or '<tr><td colspan=6>none</td></tr>'}"
        "</table></section>"
    )


def _replay_form() -> str:
    return (
        "<section><h2>Replay one booking</h2>"
        '<form method="get" action="/replay"><input name="booking" size="40" placeholder="booking id (UUID)" '
        'required> <button type="submit" id="replay">Replay…</button> '
        '<span class="muted">asks for confirmation first</span></form></section>'
    )


def _nonce(nonce: str) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(nonce)}">'


def _payload(payload: Any) -> str:
    text = json.dumps(payload, ensure_ascii=False, default=str)
    return text if len(text) <= _PAYLOAD_CHARS else text[:_PAYLOAD_CHARS] + "…"
