"""Every statement the package runs has a name in sql/queries.sql, and every name there is used."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import listener
from listener.core.sql_files import queries

PACKAGE = Path(listener.__file__).parent


def _sources() -> dict[Path, str]:
    return {p: p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}


def test_every_named_query_is_used() -> None:
    text = "\n".join(_sources().values())
    unused = sorted(name for name in queries() if f'"{name}"' not in text)
    assert unused == []


# The start of a SQL statement, as the package's SQL is written (keywords in capitals).
_STATEMENT = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|DROP|TRUNCATE|LOCK|GRANT|REVOKE|DO|LISTEN|"
    r"NOTIFY|SET|RESET|SHOW|CALL|COPY|VALUES|EXPLAIN|ANALYZE|VACUUM|COMMENT|BEGIN|COMMIT)\b[\s(]"
)
_RUNS = ("execute", "executemany", "copy", "SQL")
# Renders sql/schema.sql from the catalog: SQL text is what it writes, never what it runs.
WRITES_SQL = frozenset({Path("devtools/schema_dump.py")})


def _text(node: ast.expr) -> str | None:
    """A string literal's text, or an f-string's literal parts joined."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left = _text(node.left)
        return left if left is not None else _text(node.right)
    return None


def _statements(source: str) -> list[int]:
    """Lines of SQL statements written in Python: run directly (execute(), executemany(), copy(),
    psycopg's sql.SQL()) or held in a variable to be run later."""
    found = []
    for node in ast.walk(ast.parse(source)):
        held: list[ast.expr] = []
        if isinstance(node, ast.Call) and node.args:
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in _RUNS:
                held.append(node.args[0])
        elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            held.append(node.value)
        found += [n.lineno for n in held if (text := _text(n)) is not None and _STATEMENT.match(text)]
    return found


def test_no_statement_is_written_in_python() -> None:
    """Every statement the package runs lives in sql/, in any layer (devtools and testing too):
    the named queries in sql/queries.sql, composed SQL as a named template for psycopg.sql."""
    found = [
        f"{path.relative_to(PACKAGE)}:{line}"
        for path, source in _sources().items()
        if path.relative_to(PACKAGE) not in WRITES_SQL
        for line in _statements(source)
    ]
    assert found == []


def test_the_statement_check_sees_sql_held_in_variables() -> None:
    caught = """
BOOTSTRAP = \"\"\"
CREATE SCHEMA IF NOT EXISTS x;
\"\"\"
conn.execute(BOOTSTRAP)
conn.execute("SELECT 1")
conn.execute(f"UPDATE t SET a = {a}")
statement: str = "DELETE FROM t"
conn.execute(sql.SQL("LISTEN {}").format(channel))
conn.execute(query("ping"))
message = "choose the rows you want"
"""
    assert sorted(_statements(caught)) == [2, 6, 7, 8, 9]
