"""The worker loop, its connection and the batch handler on an in-memory ledger (support/memory.py):
no database.

What the loop decides on its own is tested here in milliseconds: backoff through
transient errors, splitting a batch the database rejects down to its culprit, poison
messages dead-lettered with the good ones, shutdown with a batch in hand, reconnecting
and registering again, the heartbeat's cadence. What the SQL does is the database tests'
business (tests/db).
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from psycopg import errors as pg_errors
from pydantic import SecretStr

from listener.core import connection as connection_module
from listener.core.backoff import BatchRetry, ReconnectBackoff
from listener.core.batch import BatchHandler
from listener.core.events import RawMessage
from listener.core.store import Outcome
from listener.core.worker import IDLE_LOOKS_S, Worker
from listener.settings import Settings

from support.memory import ManualClock, MemoryHints, MemoryLedger, RecordingStop, booking_event

DSN = SecretStr("postgresql://listener@memory.invalid/ledger")


def _settings(**overrides: Any) -> Settings:
    return Settings(dsn=DSN, **{"poll_interval_s": 0.01, "heartbeat_interval_s": 0.05, **overrides})


def _worker(ledger: MemoryLedger, stop: threading.Event | None = None, **overrides: Any) -> Worker:
    return Worker(_settings(**overrides), open_store=ledger.open_store, wakeup=MemoryHints(), stop=stop)


@pytest.fixture
def ledger() -> MemoryLedger:
    return MemoryLedger()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays a batch in hand is retried after, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr(
        connection_module, "time", SimpleNamespace(sleep=slept.append, monotonic=time.monotonic)
    )
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
    ledger.fail_next("handle_batch", pg_errors.LockNotAvailable("lock timeout"), times=BatchRetry.ATTEMPTS)
    stop = RecordingStop()
    _worker(ledger, stop, visibility_timeout_s=30).run(drain=True)
    # Given up after its attempts: the loop backs off once and finds the message hidden.
    assert len(ledger.handled("handle_batch")) == BatchRetry.ATTEMPTS
    assert len(sleeps) == BatchRetry.ATTEMPTS - 1
    assert len(stop.waits) == 1
    assert ReconnectBackoff.FIRST_S * 0.8 <= stop.waits[0] <= ReconnectBackoff.FIRST_S * 1.2
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
    stop = RecordingStop()
    worker = _worker(ledger, stop, batch_size=1)

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
    first_s, cap_s = ReconnectBackoff.FIRST_S, ReconnectBackoff.CAP_S
    waits = stop.waits
    assert len(waits) == 10  # the read on the lost connection, eight refused connects; then one more loss
    assert first_s * 0.8 <= waits[0] <= first_s * 1.2
    assert all(b > a for a, b in itertools.pairwise(waits[:6]))  # growing ...
    assert max(waits) <= cap_s and min(waits[6:9]) >= cap_s * 0.8  # ... up to the cap
    assert first_s * 0.8 <= waits[9] <= first_s * 1.2  # and from the start after a success
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


# -- the connection on its own: reconnecting and the heartbeat ------------------------------------


def _connection(
    ledger: MemoryLedger, stop: threading.Event | None = None, **overrides: Any
) -> connection_module.WorkerConnection:
    return connection_module.WorkerConnection(
        _settings(**overrides),
        listener=uuid.uuid4(),
        stop=stop or RecordingStop(),
        open_store=ledger.open_store,
    )


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    """The connection's clock, moved by hand: the heartbeat's cadence without waiting for it."""
    manual = ManualClock()
    monkeypatch.setattr(connection_module, "time", SimpleNamespace(monotonic=manual, sleep=lambda _s: None))
    return manual


def test_the_reconnect_delay_grows_to_its_cap_and_starts_over_once_a_borrowed_store_comes_back(
    ledger: MemoryLedger,
) -> None:
    stop = RecordingStop()
    retries: list[None] = []
    connection = connection_module.WorkerConnection(
        _settings(), listener=uuid.uuid4(), stop=stop, open_store=ledger.open_store,
        on_retry=lambda: retries.append(None),
    )  # fmt: skip
    ledger.refuse_connections = 9
    for _ in range(9):
        with pytest.raises(psycopg.OperationalError), connection.borrow():
            pass  # never reached: the server refuses the connection
        connection.back_off(psycopg.OperationalError("connection refused"))
    first, cap = ReconnectBackoff.FIRST_S, ReconnectBackoff.CAP_S
    assert first * 0.8 <= stop.waits[0] <= first * 1.2
    assert all(b > a for a, b in itertools.pairwise(stop.waits[:6]))
    assert max(stop.waits) <= cap and min(stop.waits[6:]) >= cap * 0.8
    # A borrow that fails is no success: the delay does not start over ...
    with connection.borrow() as store:
        ledger.lose_connections()
        with pytest.raises(psycopg.OperationalError):
            store.read_events(qty=1, vt_seconds=30)
        connection.back_off(psycopg.OperationalError("server closed the connection"))
    assert stop.waits[-1] >= cap * 0.8
    # ... one that comes back without an error does.
    with connection.borrow() as store:
        store.read_events(qty=1, vt_seconds=30)
    connection.back_off(pg_errors.QueryCanceled("canceling statement due to statement timeout"))
    assert first * 0.8 <= stop.waits[-1] <= first * 1.2
    assert len(retries) == len(stop.waits) == 11
    assert ledger.opened == 2  # the lost store was forgotten ...
    with connection.borrow():
        pass
    assert ledger.opened == 3  # ... and the loop's back-off starts again on a new connection


def test_a_stop_request_cuts_the_reconnect_wait_short(ledger: MemoryLedger) -> None:
    stop = threading.Event()
    connection = _connection(ledger, stop)
    for _ in range(6):
        connection.backoff.next()
    assert connection.backoff.next() >= ReconnectBackoff.CAP_S * 0.8  # seconds, were it waited out
    stop.set()
    started = time.monotonic()
    connection.back_off(psycopg.OperationalError("connection refused"))
    assert time.monotonic() - started < 0.5


def test_the_worker_stops_while_the_server_is_down(ledger: MemoryLedger) -> None:
    booking = ledger.send_booking()
    stop = RecordingStop()
    worker = _worker(ledger, stop)

    def server_goes_away(_ids: Sequence[int]) -> None:
        ledger.lose_connections()
        ledger.refuse_connections = 1_000_000

    def stop_on_the_third_wait(timeout: float | None = None) -> bool:
        if len(stop.waits) == 2:
            worker.request_stop()  # SIGTERM while the loop waits to reconnect
        return RecordingStop.wait(stop, timeout)

    ledger.during_batch = server_goes_away
    stop.wait = stop_on_the_third_wait  # type: ignore[method-assign]
    worker.run()  # not a drain: only the stop ends it
    assert ledger.charged == {booking: 1}
    assert len(stop.waits) == 3 and worker.stats.reconnects == 3
    assert not ledger.listeners[worker.id].stopped  # no server to say goodbye to


def test_the_heartbeat_is_refreshed_when_waiting_changes_and_once_per_interval_while_idle(
    ledger: MemoryLedger, clock: ManualClock
) -> None:
    connection = _connection(ledger, heartbeat_interval_s=5.0)
    listener = connection.listener
    connection.register()
    assert ledger.listeners[listener].beats == 1 and not ledger.listeners[listener].waiting
    assert connection.idle()  # newly asleep: writers are told at once, and the queue looked at again
    assert ledger.listeners[listener].beats == 2 and ledger.listeners[listener].waiting
    for _ in range(3):
        clock.advance(1.6)
        assert not connection.idle()
    assert ledger.listeners[listener].beats == 2  # 4.8 s asleep: not due yet
    clock.advance(0.2)
    assert not connection.idle()
    assert ledger.listeners[listener].beats == 3  # due after 5 s
    assert not connection.idle()
    assert ledger.listeners[listener].beats == 3


def test_an_applied_batch_counts_as_a_heartbeat_and_wakes_the_listener(
    ledger: MemoryLedger, clock: ManualClock
) -> None:
    connection = _connection(ledger, heartbeat_interval_s=5.0)
    listener = connection.listener
    connection.register()
    connection.idle()
    clock.advance(4.0)
    ledger.send_booking()
    with connection.borrow() as store:
        [raw] = store.read_events(qty=1, vt_seconds=30)
    handler = BatchHandler(_settings(), listener=listener)
    [outcome] = connection.apply_batch(lambda store: handler.handle(store, [raw]))
    assert outcome.outcome == "paid"
    beats = ledger.listeners[listener].beats
    assert not ledger.listeners[listener].waiting  # handle_batch cleared it, in its own transaction
    clock.advance(4.0)  # 8 s since the last heartbeat statement, 4 s since the batch
    assert connection.idle()  # asleep again: a heartbeat saying so, at once
    assert ledger.listeners[listener].beats == beats + 1
    clock.advance(4.9)
    assert not connection.idle()
    assert ledger.listeners[listener].beats == beats + 1


def test_a_new_connection_registers_the_listener_again_only_once_it_was_registered(
    ledger: MemoryLedger,
) -> None:
    connection = _connection(ledger)
    with connection.borrow() as store:
        store.read_events(qty=1, vt_seconds=30)
    ledger.lose_connections()
    with pytest.raises(psycopg.OperationalError), connection.borrow() as store:
        store.read_events(qty=1, vt_seconds=30)
    with connection.borrow() as store:
        store.read_events(qty=1, vt_seconds=30)
    assert connection.listener not in ledger.listeners  # never registered: a reader only, as the model test's
    connection.register()
    ledger.lose_connections()
    with pytest.raises(psycopg.OperationalError), connection.borrow() as store:
        store.read_events(qty=1, vt_seconds=30)
    with connection.borrow() as store:
        store.read_events(qty=1, vt_seconds=30)
    assert ledger.listeners[connection.listener].beats == 2
    assert [name for name, _ in ledger.calls][-2:] == ["heartbeat", "read_events"]
    assert ledger.opened == 3


def test_the_batch_handler_works_on_the_store_it_is_lent_and_leaves_transient_errors_to_the_connection(
    ledger: MemoryLedger,
) -> None:
    bookings = [ledger.send_booking() for _ in range(4)]
    ledger.rejects.add(bookings[2])
    store = ledger.open_store()
    batch = store.read_events(qty=10, vt_seconds=30)
    handler = BatchHandler(_settings(), listener=uuid.uuid4())
    ledger.fail_next("handle_batch", pg_errors.SerializationFailure("could not serialize access"))
    with pytest.raises(pg_errors.SerializationFailure):
        handler.handle(store, batch)
    assert ledger.handled("handle_batch") == [(1, 2, 3, 4)]  # raised at once: no retry, no split
    outcomes = handler.handle(store, batch)
    assert sorted(o.outcome for o in outcomes) == ["dead-lettered", "paid", "paid", "paid"]
    assert ledger.opened == 1
