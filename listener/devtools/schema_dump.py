"""The ledger's current schema as one SQL file (sql/schema.sql), rendered from a database's catalog.

Migrations say how an installed database got here; this says what it looks like
now, and a fresh install runs it: every table of the ledger with its columns,
defaults, constraints, indexes, storage options, row-level security and policies,
the one row of its singleton tables, and its queues. A queue is made by
`pgmq.create` (which also registers it with PGMQ), followed by what the ledger
changed on it: the dump creates a probe queue in a transaction it rolls back and
renders the difference. The schema and its migrations table come first, from the
bootstrap (queries.sql); functions, views, triggers and grants from
sql/functions/*.sql. tests/db/test_routes.py renders an install upgraded from each
release and checks it against the file.
"""

from __future__ import annotations

from typing import Any

from psycopg import Rollback, sql

from listener.core.db import Conn
from listener.core.sql_files import query

HEADER = (
    "-- The session ledger's schema as it stands: what a fresh install runs, after the bootstrap\n"
    "-- (queries.sql: bootstrap) and before sql/install.sql and the repeatable files (sql/functions/).\n"
    "-- Generated from the catalog by listener/devtools/schema_dump.py; do not edit by hand.\n"
    "-- Regenerate: LISTENER_WRITE_SCHEMA=1 pytest tests/db/test_routes.py -k schema_file\n"
    "-- How an installed database gets here: sql/migrations/."
)
_COMMANDS = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}
_PROBE = "schema_dump_probe"


class QueueDiffers(Exception):
    """A queue's tables differ from pgmq.create's in a way no ALTER or index statement renders."""


def render(conn: Conn) -> str:
    """The ledger's schema, as installed in this database, as SQL."""
    out = [HEADER]
    for t in conn.execute(query("schema_dump_tables")).fetchall():
        out.append("")
        out += _table(conn, t)
        if conn.execute(query("schema_dump_singleton"), {"oid": t["oid"]}).fetchone()["singleton"]:  # type: ignore[index]
            out.append(f"INSERT INTO {_name(conn, t)} DEFAULT VALUES;")
    for q in conn.execute(query("schema_dump_queues")).fetchall():
        out.append("")
        out += _queue(conn, q["queue"])
    return "\n".join(out) + "\n"


def _name(conn: Conn, table: dict[str, Any]) -> str:
    return sql.Identifier(table["nspname"], table["relname"]).as_string(conn)


def _table(conn: Conn, t: dict[str, Any]) -> list[str]:
    name = _name(conn, t)
    columns = [_column(conn, c) for c in conn.execute(query("schema_dump_columns"), {"oid": t["oid"]})]
    columns += [
        f"    CONSTRAINT {sql.Identifier(k['conname']).as_string(conn)} {k['def']}"
        for k in conn.execute(query("schema_dump_constraints"), {"oid": t["oid"]})
    ]
    create = f"CREATE TABLE {name} (\n" + ",\n".join(columns) + "\n)"
    if t["reloptions"]:
        create += " WITH (" + ", ".join(t["reloptions"]) + ")"
    out = [create + ";"]
    out += [f"{i['def']};" for i in conn.execute(query("schema_dump_indexes"), {"oid": t["oid"]})]
    if t["relrowsecurity"]:
        out.append(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY;")
    out += _policies(conn, t["oid"], name)
    return out


def _column(conn: Conn, c: dict[str, Any]) -> str:
    col = f"    {sql.Identifier(c['attname']).as_string(conn)} {c['type']}"
    if c["attidentity"]:
        col += " GENERATED " + ("ALWAYS" if c["attidentity"] == "a" else "BY DEFAULT") + " AS IDENTITY"
    elif c["attgenerated"]:
        col += f" GENERATED ALWAYS AS ({c['default']}) STORED"
    elif c["default"] is not None:
        col += f" DEFAULT {c['default']}"
    if c["attnotnull"]:
        col += " NOT NULL"
    return col


def _policies(conn: Conn, oid: int, name: str) -> list[str]:
    out = []
    for p in conn.execute(query("schema_dump_policies"), {"oid": oid}):
        policy = (
            f"CREATE POLICY {sql.Identifier(p['polname']).as_string(conn)} ON {name}"
            f" AS {'PERMISSIVE' if p['polpermissive'] else 'RESTRICTIVE'} FOR {_COMMANDS[p['cmd']]}"
            f" TO {', '.join(p['roles'])}"
        )
        if p["qual"] is not None:
            policy += f" USING ({p['qual']})"
        if p["with_check"] is not None:
            policy += f" WITH CHECK ({p['with_check']})"
        out.append(policy + ";")
    return out


def _shape(conn: Conn, oid: int, queue: str) -> dict[str, Any]:
    """A queue table's parts, with the queue's name replaced so two queues' tables compare."""
    t = conn.execute(query("schema_dump_table"), {"oid": oid}).fetchone()
    assert t is not None

    def neutral(text: str) -> str:
        return text.replace(queue, "{queue}")

    return {
        "name": neutral(t["relname"]),
        "columns": [_column(conn, c) for c in conn.execute(query("schema_dump_columns"), {"oid": oid})],
        "constraints": [
            (neutral(k["conname"]), k["def"])
            for k in conn.execute(query("schema_dump_constraints"), {"oid": oid})
        ],
        "indexes": {
            neutral(i["name"]): neutral(i["def"])
            for i in conn.execute(query("schema_dump_indexes"), {"oid": oid})
        },
        "reloptions": list(t["reloptions"] or []),
        "rls": bool(t["relrowsecurity"]),
        "policies": [neutral(p) for p in _policies(conn, oid, "{table}")],
    }


def _tables(conn: Conn, queue: str) -> list[int]:
    return [r["oid"] for r in conn.execute(query("schema_dump_queue_tables"), {"queue": queue})]


def _queue(conn: Conn, queue: str) -> list[str]:
    """pgmq.create, then the statements that turn its tables into this queue's."""
    ours = [_shape(conn, oid, queue) for oid in _tables(conn, queue)]
    made: list[dict[str, Any]] = []
    with conn.transaction():
        conn.execute(query("schema_dump_probe_queue"), {"queue": _PROBE})
        made = [_shape(conn, oid, _PROBE) for oid in _tables(conn, _PROBE)]
        raise Rollback()
    out = [f"SELECT pgmq.create({sql.Literal(queue).as_string(conn)});"]
    for mine, theirs in zip(ours, made, strict=True):
        table = sql.Identifier("pgmq", mine["name"].replace("{queue}", queue)).as_string(conn)
        for part in ("name", "columns", "constraints", "policies"):
            if mine[part] != theirs[part]:
                raise QueueDiffers(f"{table}: its {part} differ from what pgmq.create makes")
        for index in sorted(theirs["indexes"].keys() - mine["indexes"].keys()):
            out.append(
                f"DROP INDEX {sql.Identifier('pgmq', index.replace('{queue}', queue)).as_string(conn)};"
            )
        for index in sorted(mine["indexes"].keys() - theirs["indexes"].keys()):
            out.append(mine["indexes"][index].replace("{queue}", queue) + ";")
        if mine["reloptions"] != theirs["reloptions"]:
            if not mine["reloptions"]:
                raise QueueDiffers(f"{table}: pgmq.create sets storage options it lacks")
            out.append(f"ALTER TABLE {table} SET (" + ", ".join(mine["reloptions"]) + ");")
        if mine["rls"] and not theirs["rls"]:
            out.append(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;")
    return out
