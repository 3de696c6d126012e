"""The ledger against a model of its rules: random sequences of writes, batches and commands.

A Hypothesis state machine drives the real database (the trigger, the queue,
``handle_batch_v3``) and the real listener code (``Worker.step``: ``read_events``, the
payload judge, ``BatchHandler``) through random sequences of:

- bookings inserted (with or without a pack, past or future, any status, also completed
  before the ledger was installed and adopted), completed, cancelled, marked no-show,
  reopened, rescheduled, deleted, and moved to another pack, client or organisation, as
  the owner; the cron's bulk completion, as the owner or as service_role;
- packs created, topped up or cut, given or stripped of an expiry (also exactly at a
  session's start), refunded or failed, and deleted; a change that may let a pack pay
  enqueues its unfunded bookings, which are judged again;
- the trainer's "use 1 session" and "reinstate" with a reason, and the app's old calls
  without one, which absorb the echo of the same caller's booking write;
- duplicate and replayed events, messages that are not our event, batches of 1, 2, 3 or
  all messages (so events land in other batches than their neighbours), and a listener
  that claims a batch and dies before committing (its messages come back once the
  visibility timeout runs out, read once more; read too often, they are dead-lettered);
- shared packs and absorbing switched on and off, ``listener cutover`` (now, or ``--at``
  an earlier event, leaving straddling bookings to the listener), and ``listener audit``
  with and without ``--charge-all`` (dry, or for real).

``support.model`` states the rules in plain Python. After every step, every pack's
``sessions_used``, every booking's ledger row (state, pack, reason class, source,
client, organisation), every booking row, the queue (order, read counts, visibility),
the dead letters, the archive, the recorded echoes, the direct pack calls and the
packs' given-away counts must equal
the model's; so must the events each write enqueues, what each drain reports booking by
booking, and what the buttons, cut-over and audit answer.

Profiles (``LEDGER_MODEL_PROFILE``): ``model-ci`` (the default: 300 sequences of up to
40 steps, about a minute on two cores) and ``model-long`` (10,000 sequences of up to 50)::

    LEDGER_MODEL_PROFILE=model-long LISTENER_TEST_DSN=... pytest -s tests/db/test_model.py

``-s`` shows the run's tally: how many sequences ran and what they exercised.

A failure prints the shortest failing sequence it found (``state = LedgerModelMachine()``,
then one call per step). Hypothesis keeps it in ``.hypothesis/examples`` at the
repository root (ignored by git), so the next run of this test, in either profile,
replays it first. Once the cause is known, the sequence goes into
``tests/db/test_model_regressions.py`` as an ordinary test.
"""

from __future__ import annotations

import contextlib
import copy
import os
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import sql
from pydantic import SecretStr

from listener.core.batch import BatchHandler
from listener.core.db import Conn, connect
from listener.core.events import RawMessage
from listener.core.store import Outcome, Store
from listener.core.worker import Worker
from listener.devtools import demo_data
from listener.ops.audit import audit, charge
from listener.ops.cutover import cutover
from listener.settings import Settings

from support import ROOT
from support.model import (
    AuditCharge,
    Booking,
    LedgerModel,
    Pack,
    PackAudit,
    PackCall,
    Reported,
    Row,
    reason_class,
)

# The slow tier: a Hypothesis state machine over the real database, hundreds of steps.
pytestmark = pytest.mark.slow

# Low, so that a few crashed claims are enough to dead-letter a message.
MAX_READS = 2
# Settings' minimum; the test never waits it out, it expires claims itself.
VISIBILITY_TIMEOUT_S = 30
BATCH_SIZES = (1, 2, 3)
DAY = 86_400

_COMMON = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    database=DirectoryBasedExampleDatabase(ROOT / ".hypothesis" / "examples"),
)
settings.register_profile("model-ci", _COMMON, max_examples=300, stateful_step_count=40)
settings.register_profile("model-long", _COMMON, max_examples=10_000, stateful_step_count=50)
PROFILE = os.environ.get("LEDGER_MODEL_PROFILE", "model-ci")

# Days a session is held on: never today, so "now" moving on during a run changes nothing.
SESSION_DAYS = st.sampled_from([-1, -2, -3, 1, 2])
EXPIRIES = st.none() | st.builds(
    lambda day, minute: day * DAY + minute * 60,
    st.sampled_from([-1, -2, -3, 1, 2, 3]),
    st.integers(0, 59),
)
# Weighted by repetition towards packs that can pay and bookings of their own client, so
# that most sequences charge something; the other cases still come up every few steps.
TOTALS = st.sampled_from([3, 1, 2, 5, 0, 3, None])
USED = st.sampled_from([0, 1, 0, 2])
PAYMENTS = st.sampled_from(["succeeded", "pending", "succeeded", "refunded", "succeeded", "failed"])
OWNERS = st.integers(0, 3)
# None: the pack's own client
CLIENTS = st.sampled_from([None, None, None, None, 1, 2, 3])
STATUSES = st.sampled_from(
    ["completed", "confirmed", "cancelled", "no_show", "pending", "completed", "confirmed"]
)
BOOKING = st.integers(0, 7)


@dataclass
class Harness:
    """One database for a whole run: two organisations of two clients each, and a listener per batch size."""

    dsn: str
    conn: Conn
    crash_conn: Conn
    owner_role: str
    # (organisation, client): two clients of the first organisation, then two of the second
    owners: list[tuple[uuid.UUID, uuid.UUID]]
    workers: dict[int, Worker] = field(default_factory=dict)
    # what the workers' batches reported, booking by booking
    reported: list[Reported] = field(default_factory=list)

    @classmethod
    def open(cls, dsn: str) -> Harness:
        """Connect and create the organisations and clients every sequence shares."""
        conn = connect(dsn, purpose="tests")
        # Every operator command opens a connection; JIT compiling audit_packs' plan on a
        # server built with LLVM costs 30-60 ms a call, most of a sequence's time, and
        # changes no result.
        conn.execute(sql.SQL("ALTER DATABASE {} SET jit = off").format(sql.Identifier(conn.info.dbname)))
        conn.execute("SET jit = off")
        owners: list[tuple[uuid.UUID, uuid.UUID]] = []
        for name in ("Studio A", "Studio B"):
            org = demo_data.create_org(conn, name)
            second = uuid.uuid4()
            conn.execute(
                "INSERT INTO public.clients (id, org_id, full_name) VALUES (%s, %s, 'second client')",
                [second, org.id],
            )
            owners += [(org.id, org.client_id), (org.id, second)]
        row = conn.execute("SELECT session_user::text AS who").fetchone()
        assert row is not None
        return cls(dsn, conn, connect(dsn, purpose="crashing listener"), row["who"], owners)

    def settings(self, batch_size: int) -> Settings:
        """The listener's settings for batches of this size."""
        return Settings(
            dsn=SecretStr(self.dsn),
            batch_size=batch_size,
            max_reads=MAX_READS,
            visibility_timeout_s=VISIBILITY_TIMEOUT_S,
        )

    def worker(self, batch_size: int) -> Worker:
        """A listener reading batches of this size (never registered: cut-over refuses a live one)."""
        if batch_size not in self.workers:
            self.workers[batch_size] = Worker(self.settings(batch_size), on_batch=self.on_batch)
        return self.workers[batch_size]

    def on_batch(self, _batch: Sequence[RawMessage], outcomes: Sequence[Outcome], _elapsed: float) -> None:
        """Keep what a worker's batch reported."""
        self.reported += [
            Reported(
                None if o.booking_id is None else uuid.UUID(o.booking_id),
                o.outcome,
                None if o.purchase_id is None else uuid.UUID(o.purchase_id),
                None if o.previous_purchase_id is None else uuid.UUID(o.previous_purchase_id),
            )
            for o in outcomes
        ]

    def reset(self, *, consuming: list[str], shared: bool, absorb: bool) -> None:
        """Empty the bookings, packs, ledger, echoes and queues; configure the ledger for a new sequence."""
        for statement in (
            "DELETE FROM public.bookings",
            "DELETE FROM public.client_purchases",
            "DELETE FROM session_ledger.charges",
            "DELETE FROM session_ledger.adjustments",
            "DELETE FROM session_ledger.booking_writes",
            "DELETE FROM session_ledger.pack_calls",
            "DELETE FROM session_ledger.given_away",
            "DELETE FROM pgmq.q_booking_events",
            "DELETE FROM pgmq.a_booking_events",
            "DELETE FROM pgmq.q_booking_events_dlq",
            "DELETE FROM pgmq.a_booking_events_dlq",
        ):
            self.conn.execute(statement)
        self.conn.execute(
            """UPDATE session_ledger.config
                  SET consuming_statuses = %s, allow_shared_packs = %s, absorb_legacy_calls = %s,
                      -- longer than any sequence: the window's edges are pinned in test_legacy_calls
                      legacy_call_window = interval '1 hour',
                      adopt_until = NULL, paused_at = NULL, paused_by = NULL, pause_reason = NULL""",
            [consuming, shared, absorb],
        )

    def close(self) -> None:
        """Close every connection."""
        for w in self.workers.values():
            w.close()
        self.crash_conn.close()
        self.conn.close()


class LedgerModelMachine(RuleBasedStateMachine):
    """The database and the model, step by step; they must agree after every one.

    Packs are a bundle (``packs_0``, ...). Bookings are named by their place in the
    order they were inserted (``booking=0`` is the first; a place past the last wraps
    around), so the set-up can insert some at once.
    """

    harness: ClassVar[Harness | None] = None
    # what every sequence of the run exercised, summed by teardown()
    tally: ClassVar[Counter[str]] = Counter()
    packs = Bundle("packs")

    def __init__(self) -> None:
        super().__init__()
        assert self.harness is not None, "bind a Harness to LedgerModelMachine.harness first"
        self.h: Harness = self.harness
        self.model = LedgerModel(
            consuming=frozenset({"completed"}), shared=False, max_reads=MAX_READS, absorb=False
        )
        self.t0 = datetime.now(UTC)
        self.last_msg = 0
        self.booking_ids: list[uuid.UUID] = []

    # -- helpers ----------------------------------------------------------------

    def at(self, seconds: int) -> datetime:
        """The model's time as a timestamp."""
        return self.t0 + timedelta(seconds=seconds)

    def booking(self, place: int) -> uuid.UUID:
        """The booking inserted at this place (wrapping around); it may have been deleted since."""
        return self.booking_ids[place % len(self.booking_ids)]

    def expect_events(self, expected: list[uuid.UUID]) -> None:
        """The write just made enqueued one event for each of these bookings, and nothing else."""
        rows = self.h.conn.execute(
            """SELECT msg_id, (message ->> 'booking_id')::uuid AS booking_id FROM pgmq.q_booking_events
               WHERE msg_id > %s ORDER BY msg_id""",
            [self.last_msg],
        ).fetchall()
        got = sorted(r["booking_id"] for r in rows)
        assert got == sorted(expected), f"events enqueued {got}, the rules say {sorted(expected)}"
        self.model.queued([(r["msg_id"], r["booking_id"]) for r in rows])
        self.note_messages(rows)

    def note_messages(self, rows: list[dict[str, Any]]) -> None:
        """Remember the newest message seen."""
        if rows:
            self.last_msg = max(self.last_msg, *(int(r["msg_id"]) for r in rows))

    def update(self, place: int, columns: dict[str, Any], **changes: Any) -> None:
        """One UPDATE of one booking's columns, as the owner; changes says the same to the model."""
        booking = self.booking(place)
        statement = sql.SQL("UPDATE public.bookings SET {} WHERE id = %s").format(
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in columns)
        )
        cur = self.h.conn.execute(statement, [*columns.values(), booking])
        assert cur.rowcount == (1 if booking in self.model.bookings else 0)
        self.expect_events(self.model.update(booking, self.h.owner_role, **changes))

    def add_pack(
        self, owner: int, total: int | None, used: int, expires: int | None, payment: str
    ) -> uuid.UUID:
        """Insert a pack of one of the four clients."""
        org, client = self.h.owners[owner]
        pack = Pack(uuid.uuid4(), org, client, total, used, expires, payment)
        self.h.conn.execute(
            """INSERT INTO public.client_purchases
                   (id, org_id, client_id, amount_paid_cents, sessions_total, sessions_used, expires_at, payment_status)
               VALUES (%s, %s, %s, 10000, %s, %s, %s, %s)""",
            [pack.id, org, client, total, used, None if expires is None else self.at(expires), payment],
        )
        self.model.packs[pack.id] = pack
        return pack.id

    def add_booking(
        self, pack: uuid.UUID | None, client: int | None, day: int, status: str, *, adopted: bool = False
    ) -> None:
        """Insert a booking, for the pack's own client unless another of the four is named.

        An adopted one was completed before the ledger was installed: written without the
        trigger, and recorded as paid by adoption, as `listener migrate` records it.
        """
        p = self.model.packs.get(pack) if pack is not None else None
        if client is not None:
            org_id, client_id = self.h.owners[client]
        elif p is not None:
            org_id, client_id = p.org, p.client
        else:
            org_id, client_id = self.h.owners[0]
        # a minute apart: no two sessions start at once, so "earliest first" has one answer
        start = day * DAY + len(self.booking_ids) * 60
        b = Booking(uuid.uuid4(), org_id, client_id, None if p is None else p.id, status, start)
        self.booking_ids.append(b.id)
        insert = """INSERT INTO public.bookings
                        (id, org_id, client_id, start_time, end_time, duration_mins, purchase_id, status)
                    VALUES (%s, %s, %s, %s, %s, 60, %s, %s)"""
        params = [b.id, b.org, b.client, self.at(b.start), self.at(b.end), b.pack, b.status]
        if not adopted:
            self.h.conn.execute(insert, params)
            self.expect_events(self.model.insert(b, self.h.owner_role))
            return
        with self.h.conn.transaction():
            self.h.conn.execute("SET LOCAL session_replication_role = replica")
            self.h.conn.execute(insert, params)
            self.h.conn.execute(
                """INSERT INTO session_ledger.charges (booking_id, purchase_id, state, source, client_id, org_id)
                   VALUES (%s, %s, 'paid', 'adoption', %s, %s)""",
                [b.id, b.pack, b.client, b.org],
            )
        self.model.bookings[b.id] = b
        self.model.ledger[b.id] = Row("paid", b.pack, None, "adoption", b.client, b.org)

    @contextlib.contextmanager
    def as_caller(self, service_role: bool) -> Iterator[Conn]:
        """A transaction on the owner's connection, as the owner or as service_role (the cron's key)."""
        with self.h.conn.transaction():
            if service_role:
                self.h.conn.execute("SET LOCAL ROLE service_role")
            yield self.h.conn

    def caller(self, service_role: bool) -> str:
        """The role the ledger sees calling."""
        return "service_role" if service_role else self.h.owner_role

    # -- set-up ------------------------------------------------------------------

    @initialize(
        target=packs,
        shared=st.booleans(),
        no_show_consumes=st.booleans(),
        absorb=st.booleans(),
        # a pack that can pay to start with: the rules below refund it, expire it or use it up
        owner=OWNERS,
        total=st.sampled_from([3, 2, 5, 1]),
        used=USED,
        expires=st.none() | st.sampled_from([3 * DAY, 2 * DAY + 600]),
        payment=st.sampled_from(["succeeded", "pending"]),
        bookings=st.lists(st.tuples(CLIENTS, SESSION_DAYS, STATUSES), min_size=1, max_size=6),
        adopted=st.lists(st.sampled_from([-1, -2, -3]), max_size=3),
        expires_at_session=st.none() | st.tuples(st.integers(0, 5), st.sampled_from([0, -30, 0, 30])),
    )
    def setup(
        self,
        shared: bool,
        no_show_consumes: bool,
        absorb: bool,
        owner: int,
        total: int | None,
        used: int,
        expires: int | None,
        payment: str,
        bookings: list[tuple[int | None, int, str]],
        adopted: list[int],
        expires_at_session: tuple[int, int] | None,
    ) -> uuid.UUID:
        """A clean database configured as drawn, with one pack and (client, day, status) bookings on it.

        Bookings on days `adopted` were completed on the pack before the ledger was installed.
        `expires_at_session` (place, offset): the pack then expires at that booking's start,
        offset by some seconds, before the listener has seen any of them.
        """
        consuming = ["completed", "no_show"] if no_show_consumes else ["completed"]
        self.h.reset(consuming=consuming, shared=shared, absorb=absorb)
        self.model = LedgerModel(
            consuming=frozenset(consuming), shared=shared, max_reads=MAX_READS, absorb=absorb
        )
        pack = self.add_pack(owner, total, used, expires, payment)
        for day in adopted:
            self.add_booking(pack, None, day, "completed", adopted=True)
        if adopted:
            # what `listener migrate` records at adoption: how many of them the old code never charged
            self.h.conn.execute("SELECT session_ledger.record_given_away(%s::uuid[])", [[pack]])
            self.model.record_given_away([pack])
        for client, day, status in bookings:
            self.add_booking(pack, client, day, status)
        if expires_at_session is not None:
            place, offset = expires_at_session
            self.expire_at_session(pack, place, offset)
        return pack

    # -- bookings ------------------------------------------------------------------

    @rule(pack=packs, client=CLIENTS, day=SESSION_DAYS, status=STATUSES)
    def insert_booking(self, pack: uuid.UUID, client: int | None, day: int, status: str) -> None:
        """A booking on a pack (none if it was deleted), for the pack's own client unless another is named."""
        self.add_booking(pack if pack in self.model.packs else None, client, day, status)

    @rule(client=OWNERS, day=SESSION_DAYS, status=STATUSES)
    def insert_booking_without_pack(self, client: int, day: int, status: str) -> None:
        """A booking with no pack, as the client app makes them."""
        self.add_booking(None, client, day, status)

    @precondition(lambda self: self.booking_ids)
    @rule(booking=BOOKING)
    def complete(self, booking: int) -> None:
        """The trainer's browser completes the session."""
        self.set_status(booking, "completed")

    @precondition(lambda self: self.booking_ids)
    @rule(booking=BOOKING)
    def cancel(self, booking: int) -> None:
        """The session is cancelled."""
        self.set_status(booking, "cancelled")

    @precondition(lambda self: self.booking_ids)
    @rule(booking=BOOKING)
    def no_show(self, booking: int) -> None:
        """The client did not come."""
        self.set_status(booking, "no_show")

    @precondition(lambda self: self.booking_ids)
    @rule(booking=BOOKING, status=STATUSES)
    def set_status(self, booking: int, status: str) -> None:
        """Any status, reopening included."""
        self.update(booking, {"status": status}, status=status)

    @precondition(lambda self: self.booking_ids)
    @rule(booking=BOOKING)
    def delete_booking(self, booking: int) -> None:
        """The booking row is deleted."""
        booking_id = self.booking(booking)
        cur = self.h.conn.execute("DELETE FROM public.bookings WHERE id = %s", [booking_id])
        assert cur.rowcount == (1 if booking_id in self.model.bookings else 0)
        self.expect_events(self.model.delete(booking_id, self.h.owner_role))

    @precondition(lambda self: self.booking_ids)
    @rule(booking=BOOKING, pack=packs | st.none())
    def move_to_pack(self, booking: int, pack: uuid.UUID | None) -> None:
        """The booking is put on another pack, or on none."""
        if pack is not None and pack not in self.model.packs:
            return
        self.update(booking, {"purchase_id": pack}, pack=pack)

    @precondition(lambda self: self.booking_ids)
    @rule(booking=BOOKING, client=OWNERS)
    def move_to_client(self, booking: int, client: int) -> None:
        """The booking is given to another client (of either organisation), its organisation kept."""
        client_id = self.h.owners[client][1]
        self.update(booking, {"client_id": client_id}, client=client_id)

    @precondition(lambda self: self.booking_ids)
    @rule(booking=BOOKING, org=st.integers(0, 1), with_client=st.booleans())
    def move_to_org(self, booking: int, org: int, with_client: bool) -> None:
        """The booking moves to another organisation, with that organisation's first client or not."""
        org_id, client_id = self.h.owners[2 * org]
        if with_client:
            self.update(booking, {"org_id": org_id, "client_id": client_id}, org=org_id, client=client_id)
        else:
            self.update(booking, {"org_id": org_id}, org=org_id)

    @precondition(lambda self: self.booking_ids)
    @rule(booking=BOOKING, day=SESSION_DAYS)
    def reschedule(self, booking: int, day: int) -> None:
        """The session moves to another day, same time of day (not part of the charge key: no event)."""
        b = self.model.bookings.get(self.booking(booking))
        start = day * DAY + (b.start % DAY if b is not None else 0)
        self.update(booking, {"start_time": self.at(start), "end_time": self.at(start + 3600)}, start=start)

    @rule(service_role=st.booleans())
    def cron_completes_past(self, service_role: bool) -> None:
        """The cron's bulk completion of every confirmed booking that has ended (as its key, or the owner)."""
        expected = len(self.model.ended_confirmed())
        with self.as_caller(service_role) as conn:
            row = conn.execute("SELECT session_ledger.complete_past_bookings() AS n").fetchone()
        assert row is not None
        assert row["n"] == expected
        self.expect_events(self.model.complete_past(self.caller(service_role)))

    # -- packs -------------------------------------------------------------------

    @rule(target=packs, owner=OWNERS, total=TOTALS, used=USED, expires=EXPIRIES, payment=PAYMENTS)
    def new_pack(
        self, owner: int, total: int | None, used: int, expires: int | None, payment: str
    ) -> uuid.UUID:
        """A client buys another pack."""
        return self.add_pack(owner, total, used, expires, payment)

    @rule(pack=packs, total=st.sampled_from([3, 1, 2, 0, 5, None]))
    def set_sessions_total(self, pack: uuid.UUID, total: int | None) -> None:
        """A top-up (or a correction down, or not a pack any more)."""
        self.h.conn.execute(
            "UPDATE public.client_purchases SET sessions_total = %s WHERE id = %s", [total, pack]
        )
        self.expect_events(self.model.update_pack(pack, total=total))

    @rule(pack=packs, expires=EXPIRIES)
    def set_expiry(self, pack: uuid.UUID, expires: int | None) -> None:
        """The pack's expiry moves, or goes."""
        at = None if expires is None else self.at(expires)
        self.h.conn.execute("UPDATE public.client_purchases SET expires_at = %s WHERE id = %s", [at, pack])
        self.expect_events(self.model.update_pack(pack, expires=expires))

    @precondition(lambda self: self.booking_ids)
    @rule(pack=packs, booking=BOOKING, offset=st.sampled_from([0, -30, 0, 30]))
    def expire_at_session(self, pack: uuid.UUID, booking: int, offset: int) -> None:
        """The pack expires exactly at a session's start, or just before or after it."""
        b = self.model.bookings.get(self.booking(booking))
        if b is not None:
            self.set_expiry(pack, b.start + offset)
            self.model.seen["pack expires exactly at a session's start"] += offset == 0

    @rule(pack=packs, payment=PAYMENTS)
    def set_payment(self, pack: uuid.UUID, payment: str) -> None:
        """A refund, a failed payment, or a payment that went through."""
        self.h.conn.execute(
            "UPDATE public.client_purchases SET payment_status = %s WHERE id = %s", [payment, pack]
        )
        self.expect_events(self.model.update_pack(pack, payment=payment))

    @rule(pack=packs)
    def delete_pack(self, pack: uuid.UUID) -> None:
        """A pack no booking names is deleted (ledger rows and echoes may still name it)."""
        if pack not in self.model.packs or self.model.references(pack):
            return
        self.h.conn.execute("DELETE FROM public.client_purchases WHERE id = %s", [pack])
        del self.model.packs[pack]

    @rule(pack=packs, legacy=st.booleans(), service_role=st.booleans())
    def use_session(self, pack: uuid.UUID, legacy: bool, service_role: bool) -> None:
        """ "Use 1 session": the app's old call (which may echo a completion) or the trainer's, with a reason."""
        with self.as_caller(service_role) as conn:
            if legacy:
                row = conn.execute("SELECT public.use_session(%s) AS ok", [pack]).fetchone()
            else:
                row = conn.execute("SELECT public.use_session(%s, 'by hand') AS ok", [pack]).fetchone()
        assert row is not None
        assert row["ok"] is self.model.use_session(pack, self.caller(service_role), legacy=legacy)
        self.expect_events(self.model.pack_events())

    @rule(pack=packs, legacy=st.booleans(), service_role=st.booleans())
    def release_session(self, pack: uuid.UUID, legacy: bool, service_role: bool) -> None:
        """ "Reinstate": the app's old call (which may echo a cancellation) or the trainer's, with a reason."""
        with self.as_caller(service_role) as conn:
            if legacy:
                row = conn.execute("SELECT public.release_session(%s) AS used", [pack]).fetchone()
            else:
                row = conn.execute("SELECT public.release_session(%s, 'by hand') AS used", [pack]).fetchone()
        assert row is not None
        assert row["used"] == self.model.release_session(pack, self.caller(service_role), legacy=legacy)
        # a session given back may pay for a booking the pack refused
        self.expect_events(self.model.pack_events())

    # -- events ---------------------------------------------------------------------

    @rule(
        places=st.lists(BOOKING, max_size=3), unknown=st.booleans(), source=st.sampled_from(["replay", None])
    )
    def enqueue(self, places: list[int], unknown: bool, source: str | None) -> None:
        """`listener replay` (or a duplicate of the trigger's own event), possibly of a booking never seen."""
        ids = [self.booking(p) for p in places if self.booking_ids] + ([uuid.uuid4()] if unknown else [])
        row = self.h.conn.execute(
            "SELECT session_ledger.enqueue_bookings(%s::uuid[], %s) AS n", [ids, source]
        ).fetchone()
        assert row is not None
        expected = self.model.enqueue(ids)
        assert row["n"] == len(expected)
        self.expect_events(expected)

    @rule()
    def not_our_event(self) -> None:
        """A message the listener cannot accept (a version it does not know)."""
        self.h.conn.execute(
            "SELECT pgmq.send('booking_events', jsonb_build_object('type', 'booking.changed', 'v', 2, 'booking_id', %s::text))",
            [str(uuid.uuid4())],
        )
        rows = self.h.conn.execute(
            "SELECT msg_id FROM pgmq.q_booking_events WHERE msg_id > %s", [self.last_msg]
        ).fetchall()
        assert len(rows) == 1
        self.model.queued([(rows[0]["msg_id"], None)])
        self.note_messages(rows)

    # -- the listener ---------------------------------------------------------------

    # The one rule without arguments that sorts first: Hypothesis draws the first rule
    # most often (a whole sequence of it, for one), so let that be the listener's run.
    @rule()
    def drain(self) -> None:
        """The listener handles every visible message in one batch (its default size), through its own code."""
        self.drain_in_batches(1000)

    @rule(batch_size=st.sampled_from(BATCH_SIZES))
    def drain_in_batches(self, batch_size: int) -> None:
        """The listener handles every visible message, batch by batch, through its own code."""
        w = self.h.worker(batch_size)
        before = Counter(w.stats.outcomes)
        self.h.reported.clear()
        for _ in range(10_000):
            if not w.step():
                break
        else:
            pytest.fail("the listener kept finding messages")
        counts = Counter(w.stats.outcomes)
        counts.subtract(before)
        reported, duplicates = self.model.drain(batch_size)
        # Sessions given back inside the drain enqueued unfunded bookings of their packs.
        rows = self.h.conn.execute(
            """SELECT msg_id, (message ->> 'booking_id')::uuid AS booking_id
               FROM (SELECT msg_id, message FROM pgmq.q_booking_events
                     UNION ALL SELECT msg_id, message FROM pgmq.a_booking_events) AS m
               WHERE msg_id > %s ORDER BY msg_id""",
            [self.last_msg],
        ).fetchall()
        self.model.number([(r["msg_id"], r["booking_id"]) for r in rows])
        self.note_messages(rows)
        assert Counter(self.h.reported) == Counter(reported), _diff(
            "reported outcomes", Counter(self.h.reported), Counter(reported)
        )
        expected = Counter(r.outcome for r in reported) + Counter({"no-op": duplicates})
        assert +counts == expected, f"drain outcomes {dict(+counts)}, the rules say {dict(expected)}"

    @rule(batch_size=st.sampled_from(BATCH_SIZES))
    def crash(self, batch_size: int) -> None:
        """A listener claims a batch, applies it, and dies before its commit."""
        s = self.h.settings(batch_size)
        store = Store(self.h.crash_conn)
        handler = BatchHandler(s, listener=uuid.uuid4())
        batch = store.read_events(qty=batch_size, vt_seconds=s.visibility_timeout_s)
        accepted, rejected = handler.judge(batch)
        with self.h.crash_conn.transaction(force_rollback=True):
            handler.apply(store, accepted, rejected)
        assert sorted(m.msg_id for m in batch) == self.model.crash(batch_size)
        self.model.seen["crashed with messages in hand"] += bool(batch)

    @rule()
    def visibility_timeout_passes(self) -> None:
        """Every claimed message becomes visible again, as when its visibility timeout runs out."""
        self.h.conn.execute(
            "UPDATE pgmq.q_booking_events SET vt = clock_timestamp() WHERE vt > clock_timestamp()"
        )
        self.model.visibility_timeout()

    # -- configuration and the operators -----------------------------------------------

    @rule(shared=st.booleans(), absorb=st.booleans())
    def configure(self, shared: bool, absorb: bool) -> None:
        """Shared (family) packs allowed or not; the app's old calls absorbed, or the old code gone."""
        self.h.conn.execute(
            "UPDATE session_ledger.config SET allow_shared_packs = %s, absorb_legacy_calls = %s",
            [shared, absorb],
        )
        self.model.shared, self.model.absorb = shared, absorb

    # An app cuts over once; more would only take events from the listener.
    @precondition(lambda self: not self.model.seen["cut-over"])
    @rule(at_message=st.none() | st.integers(0, 7))
    def listener_cutover(self, at_message: int | None) -> None:
        """`listener cutover`: now, or `--at` the time a waiting message (by place in the queue) was enqueued.

        Events enqueued before it are recorded as the old code left them.
        """
        until: int | None = None
        at: datetime | None = None
        if at_message is not None and self.model.queue:
            m = self.model.queue[at_message % len(self.model.queue)]
            row = self.h.conn.execute(
                "SELECT enqueued_at FROM pgmq.q_booking_events WHERE msg_id = %s", [m.msg_id]
            ).fetchone()
            assert row is not None
            until, at = m.statement, row["enqueued_at"]
        report = cutover(self.h.dsn, at)
        settled, archived, straddling = self.model.cutover(until)
        self.model.seen["cut-over"] += 1
        self.model.seen["cut-over settled bookings"] += bool(settled)
        self.model.seen["cut-over left straddling bookings"] += bool(straddling)
        assert (report.settled_bookings, report.archived_events, sorted(report.straddling)) == (
            settled,
            archived,
            straddling,
        )

    @rule(charge_all=st.sampled_from([None, "dry run", "for real"]))
    def audit(self, charge_all: str | None) -> None:
        """`listener audit`, or `--charge-all` (dry, which changes nothing, or with --yes)."""
        if charge_all is None:
            self.check_audit_report()
            return
        report = charge(self.h.dsn, dry_run=charge_all == "dry run")
        model = copy.deepcopy(self.model) if charge_all == "dry run" else self.model
        expected = sorted(model.audit_charge(), key=lambda c: c.booking)
        got = sorted(
            (
                AuditCharge(
                    _uuid(o.booking_id),
                    _uuid(o.purchase_id),
                    o.charged,
                    reason_class(o.reason),
                    o.sessions_used,
                )
                for o in report.outcomes
            ),
            key=lambda c: c.booking,
        )
        assert got == expected

    def check_audit_report(self) -> None:
        """Per pack, its bookings, balance and ledger side by side, as the model has them."""
        report = audit(self.h.dsn)
        got = {
            p.purchase_id: PackAudit(
                consuming=p.consuming,
                sessions_used=p.sessions_used,
                paid_adoption=p.paid_adoption,
                paid_cutover=p.paid_cutover,
                paid_listener=p.paid_listener,
                paid_audit=p.paid_audit,
                unfunded=p.unfunded,
                adjusted_charged=p.adjusted_charged,
                adjusted_unfunded=p.adjusted_unfunded,
                given_away=_audited(p.given_away),
                manual=_audited(p.manual),
                to_charge=_audited(p.to_charge),
            )
            for p in report.packs
        }
        assert got == self.model.audit_packs(), _diff("audit", got, self.model.audit_packs())

    def teardown(self) -> None:
        """Add what this sequence exercised to the run's tally."""
        type(self).tally.update(self.model.seen)
        type(self).tally["sequences"] += 1

    # -- the check ------------------------------------------------------------------------

    @invariant()
    def database_agrees_with_model(self) -> None:
        """Balances, ledger rows, bookings, queue, dead letters and archive: exactly the model's."""
        conn = self.h.conn
        used = {
            r["id"]: r["sessions_used"]
            for r in conn.execute("SELECT id, sessions_used FROM public.client_purchases")
        }
        assert used == {p.id: p.used for p in self.model.packs.values()}, _diff(
            "sessions_used", used, {p.id: p.used for p in self.model.packs.values()}
        )
        ledger = {
            r["booking_id"]: Row(
                r["state"],
                r["purchase_id"],
                reason_class(r["reason"]),
                r["source"],
                r["client_id"],
                r["org_id"],
            )
            for r in conn.execute(
                "SELECT booking_id, purchase_id, state, reason, source, client_id, org_id FROM session_ledger.charges"
            )
        }
        assert ledger == self.model.ledger, _diff("ledger", ledger, self.model.ledger)
        bookings = {
            r["id"]: (r["status"], r["purchase_id"], r["client_id"], r["org_id"], r["start_time"])
            for r in conn.execute(
                "SELECT id, status, purchase_id, client_id, org_id, start_time FROM public.bookings"
            )
        }
        expected_bookings = {
            b.id: (b.status, b.pack, b.client, b.org, self.at(b.start)) for b in self.model.bookings.values()
        }
        assert bookings == expected_bookings, _diff("bookings", bookings, expected_bookings)
        queue = [
            (r["msg_id"], r["read_ct"], r["visible"])
            for r in conn.execute(
                "SELECT msg_id, read_ct, vt <= clock_timestamp() AS visible FROM pgmq.q_booking_events ORDER BY msg_id"
            )
        ]
        assert queue == [(m.msg_id, m.read_ct, m.visible) for m in self.model.queue]
        row = conn.execute("SELECT count(*) AS n FROM pgmq.q_booking_events_dlq").fetchone()
        assert row is not None
        assert row["n"] == self.model.dead_lettered
        archived = {r["msg_id"] for r in conn.execute("SELECT msg_id FROM pgmq.a_booking_events")}
        assert archived == self.model.archived
        echoes = Counter(
            (r["kind"], r["purchase_id"], tuple(r["booking_ids"]), r["caused_by"]["role"], r["absorbed"])
            for r in conn.execute(
                "SELECT kind, purchase_id, booking_ids, caused_by, absorbed FROM session_ledger.booking_writes"
            )
        )
        assert echoes == Counter(
            (e.kind, e.pack, tuple(e.bookings), e.caller, e.absorbed) for e in self.model.echoes
        )
        calls = [
            PackCall(r["kind"], r["purchase_id"], r["legacy"], r["outcome"], r["booking_id"])
            for r in conn.execute(
                "SELECT kind, purchase_id, legacy, outcome, booking_id FROM session_ledger.pack_calls ORDER BY id"
            )
        ]
        assert calls == self.model.calls
        given = {
            r["purchase_id"]: r["sessions"]
            for r in conn.execute("SELECT purchase_id, sessions FROM session_ledger.given_away")
        }
        assert given == self.model.given, _diff("given-away counts", given, self.model.given)


def _uuid(key: object) -> uuid.UUID:
    """The coaching app's keys are uuids."""
    assert isinstance(key, uuid.UUID), key
    return key


def _audited(count: int | None) -> int:
    """The coaching app's packs count used and total, so every audit figure is there."""
    assert count is not None
    return count


def _diff(what: str, got: dict[Any, Any], expected: dict[Any, Any]) -> str:
    """The keys on which the database and the model differ, one line each."""
    lines = [f"{what}: database and model differ"]
    for key in sorted(set(got) | set(expected), key=str):
        g, e = got.get(key), expected.get(key)
        if g != e:
            lines.append(f"  {key}: database {_plain(g)}, model {_plain(e)}")
    return "\n".join(lines)


def _plain(value: object) -> object:
    return asdict(value) if isinstance(value, Row) else value


@pytest.fixture
def harness(ledger_dsn: str) -> Iterator[Harness]:
    """The state machine's database, bound to the machine for the test's duration."""
    h = Harness.open(ledger_dsn)
    LedgerModelMachine.harness = h
    try:
        yield h
    finally:
        LedgerModelMachine.harness = None
        h.close()


def test_ledger_agrees_with_its_model(harness: Harness) -> None:
    LedgerModelMachine.tally.clear()
    run_state_machine_as_test(LedgerModelMachine, settings=settings.get_profile(PROFILE))
    tally = LedgerModelMachine.tally
    print(f"\nprofile {PROFILE}: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
