"""`listener export-migrations`: files for supabase/migrations that install exactly what `listener migrate` does."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from listener.core.db import connect
from listener.core.sql_files import demo_schema, migrations
from listener.devtools import demo_data
from listener.devtools.throwaway import create_database, drop_database
from listener.ops.export import export_migrations
from listener.ops.migrate import migrate
from listener.testing.ledger import Ledger

from support.world import run_cli


@pytest.fixture
def app_dsn(ledger_server: str) -> Iterator[str]:
    """A database holding only the app."""
    dsn = create_database(ledger_server, prefix="ledger_export")
    with connect(dsn) as conn:
        conn.execute(demo_schema())
    yield dsn
    drop_database(ledger_server, dsn)


def test_exported_files_install_the_ledger_and_migrate_finds_nothing_to_do(
    app_dsn: str, tmp_path: Path
) -> None:
    stamp = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    files = export_migrations(tmp_path, pgmq="script", stamp=stamp)
    names = [f.name for f in files]
    assert names[0] == "20250102030405_session_ledger_pgmq.sql"
    assert names[1:-1] == [
        f"{stamp + timedelta(seconds=i + 1):%Y%m%d%H%M%S}_session_ledger_{m.version:04d}_{m.name}.sql"
        for i, m in enumerate(migrations())
    ]
    assert names[-1].startswith(
        f"{stamp + timedelta(seconds=len(migrations()) + 1):%Y%m%d%H%M%S}_session_ledger_functions_"
    )
    assert len(names) == 2 + len(migrations())
    assert names == sorted(names), "Supabase applies them in name order"

    # As `supabase db push` does: each file in its own transaction, in name order.
    with connect(app_dsn, autocommit=False) as conn:
        for f in sorted(tmp_path.iterdir()):
            conn.execute(f.read_text(encoding="utf-8"))
            conn.commit()

    report = migrate(app_dsn)
    assert (report.pgmq, report.applied, report.repeatables) == ("present", [], [])
    assert not report.changed

    ledger = Ledger(app_dsn)
    org = demo_data.create_org(ledger.conn)
    pack = demo_data.create_pack(ledger.conn, org, sessions_total=3)
    [booking] = demo_data.create_bookings(ledger.conn, org, pack)
    ledger.complete_as_user(booking, org.trainer_user_id)
    ledger.drain()
    assert ledger.sessions_used(pack) == 1
    ledger.close()

    assert export_migrations(tmp_path, pgmq="script") == [], "already exported files are not written twice"


def test_export_command_uses_the_pgmq_extension_by_default(tmp_path: Path) -> None:
    result = run_cli("export-migrations", str(tmp_path / "supabase" / "migrations"))
    assert result.returncode == 0, result.stderr
    written = [Path(line) for line in result.stdout.splitlines()]
    assert len(written) == 2 + len(migrations())
    assert "CREATE EXTENSION IF NOT EXISTS pgmq;" in written[0].read_text(encoding="utf-8")
    assert "INSERT INTO session_ledger.migrations" in written[1].read_text(encoding="utf-8")


def test_a_changed_repeatable_file_is_exported_again_as_a_new_file(app_dsn: str, tmp_path: Path) -> None:
    stamp = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = export_migrations(tmp_path, pgmq="script", stamp=stamp)
    functions = first[-1]
    # As an app's directory holds it after exporting an earlier release: the same
    # migrations, and the functions file of that release (another checksum, older body).
    older = functions.with_name(functions.name[:14] + "_session_ledger_functions_000000000000.sql")
    functions.rename(older)
    with connect(app_dsn, autocommit=False) as conn:
        for f in sorted(tmp_path.iterdir()):
            conn.execute(f.read_text(encoding="utf-8"))
            conn.commit()
        conn.execute("UPDATE session_ledger.repeatables SET checksum = 'from an earlier release'")
        conn.commit()

    again = export_migrations(tmp_path, pgmq="script")
    assert [p.name.split("_", 1)[1] for p in again] == [functions.name.split("_", 1)[1]]
    assert again[0].name > older.name, "the new functions file sorts after everything already there"
    with connect(app_dsn, autocommit=False) as conn:
        conn.execute(again[0].read_text(encoding="utf-8"))
        conn.commit()
    report = migrate(app_dsn)
    assert not report.changed, "after applying the exported file, migrate finds nothing to do"


def test_switching_the_pgmq_install_after_a_first_export_is_refused_in_one_line(tmp_path: Path) -> None:
    first = run_cli("export-migrations", str(tmp_path))
    assert first.returncode == 0, first.stderr
    before = sorted(p.name for p in tmp_path.iterdir())
    again = run_cli("export-migrations", str(tmp_path), "--pgmq", "script")
    assert again.returncode != 0
    [line] = again.stderr.strip().splitlines()
    assert "_session_ledger_pgmq.sql already installs the pgmq extension; --pgmq script would install" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    same = run_cli("export-migrations", str(tmp_path))
    assert same.returncode == 0 and sorted(p.name for p in tmp_path.iterdir()) == before
