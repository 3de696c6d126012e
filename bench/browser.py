"""The browser writer: the trainer completing single bookings, pgbench with 8 clients, arm by arm.

Ledger arms run on a clone of the migrated template; the legacy arm on a clone of the
app-only template (the app's own schema and its original use_session, no ledger).
Every arm completes fresh bookings, one per pgbench transaction, as the signed-in
trainer under RLS. The arms run in `browser_rounds` rounds (at least 5), the order
mirrored round by round (A B C ... then C B A ...), so drift on a shared machine cancels
out of every ratio. Each figure is the median over the rounds of that round's ratio (or
rate), and its spread, the lowest and highest round, is reported beside it: a target is
met only when the median meets it.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from bench import variants, workload
from bench.measurements import Sizes, pgbench
from bench.workload import Server
from listener.core.db import Conn, connect

CLIENTS = 8

AS_TRAINER = f"""SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claim.sub', '{workload.TRAINER}', true);
"""

NEXT_BOOKING = (
    "FROM bench.backlog k WHERE k.n = (SELECT nextval('bench.next_booking')) AND b.id = k.booking_id"
)

# One completion with the ledger installed: the UPDATE; its trigger guards and enqueues.
LEDGER_SCRIPT = f"""
BEGIN;
{AS_TRAINER}UPDATE public.bookings b SET status = 'completed'
{NEXT_BOOKING};
COMMIT;
"""

# One completion as the app does it today: the UPDATE, then the browser's second
# request calling the app's own use_session on the booking's pack.
LEGACY_SCRIPT = f"""
BEGIN;
{AS_TRAINER}UPDATE public.bookings b SET status = 'completed'
{NEXT_BOOKING}
RETURNING b.purchase_id AS pack \\gset
COMMIT;
BEGIN;
{AS_TRAINER}SELECT public.use_session(:pack);
COMMIT;
"""

# What each arm is. "legacy" runs on the app-only database; the others on the ledger's.
ARMS = {
    "off": "ledger installed, its bookings triggers disabled: the bare UPDATE",
    "quiet": "trigger with its guard, provenance and echo records, no listener asleep: no NOTIFY",
    "no_echo": "as 'quiet' with config.absorb_legacy_calls off: provenance, no echo records",
    "v020": "0.2.0's trigger function (bench/v020_trigger.sql): guard, no provenance, no echo records, no NOTIFY",
    "no_guard": "trigger with its guard removed (bench database only), no NOTIFY",
    "on": "trigger with its guard, an idle listener on record that never wakes: a NOTIFY in every commit",
    "on_once": "as 'on', the NOTIFY skipped while another writer's NOTIFY is in flight (a proposed lever)",
    "live": "trigger with its guard and a real listener running beside pgbench, charging",
    "legacy": "no ledger: the UPDATE, then use_session (the app's original) in a second transaction",
}
_ORDER = ["off", "legacy", "live", "quiet", "no_echo", "v020", "no_guard", "on", "on_once"]

# Each ratio figure: (numerator arm, denominator arm, reported as a share in % of 1 - ratio).
_RATIOS: dict[str, tuple[str, str, bool]] = {
    "browser_tps_ratio": ("on", "off", False),
    "browser_tps_ratio_no_wakeup": ("quiet", "off", False),
    "browser_tps_ratio_live_listener": ("live", "off", False),
    "browser_tps_ratio_notify_once_in_flight": ("on_once", "off", False),
    "browser_vs_legacy": ("live", "legacy", False),
    "browser_quiet_vs_legacy": ("quiet", "legacy", False),
    # the guard's share: the same trigger without it
    "browser_guard_cost_pct": ("quiet", "no_guard", True),
    # the writer's cost of the echo records alone: the same trigger with them off
    "browser_echo_cost_pct": ("quiet", "no_echo", True),
    # today's trigger against 0.2.0's: provenance, echo records and the FULL JOIN together
    "browser_quiet_vs_v020": ("quiet", "v020", False),
    # provenance and the FULL JOIN, without the echo records, against 0.2.0's
    "browser_no_echo_vs_v020": ("no_echo", "v020", False),
}

# What a ledger arm left behind, read before the next arm clears it: proof that each arm
# ran the trigger it claims (events with or without their cause, echo records or none).
_EVIDENCE = """
SELECT (SELECT count(*) FROM pgmq.q_booking_events) AS events,
       (SELECT count(*) FROM pgmq.q_booking_events q WHERE q.message ? 'cause') AS events_with_cause,
       (SELECT count(*) FROM session_ledger.booking_writes) AS echo_records
"""


def browser(server: Server, sizes: Sizes, workdir: Path, logs: Path) -> dict[str, Any]:
    """pgbench TPS of single-booking completions as the signed-in trainer, 8 clients, every arm each round."""
    per_arm = CLIENTS * sizes.browser_tx_per_client
    rounds = max(5, sizes.browser_rounds)
    order = [arm for r in range(rounds) for arm in (_ORDER if r % 2 == 0 else _ORDER[::-1])]
    tps: dict[str, list[float]] = {arm: [] for arm in _ORDER}
    evidence: dict[str, dict[str, int]] = {}
    slow_stops = 0
    left_after_live: list[int] = []
    ledger_runs = [arm for arm in order if arm != "legacy"]
    legacy_runs = len(order) - len(ledger_runs)
    with (
        server.database() as dsn,
        server.database(legacy=True) as legacy_dsn,
        connect(dsn, purpose="bench") as conn,
        connect(legacy_dsn, purpose="bench") as legacy_conn,
    ):
        # Both databases the same size, so index depth and pack count match; legacy uses the first bookings.
        workload.populate(conn, per_arm * len(ledger_runs))
        workload.populate(legacy_conn, per_arm * len(ledger_runs))
        original = variants.definition(conn)
        variant_of = {
            "no_guard": variants.without_guard(original),
            "on_once": variants.notify_once_in_flight(original),
            "v020": variants.v020(),
        }
        used = {"ledger": 0, "legacy": 0}
        for arm in order:
            db = "legacy" if arm == "legacy" else "ledger"
            target_conn = legacy_conn if db == "legacy" else conn
            target_conn.execute("SELECT setval('bench.next_booking', %s, false)", [used[db] * per_arm + 1])
            used[db] += 1
            if db == "ledger":
                _prepare_ledger_arm(conn, arm)
            target_conn.execute("CHECKPOINT")
            listener = None
            if arm == "live":
                listener = workload.start_listener(dsn, logs / "listener-browser.log", drain=False)
                workload.wait_idle_listener(conn)
            variant: AbstractContextManager[None] = nullcontext()
            if arm in variant_of:
                variant = variants.installed(conn, variant_of[arm], original)
            elif arm == "no_echo":
                variant = echoes_off(conn)
            try:
                with variant:
                    tps[arm].append(
                        pgbench(
                            legacy_dsn if db == "legacy" else dsn,
                            LEGACY_SCRIPT if db == "legacy" else LEDGER_SCRIPT,
                            clients=CLIENTS,
                            tx_per_client=sizes.browser_tx_per_client,
                            workdir=workdir,
                        )
                    )
            finally:
                if listener is not None:
                    slow_stops += _stop(listener)
                    queued = conn.execute("SELECT count(*) AS n FROM pgmq.q_booking_events").fetchone()
                    left_after_live.append(int(queued["n"]) if queued else -1)
            if db == "ledger":
                row = conn.execute(_EVIDENCE).fetchone()
                assert row is not None
                evidence[arm] = {k: int(v) for k, v in row.items()}
        legacy_used = legacy_conn.execute(
            "SELECT coalesce(sum(sessions_used), 0)::bigint AS n FROM public.client_purchases"
        ).fetchone()
    median = {arm: statistics.median(runs) for arm, runs in tps.items()}
    figures: dict[str, Any] = {}
    for key, (a, b, pct) in _RATIOS.items():
        # Round by round: the arms of one round ran back to back, on the same machine load.
        per_round = [x / y for x, y in zip(tps[a], tps[b], strict=True)]
        if pct:
            per_round = [100.0 * (1.0 - r) for r in per_round]
        figures[key] = statistics.median(per_round)
        figures[f"{key}_spread"] = [min(per_round), max(per_round)]
    return {
        "browser_tps_off": median["off"],
        "browser_tps_quiet": median["quiet"],
        "browser_tps_no_guard": median["no_guard"],
        "browser_tps_on": median["on"],
        "browser_tps_on_notify_once_in_flight": median["on_once"],
        "browser_tps_live_listener": median["live"],
        "browser_tps_legacy": median["legacy"],
        "browser_tps_no_echo": median["no_echo"],
        "browser_tps_v020": median["v020"],
        **figures,
        "browser_rounds": rounds,
        "browser_completions_per_arm_run": per_arm,
        "browser_arm_evidence": evidence,
        "browser_runs": tps,
        "browser_arms": ARMS,
        "browser_listener_slow_stops": slow_stops,
        # Events the live listener had not yet charged when pgbench finished and it was stopped.
        "browser_left_queued_after_live": max(left_after_live, default=-1),
        # Evidence the legacy arm did its work: one session used per completion.
        "browser_legacy_sessions_used": int(legacy_used["n"]) if legacy_used else -1,
        "browser_legacy_completions": legacy_runs * per_arm,
    }


def _prepare_ledger_arm(conn: Conn, arm: str) -> None:
    """Triggers, listener rows and an empty queue as the arm needs them."""
    workload.set_ledger_triggers(conn, enabled=arm != "off")
    conn.execute("DELETE FROM session_ledger.listeners")
    conn.execute("DELETE FROM pgmq.q_booking_events")
    conn.execute("VACUUM pgmq.q_booking_events")
    # Every arm starts from no echo records, as every arm starts from an empty queue.
    conn.execute("DELETE FROM session_ledger.booking_writes")
    conn.execute("VACUUM session_ledger.booking_writes")
    if arm in ("on", "on_once"):
        # An idle listener on record makes every completion also send the wake-up NOTIFY.
        workload.fake_idle_listener(conn)


@contextmanager
def echoes_off(conn: Conn) -> Iterator[None]:
    """config.absorb_legacy_calls off for the block, then as it was: the trigger records no echoes."""
    row = conn.execute("SELECT absorb_legacy_calls AS enabled FROM session_ledger.config").fetchone()
    assert row is not None
    conn.execute("UPDATE session_ledger.config SET absorb_legacy_calls = false")
    try:
        yield
    finally:
        conn.execute("UPDATE session_ledger.config SET absorb_legacy_calls = %s", [row["enabled"]])


def _stop(listener: subprocess.Popen[bytes]) -> int:
    """SIGTERM the listener; 1 if it had to be killed (the figure is measured already), else 0."""
    listener.send_signal(signal.SIGTERM)
    try:
        listener.wait(timeout=60)
    except subprocess.TimeoutExpired:
        listener.kill()
        listener.wait()
        return 1
    return 0
