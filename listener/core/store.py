"""The narrow connector: every statement the listener's loop runs, by name, and the protocol the worker
and the batch handler see it through (a stand-in store for their unit tests fits the same protocol)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args
from uuid import UUID

import psycopg

from listener.core.db import Conn, watchdog
from listener.core.events import Accepted, RawMessage, Rejected
from listener.core.schema import require_ledger
from listener.core.sql_files import query

# What handling one message can come to, as handle_batch_v3 names it; the metrics and
# the status counters use the same names.
OutcomeName = Literal["paid", "released", "moved", "unfunded", "no-op", "dead-lettered"]
OUTCOME_NAMES: tuple[OutcomeName, ...] = get_args(OutcomeName)


@dataclass(frozen=True)
class Outcome:
    """What handling one booking (or one dead letter) did."""

    booking_id: str | None
    outcome: OutcomeName
    purchase_id: str | None
    previous_purchase_id: str | None
    reason: str | None
    # who caused it: the writer's role, signed-in user and W3C traceparent, when known
    by_role: str | None = None
    by_uid: str | None = None
    trace: str | None = None
    # a dead letter's queue message, and its id in the dead-letter queue (what replay takes)
    msg_id: int | None = None
    dead_letter_id: int | None = None


class LedgerStore(Protocol):
    """What the worker loop and the batch handler need from the ledger, on one connection.

    Store below is the one the listener runs. Errors follow psycopg's: TRANSIENT ones
    (listener.errors) mean try again, any other psycopg.Error from handle_batch means the
    database rejected the batch.
    """

    # The SQL type of the app's booking key (uuid, integer, bigint or text): what an event's
    # booking_id must be. Read by verify_schema(); uuid until then.
    booking_key: str

    @property
    def lost(self) -> bool:
        """The connection was closed or broke: open another store."""
        ...

    def close(self) -> None:
        """Close the connection, quietly if it is already broken."""
        ...

    def verify_schema(self) -> None:
        """Refuse, with one line saying what to run, a ledger that is not this listener's."""
        ...

    def read_events(self, *, qty: int, vt_seconds: int) -> list[RawMessage]:
        """Claim up to qty messages for vt_seconds; the claim commits at once."""
        ...

    def handle_batch(
        self, *, listener: UUID, accepted: Sequence[Accepted], rejected: Sequence[Rejected]
    ) -> list[Outcome]:
        """Apply the accepted messages, dead-letter the rejected ones, and ack both, in one transaction."""
        ...

    def heartbeat(self, *, listener: UUID, host: str, pid: int, waiting: bool) -> None:
        """Register the listener or refresh its heartbeat."""
        ...

    def stop_listener(self, *, listener: UUID) -> None:
        """Record a clean stop."""
        ...


class Store:
    """The listener's statements, each one autocommitted on its own."""

    def __init__(self, conn: Conn, *, deadline_s: float = 60.0) -> None:
        self.conn = conn
        self.deadline_s = deadline_s
        self.booking_key = "uuid"

    @property
    def lost(self) -> bool:
        """The connection was closed or broke."""
        return self.conn.closed or self.conn.broken

    def close(self) -> None:
        """Close the connection, ignoring errors from an already broken one."""
        with contextlib.suppress(psycopg.Error):
            self.conn.close()

    def verify_schema(self) -> None:
        """Refuse, with one line saying what to run, a database whose schema is not this listener's;
        learn the app's booking key type."""
        require_ledger(self.conn)
        self.booking_key = str(self._rows("app_keys")[0]["keys"]["booking"])

    def _rows(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with watchdog.guard(self.conn, self.deadline_s):
            return self.conn.execute(query(name), params, prepare=True).fetchall()

    def read_events(self, *, qty: int, vt_seconds: int) -> list[RawMessage]:
        """Claim up to qty messages for vt_seconds; the claim commits at once."""
        return [
            RawMessage(r["msg_id"], r["read_ct"], r["enqueued_at"], r["message"])
            for r in self._rows("read_events", {"qty": qty, "vt": vt_seconds})
        ]

    def handle_batch(
        self, *, listener: UUID, accepted: Sequence[Accepted], rejected: Sequence[Rejected]
    ) -> list[Outcome]:
        """Apply the accepted messages, dead-letter the rejected ones, and ack both, in one transaction."""
        rows = self._rows(
            "handle_batch",
            {
                "listener": listener,
                "msg_ids": ",".join(str(a.msg_id) for a in accepted),
                "dead_msg_ids": [r.msg_id for r in rejected],
                "dead_reasons": [r.reason for r in rejected],
            },
        )
        return [
            Outcome(
                r["booking_id"],
                r["outcome"],
                r["purchase_id"],
                r["previous_purchase_id"],
                r["reason"],
                r["by_role"],
                r["by_uid"],
                r["trace"],
                r["msg_id"],
                r["dead_letter_id"],
            )
            for r in rows
        ]

    def heartbeat(self, *, listener: UUID, host: str, pid: int, waiting: bool) -> None:
        """Register the listener or refresh its heartbeat."""
        self._rows("heartbeat", {"listener": listener, "host": host, "pid": pid, "waiting": waiting})

    def stop_listener(self, *, listener: UUID) -> None:
        """Record a clean stop."""
        self._rows("stop_listener", {"listener": listener})

    def complete_past(self) -> int:
        """Run the cron path once; return how many bookings it completed."""
        return int(self._rows("complete_past")[0]["completed"])
