"""The checker (listener/testing/checker.py) and the figures every scenario reports."""

from __future__ import annotations

from typing import Any

from listener.core.db import Conn
from listener.testing import checker
from listener.testing.checker import Verdict, snapshot_used

__all__ = ["Verdict", "checker", "lag_and_redeliveries", "snapshot_used"]


def lag_and_redeliveries(conn: Conn) -> dict[str, Any]:
    """Enqueue-to-archive lag percentiles (the ack commits with the charge) and redelivery counts."""
    row = conn.execute(
        """SELECT count(*) AS archived,
                  count(*) FILTER (WHERE read_ct > 1) AS redelivered,
                  percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM archived_at - enqueued_at)) AS p50,
                  percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM archived_at - enqueued_at)) AS p99,
                  max(extract(epoch FROM archived_at - enqueued_at)) AS max
           FROM pgmq.a_booking_events"""
    ).fetchone()
    assert row is not None
    return {
        "archived": int(row["archived"]),
        "redelivered": int(row["redelivered"]),
        "lag_p50_s": _r(row["p50"]),
        "lag_p99_s": _r(row["p99"]),
        "lag_max_s": _r(row["max"]),
    }


def _r(x: object) -> float | None:
    return None if x is None else round(float(x), 3)  # type: ignore[arg-type]
