"""`listener migrate`: PGMQ, then the ledger, in one transaction under one lock.

Two routes end at the same schema. A database with no ledger takes the fresh
route: the schema as it stands (sql/schema.sql), the install's own steps
(sql/install.sql: the listener's role, the app's functions kept, adoption), every
migration recorded as applied with its checksum, then the repeatable files. An
installed ledger takes the upgrade route: its pending numbered migrations, then
the repeatable files when any changed. tests/db/test_routes.py builds both, from
each released version, and compares their catalogs.

An install an earlier run or an exported file left half-done is recovered: one
that created ledger objects but never recorded its first migration, one with a
migration missing while a later one is recorded (the files of an old export
applied with `psql -f`, which goes on past an error, or the remaining files run
after one failed), or one missing a table the ledger holds once every migration is
applied. If the ledger has never moved a session, the half-done install is removed
as `listener uninstall` removes one (the app's functions put back, its tables and
balances untouched) and the install runs again from the start, in the same
transaction; completed bookings are then adopted afresh. A half-done install that
has moved sessions is left as it is, with a one-line error saying so. An intact
install whose upgrade fails is left whole, the error reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

from listener import __version__
from listener.core.db import Conn, connect
from listener.core.schema import ledger_state, owner_needed, schema_too_new
from listener.core.sql_files import (
    SCHEMA_VERSION,
    demo_schema,
    install_sql,
    ledger_tables,
    migrations,
    query,
    repeatables,
    schema_sql,
    uninstall_sql,
)
from listener.errors import (
    HostSchemaMissing,
    InstallIncomplete,
    MigrateNotPermitted,
    MigrationChanged,
    PgmqUnavailable,
)
from listener.mapping import model as mapping_model
from listener.mapping.model import Mapping
from listener.mapping.render import AppSQL, Keys
from listener.ops import mapping_check

log = logging.getLogger("listener.migrate")

# Session-level advisory lock: a second `listener migrate` (or an uninstall) waits, then finds nothing to do.
LOCK_KEY = 0x5E55_1ED6

# What installing does to the app's tables, by the mapping's table: locks and reads them, puts
# the triggers on the bookings, and its functions (owned by the migrating role) update the
# bookings and packs and read the sessions. What else the app must have comes from the
# mapping (listener/ops/mapping_check.py).
REQUIRED_PRIVILEGES = {
    "booking": ("SELECT", "UPDATE", "TRIGGER"),
    "pack": ("SELECT", "UPDATE"),
    "session": ("SELECT",),
}
# Where the mapping came from, as the summary says it.
GIVEN, RECORDED, DEFAULT = "given", "recorded", "the coaching app's default"


@dataclass
class MigrateReport:
    """What a migrate run did."""

    demo_schema: bool = False
    pgmq: str = "present"
    applied: list[str] = field(default_factory=list)
    repeatables: list[str] = field(default_factory=list)
    # privileges on the app's tables taken from PUBLIC and the API roles, e.g. "TRIGGER, TRUNCATE on
    # public.bookings from authenticated"
    revoked: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    # why a half-done earlier install was removed and installed again, if it was
    recovered: str | None = None
    # installed from the schema as it stands (every migration then recorded as applied)
    fresh: bool = False
    # the mapping rendered from: GIVEN (--mapping FILE), RECORDED (the install's), or DEFAULT;
    # and whether it differs from the one recorded before (a first install records it)
    mapping_from: str = DEFAULT
    mapping_changed: bool = False
    # whether an earlier run had recorded a mapping (not so on a first install, an install from
    # before schema version 7, or one from exported files)
    mapping_was_recorded: bool = False
    # what the mapping's check said without refusing (a pack column with no foreign key)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the run changed the database at all."""
        return bool(
            self.demo_schema or self.pgmq != "present" or self.applied or self.repeatables or self.recovered
        )


@contextlib.contextmanager
def migration_lock(conn: Conn) -> Iterator[None]:
    """Hold the migration lock for the block: migrate, uninstall and export never interleave."""
    conn.execute(query("migration_lock"), {"key": LOCK_KEY})
    try:
        yield
    finally:
        if not conn.closed and not conn.broken:
            conn.execute(query("migration_unlock"), {"key": LOCK_KEY})


def migrate(
    dsn: str,
    *,
    with_demo_schema: bool = False,
    missing_hint: str | None = None,
    mapping: Mapping | None = None,
) -> MigrateReport:
    """Bring the database up to date; safe to re-run and to run twice at once. `missing_hint` ends the
    error that names missing app tables: what the caller's user can do about them (by default, on the
    coaching app's mapping, the demo schema). `mapping` is the app's schema mapped (`--mapping FILE`);
    without one, the install's recorded mapping, or the coaching app's on a new install. The mapping is
    checked against the catalog before anything changes."""
    report = MigrateReport()
    with connect(dsn, autocommit=True, purpose="migrate") as conn, migration_lock(conn):
        state = ledger_state(conn)
        if state.installed and not state.acts_as_owner:
            raise owner_needed(state, "change the ledger")
        recorded = recorded_mapping(conn)
        report.mapping_was_recorded = recorded is not None
        if mapping is not None:
            report.mapping_from = GIVEN
        elif recorded is not None:
            mapping, report.mapping_from = recorded, RECORDED
        else:
            mapping = mapping_model.default()
        is_default = mapping.sha256 == mapping_model.default().sha256
        lacking = missing_host_rights(conn, mapping, schema_exists=state.owner is not None)
        if lacking:
            raise MigrateNotPermitted(
                f"role {state.role} lacks the rights `listener migrate` needs: "
                + "; ".join(lacking)
                + ": run it as the owner of the app's tables"
            )
        if with_demo_schema and missing_host_objects(conn, mapping):
            with conn.transaction():
                conn.execute(demo_schema())
            report.demo_schema = True
        findings = mapping_check.check(conn, mapping)
        if findings.problems:
            if missing_hint is None:
                missing_hint = (
                    "on a blank database, use --with-demo-schema"
                    if is_default
                    else "check the mapping's names against the database"
                )
            raise HostSchemaMissing(_refusal(findings, missing_hint))
        for warning in findings.warnings:
            log.warning("%s", warning)
        report.warnings = findings.warnings
        app = app_sql(conn, mapping)
        report.pgmq = ensure_pgmq(conn)
        with conn.transaction():
            conn.execute(query("bootstrap"))
            versions = [m.version for m in migrations()]
            broken = conn.execute(
                query("ledger_install_broken"), {"first": versions[0], "versions": versions}
            ).fetchone()["why"]  # type: ignore[index]
            if broken is not None:
                _start_again(conn, report, broken)
            try:
                with conn.transaction():
                    _install(conn, report, app)
            except _Incomplete as exc:
                _start_again(conn, report, str(exc))
                _install(conn, report, app)
    return report


def _refusal(findings: mapping_check.Findings, hint: str) -> str:
    """The error for a mapping the schema does not fit: what is missing in one line (with the hint),
    then each other problem on its own line naming its key."""
    lines = []
    if findings.missing:
        lines.append(f"the app's schema is incomplete: missing {findings.summary()} ({hint})")
    else:
        lines.append("the app's schema does not fit the mapping:")
    lines += [str(p) for p in findings.problems if p.missing is None]
    return "\n".join(lines)


def _start_again(conn: Conn, report: MigrateReport, why: str) -> None:
    _remove_incomplete_install(conn, why)
    report.recovered = why
    report.fresh = False
    report.applied.clear()
    report.repeatables.clear()
    conn.execute(query("bootstrap"))


class _Incomplete(Exception):
    """Every migration is recorded, yet a table the ledger holds is missing."""


def _install(conn: Conn, report: MigrateReport, app: AppSQL) -> None:
    applied = _recorded_migrations(conn)
    if applied:
        _apply_migrations(conn, report, applied)
    else:
        _install_fresh(conn, report, app)
    mapping_changed = _record_mapping(conn, app)
    report.mapping_changed = mapping_changed
    if mapping_changed and (report.mapping_was_recorded or report.mapping_from == GIVEN):
        # The mapping names the consuming statuses; an install from before mappings keeps
        # whatever its config says until a mapping is given.
        conn.execute(
            query("set_consuming_statuses"), {"statuses": list(app.mapping.booking.consuming_statuses)}
        )
    # The app's views are dropped by hand when the app changes a mapped column's type (PostgreSQL
    # refuses the ALTER while a view reads the column): re-render them, whatever the checksums say.
    views = ["session_ledger.app_bookings", "session_ledger.app_packs"]
    views_gone = len(conn.execute(query("ledger_tables_present"), {"names": views}).fetchall()) < len(views)
    _apply_repeatables(conn, report, app, force=bool(report.applied) or mapping_changed or views_gone)
    if views_gone and not report.repeatables:
        report.repeatables.append("05_app.sql")
    report.revoked = [
        f"{', '.join(r['privileges'])} on {r['table_name']} from {r['grantee']}"
        for r in conn.execute(query("app_grants_revoked_now"))
    ]
    present = {
        r["name"] for r in conn.execute(query("ledger_tables_present"), {"names": list(ledger_tables())})
    }
    missing = [t for t in ledger_tables() if t not in present]
    if missing:
        raise _Incomplete(f"the ledger's tables {', '.join(missing)} are missing")
    if report.applied or report.repeatables:
        conn.execute(query("record_schema_version"), {"version": SCHEMA_VERSION, "package": __version__})


# What a reinstall could not redo, by the table that records it; a table an incomplete install lacks
# counts as empty.
_MOVED = {
    "session_ledger.charges": "ledger_moved_charges",
    "session_ledger.adjustments": "ledger_moved_adjustments",
    "session_ledger.pack_calls": "ledger_moved_absorbed_calls",
}


def _has_moved_sessions(conn: Conn) -> bool:
    present = {r["name"] for r in conn.execute(query("ledger_tables_present"), {"names": list(_MOVED)})}
    return any(conn.execute(query(_MOVED[t])).fetchone()["moved"] for t in _MOVED if t in present)  # type: ignore[index]


def _remove_incomplete_install(conn: Conn, why: str) -> None:
    """Take away an install an earlier run left half-done, as `listener uninstall` does; refuse if it has charged."""
    if _has_moved_sessions(conn):
        raise InstallIncomplete(
            f"the ledger's install is incomplete ({why}) and it has moved sessions since, so migrate will not "
            "reset it: run `listener uninstall --yes --force` (balances are kept), then `listener migrate`"
        )
    log.warning("an earlier install stopped half-way (%s): removing it and installing again", why)
    conn.execute(uninstall_sql())


def _recorded_migrations(conn: Conn) -> set[int]:
    """The migrations recorded as applied; refused when one is newer than this package or was changed since."""
    known = {m.version: m for m in migrations()}
    applied = {r["version"]: r for r in conn.execute(query("applied_migrations")).fetchall()}
    newer = sorted(v for v in applied if v not in known)
    if newer:
        raise schema_too_new(f"migration {newer[-1]:04d}")
    for version, row in applied.items():
        m = known[version]
        if row["checksum"] != m.checksum:
            raise MigrationChanged(
                f"migration {m.version:04d}_{m.name} was changed after it was applied; "
                "restore the original file and add a new migration instead"
            )
    return set(applied)


def _install_fresh(conn: Conn, report: MigrateReport, app: AppSQL) -> None:
    """No ledger yet: the schema as it stands and the install's own steps, every migration recorded as applied."""
    conn.execute(schema_sql())
    conn.execute(install_sql(app))
    for m in migrations():
        conn.execute(
            query("record_migration"), {"version": m.version, "name": m.name, "checksum": m.checksum}
        )
        report.applied.append(f"{m.version:04d}_{m.name}")
    report.fresh = True
    log.debug("installed schema version %d from sql/schema.sql", SCHEMA_VERSION)


def _apply_migrations(conn: Conn, report: MigrateReport, applied: set[int]) -> None:
    for m in migrations():
        if m.version in applied:
            continue
        conn.execute(m.sql)
        conn.execute(
            query("record_migration"), {"version": m.version, "name": m.name, "checksum": m.checksum}
        )
        report.applied.append(f"{m.version:04d}_{m.name}")
        log.debug("applied migration %04d_%s", m.version, m.name)


def _apply_repeatables(conn: Conn, report: MigrateReport, app: AppSQL, *, force: bool) -> None:
    """Re-apply every repeatable file, in order, when any of them changed (or a migration ran)."""
    row = conn.execute(query("recorded_schema_version")).fetchone()
    if row is not None and row["version"] > SCHEMA_VERSION:
        raise schema_too_new(f"schema version {row['version']}")
    recorded = {r["name"]: r["checksum"] for r in conn.execute(query("recorded_repeatables"))}
    files = repeatables(app)
    wanted = {f.name: f.checksum for f in files}
    if not force and recorded == wanted:
        return
    for f in files:
        conn.execute(f.sql)
        if recorded.get(f.name) != f.checksum:
            report.repeatables.append(f.name)
    names = {"names": [f.name for f in files]}
    conn.execute(query("forget_repeatables"), names)
    conn.execute(query("record_repeatables"), {**names, "checksums": [f.checksum for f in files]})
    log.debug("applied repeatable files %s", ", ".join(report.repeatables) or "(re-stated)")


def recorded_mapping(conn: Conn) -> Mapping | None:
    """The mapping the install was rendered from, or None (no install, or one from before mappings)."""
    if not conn.execute(query("ledger_tables_present"), {"names": ["session_ledger.mapping"]}).fetchall():
        return None
    row = conn.execute(query("stored_mapping")).fetchone()
    return mapping_model.from_stored(row["mapping"]) if row is not None else None


def key_types(conn: Conn, mapping: Mapping) -> Keys:
    """The SQL types of the app's keys, from the catalog (uuid where a table or column is missing:
    the check that names what is missing runs before anything is rendered)."""
    b, p = mapping.booking, mapping.pack
    booking = {r["name"]: r["type"] for r in conn.execute(query("column_types"), {"table": b.table})}
    pack = {r["name"]: r["type"] for r in conn.execute(query("column_types"), {"table": p.table})}
    client = booking.get(b.client or "") or pack.get(p.client or "") or "uuid"
    org = booking.get(b.org or "") or pack.get(p.org or "") or "uuid"
    return Keys(booking=booking.get(b.id, "uuid"), pack=pack.get(p.id, "uuid"), client=client, org=org)


def app_sql(conn: Conn, mapping: Mapping) -> AppSQL:
    """The mapping with the catalog's key types: what the SQL is rendered from."""
    return AppSQL(mapping, key_types(conn, mapping))


def _record_mapping(conn: Conn, app: AppSQL) -> bool:
    """Record the mapping the SQL is rendered from; whether it changed. The ledger's rows are
    keyed by the app's key types, so a change of type on an installed ledger is refused."""
    keys = json.dumps(dataclasses.asdict(app.keys), sort_keys=True)
    if conn.execute(query("ledger_tables_present"), {"names": ["session_ledger.mapping"]}).fetchall():
        row = conn.execute(query("stored_mapping")).fetchone()
        if row is not None and row["keys"] != dataclasses.asdict(app.keys):
            was = ", ".join(f"{k} {v}" for k, v in sorted(row["keys"].items()))
            raise MigrateNotPermitted(
                f"the app's key types changed (recorded: {was}; now: "
                + ", ".join(f"{k} {v}" for k, v in sorted(dataclasses.asdict(app.keys).items()))
                + "): the ledger's rows are keyed by the recorded types; uninstall and install again"
            )
    stored = conn.execute(
        query("store_mapping"), {"mapping": app.mapping.text, "sha256": app.mapping.sha256, "keys": keys}
    )
    return stored.rowcount > 0


def missing_host_objects(conn: Conn, mapping: Mapping) -> list[str]:
    """The mapped tables the app's schema lacks (what the demo schema would create)."""
    tables = [mapping.booking.table, mapping.pack.table]
    if mapping.booking.session is not None:
        tables.append(mapping.booking.session.table)
    missing = []
    for name in tables:
        schema, _, rel = name.partition(".")
        if conn.execute(query("mapping_relation"), {"schema": schema, "name": rel}).fetchone() is None:
            missing.append(f"table {name}")
    return missing


def missing_host_rights(conn: Conn, mapping: Mapping, *, schema_exists: bool) -> list[str]:
    """What the connected role may not do that installing needs, on the mapped tables that exist; each with who may."""
    tables = {"booking": mapping.booking.table, "pack": mapping.pack.table}
    if mapping.booking.session is not None:
        tables["session"] = mapping.booking.session.table
    lacking = []
    for role, table in tables.items():
        schema, _, name = table.partition(".")
        row = conn.execute(
            query("mapping_table_rights"),
            {"schema": schema, "name": name, "privileges": list(REQUIRED_PRIVILEGES[role])},
        ).fetchone()
        if row is not None and row["lacking"]:
            lacking.append(f"{', '.join(row['lacking'])} on {table} (owned by {row['owner']})")
    if not schema_exists:
        row = conn.execute(query("may_create_schema")).fetchone()
        if row is not None and not row["allowed"]:
            lacking.append(f"CREATE on database {row['database']} (for the schema session_ledger)")
    return lacking


def ensure_pgmq(conn: Conn) -> str:
    """Install PGMQ if absent: the extension where the server has it, else the bundled SQL-only script."""
    if conn.execute(query("pgmq_installed")).fetchone()["present"]:  # type: ignore[index]
        return "present"
    if conn.execute(query("pgmq_extension_available")).fetchone()["available"]:  # type: ignore[index]
        with conn.transaction():
            conn.execute(query("create_pgmq_extension"))
        log.debug("installed PGMQ as an extension")
        return "extension"
    script, version = pgmq_script()
    with conn.transaction():
        conn.execute(script)
    log.debug("installed PGMQ %s from the SQL-only script", version)
    return f"sql-only {version}"


def pgmq_script() -> tuple[str, str]:
    """The pgmq client's bundled SQL-only install script and its version."""
    try:
        from pgmq.install import get_embedded_install_sql, get_embedded_sql_version

        return str(get_embedded_install_sql()), str(get_embedded_sql_version())
    except Exception as exc:  # the client raises its own error types for a broken wheel
        raise PgmqUnavailable(
            f"PGMQ is not installed, the server has no pgmq extension, and the bundled script failed: {exc}"
        ) from None
