"""Sessions charged and released per pack by a repair run: shared by replay and reconcile."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID


@dataclass
class PackChanges:
    """Sessions charged to and released from each pack, by a repair run."""

    charged: Counter[UUID] = field(default_factory=Counter)
    released: Counter[UUID] = field(default_factory=Counter)

    def add(self, outcome: str, pack: UUID | None, previous: UUID | None) -> None:
        """Count one booking's outcome (paid, released, moved; anything else moves no session)."""
        if outcome == "paid" and pack is not None:
            self.charged[pack] += 1
        elif outcome == "released" and (previous or pack) is not None:
            self.released[previous or pack] += 1  # type: ignore[index]
        elif outcome == "moved":
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


def summarise(actions: Iterable[str]) -> dict[str, int]:
    """Counts per action or outcome, in a stable order."""
    return dict(sorted(Counter(actions).items()))
