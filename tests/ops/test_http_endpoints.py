"""The HTTP port: bind address, one metrics connection, the gauges, and the dashboard's auth and actions."""

from __future__ import annotations

import re
import time
import urllib.parse
import uuid

import psycopg
import pytest

from listener.core.db import connect
from listener.http import snapshot as snapshot_module
from listener.http.snapshot import DEPTHS_EVERY_S, STATUS_EVERY_S, Snapshot
from listener.settings import Settings

from support.http import (
    ListenerProcess,
    metric,
    request,
    running,
)
from support.roles import listener_login
from support.world import World, run_cli

# The slow tier: every case a CLI subprocess, a promtool run, or an embedded or HTTP server of its own.
pytestmark = pytest.mark.slow

TOKEN = "s3cret-dashboard-token-" + uuid.uuid4().hex
# Every poll below ends as soon as its condition holds; the deadline only bounds a failure,
# so it is generous enough for a loaded two-core machine.
WAIT_S = 60.0
# Every page of the dashboard, each behind the token.
DASHBOARD_GETS = (
    "/",
    "/redrive?id=1",
    "/discard?id=1",
    "/replay?booking=" + str(uuid.uuid4()),
    "/pack?id=" + str(uuid.uuid4()),
    "/search?q=anyone",
)


def _metrics_backends(dsn: str) -> int:
    with connect(dsn, purpose="tests") as conn:
        row = conn.execute(
            "SELECT count(*) AS n FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'session-ledger metrics'"
        ).fetchone()
    assert row is not None
    return int(row["n"])


def _listener_backends(dsn: str) -> dict[str, int]:
    with connect(dsn, purpose="tests") as conn:
        rows = conn.execute(
            "SELECT application_name AS app, count(*) AS n FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'session-ledger %'"
            " AND application_name <> 'session-ledger tests' GROUP BY 1"
        ).fetchall()
    return {r["app"]: int(r["n"]) for r in rows}


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on this port, from /proc/net/tcp."""
    found = set()
    with open("/proc/net/tcp", encoding="ascii") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


def test_http_port_binds_loopback_by_default_and_http_host_moves_it(world: World) -> None:
    assert Settings().http_host == "127.0.0.1"
    with running(world.ledger.dsn) as proc:
        assert _listening_addresses(proc.port) == {"127.0.0.1"}
    with running(world.ledger.dsn, host="127.0.0.2", extra=("--http-host", "127.0.0.2")) as proc:
        assert _listening_addresses(proc.port) == {"127.0.0.2"}
        assert request(f"{proc.base}/readyz").status == 200


def test_scrapes_share_one_long_lived_connection_that_reconnects(world: World) -> None:
    with running(world.ledger.dsn) as proc:
        counts = set()
        for i in range(50):
            for path in ("/metrics", "/healthz", "/readyz"):
                assert request(f"{proc.base}{path}").status == 200
            if i % 10 == 0:
                counts.add(_metrics_backends(world.ledger.dsn))
        counts.add(_metrics_backends(world.ledger.dsn))
        assert counts == {1}, counts

        # Losing the connection: the next reads reconnect, still with one backend.
        world.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'session-ledger metrics'"
        )
        deadline = time.monotonic() + WAIT_S
        while True:
            time.sleep(0.3)
            text = request(f"{proc.base}/metrics").body
            if metric(text, "session_ledger_database_up") == 1.0 and _metrics_backends(world.ledger.dsn) == 1:
                break
            assert time.monotonic() < deadline, "the metrics connection never came back"
        assert "session_ledger_queue_depth 0.0" in text
        proc.stop()


def test_gauges_follow_session_ledger_status(world: World) -> None:
    pack = world.pack(sessions_total=1)
    paid, unfunded = world.bookings(pack, count=2)
    with running(world.ledger.dsn) as proc:
        world.set_status(paid, "completed")
        world.ledger.drain(listener_running=True)
        world.set_status(unfunded, "completed")
        world.send_raw("'\"not an event\"'::jsonb")
        world.ledger.drain(listener_running=True)
        # A ledger row the booking no longer matches: out of sync until reconciled.
        world.conn.execute("DELETE FROM session_ledger.charges WHERE booking_id = %s", [paid])
        status = world.conn.execute("SELECT session_ledger.status() AS s").fetchone()["s"]  # type: ignore[index]
        deadline = time.monotonic() + WAIT_S  # status() is re-read every 15 s at most
        while True:
            text = request(f"{proc.base}/metrics").body
            # The listener counts a batch a moment after the commit that emptied the queue.
            counted = all(
                f'session_ledger_events_total{{outcome="{outcome}"}} 1.0' in text
                for outcome in ("unfunded", "dead-lettered")
            )
            if (
                counted
                and metric(text, "session_ledger_bookings_out_of_sync") == status["bookings_out_of_sync"]
            ):
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.5)
        assert status["bookings_out_of_sync"] == 1
        assert metric(text, "session_ledger_unfunded_bookings") == status["unfunded_bookings"] == 1
        assert metric(text, "session_ledger_paid_bookings") == status["paid_bookings"] == 0
        assert metric(text, "session_ledger_dead_letter_depth") == status["dead_letter_depth"] == 1
        assert metric(text, "session_ledger_live_listeners") == 1
        assert metric(text, "session_ledger_ready") == 1
        assert metric(text, "session_ledger_queue_depth") == 0
        [reason] = status["dead_letter_reasons"]
        assert f'session_ledger_dead_letters_by_reason{{reason="{reason["reason"]}"}} 1.0' in text
        assert 'session_ledger_events_total{outcome="unfunded"} 1.0' in text
        assert 'session_ledger_events_total{outcome="dead-lettered"} 1.0' in text
        proc.stop()


def test_dashboard_is_not_served_without_a_token(world: World) -> None:
    with running(world.ledger.dsn) as proc:
        for path in DASHBOARD_GETS:
            assert request(f"{proc.base}{path}").status == 404
            assert request(f"{proc.base}{path}", token="anything").status == 404
        for action in ("/redrive", "/discard"):
            assert request(f"{proc.base}{action}", data=b"id=1&confirm=yes").status == 404
        assert request(f"{proc.base}/metrics").status == 200
        proc.stop()


def test_dashboard_needs_the_token_and_never_logs_it(world: World) -> None:
    proc = ListenerProcess(world.ledger.dsn, token=TOKEN, extra=("--log-format", "json")).wait_ready()
    try:
        for path in DASHBOARD_GETS:
            r = request(f"{proc.base}{path}")
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Basic ")
            assert request(f"{proc.base}{path}", token="wrong").status == 401
            assert request(f"{proc.base}{path}", token=TOKEN[:-1]).status == 401
        for action in ("/redrive", "/discard"):
            assert request(f"{proc.base}{action}", data=b"id=1&confirm=yes").status == 401
        basic = request(f"{proc.base}/", token=TOKEN)
        assert basic.status == 200 and 'id="queue-depth"' in basic.body
        assert "default-src 'none'" in basic.headers["Content-Security-Policy"]
        assert request(f"{proc.base}/", token=TOKEN, bearer=True).status == 200
        # The dashboard reads through the same one connection as the scrapes.
        for _ in range(20):
            assert request(f"{proc.base}/", token=TOKEN).status == 200
        assert _metrics_backends(world.ledger.dsn) == 1
        assert _listener_backends(world.ledger.dsn) == {
            "session-ledger metrics": 1,
            "session-ledger worker": 1,
            "session-ledger wakeup": 1,
        }
        assert request(f"{proc.base}/metrics").status == 200
    finally:
        logs = proc.stop()
    assert "dashboard" in logs
    assert TOKEN not in logs


def _nonce(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def test_redrive_needs_the_confirm_form_of_this_origin(world: World) -> None:
    with listener_login(world.ledger.dsn) as dsn, running(dsn, token=TOKEN) as proc:
        world.send_raw("'\"not an event\"'::jsonb")
        world.ledger.drain(listener_running=True)
        [letter] = world.dead_letters()
        msg_id = letter["msg_id"]
        page = request(f"{proc.base}/", token=TOKEN).body
        assert f'value="{msg_id}"' in page and str(letter["reason"]) in page

        confirm = request(f"{proc.base}/redrive?id={msg_id}", token=TOKEN)
        assert confirm.status == 200 and 'id="confirm-redrive"' in confirm.body
        nonce = _nonce(confirm.body)
        assert world.dead_letters() != [], "the confirm step changes nothing"

        form = {"id": str(msg_id), "confirm": "yes"}
        host = f"127.0.0.1:{proc.port}"
        refused: tuple[tuple[dict[str, str], dict[str, str]], ...] = (
            ({}, {}),  # no nonce: a forged form with the browser's cached Basic credentials
            ({"csrf": "forged"}, {}),
            ({"csrf": nonce}, {"Origin": "null"}),
            ({"csrf": nonce}, {"Origin": "http://evil.example", "Host": host}),
            ({"csrf": nonce}, {"Sec-Fetch-Site": "cross-site"}),
            ({"csrf": nonce, "confirm": "no"}, {}),
        )
        for extra, headers in refused:
            body = urllib.parse.urlencode({**form, **extra}).encode()
            r = request(f"{proc.base}/redrive", token=TOKEN, data=body, headers=headers)
            assert r.status == 403, (extra, headers)
        assert len(world.dead_letters()) == 1

        body = urllib.parse.urlencode({**form, "csrf": nonce}).encode()
        done = request(f"{proc.base}/redrive", token=TOKEN, data=body, headers={"Origin": f"http://{host}"})
        assert done.status == 200 and "Moved 1 dead letter(s)" in done.body
        # Redriven, read again by the listener, and dead-lettered anew with the same reason.
        deadline = time.monotonic() + WAIT_S
        while not any(d["msg_id"] != msg_id for d in world.dead_letters()):
            assert time.monotonic() < deadline, "the redriven message was never dead-lettered again"
            time.sleep(0.1)
        [again] = world.dead_letters()
        assert again["reason"] == letter["reason"]
        logs = proc.stop()
    assert f"redrove 1 of 1 dead letter(s) [{msg_id}]" in logs
    assert TOKEN not in logs


def test_replay_one_booking_with_a_bearer_client(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    world.set_status(booking, "completed")
    world.drain()
    with listener_login(world.ledger.dsn) as dsn, running(dsn, token=TOKEN) as proc:
        confirm = request(f"{proc.base}/replay?booking={booking}", token=TOKEN)
        assert confirm.status == 200 and "The ledger agrees with this booking" in confirm.body
        assert request(f"{proc.base}/replay?booking=nope", token=TOKEN).status == 400
        body = urllib.parse.urlencode({"booking": str(booking), "confirm": "yes"}).encode()
        r = request(f"{proc.base}/replay", token=TOKEN, bearer=True, data=body)
        assert r.status == 200 and f"Enqueued booking {booking}" in r.body
        world.ledger.drain(listener_running=True)
        # Converged, not charged twice.
        assert world.ledger_state(booking) == ("paid", pack) and world.used(pack) == 1
        logs = proc.stop()
    assert f"replayed booking {booking}" in logs
    archived = world.conn.execute(
        "SELECT count(*) AS n FROM pgmq.a_booking_events WHERE message ->> 'source' = 'dashboard'"
    ).fetchone()
    assert archived is not None and archived["n"] == 1


def test_dashboard_functions_are_definer_pinned_and_for_the_listener_only(world: World) -> None:
    rows = world.conn.execute(
        """SELECT p.oid::regprocedure::text AS fn, p.prosecdef, p.proconfig,
                  has_function_privilege('session_ledger_listener', p.oid, 'EXECUTE') AS listener,
                  has_function_privilege('anon', p.oid, 'EXECUTE') AS anon,
                  has_function_privilege('authenticated', p.oid, 'EXECUTE') AS authenticated,
                  has_function_privilege('service_role', p.oid, 'EXECUTE') AS service_role,
                  coalesce(array_to_string(p.proacl, ','), '') AS acl
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname = 'session_ledger' AND p.proname LIKE 'dashboard%'"""
    ).fetchall()
    assert len(rows) == 16
    for r in rows:
        assert r["prosecdef"] and r["proconfig"] == ["search_path=pg_catalog, pg_temp"], r
        assert r["listener"] and not (r["anon"] or r["authenticated"] or r["service_role"]), r
        assert not re.search(r"(^|,)=X", r["acl"]), f"PUBLIC may execute {r['fn']}"
    with connect(world.ledger.dsn) as conn:
        conn.execute("SET ROLE authenticated")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM session_ledger.dashboard_dead_letters(10)")


def test_run_http_host_flag_parses_and_bad_port_is_one_line(ledger_dsn: str) -> None:
    from listener.cli.main import build_parser

    args = build_parser().parse_args(["run", "--http-port", "0", "--http-host", "::1"])
    assert (args.http_port, args.http_host) == (0, "::1")
    result = run_cli("run", "--dsn", ledger_dsn, "--http-port", "99999")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "http_port" in result.stderr


class _Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        """The time the test has set."""
        return self.now


def test_snapshot_reads_at_most_once_a_second_and_status_less_often(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The snapshot's clock is the test's: what is read again depends on the ages the test sets,
    # never on how long this machine took between two calls.
    clock = _Clock()
    monkeypatch.setattr(snapshot_module, "time", clock)
    snapshot = Snapshot(world.ledger.dsn)
    try:
        first = snapshot.depths()
        status = snapshot.status()
        assert first is not None and first["queue_depth"] == 0
        assert status is not None and status["queue_depth"] == 0
        world.send_raw('\'{"type": "booking.changed", "v": 1}\'::jsonb')
        clock.now += DEPTHS_EVERY_S / 2
        cached = snapshot.depths()
        assert cached is not None and cached["queue_depth"] == 0, "read again within the second"
        clock.now += DEPTHS_EVERY_S / 2
        fresh = snapshot.depths()
        assert fresh is not None and fresh["queue_depth"] == 1, "not read again after a second"
        later = snapshot.status()
        assert later is not None and later["queue_depth"] == 0, "status() is re-read every STATUS_EVERY_S"
        assert STATUS_EVERY_S > 5
        now = snapshot.status(max_age_s=1.0)
        assert now is not None and now["queue_depth"] == 1
        world.send_raw('\'{"type": "booking.changed", "v": 1}\'::jsonb')
        clock.now += STATUS_EVERY_S - DEPTHS_EVERY_S
        kept = snapshot.status()
        assert kept is not None and kept["queue_depth"] == 1, "read again before STATUS_EVERY_S"
        clock.now += DEPTHS_EVERY_S
        renewed = snapshot.status()
        assert renewed is not None and renewed["queue_depth"] == 2, "not read again after STATUS_EVERY_S"
    finally:
        snapshot.close()
    deadline = time.monotonic() + WAIT_S
    while _metrics_backends(world.ledger.dsn):  # the backend exits a moment after the close
        assert time.monotonic() < deadline, "close() left the connection open"
        time.sleep(0.05)
