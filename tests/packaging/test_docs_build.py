"""The docs site builds as CI builds it: `mkdocs build --strict`, where any warning (a broken link or anchor) fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from support import ROOT

# The slow tier: the docs site's build.
pytestmark = pytest.mark.slow


def _nav_pages(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    return [p for item in node for p in _nav_pages(item)]


def test_the_docs_site_builds_strictly_with_every_page_and_the_screenshot(tmp_path: Path) -> None:
    site = tmp_path / "site"
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = built.stdout + built.stderr
    assert built.returncode == 0, (
        f"mkdocs build --strict failed (the `docs` extra installs mkdocs):\n{output}"
    )
    assert [line for line in output.splitlines() if line.startswith(("WARNING", "ERROR"))] == []

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    for page in _nav_pages(config["nav"]):
        name = page.removesuffix(".md")
        html = site / ("index.html" if name == "index" else f"{name}/index.html")
        assert html.is_file(), f"{page} was not built"
    # The dashboard page shows the screenshot the dashboard test takes.
    assert (site / "dashboard.png").read_bytes() == (ROOT / "docs" / "dashboard.png").read_bytes()
    assert 'src="../dashboard.png"' in (site / "dashboard" / "index.html").read_text(encoding="utf-8")
    # Headings carry the anchors the pages link to.
    design = (site / "design" / "index.html").read_text(encoding="utf-8")
    assert 'id="who-may-move-a-session"' in design
