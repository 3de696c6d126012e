"""A dead letter's id is the same in the listener's log (text and JSON), `listener status`, the dashboard and
`listener replay`; in JSON each booking's outcome has fields of its own."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from pydantic import SecretStr

from listener.core.worker import Worker
from listener.logs import JsonFormatter
from listener.settings import Settings

from support.world import World, run_cli


def test_the_logged_dead_letter_id_is_the_one_replay_takes(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # Real events first, so the queue's message ids and the dead-letter queue's differ.
    pack = world.pack(sessions_total=5)
    for booking in world.bookings(pack, count=3):
        world.set_status(booking, "completed")
    world.drain()
    for _ in range(2):
        world.send_raw("'\"not an event\"'::jsonb")
    world.send_raw('\'{"type": "booking.changed", "v": 1, "booking_id": "NOT-A-UUID"}\'::jsonb')
    with caplog.at_level(logging.INFO, logger="listener"):
        Worker(Settings(dsn=SecretStr(world.ledger.dsn), poll_interval_s=0.05)).run(drain=True)
    logged = [r.getMessage() for r in caplog.records if "outcome=dead-lettered" in r.getMessage()]
    assert len(logged) == 3 and all(
        r.levelno == logging.WARNING for r in caplog.records if "dead_letter=" in r.getMessage()
    )
    found = [re.search(r"message=(\d+) dead_letter=(\d+)", line) for line in logged]
    pairs = [(int(m.group(1)), int(m.group(2))) for m in found if m is not None]
    assert len(pairs) == 3
    letters = {r["msg_id"]: r["source_msg_id"] for r in world.dead_letters()}
    assert {dead: source for source, dead in pairs} == letters
    assert all(source != dead for source, dead in pairs)
    _, last = pairs[-1]
    replay = run_cli("replay", "--dead-letter", "--id", str(last), "--dsn", world.ledger.dsn)
    assert replay.returncode == 0, replay.stderr
    assert last not in {r["msg_id"] for r in world.dead_letters()}


def test_json_logs_give_each_booking_and_dead_letter_its_own_fields(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack, count=1)
    world.set_status(booking, "completed")
    world.send_raw("'\"not an event\"'::jsonb")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("listener")
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        Worker(Settings(dsn=SecretStr(world.ledger.dsn), poll_interval_s=0.05)).run(drain=True)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all("\n" not in str(line["msg"]) and "booking=" not in str(line["msg"]) for line in lines)
    [paid] = [line for line in lines if line.get("booking_id") == str(booking)]
    assert paid["outcome"] == "paid" and paid["purchase_id"] == str(pack) and paid["reason"] is None
    [dead] = [line for line in lines if line.get("outcome") == "dead-lettered"]
    [letter] = world.dead_letters()
    assert dead["level"] == "warning" and dead["dead_letter_id"] == letter["msg_id"]
    assert dead["msg_id"] == letter["source_msg_id"] and dead["reason"] == letter["reason"]
