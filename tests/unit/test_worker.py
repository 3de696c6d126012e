"""The worker loop and the batch handler on an in-memory ledger (support/memory.py): no database.

What the loop decides on its own is tested here in milliseconds: backoff through
transient errors, splitting a batch the database rejects down to its culprit, poison
messages dead-lettered with the good ones, shutdown with a batch in hand, reconnecting
and registering again. What the SQL does is the database tests' business (tests/db).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from pydantic import SecretStr

from listener.core import batch as batch_module
from listener.core.batch import BATCH_ATTEMPTS
from listener.core.events import RawMessage
from listener.core.store import Outcome
from listener.core.worker import IDLE_LOOKS_S, RECONNECT_CAP_S, RECONNECT_FIRST_S, Worker
from listener.settings import Settings

from support.memory import ManualClock, MemoryHints, MemoryLedger, RecordingStop, booking_event

DSN = SecretStr("postgresql://listener@memory.invalid/ledger")


def _settings(**overrides: Any) -> Settings:
    return Settings(dsn=DSN, **{"poll_interval_s": 0.01, "heartbeat_interval_s": 0.05, **overrides})


def _worker(ledger: MemoryLedger, **overrides: Any) -> Worker:
    return Worker(_settings(**overrides), open_store=ledger.open_store, wakeup=MemoryHints())


@pytest.fixture
def ledger() -> MemoryLedger:
    return MemoryLedger()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The batch handler's retry delays, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(batch_module, "time", SimpleNamespace(sleep=slept.append))
    return slept


def test_a_drain_charges_each_booking_once_and_acks_every_message(ledger: MemoryLedger) -> None:
    bookings = [ledger.send_booking() for _ in range(7)]
    ledger.send_booking(bookings[0])  # a second event for the same booking
    worker = _worker(ledger, batch_size=3)
    worker.run(drain=True)
    assert ledger.charged == dict.fromkeys(bookings, 1)
    assert ledger.queue == {} and len(ledger.archive) == 8
    assert [len(ids) for ids in ledger.handled("handle_batch")] == [3, 3, 2]
    assert worker.stats.batches == 3
    assert worker.stats.outcomes == {"paid": 7, "no-op": 1}
    row = ledger.listeners[worker.id]
    assert row.stopped and row.beats >= 1  # registered before reading, goodbye at the end


def test_the_schema_is_verified_and_the_listener_registered_before_any_read(ledger: MemoryLedger) -> None:
    ledger.send_booking()
    _worker(ledger).run(drain=True)
    names = [name for name, _ in ledger.calls]
    assert names[:3] == ["verify_schema", "heartbeat", "read_events"]
    assert names[-1] == "stop_listener"


def test_a_refused_schema_stops_the_worker_before_it_reads(ledger: MemoryLedger) -> None:
    ledger.send_booking()
    ledger.fail_next("verify_schema", pg_errors.InsufficientPrivilege("permission denied"))
    with pytest.raises(pg_errors.InsufficientPrivilege):
        _worker(ledger).run(drain=True)
    assert ledger.calls[0][0] == "verify_schema"
    assert not ledger.handled("read_events") and len(ledger.queue) == 1


def test_a_batch_is_retried_through_transient_errors_with_growing_delays(
    ledger: MemoryLedger, sleeps: list[float]
) -> None:
    booking = ledger.send_booking()
    ledger.fail_next("handle_batch", pg_errors.SerializationFailure("could not serialize access"), times=2)
    ledger.fail_next("handle_batch", pg_errors.DeadlockDetected("deadlock detected"))
    worker = _worker(ledger)
    worker.run(drain=True)
    assert ledger.charged == {booking: 1}
    assert len(ledger.handled("handle_batch")) == 4  # three failures, then the same batch lands
    assert len(ledger.handled("read_events")) == 2  # read once, not re-read between retries
    assert len(sleeps) == 3
    assert 0.04 <= sleeps[0] <= 0.06 and sleeps[0] < sleeps[1] < sleeps[2] <= 2.0
    assert worker.stats.reconnects == 3  # each retry is counted for the reconnects metric
    assert ledger.opened == 1  # the connection survived errors that do not break it


def test_a_lost_connection_mid_batch_reconnects_registers_again_and_applies_it(
    ledger: MemoryLedger, sleeps: list[float]
) -> None:
    booking = ledger.send_booking()
    ledger.fail_next("handle_batch", psycopg.OperationalError("server closed the connection unexpectedly"))
    worker = _worker(ledger)
    worker.run(drain=True)
    assert ledger.charged == {booking: 1}
    assert ledger.opened == 2
    names = [name for name, _ in ledger.calls]
    retry = names.index("handle_batch") + 1
    assert names[retry : retry + 2] == ["heartbeat", "handle_batch"]  # registered again, then applied
    assert len(sleeps) == 1


def test_a_batch_that_keeps_failing_is_given_back_to_the_visibility_timeout(
    ledger: MemoryLedger, sleeps: list[float]
) -> None:
    clock = ledger.clock
    assert isinstance(clock, ManualClock)
    booking = ledger.send_booking()
    ledger.fail_next("handle_batch", pg_errors.LockNotAvailable("lock timeout"), times=BATCH_ATTEMPTS)
    worker = _worker(ledger, visibility_timeout_s=30)
    worker.stop_event = RecordingStop()
    worker.run(drain=True)
    # Given up after BATCH_ATTEMPTS: the loop backs off once and finds the message hidden.
    assert len(ledger.handled("handle_batch")) == BATCH_ATTEMPTS
    assert len(sleeps) == BATCH_ATTEMPTS - 1
    assert len(worker.stop_event.waits) == 1
    assert RECONNECT_FIRST_S * 0.8 <= worker.stop_event.waits[0] <= RECONNECT_FIRST_S * 1.2
    assert ledger.charged == {} and list(ledger.queue) == [1] and ledger.queue[1].read_ct == 1
    clock.advance(30)  # the visibility timeout runs out: the next drain takes it again
    _worker(ledger).run(drain=True)
    assert ledger.charged == {booking: 1} and ledger.queue == {}


def test_a_rejected_batch_is_split_until_the_culprit_is_alone_and_dead_lettered(
    ledger: MemoryLedger,
) -> None:
    bookings = [ledger.send_booking() for _ in range(8)]
    ledger.rejects.add(bookings[5])
    worker = _worker(ledger)
    worker.run(drain=True)
    assert ledger.charged == {b: 1 for b in bookings if b != bookings[5]}
    assert ledger.handled("handle_batch") == [
        (1, 2, 3, 4, 5, 6, 7, 8),  # rejected whole
        (1, 2, 3, 4),
        (5, 6, 7, 8),  # rejected
        (5, 6),  # rejected
        (5,),
        (6,),  # rejected alone: dead-lettered by itself
        (6,),
        (7, 8),
    ]
    [dead] = ledger.dead_letters.values()
    assert dead.message.msg_id == 6
    assert dead.reason == "database rejected the event: 23514: new row violates a check constraint"
    assert ledger.queue == {}
    assert worker.stats.outcomes == {"paid": 7, "dead-lettered": 1}


def test_a_transient_error_while_splitting_retries_the_whole_batch(
    ledger: MemoryLedger, sleeps: list[float]
) -> None:
    bookings = [ledger.send_booking() for _ in range(4)]
    ledger.rejects.add(bookings[0])
    calls = 0

    def flaky(ids: Sequence[int]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise pg_errors.SerializationFailure("could not serialize access")

    ledger.during_batch = flaky
    _worker(ledger).run(drain=True)
    assert ledger.charged == dict.fromkeys(bookings[1:], 1)
    assert len(sleeps) == 1
    # Split down to the culprit, whose dead-lettering meets the transient error: the whole
    # batch is tried again from the start, and lands the same way.
    assert ledger.handled("handle_batch") == [
        (1, 2, 3, 4), (1, 2), (1,), (1,),
        (1, 2, 3, 4), (1, 2), (1,), (1,), (2,), (3, 4),
    ]  # fmt: skip
    assert [d.message.msg_id for d in ledger.dead_letters.values()] == [1]


@pytest.mark.parametrize(
    ("message", "read_ct", "reason"),
    [
        ("not json", 0, "payload is not parseable JSON"),
        ('{"type": "booking.changed", "v": 2, "booking_id": "x"}', 0, "unsupported event type"),
        ('{"type": "booking.changed", "v": 1, "booking_id": "NOT-A-UUID"}', 0, "invalid booking_id"),
        ("[1, 2]", 0, "payload is a JSON array, not an object"),
        (None, 0, "message is SQL NULL"),
        ("x" * 300, 0, "payload of 300 bytes exceeds 256"),
        (booking_event("6a8e1c3e-2f5d-4c1a-9b7e-0d4f5a6b7c8d"), 4, "read 5 times without being handled"),
    ],
)
def test_a_poison_message_is_dead_lettered_in_the_same_transaction_as_the_good_ones(
    ledger: MemoryLedger, message: str | None, read_ct: int, reason: str
) -> None:
    good = ledger.send_booking()
    poison = ledger.send(message, read_ct=read_ct)
    after = ledger.send_booking()
    batches: list[tuple[Sequence[RawMessage], Sequence[Outcome]]] = []
    worker = Worker(
        _settings(max_payload_bytes=256, max_reads=4),
        open_store=ledger.open_store,
        wakeup=MemoryHints(),
        on_batch=lambda raw, outcomes, _s: batches.append((raw, outcomes)),
    )
    worker.run(drain=True)
    assert ledger.handled("handle_batch") == [(1, 2, 3)]  # one transaction for all three
    assert ledger.charged == {good: 1, after: 1}
    [dead] = ledger.dead_letters.values()
    assert dead.message.msg_id == poison and dead.reason.startswith(reason)
    [(_, outcomes)] = batches
    [lettered] = [o for o in outcomes if o.outcome == "dead-lettered"]
    assert (lettered.msg_id, lettered.dead_letter_id) == (poison, 1)  # the ids replay and discard take


def test_a_stop_requested_with_a_batch_in_hand_finishes_and_acks_it_then_says_goodbye(
    ledger: MemoryLedger,
) -> None:
    bookings = [ledger.send_booking() for _ in range(5)]
    worker = _worker(ledger, batch_size=2)
    ledger.during_batch = lambda ids: worker.request_stop()  # SIGTERM arrives mid-transaction
    worker.run()  # not a drain: only the stop ends it
    assert ledger.charged == dict.fromkeys(bookings[:2], 1)
    assert sorted(ledger.archive) == [1, 2] and sorted(ledger.queue) == [3, 4, 5]
    assert len(ledger.handled("read_events")) == 1  # no new batch after the stop
    assert ledger.listeners[worker.id].stopped


def test_the_loop_reconnects_with_growing_capped_delays_and_resumes(ledger: MemoryLedger) -> None:
    first = ledger.send_booking()
    worker = _worker(ledger, batch_size=1)
    worker.stop_event = RecordingStop()

    def server_restarts(ids: Sequence[int]) -> None:
        if list(ids) == [1]:
            ledger.lose_connections()
            ledger.refuse_connections = 8  # down for eight attempts
        if list(ids) == [2]:
            ledger.lose_connections()  # and once more, back at once

    ledger.during_batch = server_restarts
    second = ledger.send_booking()
    third = ledger.send_booking()
    worker.run(drain=True)
    assert ledger.charged == {first: 1, second: 1, third: 1}
    waits = worker.stop_event.waits
    assert len(waits) == 10  # the read on the lost connection, eight refused connects; then one more loss
    assert RECONNECT_FIRST_S * 0.8 <= waits[0] <= RECONNECT_FIRST_S * 1.2
    assert all(b > a for a, b in itertools.pairwise(waits[:6]))  # growing ...
    assert max(waits) <= RECONNECT_CAP_S  # ... up to the cap
    assert (
        RECONNECT_FIRST_S * 0.8 <= waits[9] <= RECONNECT_FIRST_S * 1.2
    )  # and from the start after a success
    assert worker.stats.reconnects == 10
    assert ledger.opened == 3
    names = [name for name, _ in ledger.calls]
    assert names.count("heartbeat") >= 3  # registered at start and again on each new connection
    assert ledger.listeners[worker.id].stopped


@pytest.fixture
def running(ledger: MemoryLedger) -> Iterator[tuple[Worker, MemoryHints]]:
    hints = MemoryHints()
    worker = Worker(
        _settings(poll_interval_s=5.0, heartbeat_interval_s=5.0), open_store=ledger.open_store, wakeup=hints
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    yield worker, hints
    worker.request_stop()
    hints.hint()
    thread.join(timeout=5)
    assert not thread.is_alive()


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 2
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.002)


def test_an_idle_worker_asks_for_a_hint_and_a_hint_wakes_it_before_the_poll_interval(
    ledger: MemoryLedger, running: tuple[Worker, MemoryHints]
) -> None:
    worker, hints = running
    _until(lambda: worker.id in ledger.listeners and ledger.listeners[worker.id].waiting, "never set waiting")
    reads = len(ledger.handled("read_events"))
    assert reads == 1 + len(IDLE_LOOKS_S) + 1  # the first read, the quick looks, one after setting waiting
    booking = ledger.send_booking()
    hints.hint()  # a writer's NOTIFY; the poll interval is 5 s
    _until(lambda: ledger.charged[booking] == 1, "the hint did not wake the worker")
    beats = ledger.listeners[worker.id].beats
    # handle_batch cleared "waiting"; idle again, the worker asks for a hint again
    _until(lambda: ledger.listeners[worker.id].waiting, "never asked for a hint again")
    assert ledger.listeners[worker.id].beats == beats + 1
