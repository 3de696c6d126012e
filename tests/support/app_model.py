"""The ledger's rules for a mapped app, in plain Python: what each drain must leave behind.

Much smaller than support/model.py (the coaching app's): a pack has what it has left
(`remaining`) and may be unusable; a booking asks its pack for `cost` while it consumes.
A write enqueues an event for a booking whose charge key (the pack it consumes, or none)
changed, or that consumes at another cost (the trigger's rule); a pack change that may
let it pay more enqueues its unfunded bookings. A drain takes every queued event in one
batch (the listener's batch is far larger than a sequence), as settle_packs does:
releases first, then the charges of the batch in session order, each paid while the sum
of the costs asked of its pack so far in the batch fits what it has left. A batch that
leaves a pack with more than it had enqueues that pack's unfunded bookings for the next
batch.

The amount converges as apply_bookings converges it: a paid booking that consumes the
same pack at another cost than its row recorded gives back what it paid and is charged
its cost whole, or is left unfunded with what it paid given back; an unfunded booking
is judged again at its cost now. A row records what was paid (paid), what is asked
(unfunded), or what was given back (released; an unfunded row released keeps what it
asked).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

Key = Hashable


@dataclass
class Pack:
    """A pack: what it has left and whether it is unusable."""

    remaining: int
    unusable: bool = False


@dataclass
class Booking:
    """A booking: its pack, its session's order, its cost, and whether it consumes now."""

    pack: Key | None
    start: Any
    cost: int = 1
    consuming: bool = False

    @property
    def want(self) -> Key | None:
        """The charge key: the pack it consumes now, or none."""
        return self.pack if self.consuming else None


@dataclass
class Charge:
    """The ledger's row for a booking."""

    state: str
    pack: Key | None
    amount: int = 0


@dataclass
class AppModel:
    """Packs, bookings, the ledger's rows and the queued bookings."""

    packs: dict[Key, Pack] = field(default_factory=dict)
    bookings: dict[Key, Booking] = field(default_factory=dict)
    ledger: dict[Key, Charge] = field(default_factory=dict)
    queued: list[Key] = field(default_factory=list)

    def book(self, booking: Key, pack: Key | None, start: Any, *, cost: int = 1) -> None:
        """A new booking that consumes nothing yet."""
        self.bookings[booking] = Booking(pack, start, cost)

    def write(self, booking: Key, **changes: Any) -> None:
        """A write of the booking's columns; an event when its charge key changed, or when it
        consumes at another cost."""
        b = self.bookings[booking]
        was, cost = b.want, b.cost
        for name, value in changes.items():
            setattr(b, name, value)
        if b.want != was or (b.want is not None and b.cost != cost):
            self.queued.append(booking)

    def pack_changed(self, pack: Key, *, more: int = 0, unusable: bool | None = None) -> None:
        """A pack given `more` or made (un)usable; its unfunded bookings queued when it may pay more."""
        p = self.packs[pack]
        may_pay_more = more > 0 or (unusable is False and p.unusable)
        p.remaining += more
        if unusable is not None:
            p.unusable = unusable
        if may_pay_more:
            self.queued += self.unfunded_on(pack)

    def unfunded_on(self, pack: Key) -> list[Key]:
        """The bookings the ledger holds as unfunded on this pack, earliest session first."""
        found = [b for b, c in self.ledger.items() if c.state == "unfunded" and c.pack == pack]
        return sorted(found, key=lambda b: (self.bookings[b].start, b))

    def drain(self) -> None:
        """Every queued event, one batch at a time, until none is left."""
        while self.queued:
            batch = list(dict.fromkeys(self.queued))
            self.queued = []
            self._batch(batch)

    def _batch(self, batch: list[Key]) -> None:
        unfunded_before = {p: self.unfunded_on(p) for p in self.packs}
        releases: list[Key] = []
        charges: list[Key] = []
        for key in batch:
            booking, row = self.bookings[key], self.ledger.get(key)
            want = booking.want
            if row is None or row.state == "released":
                if want is not None:
                    charges.append(key)
            elif row.state == "paid":
                if want != row.pack:
                    releases.append(key)
                    if want is not None:
                        charges.append(key)
                elif row.amount != booking.cost:  # repriced: what it paid back, its cost charged whole
                    releases.append(key)
                    charges.append(key)
            elif want is None:  # unfunded, no longer consuming: nothing was charged
                self.ledger[key] = Charge("released", row.pack, row.amount)
            else:  # unfunded: judged again on its key, or on the new one
                charges.append(key)
        given = dict.fromkeys(self.packs, 0)
        for key in releases:
            row = self.ledger[key]
            assert row.pack is not None
            self.packs[row.pack].remaining += row.amount
            given[row.pack] += row.amount
            self.ledger[key] = Charge("released", row.pack, row.amount)
        asked = dict.fromkeys(self.packs, 0)
        taken = dict.fromkeys(self.packs, 0)
        for key in sorted(charges, key=lambda k: (self.bookings[k].start, k)):
            booking = self.bookings[key]
            pack = booking.want
            if self.packs[pack].unusable:
                self.ledger[key] = Charge("unfunded", pack, booking.cost)
                continue
            # The costs asked so far in the batch count, paid or not (settle_packs' cost_upto).
            asked[pack] += booking.cost
            if booking.cost == 0 or asked[pack] <= self.packs[pack].remaining:
                self.ledger[key] = Charge("paid", pack, booking.cost)
                taken[pack] += booking.cost
            else:
                self.ledger[key] = Charge("unfunded", pack, booking.cost)
        for key in self.packs:
            self.packs[key].remaining -= taken[key]
            if given[key] > taken[key]:
                self.queued += unfunded_before[key]

    def balances(self) -> dict[Key, int]:
        """What each pack has left."""
        return {k: p.remaining for k, p in self.packs.items()}

    def states(self) -> dict[Key, tuple[str, Key | None]]:
        """Each booking's ledger row: (state, pack)."""
        return {k: (c.state, c.pack) for k, c in self.ledger.items()}

    def rows(self) -> dict[Key, tuple[str, Key | None, int]]:
        """Each booking's ledger row: (state, pack, amount)."""
        return {k: (c.state, c.pack, c.amount) for k, c in self.ledger.items()}
