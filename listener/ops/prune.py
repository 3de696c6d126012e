"""`listener prune`: drop archived events past retention, in bounded batches."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

from listener.core.db import connect
from listener.core.schema import require_ledger
from listener.core.sql_files import query
from listener.errors import ConfigError

_DURATION = re.compile(r"^(?P<n>\d+)(?P<unit>[smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
BATCH = 10_000
# A retention beyond this reaches before any timestamp PostgreSQL can subtract it from.
LONGEST = timedelta(days=100 * 366)


def parse_duration(text: str) -> timedelta:
    """'30d', '12h', '90m', '2w', '45s' as a timedelta."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ConfigError(f"cannot read duration {text!r}: use a number and one of s, m, h, d, w (e.g. 30d)")
    try:
        duration = timedelta(**{_UNITS[match["unit"]]: int(match["n"])})
    except OverflowError:
        duration = LONGEST + timedelta(seconds=1)
    if duration > LONGEST:
        raise ConfigError(f"duration {text!r} is longer than {LONGEST.days} days: nothing would be pruned")
    return duration


@dataclass
class PruneReport:
    """Rows removed by a prune run."""

    archived_events: int = 0
    archived_dead_letters: int = 0
    stopped_listeners: int = 0


def prune(dsn: str, *, older_than: timedelta) -> PruneReport:
    """Delete archive rows older than the retention, a batch per transaction so vacuum keeps up."""
    report = PruneReport()
    params = {"older_than": older_than, "limit": BATCH}
    with connect(dsn, purpose="prune") as conn:
        require_ledger(conn, owner_action="delete from the queue's archive")
        for name, attr in (
            ("prune_archive", "archived_events"),
            ("prune_dead_letter_archive", "archived_dead_letters"),
        ):
            while True:
                deleted = conn.execute(query(name), params).rowcount
                setattr(report, attr, getattr(report, attr) + deleted)
                if deleted < BATCH:
                    break
        report.stopped_listeners = conn.execute(query("prune_listeners"), params).rowcount
    return report
