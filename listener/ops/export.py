"""`listener export-migrations DIR`: the install as SQL files for a Supabase project's supabase/migrations.

One file installs PGMQ (the extension, as Supabase Queues provides it, or the
SQL-only script), then one file per numbered migration, then one file holding
every repeatable file (functions, triggers, views, grants) as this package ships
them. Each file records itself as `listener migrate` would (the migration's
checksum; the repeatables' checksums and the schema version), so the listener
accepts the database and a later `listener migrate` finds nothing left to do.
Exporting again after an upgrade writes only what is new: the new migrations,
and a new functions file when any repeatable file changed.

Each file is one statement (a DO block running the file's SQL with EXECUTE), so it
applies whole or not at all however it is applied: `psql -f` (which commits each
statement on its own and goes on past an error), `psql -1`, or `supabase db push`
(which sends a file's statements as one batch, in one implicit transaction, where
LOCK TABLE refuses to run outside a function). Each checks first that the files
before it were applied: a migration file refuses while an earlier migration is
missing, and does nothing when its own migration is already recorded with the
same checksum; the functions file refuses until every migration is applied.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from listener import __version__
from listener.core.sql_files import SCHEMA_VERSION, Migration, migrations, repeatables
from listener.errors import ConfigError, ExportFailed
from listener.ops.migrate import BOOTSTRAP, pgmq_script

# The dollar-quote tags of the exported files: chosen so that no SQL file of the
# project (nor PGMQ's script) contains them; _quoted() checks.
_OUTER = "$session_ledger_export$"
_INNER = "$session_ledger_sql$"

_PGMQ_EXTENSION = """\
-- PGMQ for the session ledger's queues. On Supabase this is the Queues
-- integration: the extension lives in the schema pgmq. Do not expose
-- pgmq_public through the API: the ledger never needs it.
CREATE EXTENSION IF NOT EXISTS pgmq;
"""


def _literal(text: str) -> str:
    """A SQL string literal of our own file names and hex checksums (never user input)."""
    return "'" + text.replace("'", "''") + "'"


def _quoted(text: str) -> str:
    """SQL text as a dollar-quoted literal for EXECUTE."""
    if _INNER in text or _OUTER in text:
        raise ExportFailed("a SQL file contains the export's own quoting tag")
    return f"{_INNER}\n{text.rstrip()}\n{_INNER}"


def _guarded(header: str, body: str) -> str:
    """One DO block: the file applies whole or not at all, under psql -f, psql -1 or supabase db push."""
    return f"{header}\nDO {_OUTER}\nBEGIN\n{body.rstrip()}\nEND\n{_OUTER};\n"


def _pgmq_file(pgmq: str) -> str:
    if pgmq == "extension":
        return _PGMQ_EXTENSION
    script, version = pgmq_script()
    return _guarded(
        f"-- PGMQ {version}, SQL-only install (for servers without the pgmq extension).\n"
        "-- Does nothing where the schema pgmq exists already.",
        "    IF pg_catalog.to_regnamespace('pgmq') IS NOT NULL THEN\n"
        "        RAISE NOTICE 'PGMQ is installed already: nothing to do';\n"
        "        RETURN;\n"
        "    END IF;\n"
        f"    EXECUTE {_quoted(script)};\n",
    )


def _migrations_missing(before: int) -> str:
    """PL/pgSQL: refuse unless every migration of this package numbered below `before` is recorded."""
    versions = ", ".join(str(m.version) for m in migrations() if m.version < before)
    if not versions:
        return ""
    return (
        "    IF pg_catalog.to_regclass('session_ledger.migrations') IS NULL THEN\n"
        f"        missing := (ARRAY[{versions}])[1];\n"
        "    ELSE\n"
        f"        SELECT min(v) INTO missing FROM unnest(ARRAY[{versions}]) AS v\n"
        "         WHERE NOT EXISTS (SELECT 1 FROM session_ledger.migrations m WHERE m.version = v);\n"
        "    END IF;\n"
        "    IF missing IS NOT NULL THEN\n"
        "        RAISE EXCEPTION 'session ledger migration % is not applied: apply the files before this one first, "
        "or run `listener migrate`', pg_catalog.lpad(missing::text, 4, '0');\n"
        "    END IF;\n"
    )


def _functions_file() -> tuple[str, str]:
    """The repeatable files as one migration, named by their combined checksum."""
    files = repeatables()
    combined = hashlib.sha256("".join(f.checksum for f in files).encode()).hexdigest()[:12]
    parts = [
        f"-- session ledger functions, triggers, views and grants ({__version__}, schema {SCHEMA_VERSION}),\n"
        "-- exported by `listener export-migrations`. Do not edit: export again after upgrading.\n"
    ]
    for f in files:
        parts.append(f"\n-- ===== {f.name}\n{f.sql.rstrip()}\n")
    rows = ",\n    ".join(f"({_literal(f.name)}, {_literal(f.checksum)})" for f in files)
    parts.append(
        "\nDELETE FROM session_ledger.repeatables;\n"
        f"INSERT INTO session_ledger.repeatables (name, checksum) VALUES\n    {rows};\n"
        "INSERT INTO session_ledger.schema_info (version, package_version)\n"
        f"VALUES ({SCHEMA_VERSION}, {_literal(__version__)})\n"
        "ON CONFLICT (singleton) DO UPDATE SET version = excluded.version,\n"
        "    package_version = excluded.package_version, migrated_at = now();\n"
    )
    header, sql_text = parts[0], "".join(parts[1:])
    body = (
        "DECLARE\n    missing int;\nBEGIN\n"
        + _migrations_missing(max(m.version for m in migrations()) + 1)
        + f"    EXECUTE {_quoted(sql_text)};\n"
    )
    return f"session_ledger_functions_{combined}", _guarded_declare(header.rstrip(), body)


def _guarded_declare(header: str, body: str) -> str:
    """_guarded() for a body that opens with its own DECLARE ... BEGIN."""
    return f"{header}\nDO {_OUTER}\n{body.rstrip()}\nEND\n{_OUTER};\n"


def _migration_file(version: int, name: str, sql_text: str) -> str:
    """One migration: nothing when it is recorded already, a refusal when one before it is not."""
    checksum = _literal(Migration(version, name, sql_text).checksum)
    body = (
        "DECLARE\n    missing int;\n    recorded text;\nBEGIN\n"
        + (
            "    IF pg_catalog.to_regnamespace('pgmq') IS NULL THEN\n"
            "        RAISE EXCEPTION 'PGMQ is not installed: apply the *_session_ledger_pgmq.sql file first';\n"
            "    END IF;\n"
            if version == min(m.version for m in migrations())
            else ""
        )
        + _migrations_missing(version)
        + f"    EXECUTE {_quoted(BOOTSTRAP)};\n"
        + f"    SELECT m.checksum INTO recorded FROM session_ledger.migrations m WHERE m.version = {version};\n"
        + f"    IF recorded = {checksum} THEN\n"
        + f"        RAISE NOTICE 'session ledger migration {version:04d} is applied already: nothing to do';\n"
        + "        RETURN;\n"
        + "    ELSIF recorded IS NOT NULL THEN\n"
        + f"        RAISE EXCEPTION 'session ledger migration {version:04d}_{name} was changed after it was applied';\n"
        + "    END IF;\n"
        + f"    EXECUTE {_quoted(sql_text)};\n"
        + "    INSERT INTO session_ledger.migrations (version, name, checksum)\n"
        + f"    VALUES ({version}, {_literal(name)}, {checksum});\n"
    )
    return _guarded_declare(
        f"-- session ledger migration {version:04d}_{name}, exported by `listener export-migrations`.\n"
        "-- Do not edit: `listener migrate` compares its checksum with the packaged file.",
        body,
    )


def export_migrations(
    directory: Path, *, pgmq: str = "extension", stamp: datetime | None = None
) -> list[Path]:
    """Write each file not already in directory, as <UTC timestamp>_session_ledger_*.sql; return the new ones."""
    if pgmq not in ("extension", "script"):
        raise ConfigError(f"unknown PGMQ install {pgmq!r}: use extension or script")
    try:
        return _export(directory, pgmq=pgmq, stamp=stamp)
    except OSError as exc:
        # One line naming the path and the reason: a file in the way, no such parent, no write permission.
        reason = (exc.strerror or type(exc).__name__).lower()
        if exc.filename is not None and str(exc.filename) != str(directory):
            reason += f" ({exc.filename})"
        raise ExportFailed(f"cannot write the migrations to {directory}: {reason}") from None


def _refuse_a_different_pgmq_install(directory: Path, pgmq: str) -> None:
    """A PGMQ file already exported the other way is kept, never doubled: say so rather than skip it silently."""
    for existing in sorted(directory.glob("*_session_ledger_pgmq.sql")):
        as_extension = "CREATE EXTENSION IF NOT EXISTS pgmq" in existing.read_text(encoding="utf-8")
        if as_extension != (pgmq == "extension"):
            was = "the pgmq extension" if as_extension else "PGMQ's SQL-only script"
            raise ConfigError(
                f"{existing.name} already installs {was}; --pgmq {pgmq} would install PGMQ a second way: "
                "delete that file first if it was never applied, or export with the same --pgmq"
            )


def _export(directory: Path, *, pgmq: str, stamp: datetime | None) -> list[Path]:
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} exists and is not a directory")
    directory.mkdir(parents=True, exist_ok=True)
    _refuse_a_different_pgmq_install(directory, pgmq)
    files: list[tuple[str, str]] = [("session_ledger_pgmq", _pgmq_file(pgmq))]
    for m in migrations():
        files.append((f"session_ledger_{m.version:04d}_{m.name}", _migration_file(m.version, m.name, m.sql)))
    files.append(_functions_file())
    # Supabase orders migrations by the 14-digit timestamp prefix; one second apart
    # keeps ours in order, after anything already in the directory.
    first = (stamp or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    latest = max((p.name[:14] for p in directory.glob("*.sql") if p.name[:14].isdigit()), default=None)
    if latest is not None:
        first = max(
            first, datetime.strptime(latest, "%Y%m%d%H%M%S").replace(tzinfo=UTC) + timedelta(seconds=1)
        )
    written: list[Path] = []
    for name, text in files:
        # Already exported (and perhaps applied) under an earlier timestamp: a second
        # copy would run the same migration twice.
        if any(directory.glob(f"*_{name}.sql")):
            continue
        path = directory / f"{(first + timedelta(seconds=len(written))):%Y%m%d%H%M%S}_{name}.sql"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
