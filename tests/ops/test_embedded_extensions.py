"""The embedded server of `listener demo` / `listener dev` offers what the Supabase base promises: uuid-ossp."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from listener.core.db import connect
from listener.devtools.embedded import embedded_server

# The slow tier: an embedded server of its own.
pytestmark = pytest.mark.slow


def test_uuid_ossp_is_available_and_right() -> None:
    with embedded_server() as server, connect(server.dsn(), purpose="tests") as conn:
        conn.execute('CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA public')
        row = conn.execute(
            "SELECT uuid_generate_v4() AS v4, uuid_generate_v3(uuid_ns_url(), 'https://example.com/a') AS v3,"
            " uuid_nil() AS nil, uuid_ns_dns() AS dns"
        ).fetchone()
        assert row is not None
        again = conn.execute("SELECT uuid_generate_v4() AS u").fetchone()
        assert again is not None
        assert row["v4"].version == 4 and row["v4"] != again["u"]
        assert row["v3"] == uuid.uuid3(uuid.NAMESPACE_URL, "https://example.com/a")
        assert row["nil"] == uuid.UUID(int=0) and row["dns"] == uuid.NAMESPACE_DNS
        # Version 1 needs the host's MAC address: absent, never faked.
        with pytest.raises(psycopg.errors.UndefinedFunction):
            conn.execute("SELECT uuid_generate_v1()")
