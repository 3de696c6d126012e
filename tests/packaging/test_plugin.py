"""The pytest plugin as an app uses it: a separate test run that only has the installed plugin."""

from __future__ import annotations

import pytest

from listener.core.sql_files import demo_schema

from support import ROOT

pytest_plugins = ["pytester"]

EXAMPLE = ROOT / "examples" / "test_app_balances.py"


@pytest.fixture
def app_run(
    pytester: pytest.Pytester, ledger_server: str, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """An app's test directory whose runs use this session's server (no second server to start)."""
    monkeypatch.setenv("LISTENER_TEST_BACKEND", "dsn")
    monkeypatch.setenv("LISTENER_TEST_DSN", ledger_server)
    return pytester


def test_the_example_passes_and_a_wrong_balance_fails(app_run: pytest.Pytester) -> None:
    app_run.makepyfile(test_app_balances=EXAMPLE.read_text(encoding="utf-8"))
    # The same flow with a wrong expectation must fail: the plugin really charges.
    app_run.makepyfile(
        test_wrong="""
        import uuid

        def test_expects_no_charge(ledger, ledger_listener):
            org, trainer, client, pack = (uuid.uuid4() for _ in range(4))
            ledger.conn.execute("INSERT INTO public.orgs (id, name, slug) VALUES (%s, 'o', %s)", [org, str(org)])
            ledger.conn.execute("INSERT INTO public.org_members (org_id, user_id) VALUES (%s, %s)", [org, trainer])
            ledger.conn.execute(
                "INSERT INTO public.clients (id, org_id, full_name) VALUES (%s, %s, 'c')", [client, org]
            )
            ledger.conn.execute(
                "INSERT INTO public.client_purchases (id, org_id, client_id, sessions_total) VALUES (%s, %s, %s, 3)",
                [pack, org, client],
            )
            [row] = ledger.conn.execute(
                "INSERT INTO public.bookings (org_id, client_id, start_time, end_time, purchase_id)"
                " VALUES (%s, %s, now() - interval '2 hours', now() - interval '1 hour', %s) RETURNING id",
                [org, client, pack],
            ).fetchall()
            ledger.complete_as_user(row["id"], trainer)
            ledger.drain()
            assert ledger.sessions_used(pack) == 0
        """
    )
    result = app_run.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["test_app_balances.py ...*", "test_wrong.py F*", "*assert 1 == 0*"])


def test_an_app_can_bring_its_own_schema(app_run: pytest.Pytester) -> None:
    # The app's schema: here the demo schema plus a column of the app's own.
    app_run.makeconftest(
        f"""
        import pytest

        @pytest.fixture(scope="session")
        def ledger_app_schema():
            return {demo_schema() + "ALTER TABLE public.bookings ADD COLUMN room text;"!r}
        """
    )
    app_run.makepyfile(
        test_schema="""
        def test_app_column_and_ledger_are_both_there(ledger):
            row = ledger.conn.execute(
                "SELECT count(*) AS n FROM information_schema.columns"
                " WHERE table_name = 'bookings' AND column_name = 'room'"
            ).fetchone()
            assert row["n"] == 1
            assert ledger.queue_depth() == 0
        """
    )
    result = app_run.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
