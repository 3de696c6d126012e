"""Every single-column write an attacker would try on a bookings table, generated from the catalog.

A column the app adds later is covered with no change to the tests that use this: they
read the table's columns here and try each candidate value on each column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from psycopg import sql

from listener.core.db import Conn


@dataclass(frozen=True)
class Column:
    """A column of the table: its name and its type as format_type prints it."""

    name: str
    type: str


def columns(conn: Conn, table: str) -> list[Column]:
    """The table's columns in order, generated ones left out (they cannot be written)."""
    return [
        Column(r["name"], r["type"])
        for r in conn.execute(
            "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type FROM pg_attribute a"
            " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped"
            "   AND a.attgenerated = '' ORDER BY a.attnum",
            [table],
        )
    ]


def allowed_texts(conn: Conn, table: str, column: str) -> list[str]:
    """The text values the table's CHECK constraints on this column name (`IN ('a', 'b')`)."""
    allowed: list[str] = []
    for r in conn.execute(
        "SELECT pg_get_constraintdef(c.oid) AS def FROM pg_constraint c"
        " WHERE c.conrelid = %s::regclass AND c.contype = 'c' AND %s = ANY ("
        "   SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey))",
        [table, column],
    ):
        allowed += re.findall(r"'([^']*)'::text", r["def"])
    return allowed


def candidates(
    conn: Conn, table: str, column: Column, special: Mapping[str, Sequence[str]] | None = None
) -> list[str]:
    """SQL expressions for other values of a column, by its type and checks: what an attacker would try.

    ``special`` names the values to try for a column whose type says too little: a key
    to another row (the client's other pack, another client's), as SQL expressions.
    """
    if special and column.name in special:
        return list(special[column.name])
    kind = column.type
    if kind == "uuid":
        return ["gen_random_uuid()", "NULL"]
    if kind.startswith("timestamp"):
        return [
            "'infinity'",
            "'-infinity'",
            "now() - interval '400 days'",
            "now() + interval '100 years'",
            "NULL",
        ]
    if kind == "text":
        return [f"'{v}'" for v in allowed_texts(conn, table, column.name)] or ["'changed'", "NULL"]
    if kind in ("integer", "bigint", "smallint", "numeric"):
        return ["0", "-1", "100000", "NULL"]
    if kind == "boolean":
        return [f"NOT {column.name}", "NULL"]
    return ["NULL"]


def single_column_update(table: str, column: Column, value: str, key: str = "id") -> sql.Composed:
    """`UPDATE table SET column = value WHERE key = %s`: value is one of `candidates`' expressions."""
    schema, name = table.split(".")
    return sql.SQL("UPDATE {} SET {} = {} WHERE {} = %s").format(
        sql.Identifier(schema, name), sql.Identifier(column.name), sql.SQL(value), sql.Identifier(key)
    )
