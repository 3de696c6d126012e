"""`listener pause` / `listener resume`: charging stops everywhere and starts again; nothing is lost."""

from __future__ import annotations

import json
import time

import pytest
from pydantic import SecretStr

from listener.core.db import connect
from listener.core.worker import Worker
from listener.settings import Settings

from support.http import metric, request, running
from support.world import World, run_cli

# The slow tier: every case a CLI subprocess, a promtool run, or an embedded or HTTP server of its own.
pytestmark = pytest.mark.slow


def test_a_pause_stops_every_consumer_while_events_keep_queuing(world: World) -> None:
    pack = world.pack(sessions_total=5)
    first, second = world.bookings(pack, count=2)
    dsn = world.ledger.dsn
    paused = run_cli("pause", "--dsn", dsn, "--reason", "investigating a double charge")
    assert paused.returncode == 0, paused.stderr
    assert "charging paused since" in paused.stdout and "investigating a double charge" in paused.stdout

    world.set_status(first, "completed")
    assert len(world.queue()) == 1  # the trigger keeps queuing
    # A listener and the in-database drain() both claim nothing.
    Worker(Settings(dsn=SecretStr(dsn), poll_interval_s=0.05)).run(drain=True)
    with connect(dsn) as conn:
        assert conn.execute("SELECT session_ledger.drain() AS n").fetchone() == {"n": 0}
    assert len(world.queue()) == 1 and world.used(pack) == 0

    status = run_cli("status", "--dsn", dsn, "--json", "--no-listener-ok")
    assert status.returncode == 3  # a paused ledger never reads as healthy
    report = json.loads(status.stdout)
    assert report["paused"]["reason"] == "investigating a double charge"
    assert report["paused"]["paused_by"]
    assert any(p.startswith("charging paused since") for p in report["problems"])

    resumed = run_cli("resume", "--dsn", dsn)
    assert resumed.returncode == 0, resumed.stderr
    assert "charging resumed" in resumed.stdout
    world.set_status(second, "completed")
    world.drain()
    assert world.used(pack) == 2 and world.queue() == []
    again = run_cli("resume", "--dsn", dsn)
    assert again.stdout.strip() == "charging was not paused"
    status = json.loads(run_cli("status", "--dsn", dsn, "--json", "--no-listener-ok").stdout)
    assert status["paused"] is None and status["healthy"]


def test_a_paused_listener_is_not_ready(world: World) -> None:
    dsn = world.ledger.dsn
    with running(dsn, token="ops-token") as proc:
        assert request(f"{proc.base}/readyz").status == 200
        assert run_cli("pause", "--dsn", dsn, "--reason", "incident 42").returncode == 0
        # /readyz reads the status the port caches; it turns within a few of its refreshes.
        deadline = time.monotonic() + 30
        reply = request(f"{proc.base}/readyz")
        while reply.status == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
            reply = request(f"{proc.base}/readyz")
        assert reply.status == 503
        # An unauthenticated probe hears only that charging is paused; the operator's token shows who and why.
        assert reply.body == "charging paused\n"
        told = request(f"{proc.base}/readyz", token="ops-token")
        assert told.status == 503
        assert "charging paused since" in told.body and "incident 42" in told.body
        # /metrics says so too (from the status it caches): an alert rule watches session_ledger_paused.
        while metric(request(f"{proc.base}/metrics").body, "session_ledger_paused") != 1:
            assert time.monotonic() < deadline, "session_ledger_paused never became 1"
            time.sleep(0.2)
        assert (
            metric(request(f"{proc.base}/metrics").body, "session_ledger_paused_since_timestamp_seconds") > 0
        )
        assert run_cli("resume", "--dsn", dsn).returncode == 0
        deadline = time.monotonic() + 30
        while request(f"{proc.base}/readyz").status != 200:
            assert time.monotonic() < deadline, "still not ready after resume"
            time.sleep(0.2)
