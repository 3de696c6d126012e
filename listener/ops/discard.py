"""`listener discard --dead-letter`: close dead letters that no fix will make chargeable.

A discarded letter is archived, not handled: session_ledger.discard_dead_letters()
records in it who discarded it, when and why. The booking it may name is left as it
is; `listener reconcile` still converges it from its row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from listener.core.db import connect
from listener.core.schema import require_ledger
from listener.core.sql_files import query
from listener.errors import ConfigError
from listener.ops.replay import read_dead_letters
from listener.ops.walk import chunks

# The longest reason the database keeps (session_ledger.discard_dead_letters).
REASON_MAX = 1000


@dataclass
class DiscardReport:
    """What a discard found and did."""

    dry_run: bool
    reason: str
    letters: list[dict[str, Any]] = field(default_factory=list)
    discarded: int = 0

    def as_json(self) -> dict[str, Any]:
        """The machine-readable summary."""
        return {
            "dry_run": self.dry_run,
            "reason": self.reason,
            "discarded": self.discarded,
            "dead_letters": self.letters,
        }


def dead_letter_choice(ids: Sequence[int], all_letters: bool) -> None:
    """Refuse a choice of dead letters that names none, or both some and all."""
    if ids and all_letters:
        raise ConfigError("give --id N ... or --all, not both")
    if not ids and not all_letters:
        raise ConfigError("say which dead letters: --id N ... or --all")


def check_reason(reason: str | None) -> str:
    """The reason, trimmed; refused when blank or longer than the database keeps."""
    text = (reason or "").strip()
    if not text:
        raise ConfigError("--reason is required: say why these dead letters are dropped")
    if len(text) > REASON_MAX:
        raise ConfigError(f"--reason is at most {REASON_MAX} characters")
    return text


def discard_dead_letters(
    dsn: str,
    *,
    ids: Sequence[int] = (),
    all_letters: bool = False,
    reason: str | None,
    dry_run: bool = False,
) -> DiscardReport:
    """Archive the chosen dead letters with who, when and why; show each one's reason first."""
    dead_letter_choice(ids, all_letters)
    report = DiscardReport(dry_run=dry_run, reason=check_reason(reason))
    with connect(dsn, purpose="discard") as conn:
        require_ledger(conn, owner_action="read the dead letters")
        found, report.letters = read_dead_letters(conn, ids, undone="nothing was discarded")
        if not dry_run:
            # Only the letters shown: one dead-lettered meanwhile was not seen, so it is not discarded.
            for chunk in chunks(iter(sorted(found))):
                row = conn.execute(
                    query("discard_dead_letters"), {"ids": chunk, "reason": report.reason}
                ).fetchone()
                report.discarded += int(row["discarded"]) if row else 0
    return report
