"""The one loader of the app's schema files: the rule for paths, statement splitting as psql
splits, errors naming file and line, and the Supabase-shaped base being safe to re-run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from listener.core.db import connect
from listener.devtools import app_schema
from listener.devtools.throwaway import create_database, drop_database
from listener.errors import SchemaFileFailed, SchemaFileMissing

from support.supabase_fixtures import APP_SCHEMA


@pytest.fixture
def blank_dsn(ledger_server: str) -> Iterator[str]:
    """An empty database on the test server."""
    dsn = create_database(ledger_server, prefix="schema_test")
    yield dsn
    drop_database(ledger_server, dsn)


TRICKY = """\\restrict abc123
-- a comment; with a semicolon
CREATE TABLE public.t ("odd;name" text DEFAULT 'it''s; fine', b text DEFAULT E'back\\\\slash\\'; too');
/* block /* nested; */ still comment; */
CREATE FUNCTION public.f() RETURNS text LANGUAGE plpgsql AS $body$
BEGIN
    RETURN 'a;b' || $$;$$;
END;
$body$;
CREATE FUNCTION public.g(x int) RETURNS int LANGUAGE sql
BEGIN ATOMIC
    SELECT CASE WHEN x > 0 THEN 1 ELSE 0 END;
    SELECT x;
END;
CREATE SCHEMA public;
SELECT 1
\\unrestrict abc123
"""


def test_statements_split_as_psql_splits_them_and_apply(blank_dsn: str, tmp_path: Path) -> None:
    statements = app_schema.split_statements(TRICKY)
    assert [s.line for s in statements] == [3, 5, 10, 15, 16]
    assert statements[2].sql.endswith("END;")
    path = tmp_path / "tricky.sql"
    path.write_text(TRICKY, encoding="utf-8")
    assert app_schema.apply_sql_file(blank_dsn, path) == 5
    with connect(blank_dsn, purpose="tests") as conn:
        row = conn.execute(
            'INSERT INTO public.t DEFAULT VALUES RETURNING "odd;name" AS a, b, public.f() AS f, public.g(5) AS g'
        ).fetchone()
    assert row == {"a": "it's; fine", "b": "back\\slash'; too", "f": "a;b;", "g": 5}


def test_a_failing_statement_names_its_file_and_line_and_leaves_nothing(
    blank_dsn: str, tmp_path: Path
) -> None:
    path = tmp_path / "broken.sql"
    path.write_text(
        "CREATE TABLE public.first (id int);\n"
        "\n"
        "CREATE TABLE public.second (\n"
        "    id int,\n"
        "    name txet NOT NULL\n"
        ");\n",
        encoding="utf-8",
    )
    with pytest.raises(SchemaFileFailed) as caught:
        app_schema.apply_sql_file(blank_dsn, path)
    message = str(caught.value)
    assert message.startswith(f"{path}:5: ERROR 42704: ")
    assert "txet" in message and "\n" not in message
    with connect(blank_dsn, purpose="tests") as conn:
        row = conn.execute("SELECT to_regclass('public.first') IS NULL AS gone").fetchone()
    assert row == {"gone": True}, "the file applies in one transaction"


def test_an_error_without_a_position_names_the_statements_first_line(blank_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "twice.sql"
    path.write_text("CREATE TABLE public.a (id int);\n-- again\nCREATE TABLE\n  public.a (id int);\n")
    with pytest.raises(SchemaFileFailed, match=r"twice\.sql:3: ERROR 42P07: relation \"a\" already exists$"):
        app_schema.apply_sql_file(blank_dsn, path)


def test_psql_meta_commands_other_than_restrict_are_refused(blank_dsn: str, tmp_path: Path) -> None:
    path = tmp_path / "meta.sql"
    path.write_text("SELECT 1;\n\\connect other\n")
    with pytest.raises(SchemaFileFailed, match=r"meta\.sql:2: psql meta-command \\connect is not supported"):
        app_schema.apply_sql_file(blank_dsn, path)


def test_paths_are_files_or_directories_of_sql_files_in_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    for name in ("20240102_b.sql", "20240101_a.sql", "notes.txt"):
        (folder / name).write_text("SELECT 1;")
    (folder / "nested").mkdir()
    extra = tmp_path / "extra.psql"
    extra.write_text("SELECT 1;")
    assert app_schema.schema_files([extra, folder]) == [
        extra,
        folder / "20240101_a.sql",
        folder / "20240102_b.sql",
    ]
    with pytest.raises(SchemaFileMissing, match="does not exist"):
        app_schema.schema_files([tmp_path / "missing.sql"])
    with pytest.raises(SchemaFileMissing, match=r"holds no \.sql files"):
        app_schema.schema_files([folder / "nested"])


def test_the_base_is_idempotent_and_safe_to_run_at_once_on_two_databases(ledger_server: str) -> None:
    dsns = [create_database(ledger_server, prefix="base_test") for _ in range(2)]
    try:
        errors: list[BaseException] = []

        def apply(dsn: str) -> None:
            try:
                app_schema.apply_supabase_base(dsn)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=apply, args=(d,)) for d in dsns]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        app_schema.apply_supabase_base(dsns[0])  # and once more
        with connect(dsns[0], purpose="tests") as conn:
            row = conn.execute(
                """SELECT pg_has_role('authenticator', 'authenticated', 'MEMBER') AS member,
                          -- the extension, or its stand-in where the server lacks uuid-ossp
                          extensions.uuid_generate_v4() IS NOT NULL AS uuid_v4,
                          to_regclass('auth.users') IS NOT NULL AS users,
                          to_regprocedure('auth.uid()') IS NOT NULL AS uid"""
            ).fetchone()
        assert row == {"member": True, "uuid_v4": True, "users": True, "uid": True}
    finally:
        for dsn in dsns:
            drop_database(ledger_server, dsn)


def test_the_apps_dump_builds_on_a_plain_server_with_the_ledger(blank_dsn: str) -> None:
    report = app_schema.build_app_database(blank_dsn, [APP_SCHEMA])
    assert report is not None and "0001_session_ledger" in report.applied
    with connect(blank_dsn, purpose="tests") as conn:
        row = conn.execute(
            """SELECT (SELECT count(*) FROM pg_policies WHERE tablename = 'bookings') AS booking_policies,
                      (SELECT bool_and(relrowsecurity) FROM pg_class
                        WHERE relnamespace = 'public'::regnamespace AND relkind = 'r') AS rls_everywhere,
                      (SELECT reloptions FROM pg_class WHERE oid = 'public.upcoming_bookings'::regclass) AS view_options,
                      (SELECT attgenerated FROM pg_attribute
                        WHERE attrelid = 'public.client_purchases'::regclass AND attname = 'sessions_remaining')
                          AS generated"""
        ).fetchone()
    assert row == {"booking_policies": 5, "rls_everywhere": True, "view_options": None, "generated": "s"}
