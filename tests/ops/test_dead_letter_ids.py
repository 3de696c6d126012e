"""A dead letter's id is the same in the listener's log, `listener status`, the dashboard and `listener replay`."""

from __future__ import annotations

import logging
import re

import pytest
from pydantic import SecretStr

from listener.core.worker import Worker
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
