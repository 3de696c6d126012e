"""Retention durations read one way only: `1m` is refused rather than guessed."""

from __future__ import annotations

from datetime import timedelta

import pytest

from listener.errors import ConfigError
from listener.ops.prune import parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90min", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
        ("45s", timedelta(seconds=45)),
        ("0d", timedelta(0)),
        (" 7D ", timedelta(days=7)),
    ],
)
def test_each_unit_reads_one_way(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["1m", "3M", " 90m "])
def test_m_could_be_minutes_or_months_and_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_duration(text)
    message = str(refused.value)
    assert "ambiguous" in message and "min for minutes" in message and "30d" in message
    assert "\n" not in message


@pytest.mark.parametrize("text", ["", "30", "d", "1.5d", "-1d", "thirty days", "30 days", "1hr", "6mo", "1y"])
def test_anything_else_is_refused_naming_the_units(text: str) -> None:
    with pytest.raises(ConfigError, match=r"cannot read duration .*s, min, h, d, w"):
        parse_duration(text)
