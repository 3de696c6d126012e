"""Which of the database's tables are the app's bookings and packs: the mapping the install recorded
(session_ledger.mapping), or the coaching app's when none is recorded or this role may not read it."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from listener.core.db import Conn
from listener.core.sql_files import query
from listener.mapping import model as mapping_model
from listener.mapping.model import Mapping


@dataclass(frozen=True)
class AppTables:
    """The app's tables and the booking columns that decide a charge, as the checks' queries take them."""

    bookings: str  # schema.name, as the mapping writes it
    packs: str
    # the booking columns whose value decides what a booking charges: status, pack, organisation, client
    charge_columns: tuple[str, ...]

    @property
    def params(self) -> dict[str, object]:
        """The parameters the doctor's catalog queries take."""
        names = (self.bookings.partition(".")[2], self.packs.partition(".")[2])
        return {
            "bookings": self.bookings,
            "packs": self.packs,
            "charge_columns": list(self.charge_columns),
            # a function body naming either table, as a regular expression's alternatives
            "money": "|".join(n.replace("$", "\\$") for n in names),
        }


def tables_of(mapping: Mapping) -> AppTables:
    """The tables a mapping names."""
    b, p = mapping.booking, mapping.pack
    columns = [b.status, p.column if p.find == "column" else None, b.org, b.client]
    return AppTables(b.table, p.table, tuple(dict.fromkeys(c for c in columns if c is not None)))


def app_tables(conn: Conn) -> AppTables:
    """The app's tables as the install recorded them, else the coaching app's (a database without the
    ledger, one installed before mappings, or a role that may not read the ledger's tables)."""
    return tables_of(recorded_mapping(conn) or mapping_model.default())


def recorded_mapping(conn: Conn) -> Mapping | None:
    """The mapping the install recorded, or None; inside the caller's transaction, under a savepoint."""
    try:
        with conn.transaction():
            present = conn.execute(
                query("ledger_tables_present"), {"names": ["session_ledger.mapping"]}
            ).fetchall()
            if not present:
                return None
            row = conn.execute(query("stored_mapping")).fetchone()
    except psycopg.errors.InsufficientPrivilege:
        return None
    return mapping_model.from_stored(row["mapping"]) if row is not None else None
