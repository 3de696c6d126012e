"""LISTEN on its own autocommit connection: a hint to read now, never the source of truth."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Protocol

import psycopg
from psycopg import sql

from listener.core.db import Conn, connect, watchdog
from listener.core.sql_files import query
from listener.errors import DatabaseUnreachable

log = logging.getLogger("listener.core.wakeup")

_PING_EVERY_S = 15.0


class Hints(Protocol):
    """What the worker loop needs from its source of wake-up hints (Wakeup, or a stand-in in tests)."""

    reconnects: int

    @property
    def alive(self) -> bool:
        """Whether hints can arrive now."""
        ...

    def ensure(self) -> bool:
        """Be ready to receive hints; True means some may have been missed."""
        ...

    def wait(self, timeout: float) -> bool:
        """Block up to timeout seconds; True when a hint arrived."""
        ...

    def close(self) -> None:
        """Stop receiving hints."""
        ...


class Wakeup:
    """A LISTEN connection that reconnects by itself and tells the caller when it did."""

    def __init__(self, dsn: str, channel: str, *, deadline_s: float = 60.0) -> None:
        self._dsn = dsn
        self._deadline_s = deadline_s
        self._channel = channel
        self._conn: Conn | None = None
        self._last_ping = 0.0
        self.reconnects = 0

    @property
    def alive(self) -> bool:
        """Whether the LISTEN connection is open."""
        return self._conn is not None and not self._conn.closed

    def ensure(self) -> bool:
        """Open the connection and LISTEN if needed; True means notifications may have been missed."""
        if self.alive:
            return False
        self.close()
        conn = connect(self._dsn, autocommit=True, purpose="wakeup")
        try:
            with watchdog.guard(conn, self._deadline_s):
                conn.execute(sql.SQL(query("listen")).format(sql.Identifier(self._channel)))
        except psycopg.Error:
            conn.close()
            raise
        if self._last_ping:
            self.reconnects += 1
        self._conn = conn
        self._last_ping = time.monotonic()
        return True

    def wait(self, timeout: float) -> bool:
        """Block up to timeout seconds; True when a notification arrived."""
        if not self.alive:
            time.sleep(timeout)
            return False
        assert self._conn is not None
        try:
            notified = False
            for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                notified = True
            if notified:
                # Collapse a burst of hints into one wake-up.
                for _ in self._conn.notifies(timeout=0):
                    pass
            elif time.monotonic() - self._last_ping >= _PING_EVERY_S:
                with watchdog.guard(self._conn, self._deadline_s):
                    self._conn.execute(query("ping"))
                self._last_ping = time.monotonic()
            return notified
        except (psycopg.OperationalError, DatabaseUnreachable) as exc:
            log.warning("wake-up connection lost (%s); polling until it is back", type(exc).__name__)
            self.close()
            return False

    def close(self) -> None:
        """Close the connection, ignoring errors from an already broken one."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
