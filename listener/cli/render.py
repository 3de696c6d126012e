"""What several commands print alike: the error line, JSON, counts, short ids and the dead-letter table.

Each command's own output lives beside its parser and handler in listener/cli/commands/. Like
those, this module loads rich only when something is printed, so `listener --help` stays quick.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table


def render_error(line: str) -> None:
    """Print why a command failed, one line on stderr."""
    print(line, file=sys.stderr)


def render_json(report: object) -> None:
    """Print a report's JSON for scripts (`--json`)."""
    print(json.dumps(report, indent=2, default=str))


def counts_text(counts: Mapping[str, int], *, empty: str = "nothing to do") -> str:
    """Counts by name in one phrase, e.g. `paid: 3, released: 1`; `empty` when there are none."""
    return ", ".join(f"{k}: {v}" for k, v in counts.items()) or empty


def short(value: object) -> str:
    """An id shortened as git shortens hashes: its first 8 characters (`--json` keeps the whole)."""
    return str(value)[:8]


def dead_letter_table(letters: list[dict[str, Any]]) -> Table:
    """Dead letters with their reasons and payloads, as `replay --dead-letter` and `discard` show them."""
    from rich.table import Table

    table = Table(title="dead letters")
    for col in ("id", "dead-lettered at", "reason", "payload"):
        table.add_column(col)
    for d in letters:
        table.add_row(str(d["id"]), d["dead_lettered_at"][:19], str(d["reason"]), str(d["preview"]))
    return table
