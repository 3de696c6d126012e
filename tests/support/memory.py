"""An in-memory ledger for the worker's and the batch handler's unit tests: no database.

MemoryLedger stands in for the database: a PGMQ-like queue (visibility timeout, read
count, archive, dead letters), the charges made, the listeners table, and a script of
what fails next. MemoryStore is one connection to it and fits listener.core.store's
LedgerStore protocol, so Worker(open_store=ledger.open_store, wakeup=MemoryHints()) runs
the real loop, the real WorkerConnection and the real BatchHandler on it.

Charging is reduced to its contract with the loop: a booking is charged the first time a
batch names it and is a no-op after, so "exactly once" is checkable here; the rules
themselves are the database tests' business.

Failures raise what psycopg raises: a bare OperationalError (no SQLSTATE) for a lost
server, after which the store is lost as a broken psycopg connection is; an error with a
SQLSTATE (a serialization failure, a deadlock) leaves it open; a CheckViolation for a batch
the database rejects.
"""

from __future__ import annotations

import itertools
import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import psycopg
from psycopg import errors as pg_errors

from listener.core.events import Accepted, RawMessage, Rejected
from listener.core.store import Outcome


@dataclass
class Message:
    """One queued message, as PGMQ keeps it."""

    msg_id: int
    message: str | None
    read_ct: int = 0
    visible_at: float = 0.0
    enqueued_at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass
class Listener:
    """A row of the listeners table."""

    beats: int = 0
    waiting: bool = False
    stopped: bool = False


@dataclass
class DeadLetter:
    """A message moved to the dead-letter queue, and why."""

    message: Message
    reason: str


class ManualClock:
    """Time that moves only when a test says so: the visibility timeout without waiting for it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def booking_event(booking_id: str) -> str:
    """The payload the trigger writes for a booking."""
    return json.dumps({"type": "booking.changed", "v": 1, "booking_id": booking_id})


class MemoryLedger:
    """The database, in memory: the queue, its archive and dead letters, the charges, the listeners."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.clock = clock or ManualClock()
        self.queue: dict[int, Message] = {}
        self.archive: dict[int, Message] = {}
        self.dead_letters: dict[int, DeadLetter] = {}
        self.charged: Counter[str] = Counter()
        self.listeners: dict[UUID, Listener] = {}
        # every statement run, by name, with the messages a handle_batch carried
        self.calls: list[tuple[str, tuple[int, ...]]] = []
        # the database rejects any batch naming one of these bookings
        self.rejects: set[str] = set()
        # the next call of a statement raises the error queued under its name
        self.failures: dict[str, list[BaseException]] = {}
        # opening a store raises while this is above zero, one less each time
        self.refuse_connections = 0
        self.opened = 0
        self.lock = threading.Lock()
        # called inside handle_batch before it commits, with the msg_ids it carries
        self.during_batch: Callable[[Sequence[int]], None] | None = None
        self._ids = itertools.count(1)
        self._dead_ids = itertools.count(1)
        self.generation = 0

    # -- what a test does to the database ---------------------------------------

    def send(self, message: str | None, *, read_ct: int = 0) -> int:
        """Queue a raw message; return its msg_id."""
        msg = Message(next(self._ids), message, read_ct=read_ct, visible_at=self.clock())
        self.queue[msg.msg_id] = msg
        return msg.msg_id

    def send_booking(self, booking_id: str | None = None) -> str:
        """Queue the event for a booking (a new one unless named); return the booking's id."""
        booking_id = booking_id or str(uuid.uuid4())
        self.send(booking_event(booking_id))
        return booking_id

    def fail_next(self, statement: str, error: BaseException, times: int = 1) -> None:
        """Make the next `times` calls of a statement raise `error`."""
        self.failures.setdefault(statement, []).extend([error] * times)

    def lose_connections(self) -> None:
        """The server closes every open connection: their next statement fails and they are lost."""
        self.generation += 1

    def open_store(self) -> MemoryStore:
        """A new connection (WorkerConnection's open_store)."""
        if self.refuse_connections > 0:
            self.refuse_connections -= 1
            raise psycopg.OperationalError("connection refused")
        self.opened += 1
        return MemoryStore(self, self.generation)

    def handled(self, statement: str) -> list[tuple[int, ...]]:
        """The messages each call of a statement carried."""
        return [ids for name, ids in self.calls if name == statement]

    # -- the statements ----------------------------------------------------------

    def read_events(self, qty: int, vt_seconds: int) -> list[RawMessage]:
        now = self.clock()
        visible = sorted((m for m in self.queue.values() if m.visible_at <= now), key=lambda m: m.msg_id)
        batch = []
        for msg in visible[:qty]:
            msg.read_ct += 1
            msg.visible_at = now + vt_seconds
            batch.append(RawMessage(msg.msg_id, msg.read_ct, msg.enqueued_at, msg.message))
        return batch

    def handle_batch(
        self, listener: UUID, accepted: Sequence[Accepted], rejected: Sequence[Rejected]
    ) -> list[Outcome]:
        named = {a.booking_id for a in accepted}
        if named & self.rejects:
            raise pg_errors.CheckViolation("new row violates a check constraint")
        if self.during_batch is not None:
            self.during_batch([a.msg_id for a in accepted] + [r.msg_id for r in rejected])
        outcomes: list[Outcome] = []
        for booking_id in dict.fromkeys(a.booking_id for a in accepted):
            first = self.charged[booking_id] == 0
            if first:
                self.charged[booking_id] += 1
            outcomes.append(Outcome(booking_id, "paid" if first else "no-op", None, None, None))
        for r in rejected:
            msg = self.queue.get(r.msg_id)
            if msg is None:
                continue  # acked meanwhile by another listener
            dead_id = next(self._dead_ids)
            self.dead_letters[dead_id] = DeadLetter(msg, r.reason)
            outcomes.append(
                Outcome(None, "dead-lettered", None, None, r.reason, msg_id=r.msg_id, dead_letter_id=dead_id)
            )
        for msg_id in [a.msg_id for a in accepted] + [r.msg_id for r in rejected]:
            msg = self.queue.pop(msg_id, None)
            if msg is not None:
                self.archive[msg_id] = msg
        self.listeners.setdefault(listener, Listener()).waiting = False
        return outcomes

    def heartbeat(self, listener: UUID, waiting: bool) -> None:
        row = self.listeners.setdefault(listener, Listener())
        row.beats += 1
        row.waiting = waiting
        row.stopped = False

    def stop_listener(self, listener: UUID) -> None:
        self.listeners.setdefault(listener, Listener()).stopped = True


class MemoryStore:
    """One connection to a MemoryLedger; a LedgerStore."""

    booking_key = "uuid"

    def __init__(self, ledger: MemoryLedger, generation: int) -> None:
        self.ledger = ledger
        self._generation = generation
        self._lost = False
        self.schema_ok = True

    @property
    def lost(self) -> bool:
        # As psycopg's `broken`: known only once a statement has failed on it.
        return self._lost

    def close(self) -> None:
        self._lost = True

    def _statement(self, name: str, ids: Sequence[int] = ()) -> None:
        if self._lost or self._generation != self.ledger.generation:
            self._lost = True
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        self.ledger.calls.append((name, tuple(ids)))
        queued = self.ledger.failures.get(name)
        if queued:
            error = queued.pop(0)
            if isinstance(error, psycopg.OperationalError) and error.sqlstate is None:
                self._lost = True  # no SQLSTATE: the connection itself failed, not the statement
            raise error

    def verify_schema(self) -> None:
        self._statement("verify_schema")

    def read_events(self, *, qty: int, vt_seconds: int) -> list[RawMessage]:
        with self.ledger.lock:
            self._statement("read_events")
            return self.ledger.read_events(qty, vt_seconds)

    def handle_batch(
        self, *, listener: UUID, accepted: Sequence[Accepted], rejected: Sequence[Rejected]
    ) -> list[Outcome]:
        with self.ledger.lock:
            self._statement(
                "handle_batch", sorted([a.msg_id for a in accepted] + [r.msg_id for r in rejected])
            )
            return self.ledger.handle_batch(listener, accepted, rejected)

    def heartbeat(self, *, listener: UUID, host: str, pid: int, waiting: bool) -> None:
        with self.ledger.lock:
            self._statement("heartbeat")
            self.ledger.heartbeat(listener, waiting)

    def stop_listener(self, *, listener: UUID) -> None:
        with self.ledger.lock:
            self._statement("stop_listener")
            self.ledger.stop_listener(listener)


class MemoryHints:
    """Wake-up hints without LISTEN: hint() is a writer's NOTIFY."""

    def __init__(self) -> None:
        self.reconnects = 0
        self._event = threading.Event()
        self._open = False

    @property
    def alive(self) -> bool:
        return self._open

    def ensure(self) -> bool:
        if self._open:
            return False
        self._open = True
        return True

    def hint(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        hinted = self._event.wait(timeout)
        self._event.clear()
        return hinted

    def close(self) -> None:
        self._open = False


class RecordingStop(threading.Event):
    """The worker's stop event, recording the reconnect delays it is asked to wait and not waiting them."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        return self.is_set()
