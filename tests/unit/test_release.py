"""A release a user can name: the package's version, `listener --version`, CHANGELOG.md and
docs/upgrading.md's table agree, and the schema version they name is the code's own."""

from __future__ import annotations

import contextlib
import io
import re
import tomllib
from dataclasses import dataclass
from datetime import date

import pytest

import listener
from listener.cli.main import build_parser
from listener.core.sql_files import SCHEMA_VERSION, migrations

from support import ROOT

CHANGELOG = ROOT / "CHANGELOG.md"
UPGRADING = ROOT / "docs" / "upgrading.md"
_RELEASE = re.compile(r"^## \[(?P<version>\d+\.\d+\.\d+)\] - (?P<date>\d{4}-\d\d-\d\d)$")
_SCHEMA = re.compile(r"^Schema version (?P<n>\d+)\b")
_ROW = re.compile(r"^\| (?P<schema>\d+) \| (?P<release>\d+\.\d+\.\d+) \| (?P<migrations>.*) \|$")
_MIGRATION = re.compile(r"`(?P<name>\d{4}_[a-z0-9_]+)`")


@dataclass(frozen=True)
class Release:
    """One release of the changelog."""

    version: tuple[int, int, int]
    date: date
    schema: int | None
    text: str


def _version(text: str) -> tuple[int, int, int]:
    major, minor, patch = (int(p) for p in text.split("."))
    return major, minor, patch


def changelog() -> list[Release]:
    """The changelog's releases, in the order it lists them."""
    releases: list[Release] = []
    head: re.Match[str] | None = None
    body: list[str] = []

    def close() -> None:
        if head is not None:
            schemas = [int(m["n"]) for line in body if (m := _SCHEMA.match(line))]
            releases.append(
                Release(
                    _version(head["version"]),
                    date.fromisoformat(head["date"]),
                    schemas[0] if schemas else None,
                    "\n".join(body),
                )
            )

    for line in CHANGELOG.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            close()
            head, body = _RELEASE.match(line), []
        else:
            body.append(line)
    close()
    return releases


def upgrading_table() -> dict[tuple[int, int, int], tuple[int, list[str]]]:
    """docs/upgrading.md's table: per release, its schema version and the migrations it adds."""
    rows = {}
    for line in UPGRADING.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            names = [m["name"] for m in _MIGRATION.finditer(match["migrations"])]
            rows[_version(match["release"])] = (int(match["schema"]), names)
    return rows


def test_the_package_says_one_version() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["version"] == listener.__version__


def test_listener_version_prints_the_package_and_schema_versions() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0
    assert out.getvalue() == f"listener {listener.__version__} (schema version {SCHEMA_VERSION})\n"


def test_the_changelog_names_this_release_first_with_the_codes_schema_version() -> None:
    releases = changelog()
    assert releases, "no `## [X.Y.Z] - YYYY-MM-DD` release in CHANGELOG.md"
    newest = releases[0]
    assert newest.version == _version(listener.__version__)
    assert newest.schema == SCHEMA_VERSION, (
        f"CHANGELOG.md says {listener.__version__} is schema version {newest.schema}; the code installs "
        f"{SCHEMA_VERSION}: write `Schema version {SCHEMA_VERSION}.` under its heading"
    )


def test_every_release_in_the_changelog_is_dated_in_order_with_a_schema_version_and_an_upgrade_note() -> None:
    releases = changelog()
    assert [r.version for r in releases] == sorted((r.version for r in releases), reverse=True)
    assert [r.date for r in releases] == sorted((r.date for r in releases), reverse=True)
    for r in releases:
        assert r.schema is not None, f"{r.version}: no `Schema version N.` line"
        assert "**Upgrading from" in r.text or "**Installing" in r.text, f"{r.version}: no upgrade note"
        assert "### Added" in r.text, f"{r.version}: no Added section"
    first = releases[-1]
    assert first.version == (0, 1, 0) and first.schema == 1


def test_upgrading_md_agrees_with_the_changelog_and_names_every_migration_once() -> None:
    table = upgrading_table()
    releases = {r.version: r.schema for r in changelog()}
    assert {v: schema for v, (schema, _) in table.items()} == releases
    named = [name for _, (_, names) in sorted(table.items()) for name in names]
    assert named == [f"{m.version:04d}_{m.name}" for m in migrations()], (
        "docs/upgrading.md's table must name each migration once, under the release that adds it"
    )
    schemas = [schema for _, (schema, _) in sorted(table.items())]
    assert schemas == sorted(set(schemas)), "each release's schema version is newer than the last"
    assert table[_version(listener.__version__)][0] == SCHEMA_VERSION
