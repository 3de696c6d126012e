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
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from psycopg import sql

from listener import __version__
from listener.core.sql_files import SCHEMA_VERSION, bound, migrations, query, repeatables
from listener.errors import ConfigError, ExportFailed
from listener.ops.migrate import pgmq_script

# The dollar-quote tags of the exported files: chosen so that no SQL file of the
# project (nor PGMQ's script) contains them; _quoted() checks.
_OUTER = "$session_ledger_export$"
_INNER = "$session_ledger_sql$"
_SLOT = re.compile(r"%\((?P<name>[a-z_]+)\)s")

_PGMQ_EXTENSION = """\
-- PGMQ for the session ledger's queues. On Supabase this is the Queues
-- integration: the extension lives in the schema pgmq. Do not expose
-- pgmq_public through the API: the ledger never needs it.
"""


def _literal(value: object) -> str:
    """A SQL literal of the package's own values: versions, names, hex checksums."""
    return sql.Literal(value).as_string(None)


def _quoted(text: str) -> str:
    """SQL text as a dollar-quoted literal for EXECUTE."""
    if _INNER in text or _OUTER in text:
        raise ExportFailed("a SQL file contains the export's own quoting tag")
    return f"{_INNER}\n{text.rstrip()}\n{_INNER}"


def _fill(name: str, parts: Mapping[str, str]) -> str:
    """A named export template with its slots filled by SQL text (literals, quoted statements)."""
    return _SLOT.sub(lambda m: parts[m["name"]], query(name)) + "\n"


def _requires(before: int) -> str:
    """PL/pgSQL: refuse unless PGMQ and every migration of this package numbered below `before` are there."""
    return _fill(
        "export_requires", {"before": _literal([m.version for m in migrations() if m.version < before])}
    )


def _pgmq_file(pgmq: str) -> str:
    if pgmq == "extension":
        return _PGMQ_EXTENSION + query("create_pgmq_extension") + "\n"
    script, version = pgmq_script()
    return (
        f"-- PGMQ {version}, SQL-only install (for servers without the pgmq extension).\n"
        "-- Does nothing where the schema pgmq exists already.\n"
    ) + _fill("export_pgmq_script", {"script": _quoted(script)})


def _functions_file() -> tuple[str, str]:
    """The repeatable files as one migration, named by their combined checksum; recorded as migrate records them."""
    files = repeatables()
    combined = hashlib.sha256("".join(f.checksum for f in files).encode()).hexdigest()[:12]
    header = (
        f"-- session ledger functions, triggers, views and grants ({__version__}, schema {SCHEMA_VERSION}),\n"
        "-- exported by `listener export-migrations`. Do not edit: export again after upgrading.\n"
    )
    names = {"names": [f.name for f in files]}
    record = ";\n".join(
        [
            bound("forget_repeatables", names),
            bound("record_repeatables", {**names, "checksums": [f.checksum for f in files]}),
            bound("record_schema_version", {"version": SCHEMA_VERSION, "package": __version__}),
        ]
    )
    text = "".join(f"\n-- ===== {f.name}\n{f.sql.rstrip()}\n" for f in files)
    body = _fill(
        "export_functions",
        {
            "requires": _requires(max(m.version for m in migrations()) + 1).rstrip("\n"),
            "functions": _quoted(text),
            "record": _quoted(record),
        },
    )
    return f"session_ledger_functions_{combined}", header + body


def _migration_file(version: int, name: str, sql_text: str, checksum: str) -> str:
    """One migration, recorded as migrate records it."""
    header = (
        f"-- session ledger migration {version:04d}_{name}, exported by `listener export-migrations`.\n"
        "-- Do not edit: `listener migrate` compares its checksum with the packaged file.\n"
    )
    return header + _fill(
        "export_migration",
        {
            "requires": _requires(version).rstrip("\n"),
            "bootstrap": _quoted(query("bootstrap")),
            "version": _literal(version),
            "checksum": _literal(checksum),
            "label": _literal(f"{version:04d}_{name}"),
            "migration": _quoted(sql_text),
            "record": _quoted(
                bound("record_migration", {"version": version, "name": name, "checksum": checksum})
            ),
        },
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
        files.append(
            (
                f"session_ledger_{m.version:04d}_{m.name}",
                _migration_file(m.version, m.name, m.sql, m.checksum),
            )
        )
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
