"""Bounded-memory walks over large result sets, shared by replay and reconcile."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from listener.core.db import Conn
from listener.core.sql_files import query

CHUNK = 1000


# What an operator command reports as it walks: (what it is doing, rows done, rows in all).
# The CLI draws it as a progress bar; ops never draw anything.
Progress = Callable[[str, int, int], None]


def no_progress(_what: str, _done: int, _total: int) -> None:
    """Report nothing."""


def count_rows(conn: Conn, name: str, params: dict[str, Any]) -> int:
    """The n of a named counting query."""
    row = conn.execute(query(name), params).fetchone()
    return int(row["n"]) if row else 0


def stream(reader: Conn, name: str, params: dict[str, Any]) -> Iterator[Any]:
    """Rows of a named query through a server-side cursor: bounded memory on any table size."""
    with reader.cursor(name=f"ledger_{name}") as cur:
        cur.itersize = CHUNK
        cur.execute(query(name), params)
        for row in cur:
            yield row["booking_id"]
    reader.rollback()


def chunks(items: Iterator[Any]) -> Iterator[list[Any]]:
    """Items in lists of CHUNK."""
    while chunk := list(itertools.islice(items, CHUNK)):
        yield chunk
