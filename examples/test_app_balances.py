"""An app's integration test with the session-ledger pytest plugin; copy it into the app's tests/.

With `session-ledger-listener` installed the plugin loads by itself. It gives every
test a fresh database holding the app's schema (the demo schema unless the app's
conftest.py overrides the `ledger_app_schema` fixture), PGMQ, the trigger and the
ledger. Point it at a server with LISTENER_TEST_DSN, or let it start one (Docker,
else an embedded PostgreSQL).

The test reads: complete bookings -> ledger.drain() -> assert balances.
"""

from __future__ import annotations

import uuid
from typing import Any

from listener.testing.ledger import Ledger, ListenerThread


def seed(ledger: Ledger, *, sessions_total: int, bookings: int) -> dict[str, Any]:
    """One organisation with a trainer, a client, a pack and past confirmed bookings, in plain SQL."""
    conn = ledger.conn
    org, trainer, client, pack = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    conn.execute(
        "INSERT INTO public.orgs (id, name, slug) VALUES (%s, 'Studio', %s)", [org, f"studio-{org.hex}"]
    )
    conn.execute(
        "INSERT INTO public.org_members (org_id, user_id, role) VALUES (%s, %s, 'staff')", [org, trainer]
    )
    conn.execute(
        "INSERT INTO public.clients (id, org_id, full_name) VALUES (%s, %s, 'Client')", [client, org]
    )
    conn.execute(
        "INSERT INTO public.client_purchases (id, org_id, client_id, sessions_total, payment_status)"
        " VALUES (%s, %s, %s, %s, 'succeeded')",
        [pack, org, client, sessions_total],
    )
    rows = conn.execute(
        """INSERT INTO public.bookings (org_id, client_id, start_time, end_time, purchase_id)
           SELECT %s, %s, now() - n * interval '1 day', now() - n * interval '1 day' + interval '1 hour', %s
           FROM generate_series(1, %s) AS n
           RETURNING id""",
        [org, client, pack, bookings],
    ).fetchall()
    return {"trainer": trainer, "pack": pack, "bookings": [r["id"] for r in rows]}


def test_trainer_completion_charges_one_session(ledger: Ledger, running_listener: ListenerThread) -> None:
    app = seed(ledger, sessions_total=10, bookings=1)
    [booking] = app["bookings"]

    ledger.complete_as_user(booking, app["trainer"])  # the browser, as the signed-in trainer
    ledger.drain()

    assert ledger.sessions_used(app["pack"]) == 1
    row = ledger.ledger_row(booking)
    assert row is not None
    assert row["state"] == "paid"


def test_cron_completes_past_sessions_and_never_overdraws(ledger: Ledger) -> None:
    app = seed(ledger, sessions_total=2, bookings=3)

    assert ledger.bulk_complete() == 3  # the cron's one UPDATE, as the service role
    ledger.drain()  # no listener fixture here: drain() runs one until the queue is empty

    assert ledger.sessions_used(app["pack"]) == 2
    states = sorted(r["state"] for r in (ledger.ledger_row(b) for b in app["bookings"]) if r is not None)
    assert states == ["paid", "paid", "unfunded"]


def test_cancelling_gives_the_session_back(ledger: Ledger, running_listener: ListenerThread) -> None:
    app = seed(ledger, sessions_total=5, bookings=1)
    [booking] = app["bookings"]
    ledger.complete_as_user(booking, app["trainer"])
    ledger.drain()

    ledger.complete_as_user(booking, app["trainer"], status="cancelled")
    ledger.drain()

    assert ledger.sessions_used(app["pack"]) == 0
