"""`listener run --http-port`: Prometheus /metrics, /healthz and /readyz beside the worker loop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from listener.core.db import connect
from listener.core.events import RawMessage
from listener.core.sql_files import query
from listener.core.store import Outcome
from listener.core.worker import Worker
from listener.errors import DatabaseUnreachable

log = logging.getLogger("listener.http.server")

OUTCOMES = ("paid", "released", "moved", "unfunded", "no-op", "dead-lettered")


class Metrics:
    """The worker's counters and histograms, fed by its batch hook."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "session_ledger_events", "Events handled, by outcome", ["outcome"], registry=registry
        )
        for outcome in OUTCOMES:
            self.events.labels(outcome)
        self.batch_size = Histogram(
            "session_ledger_batch_size",
            "Messages per batch",
            registry=registry,
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
        )
        self.batch_seconds = Histogram(
            "session_ledger_batch_duration_seconds", "Time to apply and ack a batch", registry=registry
        )
        self.lag = Histogram(
            "session_ledger_charge_lag_seconds",
            "From enqueue to the charge's commit",
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )

    def observe_batch(self, batch: Sequence[RawMessage], outcomes: Sequence[Outcome], seconds: float) -> None:
        """Record one handled batch."""
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.outcome] = counts.get(o.outcome, 0) + 1
        booking_outcomes = sum(v for k, v in counts.items() if k != "dead-lettered")
        dead = counts.get("dead-lettered", 0)
        duplicates = len(batch) - booking_outcomes - dead
        if duplicates > 0:
            counts["no-op"] = counts.get("no-op", 0) + duplicates
        for outcome, n in counts.items():
            self.events.labels(outcome).inc(n)
        self.batch_size.observe(len(batch))
        self.batch_seconds.observe(seconds)
        now = time.time()
        for raw in batch:
            self.lag.observe(max(0.0, now - raw.enqueued_at.timestamp()))


class _DatabaseCollector(Collector):
    """Queue depths read at scrape time, so /metrics and `listener status` agree."""

    def __init__(self, dsn: str, worker: Worker) -> None:
        self._dsn = dsn
        self._worker = worker

    def collect(self) -> Iterable[GaugeMetricFamily]:
        """Query the depths and yield them with the reconnect count."""
        reconnects = GaugeMetricFamily("session_ledger_reconnects", "Reconnects of this listener")
        reconnects.add_metric([], self._worker.stats.reconnects + self._worker.wakeup.reconnects)
        yield reconnects
        try:
            with connect(self._dsn, purpose="metrics") as conn:
                row = conn.execute(query("queue_depths")).fetchone()
        except (psycopg.Error, DatabaseUnreachable):
            return
        assert row is not None
        for name, key, text in (
            ("session_ledger_queue_depth", "queue_depth", "Messages in the queue, visible or in flight"),
            ("session_ledger_queue_visible", "queue_visible", "Messages ready to be read"),
            ("session_ledger_dead_letter_depth", "dead_letter_depth", "Messages in the dead-letter queue"),
            (
                "session_ledger_oldest_event_age_seconds",
                "oldest_event_age_s",
                "Age of the oldest queued message",
            ),
        ):
            family = GaugeMetricFamily(name, text)
            family.add_metric([], float(row[key] or 0))
            yield family


def serve(worker: Worker, *, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:  # noqa: S104
    """Serve /metrics, /healthz and /readyz in a daemon thread; the worker's batches feed the metrics."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    registry.register(_DatabaseCollector(worker.dsn, worker))
    previous = worker.on_batch

    def on_batch(batch: Sequence[RawMessage], outcomes: Sequence[Outcome], seconds: float) -> None:
        metrics.observe_batch(batch, outcomes, seconds)
        if previous is not None:
            previous(batch, outcomes, seconds)

    worker.on_batch = on_batch

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, generate_latest(registry), "text/plain; version=0.0.4")
            elif self.path == "/healthz":
                ok = _database_reachable(worker.dsn)
                self._send(200 if ok else 503, b"ok\n" if ok else b"database unreachable\n")
            elif self.path == "/readyz":
                ready = worker.ready
                self._send(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
            else:
                self._send(404, b"not found\n")

        def _send(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug(format, *args)

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="health-http", daemon=True).start()
    log.info("serving /metrics, /healthz and /readyz on port %d", server.server_address[1])
    return server


def _database_reachable(dsn: str) -> bool:
    try:
        with connect(dsn, purpose="healthz") as conn:
            conn.execute(query("ping"))
        return True
    except (psycopg.Error, DatabaseUnreachable):
        return False
