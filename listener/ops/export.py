"""`listener export-migrations DIR`: the install as SQL files for a Supabase project's supabase/migrations.

One file installs PGMQ (the extension, as Supabase Queues provides it, or the
SQL-only script), then one file per numbered migration. Each migration file also
records itself in ``session_ledger.migrations`` with the checksum `listener migrate`
expects, so the listener accepts the database and a later `listener migrate` finds
nothing left to do.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from listener.core.sql_files import migrations
from listener.errors import ConfigError, PgmqUnavailable
from listener.ops.migrate import _BOOTSTRAP

_PGMQ_EXTENSION = """\
-- PGMQ for the session ledger's queues. On Supabase this is the Queues
-- integration: the extension lives in the schema pgmq. Do not expose
-- pgmq_public through the API: the ledger never needs it.
CREATE EXTENSION IF NOT EXISTS pgmq;
"""


def _pgmq_script() -> str:
    try:
        from pgmq.install import get_embedded_install_sql, get_embedded_sql_version

        script, version = get_embedded_install_sql(), get_embedded_sql_version()
    except Exception as exc:  # the client raises its own error types for a broken wheel
        raise PgmqUnavailable(f"the pgmq client's bundled install script could not be read: {exc}") from None
    return (
        f"-- PGMQ {version}, SQL-only install (for servers without the pgmq extension).\n"
        "-- Apply it once, on a database where the schema pgmq does not exist yet.\n\n" + str(script)
    )


def export_migrations(
    directory: Path, *, pgmq: str = "extension", stamp: datetime | None = None
) -> list[Path]:
    """Write the PGMQ file and each migration not already in directory, as <UTC timestamp>_session_ledger_*.sql."""
    if pgmq not in ("extension", "script"):
        raise ConfigError(f"unknown PGMQ install {pgmq!r}: use extension or script")
    directory.mkdir(parents=True, exist_ok=True)
    # Supabase orders migrations by the 14-digit timestamp prefix; one second apart keeps ours in order.
    first = (stamp or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    files: list[tuple[str, str]] = [
        ("session_ledger_pgmq", _PGMQ_EXTENSION if pgmq == "extension" else _pgmq_script())
    ]
    for m in migrations():
        record = (
            "INSERT INTO session_ledger.migrations (version, name, checksum)\n"
            f"VALUES ({m.version}, '{m.name}', '{m.checksum}') ON CONFLICT (version) DO NOTHING;\n"
        )
        body = (
            f"-- session ledger migration {m.version:04d}_{m.name}, exported by `listener export-migrations`.\n"
            "-- Do not edit: `listener migrate` compares its checksum with the packaged file.\n"
            + _BOOTSTRAP
            + "\n"
            + m.sql.rstrip()
            + "\n\n"
            + record
        )
        files.append((f"session_ledger_{m.version:04d}_{m.name}", body))
    written = []
    for i, (name, text) in enumerate(files):
        # Already exported (and perhaps applied) under an earlier timestamp: a second
        # copy would run the same migration twice.
        if any(directory.glob(f"*_{name}.sql")):
            continue
        path = directory / f"{(first + timedelta(seconds=i)):%Y%m%d%H%M%S}_{name}.sql"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def export_command(args: argparse.Namespace, settings: Any) -> int:
    """The `listener export-migrations` command."""
    target = Path(args.directory)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} exists and is not a directory")
    written = export_migrations(target, pgmq=args.pgmq)
    for path in written:
        print(path)
    if not written:
        print(f"{target} already holds every session ledger migration")
    return 0
