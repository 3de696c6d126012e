"""The ledger's current tables as one SQL file (sql/schema.sql), rendered from a migrated database's catalog.

Migrations say how a database got here; this says what it looks like now: every
table of the ledger and its queues with columns, defaults, constraints, indexes,
storage options, row-level security and policies. Functions, views, triggers and
grants live in sql/functions/*.sql and are not repeated. tests/db/test_upgrade.py
renders a fresh install and an install upgraded from 0.1.0 and checks both against
the file.
"""

from __future__ import annotations

from psycopg import sql

from listener.core.db import Conn

_TABLES = """
SELECT c.oid, n.nspname, c.relname, c.reloptions, c.relrowsecurity
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND (n.nspname = 'session_ledger' OR (n.nspname = 'pgmq' AND c.relname ~ '^[qa]_booking_events(_dlq)?$'))
ORDER BY n.nspname DESC, c.relname
"""

_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid) AS default, a.attidentity, a.attgenerated
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_CONSTRAINTS = """
SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
WHERE conrelid = %s AND contype <> 'n' ORDER BY contype, conname
"""

_INDEXES = """
SELECT pg_get_indexdef(i.indexrelid) AS def FROM pg_index i
WHERE i.indrelid = %s AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
ORDER BY 1
"""

_POLICIES = """
SELECT p.polname, p.polpermissive, p.polcmd::text AS cmd,
       array(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(r::regrole::text) END
             FROM unnest(p.polroles) AS r ORDER BY 1) AS roles,
       pg_get_expr(p.polqual, p.polrelid) AS qual, pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
FROM pg_policy p WHERE p.polrelid = %s ORDER BY p.polname
"""

_COMMANDS = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}


def render(conn: Conn) -> str:
    """The ledger's tables, as installed in this database, as SQL."""
    out = [
        "-- The session ledger's tables as they stand: what a fresh install and an upgraded one both hold.",
        "-- Generated from the catalog by listener/devtools/schema_dump.py; do not edit by hand.",
        "-- Regenerate: LISTENER_WRITE_SCHEMA=1 pytest tests/db/test_upgrade.py -k schema_file",
        "-- Functions, views, triggers and grants: sql/functions/*.sql. How to get here: sql/migrations/.",
    ]
    for t in conn.execute(_TABLES).fetchall():
        name = sql.Identifier(t["nspname"], t["relname"]).as_string(conn)
        columns = []
        for c in conn.execute(_COLUMNS, [t["oid"]]).fetchall():
            col = f"    {sql.Identifier(c['attname']).as_string(conn)} {c['type']}"
            if c["attidentity"]:
                col += (
                    " GENERATED " + ("ALWAYS" if c["attidentity"] == "a" else "BY DEFAULT") + " AS IDENTITY"
                )
            elif c["attgenerated"]:
                col += f" GENERATED ALWAYS AS ({c['default']}) STORED"
            elif c["default"] is not None:
                col += f" DEFAULT {c['default']}"
            if c["attnotnull"]:
                col += " NOT NULL"
            columns.append(col)
        columns += [
            f"    CONSTRAINT {sql.Identifier(k['conname']).as_string(conn)} {k['def']}"
            for k in conn.execute(_CONSTRAINTS, [t["oid"]]).fetchall()
        ]
        out.append("")
        out.append(f"CREATE TABLE {name} (\n" + ",\n".join(columns) + "\n)")
        if t["reloptions"]:
            out[-1] += " WITH (" + ", ".join(t["reloptions"]) + ")"
        out[-1] += ";"
        out += [f"{i['def']};" for i in conn.execute(_INDEXES, [t["oid"]]).fetchall()]
        if t["relrowsecurity"]:
            out.append(f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY;")
        for p in conn.execute(_POLICIES, [t["oid"]]).fetchall():
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
    return "\n".join(out) + "\n"
