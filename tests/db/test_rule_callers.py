"""Each rule is defined once, in sql/functions/10_rules.sql, and every path that applies it calls it.

Counting text cannot tell a call from a copy. Here each rule is replaced, inside a
transaction that is rolled back, by a function that raises; every path named for it
must then fail with that rule's name. A path that carries its own copy of the rule
keeps working, and the test names it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

from support.world import World


@dataclass(frozen=True)
class Ids:
    org: uuid.UUID
    client: uuid.UUID
    pack: uuid.UUID
    booking: uuid.UUID


# The rule (by signature) and, for each caller, a statement that must go through it.
CALLERS: dict[str, dict[str, str]] = {
    # The bookings trigger writes these two out (a function call per row cost it measurably);
    # tests/db/test_trigger_rules.py holds its copy to the functions over every transition.
    "session_ledger.consumed_pack(text, uuid, text[], boolean)": {
        "the guard": "SELECT session_ledger.may_write_booking('confirmed', %(pack)s, %(client)s, %(org)s, NULL, NULL, 1,"
        " 'completed', %(pack)s, %(client)s, %(org)s, NULL, NULL, 1, '{completed}', true)",
        "the charge": "SELECT * FROM session_ledger.apply_bookings(ARRAY[%(booking)s]::uuid[], ARRAY[now()])",
        "reconcile": "SELECT count(*) FROM session_ledger.out_of_sync",
    },
    "session_ledger.charge_key_changed(uuid, uuid, uuid, uuid, uuid, uuid)": {
        "the guard": "SELECT session_ledger.may_write_booking('completed', %(pack)s, %(client)s, %(org)s, NULL, NULL, 1,"
        " 'cancelled', %(pack)s, %(client)s, %(org)s, NULL, NULL, 1, '{completed}', true)",
        "the charge": "SELECT * FROM session_ledger.apply_bookings(ARRAY[%(booking)s]::uuid[], ARRAY[now()])",
    },
    "session_ledger.judged_pack(text, uuid)": {
        "the charge": "SELECT * FROM session_ledger.apply_bookings(ARRAY[%(booking)s]::uuid[], ARRAY[now()])",
        "reconcile": "SELECT count(*) FROM session_ledger.out_of_sync",
    },
    "session_ledger.unfundable_reason(integer, timestamptz, text, timestamptz)": {
        "the charge": "SELECT public.use_session(%(pack)s, 'by hand')",
        "the guard's own-pack rule": "SELECT session_ledger.may_write_booking(NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
        " 'confirmed', %(pack)s, %(client)s, %(org)s, NULL, NULL, 1, '{completed}', false)",
    },
    "session_ledger.may_move_pack(uuid, boolean)": {
        "the manual buttons": "SELECT public.use_session(%(pack)s, 'by hand')",
        "the app's old buttons": "SELECT public.release_session(%(pack)s)",
        "the guard": "SELECT session_ledger.may_write_booking('completed', %(pack)s, %(client)s, %(org)s, NULL, NULL, 1,"
        " 'cancelled', %(pack)s, %(client)s, %(org)s, NULL, NULL, 1, '{completed}', false)",
    },
    "session_ledger.caller_is_trusted()": {
        "the trigger": "UPDATE public.bookings SET notes = 'x' WHERE id = %(booking)s",
        "the allow-list": "SELECT session_ledger.may_move_sessions(%(org)s)",
    },
    "session_ledger.current_cause()": {
        "the trigger": "UPDATE public.bookings SET notes = 'x' WHERE id = %(booking)s",
        "the manual buttons": "SELECT public.use_session(%(pack)s, 'by hand')",
        "replay": "SELECT session_ledger.enqueue_bookings(ARRAY[%(booking)s]::uuid[], 'replay')",
    },
    "session_ledger.statement_budget()": {
        "drain": "SELECT session_ledger.drain()",
        "the cron path": "SELECT session_ledger.complete_past_bookings()",
    },
    "session_ledger.absorb_legacy_call(text, uuid, jsonb)": {
        "the app's old use_session": "SELECT public.use_session(%(pack)s)",
        "the app's old release_session": "SELECT public.release_session(%(pack)s)",
    },
}


def _break(conn: psycopg.Connection[dict[str, object]], signature: str) -> None:
    """Replace the rule by one that raises its own name, keeping its signature."""
    row = conn.execute(
        "SELECT pg_get_function_arguments(%(f)s::regprocedure) AS args,"
        " pg_get_function_result(%(f)s::regprocedure) AS result",
        {"f": signature},
    ).fetchone()
    assert row is not None
    name = signature.split("(", maxsplit=1)[0]
    schema, fn = name.split(".")
    conn.execute(
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}.{}({}) RETURNS {} LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'rule % was called', {}; END $$"
        ).format(
            sql.Identifier(schema),
            sql.Identifier(fn),
            sql.SQL(str(row["args"])),
            sql.SQL(str(row["result"])),
            sql.Literal(name),
        )
    )


@pytest.mark.parametrize(
    ("rule", "caller"), [(rule, caller) for rule, callers in CALLERS.items() for caller in callers]
)
def test_every_path_calls_the_rules_one_definition(world: World, rule: str, caller: str) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack, count=1)
    row = world.conn.execute(
        "SELECT org_id, client_id FROM public.bookings WHERE id = %s", [booking]
    ).fetchone()
    assert row is not None
    ids = {"org": row["org_id"], "client": row["client_id"], "pack": pack, "booking": booking}
    conn = world.conn
    with conn.transaction(force_rollback=True):
        # the old code's booking write, so an absorbing path has an echo to find
        conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [booking])
        conn.execute("UPDATE public.bookings SET status = 'cancelled' WHERE id = %s", [booking])
        conn.execute("UPDATE public.bookings SET status = 'confirmed' WHERE id = %s", [booking])
        _break(conn, rule)
        with pytest.raises(
            psycopg.errors.RaiseException, match=f"rule {rule.split('(', maxsplit=1)[0]} was called"
        ):
            conn.execute(CALLERS[rule][caller], ids)
