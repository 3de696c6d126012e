"""`listener prune`: drop what is past retention, in bounded batches: the queue's archives,
old direct calls on the packs, echoes of booking writes that can absorb nothing, and
heartbeats of listeners long stopped."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from listener.core.db import Conn, connect
from listener.core.schema import require_ledger
from listener.core.sql_files import query
from listener.errors import ConfigError

# One spelling per unit: `m` would be minutes to some and months to others, so it is refused.
_DURATION = re.compile(r"^(?P<n>\d+)\s*(?P<unit>[a-z]+)$")
_UNITS = {"s": "seconds", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
BATCH = 10_000
# A retention beyond this reaches before any timestamp PostgreSQL can subtract it from.
LONGEST = timedelta(days=100 * 366)
# A retention under this needs --force: the archive is what `replay --from-archive` repairs from.
SHORTEST = timedelta(days=1)


def parse_duration(text: str) -> timedelta:
    """'30d', '12h', '90min', '2w', '45s' as a timedelta; '1m' is refused as ambiguous."""
    match = _DURATION.match(text.strip().lower())
    if match and match["unit"] == "m":
        raise ConfigError(
            f"duration {text!r} is ambiguous: write {match['n']}min for minutes, or days (e.g. 30d)"
        )
    if not match or match["unit"] not in _UNITS:
        raise ConfigError(
            f"cannot read duration {text!r}: use a whole number and one of s, min, h, d, w (e.g. 30d, 12h, 90min)"
        )
    try:
        duration = timedelta(**{_UNITS[match["unit"]]: int(match["n"])})
    except OverflowError:
        duration = LONGEST + timedelta(seconds=1)
    if duration > LONGEST:
        raise ConfigError(f"duration {text!r} is longer than {LONGEST.days} days: nothing would be pruned")
    return duration


def check_retention(older_than: timedelta, *, force: bool, dry_run: bool) -> None:
    """Refuse a retention under a day unless forced; a dry run removes nothing and is never refused."""
    if older_than < SHORTEST and not force and not dry_run:
        raise ConfigError(
            f"a retention under one day ({_spoken(older_than)}) removes what `listener replay --from-archive` "
            "repairs from: see it with --dry-run, or pass --force"
        )


def _spoken(d: timedelta) -> str:
    seconds = int(d.total_seconds())
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass
class PruneReport:
    """Rows a prune run removed, or with dry_run would remove."""

    dry_run: bool = False
    archived_events: int = 0
    archived_dead_letters: int = 0
    pack_calls: int = 0
    booking_writes: int = 0
    stopped_listeners: int = 0

    def as_json(self) -> dict[str, Any]:
        """The machine-readable summary."""
        return asdict(self)


# (batched delete, each batch its own transaction (autocommit); its count for a dry run; the report's field)
_BATCHED = (
    ("prune_archive", "prune_archive_count", "archived_events"),
    ("prune_dead_letter_archive", "prune_dead_letter_archive_count", "archived_dead_letters"),
    ("prune_pack_calls", "prune_pack_calls_count", "pack_calls"),
)


def prune(dsn: str, *, older_than: timedelta, dry_run: bool = False, force: bool = False) -> PruneReport:
    """Delete rows older than the retention, a batch per transaction so vacuum keeps up.

    booking_writes are pruned by the ledger's own rule (session_ledger.prune_booking_writes():
    never an echo that may still absorb one of the app's old calls), whatever the retention.
    """
    check_retention(older_than, force=force, dry_run=dry_run)
    report = PruneReport(dry_run=dry_run)
    params = {"older_than": older_than, "limit": BATCH}
    with connect(dsn, purpose="prune") as conn:
        require_ledger(conn, owner_action="delete from the queue's archive")
        for delete, count, attr in _BATCHED:
            setattr(report, attr, _count(conn, count, params) if dry_run else _delete(conn, delete, params))
        report.booking_writes = _prune_booking_writes(conn, dry_run=dry_run)
        if dry_run:
            report.stopped_listeners = _count(conn, "prune_listeners_count", params)
        else:
            report.stopped_listeners = conn.execute(query("prune_listeners"), params).rowcount
    return report


def _count(conn: Conn, name: str, params: dict[str, Any]) -> int:
    row = conn.execute(query(name), params).fetchone()
    return int(row["n"]) if row else 0


def _delete(conn: Conn, name: str, params: dict[str, Any]) -> int:
    total = 0
    while True:
        deleted = conn.execute(query(name), params).rowcount
        total += deleted
        if deleted < BATCH:
            return total


def _prune_booking_writes(conn: Conn, *, dry_run: bool) -> int:
    """Run the ledger's prune in a transaction of its own and count what it deleted; a dry run rolls it back."""
    with conn.transaction(force_rollback=dry_run):
        conn.execute(query("prune_booking_writes"))
        return _count(conn, "booking_writes_deleted", {})
