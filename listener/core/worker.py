"""The listener loop: read a batch, judge it, apply and ack it in one transaction, repeat."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
from psycopg import errors as pg_errors

from listener import WAKEUP_CHANNEL
from listener.core.db import connect, describe
from listener.core.events import Accepted, RawMessage, Rejected, judge
from listener.core.schema import verify_schema
from listener.core.store import Outcome, Store
from listener.core.wakeup import Wakeup
from listener.errors import DatabaseUnreachable
from listener.settings import Settings

log = logging.getLogger("listener")

# Worth retrying as they are: the database or the network said "not now".
TRANSIENT = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.LockNotAvailable,
    pg_errors.QueryCanceled,
    psycopg.OperationalError,
    DatabaseUnreachable,
)

# After the queue runs dry, look again soon a few times before saying "idle".
# Writers send a NOTIFY only to an idle listener, and NOTIFY serialises commits
# cluster-wide: under steady load the listener keeps looking and nobody notifies.
_IDLE_LOOKS_S = (0.002, 0.005, 0.01, 0.02, 0.04, 0.08)

# Attempts at a batch already read before giving it back to the visibility timeout.
_BATCH_ATTEMPTS = 5


@dataclass
class Stats:
    """What this process has done, for logs, metrics and readiness."""

    outcomes: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    reconnects: int = 0
    last_poll: float = 0.0
    started: float = field(default_factory=time.time)


BatchHook = Callable[[Sequence[RawMessage], Sequence[Outcome], float], None]


class Worker:
    """One listener process's loop over the queue."""

    def __init__(self, settings: Settings, *, on_batch: BatchHook | None = None) -> None:
        self.settings = settings
        self.dsn = settings.require_dsn()
        self.id = uuid.uuid4()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.stats = Stats()
        self.stop_event = threading.Event()
        self.wakeup = Wakeup(self.dsn, WAKEUP_CHANNEL, deadline_s=settings.call_deadline_s)
        self._store: Store | None = None
        self._waiting = False
        self._schema_checked = False
        self._last_heartbeat = 0.0
        self.on_batch = on_batch

    # -- lifecycle -----------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the batch in hand, then leave the loop."""
        self.stop_event.set()

    @property
    def ready(self) -> bool:
        """LISTEN is alive and the queue was polled recently."""
        recent = time.monotonic() - self.stats.last_poll < max(10.0, 3 * self.settings.poll_interval_s)
        return self.wakeup.alive and recent

    def check_schema(self) -> None:
        """Refuse to run against a database missing this version's migrations."""
        verify_schema(self.store())
        self._schema_checked = True
        self._register(self.store())

    def store(self) -> Store:
        """The worker connection's store, reconnecting if it was lost."""
        if self._store is None or self._store.conn.closed or self._store.conn.broken:
            if self._store is not None:
                self._close_store()
            conn = connect(
                self.dsn,
                autocommit=True,
                purpose="worker",
                statement_timeout_s=self.settings.statement_timeout_s,
            )
            self._store = Store(conn, deadline_s=self.settings.call_deadline_s)
            if self._schema_checked:
                self._register(self._store)
        return self._store

    def _register(self, store: Store) -> None:
        store.heartbeat(listener=self.id, host=self.host, pid=self.pid, waiting=False)
        self._waiting = False
        self._last_heartbeat = time.monotonic()

    def _close_store(self) -> None:
        if self._store is not None:
            with contextlib.suppress(psycopg.Error):
                self._store.conn.close()
            self._store = None

    def run(self, *, drain: bool = False) -> None:
        """Handle events until asked to stop (or, with drain, until the queue is empty)."""
        self.check_schema()
        log.info(
            "listener %s started on %s (batch %d)", self.id, describe(self.dsn), self.settings.batch_size
        )
        backoff = 0.1
        idle_looks = 0
        try:
            while not self.stop_event.is_set():
                try:
                    if self.wakeup.ensure():
                        log.info("listening on channel %r; catching up", WAKEUP_CHANNEL)
                        idle_looks = 0
                    handled = self.step()
                    backoff = 0.1
                except TRANSIENT as exc:
                    self.stats.reconnects += 1
                    log.warning("transient database error (%s); retrying in %.1fs", _brief(exc), backoff)
                    self._close_store()
                    self.stop_event.wait(backoff)
                    # Capped so a listener resumes within 5 s of the server coming back.
                    backoff = min(backoff * 2, 4.0) * (0.8 + 0.4 * random.random())  # noqa: S311
                    continue
                if handled:
                    idle_looks = 0
                    continue
                if drain:
                    break
                if idle_looks < len(_IDLE_LOOKS_S):
                    # Recently busy: look again soon rather than ask writers to NOTIFY.
                    self._idle_wait(_IDLE_LOOKS_S[idle_looks])
                    idle_looks += 1
                    continue
                try:
                    if self._set_waiting():
                        continue  # one more look before sleeping: closes the race with writers
                except TRANSIENT:
                    self._close_store()
                    continue
                self._idle_wait(min(self.settings.poll_interval_s, self.settings.heartbeat_interval_s))
        finally:
            self.close()

    def _idle_wait(self, timeout: float) -> None:
        """Wait for a hint, the poll interval, or a stop request, in short slices."""
        deadline = time.monotonic() + timeout
        while not self.stop_event.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.wakeup.wait(min(left, 0.5)):
                return
            if not self.wakeup.alive:
                return  # reconnect, then catch up

    def close(self) -> None:
        """Say goodbye in the heartbeat table and close both connections."""
        if self._store is not None and not self._store.conn.closed:
            with contextlib.suppress(psycopg.Error):
                self._store.stop_listener(listener=self.id)
        self._close_store()
        self.wakeup.close()

    # -- one step --------------------------------------------------------------

    def step(self) -> int:
        """Read one batch and handle it; return how many messages were read."""
        store = self.store()
        batch = store.read_events(qty=self.settings.batch_size, vt_seconds=self.settings.visibility_timeout_s)
        self.stats.last_poll = time.monotonic()
        if not batch:
            return 0
        started = time.monotonic()
        outcomes = self._handle_with_retries(batch, waiting=False)
        self._waiting = False
        self._last_heartbeat = time.monotonic()
        self.stats.batches += 1
        self.stats.outcomes.update(o.outcome for o in outcomes)
        duplicates = len(batch) - len(outcomes)
        if duplicates > 0:
            self.stats.outcomes["no-op"] += duplicates
        _log_outcomes(outcomes)
        if self.on_batch is not None:
            self.on_batch(batch, outcomes, time.monotonic() - started)
        return len(batch)

    def _handle_with_retries(self, batch: Sequence[RawMessage], *, waiting: bool) -> list[Outcome]:
        """Retry a batch in hand through transient errors rather than leave it hidden until its timeout.

        Re-applying is safe: if the messages were redelivered meanwhile, converging a
        booking twice is a no-op and archiving an archived message does nothing.
        """
        delay = 0.05
        for attempt in range(_BATCH_ATTEMPTS):
            try:
                return self._handle(self.store(), batch, waiting=waiting)
            except TRANSIENT as exc:
                if attempt == _BATCH_ATTEMPTS - 1:
                    raise
                self.stats.reconnects += 1
                log.warning("transient error applying a batch (%s); retrying it in %.2fs", _brief(exc), delay)
                if self._store is not None and (self._store.conn.closed or self._store.conn.broken):
                    self._close_store()
                time.sleep(delay)
                delay = min(delay * 3, 2.0)
        raise AssertionError("unreachable")

    def _set_waiting(self) -> bool:
        """Tell writers this listener sleeps and wants a NOTIFY; refresh the heartbeat. True if newly set."""
        now = time.monotonic()
        newly = not self._waiting
        if newly or now - self._last_heartbeat >= self.settings.heartbeat_interval_s:
            self.store().heartbeat(listener=self.id, host=self.host, pid=self.pid, waiting=True)
            self._waiting = True
            self._last_heartbeat = now
        return newly

    def _handle(self, store: Store, batch: Sequence[RawMessage], *, waiting: bool) -> list[Outcome]:
        """Apply a batch; if the database rejects it, split it until the culprit is alone."""
        accepted: list[Accepted] = []
        rejected: list[Rejected] = []
        for raw in batch:
            verdict = judge(
                raw, max_payload_bytes=self.settings.max_payload_bytes, max_reads=self.settings.max_reads
            )
            if isinstance(verdict, Accepted):
                accepted.append(verdict)
            else:
                rejected.append(verdict)
        try:
            return self._apply(store, accepted, rejected, waiting=waiting)
        except TRANSIENT:
            raise
        except psycopg.Error as exc:
            if len(batch) == 1:
                reason = f"database rejected the event: {_brief(exc)}"
                log.error("dead-lettering message %s: %s", batch[0].msg_id, reason)
                return self._apply(store, [], [Rejected(batch[0].msg_id, reason)], waiting=waiting)
            log.warning("batch of %d failed (%s); splitting it", len(batch), _brief(exc))
            half = len(batch) // 2
            return self._handle(store, batch[:half], waiting=False) + self._handle(
                store, batch[half:], waiting=waiting
            )

    def _apply(
        self, store: Store, accepted: list[Accepted], rejected: list[Rejected], *, waiting: bool
    ) -> list[Outcome]:
        for r in rejected:
            log.warning("dead-lettering message %s: %s", r.msg_id, r.reason)
        return store.handle_batch(listener=self.id, accepted=accepted, rejected=rejected)


def _log_outcomes(outcomes: Sequence[Outcome]) -> None:
    """One log record per batch, a line per booking: per-record overhead would rival the charging itself."""
    lines = []
    for o in outcomes:
        if o.outcome == "no-op" and not log.isEnabledFor(logging.DEBUG):
            continue
        lines.append(
            f"booking={o.booking_id} pack={o.purchase_id} outcome={o.outcome}"
            + (f" from_pack={o.previous_purchase_id}" if o.previous_purchase_id else "")
            + (f" reason={o.reason!r}" if o.reason else "")
        )
    if lines and log.isEnabledFor(logging.INFO):
        log.info("%s", "\n".join(lines))


def _brief(exc: BaseException) -> str:
    """An exception as one line: its SQLSTATE when it has one, and the first line of its message."""
    sqlstate = getattr(exc, "sqlstate", None)
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{sqlstate}: {first}" if sqlstate else f"{type(exc).__name__}: {first}"
