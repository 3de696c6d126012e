"""The app's own schema from SQL files on a Supabase-shaped base: the one loader of `listener dev
--schema`, the pytest plugin and the tests.

The rule: each path is a file or a directory; a directory stands for its ``*.sql`` files (not
recursive) in name order. On a superuser connection the Supabase-shaped base
(``sql/supabase_base.sql``) is applied first, then the files in the order given, each in one
transaction, statement by statement so an error names its file and line; then the ledger is
installed with ``migrate()``. Two things every ``pg_dump`` file carries are tolerated: psql's
``\\restrict``/``\\unrestrict`` lines (pg_dump since 15.14) are skipped, and ``CREATE SCHEMA
public;`` runs as ``CREATE SCHEMA IF NOT EXISTS public;`` because every database already has a
public schema. Any other psql meta-command is an error.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from listener.core.db import connect
from listener.core.sql_files import query, sql_dir
from listener.errors import SchemaFileFailed, SchemaFileMissing, first_line
from listener.mapping.model import Mapping
from listener.ops.migrate import MigrateReport, migrate

SchemaPath = str | Path


def supabase_base_path() -> Path:
    """The Supabase-shaped base: API roles, auth, extensions, storage, default privileges."""
    return sql_dir() / "supabase_base.sql"


def supabase_base() -> str:
    """The text of the Supabase-shaped base."""
    return supabase_base_path().read_text(encoding="utf-8")


def schema_files(paths: Iterable[SchemaPath]) -> list[Path]:
    """The files the paths stand for, by the rule above; a missing path is an error."""
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix == ".sql" and p.is_file())
            if not inside:
                raise SchemaFileMissing(f"schema directory {path} holds no .sql files")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise SchemaFileMissing(f"schema file {path} does not exist")
    return found


@dataclass(frozen=True)
class Statement:
    """One SQL statement of a file and the line it starts on (1-based)."""

    line: int
    sql: str


_IDENT = re.compile(r"[A-Za-z_\x80-\U0010ffff][A-Za-z_0-9$\x80-\U0010ffff]*")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\x80-\U0010ffff][A-Za-z_0-9\x80-\U0010ffff]*)?\$")
_ROUTINE = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:FUNCTION|PROCEDURE)\b", re.IGNORECASE)
_ATOMIC = re.compile(r"\s+ATOMIC\b", re.IGNORECASE)
_CREATE_PUBLIC = re.compile(r'CREATE\s+SCHEMA\s+(?:public|"public")\s*;?', re.IGNORECASE)
_SKIPPED_META = ("\\restrict", "\\unrestrict")


class _Scanner:
    """Splits SQL text at top-level semicolons, as psql does, minding quotes, comments and bodies."""

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self.newlines = [i for i, ch in enumerate(text) if ch == "\n"]

    def line_of(self, index: int) -> int:
        """1-based line of a character index."""
        return bisect.bisect_left(self.newlines, index) + 1

    def statements(self) -> list[Statement]:
        """Every statement, meta-commands removed."""
        text, n = self.text, len(self.text)
        out: list[Statement] = []
        i = 0
        start: int | None = None  # index of the current statement's first character
        depth = 0  # BEGIN ... END nesting inside a routine's SQL-standard body
        while i < n:
            ch = text[i]
            if start is None and ch.isspace():
                i += 1
                continue
            if ch == "\\":
                # psql reads a backslash outside quotes as a meta-command, to the end of the line
                if start is not None and text[start:i].strip():
                    out.append(Statement(self.line_of(start), text[start:i].rstrip()))
                start = None
                i = self._meta_command(i)
                continue
            if text.startswith("--", i):
                end = text.find("\n", i)
                i = n if end < 0 else end + 1
                continue
            if text.startswith("/*", i):
                i = self._block_comment(i)
                continue
            if start is None:
                start, depth = i, 0
            if ch == "'":
                backslashes = i > 0 and text[i - 1] in "eE" and (i < 2 or not _is_ident_char(text[i - 2]))
                i = self._quoted(i, "'", backslashes=backslashes)
            elif ch == '"':
                i = self._quoted(i, '"', backslashes=False)
            elif ch == "$" and not (i > 0 and _is_ident_char(text[i - 1])):
                tag = _DOLLAR_TAG.match(text, i)
                if tag is None:
                    i += 1
                    continue
                close = text.find(tag.group(), tag.end())
                if close < 0:
                    raise self._error(i, f"unterminated dollar-quoted string {tag.group()}")
                i = close + len(tag.group())
            elif ch == ";" and depth == 0:
                out.append(Statement(self.line_of(start), text[start : i + 1]))
                start = None
                i += 1
            elif _IDENT.match(ch) and not (i > 0 and _is_ident_char(text[i - 1])):
                word = _IDENT.match(text, i)
                assert word is not None
                upper = word.group().upper()
                if _ROUTINE.match(text, start) is not None:
                    opens = upper == "BEGIN" and _ATOMIC.match(text, word.end()) is not None
                    if opens or (upper == "CASE" and depth > 0):
                        depth += 1
                    elif upper == "END" and depth > 0:
                        depth -= 1
                i = word.end()
            else:
                i += 1
        if start is not None and text[start:].strip():
            out.append(Statement(self.line_of(start), text[start:]))
        return out

    def _meta_command(self, i: int) -> int:
        end = self.text.find("\n", i)
        end = len(self.text) if end < 0 else end
        command = self.text[i:end].split()[0]
        if command not in _SKIPPED_META:
            raise self._error(i, f"psql meta-command {command} is not supported in a schema file")
        return end + 1

    def _block_comment(self, i: int) -> int:
        depth, j = 0, i
        while j < len(self.text):
            if self.text.startswith("/*", j):
                depth, j = depth + 1, j + 2
            elif self.text.startswith("*/", j):
                depth, j = depth - 1, j + 2
                if depth == 0:
                    return j
            else:
                j += 1
        raise self._error(i, "unterminated /* comment")

    def _quoted(self, i: int, quote: str, *, backslashes: bool) -> int:
        j = i + 1
        while j < len(self.text):
            ch = self.text[j]
            if backslashes and ch == "\\":
                j += 2
            elif ch == quote:
                if self.text.startswith(quote * 2, j):
                    j += 2
                else:
                    return j + 1
            else:
                j += 1
        raise self._error(i, f"unterminated {quote}-quoted text")

    def _error(self, index: int, message: str) -> SchemaFileFailed:
        return SchemaFileFailed(f"{self.name}:{self.line_of(index)}: {message}")


def _is_ident_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_$" or ord(ch) >= 0x80


def split_statements(text: str, *, name: str = "<sql>") -> list[Statement]:
    """The statements of a SQL file with their line numbers, psql meta-commands skipped or refused."""
    return _Scanner(text, name).statements()


def apply_sql_file(dsn: str, path: SchemaPath, *, display: str | None = None) -> int:
    """Apply one file in one transaction on its own connection; return the statements run."""
    name = display or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaFileMissing(f"cannot read schema file {name}: {exc}") from None
    return apply_sql_text(dsn, text, name=name)


def apply_sql_text(dsn: str, text: str, *, name: str) -> int:
    """Apply SQL text in one transaction, naming `name` and the line of a failing statement."""
    statements = split_statements(text, name=name)
    # A connection per file: a dump's session settings (search_path '', row_security
    # off, ...) must not leak into the next file or into migrate().
    with connect(dsn, autocommit=False, purpose="schema") as conn:
        for statement in statements:
            sql = statement.sql
            if _CREATE_PUBLIC.fullmatch(sql.strip()):
                sql = query("app_schema_public")
            try:
                conn.execute(sql)
            except psycopg.Error as exc:
                raise SchemaFileFailed(
                    f"{name}:{_error_line(statement, exc)}: ERROR {first_line(exc)}"
                ) from None
        conn.commit()
    return len(statements)


def _error_line(statement: Statement, exc: psycopg.Error) -> int:
    position = exc.diag.statement_position
    if not position or not position.isdigit():
        return statement.line
    return statement.line + statement.sql.count("\n", 0, int(position) - 1)


def apply_supabase_base(dsn: str) -> None:
    """Apply the Supabase-shaped base on a superuser connection."""
    apply_sql_file(dsn, supabase_base_path(), display="supabase_base.sql")


def build_app_database(
    dsn: str,
    paths: Sequence[SchemaPath],
    *,
    ledger_dsn: str | None = None,
    ledger: bool = True,
    mapping: Mapping | None = None,
) -> MigrateReport | None:
    """The loader: the base and the app's files on dsn (a superuser), then unless ledger=False the
    ledger by migrate() connected as ledger_dsn (default dsn), rendered from `mapping` (default: the
    coaching app's); returns what migrate() did."""
    files = schema_files(paths)  # a missing path fails before anything is applied
    apply_supabase_base(dsn)
    for path in files:
        apply_sql_file(dsn, path)
    if not ledger:
        return None
    # The files stand for the app's whole schema: the demo schema is not on offer here.
    return migrate(ledger_dsn or dsn, missing_hint="the app's schema files must create them", mapping=mapping)
