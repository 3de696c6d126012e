"""The bookings trigger writes consumed_pack and charge_key_changed out; they must stay the rule.

Every transition of status, pack and client, in one statement each for INSERT, UPDATE and
DELETE: the trigger enqueues an event for exactly the bookings the rule functions in
10_rules.sql say changed their charge key.
"""

from __future__ import annotations

import itertools
import uuid

from support.world import World

STATUSES = ("pending", "confirmed", "completed", "cancelled", "no_show")

# The rule, from the functions themselves: the bookings whose charge key the UPDATE changes.
_CHANGED_BY_RULE = """
SELECT b.id FROM public.bookings b
JOIN bench_next n ON n.id = b.id
CROSS JOIN session_ledger.config c
WHERE session_ledger.charge_key_changed(
          session_ledger.consumed_pack(b.status, b.purchase_id, c.consuming_statuses), b.client_id, b.org_id,
          session_ledger.consumed_pack(n.status, n.purchase_id, c.consuming_statuses), n.client_id, b.org_id)
"""

_QUEUED = "SELECT (message ->> 'booking_id')::uuid AS id FROM pgmq.q_booking_events"


def _queued(world: World) -> set[uuid.UUID]:
    ids = {row["id"] for row in world.conn.execute(_QUEUED).fetchall()}
    world.conn.execute("DELETE FROM pgmq.q_booking_events")
    return ids


def _consuming(world: World, ids: list[uuid.UUID]) -> set[uuid.UUID]:
    rows = world.conn.execute(
        """SELECT b.id FROM public.bookings b CROSS JOIN session_ledger.config c
           WHERE b.id = ANY (%s)
             AND session_ledger.consumed_pack(b.status, b.purchase_id, c.consuming_statuses) IS NOT NULL""",
        [ids],
    ).fetchall()
    return {row["id"] for row in rows}


def test_the_trigger_enqueues_exactly_what_the_rule_functions_say(world: World) -> None:
    conn = world.conn
    pack_a, pack_b = world.pack(sessions_total=500), world.pack(sessions_total=500)
    other_client = conn.execute(
        "INSERT INTO public.clients (org_id, full_name) VALUES (%s, 'another client') RETURNING id",
        [world.org.id],
    ).fetchone()
    assert other_client is not None
    cases = list(itertools.product(STATUSES, (pack_a, None), STATUSES, (pack_a, pack_b, None), (False, True)))
    # INSERT: one statement inserting every old state; an event for each one consuming.
    conn.execute("DELETE FROM pgmq.q_booking_events")
    ids = [uuid.uuid4() for _ in cases]
    conn.execute(
        """INSERT INTO public.bookings (id, org_id, client_id, start_time, end_time, duration_mins, purchase_id, status)
           SELECT u.id, %s, %s, now() + interval '1 day', now() + interval '1 day 1 hour', 60, u.pack, u.status
           FROM unnest(%s::uuid[], %s::uuid[], %s::text[]) AS u(id, pack, status)""",
        [world.org.id, world.org.client_id, ids, [c[1] for c in cases], [c[0] for c in cases]],
    )
    inserted = _consuming(world, ids)
    assert 0 < len(inserted) < len(ids)
    assert _queued(world) == inserted
    # UPDATE: one statement moving every booking to its new state.
    conn.execute("CREATE TEMP TABLE bench_next (id uuid, status text, purchase_id uuid, client_id uuid)")
    conn.execute(
        """INSERT INTO bench_next SELECT * FROM unnest(%s::uuid[], %s::text[], %s::uuid[], %s::uuid[])""",
        [
            ids,
            [c[2] for c in cases],
            [c[3] for c in cases],
            [other_client["id"] if c[4] else world.org.client_id for c in cases],
        ],
    )
    expected = {row["id"] for row in conn.execute(_CHANGED_BY_RULE).fetchall()}
    conn.execute(
        """UPDATE public.bookings b SET status = n.status, purchase_id = n.purchase_id, client_id = n.client_id
           FROM bench_next n WHERE b.id = n.id"""
    )
    assert 0 < len(expected) < len(ids)
    assert _queued(world) == expected
    # DELETE: an event for each booking consuming when deleted.
    consuming = _consuming(world, ids)
    conn.execute("DELETE FROM public.bookings WHERE id = ANY (%s)", [ids])
    assert _queued(world) == consuming
