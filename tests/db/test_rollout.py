"""A rollout the app's old code cannot break, on the real app's schema in a Supabase-initialised
cluster, every request as PostgREST sends it.

The old code keeps running through the install and after it, as stale browser tabs and
a separately deployed edge function do:

- the calendar page (apps/trainer-web/src/app/(app)/calendar/page.tsx): for each past
  confirmed booking with a pack, `update({status: 'completed'}).eq('id', …)` (no status
  guard, so a second tab's update changes nothing and still succeeds), then, as a second
  request, `rpc('use_session', {p_purchase_id})`;
- the cron edge function (supabase/functions/cron-sms-reminders/index.ts), as service
  role: select the past confirmed bookings, one `update(...).in('id', ids)`, then
  `use_session` per booking with a pack;
- the clients page: "Use 1 Session" (`use_session`) and "Reinstate" (`release_session`),
  pressed after a cancel out of habit, since the old app never gave the session back.

The install happens while they run (the cut-over is part of it), and every completed
booking must end up charged exactly once, every cancellation released once, manual
presses without a booking write behind them still charge, and every absorbed call is
on record with the booking it matched.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from listener.core.db import Conn, connect
from listener.testing import app_data, supabase
from listener.testing.ledger import Ledger
from listener.testing.supabase import SupabaseAppDb, SupabaseCluster

from support.supabase_fixtures import APP_SCHEMA

# The slow tier: its own Supabase-shaped PostgreSQL 15 cluster.
pytestmark = pytest.mark.slow


@dataclass
class App:
    db: SupabaseAppDb
    owner: Conn
    studio: app_data.Studio

    def request(
        self,
        statement: str,
        params: Any = None,
        *,
        role: str = "authenticated",
        user: uuid.UUID | None = None,
    ) -> Any:
        return self.db.request(statement, params, role=role, user_id=user)

    def used(self, pack: uuid.UUID) -> int:
        row = self.owner.execute(
            "SELECT sessions_used FROM public.client_purchases WHERE id = %s", [pack]
        ).fetchone()
        assert row is not None
        return int(row["sessions_used"])

    def completed(self, pack: uuid.UUID) -> int:
        row = self.owner.execute(
            "SELECT count(*) AS n FROM public.bookings WHERE purchase_id = %s AND status = 'completed'",
            [pack],
        ).fetchone()
        assert row is not None
        return int(row["n"])

    def installed(self) -> bool:
        row = self.owner.execute("SELECT to_regclass('session_ledger.charges') IS NOT NULL AS ok").fetchone()
        return bool(row and row["ok"])

    def drain(self) -> None:
        if self.installed():
            Ledger(self.db.postgres_dsn).drain(listener_running=False)

    # The app's old code, request by request.

    def old_calendar_tab(self, bookings: list[uuid.UUID]) -> None:
        """The calendar page's auto-complete, as a trainer's stale tab runs it."""
        trainer = self.studio.trainer_user_id
        for booking in bookings:
            row = self.request(
                "SELECT purchase_id FROM public.bookings WHERE id = %s", [booking], user=trainer
            ).rows[0]
            self.request(
                "UPDATE public.bookings SET status = 'completed' WHERE id = %s", [booking], user=trainer
            )
            if row["purchase_id"] is not None:
                self.request("SELECT public.use_session(%s)", [row["purchase_id"]], user=trainer)

    def old_edge_function(self) -> None:
        """The cron edge function: select, one bulk update by ids, use_session per booking."""
        due = self.request(
            "SELECT id, purchase_id FROM public.bookings WHERE status = 'confirmed' AND end_time < now()",
            role="service_role",
        ).rows
        if not due:
            return
        self.request(
            "UPDATE public.bookings SET status = 'completed' WHERE id = ANY (%s)",
            [[r["id"] for r in due]],
            role="service_role",
        )
        for r in due:
            if r["purchase_id"] is not None:
                self.request("SELECT public.use_session(%s)", [r["purchase_id"]], role="service_role")

    def old_cancel_and_reinstate(self, booking: uuid.UUID, pack: uuid.UUID) -> None:
        """The trainer cancels a completed booking and, from habit, presses Reinstate on its pack."""
        trainer = self.studio.trainer_user_id
        self.request("UPDATE public.bookings SET status = 'cancelled' WHERE id = %s", [booking], user=trainer)
        self.request("SELECT public.release_session(%s)", [pack], user=trainer)

    def old_use_one_session(self, pack: uuid.UUID) -> Any:
        """The clients page's "Use 1 Session", old code."""
        return self.request(
            "SELECT public.use_session(%s) AS ok", [pack], user=self.studio.trainer_user_id
        ).rows[0]["ok"]

    # The app's new code.

    def new_calendar(self, bookings: list[uuid.UUID]) -> None:
        for booking in bookings:
            self.request(
                "UPDATE public.bookings SET status = 'completed' WHERE id = %s",
                [booking],
                user=self.studio.trainer_user_id,
            )

    def new_cron(self) -> None:
        self.request("SELECT session_ledger.complete_past_bookings()", role="service_role")

    def new_use_one_session(self, pack: uuid.UUID, reason: str) -> Any:
        return self.request(
            "SELECT public.use_session(%s, %s) AS ok", [pack, reason], user=self.studio.trainer_user_id
        ).rows[0]["ok"]


@pytest.fixture
def fresh_app(supabase_cluster: SupabaseCluster) -> Iterator[App]:
    """The real app's schema with no ledger yet: the stage before install."""
    name = supabase.create_app_database(supabase_cluster, schema=[APP_SCHEMA], ledger=False)
    db = SupabaseAppDb(supabase_cluster, name)
    try:
        with connect(db.postgres_dsn, purpose="tests") as owner:
            yield App(db, owner, app_data.create_studio(owner, "Rollout"))
    finally:
        supabase.drop_app_database(supabase_cluster, name)


def _race(*jobs: Any) -> None:
    errors: list[BaseException] = []

    def run(job: Any) -> None:
        try:
            job()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_the_old_code_running_through_install_and_after_charges_each_booking_once(fresh_app: App) -> None:
    app = fresh_app
    owner = app.owner
    studio = app.studio

    # Before install: the old code charges by itself, one request after another.
    early = app_data.create_pack(owner, studio, sessions_total=20)
    early_bookings = app_data.create_bookings(owner, studio, early, count=2)
    app.old_calendar_tab(early_bookings)
    assert app.used(early) == 2

    # Install, with the old code still deployed: the cut-over is part of it.
    report = supabase.migrate_as_postgres(app.db.cluster, app.db.name)
    assert report.applied
    assert app.used(early) == 2  # adopted as paid, not charged again

    tab = app_data.create_pack(owner, studio, sessions_total=20)
    edge = app_data.create_pack(owner, studio, sessions_total=20)
    raced = app_data.create_pack(owner, studio, sessions_total=20)
    manual = app_data.create_pack(owner, studio, sessions_total=20)
    tab_bookings = app_data.create_bookings(owner, studio, tab, count=4)
    raced_bookings = app_data.create_bookings(owner, studio, raced, count=8)

    # An old calendar tab, and a second tab re-running it on the same bookings.
    app.old_calendar_tab(tab_bookings)
    app.old_calendar_tab(tab_bookings)
    app.drain()
    # The old edge function, with the listener running between its requests.
    app_data.create_bookings(owner, studio, edge, count=4)
    app.old_edge_function()
    app.drain()
    # Both racing each other on the same bookings, twice over.
    _race(lambda: app.old_calendar_tab(raced_bookings), app.old_edge_function)
    _race(lambda: app.old_calendar_tab(raced_bookings[::-1]), app.old_edge_function)
    app.drain()

    for pack in (early, tab, edge, raced):
        assert app.used(pack) == app.completed(pack), pack

    # Cancel a completed booking, then Reinstate out of habit: released once.
    app.old_cancel_and_reinstate(tab_bookings[0], tab)
    app.drain()
    assert app.used(tab) == app.completed(tab) == 3

    # A manual press with no booking write behind it charges, in old code and new.
    assert app.old_use_one_session(manual) is True
    assert app.new_use_one_session(manual, "extra session agreed with the client") is True
    app.drain()
    assert app.used(manual) == 2

    # The new app: completions and the cron without their own deductions.
    new_pack = app_data.create_pack(owner, studio, sessions_total=20)
    new_bookings = app_data.create_bookings(owner, studio, new_pack, count=5)
    app.new_calendar(new_bookings[:2])
    app.new_cron()
    app.drain()
    assert app.used(new_pack) == app.completed(new_pack) == 5
    # ... while the old code still runs beside it, racing it.
    late = app_data.create_pack(owner, studio, sessions_total=20)
    late_bookings = app_data.create_bookings(owner, studio, late, count=6)
    _race(lambda: app.old_calendar_tab(late_bookings), app.new_cron, app.old_edge_function)
    app.drain()
    assert app.used(late) == app.completed(late) == 6

    # Every absorbed call is on record, with who made it and the booking it echoed.
    absorbed = owner.execute(
        "SELECT kind, purchase_id, booking_id, caused_by FROM session_ledger.pack_calls WHERE outcome = 'absorbed'"
    ).fetchall()
    by_pack: dict[uuid.UUID, int] = {}
    for a in absorbed:
        by_pack[a["purchase_id"]] = by_pack.get(a["purchase_id"], 0) + 1
        assert a["booking_id"] is not None and a["caused_by"]["role"] in ("authenticated", "service_role")
    assert by_pack[tab] == 4 + 4 + 1  # two tabs, and the Reinstate
    assert by_pack[edge] == 4
    assert by_pack[raced] >= 8
    assert manual not in by_pack
    status = owner.execute("SELECT session_ledger.status() -> 'legacy_calls' AS s").fetchone()
    assert status is not None
    assert status["s"]["absorbed"] == len(absorbed) and status["s"]["last_absorbed_at"] is not None
    # Every ledger row says who caused it.
    causes = owner.execute(
        "SELECT caused_by ->> 'role' AS role, count(*) AS n FROM session_ledger.charges"
        " WHERE source = 'listener' GROUP BY 1"
    ).fetchall()
    assert {c["role"] for c in causes} <= {"authenticated", "service_role"} and all(c["role"] for c in causes)
    reconcile = owner.execute("SELECT count(*) AS n FROM session_ledger.out_of_sync").fetchone()
    assert reconcile == {"n": 0}


def test_a_trace_header_reaches_the_ledger_row(supabase_app_db: SupabaseAppDb) -> None:
    with connect(supabase_app_db.postgres_dsn, purpose="tests") as owner:
        studio = app_data.create_studio(owner, "Trace")
        pack = app_data.create_pack(owner, studio, sessions_total=3)
        [booking] = app_data.create_bookings(owner, studio, pack)
        trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        supabase_app_db.request(
            "UPDATE public.bookings SET status = 'completed' WHERE id = %s",
            [booking],
            role="authenticated",
            user_id=studio.trainer_user_id,
            headers={"traceparent": trace, "user-agent": "calendar"},
        )
        Ledger(supabase_app_db.postgres_dsn).drain(listener_running=False)
        row = owner.execute(
            "SELECT caused_by FROM session_ledger.charges WHERE booking_id = %s", [booking]
        ).fetchone()
        assert row == {
            "caused_by": {
                "role": "authenticated",
                "login": "authenticator",
                "uid": str(studio.trainer_user_id),
                "trace": trace,
            }
        }
