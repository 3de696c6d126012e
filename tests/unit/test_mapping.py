"""The mapping file's rules: each invalid mapping is refused with one line naming its key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from listener.mapping import model
from listener.mapping.model import MappingError

from support import ROOT
from support.mapped_apps import GYM_MAPPING as GYM
from support.mapped_apps import MARKET_MAPPING as MARKETPLACE

COACHING = (Path(model.__file__).parent / "coaching.toml").read_text(encoding="utf-8")


def _edit(text: str, section: str, key: str, value: str | None) -> str:
    """The TOML with one key of one section set (a TOML value) or removed (None)."""
    out, current, done = [], "", False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            if current == section and not done and value is not None:
                out.append(f"{key} = {value}")
                done = True
            current = stripped.strip("[]")
        elif current == section and stripped.split("=")[0].strip() == key:
            if value is not None:
                out.append(f"{key} = {value}")
            done = True
            continue
        out.append(line)
    if current == section and not done and value is not None:
        out.append(f"{key} = {value}")
    return "\n".join(out) + "\n"


def _refusal(text: str) -> list[str]:
    with pytest.raises(MappingError) as err:
        model.parse(text, source="m.toml")
    return str(err.value).splitlines()


def test_the_three_mappings_parse() -> None:
    assert model.parse(COACHING) == model.default()
    gym = model.parse(GYM)
    assert gym.pack.remaining == "sessions_remaining" and gym.booking.session is not None
    market = model.parse(MARKETPLACE)
    assert market.pack.find == "by_client" and market.pack.amount_column == "credits_used"


@pytest.mark.parametrize(
    ("base", "section", "key", "value", "line"),
    [
        (
            COACHING,
            "booking",
            "start",
            None,
            "m.toml: booking: booking.start is required (or booking.session",
        ),
        (GYM, "booking", "start", '"x"', "m.toml: booking: booking.start and booking.session are exclusive"),
        (
            COACHING,
            "booking",
            "consuming_statuses",
            "[]",
            "m.toml: booking: booking.consuming_statuses needs at least one",
        ),
        (COACHING, "pack", "column", None, "m.toml: pack: pack.column is required when pack.find = 'column'"),
        (
            MARKETPLACE,
            "pack",
            "column",
            '"wallet_id"',
            "m.toml: pack: pack.column names the booking's pack column",
        ),
        (
            MARKETPLACE,
            "pack",
            "client",
            None,
            "m.toml: pack: pack.client is required when pack.find = 'by_client'",
        ),
        (GYM, "pack", "used", '"x"', "m.toml: pack: pack.remaining and pack.used/pack.total are exclusive"),
        (
            COACHING,
            "pack",
            "total",
            None,
            "m.toml: pack: the balance needs pack.used and pack.total, or pack.remaining",
        ),
        (
            COACHING,
            "pack",
            "unusable_reason",
            None,
            "m.toml: pack: pack.unusable_when and pack.unusable_reason go together",
        ),
        (
            COACHING,
            "access",
            "mode",
            '"trusted_writers"',
            "m.toml: access: access.membership_function is for mode = 'supabase'",
        ),
        (
            GYM,
            "access",
            "trusted_roles",
            "[]",
            "m.toml: access: access.trusted_roles: trusted_writers needs at least one role",
        ),
        (
            MARKETPLACE,
            "booking",
            "client",
            None,
            "m.toml: (top level): pack.find = 'by_client' needs booking.client",
        ),
        (
            COACHING,
            "completion",
            "to_status",
            '"cancelled"',
            "m.toml: (top level): completion.to_status must be one of",
        ),
        (MARKETPLACE, "booking", "end", None, "m.toml: (top level): completion needs the session's end"),
        (
            GYM + "\n[legacy]\n",
            "legacy",
            "use",
            '"public.use_session"',
            "m.toml: legacy.release: Field required",
        ),
        (
            COACHING,
            "pack",
            "amount_column",
            '"credits_used"',
            "m.toml: (top level): legacy functions take a pack id",
        ),
        (COACHING, "booking", "table", '"bookings"', "m.toml: booking.table: String should match pattern"),
        (
            COACHING,
            "booking",
            "table",
            '"public.Bookings"',
            "m.toml: booking.table: String should match pattern",
        ),
        (COACHING, "pack", "used", '"sessions-used"', "m.toml: pack.used: String should match pattern"),
        (COACHING, "pack", "find", '"by_org"', "m.toml: pack.find: Input should be 'column' or 'by_client'"),
        (
            COACHING,
            "access",
            "mode",
            '"open"',
            "m.toml: access.mode: Input should be 'supabase' or 'trusted_writers'",
        ),
        (COACHING, "pack", "colour", '"red"', "m.toml: pack.colour: Extra inputs are not permitted"),
        (
            COACHING,
            "booking",
            "consumes_when",
            '""',
            "m.toml: booking.consumes_when: String should have at least 1 character",
        ),
    ],
)
def test_each_rule_names_its_key(base: str, section: str, key: str, value: str | None, line: str) -> None:
    lines = _refusal(_edit(base, section, key, value))
    assert len(lines) == 1, lines
    assert lines[0].startswith(line), lines


@pytest.mark.parametrize(
    ("fragment", "why"),
    [
        ("{row}.a = 1; DROP TABLE public.bookings", "a fragment is one expression: no `;`"),
        ("{row}.a) OR (true", "unbalanced parentheses in the fragment: a `)` closes nothing"),
        ("({row}.a", "unbalanced parentheses in the fragment: a `(` is never closed"),
        ("{row}.a -- the rest is gone", "no comments in a fragment"),
        ("{row}.a /* x */", "no comments in a fragment"),
        ("$$x$$ = {row}.a", "no `$` in a fragment (dollar quoting or parameters)"),
        ("E'\\'' = {row}.a", "escape strings (E'...') are not supported in a fragment"),
        ("{row}.a = 'open", "unterminated string in the fragment"),
        ('{row}."a = 1', "unterminated quoted name in the fragment"),
    ],
)
def test_a_fragment_is_one_expression(fragment: str, why: str) -> None:
    value = '"' + fragment.replace("\\", "\\\\").replace('"', '\\"') + '"'
    [line] = _refusal(_edit(MARKETPLACE, "booking", "consumes_when", value))
    assert line.startswith(f"m.toml: booking.consumes_when: {why}"), line


@pytest.mark.parametrize(
    "fragment",
    ["{row}.a = 'x;y -- z /* $'", '{row}."odd""name" > 0', "({row}.a IN ('it''s', 'b'))", "{row}.n ~ '\\d'"],
)
def test_semicolons_and_quotes_inside_strings_are_the_strings(fragment: str) -> None:
    value = '"' + fragment.replace("\\", "\\\\").replace('"', '\\"') + '"'
    mapping = model.parse(_edit(MARKETPLACE, "booking", "consumes_when", value))
    assert mapping.booking.consumes_when == fragment


def test_not_toml_is_one_line() -> None:
    [line] = _refusal("[booking\n")
    assert line.startswith("m.toml: not valid TOML: ")


def test_a_missing_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(MappingError) as err:
        model.load(tmp_path / "nope.toml")
    assert str(err.value) == f"{tmp_path / 'nope.toml'}: cannot read the mapping: No such file or directory"


def test_several_problems_are_one_line_each() -> None:
    text = _edit(_edit(COACHING, "pack", "find", '"by_org"'), "access", "mode", '"open"')
    lines = _refusal(text)
    assert [ln.split(":")[1].strip() for ln in lines] == ["pack.find", "access.mode"]


def test_the_hash_follows_the_mapping_not_its_layout() -> None:
    again = model.parse("# a comment\n" + COACHING.replace('id = "id"\n', "", 1))
    assert again.sha256 == model.default().sha256
    other = model.parse(_edit(COACHING, "booking", "consuming_statuses", '["completed", "no_show"]'))
    assert other.sha256 != model.default().sha256
    assert model.from_stored(other.text) == other


def test_the_docs_example_mappings_parse() -> None:
    text = (ROOT / "docs" / "mapping.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```toml\n")[1:]]
    assert len(blocks) >= 3
    for block in blocks:
        if "[booking]" in block:
            model.Mapping.model_validate(tomllib.loads(block))
