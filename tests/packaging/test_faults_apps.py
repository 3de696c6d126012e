"""The fault scenarios of the example apps (faults/apps.py), once each: the gym on the test server,
the marketplace on a Supabase-shaped cluster. Writers race, a listener is SIGKILLed while its batch
waits on the packs, every listener goes down while the writers go on, then they drain.

The balances are checked against amounts computed from the apps' own rows; the second half of each
test moves one balance by one, as a charge taken twice or lost would, and the check must say so.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from faults import apps
from faults.harness import Result
from listener.devtools.example_apps import Gym, Marketplace
from listener.devtools.throwaway import drop_database
from listener.testing import supabase
from listener.testing.supabase import SupabaseAppDb, SupabaseCluster

# The slow tier: processes under fault injection, a Supabase-shaped cluster.
pytestmark = pytest.mark.slow


@pytest.fixture
def gym_dsn(ledger_server: str) -> Iterator[str]:
    """A fresh database with the gym and the ledger from its mapping."""
    dsn = apps.install_gym(ledger_server)
    yield dsn
    drop_database(ledger_server, dsn)


@pytest.fixture
def market_db(supabase_cluster: SupabaseCluster) -> Iterator[SupabaseAppDb]:
    """A fresh marketplace database, the ledger migrated as the non-superuser postgres."""
    db = apps.install_marketplace(supabase_cluster)
    yield db
    supabase.drop_app_database(supabase_cluster, db.name)


def assert_faulted_and_exact(result: Result) -> None:
    f = result.figures
    assert result.passed, result.failures
    assert f["kills_mid_batch"] >= 3  # each kill found a batch waiting on the packs
    assert f["redelivered"] > 0  # what the killed batches held came back, not lost
    assert f["backlog"] > 0  # written while every listener was down
    assert f["lost"] == 0
    assert f["double_charged"] == 0
    assert f["dead_lettered"] == 0
    assert f["out_of_sync"] == 0
    assert f["consuming"] > 0
    assert f["unfunded"] > 0  # some packs ran dry, so "could pay" was tested, not assumed


def test_gym_desks_race_through_a_kill_mid_batch_and_a_backlog(gym_dsn: str, tmp_path: Path) -> None:
    result = apps.gym(gym_dsn, tmp_path, quick=True)
    assert_faulted_and_exact(result)
    writes = result.figures["writes"]
    assert {"sheet attended", "sheet cancelled", "mark no_show"} <= set(writes)

    starting: dict[str, int] = result.figures["starting"]
    gym = Gym(gym_dsn)
    try:
        package = max(starting, key=lambda p: gym.remaining(int(p)))
        assert gym.remaining(int(package)) > 0
        # One session gone that no booking took: what a double charge leaves.
        gym.renew(int(package), -1)
        failures, figures = apps.check(gym_dsn, "gym", starting)
        assert figures["double_charged"] == 1
        assert any(f"pack {package}:" in f for f in failures), failures
        # One session more than the bookings leave: what a lost charge leaves.
        gym.renew(int(package), 2)
        failures, figures = apps.check(gym_dsn, "gym", starting)
        assert figures["lost"] == 1
        assert any(f"pack {package}:" in f for f in failures), failures
    finally:
        gym.close()


def test_marketplace_cron_and_cancels_race_through_a_kill_mid_batch_and_a_backlog(
    market_db: SupabaseAppDb, tmp_path: Path
) -> None:
    result = apps.marketplace(market_db, tmp_path, quick=True)
    assert_faulted_and_exact(result)
    writes = result.figures["writes"]
    assert writes.get("cron completed", 0) > 0
    assert writes.get("user cancel 1", 0) > 0
    assert writes.get("support cancel 1", 0) > 0  # completed classes refunded

    starting: dict[str, int] = result.figures["starting"]
    market = Marketplace(market_db.postgres_dsn, market_db.authenticator_dsn)
    try:
        wallets = {r["pack"]: r for r in market.owner.execute(apps.Q["market_packs"]).fetchall()}
        wallet = max(starting, key=lambda w: int(wallets[w]["remaining"]))
        user = uuid.UUID(wallets[wallet]["client"])
        assert market.credits(user) > 0
        market.top_up(user, -1)  # a credit gone that no booking took: a double charge
        failures, figures = apps.check(market_db.postgres_dsn, "market", starting)
        assert figures["double_charged"] == 1
        assert any(f"pack {wallet}:" in f for f in failures), failures
        market.top_up(user, 2)  # a credit left that a booking should have taken: a lost charge
        failures, figures = apps.check(market_db.postgres_dsn, "market", starting)
        assert figures["lost"] == 1
        assert any(f"pack {wallet}:" in f for f in failures), failures
    finally:
        market.close()
