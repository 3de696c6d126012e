"""An app's test on its own Supabase schema with the session-ledger plugin; copy it and the
conftest.py beside it into the app's tests/.

The trainer completes a session the way the browser does, through the API's roles
(PostgREST: log in as authenticator, SET LOCAL ROLE authenticated, the JWT's claims), and
the listener charges the pack.
"""

from __future__ import annotations

import uuid

from listener.testing.ledger import Ledger, ListenerThread
from listener.testing.postgrest import api_request, authenticator_dsn


def test_a_trainer_completing_a_session_charges_the_pack(
    ledger: Ledger, running_listener: ListenerThread
) -> None:
    conn = ledger.conn  # the owner: set up rows as the app's server side would
    trainer, org, client, offer, pack = (uuid.uuid4() for _ in range(5))
    conn.execute("INSERT INTO auth.users (id, email) VALUES (%s, 'trainer@example.com')", [trainer])
    conn.execute("INSERT INTO public.orgs (id, name, slug) VALUES (%s, 'Studio', %s)", [org, f"studio-{org}"])
    conn.execute(
        "INSERT INTO public.org_members (org_id, user_id, role) VALUES (%s, %s, 'staff')", [org, trainer]
    )
    conn.execute(
        "INSERT INTO public.clients (id, org_id, full_name) VALUES (%s, %s, 'Client')", [client, org]
    )
    conn.execute(
        "INSERT INTO public.offers (id, org_id, name, offer_type, price_cents)"
        " VALUES (%s, %s, '10 sessions', 'session_pack', 50000)",
        [offer, org],
    )
    conn.execute(
        "INSERT INTO public.client_purchases (id, org_id, client_id, offer_id, sessions_total, payment_status)"
        " VALUES (%s, %s, %s, %s, 10, 'succeeded')",
        [pack, org, client, offer],
    )
    row = conn.execute(
        "INSERT INTO public.bookings (org_id, client_id, start_time, end_time, purchase_id, booked_by)"
        " VALUES (%s, %s, now() - interval '2 hours', now() - interval '1 hour', %s, %s) RETURNING id",
        [org, client, pack, trainer],
    ).fetchone()
    assert row is not None

    done = api_request(
        authenticator_dsn(ledger.dsn),
        "UPDATE public.bookings SET status = 'completed' WHERE id = %s",
        [row["id"]],
        role="authenticated",
        user_id=trainer,
    )
    assert done.rowcount == 1
    ledger.drain()

    assert ledger.sessions_used(pack) == 1
