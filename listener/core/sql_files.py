"""The project's SQL files: named queries, the schema and install a fresh install runs, numbered migrations,
repeatable files, the demo schema."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from psycopg import sql

from ..mapping import model as mapping_model
from ..mapping.render import AppSQL, Keys, render

_NAME = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")
_REPEATABLE = re.compile(r"^\d{2}_[a-z0-9_]+\.sql$")

# The schema this package installs and expects. Bump it with every release whose
# SQL (a migration or a repeatable file) changes: a listener refuses a database
# whose schema is newer than it knows, and asks for `listener migrate` on an older one.
SCHEMA_VERSION = 7


@cache
def sql_dir() -> Path:
    """The directory holding the SQL files: inside the installed package, or the checkout's sql/."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "sql", package.parent / "sql"):
        if (candidate / "queries.sql").is_file():
            return candidate
    raise FileNotFoundError("SQL files not found next to the listener package")


@cache
def queries() -> dict[str, str]:
    """The named queries of queries.sql, by name."""
    text = (sql_dir() / "queries.sql").read_text(encoding="utf-8")
    found: dict[str, str] = {}
    parts = _NAME.split(text)
    # split() yields [preamble, name1, body1, name2, body2, ...]
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        # A section's banner comment before the next name belongs to that section, not to this query.
        lines = body.strip().splitlines()
        while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("--")):
            lines.pop()
        found[name] = "\n".join(lines)
    return found


def query(name: str) -> str:
    """One named query."""
    return queries()[name]


_PLACEHOLDER = re.compile(r"%\((?P<name>[a-z_]+)\)s|%%")


def bound(name: str, params: Mapping[str, object]) -> str:
    """One named query with its parameters written in as SQL literals: the statement a file
    carries (`listener export-migrations`) where `listener migrate` sends the query and its
    parameters apart. The values are the package's own (versions, names, checksums)."""

    def literal(m: re.Match[str]) -> str:
        return "%" if m["name"] is None else sql.Literal(params[m["name"]]).as_string(None)

    return _PLACEHOLDER.sub(literal, query(name))


def _checksum(sql: str) -> str:
    """SHA-256 of a file's text: what `listener migrate` records when it applies the file."""
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Migration:
    """One numbered migration file: applied once, never changed once released."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """The file's recorded checksum."""
        return _checksum(self.sql)


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration, in order."""
    found = []
    for path in sorted((sql_dir() / "migrations").iterdir()):
        match = _MIGRATION.match(path.name)
        if match:
            found.append(Migration(int(match["version"]), match["name"], path.read_text(encoding="utf-8")))
    return tuple(found)


@dataclass(frozen=True)
class Repeatable:
    """One file of functions, triggers, views or grants, re-applied whenever it changes."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """The file's recorded checksum."""
        return _checksum(self.sql)


def repeatables(app: AppSQL | None = None) -> tuple[Repeatable, ...]:
    """Every repeatable file rendered for an app (the coaching app's mapping when none is given),
    in the order they are applied (by name)."""
    return _rendered(app or default_app())


@cache
def _rendered(app: AppSQL) -> tuple[Repeatable, ...]:
    return tuple(
        Repeatable(path.name, render(path.read_text(encoding="utf-8"), app, name=path.name))
        for path in sorted((sql_dir() / "functions").iterdir())
        if _REPEATABLE.match(path.name)
    )


def default_app() -> AppSQL:
    """The coaching app's mapping with uuid keys: what renders when no database says otherwise."""
    return AppSQL(mapping_model.default(), Keys())


_TABLE = re.compile(r'^CREATE TABLE "(?P<schema>[a-z_]+)"\."(?P<table>[a-z_]+)"', re.MULTILINE)
_QUEUE = re.compile(r"^SELECT pgmq\.create\('(?P<queue>[a-z_]+)'\);", re.MULTILINE)


@cache
def ledger_tables() -> tuple[str, ...]:
    """Every table sql/schema.sql says an installed ledger holds, its queues' included, schema-qualified."""
    text = schema_sql()
    return tuple(f"{m['schema']}.{m['table']}" for m in _TABLE.finditer(text)) + tuple(
        f"pgmq.{kind}_{m['queue']}" for m in _QUEUE.finditer(text) for kind in ("q", "a")
    )


@cache
def schema_sql() -> str:
    """The ledger's schema as it stands (sql/schema.sql): the first step of a fresh install."""
    return (sql_dir() / "schema.sql").read_text(encoding="utf-8")


def install_sql(app: AppSQL | None = None) -> str:
    """What a fresh install does after the schema and before the repeatable files (sql/install.sql),
    rendered for an app."""
    return _install_rendered(app or default_app())


@cache
def _install_rendered(app: AppSQL) -> str:
    return render((sql_dir() / "install.sql").read_text(encoding="utf-8"), app, name="install.sql")


def demo_schema() -> str:
    """The coaching app's own schema, for blank databases."""
    return (sql_dir() / "demo_schema.sql").read_text(encoding="utf-8")


def uninstall_sql() -> str:
    """The script `listener uninstall` runs."""
    return (sql_dir() / "uninstall.sql").read_text(encoding="utf-8")
