"""The worker's one autocommit connection to the ledger, and everything about keeping it.

It opens the connection, reopens it after a loss with its backoff policy, registers the
listener on every new one and keeps its heartbeat. The worker loop and the batch handler
only borrow a store from it, as psycopg_pool's callers borrow a connection while the pool
does the reconnecting.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar
from uuid import UUID

import psycopg

from listener.core.backoff import BatchRetry, ReconnectBackoff
from listener.core.db import connect
from listener.core.store import LedgerStore, Store
from listener.errors import TRANSIENT, first_line
from listener.settings import Settings

log = logging.getLogger("listener")

T = TypeVar("T")


class WorkerConnection:
    """Holds the worker's store and its row in the listeners table.

    borrow() lends a store on a live connection; apply_batch() runs a batch in hand through
    transient errors; back_off() is the loop's wait after an error it could not get past;
    idle() keeps the heartbeat while the listener sleeps. `stop` is the event a stop request
    sets, which cuts the loop's wait short. open_store replaces how a store is opened (by
    default an autocommit connection to the settings' DSN): the worker's unit tests hand it
    an in-memory one. on_retry is told of every retry and reconnect, for the metrics.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        listener: UUID,
        stop: threading.Event,
        open_store: Callable[[], LedgerStore] | None = None,
        on_retry: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.listener = listener
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.stop = stop
        self.on_retry = on_retry
        self.backoff = ReconnectBackoff()
        self.registered = False
        self.waiting = False
        self.last_heartbeat = 0.0
        self._open_store = open_store or self._connect
        self._store: LedgerStore | None = None

    def _connect(self) -> LedgerStore:
        conn = connect(
            self.settings.require_dsn(),
            autocommit=True,
            purpose="worker",
            statement_timeout_s=self.settings.statement_timeout_s,
        )
        return Store(conn, deadline_s=self.settings.call_deadline_s)

    # -- lending the store -----------------------------------------------------------

    @contextlib.contextmanager
    def borrow(self) -> Iterator[LedgerStore]:
        """A store on a live connection: opened (and the listener registered again) if the last one was
        lost. A block that ends without an error resets the reconnect backoff; an error goes up."""
        yield self._live()
        self.backoff.reset()

    def apply_batch(self, apply: Callable[[LedgerStore], T]) -> T:
        """Apply the batch in hand on a borrowed store, and again through transient errors after each
        of BatchRetry's delays (on a new connection if that one was lost), up to its attempts; then raise.

        Re-applying is safe: if the messages were redelivered meanwhile, converging a booking
        twice is a no-op and archiving an archived message does nothing. A stop request does not
        cut these waits short: the batch in hand is finished first.
        """
        retry = BatchRetry()
        for attempt in range(1, BatchRetry.ATTEMPTS + 1):
            try:
                with self.borrow() as store:
                    result = apply(store)
            except TRANSIENT as exc:
                if attempt == BatchRetry.ATTEMPTS:
                    raise
                delay = retry.next()
                self._retried()
                log.warning(
                    "transient error applying a batch (%s); retrying it in %.2fs", first_line(exc), delay
                )
                time.sleep(delay)
                continue
            # handle_batch cleared "waiting" in its own transaction: the next idle() sets it again at once.
            self.waiting = False
            return result
        raise AssertionError("unreachable")

    def back_off(self, exc: BaseException) -> None:
        """After a transient error the loop could not get past: start again on a new connection,
        after the next reconnect delay, or sooner if a stop is requested."""
        delay = self.backoff.next()
        self._retried()
        log.warning("transient database error (%s); retrying in %.1fs", first_line(exc), delay)
        self._drop()
        self.stop.wait(delay)

    # -- the listeners table -----------------------------------------------------------

    def register(self) -> None:
        """Enter this listener in the listeners table; from now on every new connection enters it again."""
        with self.borrow() as store:
            self._beat(store, waiting=False)
        self.registered = True

    def idle(self) -> bool:
        """The listener is about to sleep until a NOTIFY: say so (waiting = true, so writers send one),
        refreshing the heartbeat when heartbeat_interval_s has passed. True when it was not waiting
        already: look at the queue once more before sleeping, for a writer that saw it awake."""
        newly = not self.waiting
        if newly or time.monotonic() - self.last_heartbeat >= self.settings.heartbeat_interval_s:
            with self.borrow() as store:
                self._beat(store, waiting=True)
        return newly

    def close(self) -> None:
        """Record a clean stop in the listeners table, then close."""
        if self._store is not None and not self._store.lost:
            with contextlib.suppress(psycopg.Error):
                self._store.stop_listener(listener=self.listener)
        self._drop()

    # -- inside ----------------------------------------------------------------------

    def _live(self) -> LedgerStore:
        if self._store is None or self._store.lost:
            self._drop()
            self._store = self._open_store()
            if self.registered:
                self._beat(self._store, waiting=False)
        return self._store

    def _beat(self, store: LedgerStore, *, waiting: bool) -> None:
        store.heartbeat(listener=self.listener, host=self.host, pid=self.pid, waiting=waiting)
        self.waiting = waiting
        self.last_heartbeat = time.monotonic()

    def _drop(self) -> None:
        """Close the connection without a goodbye: it was lost, or is about to be replaced."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def _retried(self) -> None:
        if self.on_retry is not None:
            self.on_retry()
