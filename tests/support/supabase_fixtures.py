"""Fixtures for a cluster initialised as Supabase initialises one (listener.testing.supabase).

- ``supabase_cluster`` (session): the cluster, pg_cron preloaded; a missing PostgreSQL 15 or
  pg_cron fails the tests that use it.
- ``supabase_app_template`` (session): name of a database holding the base, the real app's
  schema (examples/supabase_app/schema.sql) and the ledger, migrated as the non-superuser postgres.
- ``supabase_app_db``: a fresh clone of it for one test, dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from listener.testing import supabase
from listener.testing.supabase import SupabaseAppDb, SupabaseCluster

from support import ROOT

APP_SCHEMA = ROOT / "examples" / "supabase_app" / "schema.sql"


@pytest.fixture(scope="session")
def supabase_cluster() -> Iterator[SupabaseCluster]:
    """A Supabase-shaped PostgreSQL 15 cluster with pg_cron, for the session (or xdist worker)."""
    with supabase.supabase_cluster(pg_cron=True) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def supabase_app_template(supabase_cluster: SupabaseCluster) -> str:
    """A database with the base, the app's schema and the ledger, to clone from."""
    name = supabase.create_app_database(supabase_cluster, schema=[APP_SCHEMA], name="app_template")
    supabase.mark_template(supabase_cluster, name)
    return name


@pytest.fixture
def supabase_app_db(supabase_cluster: SupabaseCluster, supabase_app_template: str) -> Iterator[SupabaseAppDb]:
    """A fresh app database for one test."""
    name = supabase.create_app_database(supabase_cluster, template=supabase_app_template)
    yield SupabaseAppDb(supabase_cluster, name)
    supabase.drop_app_database(supabase_cluster, name)
