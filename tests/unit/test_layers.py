"""The package's layers point one way: import-linter's contracts in pyproject.toml
([tool.importlinter]) state them, and CI runs `lint-imports` beside ruff and mypy.

These tests run the same contracts on a copy of the package with one import added
where a rule forbids it, so each rule is shown to fail: the forms a hand-written check
once missed (`from listener import cli`, `from ..cli import x`, an import inside a
function) and the top-level modules importing core.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import listener

from support import ROOT

PACKAGE = Path(listener.__file__).parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` with the project's contracts, over the package found first in `root`."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_package_keeps_every_contract(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE, tmp_path / "listener", ignore=shutil.ignore_patterns("__pycache__", "sql"))
    result = _lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "reported"),
    [
        ("core/worker.py", "from listener import cli", "listener.core.worker -> listener.cli"),
        ("ops/replay.py", "from ..cli import render", "listener.ops.replay -> listener.cli.render"),
        (
            "ops/pause.py",
            "def _f():\n    from listener.http import server",
            "listener.ops.pause -> listener.http",
        ),
        ("core/store.py", "import listener.ops.status", "listener.core.store -> listener.ops.status"),
        ("errors.py", "from listener.core import db", "listener.errors -> listener.core.db"),
        ("settings.py", "from .core import sql_files", "listener.settings -> listener.core.sql_files"),
        ("logs.py", "import listener.core.events", "listener.logs -> listener.core.events"),
        (
            "http/auth.py",
            "from listener.devtools import ports",
            "listener.http.auth -> listener.devtools.ports",
        ),
        (
            "cli/args.py",
            "from listener.testing import ledger",
            "listener.cli.args -> listener.testing.ledger",
        ),
        (
            "testing/ledger.py",
            "from listener.cli import args",
            "listener.testing.ledger -> listener.cli.args",
        ),
        (
            "testing/checker.py",
            "from listener.http import metrics",
            "listener.testing.checker -> listener.http",
        ),
    ],
)
def test_an_import_against_a_layer_breaks_a_contract(
    tmp_path: Path, module: str, line: str, reported: str
) -> None:
    copy = tmp_path / "listener"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "sql"))
    path = copy / module
    path.write_text(path.read_text(encoding="utf-8") + "\n" + line + "\n", encoding="utf-8")
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert reported in result.stdout, result.stdout
