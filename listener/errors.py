"""The failures this project handles, one class each, caught by class."""

from __future__ import annotations

import psycopg
from psycopg import errors as pg_errors


class ListenerError(Exception):
    """Base class: an error the CLI reports as one line, without a traceback."""

    exit_code = 1


class ConfigError(ListenerError):
    """Settings or command-line options that cannot work."""

    exit_code = 2


class DatabaseUnreachable(ListenerError):
    """The database could not be reached."""


class HostSchemaMissing(ListenerError):
    """The app's tables or functions that the ledger builds on are missing."""


class SchemaOutOfDate(ListenerError):
    """The database lacks migrations this version of the listener needs."""


class MigrationChanged(ListenerError):
    """An applied migration's file no longer matches its recorded checksum."""


class PgmqUnavailable(ListenerError):
    """PGMQ is neither installed, nor available as an extension, nor installable from SQL."""


class SchemaTooNew(ListenerError):
    """The database was migrated by a newer release than this listener."""


class ListenerRunning(ListenerError):
    """A live listener forbids what was asked (cut-over, uninstall)."""


# Worth retrying as they are: the database or the network said "not now".
TRANSIENT: tuple[type[Exception], ...] = (
    pg_errors.SerializationFailure,
    pg_errors.DeadlockDetected,
    pg_errors.LockNotAvailable,
    pg_errors.QueryCanceled,
    psycopg.OperationalError,
    DatabaseUnreachable,
)


def first_line(exc: BaseException) -> str:
    """An exception as one line: its SQLSTATE when it has one, then the first non-blank line of its message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{sqlstate}: {first}" if sqlstate else first
