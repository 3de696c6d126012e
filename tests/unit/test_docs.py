"""The documentation as a reader follows it: every `listener` command it shows parses, every relative link leads somewhere.

Nothing is built here (tests/packaging/test_docs_build.py builds the site strictly): the
Markdown files are read as they are, in README.md, ADOPTING.md and docs/*.md. Commands are
taken from the ```sh and ```console blocks (and bash/shell ones); links are checked as both
GitHub and the MkDocs site resolve them.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

# The CLI's parser, built as `listener` builds it. The one place this test names the builder.
from listener.cli.main import build_parser as cli_parser

from support import ROOT

DOCS = ROOT / "docs"
PAGES = (ROOT / "README.md", ROOT / "ADOPTING.md", *sorted(DOCS.glob("*.md")))

_SHELL = frozenset({"sh", "console", "bash", "shell"})
_FENCE = re.compile(r"^\s*(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<text>.*?)\s*#*\s*$")
_LINK = re.compile(r"!?\[(?P<text>[^\]]*)\]\((?P<target><[^>\n]*>|[^)\s]+)(?:\s+\"[^\"\n]*\")?\)")
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_OPERATORS = frozenset({"&&", "||", ";", "|", "&", ";;"})


@dataclass(frozen=True)
class Markdown:
    """One Markdown text split into its fenced blocks and the rest (prose, with code-block lines blanked)."""

    blocks: tuple[tuple[str, int, tuple[str, ...]], ...]  # (language, line of the first body line, body)
    prose: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Markdown:
        """Split text at its fences; an unclosed fence runs to the end, as renderers take it."""
        blocks: list[tuple[str, int, tuple[str, ...]]] = []
        prose: list[str] = []
        fence: str | None = None
        lang, start = "", 0
        body: list[str] = []
        for number, line in enumerate(text.splitlines(), start=1):
            match = _FENCE.match(line)
            if fence is None and match:
                fence, lang, start, body = match["fence"], match["lang"].lower(), number + 1, []
                prose.append("")
            elif fence is not None and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                blocks.append((lang, start, tuple(body)))
                fence = None
                prose.append("")
            elif fence is not None:
                body.append(line)
                prose.append("")
            else:
                prose.append(line)
        if fence is not None:
            blocks.append((lang, start, tuple(body)))
        return cls(tuple(blocks), tuple(prose))


@dataclass(frozen=True)
class Example:
    """One `listener` command line shown in a shell block."""

    where: str
    argv: tuple[str, ...]


def _logical_lines(lang: str, start: int, body: tuple[str, ...]) -> list[tuple[int, str]]:
    """A block's command lines: continuations joined; in a console block only the `$ ` lines."""
    lines: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for offset, raw in enumerate(body):
        number = start + offset
        if pending is not None:
            text = pending[1] + " " + raw.strip()
            number = pending[0]
        elif lang == "console":
            if not raw.lstrip().startswith("$ "):
                continue
            text = raw.lstrip()[2:]
        else:
            text = raw
        if text.rstrip().endswith("\\"):
            pending = (number, text.rstrip()[:-1])
            continue
        pending = None
        lines.append((number, text))
    if pending is not None:
        lines.append(pending)
    return lines


def _listener_argv(tokens: list[str]) -> tuple[str, ...] | None:
    """The arguments of one simple command if it runs `listener` (as such, by path or as `python -m listener`)."""
    while tokens and _ASSIGNMENT.match(tokens[0]):
        tokens = tokens[1:]
    if not tokens:
        return None
    program = Path(tokens[0]).name
    if program == "listener":
        return tuple(tokens[1:])
    if re.fullmatch(r"python3?(\.\d+)?", program) and tokens[1:3] == ["-m", "listener"]:
        return tuple(tokens[3:])
    return None


def examples_in(text: str, name: str) -> list[Example]:
    """Every `listener` command in the shell blocks of one Markdown text."""
    found: list[Example] = []
    for lang, start, body in Markdown.parse(text).blocks:
        if lang not in _SHELL:
            continue
        for number, line in _logical_lines(lang, start, body):
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            segment: list[str] = []
            for token in [*lexer, ";"]:
                if token in _OPERATORS:
                    argv = _listener_argv(segment)
                    if argv is not None:
                        found.append(Example(f"{name}:{number}", argv))
                    segment = []
                else:
                    segment.append(token)
    return found


def parse(argv: tuple[str, ...]) -> argparse.Namespace | None:
    """Parse argv as `listener` does: None for a help or version request, else the namespace; AssertionError if refused."""
    parser = cli_parser()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            return parser.parse_args(list(argv))
        except SystemExit as exc:
            if exc.code == 0 and {"--help", "-h", "--version"} & set(argv):
                return None
            message = err.getvalue().strip() or f"exit status {exc.code}"
            raise AssertionError(f"`listener {shlex.join(argv)}` does not parse: {message}") from None


def _subcommands() -> set[str]:
    parser = cli_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return set(actions[0].choices)


def _all_examples() -> list[Example]:
    return [
        e
        for page in PAGES
        for e in examples_in(page.read_text(encoding="utf-8"), page.relative_to(ROOT).as_posix())
    ]


EXAMPLES = _all_examples()


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.where for e in EXAMPLES])
def test_every_listener_command_in_the_docs_parses(example: Example) -> None:
    args = parse(example.argv)
    if args is not None:
        assert args.command == example.argv[0]


def test_the_docs_show_every_subcommand() -> None:
    shown = {e.argv[0] for e in EXAMPLES if e.argv}
    assert _subcommands() - shown == set(), "subcommands no example in the docs shows"
    assert len(EXAMPLES) >= len(_subcommands())


def test_a_command_the_cli_refuses_is_caught() -> None:
    text = (
        "Prose: listener audit --charge nothing here is a command.\n\n"
        "```sh\n"
        "# listener not-a-command (a comment)\n"
        "python3 -m venv .venv && LISTENER_DSN=x .venv/bin/listener status --json  # the first\n"
        "DATABASE_URL='postgresql://u@h/d' \\\n"
        "  listener audit --charge not-a-uuid\n"
        "```\n\n"
        "```console\n"
        "$ python -m listener replay --dead-letter --id 5\n"
        "listener printed this line, it is output\n"
        "$ listener --help\n"
        "```\n"
    )
    found = examples_in(text, "sample.md")
    assert [(e.where, e.argv) for e in found] == [
        ("sample.md:5", ("status", "--json")),
        ("sample.md:6", ("audit", "--charge", "not-a-uuid")),
        ("sample.md:11", ("replay", "--dead-letter", "--id", "5")),
        ("sample.md:13", ("--help",)),
    ]
    assert parse(found[0].argv) is not None
    with pytest.raises(AssertionError, match="not a pack id"):
        parse(found[1].argv)
    assert parse(found[2].argv) is not None
    assert parse(found[3].argv) is None


# Anchors, as each renderer makes them from a heading.


def _heading_text(raw: str) -> str:
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", raw)
    return text.replace("`", "")


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading (github-slugger): lowercase, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", _heading_text(heading).lower()).replace(" ", "-")


def mkdocs_slug(heading: str) -> str:
    """MkDocs' anchor for a heading (Python-Markdown's toc.slugify, ASCII): runs of spaces and hyphens become one."""
    text = unicodedata.normalize("NFKD", _heading_text(heading)).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(text: str) -> tuple[set[str], set[str]]:
    """The anchors of a Markdown text's headings: GitHub's, then MkDocs', each with its own suffix for repeats."""
    github: set[str] = set()
    mkdocs: set[str] = set()
    for line in Markdown.parse(text).prose:
        match = _HEADING.match(line)
        if not match:
            continue
        for seen, slug, sep in (
            (github, github_slug(match["text"]), "-"),
            (mkdocs, mkdocs_slug(match["text"]), "_"),
        ):
            candidate, n = slug, 0
            while candidate in seen:
                n += 1
                candidate = f"{slug}{sep}{n}"
            seen.add(candidate)
    return github, mkdocs


def broken_links(page: Path, *, site: Path) -> list[str]:
    """Every relative link of a page that leads nowhere, as `line: target: why`; a page in `site` may link only within it."""
    text = page.read_text(encoding="utf-8")
    prose = "\n".join(
        _CODE_SPAN.sub(lambda m: " " * len(m.group()), line) for line in Markdown.parse(text).prose
    )
    problems: list[str] = []
    for match in _LINK.finditer(prose):
        target = match["target"].strip("<>")
        if _SCHEME.match(target) or target.startswith("//"):
            continue
        line = prose.count("\n", 0, match.start()) + 1
        path_part, _, anchor = target.partition("#")
        resolved = (page.parent / path_part).resolve() if path_part else page.resolve()
        if not resolved.exists():
            problems.append(f"{line}: {target}: no such file")
            continue
        if page.resolve().is_relative_to(site.resolve()) and not resolved.is_relative_to(site.resolve()):
            problems.append(f"{line}: {target}: outside the site's pages")
            continue
        if not anchor:
            continue
        if resolved.suffix != ".md":
            problems.append(f"{line}: {target}: an anchor into a file that is not Markdown")
            continue
        github, mkdocs = anchors(resolved.read_text(encoding="utf-8"))
        if anchor not in github:
            problems.append(f"{line}: {target}: no such heading on GitHub")
        if resolved.is_relative_to(site.resolve()) and anchor not in mkdocs:
            problems.append(f"{line}: {target}: no such heading in the site")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page, site=DOCS) == []


def test_a_broken_link_or_anchor_is_caught(tmp_path: Path) -> None:
    site = tmp_path / "docs"
    site.mkdir()
    (tmp_path / "README.md").write_text(
        "# Front\n\n[ok](docs/a.md#the-charge-key) [gone](docs/missing.md) [typo](docs/a.md#the-charge)\n"
        "`[in code](nowhere.md)` [web](https://example.org/x) [self](#front)\n",
        encoding="utf-8",
    )
    (site / "a.md").write_text(
        "# A\n\n## The charge key\n\n## A -- B\n\n```sh\n# Not a heading\n```\n\n"
        "[up](../README.md) [ok](#the-charge-key) [code](#not-a-heading) [gh](#a----b) [both](#a-b)\n",
        encoding="utf-8",
    )
    assert broken_links(tmp_path / "README.md", site=site) == [
        "3: docs/missing.md: no such file",
        "3: docs/a.md#the-charge: no such heading on GitHub",
        "3: docs/a.md#the-charge: no such heading in the site",
    ]
    assert broken_links(site / "a.md", site=site) == [
        "11: ../README.md: outside the site's pages",
        "11: #not-a-heading: no such heading on GitHub",
        "11: #not-a-heading: no such heading in the site",
        "11: #a----b: no such heading in the site",
        "11: #a-b: no such heading on GitHub",
    ]


def test_every_page_is_in_the_site_nav() -> None:
    config: dict[str, Any] = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(node: Any) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, dict):
            return [p for value in node.values() for p in pages(value)]
        return [p for item in node for p in pages(item)]

    listed = pages(config["nav"])
    assert sorted(listed) == sorted(p.name for p in DOCS.glob("*.md"))
    assert listed[0] == "index.md"


# How a lab notebook speaks, not the project: the machines a run happened on, the people
# beside it, numbered findings of an investigation.
_NOTEBOOK = (
    re.compile(r"\bthis project's machines?\b", re.IGNORECASE),
    re.compile(r"\bno Docker engine on\b", re.IGNORECASE),
    re.compile(r"\bother engineers\b", re.IGNORECASE),
    re.compile(r"\bengineers?'", re.IGNORECASE),
    re.compile(r"\(finding \d+\)", re.IGNORECASE),
    re.compile(r"\bon this machine\b", re.IGNORECASE),
    re.compile(r"\bnever been run here\b", re.IGNORECASE),
    re.compile(r"\bthe test suite had just finished\b", re.IGNORECASE),
)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_the_docs_speak_of_the_project_not_of_how_it_was_made(page: Path) -> None:
    found = [
        f"{page.name}:{number}: {line.strip()}"
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if any(pattern.search(line) for pattern in _NOTEBOOK)
    ]
    assert found == []
