"""`listener audit`: the sessions the app's old code gave away, per pack, and taking them.

Before the ledger, bookings completed by the app's cron were never charged.
Adoption records every booking completed by then as paid (source ``adoption``, or
``cut-over`` for those the cut-over settled) without touching a balance, so those
sessions stay free. The audit puts, per pack, side by side: its consuming bookings
(``session_ledger.consumed_pack``), its ``sessions_used``, and the ledger's paid
bookings by source. It names packs whose consuming bookings outnumber
``sessions_used`` (given away) and packs whose ``sessions_used`` exceeds their
bookings (manual deductions, the trainer's "use 1 session"). A booking the ledger
judged unfunded by its pack (the pack had expired, was used up, or was refunded)
is a correct refusal, not a session given away: it counts on neither side.

Which bookings count as uncharged (``session_ledger.audit_uncharged``, the rule
stated once): per pack, a consuming booking the ledger says the pack paid for by
source ``listener`` or ``audit`` certainly took a session. The balance left once
those are counted (``sessions_used`` minus them) covers the earliest of the
bookings paid by ``adoption`` or ``cut-over``, ordered by ``(start_time, id)``; the
rest were given away.

Charging (``--charge PACK ...`` / ``--charge-all``) goes through
``session_ledger.settle_packs``, the ledger's one balance change: one +1 request
per uncharged booking, at its ``start_time``, for its client and organisation, so
exhaustion and expiry are judged at each session's time, earliest first. Each
booking's ledger row then carries source ``audit`` (state ``paid``, or
``unfunded`` with the reason when the pack could not pay), and an adjustment row
(``session_ledger.adjustments``) records the outcome, who ran it and when. Neither
kind is judged again by audit, so a second run charges nothing; a later cancel of an
unfunded booking gives nothing back, and the listener judges it again when its pack
can newly pay. Every pack it judges has its given-away count
(``session_ledger.given_away``) set to zero. A pack with a booking whose event is
still in flight (its ledger row disagrees with its row) is left for a later run:
the balance a pending release will give back is not yet the balance the rule reads.
A dry run takes the same path in transactions it rolls back.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from listener.core.db import Conn, connect
from listener.core.schema import require_ledger
from listener.core.sql_files import query
from listener.errors import UnknownOrg, UnknownPack

# An id of the app's, as psycopg reads the key's type: uuid, integer or bigint, text. It goes back
# to SQL as text, which PostgreSQL reads as the key's own type (exact, and served by its index).
Key = uuid.UUID | int | str

# What the audit cannot judge: a pack counted down keeps no count of what it used.
NOT_AUDITED = (
    "balances of packs counted down (pack.remaining) are not audited: they keep no count of what they used"
)

# Packs per transaction when charging: each commits (or, dry, rolls back) on its own.
CHUNK = 100


@dataclass(frozen=True)
class PackAudit:
    """One pack's bookings, balance and ledger, side by side."""

    purchase_id: Key
    org_id: Key | None
    client_id: Key | None
    sessions_total: int | None
    sessions_used: int
    expires_at: datetime | None
    consuming: int
    paid_adoption: int
    paid_cutover: int
    paid_listener: int
    paid_audit: int
    unfunded: int
    adjusted_charged: int
    adjusted_unfunded: int
    # None: a pack counted down, whose balance is not audited
    given_away: int | None
    manual: int | None
    to_charge: int | None

    @property
    def kind(self) -> str:
        """given-away, manual-deduction, balanced, or not-audited."""
        if self.given_away is None:
            return "not-audited"
        if self.given_away:
            return "given-away"
        if self.manual:
            return "manual-deduction"
        return "balanced"

    def as_json(self) -> dict[str, Any]:
        """The pack as JSON values."""
        out: dict[str, Any] = {k: _plain(v) for k, v in asdict(self).items()}
        out["kind"] = self.kind
        return out


@dataclass
class AuditReport:
    """Every pack with bookings, a balance or ledger rows, of one organisation or all."""

    org_id: Key | None
    packs: list[PackAudit] = field(default_factory=list)
    # Per pack, the direct calls on record (session_ledger.pack_calls): the app's old
    # use_session / release_session absorbed as echoes or moving the balance, and manual adjustments.
    calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def given_away(self) -> list[PackAudit]:
        """Packs whose consuming bookings (those not judged unfunded) outnumber sessions_used."""
        return [p for p in self.packs if p.kind == "given-away"]

    @property
    def manual(self) -> list[PackAudit]:
        """Packs whose sessions_used exceeds their consuming bookings (those not judged unfunded)."""
        return [p for p in self.packs if p.kind == "manual-deduction"]

    @property
    def not_audited(self) -> list[PackAudit]:
        """Packs counted down: their bookings and ledger rows are shown, their balance not judged."""
        return [p for p in self.packs if p.kind == "not-audited"]

    def as_json(self) -> dict[str, Any]:
        """The machine-readable report."""
        return {
            "org_id": _plain(self.org_id),
            "packs_checked": len(self.packs),
            "given_away_packs": len(self.given_away),
            "sessions_given_away": sum(p.given_away or 0 for p in self.packs),
            "sessions_to_charge": sum(p.to_charge or 0 for p in self.packs),
            "manual_deduction_packs": len(self.manual),
            "not_audited_packs": len(self.not_audited),
            "notes": [NOT_AUDITED] if self.not_audited else [],
            "packs": [p.as_json() for p in self.packs],
            "calls": [{k: _plain(v) for k, v in c.items()} for c in self.calls],
        }


@dataclass(frozen=True)
class ChargeOutcome:
    """What charging one given-away booking did (or would do)."""

    booking_id: Key
    purchase_id: Key
    start_time: datetime
    charged: bool
    reason: str | None
    sessions_used: int

    def as_json(self) -> dict[str, Any]:
        """The outcome as JSON values."""
        return {k: _plain(v) for k, v in asdict(self).items()}


@dataclass
class ChargeReport:
    """What a charge run did (or, dry, would do), booking by booking."""

    dry_run: bool
    packs: list[Key] = field(default_factory=list)
    outcomes: list[ChargeOutcome] = field(default_factory=list)
    # Packs left for a later run: a booking of theirs has an event still in flight.
    skipped: list[Key] = field(default_factory=list)

    @property
    def packs_charged(self) -> int:
        """Packs that paid for at least one session."""
        return len({o.purchase_id for o in self.outcomes if o.charged})

    @property
    def packs_unfunded(self) -> int:
        """Packs that could not pay for at least one session."""
        return len({o.purchase_id for o in self.outcomes if not o.charged})

    @property
    def charged(self) -> int:
        """Sessions taken."""
        return sum(o.charged for o in self.outcomes)

    @property
    def unfunded(self) -> int:
        """Given-away sessions the packs could not pay."""
        return sum(not o.charged for o in self.outcomes)

    def per_pack(self) -> list[dict[str, Any]]:
        """Per pack judged: sessions charged, unfunded, and sessions_used afterwards."""
        rows: dict[Key, dict[str, Any]] = {}
        for o in self.outcomes:
            row = rows.setdefault(
                o.purchase_id, {"purchase_id": str(o.purchase_id), "charged": 0, "unfunded": 0}
            )
            row["charged" if o.charged else "unfunded"] += 1
            row["sessions_used"] = o.sessions_used
        return [rows[k] for k in sorted(rows, key=str)]

    def as_json(self) -> dict[str, Any]:
        """The machine-readable report."""
        return {
            "dry_run": self.dry_run,
            "packs_judged": len(self.packs) - len(self.skipped),
            "packs_skipped": [str(p) for p in self.skipped],
            "charged": self.charged,
            "unfunded": self.unfunded,
            "packs": self.per_pack(),
            "bookings": [o.as_json() for o in self.outcomes],
        }


def audit(dsn: str, *, org: Key | None = None) -> AuditReport:
    """Read every pack's bookings, balance and ledger (of one organisation when given)."""
    with connect(dsn, purpose="audit") as conn:
        require_ledger(conn, owner_action="read the audit")
        _require_org(conn, org)
        rows = conn.execute(query("audit_packs"), {"org": _text(org)}).fetchall()
        calls = conn.execute(query("audit_pack_calls"), {"org": _text(org)}).fetchall()
    return AuditReport(org_id=org, packs=[PackAudit(**r) for r in rows], calls=[dict(c) for c in calls])


def charge(
    dsn: str,
    *,
    packs: Sequence[Key] | None = None,
    org: Key | None = None,
    dry_run: bool = True,
) -> ChargeReport:
    """Take the given-away sessions of these packs (None: every pack, of org when given); dry unless told."""
    report = ChargeReport(dry_run=dry_run)
    with connect(dsn, purpose="audit") as conn:
        require_ledger(conn, owner_action="charge packs")
        _require_org(conn, org)
        report.packs = _packs_to_charge(conn, packs, org)
        for start in range(0, len(report.packs), CHUNK):
            chunk = report.packs[start : start + CHUNK]
            with conn.transaction(force_rollback=dry_run):
                texts = [str(p) for p in chunk]
                rows = conn.execute(query("audit_charge"), {"packs": texts}).fetchall()
                in_flight = conn.execute(query("audit_packs_in_flight"), {"packs": texts}).fetchall()
            report.outcomes.extend(ChargeOutcome(**r) for r in rows)
            judged = {r["purchase_id"] for r in rows}
            report.skipped.extend(r["purchase_id"] for r in in_flight if r["purchase_id"] not in judged)
    return report


def _require_org(conn: Conn, org: Key | None) -> None:
    """Fail when `org` is given and no pack or booking belongs to it: a mistyped id, not an empty audit."""
    if org is None:
        return
    row = conn.execute(query("audit_org_known"), {"org": _text(org)}).fetchone()
    if not (row and row["known"]):
        raise UnknownOrg(f"no pack or booking belongs to organisation {org}")


def _packs_to_charge(conn: Conn, packs: Sequence[Key] | None, org: Key | None) -> list[Key]:
    if packs is None:
        return [r["purchase_id"] for r in conn.execute(query("audit_packs_to_charge"), {"org": _text(org)})]
    wanted = sorted({str(p) for p in packs})
    found = {str(r["id"]): r["id"] for r in conn.execute(query("audit_existing_packs"), {"packs": wanted})}
    missing = [p for p in wanted if p not in found]
    if missing:
        raise UnknownPack(f"no such pack: {', '.join(missing)}")
    return [found[p] for p in wanted]


def _text(key: Key | None) -> str | None:
    """An id as the text PostgreSQL reads as the key's type."""
    return None if key is None else str(key)


def _plain(value: object) -> object:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value
