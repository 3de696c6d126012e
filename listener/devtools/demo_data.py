"""Rows for the demo app schema: organisations, trainers, clients, packs and bookings."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from listener.core.db import Conn
from listener.core.sql_files import query


@dataclass(frozen=True)
class Org:
    """An organisation with one trainer (a signed-in user) and one client."""

    id: uuid.UUID
    trainer_user_id: uuid.UUID
    client_id: uuid.UUID


def create_org(conn: Conn, name: str = "Studio") -> Org:
    """Insert an organisation, its trainer membership and a client."""
    org = Org(uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    conn.execute(
        query("insert_org"),
        [org.id, name, f"org-{org.id.hex[:12]}"],
    )
    conn.execute(
        query("insert_org_member"),
        [org.id, org.trainer_user_id],
    )
    conn.execute(
        query("demo_data_insert_client"),
        [org.client_id, org.id, f"client of {name}"],
    )
    return org


def create_pack(
    conn: Conn,
    org: Org,
    *,
    sessions_total: int | None = 10,
    sessions_used: int = 0,
    expires_at: datetime | None = None,
    payment_status: str = "succeeded",
) -> uuid.UUID:
    """Insert a session pack for the org's client."""
    pack = uuid.uuid4()
    conn.execute(
        query("demo_data_insert_pack"),
        [pack, org.id, org.client_id, sessions_total, sessions_used, expires_at, payment_status],
    )
    return pack


def create_bookings(
    conn: Conn,
    org: Org,
    pack: uuid.UUID | None,
    *,
    count: int = 1,
    start: datetime | None = None,
    status: str = "confirmed",
) -> list[uuid.UUID]:
    """Insert bookings an hour long, a day apart, ending in the past unless start says otherwise."""
    first = start or (datetime.now().astimezone() - timedelta(days=count + 1))
    rows = conn.execute(
        query("demo_data_create_bookings"),
        {"org": org.id, "client": org.client_id, "pack": pack, "status": status, "first": first, "n": count},
    ).fetchall()
    return [r["id"] for r in rows]


def sessions_used(conn: Conn, pack: uuid.UUID) -> int:
    """A pack's sessions_used now."""
    row = conn.execute(query("pack_sessions_used"), [pack]).fetchone()
    assert row is not None
    return int(row["sessions_used"])
