"""The listener loop: wake up, read a batch, hand it over, look again or sleep until told to stop."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from listener import WAKEUP_CHANNEL, logs
from listener.core.batch import BatchHandler
from listener.core.connection import WorkerConnection
from listener.core.db import describe
from listener.core.events import RawMessage
from listener.core.store import LedgerStore, Outcome
from listener.core.wakeup import Hints, Wakeup
from listener.errors import TRANSIENT
from listener.settings import Settings

log = logging.getLogger("listener")

# After the queue runs dry, look again soon a few times before saying "idle".
# Writers send a NOTIFY only to an idle listener, and NOTIFY serialises commits
# cluster-wide: under steady load the listener keeps looking and nobody notifies.
IDLE_LOOKS_S = (0.002, 0.005, 0.01, 0.02, 0.04, 0.08)


@dataclass
class Stats:
    """What this process has done, for logs, metrics and readiness."""

    outcomes: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    reconnects: int = 0
    last_poll: float = 0.0
    # When the loop last went round (a poll, a slice of an idle wait, a retry): liveness.
    last_tick: float = field(default_factory=time.monotonic)
    started: float = field(default_factory=time.time)


BatchHook = Callable[[Sequence[RawMessage], Sequence[Outcome], float], None]


class Worker:
    """One listener process's loop over the queue, on a store borrowed from its connection.

    open_store and wakeup replace the database under the loop (by default, connections to
    the settings' DSN): the worker's unit tests run it on an in-memory store. stop is the
    event request_stop() sets (a new one by default).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        on_batch: BatchHook | None = None,
        handler: type[BatchHandler] = BatchHandler,
        open_store: Callable[[], LedgerStore] | None = None,
        wakeup: Hints | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.dsn = settings.require_dsn()
        self.id = uuid.uuid4()
        self.stats = Stats()
        self.stop_event = threading.Event() if stop is None else stop
        self.wakeup: Hints = wakeup or Wakeup(self.dsn, WAKEUP_CHANNEL, deadline_s=settings.call_deadline_s)
        self.connection = WorkerConnection(
            settings,
            listener=self.id,
            stop=self.stop_event,
            open_store=open_store,
            on_retry=self._count_retry,
        )
        self.handler = handler(settings, listener=self.id)
        self.on_batch = on_batch

    # -- lifecycle -----------------------------------------------------------

    def request_stop(self) -> None:
        """Finish the batch in hand, then leave the loop."""
        self.stop_event.set()

    @property
    def stalled_s(self) -> float | None:
        """How long the loop has not gone round, when that is longer than any healthy batch or
        retry takes (`liveness_window_s`); None while it is alive. A database that is down, or a
        pause, keeps the loop going round: only a wedged process reads as stalled."""
        since = time.monotonic() - self.stats.last_tick
        return since if since > self.liveness_window_s else None

    @property
    def liveness_window_s(self) -> float:
        """The longest a healthy loop goes without a round: a batch's calls each end by the call deadline."""
        return max(60.0, 3 * self.settings.call_deadline_s)

    @property
    def ready(self) -> bool:
        """LISTEN is alive and the queue was polled recently."""
        recent = time.monotonic() - self.stats.last_poll < max(10.0, 3 * self.settings.poll_interval_s)
        return self.wakeup.alive and recent

    def check_schema(self) -> None:
        """Refuse to run against a database whose schema is not this listener's, then register."""
        with self.connection.borrow() as store:
            store.verify_schema()
        self.connection.register()

    def run(self, *, drain: bool = False) -> None:
        """Handle events until asked to stop (or, with drain, until the queue is empty)."""
        self.check_schema()
        log.info(
            "listener %s started on %s (batch %d)", self.id, describe(self.dsn), self.settings.batch_size
        )
        idle_looks = 0
        try:
            while not self.stop_event.is_set():
                self.stats.last_tick = time.monotonic()
                try:
                    if self.wakeup.ensure():
                        log.info("listening on channel %r; catching up", WAKEUP_CHANNEL)
                        idle_looks = 0
                    handled = self.step()
                except TRANSIENT as exc:
                    self.connection.back_off(exc)
                    continue
                if handled:
                    idle_looks = 0
                    continue
                if drain:
                    break
                if idle_looks < len(IDLE_LOOKS_S):
                    # Recently busy: look again soon rather than ask writers to NOTIFY.
                    self._idle_wait(IDLE_LOOKS_S[idle_looks])
                    idle_looks += 1
                    continue
                try:
                    if self.connection.idle():
                        continue  # one more look before sleeping: closes the race with writers
                except TRANSIENT:
                    continue  # the next read meets the same trouble, and backs off
                self._idle_wait(min(self.settings.poll_interval_s, self.settings.heartbeat_interval_s))
        finally:
            self.close()

    def _idle_wait(self, timeout: float) -> None:
        """Wait for a hint, the poll interval, or a stop request, in short slices."""
        deadline = time.monotonic() + timeout
        while not self.stop_event.is_set():
            self.stats.last_tick = time.monotonic()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.wakeup.wait(min(left, 0.5)):
                return
            if not self.wakeup.alive:
                return  # reconnect, then catch up

    def close(self) -> None:
        """Say goodbye in the heartbeat table and close both connections."""
        self.connection.close()
        self.wakeup.close()

    # -- one step --------------------------------------------------------------

    def step(self) -> int:
        """Read one batch and handle it; return how many messages were read."""
        with self.connection.borrow() as store:
            batch = store.read_events(
                qty=self.settings.batch_size, vt_seconds=self.settings.visibility_timeout_s
            )
        self.stats.last_poll = time.monotonic()
        if not batch:
            return 0
        started = time.monotonic()
        outcomes = self.connection.apply_batch(lambda store: self.handler.handle(store, batch))
        self.stats.batches += 1
        self.stats.outcomes.update(o.outcome for o in outcomes)
        duplicates = len(batch) - len(outcomes)
        if duplicates > 0:
            self.stats.outcomes["no-op"] += duplicates
        _log_outcomes(outcomes)
        if self.on_batch is not None:
            self.on_batch(batch, outcomes, time.monotonic() - started)
        return len(batch)

    def _count_retry(self) -> None:
        self.stats.reconnects += 1


def _log_outcomes(outcomes: Sequence[Outcome]) -> None:
    """A batch record carrying a line per booking: per-record overhead would rival the charging itself.
    Every line is stamped (text) or an object of its own with the booking's fields (JSON); dead
    letters get a warning record each."""
    counts: dict[str, int] = {}
    items = []
    for o in outcomes:
        counts[o.outcome] = counts.get(o.outcome, 0) + 1
        if o.outcome == "dead-lettered":
            fields = outcome_fields(o)
            log.warning("%s", logs.key_values(fields), extra={logs.FIELDS: fields})
        elif o.outcome != "no-op" or log.isEnabledFor(logging.DEBUG):
            items.append(outcome_fields(o))
    if items and log.isEnabledFor(logging.INFO):
        summary = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        log.info(
            "batch of %d: %s",
            len(outcomes),
            summary,
            extra={logs.FIELDS: {"batch_size": len(outcomes), "outcomes": counts}, logs.ITEMS: items},
        )


def outcome_fields(o: Outcome) -> dict[str, Any]:
    """One booking's outcome as a log line's fields: booking_id, outcome, purchase_id and reason
    always (null when not known), the rest only when known."""
    fields: dict[str, Any] = {
        "msg": f"booking {o.outcome}",
        "booking_id": o.booking_id,
        "outcome": o.outcome,
        "purchase_id": o.purchase_id,
        "reason": o.reason or None,
    }
    for name, value in (
        ("previous_purchase_id", o.previous_purchase_id),
        ("msg_id", o.msg_id),
        ("dead_letter_id", o.dead_letter_id),
        ("by_role", o.by_role),
        ("by_uid", o.by_uid),
        ("trace", o.trace),
    ):
        if value is not None and value != "":
            fields[name] = value
    return fields


def outcome_line(o: Outcome) -> str:
    """One booking's outcome as key=value pairs; a field that is not known is left out, never printed as None."""
    return logs.key_values(outcome_fields(o))
