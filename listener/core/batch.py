"""One batch in hand: judge it, apply and ack it in one transaction, isolate what the database rejects."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from uuid import UUID

import psycopg

from listener.core.events import Accepted, RawMessage, Rejected, judge
from listener.core.store import LedgerStore, Outcome
from listener.errors import TRANSIENT, first_line
from listener.settings import Settings

log = logging.getLogger("listener")


class BatchHandler:
    """Handles the batches one listener reads, on the store it is lent; subclass and override apply()
    to change how a batch lands. Retrying through transient errors, and reconnecting, are the
    connection's (WorkerConnection.apply_batch): a transient error goes straight up."""

    def __init__(self, settings: Settings, *, listener: UUID) -> None:
        self.settings = settings
        self.listener = listener

    def handle(self, store: LedgerStore, batch: Sequence[RawMessage]) -> list[Outcome]:
        """Apply a batch; if the database rejects it, split it until the culprit is alone and dead-letter that."""
        accepted, rejected = self.judge(batch, booking_key=store.booking_key)
        try:
            return self.apply(store, accepted, rejected)
        except TRANSIENT:
            raise
        except psycopg.Error as exc:
            if len(batch) == 1:
                reason = f"database rejected the event: {first_line(exc)}"
                return self.apply(store, [], [Rejected(batch[0].msg_id, reason)])
            log.warning("batch of %d failed (%s); splitting it", len(batch), first_line(exc))
            half = len(batch) // 2
            return self.handle(store, batch[:half]) + self.handle(store, batch[half:])

    def judge(
        self, batch: Sequence[RawMessage], *, booking_key: str = "uuid"
    ) -> tuple[list[Accepted], list[Rejected]]:
        """Sort the raw messages into those naming a booking (by a key of type booking_key) and those to
        dead-letter."""
        accepted: list[Accepted] = []
        rejected: list[Rejected] = []
        for raw in batch:
            verdict = judge(
                raw,
                max_payload_bytes=self.settings.max_payload_bytes,
                max_reads=self.settings.max_reads,
                booking_key=booking_key,
            )
            if isinstance(verdict, Accepted):
                accepted.append(verdict)
            else:
                # logged with its dead-letter id once the batch lands (worker._log_outcomes)
                rejected.append(verdict)
        return accepted, rejected

    def apply(
        self, store: LedgerStore, accepted: Sequence[Accepted], rejected: Sequence[Rejected]
    ) -> list[Outcome]:
        """Charge or release for the accepted messages, dead-letter the rejected ones, ack both: one transaction."""
        return store.handle_batch(listener=self.listener, accepted=accepted, rejected=rejected)
