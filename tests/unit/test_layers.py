"""The package's layers point one way.

core is the always-on path; ops (operator commands) and http (the port) build on it;
devtools (demo, dev, embedded server) on those; testing (the harness apps use) on
devtools; cli renders everything. Nothing imports a layer above it, function-local
imports included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import listener

PACKAGE = Path(listener.__file__).parent

# What each layer may import, besides itself and the package's top-level modules.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "ops": {"core"},
    "http": {"core", "ops"},
    "devtools": {"core", "ops", "http"},
    "testing": {"core", "ops", "devtools"},
    "cli": {"core", "ops", "http", "devtools"},
}
TOP_LEVEL = {"errors", "settings", "logs", "__init__", "__main__"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("listener."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("listener.")}
    return found


def test_no_layer_imports_one_above_it() -> None:
    wrong = {}
    for layer, allowed in ALLOWED.items():
        for path in sorted((PACKAGE / layer).rglob("*.py")):
            bad = _imports(path) - allowed - TOP_LEVEL - {layer}
            if bad:
                wrong[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert wrong == {}


def test_the_top_level_modules_import_no_layer_but_core() -> None:
    for name in ("errors", "settings", "logs"):
        assert _imports(PACKAGE / f"{name}.py") <= {"core"} | TOP_LEVEL, name


def test_the_check_sees_a_function_local_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from listener.cli.progress import Progress\n    return Progress\n")
    assert _imports(module) == {"cli"}
