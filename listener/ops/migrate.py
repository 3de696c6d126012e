"""`listener migrate`: PGMQ, then the numbered migrations, each once, under one lock."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from listener.core.db import Conn, connect
from listener.core.sql_files import demo_schema, migrations, query
from listener.errors import HostSchemaMissing, MigrationChanged, PgmqUnavailable

log = logging.getLogger("listener.ops.migrate")

# Session-level advisory lock: a second `listener migrate` waits, then finds nothing to do.
_LOCK_KEY = 0x5E55_1ED6

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS session_ledger;
REVOKE ALL ON SCHEMA session_ledger FROM PUBLIC;
CREATE TABLE IF NOT EXISTS session_ledger.migrations (
    version int PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON session_ledger.migrations FROM PUBLIC;
"""

REQUIRED_COLUMNS = {
    "bookings": ("id", "org_id", "status", "purchase_id", "start_time", "end_time"),
    "client_purchases": (
        "id",
        "org_id",
        "sessions_total",
        "sessions_used",
        "expires_at",
        "payment_status",
    ),
}
REQUIRED_FUNCTIONS = ("public.is_org_member(uuid)",)


@dataclass
class MigrateReport:
    """What a migrate run did."""

    demo_schema: bool = False
    pgmq: str = "present"
    applied: list[str] = field(default_factory=list)


def migrate(dsn: str, *, with_demo_schema: bool = False) -> MigrateReport:
    """Bring the database up to date; safe to re-run and to run twice at once."""
    report = MigrateReport()
    with connect(dsn, autocommit=True, purpose="migrate") as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", [_LOCK_KEY])
        try:
            if with_demo_schema and missing_host_objects(conn):
                with conn.transaction():
                    conn.execute(demo_schema())
                report.demo_schema = True
            missing = missing_host_objects(conn)
            if missing:
                raise HostSchemaMissing(
                    "the app's schema is incomplete: missing "
                    + "; ".join(missing)
                    + " (on a blank database, use --with-demo-schema)"
                )
            with conn.transaction():
                conn.execute(_BOOTSTRAP)
            report.pgmq = ensure_pgmq(conn)
            applied = {r["version"]: r for r in conn.execute(query("applied_migrations")).fetchall()}
            for m in migrations():
                done = applied.get(m.version)
                if done is not None:
                    if done["checksum"] != m.checksum:
                        raise MigrationChanged(
                            f"migration {m.version:04d}_{m.name} was changed after it was applied; "
                            "restore the original file and add a new migration instead"
                        )
                    continue
                with conn.transaction():
                    conn.execute(m.sql)
                    conn.execute(
                        "INSERT INTO session_ledger.migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        [m.version, m.name, m.checksum],
                    )
                report.applied.append(f"{m.version:04d}_{m.name}")
                log.info("applied migration %04d_%s", m.version, m.name)
        finally:
            if not conn.closed and not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", [_LOCK_KEY])
    return report


def missing_host_objects(conn: Conn) -> list[str]:
    """The app's tables, columns and functions the ledger needs but cannot find."""
    have: dict[str, set[str]] = {}
    for row in conn.execute(query("host_tables")).fetchall():
        have.setdefault(row["table_name"], set()).add(row["column_name"])
    missing = []
    for table, columns in REQUIRED_COLUMNS.items():
        if table not in have:
            missing.append(f"table public.{table}")
            continue
        lacking = [c for c in columns if c not in have[table]]
        if lacking:
            missing.append(f"public.{table} columns {', '.join(lacking)}")
    for signature in REQUIRED_FUNCTIONS:
        if not conn.execute(query("host_function"), {"signature": signature}).fetchone()["present"]:  # type: ignore[index]
            missing.append(f"function {signature}")
    return missing


def ensure_pgmq(conn: Conn) -> str:
    """Install PGMQ if absent: the extension where the server has it, else the bundled SQL-only script."""
    if conn.execute(query("pgmq_installed")).fetchone()["present"]:  # type: ignore[index]
        return "present"
    if conn.execute(query("pgmq_extension_available")).fetchone()["available"]:  # type: ignore[index]
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS pgmq")
        log.info("installed PGMQ as an extension")
        return "extension"
    try:
        from pgmq.install import get_embedded_install_sql, get_embedded_sql_version

        script, version = get_embedded_install_sql(), get_embedded_sql_version()
    except Exception as exc:  # the client raises its own error types for a broken wheel
        raise PgmqUnavailable(
            f"PGMQ is not installed, the server has no pgmq extension, and the bundled script failed: {exc}"
        ) from None
    with conn.transaction():
        conn.execute(script)
    log.info("installed PGMQ %s from the SQL-only script", version)
    return f"sql-only {version}"
