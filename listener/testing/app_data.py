"""Rows for the real app's schema (examples/supabase_app/schema.sql): users in auth.users, an
organisation with a trainer, a client who signs in, an offer, packs and bookings. No pytest here.

Insert them as the owner (postgres on a Supabase-shaped cluster, which bypasses RLS), as the
app's server-side code would.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from listener.core.db import Conn
from listener.core.sql_files import query


@dataclass(frozen=True)
class Studio:
    """An organisation, its trainer (a staff member), one client with a login, and a pack offer."""

    org_id: uuid.UUID
    trainer_user_id: uuid.UUID
    client_id: uuid.UUID
    client_user_id: uuid.UUID
    offer_id: uuid.UUID


def create_user(conn: Conn, email: str) -> uuid.UUID:
    """A signed-up user in auth.users."""
    user = uuid.uuid4()
    conn.execute(
        query("app_data_insert_user"),
        [user, email],
    )
    return user


def create_studio(conn: Conn, name: str = "Studio") -> Studio:
    """An organisation with a trainer, a client who can sign in, and a 10-session pack offer."""
    org = uuid.uuid4()
    tag = org.hex[:12]
    trainer = create_user(conn, f"trainer-{tag}@example.com")
    client_user = create_user(conn, f"client-{tag}@example.com")
    conn.execute(query("insert_org"), [org, name, f"studio-{tag}"])
    conn.execute(query("insert_org_member"), [org, trainer])
    row = conn.execute(
        query("app_data_insert_client"),
        [org, f"client of {name}", f"client-{tag}@example.com", client_user],
    ).fetchone()
    assert row is not None
    offer = conn.execute(
        query("app_data_insert_offer"),
        [org],
    ).fetchone()
    assert offer is not None
    return Studio(org, trainer, row["id"], client_user, offer["id"])


def create_pack(
    conn: Conn,
    studio: Studio,
    *,
    sessions_total: int | None = 10,
    sessions_used: int = 0,
    expires_at: datetime | None = None,
    payment_status: str = "succeeded",
    payment_method: str = "card",
) -> uuid.UUID:
    """A purchase of the studio's offer by its client."""
    row = conn.execute(
        query("app_data_insert_pack"),
        [studio.org_id, studio.client_id, studio.offer_id, payment_method, payment_status,
         sessions_total, sessions_used, expires_at],
    ).fetchone()  # fmt: skip
    assert row is not None
    return uuid.UUID(str(row["id"]))


def create_bookings(
    conn: Conn, studio: Studio, pack: uuid.UUID | None, *, count: int = 1, status: str = "confirmed"
) -> list[uuid.UUID]:
    """Bookings an hour long, a day apart, all ended, booked by the trainer."""
    first = datetime.now().astimezone() - timedelta(days=count + 1)
    rows = conn.execute(
        query("app_data_insert_bookings"),
        {"org": studio.org_id, "client": studio.client_id, "pack": pack, "status": status,
         "trainer": studio.trainer_user_id, "first": first, "n": count},
    ).fetchall()  # fmt: skip
    return [r["id"] for r in rows]
