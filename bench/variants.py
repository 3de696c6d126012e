"""Variants of the ledger's trigger function, for the bench's own throwaway databases only.

Each variant is the installed function's own definition with one part changed, so it
follows the project's SQL as it evolves; a definition the change no longer fits is an
error, never a silent no-op. The one exception is the baseline of an earlier release
(bench/v020_trigger.sql), kept as it was released.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from psycopg import sql

from listener.core.db import Conn

FUNCTION = "session_ledger.enqueue_booking_changes()"

# 0.2.0's trigger function, adapted only where today's schema requires it.
V020_FILE = Path(__file__).with_name("v020_trigger.sql")
# The floor: the bare UPDATE plus one queue row per completion.
FLOOR_FILE = Path(__file__).with_name("floor_trigger.sql")

# The guard: its call to caller_is_trusted() and the block at the body's top level
# (four spaces in) that refuses an untrusted writer; inner END IFs sit deeper.
_TRUSTED_CALL = re.compile(r"\n    v_trusted := session_ledger\.caller_is_trusted\(\);\n")
_GUARD_BLOCK = re.compile(r"\n    IF NOT v_trusted THEN\n.*?\n    END IF;\n", re.DOTALL)
_NOTIFY = "PERFORM session_ledger.wake_listeners();"
# Any constant will do: only this variant takes the lock.
_NOTIFY_LOCK_KEY = 5_117_2026


class VariantMismatch(RuntimeError):
    """The trigger function no longer has the part a variant changes."""


def definition(conn: Conn) -> str:
    """The installed trigger function's CREATE OR REPLACE statement."""
    return _definition_of(conn, FUNCTION)


def _replace_once(pattern: re.Pattern[str], repl: str, text: str, what: str) -> str:
    out, n = pattern.subn(repl, text)
    if n != 1:
        raise VariantMismatch(f"{FUNCTION}: expected one {what}, found {n}")
    return out


def without_guard(original: str) -> str:
    """The trigger function with its guard removed: it only enqueues (and wakes)."""
    text = _replace_once(_TRUSTED_CALL, "\n", original, "caller_is_trusted() call")
    return _replace_once(_GUARD_BLOCK, "\n", text, "top-level guard block")


def notify_once_in_flight(original: str) -> str:
    """The trigger function sending its NOTIFY only when no other writer's NOTIFY is in flight.

    A writer takes a transaction-scoped advisory try-lock before it NOTIFYs; while one
    notifying transaction is committing, the others skip their NOTIFY, since the
    listener woken by that commit (and its quick re-looks) finds their events too.
    """
    guarded = f"IF pg_catalog.pg_try_advisory_xact_lock({_NOTIFY_LOCK_KEY}) THEN {_NOTIFY} END IF;"
    return _replace_once(re.compile(re.escape(_NOTIFY)), guarded, original, "wake-up NOTIFY")


def v020() -> str:
    """0.2.0's trigger function (no provenance, no echo records) as a CREATE OR REPLACE statement."""
    return _one_definition(V020_FILE)


def floor() -> str:
    """The floor trigger function (only the event's INSERT) as a CREATE OR REPLACE statement."""
    return _one_definition(FLOOR_FILE)


def _one_definition(path: Path) -> str:
    text = path.read_text()
    if text.count("CREATE OR REPLACE FUNCTION ") != 1 or f"FUNCTION {FUNCTION} " not in text:
        raise VariantMismatch(f"{path.name}: expected exactly one definition of {FUNCTION}")
    return text


@contextmanager
def installed(conn: Conn, variant: str, original: str) -> Iterator[None]:
    """Install a variant of the trigger function for the block, then the original again."""
    conn.execute(variant)
    try:
        yield
    finally:
        conn.execute(original)


# The per-row rules the enqueue calls. Their SET search_path clause keeps the planner
# from inlining them, so a bulk UPDATE pays a function call per row for each.
PER_ROW_RULES = (
    "session_ledger.consumed_pack(text, uuid, text[], boolean)",
    "session_ledger.booking_event(uuid, text, jsonb)",
)


@contextmanager
def rules_inlinable(conn: Conn) -> Iterator[None]:
    """Drop the SET search_path clause of the per-row rules for the block (their bodies are fully qualified)."""
    originals = [_definition_of(conn, signature) for signature in PER_ROW_RULES]
    for signature in PER_ROW_RULES:
        conn.execute(sql.SQL("ALTER FUNCTION {} RESET search_path").format(sql.SQL(signature)))
    try:
        yield
    finally:
        # Their own definitions again, so the block leaves the search path as it found it.
        for original in originals:
            conn.execute(original)


def _definition_of(conn: Conn, signature: str) -> str:
    row = conn.execute("SELECT pg_get_functiondef(%s::regprocedure) AS d", [signature]).fetchone()
    assert row is not None
    return str(row["d"])
