"""Prometheus metrics: the worker's counters and histograms, and gauges read from the database's snapshot."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from listener.core.events import RawMessage
from listener.core.store import OUTCOME_NAMES, Outcome, OutcomeName
from listener.core.worker import Worker
from listener.http.snapshot import Snapshot

OUTCOMES = OUTCOME_NAMES

# Gauges of the cheap, once-a-second queue_depths() read: (metric, key, help).
QUEUE_GAUGES = (
    ("session_ledger_queue_depth", "queue_depth", "Messages in the queue, visible or in flight"),
    ("session_ledger_queue_visible", "queue_visible", "Messages ready to be read"),
    ("session_ledger_dead_letter_depth", "dead_letter_depth", "Messages in the dead-letter queue"),
    ("session_ledger_oldest_event_age_seconds", "oldest_event_age_s", "Age of the oldest queued message"),
)

# Gauges of session_ledger.status(), one call every few seconds: (metric, key, help).
STATUS_GAUGES = (
    ("session_ledger_queue_in_flight", "queue_in_flight", "Messages read and not yet acknowledged"),
    ("session_ledger_queue_redelivered", "queue_redelivered", "Queued messages read more than once"),
    ("session_ledger_paid_bookings", "paid_bookings", "Bookings whose session is charged"),
    ("session_ledger_unfunded_bookings", "unfunded_bookings", "Consuming bookings with no pack to charge"),
    (
        "session_ledger_bookings_out_of_sync",
        "bookings_out_of_sync",
        "Bookings whose ledger row disagrees with the booking",
    ),
)


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
        counts: dict[OutcomeName, int] = {}
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


class DatabaseCollector(Collector):
    """Gauges from the shared snapshot, so a scrape never opens a connection and /metrics agrees with status."""

    def __init__(self, snapshot: Snapshot, worker: Worker) -> None:
        self._snapshot = snapshot
        self._worker = worker

    def collect(self) -> Iterable[Metric]:
        """Yield this listener's own metrics, then the database's while its snapshot is fresh."""
        # Counts up for the life of the process and starts again at 0 with it: a counter, so
        # increase() and rate() see a restart as a reset rather than a drop.
        reconnects = CounterMetricFamily(
            "session_ledger_reconnects", "Reconnects of this listener's database connections"
        )
        reconnects.add_metric([], self._worker.stats.reconnects + self._worker.wakeup.reconnects)
        yield reconnects
        ready = GaugeMetricFamily("session_ledger_ready", "1 when this listener answers /readyz with 200")
        ready.add_metric([], 1.0 if self._worker.ready else 0.0)
        yield ready

        depths = self._snapshot.depths()
        up = GaugeMetricFamily(
            "session_ledger_database_up", "1 when the metrics connection's last read worked"
        )
        up.add_metric([], 0.0 if depths is None else 1.0)
        yield up
        if depths is not None:
            for name, key, text in QUEUE_GAUGES:
                yield _gauge(name, text, depths.get(key))

        status = self._snapshot.status()
        if status is None:
            return
        for name, key, text in STATUS_GAUGES:
            yield _gauge(name, text, status.get(key))
        listeners = status.get("listeners") or []
        # status() lists only the listeners the database counts as live (config.listener_live_window).
        yield _gauge(
            "session_ledger_live_listeners",
            "Listeners the database counts as live (a recent heartbeat, not stopped)",
            len(listeners),
        )
        ages = [float(x["heartbeat_age_s"]) for x in listeners if x.get("heartbeat_age_s") is not None]
        if ages:
            yield _gauge(
                "session_ledger_newest_heartbeat_age_seconds",
                "Age of the most recent heartbeat of any listener",
                min(ages),
            )
        drain = status.get("drain") or {}
        # session_ledger.drain(), the pg_cron consumer: how recently it ran and how much it did.
        yield _gauge(
            "session_ledger_drain_runs_last_hour",
            "Runs of session_ledger.drain() in the last hour",
            drain.get("runs_last_hour"),
        )
        yield _gauge(
            "session_ledger_drain_handled_last_hour",
            "Events session_ledger.drain() handled in the last hour",
            drain.get("handled_last_hour"),
        )
        if drain.get("last_age_s") is not None:
            yield _gauge(
                "session_ledger_drain_last_run_age_seconds",
                "Seconds since session_ledger.drain() last finished",
                drain.get("last_age_s"),
            )
        reasons = GaugeMetricFamily(
            "session_ledger_dead_letters_by_reason",
            "Dead letters of the five most common reasons",
            labels=["reason"],
        )
        for reason in status.get("dead_letter_reasons") or []:
            reasons.add_metric([str(reason["reason"])[:100]], float(reason["count"]))
        yield reasons
        yield from _legacy_calls(status.get("legacy_calls") or {})
        paused = status.get("paused") or {}
        yield _gauge(
            "session_ledger_paused",
            "1 while charging is paused (`listener pause`): no listener or drain() claims an event",
            1 if paused else 0,
        )
        yield _gauge(
            "session_ledger_paused_since_timestamp_seconds",
            "Unix time charging was paused; 0 while it runs",
            _timestamp(paused.get("paused_at")) or 0,
        )
        yield _gauge(
            "session_ledger_status_age_seconds",
            "Seconds since session_ledger.status() was last read",
            self._snapshot.status_age_s(),
        )


def _legacy_calls(legacy: Mapping[str, object]) -> Iterable[Metric]:
    """The app's old use_session / release_session calls, from status()'s legacy_calls."""
    if not legacy:
        return
    # Totals of session_ledger.pack_calls, the same in every listener's scrape: aggregate with max().
    yield _counter(
        "session_ledger_legacy_calls",
        "Calls of the app's old use_session(uuid) / release_session(uuid), absorbed or not",
        legacy.get("legacy_calls"),
    )
    yield _counter(
        "session_ledger_legacy_calls_absorbed",
        "Old use_session / release_session calls absorbed as the echo of a booking write the ledger handles",
        legacy.get("absorbed"),
    )
    by_kind = CounterMetricFamily(
        "session_ledger_legacy_calls_absorbed_by_kind",
        "Old calls absorbed, by kind: 'use' echoes a completion, 'release' a cancellation",
        labels=["kind"],
    )
    kinds = legacy.get("absorbed_by_kind")
    for kind in ("use", "release"):
        by_kind.add_metric([kind], float(kinds.get(kind) or 0) if isinstance(kinds, Mapping) else 0.0)
    yield by_kind
    yield _gauge(
        "session_ledger_legacy_calls_absorbed_since_app_deployed",
        "Old calls absorbed after `listener app-deployed`: old code still running; 0 before it is recorded",
        legacy.get("absorbed_since_app_deployed"),
    )
    yield _gauge(
        "session_ledger_app_deployed_timestamp_seconds",
        "Unix time `listener app-deployed` recorded for the new app; 0 before it is recorded",
        _timestamp(legacy.get("app_deployed_at")),
    )
    yield _counter(
        "session_ledger_manual_calls",
        "Manual adjustments: use_session / release_session called with a reason",
        legacy.get("manual_calls"),
    )
    yield _gauge(
        "session_ledger_legacy_absorbing",
        "1 while the old code's use_session / release_session echoes are absorbed (config.absorb_legacy_calls)",
        1 if legacy.get("absorbing") else 0,
    )
    # 0 until the old code first calls, so the series always exists; then "time() - this" is
    # how long the old code has been quiet.
    yield _gauge(
        "session_ledger_last_legacy_call_timestamp_seconds",
        "Unix time of the app's old code's latest use_session / release_session call; 0 before the first",
        _timestamp(legacy.get("last_legacy_call_at")),
    )


def _timestamp(value: object) -> float | None:
    """Seconds since the epoch of a timestamptz as status() writes it in JSON; None when absent or unreadable."""
    if isinstance(value, datetime):
        return value.timestamp()
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def _gauge(name: str, text: str, value: object) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text)
    family.add_metric([], float(value or 0))  # type: ignore[arg-type]
    return family


def _counter(name: str, text: str, value: object) -> CounterMetricFamily:
    family = CounterMetricFamily(name, text)
    family.add_metric([], float(value or 0))  # type: ignore[arg-type]
    return family
