"""/metrics of a real listener: the app's old calls (counted, absorbed, last seen, absorbing on or off), and reconnects as a counter."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import old_app
from support.http import ListenerProcess, request, running
from support.roles import listener_login
from support.world import World

# The slow tier: every case a CLI subprocess, a promtool run, or an embedded or HTTP server of its own.
pytestmark = pytest.mark.slow


def _scrape(proc: ListenerProcess) -> tuple[dict[str, str], dict[str, float]]:
    """(type by family name, value by sample name) of one /metrics scrape."""
    text = request(f"{proc.base}/metrics").body
    families = list(text_string_to_metric_families(text))
    types = {f.name: f.type for f in families}
    samples = {s.name: s.value for f in families for s in f.samples if not s.labels}
    return types, samples


def _pack_calls(world: World) -> dict[tuple[bool, str], int]:
    rows = world.conn.execute(
        "SELECT legacy, outcome, count(*) AS n FROM session_ledger.pack_calls GROUP BY 1, 2"
    ).fetchall()
    return {(r["legacy"], r["outcome"]): int(r["n"]) for r in rows}


def _last_legacy_call(world: World) -> float:
    row = world.conn.execute(
        "SELECT extract(epoch FROM max(called_at))::float8 AS t FROM session_ledger.pack_calls WHERE legacy"
    ).fetchone()
    assert row is not None and row["t"] is not None
    return float(row["t"])


def test_legacy_calls_are_counted_absorbed_and_dated(world: World) -> None:
    pack = world.pack(sessions_total=10)
    echoed, later = world.bookings(pack, count=2)
    # The old calendar tab: completes a booking, then calls use_session for it (absorbed).
    assert old_app.complete_then_use_session(world, echoed, pack, trace=old_app.new_trace())
    # "Use 1 Session" pressed with no booking write behind it: a legacy call that charges.
    assert old_app.request(world, "SELECT public.use_session(%s) AS ok", [pack]) == {"ok": True}
    # The new app's manual button, with a reason: never a legacy call.
    assert old_app.request(world, "SELECT public.use_session(%s, 'goodwill') AS ok", [pack]) == {"ok": True}
    assert _pack_calls(world) == {(True, "absorbed"): 1, (True, "charged"): 1, (False, "charged"): 1}
    first_call = _last_legacy_call(world)

    with listener_login(world.ledger.dsn) as dsn:
        with running(dsn) as proc:
            world.ledger.drain(listener_running=True)
            types, samples = _scrape(proc)
            proc.stop()
        # the ledger's charge, the unabsorbed legacy press and the manual one: the echo charged nothing
        assert world.used(pack) == 3
        for name in (
            "session_ledger_legacy_calls",
            "session_ledger_legacy_calls_absorbed",
            "session_ledger_manual_calls",
        ):
            assert types[name] == "counter", name
        assert types["session_ledger_legacy_absorbing"] == "gauge"
        assert samples["session_ledger_legacy_calls_total"] == 2
        assert samples["session_ledger_legacy_calls_absorbed_total"] == 1
        assert samples["session_ledger_manual_calls_total"] == 1
        assert samples["session_ledger_legacy_absorbing"] == 1
        assert samples["session_ledger_last_legacy_call_timestamp_seconds"] == pytest.approx(
            first_call, abs=1e-3
        )

        # Absorbing switched off: the old code's echo now charges, and the scrape says so.
        world.conn.execute("UPDATE session_ledger.config SET absorb_legacy_calls = false")
        assert old_app.complete_then_use_session(world, later, pack, trace=old_app.new_trace())
        assert _pack_calls(world)[(True, "charged")] == 2
        second_call = _last_legacy_call(world)
        assert second_call > first_call
        with running(dsn) as proc:
            world.ledger.drain(listener_running=True)
            _, samples = _scrape(proc)
            proc.stop()
    assert samples["session_ledger_legacy_absorbing"] == 0
    assert samples["session_ledger_legacy_calls_total"] == 3
    assert samples["session_ledger_legacy_calls_absorbed_total"] == 1
    assert samples["session_ledger_last_legacy_call_timestamp_seconds"] == pytest.approx(
        second_call, abs=1e-3
    )
    assert world.used(pack) == 5


def test_before_any_legacy_call_the_last_call_timestamp_is_zero(world: World) -> None:
    with running(world.ledger.dsn) as proc:
        types, samples = _scrape(proc)
        proc.stop()
    assert samples["session_ledger_legacy_calls_total"] == 0
    assert samples["session_ledger_legacy_calls_absorbed_total"] == 0
    assert samples["session_ledger_legacy_absorbing"] == 1, "absorbing is on from install"
    assert types["session_ledger_last_legacy_call_timestamp_seconds"] == "gauge"
    assert samples["session_ledger_last_legacy_call_timestamp_seconds"] == 0


def test_reconnects_are_a_counter_that_counts_up(world: World) -> None:
    with running(world.ledger.dsn) as proc:
        types, samples = _scrape(proc)
        assert types["session_ledger_reconnects"] == "counter"
        assert samples["session_ledger_reconnects_total"] == 0
        assert "session_ledger_reconnects" not in samples, "no gauge of the same name beside it"
        world.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'session-ledger worker'"
        )
        deadline = time.monotonic() + 20
        while samples["session_ledger_reconnects_total"] < 1:
            assert time.monotonic() < deadline, "the worker's reconnect was never counted"
            time.sleep(0.2)
            _, samples = _scrape(proc)
        assert request(f"{proc.base}/readyz").status == 200
        proc.stop()
