"""Malformed and hostile messages: each gets a defined outcome, none charges, none blocks the rest."""

from __future__ import annotations

from pydantic import SecretStr

from listener.core.worker import Worker
from listener.settings import Settings

from support.world import World

GOOD = "jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', '{b}')"

# (payload SQL, expected outcome): "dead" = dead-lettered with a reason, "no-op" = acked, nothing charged.
CORPUS = [
    ("'null'::jsonb", "dead"),
    ("'\"a string\"'::jsonb", "dead"),
    ("'42'::jsonb", "dead"),
    ("'[1, 2, 3]'::jsonb", "dead"),
    ("'{}'::jsonb", "dead"),
    ('\'{"type": "booking.changed", "v": 1}\'::jsonb', "dead"),
    ('\'{"type": "booking.changed", "v": 1, "booking_id": 12345}\'::jsonb', "dead"),
    ('\'{"type": "booking.changed", "v": 1, "booking_id": "not-a-uuid"}\'::jsonb', "dead"),
    ("jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', upper('{b}'))", "dead"),
    ("jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', '{' || '{b}' || '}')", "dead"),
    ("jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', gen_random_uuid())", "no-op"),
    ("jsonb_build_object('type', 'booking.deleted', 'v', 1, 'booking_id', '{b}')", "dead"),
    ("jsonb_build_object('type', 'booking.changed', 'v', 99, 'booking_id', '{b}')", "dead"),
    (
        "jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', '{b}', 'pad', repeat('x', 1048576))",
        "dead",
    ),
    ("(repeat('[', 10000) || repeat(']', 10000))::jsonb", "dead"),
    (
        "jsonb_build_object('type', 'booking.changed''; DROP TABLE public.bookings; --', 'v', 1, 'booking_id', '{b}')",
        "dead",
    ),
    (
        "jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', "
        "'{b}''); UPDATE public.client_purchases SET sessions_used = 0; --')",
        "dead",
    ),
    ("NULL::jsonb", "dead"),
]


def test_poison_corpus_has_defined_outcomes_and_charges_nothing(world: World) -> None:
    pack = world.pack(sessions_total=100)
    victim_pack = world.pack(sessions_total=5, sessions_used=3)
    [victim] = world.bookings(victim_pack)
    goods = world.bookings(pack, count=len(CORPUS) + 1)
    for good, (payload, _) in zip(goods, CORPUS, strict=False):
        world.set_status(good, "completed")
        world.send_raw(payload.replace("{b}", str(victim)))
    world.set_status(goods[-1], "completed")

    world.drain()

    assert world.used(pack) == len(goods)
    assert world.used(victim_pack) == 3
    assert world.queue() == []
    dead = world.dead_letters()
    expected_dead = sum(1 for _, outcome in CORPUS if outcome == "dead")
    assert len(dead) == expected_dead
    assert all(d["reason"] for d in dead)
    # Hostile text is kept as data, verbatim, for the operator to read: never executed, never mangled.
    kept = {
        r["t"]
        for r in world.conn.execute(
            "SELECT message -> 'message' ->> 'type' AS t FROM pgmq.q_booking_events_dlq"
        ).fetchall()
    }
    assert "booking.changed'; DROP TABLE public.bookings; --" in kept
    injected = world.conn.execute(
        "SELECT count(*) AS n FROM pgmq.q_booking_events_dlq"
        " WHERE message -> 'message' ->> 'booking_id' LIKE %s",
        ["%'); UPDATE public.client_purchases SET sessions_used = 0; --"],
    ).fetchone()
    assert injected is not None and injected["n"] == 1
    status = world.conn.execute("SELECT session_ledger.status() AS s").fetchone()["s"]  # type: ignore[index]
    assert status["dead_letter_depth"] == expected_dead
    assert status["dead_letter_reasons"]


def test_message_read_too_often_is_dead_lettered_not_applied(world: World) -> None:
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack)
    world.set_status(booking, "completed")
    world.conn.execute("UPDATE pgmq.q_booking_events SET read_ct = 50")
    Worker(Settings(dsn=SecretStr(world.ledger.dsn), max_reads=10)).run(drain=True)
    assert world.used(pack) == 0
    [dead] = world.dead_letters()
    assert str(dead["reason"]).startswith("read 51 times")
    assert dead["original_length"]  # the original message is kept whole


def test_event_the_database_rejects_is_isolated_and_dead_lettered(world: World) -> None:
    pack = world.pack(sessions_total=5)
    good = world.bookings(pack, count=4)
    [bad] = world.bookings(pack)
    # A host-side constraint that makes charging this one booking's pack fail.
    world.conn.execute(
        "ALTER TABLE public.client_purchases ADD CONSTRAINT no_charge_on_bad CHECK (sessions_used < 5 OR id <> %s)".replace(
            "%s", f"'{pack}'"
        )
    )
    for b in [*good, bad]:
        world.set_status(b, "completed")
    world.drain()
    assert world.used(pack) == 4
    [dead] = world.dead_letters()
    assert "23514" in str(dead["reason"])
