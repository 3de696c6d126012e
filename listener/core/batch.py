"""One batch in hand: judge it, apply and ack it in one transaction, isolate what the database rejects."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from uuid import UUID

import psycopg

from listener.core.backoff import Backoff
from listener.core.connection import WorkerConnection
from listener.core.events import Accepted, RawMessage, Rejected, judge
from listener.core.store import LedgerStore, Outcome
from listener.errors import TRANSIENT, first_line
from listener.settings import Settings

log = logging.getLogger("listener")

# Attempts at a batch already read before giving it back to the visibility timeout.
BATCH_ATTEMPTS = 5

RetryHook = Callable[[BaseException], None]


class BatchHandler:
    """Handles the batches one listener reads; subclass and override apply() to change how a batch lands."""

    def __init__(self, settings: Settings, *, listener: UUID, on_retry: RetryHook | None = None) -> None:
        self.settings = settings
        self.listener = listener
        self.on_retry = on_retry

    def handle(self, connection: WorkerConnection, batch: Sequence[RawMessage]) -> list[Outcome]:
        """Handle a batch, retrying it through transient errors rather than leave it hidden until its timeout.

        Re-applying is safe: if the messages were redelivered meanwhile, converging a
        booking twice is a no-op and archiving an archived message does nothing.
        """
        backoff = Backoff(first_s=0.05, factor=3, cap_s=2.0)
        for attempt in range(BATCH_ATTEMPTS):
            try:
                return self.isolate(connection.store(), batch)
            except TRANSIENT as exc:
                if attempt == BATCH_ATTEMPTS - 1:
                    raise
                delay = backoff.next()
                if self.on_retry is not None:
                    self.on_retry(exc)
                log.warning(
                    "transient error applying a batch (%s); retrying it in %.2fs", first_line(exc), delay
                )
                connection.drop_if_lost()
                time.sleep(delay)
        raise AssertionError("unreachable")

    def isolate(self, store: LedgerStore, batch: Sequence[RawMessage]) -> list[Outcome]:
        """Apply a batch; if the database rejects it, split it until the culprit is alone and dead-letter that."""
        accepted, rejected = self.judge(batch)
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
            return self.isolate(store, batch[:half]) + self.isolate(store, batch[half:])

    def judge(self, batch: Sequence[RawMessage]) -> tuple[list[Accepted], list[Rejected]]:
        """Sort the raw messages into those naming a booking and those to dead-letter, logging the latter."""
        accepted: list[Accepted] = []
        rejected: list[Rejected] = []
        for raw in batch:
            verdict = judge(
                raw, max_payload_bytes=self.settings.max_payload_bytes, max_reads=self.settings.max_reads
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
