"""`listener complete-past`: the cron path, run once: complete the confirmed bookings that have ended."""

from __future__ import annotations

from psycopg.errors import InsufficientPrivilege

from listener.core.db import connect
from listener.core.schema import NO_LEDGER, ledger_state
from listener.core.store import Store
from listener.errors import LedgerAccessDenied, LedgerMissing


def complete_past(dsn: str) -> int:
    """Complete the past confirmed bookings through the ledger; how many it completed."""
    with connect(dsn, purpose="complete-past") as conn:
        # Not require_ledger(): the cron's own login (service_role) may complete bookings
        # without reading the ledger's version.
        state = ledger_state(conn)
        if not state.installed:
            raise LedgerMissing(NO_LEDGER)
        try:
            return Store(conn).complete_past()
        except InsufficientPrivilege:
            raise LedgerAccessDenied(
                f"role {state.role} may not complete bookings through the ledger: connect as the "
                f"listener's login, service_role or the ledger's owner, {state.owner}"
            ) from None
