"""Is the ledger installed, at which version, and may this role use it: the one check every command makes."""

from __future__ import annotations

from dataclasses import dataclass

from listener import __version__
from listener.core.db import Conn
from listener.core.sql_files import SCHEMA_VERSION, query
from listener.errors import LedgerAccessDenied, LedgerMissing, NotLedgerOwner, SchemaOutOfDate, SchemaTooNew

NO_LEDGER = "no session ledger here: run `listener migrate` first"


@dataclass(frozen=True)
class LedgerState:
    """What the catalogs say about the ledger, as seen by the connected role."""

    role: str
    installed: bool
    owner: str | None
    acts_as_owner: bool
    may_read_version: bool
    version: int | None  # None: installed by 0.1.0 (no version recorded), unreadable, or not installed


def ledger_state(conn: Conn) -> LedgerState:
    """Read whether the ledger is installed, who owns it, and its schema version when this role may read it."""
    row = conn.execute(query("ledger_state")).fetchone()
    assert row is not None
    version = None
    if row["installed"] and row["versioned"] and row["may_read_version"]:
        found = conn.execute(query("installed_schema")).fetchone()
        version = found["version"] if found else None
    return LedgerState(
        role=row["role"],
        installed=bool(row["installed"]),
        owner=row["owner"],
        acts_as_owner=bool(row["acts_as_owner"]),
        may_read_version=bool(row["may_read_version"]) or not row["versioned"],
        version=version,
    )


def owner_needed(state: LedgerState, action: str) -> NotLedgerOwner:
    """The one-line refusal of an owner-only command run by another role."""
    return NotLedgerOwner(
        f"this command needs the ledger's owner (role {state.role} cannot {action}): "
        f"run it as {state.owner} or a role that is a member of it"
    )


def require_ledger(conn: Conn, *, owner_action: str | None = None) -> LedgerState:
    """Refuse, with one line saying what to do, a database without this release's ledger or a role that may not use it.

    owner_action, for owner-only commands, says what the role could not do when it is not the owner.
    """
    state = ledger_state(conn)
    if not state.installed:
        raise LedgerMissing(NO_LEDGER)
    if owner_action is not None and not state.acts_as_owner:
        raise owner_needed(state, owner_action)
    if not state.acts_as_owner and not state.may_read_version:
        raise LedgerAccessDenied(
            f"role {state.role} may not use the session ledger: connect as the listener's login "
            f"(a member of session_ledger_listener) or as the ledger's owner, {state.owner}"
        )
    _check_version(state.version)
    return state


def _check_version(version: int | None) -> None:
    if version is None or version < SCHEMA_VERSION:
        raise SchemaOutOfDate(
            f"the database holds schema version {version or 1}, this listener needs {SCHEMA_VERSION}: "
            "run `listener migrate`"
        )
    if version > SCHEMA_VERSION:
        raise schema_too_new(f"schema version {version}")


def schema_too_new(holds: str) -> SchemaTooNew:
    """The one refusal of a database a later release installed or upgraded: holds says what it holds."""
    return SchemaTooNew(
        f"the database holds {holds}, newer than this package ({__version__}, schema {SCHEMA_VERSION}) "
        "knows: upgrade session-ledger-listener"
    )
