"""`listener export-migrations`: files for supabase/migrations that install exactly what `listener migrate` does."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from listener.core.db import connect
from listener.core.sql_files import demo_schema, migrations, query
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
    [statement] = _statements(written[0].read_text(encoding="utf-8"))
    assert statement.endswith("\nCREATE EXTENSION IF NOT EXISTS pgmq;")
    assert "INSERT INTO session_ledger.migrations" in written[1].read_text(encoding="utf-8")
    assert all(len(_statements(p.read_text(encoding="utf-8"))) == 1 for p in written)


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


# -- whole or nothing, however the files are applied ---------------------------------------


def _statements(text: str) -> list[str]:
    """A SQL file's statements, split as `supabase db push` splits them: on semicolons outside
    quotes, dollar quotes and comments."""
    out: list[str] = []
    start = i = 0
    quote: str | None = None
    while i < len(text):
        if quote is not None:
            end = text.find(quote, i)
            if end < 0:
                break
            i, quote = end + len(quote), None
            continue
        if text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end + 1
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
        elif text[i] == "'":
            quote, i = "'", i + 1
        elif text[i] == "$" and (m := re.match(r"\$[A-Za-z_]*\$", text[i:])):
            quote, i = m.group(0), i + len(m.group(0))
        elif text[i] == ";":
            out.append(text[start : i + 1].strip())
            start = i = i + 1
        else:
            i += 1
    tail = text[start:].strip()
    if tail and not all(line.startswith("--") for line in tail.splitlines() if line.strip()):
        out.append(tail)
    return [s for s in out if s.strip(";").strip()]


def _psql(dsn: str, path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    """psql as a user runs it: no ON_ERROR_STOP, so it goes on past an error."""
    psql = shutil.which("psql")
    assert psql is not None, "psql is not installed (apt-get install postgresql-client-15)"
    return subprocess.run(
        [psql, "-X", "-q", *flags, "-d", dsn, "-f", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _db_push(dsn: str, path: Path) -> str | None:
    """One file as `supabase db push` applies it: its statements as one batch of extended-protocol
    queries with a single Sync (one implicit transaction), then the CLI's own history row. The
    error, or None."""
    with connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS supabase_migrations")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations (version text PRIMARY KEY, name text)"
        )
        version, name = path.name.split("_", 1)
        try:
            with conn.pipeline():
                for statement in _statements(path.read_text(encoding="utf-8")):
                    conn.execute(statement.encode(), prepare=False)
                conn.execute(
                    "INSERT INTO supabase_migrations.schema_migrations VALUES (%s, %s)",
                    [version, name],
                    prepare=False,
                )
        except psycopg.Error as exc:
            return str(exc)
    return None


def _apply(how: str, dsn: str, path: Path) -> str | None:
    if how == "db push":
        return _db_push(dsn, path)
    result = _psql(dsn, path, *(["-1"] if how == "psql -1" else []))
    return result.stderr if "ERROR" in result.stderr else None


def _ledger_objects(dsn: str) -> dict[str, Any]:
    with connect(dsn) as conn:
        row = conn.execute(
            """SELECT to_regnamespace('session_ledger') IS NOT NULL AS schema,
                      (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'session_ledger%%') AS triggers,
                      to_regprocedure('public.use_session(uuid, timestamptz)') IS NOT NULL AS use_session_at"""
        ).fetchone()
    assert row is not None
    return dict(row)


NOTHING = {"schema": False, "triggers": 0, "use_session_at": False}


def _works(dsn: str) -> None:
    """The ledger charges a completion, and `listener migrate` finds nothing left to do."""
    assert not migrate(dsn).changed
    ledger = Ledger(dsn)
    org = demo_data.create_org(ledger.conn)
    pack = demo_data.create_pack(ledger.conn, org, sessions_total=3)
    [booking] = demo_data.create_bookings(ledger.conn, org, pack)
    ledger.complete_as_user(booking, org.trainer_user_id)
    ledger.drain()
    assert ledger.sessions_used(pack) == 1
    ledger.close()


HOWS = ["psql -f", "psql -1", "db push"]


@pytest.mark.parametrize("how", HOWS)
def test_each_exported_file_applies_whole(app_dsn: str, tmp_path: Path, how: str) -> None:
    # PGMQ's SQL-only script: this server has no pgmq extension to create (the extension's
    # file is a single CREATE EXTENSION statement, which the export command test checks).
    files = export_migrations(tmp_path, pgmq="script")
    for f in files:
        # every file is one statement: nothing in it can commit without the rest
        assert len(_statements(f.read_text(encoding="utf-8"))) == 1, f.name
        assert _apply(how, app_dsn, f) is None, f.name
    _works(app_dsn)
    # Applied a second time (say, pushed after `listener migrate` installed the ledger): nothing happens.
    with connect(app_dsn) as conn:
        conn.execute("DROP SCHEMA IF EXISTS supabase_migrations CASCADE")
    for f in files:
        assert _apply(how, app_dsn, f) is None, f.name
    assert not migrate(app_dsn).changed


@pytest.mark.parametrize("how", HOWS)
def test_a_file_that_fails_applies_nothing_and_the_files_after_it_refuse(
    app_dsn: str, tmp_path: Path, how: str
) -> None:
    files = export_migrations(tmp_path, pgmq="script")
    with connect(app_dsn) as conn:
        # In 0001's way, half-way through: it creates this function after its schema and tables.
        conn.execute(
            "CREATE FUNCTION public.use_session(uuid, timestamptz) RETURNS int LANGUAGE sql AS 'SELECT 1'"
        )
    assert _apply(how, app_dsn, files[0]) is None  # PGMQ
    errors = [_apply(how, app_dsn, f) for f in files[1:]]  # on past the error, as psql goes on
    assert all(e is not None for e in errors)
    assert "already exists" in str(errors[0])
    assert all("migration 0001 is not applied" in str(e) for e in errors[1:])
    assert _ledger_objects(app_dsn) == {**NOTHING, "use_session_at": True}
    with connect(app_dsn) as conn:
        conn.execute("DROP FUNCTION public.use_session(uuid, timestamptz)")
    report = migrate(app_dsn)
    assert report.recovered is None and report.applied == [f"{m.version:04d}_{m.name}" for m in migrations()]
    _works(app_dsn)


def _old_export(directory: Path) -> list[Path]:
    """The files an earlier release exported: each migration's statements one after another, then its record."""
    paths = []
    for i, m in enumerate(migrations()):
        path = directory / f"2025010203040{i}_session_ledger_{m.version:04d}_{m.name}.sql"
        path.write_text(
            query("bootstrap")
            + m.sql
            + "\nINSERT INTO session_ledger.migrations (version, name, checksum) "
            + f"VALUES ({m.version}, '{m.name}', '{m.checksum}') ON CONFLICT (version) DO NOTHING;\n",
            encoding="utf-8",
        )
        paths.append(path)
    return paths


@pytest.mark.parametrize("run_on", [False, True], ids=["stopped", "ran-on-past-the-error"])
def test_migrate_recovers_an_install_an_old_export_left_half_done(
    app_dsn: str, tmp_path: Path, run_on: bool
) -> None:
    with connect(app_dsn) as conn:
        org = demo_data.create_org(conn)
        pack = demo_data.create_pack(conn, org, sessions_total=5, sessions_used=1)
        done = demo_data.create_bookings(conn, org, pack, count=3, status="completed")
    export_migrations(tmp_path / "pgmq", pgmq="script")
    assert _apply("psql -f", app_dsn, next((tmp_path / "pgmq").glob("*_pgmq.sql"))) is None
    old = _old_export(tmp_path)
    # psql -f without a transaction: LOCK TABLE fails and the rest of 0001 runs statement by
    # statement until it stops half-way (here: cut short), before its record.
    first = old[0].read_text(encoding="utf-8")
    cut = first[: first.index("CREATE FUNCTION public.use_session(")]
    old[0].write_text(cut, encoding="utf-8")
    result = _psql(app_dsn, old[0])
    assert "LOCK TABLE can only be used in transaction blocks" in result.stderr
    if run_on:
        for f in old[1:]:
            _psql(app_dsn, f)
    assert _ledger_objects(app_dsn)["schema"]
    with connect(app_dsn) as conn:
        recorded = [
            r["version"] for r in conn.execute("SELECT version FROM session_ledger.migrations ORDER BY 1")
        ]
    # Run on past the error, every later file records itself, whatever part of it failed.
    assert recorded == ([m.version for m in migrations()][1:] if run_on else [])

    report = migrate(app_dsn)
    assert report.recovered == "an install created ledger objects but never recorded migration 0001"
    assert report.applied == [f"{m.version:04d}_{m.name}" for m in migrations()]
    with connect(app_dsn) as conn:
        adopted = conn.execute(
            "SELECT state, source FROM session_ledger.charges WHERE booking_id = ANY (%s)", [done]
        ).fetchall()
        assert adopted == [{"state": "paid", "source": "adoption"}] * 3
        assert demo_data.sessions_used(conn, pack) == 1
    _works(app_dsn)


def test_migrate_leaves_a_half_done_install_that_moved_sessions_alone(app_dsn: str, tmp_path: Path) -> None:
    migrate(app_dsn)
    with connect(app_dsn) as conn:
        org = demo_data.create_org(conn)
        pack = demo_data.create_pack(conn, org, sessions_total=5)
        [booking] = demo_data.create_bookings(conn, org, pack)
        conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [booking])
    Ledger(app_dsn).drain(listener_running=False)
    with connect(app_dsn) as conn:
        # An old export's later file run on past an error: a gap in the recorded migrations.
        conn.execute("DELETE FROM session_ledger.migrations WHERE version = 2")
    result = run_cli("migrate", "--dsn", app_dsn)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "migration 0002 is not recorded, though a later one is" in line
    assert "it has moved sessions since, so migrate will not reset it" in line
    with connect(app_dsn) as conn:
        assert demo_data.sessions_used(conn, pack) == 1
        row = conn.execute(
            "SELECT state FROM session_ledger.charges WHERE booking_id = %s", [booking]
        ).fetchone()
        assert row == {"state": "paid"}


def test_migrate_installs_again_when_a_recorded_install_lacks_a_table(app_dsn: str) -> None:
    migrate(app_dsn)
    with connect(app_dsn) as conn:
        conn.execute("DROP TABLE session_ledger.drain_runs")
    result = run_cli("migrate", "--dsn", app_dsn)
    assert result.returncode == 0, result.stderr
    assert (
        "removed an install an earlier run left half-done "
        "(the ledger's tables session_ledger.drain_runs are missing) and installed again"
    ) in result.stdout
    _works(app_dsn)
