"""A released version's ledger, installed by that release's own code, for a bench arm beside today's.

The release's `listener` package and `sql/` come from its commit (`git archive`, as the
upgrade tests take them) and its own CLI installs them, so the arm runs the release's
trigger and every function it calls exactly as they shipped, not a copy kept here.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from listener.core.db import connect

ROOT = Path(__file__).resolve().parents[1]

# The release each "today's trigger" arm stands for, by its commit (a clone may lack the tags).
V030 = "75ef9f05414b2c12597d9e7a26f0e256587c1690"


class ReleaseMissing(RuntimeError):
    """The release's commit is not in this checkout (a shallow clone needs `git fetch --unshallow`)."""


@contextmanager
def extracted(commit: str) -> Iterator[Path]:
    """The release's `listener` and `sql/` in a temporary directory, removed afterwards."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "listener", "sql"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if archive.returncode != 0:
        raise ReleaseMissing(f"commit {commit} is not in {ROOT}: {archive.stderr.decode().strip()}")
    with tempfile.TemporaryDirectory(prefix="ledger-bench-release-") as into:
        tree = Path(into)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(tree, filter="data")
        yield tree


def install_demo(tree: Path, dsn: str) -> None:
    """The release's demo (coaching) schema, then its own `listener migrate` on that database."""
    with connect(dsn, purpose="bench release install") as conn:
        conn.execute((tree / "sql" / "demo_schema.sql").read_text(encoding="utf-8"))
    result = subprocess.run(
        [sys.executable, "-m", "listener", "migrate", "--dsn", dsn],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the release's migrate failed: {result.stderr.strip()[-2000:]}")
