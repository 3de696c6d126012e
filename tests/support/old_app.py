"""The app's old trainer code, one request at a time, as PostgREST runs it for a signed-in trainer."""

from __future__ import annotations

import json
import uuid
from typing import Any

from listener.core.db import connect

from support.world import World


def request(
    world: World, statement: str, params: list[Any], *, trace: str | None = None
) -> dict[str, Any] | None:
    """One request as the world's trainer (role authenticated, the JWT's sub, a traceparent header); its first row."""
    with connect(world.ledger.dsn, autocommit=False, purpose="browser") as conn:
        conn.execute("SET LOCAL ROLE authenticated")
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", [str(world.org.trainer_user_id)])
        if trace is not None:
            conn.execute(
                "SELECT set_config('request.headers', %s, true)", [json.dumps({"traceparent": trace})]
            )
        cur = conn.execute(statement, params)
        row = cur.fetchone() if cur.description is not None else None
        conn.commit()
    return row


def complete_then_use_session(world: World, booking: uuid.UUID, pack: uuid.UUID, *, trace: str) -> bool:
    """The old calendar page: complete the booking, then, as a second request, `use_session` on its pack."""
    request(world, "UPDATE public.bookings SET status = 'completed' WHERE id = %s", [booking], trace=trace)
    row = request(world, "SELECT public.use_session(%s) AS ok", [pack], trace=trace)
    assert row is not None
    return bool(row["ok"])


def new_trace() -> str:
    """A fresh W3C traceparent, as the app's tracing would send it."""
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
