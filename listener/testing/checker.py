"""The invariants every run must end with; shared by the tests and the fault-injection suite."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field

from listener.core.db import Conn
from listener.core.sql_files import query


@dataclass
class Verdict:
    """What the checker found: counts of each kind of violation, with examples."""

    lost: int = 0
    double_charged: int = 0
    wrong_pack: int = 0
    stale_charges: int = 0
    overdrawn_packs: int = 0
    balance_mismatches: int = 0
    queue_left: int = 0
    # Filled only when check() is given a history of the writes.
    unaccounted_events: int = 0
    phantom_events: int = 0
    rolled_back_effects: int = 0
    dead_lettered: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No violation of any kind."""
        return not (
            self.lost
            or self.double_charged
            or self.wrong_pack
            or self.stale_charges
            or self.overdrawn_packs
            or self.balance_mismatches
            or self.queue_left
            or self.unaccounted_events
            or self.phantom_events
            or self.rolled_back_effects
        )

    @property
    def lost_total(self) -> int:
        """Bookings or events that did not get their effect: uncharged, wrongly charged, or unaccounted."""
        return self.lost + self.wrong_pack + self.stale_charges + self.unaccounted_events


def snapshot_used(conn: Conn) -> dict[uuid.UUID, int]:
    """Every pack's sessions_used, to compare against at the end."""
    return {r["id"]: r["sessions_used"] for r in conn.execute(query("checker_sessions_used")).fetchall()}


def check(
    conn: Conn,
    starting_used: dict[uuid.UUID, int],
    *,
    committed_msg_ids: Collection[int] | None = None,
    uncertain_msg_ids: Collection[int] = (),
    rolled_back_msg_ids: Collection[int] = (),
    rolled_back_bookings: Collection[uuid.UUID] = (),
) -> Verdict:
    """Check balances and ledger against the bookings' final rows, and events against a write history.

    With ``committed_msg_ids`` (the messages enqueued by writes known to have
    committed), every one of them must be archived or dead-lettered, and no
    message may exist that no write could have enqueued. ``uncertain_msg_ids``
    came from writes whose commit outcome is unknown: either fate is fine.
    ``rolled_back_msg_ids`` and ``rolled_back_bookings`` come from completions that
    were rolled back: none of those messages may exist and none of those
    bookings may have a ledger row.
    """
    v = Verdict()
    cfg = conn.execute(query("checker_consuming_statuses")).fetchone()
    assert cfg is not None
    consuming = cfg["consuming_statuses"]
    rows = conn.execute(
        query("checker_bookings_and_ledger"),
        [consuming],
    ).fetchall()
    paid_per_pack: dict[uuid.UUID, int] = {}
    for r in rows:
        wants = r["consumes"] and r["purchase_id"] is not None
        if wants and r["state"] not in ("paid", "unfunded"):
            v.lost += 1
            v.examples.append(f"booking {r['id']} consumes but was never charged")
        elif wants and r["l_pack"] != r["purchase_id"]:
            v.wrong_pack += 1
            v.examples.append(f"booking {r['id']} charged to {r['l_pack']}, not {r['purchase_id']}")
        elif not wants and r["state"] == "paid":
            v.stale_charges += 1
            v.examples.append(f"booking {r['id']} no longer consumes but is still charged")
        if r["state"] == "paid":
            paid_per_pack[r["l_pack"]] = paid_per_pack.get(r["l_pack"], 0) + 1
    # Ledger rows of deleted bookings must not hold a session.
    gone = conn.execute(query("checker_paid_rows_of_deleted_bookings")).fetchone()
    assert gone is not None
    v.stale_charges += int(gone["n"])

    packs = conn.execute(query("checker_packs")).fetchall()
    for p in packs:
        expected = starting_used.get(p["id"], 0) + paid_per_pack.get(p["id"], 0)
        if p["sessions_used"] != expected:
            v.balance_mismatches += 1
            if p["sessions_used"] > expected:
                v.double_charged += p["sessions_used"] - expected
            v.examples.append(f"pack {p['id']} used {p['sessions_used']}, expected {expected}")
        if p["sessions_total"] is not None and p["sessions_used"] > p["sessions_total"]:
            v.overdrawn_packs += 1
            v.examples.append(f"pack {p['id']} overdrawn: {p['sessions_used']}/{p['sessions_total']}")
    left = conn.execute(query("checker_queue_left")).fetchone()
    assert left is not None
    v.queue_left = int(left["n"])
    dead = conn.execute(query("checker_dead_letters")).fetchone()
    assert dead is not None
    v.dead_lettered = int(dead["n"])
    if committed_msg_ids is not None or rolled_back_msg_ids or rolled_back_bookings:
        _check_events(
            conn,
            v,
            committed=committed_msg_ids,
            uncertain=uncertain_msg_ids,
            rolled_back=rolled_back_msg_ids,
            rolled_back_bookings=rolled_back_bookings,
        )
    del v.examples[20:]
    return v


def _check_events(
    conn: Conn,
    v: Verdict,
    *,
    committed: Collection[int] | None,
    uncertain: Collection[int],
    rolled_back: Collection[int],
    rolled_back_bookings: Collection[uuid.UUID],
) -> None:
    """Every committed event archived or dead-lettered; nothing from rolled-back writes anywhere."""
    archived = {r["msg_id"] for r in conn.execute(query("checker_archived_msg_ids")).fetchall()}
    queued = {r["msg_id"] for r in conn.execute(query("checker_queued_msg_ids")).fetchall()}
    dead = {
        int(r["src"])
        for r in conn.execute(query("checker_dead_letter_sources")).fetchall()
        if r["src"] is not None
    }
    settled = archived | dead
    if committed is not None:
        missing = sorted(set(committed) - settled)
        v.unaccounted_events = len(missing)
        v.examples += [
            f"event {m} was committed but is neither archived nor dead-lettered" for m in missing[:5]
        ]
        # The ledger's own events (a pack that may now pay re-judging its unfunded bookings) follow
        # from a committed write of a pack, or from a release the ledger made: no booking write made them.
        derived = {r["msg_id"] for r in conn.execute(query("checker_ledger_made_msg_ids")).fetchall()}
        phantom = sorted((settled | queued) - set(committed) - set(uncertain) - derived)
        v.phantom_events = len(phantom)
        v.examples += [f"event {m} exists but no committed write enqueued it" for m in phantom[:5]]
    ghosts = sorted(set(rolled_back) & (settled | queued))
    v.rolled_back_effects += len(ghosts)
    v.examples += [f"event {m} of a rolled-back write exists" for m in ghosts[:5]]
    if rolled_back_bookings:
        row = conn.execute(
            query("checker_ledger_rows_of"),
            [list(rolled_back_bookings)],
        ).fetchone()
        assert row is not None
        if row["n"]:
            v.rolled_back_effects += int(row["n"])
            v.examples.append(
                f"{row['n']} bookings only ever completed in rolled-back writes have ledger rows"
            )
