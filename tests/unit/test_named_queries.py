"""Every statement the package runs has a name in sql/queries.sql, and every name there is used."""

from __future__ import annotations

import ast
from pathlib import Path

import listener
from listener.core.sql_files import queries

PACKAGE = Path(listener.__file__).parent
# The layers that run against a user's database; devtools and testing build throwaway ones.
RUNTIME = ("core", "ops", "http", "cli")


def _sources() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}


def test_every_named_query_is_used() -> None:
    text = "\n".join(_sources().values())
    unused = sorted(name for name in queries() if f'"{name}"' not in text)
    assert unused == []


def test_the_runtime_runs_no_statement_without_a_name() -> None:
    """No execute() of a string literal or f-string: SQL lives in sql/queries.sql, composed SQL in psycopg.sql."""
    found = []
    for path, source in _sources().items():
        if path.relative_to(PACKAGE).parts[0] not in RUNTIME:
            continue
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("execute", "executemany")
                and node.args
                and isinstance(node.args[0], ast.Constant | ast.JoinedStr)
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []
