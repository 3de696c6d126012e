"""`listener demo --app gym|marketplace` and `listener dev --mapping`: the example apps' stories on an
embedded PostgreSQL, with the balances they must end at."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from listener.cli.commands.dev import render_demo
from listener.cli.main import build_parser
from listener.devtools.demo import DemoResult, run_demo
from listener.devtools.dev import load_mapping
from listener.errors import ConfigError

from support import ROOT


def test_dev_takes_the_apps_mapping_with_its_schema() -> None:
    args = build_parser().parse_args(
        ["dev", "--schema", "examples/gym/schema.sql", "--mapping", "examples/gym/mapping.toml"]
    )
    assert (args.schema, args.mapping) == (["examples/gym/schema.sql"], "examples/gym/mapping.toml")
    mapping = load_mapping(ROOT / "examples" / "gym" / "mapping.toml")
    assert mapping is not None and mapping.access.mode == "trusted_writers"
    assert load_mapping(None) is None
    with pytest.raises(ConfigError, match="cannot read the mapping"):
        load_mapping(ROOT / "examples" / "gym" / "missing.toml")
    assert build_parser().parse_args(["demo"]).app == "coaching"


def _shown(result: DemoResult) -> str:
    out = io.StringIO()
    render_demo(result, Console(file=out, width=160))
    return out.getvalue()


@pytest.mark.slow
def test_the_gym_demo_ends_at_its_balances() -> None:
    result = run_demo(app="gym")
    assert [(p.name, p.before, p.after) for p in result.packs] == [
        ("Ana: 10 classes", 10, 8),
        ("Ben: 5 classes, flagged expired", 5, 5),
        ("Cleo: 2 classes left", 2, 0),
    ]
    states = [(b.pack, b.status, b.ledger) for b in result.bookings]
    assert states == [
        ("Ana", "attended", "paid"),
        ("Cleo", "attended", "paid"),
        ("Ana", "attended", "paid"),
        ("Ben", "attended", "unfunded"),
        ("Cleo", "no_show", "paid"),
        ("Cleo", "attended", "unfunded"),
        ("Ana", "cancelled", "released"),
    ]
    shown = _shown(result)
    assert "packages: sessions remaining" in shown
    assert "marked by" in shown


@pytest.mark.slow
def test_the_marketplace_demo_ends_at_its_balances() -> None:
    result = run_demo(app="marketplace")
    assert [(p.name, p.before, p.after) for p in result.packs] == [
        ("Maya's wallet", 10, 7),
        ("Noah's wallet", 3, 4),
        ("Zoe's wallet", 0, 0),
    ]
    assert result.completed == 5
    assert [b.status for b in result.bookings] == [
        "completed",
        "cancelled",
        "completed",
        "completed",
        "completed",
        "cancelled",
    ]
    assert "wallets: credits" in _shown(result)
