"""What converging bookings would do, and what it did: shared by replay and reconcile."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from rich.console import Console
from rich.table import Table


@dataclass
class PackChanges:
    """Sessions charged to and released from each pack, by a repair run."""

    charged: Counter[UUID] = field(default_factory=Counter)
    released: Counter[UUID] = field(default_factory=Counter)

    def add(self, action: str, pack: UUID | None, previous: UUID | None) -> None:
        """Count one action ('charge'/'paid', 'release'/'released', 'move'/'moved')."""
        if action in ("charge", "paid") and pack is not None:
            self.charged[pack] += 1
        elif action in ("release", "released") and (previous or pack) is not None:
            self.released[previous or pack] += 1  # type: ignore[index]
        elif action in ("move", "moved"):
            if pack is not None:
                self.charged[pack] += 1
            if previous is not None:
                self.released[previous] += 1

    def as_json(self) -> list[dict[str, Any]]:
        """Per pack: sessions charged, released, and the net change."""
        packs = sorted(set(self.charged) | set(self.released), key=str)
        return [
            {
                "purchase_id": str(p),
                "charged": self.charged[p],
                "released": self.released[p],
                "net": self.charged[p] - self.released[p],
            }
            for p in packs
        ]


def render_pack_changes(console: Console, rows: list[dict[str, Any]], title: str) -> None:
    """Print per-pack changes (as from PackChanges.as_json) as a table."""
    if not rows:
        console.print(f"{title}: no pack changed")
        return
    table = Table(title=title)
    for col in ("pack", "charged", "released", "net"):
        table.add_column(col, justify="left" if col == "pack" else "right")
    for r in rows:
        table.add_row(r["purchase_id"], str(r["charged"]), str(r["released"]), f"{r['net']:+d}")
    console.print(table)


def summarise(actions: Iterable[str]) -> dict[str, int]:
    """Counts per action or outcome, in a stable order."""
    return dict(sorted(Counter(actions).items()))
