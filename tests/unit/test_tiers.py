"""The slow tier is a marker beside each test; a cluster test without it is refused at collection."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from conftest import unmarked_slow_tests


@dataclass
class _Item:
    nodeid: str
    fixturenames: list[str]
    markers: dict[str, Any] = field(default_factory=dict)

    def get_closest_marker(self, name: str) -> Any:
        return self.markers.get(name)


def test_a_cluster_test_without_the_slow_marker_is_named() -> None:
    items = [
        _Item("t.py::marked", ["supabase_app_db"], {"slow": pytest.mark.slow.mark}),
        _Item("t.py::forgot", ["world", "supabase_cluster"]),
        _Item("t.py::quick", ["world"]),
    ]
    assert unmarked_slow_tests(cast("list[pytest.Item]", items)) == ["t.py::forgot"]
