"""Released versions of the package, as their git tags hold them, run as they ran.

A release's `listener` and `sql/` are extracted from its tag (`git archive`) and its
own CLI is run with this interpreter, so an old install is built by the old code
itself (its demo schema, its migrate, its listener), never by a copy of its SQL.
A missing tag fails the test: the upgrade route is only tested from releases that
exist (`git clone` copies tags; a shallow CI checkout needs `git fetch --tags`).
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from functools import cache
from pathlib import Path

import pytest

from support import ROOT

# Every release with a tag; the upgrade route is tested from each.
RELEASES = ("v0.1.0", "v0.2.0")


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=False, timeout=60)


def extract(tag: str, into: Path) -> Path:
    """The release's `listener` package and `sql/` directory under into/<tag>."""
    if _git("rev-parse", "--verify", "--quiet", f"refs/tags/{tag}").returncode != 0:
        pytest.fail(
            f"git tag {tag} is missing from {ROOT}: the upgrade route is tested from each release's tag "
            "(fetch them with `git fetch --tags`)",
            pytrace=False,
        )
    archive = _git("archive", "--format=tar", tag, "listener", "sql")
    assert archive.returncode == 0, archive.stderr.decode()
    tree = into / tag
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tree, filter="data")
    return tree


@cache
def tree(tag: str) -> Path:
    """The release extracted once per test process, removed when it exits."""
    into = Path(tempfile.mkdtemp(prefix="session_ledger_releases_"))
    atexit.register(shutil.rmtree, into, ignore_errors=True)
    return extract(tag, into)


def sql_file(tree: Path, path: str) -> str:
    """One of the release's SQL files, e.g. sql/demo_schema.sql."""
    return (tree / path).read_text(encoding="utf-8")


def run(tree: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The release's own CLI: `python -m listener ARGS` with its package first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    result = subprocess.run(
        [sys.executable, "-m", "listener", *args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{tree.name} listener {args[0]}: {result.stderr}"
    return result
