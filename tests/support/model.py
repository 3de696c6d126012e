"""The ledger's money rules, as README.md and the SQL files' comments state them, in plain Python.

No SQL and no database: the model derives every expectation from the rules themselves.

Given the same sequence of the app's writes, the listener's batches and the operators'
commands, the model says what each pack's ``sessions_used`` must be, what each booking's
ledger row must say (state, pack, why not, who wrote it), which events the trigger must
enqueue, and what ``listener cutover`` and ``listener audit`` must report.
``tests/db/test_model.py`` drives the real database through the same sequence and
compares after every step.

Times are whole seconds from the moment a sequence starts ("now" is 0). Nothing is
scheduled within an hour of it, so "now" moving on while a sequence runs changes no
judgement.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

BOOKING_HOURS = 1
NOW = 0
# Ids the model gives the messages enqueued inside a drain until it learns the database's (number()).
PROVISIONAL = 10**15

# Why a pack could not pay, by class; reason_class() maps the database's wording onto these.
EXHAUSTED = "exhausted"
EXPIRED = "expired"
REFUNDED = "refunded"
FAILED = "failed"
NOT_A_PACK = "not-a-pack"
OTHER_ORG = "other-organisation"
OTHER_CLIENT = "other-client"
NO_SUCH_PACK = "no-such-pack"

_REASON_WORDS = (
    ("exhausted", EXHAUSTED),
    ("expired", EXPIRED),
    ("refunded", REFUNDED),
    ("failed", FAILED),
    ("not a session pack", NOT_A_PACK),
    ("another organisation", OTHER_ORG),
    ("another client", OTHER_CLIENT),
    ("does not exist", NO_SUCH_PACK),
)


class UnknownReason(ValueError):
    """The database gave a reason the rules do not name."""


def reason_class(text: str | None) -> str | None:
    """The class of an unfunded reason as the database worded it (None stays None)."""
    if text is None:
        return None
    found = [cls for word, cls in _REASON_WORDS if word in text]
    if len(found) != 1:
        raise UnknownReason(f"no single reason class for {text!r}")
    return found[0]


@dataclass
class Pack:
    """A session pack: whose it is, its balance and what may stop it paying."""

    id: uuid.UUID
    org: uuid.UUID
    client: uuid.UUID
    total: int | None
    used: int
    expires: int | None
    payment: str


@dataclass(frozen=True)
class Booking:
    """A booking row, as far as the ledger cares."""

    id: uuid.UUID
    org: uuid.UUID
    client: uuid.UUID
    pack: uuid.UUID | None
    status: str
    start: int

    @property
    def end(self) -> int:
        """When the session ends."""
        return self.start + BOOKING_HOURS * 3600


@dataclass(frozen=True)
class Row:
    """A booking's ledger row: state, the pack it names, why not (a class), source, owner judged for."""

    state: str
    pack: uuid.UUID | None
    reason: str | None
    source: str
    client: uuid.UUID | None
    org: uuid.UUID | None


@dataclass
class Message:
    """A queued message; booking is None for one that is not our event."""

    msg_id: int
    booking: uuid.UUID | None
    statement: int  # the write that enqueued it: its messages share one enqueue time
    read_ct: int = 0
    visible: bool = True
    before_cutover: bool = False


@dataclass
class Echo:
    """One booking write the app's old code may echo with a call: per statement, kind and pack."""

    kind: str  # 'use': it left bookings consuming the pack; 'release': it stopped them consuming it
    pack: uuid.UUID
    bookings: list[uuid.UUID]  # by (start, id): the order calls absorb them in
    caller: str
    absorbed: int = 0


@dataclass(frozen=True)
class PackCall:
    """One direct move of a pack: a legacy call (absorbed or not) or a manual adjustment."""

    kind: str
    pack: uuid.UUID
    legacy: bool
    outcome: str
    booking: uuid.UUID | None


@dataclass(frozen=True)
class Reported:
    """What the listener reports for one booking of a batch (or one dead letter: no booking)."""

    booking: uuid.UUID | None
    outcome: str
    pack: uuid.UUID | None
    previous: uuid.UUID | None


@dataclass(frozen=True)
class PackAudit:
    """What `listener audit` must say of one pack."""

    consuming: int
    sessions_used: int
    paid_adoption: int
    paid_cutover: int
    paid_listener: int
    paid_audit: int
    unfunded: int
    adjusted_charged: int
    adjusted_unfunded: int
    given_away: int
    manual: int
    to_charge: int


@dataclass(frozen=True)
class AuditCharge:
    """What `listener audit --charge-all` must do to one booking."""

    booking: uuid.UUID
    pack: uuid.UUID
    charged: bool
    reason: str | None
    sessions_used: int


@dataclass(frozen=True)
class _Charge:
    booking: uuid.UUID
    pack: uuid.UUID
    at: int
    client: uuid.UUID | None
    org: uuid.UUID | None


@dataclass
class LedgerModel:
    """Every pack, booking, ledger row and queued message, and the rules that move them."""

    consuming: frozenset[str]
    shared: bool
    max_reads: int
    absorb: bool
    packs: dict[uuid.UUID, Pack] = field(default_factory=dict)
    bookings: dict[uuid.UUID, Booking] = field(default_factory=dict)
    ledger: dict[uuid.UUID, Row] = field(default_factory=dict)
    queue: list[Message] = field(default_factory=list)
    archived: set[int] = field(default_factory=set)
    dead_lettered: int = 0
    # (booking, pack, charged) for each booking audit judged
    adjustments: list[tuple[uuid.UUID, uuid.UUID, bool]] = field(default_factory=list)
    echoes: list[Echo] = field(default_factory=list)
    calls: list[PackCall] = field(default_factory=list)
    # per pack, how many of its bookings adopted as paid the old code never charged
    given: dict[uuid.UUID, int] = field(default_factory=dict)
    # bookings the pack trigger enqueued since they were last taken (pack_events())
    enqueued_by_packs: list[uuid.UUID] = field(default_factory=list)
    # messages enqueued inside a drain, (provisional id, booking), until the database's ids are known
    unnumbered: list[tuple[int, uuid.UUID]] = field(default_factory=list)
    # what the sequence exercised, for the run's tally: never read by the rules
    seen: Counter[str] = field(default_factory=Counter)
    statements: int = 0

    # -- what a booking consumes ------------------------------------------------

    def consumes(self, booking: Booking | None) -> uuid.UUID | None:
        """The pack a booking consumes now: its pack while its status is a consuming one."""
        if booking is None or booking.status not in self.consuming:
            return None
        return booking.pack

    def charge_key(self, booking: Booking | None) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID] | None:
        """The pack it consumes and, while it consumes, its client and organisation."""
        pack = self.consumes(booking)
        if booking is None or pack is None:
            return None
        return (pack, booking.client, booking.org)

    def references(self, pack: uuid.UUID) -> bool:
        """Whether any booking names this pack (the foreign key then keeps it)."""
        return any(b.pack == pack for b in self.bookings.values())

    # -- the app's writes: each returns the bookings the trigger must enqueue ------

    def write(self, rows: Sequence[tuple[Booking | None, Booking | None]], caller: str) -> list[uuid.UUID]:
        """One statement's rows, (old, new) each (None: the side an INSERT or DELETE lacks).

        An event for each booking whose charge key changed. While legacy calls are
        absorbed, an echo per kind and pack: of every row that started consuming a pack
        ('use') or stopped consuming one ('release'), and of every row of an UPDATE that
        repeats such a transition of the same booking and pack recorded before (the
        window is longer than any sequence). Nothing else records an echo.
        """
        events: list[uuid.UUID] = []
        echoes: dict[tuple[str, uuid.UUID], list[Booking]] = {}
        for old, new in rows:
            if new is not None:
                self.bookings[new.id] = new
            elif old is not None:
                del self.bookings[old.id]
            row = new if new is not None else old
            assert row is not None
            if self.charge_key(old) != self.charge_key(new):
                events.append(row.id)
            was, now = self.consumes(old), self.consumes(new)
            paired = old is not None and new is not None
            if now is not None and (
                was is None or (paired and was == now and self._echoed("use", now, row.id))
            ):
                echoes.setdefault(("use", now), []).append(row)
            if was is not None and now is None:
                echoes.setdefault(("release", was), []).append(row)
            elif (
                paired
                and was is None
                and now is None
                and old is not None
                and old.pack is not None
                and self._echoed("release", old.pack, row.id)
            ):
                echoes.setdefault(("release", old.pack), []).append(row)
        if self.absorb:
            for (kind, pack), bs in echoes.items():
                ordered = [b.id for b in sorted(bs, key=lambda b: (b.start, b.id))]
                self.echoes.append(Echo(kind, pack, ordered, caller))
        return events

    def _echoed(self, kind: str, pack: uuid.UUID, booking: uuid.UUID) -> bool:
        """Whether a write recorded this booking's transition of this kind for this pack."""
        return any(e.kind == kind and e.pack == pack and booking in e.bookings for e in self.echoes)

    def insert(self, booking: Booking, caller: str) -> list[uuid.UUID]:
        """A new booking row."""
        return self.write([(None, booking)], caller)

    def update(self, booking_id: uuid.UUID, caller: str, **changes: object) -> list[uuid.UUID]:
        """An UPDATE of one booking (of none, when it is gone)."""
        old = self.bookings.get(booking_id)
        if old is None:
            return []
        return self.write([(old, replace(old, **changes))], caller)  # type: ignore[arg-type]

    def delete(self, booking_id: uuid.UUID, caller: str) -> list[uuid.UUID]:
        """A DELETE of one booking."""
        old = self.bookings.get(booking_id)
        return [] if old is None else self.write([(old, None)], caller)

    def ended_confirmed(self) -> list[Booking]:
        """The confirmed bookings that have ended: what the cron completes."""
        return [b for b in self.bookings.values() if b.status == "confirmed" and b.end < NOW]

    def complete_past(self, caller: str) -> list[uuid.UUID]:
        """The cron: every confirmed booking that has ended becomes completed, in one statement."""
        return self.write([(b, replace(b, status="completed")) for b in self.ended_confirmed()], caller)

    @staticmethod
    def enqueue(booking_ids: Iterable[uuid.UUID]) -> list[uuid.UUID]:
        """A replay: one event per distinct booking named, whether or not it exists."""
        return sorted(set(booking_ids))

    def queued(self, messages: Sequence[tuple[int, uuid.UUID | None]]) -> None:
        """Messages one write put in the queue, in msg_id order (None: not our event)."""
        self.statements += 1
        self.queue += [Message(msg_id, booking, self.statements) for msg_id, booking in messages]
        self.queue.sort(key=lambda m: m.msg_id)

    # -- packs: an unfunded booking judged again when its pack can newly pay ----------

    @staticmethod
    def may_pay_more(old: Pack, new: Pack) -> bool:
        """Whether a pack's change may let it pay for a booking it refused."""
        refused = ("refunded", "failed")
        return (
            (new.total is not None and (old.total is None or new.total > old.total))
            or new.used < old.used
            or (old.expires is not None and (new.expires is None or new.expires > old.expires))
            or (old.payment in refused and new.payment not in refused)
            or (old.org, old.client) != (new.org, new.client)
        )

    def packs_changed(self, changes: Sequence[tuple[Pack, Pack]]) -> None:
        """One statement's pack changes, (old, new): the pack trigger enqueues, earliest session first,
        every booking held as unfunded on a pack that may now pay."""
        packs = {new.id for old, new in changes if self.may_pay_more(old, new)}
        unfunded = [
            self.bookings[b]
            for b, row in self.ledger.items()
            if row.state == "unfunded" and row.pack in packs and b in self.bookings
        ]
        self.enqueued_by_packs += [b.id for b in sorted(unfunded, key=lambda b: (b.start, b.id))]
        self.seen["pack change enqueued unfunded bookings"] += bool(unfunded)

    def update_pack(self, pack_id: uuid.UUID, **changes: object) -> list[uuid.UUID]:
        """An UPDATE of one pack's columns (of none, when it is gone): the bookings it enqueues."""
        pack = self.packs.get(pack_id)
        if pack is not None:
            old = replace(pack)
            for k, v in changes.items():
                setattr(pack, k, v)
            self.packs_changed([(old, pack)])
        return self.pack_events()

    def pack_events(self) -> list[uuid.UUID]:
        """The bookings the pack trigger enqueued since last asked."""
        out, self.enqueued_by_packs = self.enqueued_by_packs, []
        return out

    def record_given_away(self, pack_ids: Iterable[uuid.UUID]) -> None:
        """The given-away count of these packs: their bookings adopted as paid beyond what the balance covers.

        Of the bookings that consume the pack and that the ledger holds as paid by it, those paid
        by the listener or the audit took a session; what is left of sessions_used covers as many
        of those adopted (by adoption or cut-over), and the rest the old code never charged.
        """
        for pack_id in set(pack_ids):
            pack = self.packs.get(pack_id)
            if pack is None:
                continue
            sources = Counter(
                row.source
                for b in self.bookings.values()
                if self.consumes(b) == pack_id
                and (row := self.ledger.get(b.id)) is not None
                and row.state == "paid"
                and row.pack == pack_id
            )
            adopted = sources["adoption"] + sources["cut-over"]
            certain = sources["listener"] + sources["audit"]
            self.given[pack_id] = max(adopted - max(pack.used - certain, 0), 0)

    def in_flight(self) -> set[uuid.UUID]:
        """Packs with a booking whose ledger row disagrees with its row (or whose booking is gone)."""
        out: set[uuid.UUID] = set()
        for booking_id in set(self.bookings) | set(self.ledger):
            row = self.ledger.get(booking_id)
            now = self.consumes(self.bookings.get(booking_id))
            was = row.pack if row is not None and row.state in ("paid", "unfunded") else None
            if now != was:
                out |= {p for p in (now, was) if p is not None}
        return out

    # -- the trainer's buttons, and the app's old code calling them ----------------

    def use_session(self, pack_id: uuid.UUID, caller: str, *, legacy: bool) -> bool:
        """ "Use 1 session": legacy (the app's signature) absorbs an echo, else charges judged at now."""
        if legacy and self._absorb("use", pack_id, caller):
            return True
        pack = self.packs.get(pack_id)
        ok = pack is not None and self._refusal(pack, NOW, None, None) is None
        if ok:
            assert pack is not None and pack.total is not None
            ok = pack.total - pack.used >= 1
            pack.used += ok
        self.calls.append(PackCall("use", pack_id, legacy, "charged" if ok else "not charged", None))
        return ok

    def release_session(self, pack_id: uuid.UUID, caller: str, *, legacy: bool) -> int | None:
        """ "Reinstate": the new sessions_used, or -1 when there is nothing to give back.

        An absorbed legacy call gives nothing back and answers the balance as it is
        (None for a pack that no longer exists).
        """
        pack = self.packs.get(pack_id)
        if legacy and self._absorb("release", pack_id, caller):
            return None if pack is None else pack.used
        ok = pack is not None and pack.used >= 1
        self.calls.append(
            PackCall("release", pack_id, legacy, "released" if ok else "nothing to give back", None)
        )
        if pack is None or not ok:
            return -1
        old = replace(pack)
        pack.used -= 1
        self.packs_changed([(old, pack)])
        return pack.used

    def _absorb(self, kind: str, pack_id: uuid.UUID, caller: str) -> bool:
        """Consume the oldest unabsorbed echo of this caller's write of this kind to this pack, if any."""
        if not self.absorb:
            return False
        for echo in self.echoes:
            if (echo.kind, echo.pack, echo.caller) == (kind, pack_id, caller) and echo.absorbed < len(
                echo.bookings
            ):
                booking = echo.bookings[echo.absorbed]
                echo.absorbed += 1
                self.seen[f"legacy {kind} absorbed"] += 1
                self.calls.append(PackCall(kind, pack_id, True, "absorbed", booking))
                return True
        return False

    def absorbed(self, booking_id: uuid.UUID) -> bool:
        """Whether a legacy call was absorbed as the echo of this booking's write."""
        return any(c.outcome == "absorbed" and c.booking == booking_id for c in self.calls)

    # -- the listener ---------------------------------------------------------------

    def drain(self, batch_size: int) -> tuple[list[Reported], int]:
        """Read and handle batches of visible messages, in msg_id order, until none is left.

        Returns what each batch reports, and how many messages named a booking another
        message of their batch named too (each such is a no-op).
        """
        reported: list[Reported] = []
        duplicates = 0
        while batch := [m for m in self.queue if m.visible][:batch_size]:
            for m in batch:
                m.read_ct += 1
            taken = {m.msg_id for m in batch}
            self.queue = [m for m in self.queue if m.msg_id not in taken]
            dead = [m for m in batch if m.read_ct > self.max_reads or m.booking is None]
            self.seen["dead-lettered after too many reads"] += sum(m.read_ct > self.max_reads for m in dead)
            accepted = [m for m in batch if m not in dead]
            self.dead_lettered += len(dead)
            reported += [Reported(None, "dead-lettered", None, None) for _ in dead]
            self.archived |= {m.msg_id for m in accepted}
            first: dict[uuid.UUID, bool] = {}
            for m in accepted:
                assert m.booking is not None
                # a booking is adopted when its earliest message in the batch came before the cut-over
                first.setdefault(m.booking, m.before_cutover)
            reported += self._apply(list(first.items())).values()
            duplicates += len(accepted) - len(first)
            enqueued = self.pack_events()
            if enqueued:
                self.statements += 1
                for booking in enqueued:
                    msg_id = PROVISIONAL + len(self.unnumbered) + 1
                    self.unnumbered.append((msg_id, booking))
                    self.queue.append(Message(msg_id, booking, self.statements))
        return reported, duplicates

    def number(self, messages: Sequence[tuple[int, uuid.UUID | None]]) -> None:
        """The database's ids of the messages enqueued inside the last drain, in the order they were enqueued."""
        expected = [booking for _, booking in self.unnumbered]
        got = [booking for _, booking in messages]
        assert got == expected, f"packs enqueued {got} in the drain, the rules say {expected}"
        ids = {
            provisional: msg_id
            for (provisional, _), (msg_id, _) in zip(self.unnumbered, messages, strict=True)
        }
        self.unnumbered = []
        for m in self.queue:
            m.msg_id = ids.get(m.msg_id, m.msg_id)
        self.archived = {ids.get(i, i) for i in self.archived}
        self.queue.sort(key=lambda m: m.msg_id)

    def crash(self, batch_size: int) -> list[int]:
        """A listener claims a batch and dies before committing: the claim (read_ct, hidden) stays."""
        batch = [m for m in self.queue if m.visible][:batch_size]
        for m in batch:
            m.read_ct += 1
            m.visible = False
        return [m.msg_id for m in batch]

    def visibility_timeout(self) -> None:
        """Every claimed message's visibility timeout runs out."""
        for m in self.queue:
            m.visible = True

    # -- the operators ---------------------------------------------------------------

    def cutover(self, until: int | None = None) -> tuple[int, int, list[uuid.UUID]]:
        """`listener cutover`, now, or at the time the write `until` enqueued its messages.

        Events enqueued before the cut-over record what the old code did. A booking whose
        waiting events all came before it is recorded as it is now, no balance moved, and
        its events are archived; one with events on both sides (straddling) is left to the
        listener. Returns (bookings settled, events archived, straddling bookings).
        Messages that are not our event stay.
        """

        def before(m: Message) -> bool:
            return until is None or m.statement < until

        waiting: dict[uuid.UUID, list[Message]] = {}
        for m in self.queue:
            if m.booking is not None:
                waiting.setdefault(m.booking, []).append(m)
        settled = sorted(b for b, ms in waiting.items() if all(before(m) for m in ms))
        straddling = sorted(
            b for b, ms in waiting.items() if any(before(m) for m in ms) and not all(before(m) for m in ms)
        )
        self._apply([(b, True) for b in settled])
        self.record_given_away(
            row.pack for b in settled if (row := self.ledger.get(b)) is not None and row.pack
        )
        archived = {m.msg_id for b in settled for m in waiting[b]}
        self.archived |= archived
        self.queue = [m for m in self.queue if m.msg_id not in archived]
        for m in self.queue:
            m.before_cutover = before(m)
        return len(settled), len(archived), straddling

    def uncharged(self) -> dict[uuid.UUID, list[Booking]]:
        """Per pack, the bookings paid for by adoption or cut-over beyond what its balance covers.

        A booking paid by the listener or the audit certainly took a session; what is left of
        sessions_used covers the earliest adopted ones, and the rest were given away.
        """
        out: dict[uuid.UUID, list[Booking]] = {}
        for pack in self.packs.values():
            certain = 0
            adopted: list[Booking] = []
            for b in self.bookings.values():
                row = self.ledger.get(b.id)
                if self.consumes(b) != pack.id or row is None or row.state != "paid" or row.pack != pack.id:
                    continue
                if row.source in ("listener", "audit"):
                    certain += 1
                else:
                    adopted.append(b)
            adopted.sort(key=lambda b: (b.start, b.id))
            given_away = adopted[max(pack.used - certain, 0) :]
            if given_away:
                out[pack.id] = given_away
        return out

    def audit_packs(self) -> dict[uuid.UUID, PackAudit]:
        """`listener audit`: every pack with bookings, ledger rows, adjustments or a balance."""
        uncharged = self.uncharged()
        report: dict[uuid.UUID, PackAudit] = {}
        for pack in self.packs.values():
            consuming = [b for b in self.bookings.values() if self.consumes(b) == pack.id]
            # judged unfunded by this very pack: a refusal, owing the pack nothing
            refused = sum(
                1
                for b in consuming
                if (row := self.ledger.get(b.id)) is not None
                and row.state == "unfunded"
                and row.pack == pack.id
            )
            owing = len(consuming) - refused
            rows = [r for r in self.ledger.values() if r.pack == pack.id]
            paid = Counter(r.source for r in rows if r.state == "paid")
            adjusted = [charged for _, p, charged in self.adjustments if p == pack.id]
            if not (consuming or rows or adjusted or pack.used):
                continue
            report[pack.id] = PackAudit(
                consuming=len(consuming),
                sessions_used=pack.used,
                paid_adoption=paid["adoption"],
                paid_cutover=paid["cut-over"],
                paid_listener=paid["listener"],
                paid_audit=paid["audit"],
                unfunded=sum(1 for r in rows if r.state == "unfunded"),
                adjusted_charged=sum(adjusted),
                adjusted_unfunded=len(adjusted) - sum(adjusted),
                given_away=max(owing - pack.used, 0),
                manual=max(pack.used - owing, 0),
                to_charge=len(uncharged.get(pack.id, [])),
            )
        return report

    def audit_charge(self) -> list[AuditCharge]:
        """`listener audit --charge-all --yes`: charge each given-away session at its own time."""
        # a pack with a booking whose event is still in flight is left for a later run
        in_flight = self.in_flight()
        given_away = [b for p, bs in self.uncharged().items() if p not in in_flight for b in bs]
        self.seen["audit left a pack in flight"] += any(p in in_flight for p in self.uncharged())
        if not given_away:
            return []
        requests = [_Charge(b.id, b.pack, b.start, b.client, b.org) for b in given_away if b.pack is not None]
        results = self._settle([], requests)
        out: list[AuditCharge] = []
        for r in requests:
            ok, why = results[r.booking]
            self.ledger[r.booking] = Row("paid" if ok else "unfunded", r.pack, why, "audit", r.client, r.org)
            self.adjustments.append((r.booking, r.pack, ok))
            self.seen["audit charged" if ok else f"audit unfunded: {why}"] += 1
            out.append(AuditCharge(r.booking, r.pack, ok, why, self.packs[r.pack].used))
        for r in requests:
            if r.pack in self.given:
                self.given[r.pack] = 0
        return out

    # -- the rules ----------------------------------------------------------------------

    def _refusal(
        self, pack: Pack | None, at: int, client: uuid.UUID | None, org: uuid.UUID | None
    ) -> str | None:
        """Why this pack may not pay for a session at `at` for this client and organisation, capacity aside."""
        if pack is None:
            return NO_SUCH_PACK
        if org is not None and pack.org != org:
            return OTHER_ORG
        if client is not None and not self.shared and pack.client != client:
            return OTHER_CLIENT
        if pack.total is None:
            return NOT_A_PACK
        if pack.payment == "refunded":
            return REFUNDED
        if pack.payment == "failed":
            return FAILED
        if pack.expires is not None and pack.expires <= at:
            return EXPIRED
        return None

    def _settle(
        self, releases: Sequence[uuid.UUID], charges: Sequence[_Charge]
    ) -> dict[uuid.UUID, tuple[bool, str | None]]:
        """Releases first, then charges, earliest session first within what each pack has left.

        A pack left with fewer sessions used than before is a pack change like any other.
        """
        before = {
            p: replace(self.packs[p]) for p in {*releases, *(c.pack for c in charges)} if p in self.packs
        }
        results = self._settle_balances(releases, charges)
        self.packs_changed(
            [(old, self.packs[p]) for p, old in before.items() if self.packs[p].used != old.used]
        )
        return results

    def _settle_balances(
        self, releases: Sequence[uuid.UUID], charges: Sequence[_Charge]
    ) -> dict[uuid.UUID, tuple[bool, str | None]]:
        for pack_id, n in Counter(releases).items():
            pack = self.packs.get(pack_id)
            if pack is not None:
                pack.used -= min(n, pack.used)
        results: dict[uuid.UUID, tuple[bool, str | None]] = {}
        payable: dict[uuid.UUID, list[_Charge]] = {}
        for c in charges:
            why = self._refusal(self.packs.get(c.pack), c.at, c.client, c.org)
            if why is None:
                payable.setdefault(c.pack, []).append(c)
            else:
                results[c.booking] = (False, why)
        for pack_id, wanting in payable.items():
            pack = self.packs[pack_id]
            assert pack.total is not None
            room = max(pack.total - pack.used, 0)
            for i, c in enumerate(sorted(wanting, key=lambda c: c.at)):
                results[c.booking] = (True, None) if i < room else (False, EXHAUSTED)
            pack.used += min(room, len(wanting))
        return results

    def _apply(self, batch: Sequence[tuple[uuid.UUID, bool]]) -> dict[uuid.UUID, Reported]:
        """One batch of distinct bookings (first event before the cut-over or not): converge each ledger row.

        Before the cut-over the app's old code moved the balance itself, so the row is
        recorded without touching a pack; unless a call of the old code was absorbed as
        the echo of this booking's write, and so moved nothing. Returns what each reports:
        its outcome, the pack it now names (or last named) and the pack it was moved from.
        """
        plans = []
        releases: list[uuid.UUID] = []
        charges: list[_Charge] = []
        for booking_id, before_cutover in batch:
            adopt = before_cutover and not self.absorbed(booking_id)
            b = self.bookings.get(booking_id)
            row = self.ledger.get(booking_id)
            want = self.consumes(b)
            held = row.pack if row is not None and row.state == "paid" else None
            # judged for this booking's client and organisation (a deleted booking has neither)
            same_owner = row is None or b is None or (row.client, row.org) == (b.client, b.org)
            release = held is not None and (held != want or not same_owner)
            unfunded_here = row is not None and row.state == "unfunded" and row.pack == want and same_owner
            # unfunded on the same charge key: judged again, unless the event came before the cut-over
            retry = want is not None and unfunded_here and not adopt
            charge = (want is not None and (want != held or not same_owner) and not unfunded_here) or retry
            plans.append((booking_id, adopt, b, row, want, held, release, charge, retry))
            if adopt:
                continue
            if release:
                assert held is not None and row is not None
                if row.source in ("adoption", "cut-over") and self.given.get(held, 0) > 0:
                    # the old code never charged it: the pack's given-away count absorbs the release
                    self.given[held] -= 1
                    self.seen["release absorbed by the given-away count"] += 1
                else:
                    releases.append(held)
            if charge:
                assert b is not None and want is not None
                charges.append(_Charge(booking_id, want, b.start, b.client, b.org))
        results = self._settle(releases, charges)

        outcomes: dict[uuid.UUID, Reported] = {}
        for booking_id, adopt, b, row, want, held, release, charge, retry in plans:
            source = "cut-over" if adopt else "listener"
            client, org = (b.client, b.org) if b is not None else (None, None)
            outcome = "no-op"
            if retry and not results[booking_id][0]:
                # judged again and still unfunded: the row stays, with today's reason
                assert row is not None
                self.ledger[booking_id] = replace(row, reason=results[booking_id][1])
                self.seen["unfunded judged again, still unfunded"] += 1
            elif charge:
                ok, why = (True, None) if adopt else results[booking_id]
                self.seen["unfunded judged again and paid"] += retry
                if not adopt:
                    outcome = ("moved" if release else "paid") if ok else "unfunded"
                self.ledger[booking_id] = Row("paid" if ok else "unfunded", want, why, source, client, org)
            elif release:
                if not adopt:
                    outcome = "released"
                self.ledger[booking_id] = Row("released", held, None, source, client, org)
            elif want is None and row is not None and row.state == "unfunded":
                # it stopped consuming: nothing was charged, so nothing to give back
                self.ledger[booking_id] = Row("released", row.pack, None, source, client, org)
            pack = want if charge else held or want or (row.pack if row is not None else None)
            outcomes[booking_id] = Reported(booking_id, outcome, pack, held if release else None)
            self.seen["cut-over recorded a change" if adopt and (charge or release) else outcome] += 1
            if outcome == "unfunded":
                self.seen[f"unfunded: {self.ledger[booking_id].reason}"] += 1
        return outcomes
