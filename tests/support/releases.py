"""Released versions of the package, as their release commits hold them, run as they ran.

A release's `listener` and `sql/` are extracted from its commit (`git archive`) and
its own CLI is run with this interpreter, so an old install is built by the old code
itself (its demo schema, its migrate, its listener), never by a copy of its SQL.
A release is named by its commit, not its tag: a clone of the branch alone carries
the commits but not always the tags. Where the tag exists it must name the same
commit. A missing commit fails the test (a shallow clone needs `git fetch --unshallow`):
the upgrade route is only tested from releases that exist.
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

# Every release and the commit it was cut from; the upgrade route is tested from each.
COMMITS = {
    "v0.1.0": "05ee13a0f0466eb50d62b42805917e5b7bb36b72",
    "v0.2.0": "63adb824bfcdf74a5b31bfaf507aac1b80584cc5",
    "v0.3.0": "75ef9f05414b2c12597d9e7a26f0e256587c1690",
}
RELEASES = tuple(COMMITS)


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, check=False, timeout=60)


def extract(tag: str, into: Path) -> Path:
    """The release's `listener` package and `sql/` directory under into/<tag>."""
    commit = COMMITS.get(tag)
    if commit is None or _git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        pytest.fail(
            f"release {tag} (commit {commit or 'unknown'}) is missing from {ROOT}: the upgrade route "
            "is tested from each release's commit (a shallow clone needs `git fetch --unshallow`)",
            pytrace=False,
        )
    tagged = _git("rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}")
    if tagged.returncode == 0 and tagged.stdout.decode().strip() != commit:
        pytest.fail(f"git tag {tag} names {tagged.stdout.decode().strip()}, not the release commit {commit}")
    archive = _git("archive", "--format=tar", commit, "listener", "sql")
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
