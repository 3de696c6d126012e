"""Deliberately broken listeners, only for proving that the checker catches them. Never deploy these.

``--mode ack-first`` archives a batch in its own transaction and only then applies
it: a crash or a dropped connection in between loses the events.
``--mode no-ledger`` charges or releases straight from each event with no ledger,
so duplicates and toggles charge twice.
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Sequence
from types import FrameType

from pydantic import SecretStr

from listener import logs
from listener.core.batch import BatchHandler
from listener.core.events import Accepted, Rejected
from listener.core.store import LedgerStore, Outcome, Store
from listener.core.worker import Worker
from listener.settings import Settings


class AckFirstHandler(BatchHandler):
    """Acks before it commits the charges."""

    def apply(
        self, store: LedgerStore, accepted: Sequence[Accepted], rejected: Sequence[Rejected]
    ) -> list[Outcome]:
        assert isinstance(store, Store), "a broken listener runs on the database"
        ids = [a.msg_id for a in accepted]
        if ids:
            store.conn.execute("SELECT pgmq.archive('booking_events', %s::bigint[])", [ids])
        # The ack already committed: apply straight from the event, as a broken consumer would.
        rows = store.conn.execute(
            "SELECT booking_id::text, outcome, purchase_id::text, previous_purchase_id::text, reason"
            " FROM session_ledger.apply_bookings(%s::uuid[], %s::timestamptz[])",
            [[a.booking_id for a in accepted], [a.enqueued_at for a in accepted]],
        ).fetchall()
        store.handle_batch(listener=self.listener, accepted=[], rejected=rejected)
        return [
            Outcome(r["booking_id"], r["outcome"], r["purchase_id"], r["previous_purchase_id"], r["reason"])
            for r in rows
        ]


class NoLedgerHandler(BatchHandler):
    """Charges on every event that finds its booking completed, and releases on every other."""

    def apply(
        self, store: LedgerStore, accepted: Sequence[Accepted], rejected: Sequence[Rejected]
    ) -> list[Outcome]:
        assert isinstance(store, Store), "a broken listener runs on the database"
        with store.conn.transaction():
            for a in accepted:
                row = store.conn.execute(
                    "SELECT status, purchase_id, start_time FROM public.bookings WHERE id = %s",
                    [a.booking_id],
                ).fetchone()
                if row is None or row["purchase_id"] is None:
                    continue
                if row["status"] == "completed":
                    store.conn.execute(
                        "SELECT public.use_session(%s, %s)", [row["purchase_id"], row["start_time"]]
                    )
                else:
                    store.conn.execute("SELECT public.release_session(%s)", [row["purchase_id"]])
            ids = [a.msg_id for a in accepted] + [r.msg_id for r in rejected]
            if ids:
                store.conn.execute("SELECT pgmq.archive('booking_events', %s::bigint[])", [ids])
        return []


MODES: dict[str, type[BatchHandler]] = {"ack-first": AckFirstHandler, "no-ledger": NoLedgerHandler}


def main() -> None:
    """Run a broken listener until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m faults.broken_listener")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--mode", choices=sorted(MODES), required=True)
    parser.add_argument("--log-format", choices=["text", "json"], default="text")
    parser.add_argument("--poll-interval", type=float, default=0.2)
    parser.add_argument("--visibility-timeout", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    logs.configure(fmt=args.log_format)
    settings = Settings(
        dsn=SecretStr(args.dsn),
        poll_interval_s=args.poll_interval,
        visibility_timeout_s=args.visibility_timeout,
        batch_size=args.batch_size,
    )
    worker = Worker(settings, handler=MODES[args.mode])

    def stop(_signum: int, _frame: FrameType | None) -> None:
        worker.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run()


if __name__ == "__main__":
    main()
