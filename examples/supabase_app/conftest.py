"""Point the session-ledger plugin at the app's own schema: its `pg_dump --schema-only` (or a
directory of its migrations), loaded on a Supabase-shaped base before the ledger."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def ledger_app_schema() -> list[Path]:
    """The app's schema files, loaded as `listener dev --schema` loads them."""
    return [Path(__file__).resolve().parent / "schema.sql"]
