"""Rules stated once in SQL, and the places Python must agree with them."""

from __future__ import annotations

import re

from listener.core.events import CANONICAL_UUID
from listener.core.sql_files import repeatables


def test_the_listener_and_the_database_check_uuids_with_the_same_pattern() -> None:
    everything = "".join(f.sql for f in repeatables())
    # is_canonical_uuid, and current_cause() where it is written out for speed
    patterns = re.findall(r"'(\^\[0-9a-f\]\{8\}[^']*\$)'", everything)
    assert len(patterns) == 2 and set(patterns) == {CANONICAL_UUID}
    assert re.fullmatch(CANONICAL_UUID, "0b6b3f1e-8d5c-4a3e-9f00-1a2b3c4d5e6f")
    assert not re.fullmatch(CANONICAL_UUID, "0B6B3F1E-8D5C-4A3E-9F00-1A2B3C4D5E6F")


def test_each_rule_has_exactly_one_definition() -> None:
    defined: dict[str, int] = {}
    for f in repeatables():
        for name in re.findall(r"CREATE OR REPLACE (?:FUNCTION|VIEW) (session_ledger\.\w+)\(?", f.sql):
            defined[name] = defined.get(name, 0) + 1
    for rule in (
        "session_ledger.consumed_pack",
        "session_ledger.held_pack",
        "session_ledger.out_of_sync",
        "session_ledger.live_listeners",
        "session_ledger.booking_event",
        "session_ledger.is_canonical_uuid",
        "session_ledger.may_move_sessions",
        "session_ledger.settle_packs",
    ):
        assert defined.get(rule) == 1, rule
    everything = "".join(f.sql for f in repeatables())
    # The consuming rule itself is written once: everything else calls consumed_pack().
    assert everything.count("ANY (p_consuming)") == 1
    assert "consuming_statuses) THEN" not in everything
    assert everything.count("'type', 'booking.changed'") == 1
