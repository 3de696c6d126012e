"""How consumers claim events, stated once in session_ledger.config: drain() reads it, and the listener's
defaults are the same numbers."""

from __future__ import annotations

from listener.settings import Settings

from support.world import World


def test_the_listeners_defaults_are_the_configs(world: World) -> None:
    row = world.conn.execute("SELECT max_reads, visibility_timeout_s FROM session_ledger.config").fetchone()
    defaults = Settings()
    assert row == {"max_reads": defaults.max_reads, "visibility_timeout_s": defaults.visibility_timeout_s}


def test_drain_dead_letters_by_the_configs_max_reads(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    world.set_status(booking, "completed")
    conn = world.conn
    conn.execute("UPDATE session_ledger.config SET max_reads = 2")
    # Two claims that never finished, as crashed consumers leave them.
    for _ in range(2):
        conn.execute("SELECT * FROM session_ledger.read_events(10, 0)")
    assert conn.execute("SELECT session_ledger.drain() AS n").fetchone() == {"n": 1}
    [letter] = world.dead_letters()
    assert letter["reason"] == "read 3 times without being handled"
    assert world.used(pack) == 0
