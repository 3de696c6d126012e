"""examples/supabase_app as an app runs it: the plugin loading the app's real schema dump."""

from __future__ import annotations

import pytest

from support import ROOT

pytest_plugins = ["pytester"]

EXAMPLE = ROOT / "examples" / "supabase_app"


@pytest.fixture
def app_run(
    pytester: pytest.Pytester, ledger_server: str, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """The example's directory, copied, with runs on this session's server."""
    monkeypatch.setenv("LISTENER_TEST_BACKEND", "dsn")
    monkeypatch.setenv("LISTENER_TEST_DSN", ledger_server)
    for name in ("conftest.py", "test_app.py", "schema.sql"):
        (pytester.path / name).write_text((EXAMPLE / name).read_text(encoding="utf-8"), encoding="utf-8")
    return pytester


def test_the_supabase_example_passes_and_a_wrong_balance_fails(app_run: pytest.Pytester) -> None:
    test = (EXAMPLE / "test_app.py").read_text(encoding="utf-8")
    wrong = test.replace("assert ledger.sessions_used(pack) == 1", "assert ledger.sessions_used(pack) == 0")
    assert wrong != test
    app_run.makepyfile(test_wrong=wrong)
    result = app_run.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["test_app.py .*", "test_wrong.py F*", "*assert 1 == 0*"])
