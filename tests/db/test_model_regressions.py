"""Sequences the model-based test (tests/db/test_model.py) found, kept as ordinary tests."""

from __future__ import annotations

from support.world import World


def test_old_apps_use_session_after_a_completion_is_absorbed_even_when_the_pack_cannot_pay(
    world: World,
) -> None:
    # A pack with no session left, a booking completed on it, then the app's old use_session call.
    pack = world.pack(sessions_total=0)
    [booking] = world.bookings(pack, status="completed")
    row = world.conn.execute("SELECT public.use_session(%s) AS ok", [pack]).fetchone()
    assert row is not None
    # The call echoes the completion: it answers true and moves nothing; the session is the ledger's.
    assert row["ok"] is True
    assert world.used(pack) == 0
    calls = world.conn.execute(
        "SELECT kind, legacy, outcome, booking_id FROM session_ledger.pack_calls"
    ).fetchall()
    assert calls == [{"kind": "use", "legacy": True, "outcome": "absorbed", "booking_id": booking}]
    world.drain()
    # The ledger then judges the booking at its session, and the pack cannot pay.
    assert world.used(pack) == 0
    row = world.ledger.ledger_row(booking)
    assert row is not None
    assert (row["state"], row["reason"]) == ("unfunded", "pack exhausted")
