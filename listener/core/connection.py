"""The worker's one autocommit connection: opened on demand, reopened after a loss, registered as a listener."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from uuid import UUID

import psycopg

from listener.core.db import connect
from listener.core.store import LedgerStore, Store


class WorkerConnection:
    """Holds the worker's store and its row in the listeners table.

    open_store replaces how a store is opened (by default a new autocommit connection to
    dsn): the worker's unit tests hand it an in-memory one.
    """

    def __init__(
        self,
        dsn: str,
        *,
        listener: UUID,
        statement_timeout_s: float,
        deadline_s: float,
        open_store: Callable[[], LedgerStore] | None = None,
    ) -> None:
        self.dsn = dsn
        self.listener = listener
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.statement_timeout_s = statement_timeout_s
        self.deadline_s = deadline_s
        self.registered = False
        self.waiting = False
        self.last_heartbeat = 0.0
        self._open_store = open_store or self._connect
        self._store: LedgerStore | None = None

    def _connect(self) -> LedgerStore:
        conn = connect(
            self.dsn, autocommit=True, purpose="worker", statement_timeout_s=self.statement_timeout_s
        )
        return Store(conn, deadline_s=self.deadline_s)

    @property
    def lost(self) -> bool:
        """The connection was closed or broke."""
        return self._store is not None and self._store.lost

    def store(self) -> LedgerStore:
        """The store on a live connection, reconnecting (and re-registering) if it was lost."""
        if self._store is None or self.lost:
            self.drop()
            self._store = self._open_store()
            if self.registered:
                self._heartbeat(self._store, waiting=False)
        return self._store

    def register(self) -> None:
        """Enter this listener in the listeners table; from now on a reconnect registers it again."""
        self._heartbeat(self.store(), waiting=False)
        self.registered = True

    def heartbeat(self, *, waiting: bool) -> None:
        """Refresh the heartbeat and say whether this listener sleeps waiting for a NOTIFY."""
        self._heartbeat(self.store(), waiting=waiting)

    def batch_applied(self) -> None:
        """handle_batch refreshed the heartbeat and cleared "waiting" in the same transaction."""
        self.waiting = False
        self.last_heartbeat = time.monotonic()

    def _heartbeat(self, store: LedgerStore, *, waiting: bool) -> None:
        store.heartbeat(listener=self.listener, host=self.host, pid=self.pid, waiting=waiting)
        self.waiting = waiting
        self.last_heartbeat = time.monotonic()

    def drop(self) -> None:
        """Close the connection without a goodbye: it was lost, or is about to be replaced."""
        if self._store is not None:
            self._store.close()
            self._store = None

    def drop_if_lost(self) -> None:
        """Forget a connection that broke, so the next store() opens a new one."""
        if self.lost:
            self.drop()

    def close(self) -> None:
        """Record a clean stop in the listeners table, then close."""
        if self._store is not None and not self._store.lost:
            with contextlib.suppress(psycopg.Error):
                self._store.stop_listener(listener=self.listener)
        self.drop()
