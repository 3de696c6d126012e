"""The example apps' databases (examples/gym, examples/marketplace), for the suites of tests/examples (a plugin of tests/conftest.py).

- ``gym_template`` (module) / ``gym``: the gym's schema and the ledger rendered from its
  mapping on the test server, a fresh clone per test; ``plain_gym``: its tables alone.
- ``marketplace_template`` (module) / ``market``: the marketplace on a Supabase-shaped
  cluster (slow tier), migrated as the non-superuser postgres; ``plain_market``: its tables
  and policies alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from psycopg.conninfo import conninfo_to_dict

from listener.devtools.app_schema import apply_sql_file
from listener.devtools.example_apps import Gym, Marketplace
from listener.devtools.throwaway import create_database, drop_database
from listener.mapping import model
from listener.ops.migrate import migrate
from listener.testing import supabase
from listener.testing.supabase import SupabaseAppDb, SupabaseCluster

from support import ROOT

GYM = ROOT / "examples" / "gym"
MARKETPLACE = ROOT / "examples" / "marketplace"


@pytest.fixture(scope="session")
def gym_template(ledger_server: str) -> Iterator[str]:
    """A database with the gym's schema and the ledger rendered from its mapping, to clone."""
    dsn = create_database(ledger_server, prefix="gym_tmpl")
    try:
        apply_sql_file(dsn, GYM / "schema.sql")
        migrate(dsn, mapping=model.load(GYM / "mapping.toml"))
        yield str(conninfo_to_dict(dsn)["dbname"])
    finally:
        drop_database(ledger_server, dsn)


@pytest.fixture
def gym(ledger_server: str, gym_template: str) -> Iterator[Gym]:
    """The gym's server on a fresh clone."""
    dsn = create_database(ledger_server, prefix="gym", template=gym_template)
    app = Gym(dsn)
    yield app
    app.close()
    drop_database(ledger_server, dsn)


@pytest.fixture
def plain_gym(ledger_server: str) -> Iterator[Gym]:
    """The gym's tables alone, no ledger: what the app's own SQL does on them."""
    dsn = create_database(ledger_server, prefix="gym_plain")
    apply_sql_file(dsn, GYM / "schema.sql")
    app = Gym(dsn)
    yield app
    app.close()
    drop_database(ledger_server, dsn)


@pytest.fixture(scope="session")
def marketplace_template(supabase_cluster: SupabaseCluster) -> str:
    """The base, the marketplace's schema, and the ledger rendered from its mapping, to clone."""
    name = supabase.create_app_database(
        supabase_cluster, schema=[MARKETPLACE / "schema.sql"], name="marketplace_template", ledger=False
    )
    migrate(supabase_cluster.postgres_dsn(name), mapping=model.load(MARKETPLACE / "mapping.toml"))
    supabase.mark_template(supabase_cluster, name)
    return name


def _market(cluster: SupabaseCluster, **kwargs: object) -> Iterator[Marketplace]:
    name = supabase.create_app_database(cluster, **kwargs)  # type: ignore[arg-type]
    db = SupabaseAppDb(cluster, name)
    app = Marketplace(db.postgres_dsn, db.authenticator_dsn)
    yield app
    app.close()
    supabase.drop_app_database(cluster, name)


@pytest.fixture
def market(supabase_cluster: SupabaseCluster, marketplace_template: str) -> Iterator[Marketplace]:
    """The marketplace with the ledger, fresh for one test."""
    yield from _market(supabase_cluster, template=marketplace_template)


@pytest.fixture
def plain_market(supabase_cluster: SupabaseCluster) -> Iterator[Marketplace]:
    """The marketplace's tables and policies alone, no ledger."""
    yield from _market(supabase_cluster, schema=[MARKETPLACE / "schema.sql"], ledger=False)
