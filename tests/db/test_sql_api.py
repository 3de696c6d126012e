"""The SQL API reference: every function and view users may call has a COMMENT
(sql/functions/95_comments.sql), and docs/sql-api.md is what the generator renders from a
migrated database (listener/devtools/sql_api.py)."""

from __future__ import annotations

import os

import pytest

from listener.core.db import connect
from listener.devtools import sql_api
from listener.testing.ledger import Ledger

from support import ROOT

PAGE = ROOT / "docs" / "sql-api.md"


def test_every_function_and_view_users_may_call_has_a_comment(ledger: Ledger) -> None:
    missing = sql_api.undocumented(ledger.conn)
    assert missing == [], (
        "add a COMMENT ON for each to sql/functions/95_comments.sql, then regenerate docs/sql-api.md: "
        + "; ".join(missing)
    )


def test_the_api_takes_in_what_others_may_call_what_commands_call_and_the_apps_functions(
    ledger: Ledger,
) -> None:
    objects = {o.signature: o for o in sql_api.objects(ledger.conn)}
    commands = sql_api.called_by_commands()
    api = {s for s, o in objects.items() if sql_api.in_api(o, commands)}
    # granted beyond the owner (90_grants.sql), run by operator commands, the app's, views
    assert {
        "session_ledger.drain(integer)",
        "session_ledger.handle_batch_v3(uuid, bigint[], bigint[], text[])",
        "session_ledger.redrive_dead_letters(bigint[])",
        "session_ledger.pause_charging(text)",
        "public.use_session(uuid, timestamp with time zone)",
        "session_ledger.out_of_sync",
    } <= api
    # internal rules stay out of it
    assert (
        "session_ledger.settle_packs(uuid[], integer[], timestamp with time zone[], uuid[], uuid[])"
        not in api
    )
    assert "session_ledger.caller()" not in api


def test_a_function_granted_to_a_role_without_a_comment_is_named(ledger: Ledger) -> None:
    with connect(ledger.dsn, purpose="tests") as conn:
        conn.execute("COMMENT ON FUNCTION session_ledger.drain(int) IS NULL")
        conn.execute(
            "CREATE FUNCTION session_ledger.a_new_entry_point(bigint[], text) RETURNS bigint"
            " LANGUAGE sql AS 'SELECT 0::bigint'"
        )
        conn.execute(
            "GRANT EXECUTE ON FUNCTION session_ledger.a_new_entry_point(bigint[], text) TO session_ledger_listener"
        )
        assert sql_api.undocumented(conn) == [
            "session_ledger.a_new_entry_point(bigint[], text)",
            "session_ledger.drain(integer)",
        ]


def test_the_reference_page_is_what_the_generator_renders(ledger: Ledger) -> None:
    rendered = sql_api.render(ledger.conn)
    if os.environ.get("LISTENER_WRITE_SQL_API") == "1":
        PAGE.write_text(rendered, encoding="utf-8")
    assert PAGE.read_text(encoding="utf-8") == rendered, (
        "docs/sql-api.md is not what sql/functions/95_comments.sql says: regenerate it with "
        "`LISTENER_WRITE_SQL_API=1 pytest tests/db/test_sql_api.py -k reference_page`"
    )
    assert "### `session_ledger.drain(integer)`" in rendered
    assert "session_ledger.drain(p_max_events integer DEFAULT 2000)\nRETURNS bigint\n" in rendered
    assert "*may call: the owner, session_ledger_listener · security definer*" in rendered


@pytest.mark.parametrize("argv", [[], ["a", "b"]])
def test_the_generator_wants_one_dsn(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert sql_api.main(argv) == 2
    assert "usage:" in capsys.readouterr().err
