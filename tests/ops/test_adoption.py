"""The rollout of ADOPTING.md on a live database: install, old code still deducting, cut-over, listener.

Every booking must end up charged exactly once, whoever charged it: the app's old
code before the cut-over, or the listener after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from listener.core.db import Conn, connect
from listener.core.sql_files import demo_schema
from listener.core.worker import Worker
from listener.devtools import demo_data
from listener.devtools.throwaway import create_database, drop_database
from listener.errors import ListenerError, SchemaOutOfDate
from listener.ops.cutover import cutover
from listener.ops.migrate import migrate
from listener.settings import Settings
from listener.testing.checker import check, snapshot_used
from listener.testing.ledger import Ledger, ListenerThread

from support.world import run_cli


@pytest.fixture
def app_dsn(ledger_server: str) -> Iterator[str]:
    """A database holding only the app, as before the ledger is installed."""
    dsn = create_database(ledger_server, prefix="ledger_app")
    with connect(dsn) as conn:
        conn.execute(demo_schema())
    yield dsn
    drop_database(ledger_server, dsn)


class OldApp:
    """The app before the rollout: completing or cancelling a booking also moves the balance itself."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def complete(self, booking: uuid.UUID, pack: uuid.UUID) -> None:
        self.conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [booking])
        row = self.conn.execute("SELECT public.use_session(%s) AS ok", [pack]).fetchone()
        assert row is not None and row["ok"] is True

    def cancel(self, booking: uuid.UUID, pack: uuid.UUID) -> None:
        self.conn.execute("UPDATE public.bookings SET status = 'cancelled' WHERE id = %s", [booking])
        row = self.conn.execute("SELECT public.release_session(%s) AS n", [pack]).fetchone()
        assert row is not None and row["n"] >= 0


def _set_status(conn: Conn, booking: uuid.UUID, status: str) -> None:
    conn.execute("UPDATE public.bookings SET status = %s WHERE id = %s", [status, booking])


def _source(conn: Conn, booking: uuid.UUID) -> tuple[str, str] | None:
    row = conn.execute(
        "SELECT state, source FROM session_ledger.charges WHERE booking_id = %s", [booking]
    ).fetchone()
    return None if row is None else (row["state"], row["source"])


def test_rollout_charges_every_booking_exactly_once(app_dsn: str) -> None:
    conn = connect(app_dsn)
    old = OldApp(conn)
    org = demo_data.create_org(conn)
    a = demo_data.create_pack(conn, org, sessions_total=10, sessions_used=0)
    b = demo_data.create_pack(conn, org, sessions_total=5, sessions_used=1)
    start = snapshot_used(conn)  # before any session below was charged
    a1, a2, a3, a4, a5, a6, a7 = demo_data.create_bookings(conn, org, a, count=7)
    b1, b2, b3 = demo_data.create_bookings(conn, org, b, count=3)

    # Before the install: the old app deducts on completion and gives back on cancel.
    old.complete(a1, a)
    old.complete(a2, a)
    old.complete(b1, b)
    old.complete(a3, a)
    old.cancel(a3, a)

    # 1. Install with the listener stopped: completed bookings are adopted as paid.
    migrate(app_dsn)
    assert _source(conn, a1) == ("paid", "adoption")
    # The old choreography: nothing absorbs the old code's calls, a cut-over comes later.
    conn.execute("UPDATE session_ledger.config SET absorb_legacy_calls = false")

    # The old app is still deployed and still deducting; its writes now also enqueue events.
    old.complete(a4, a)
    old.cancel(a1, a)
    old.complete(b2, b)
    old.complete(a5, a)

    # 2-3. The app without its completion-time use_session is deployed; then the cut-over.
    result = run_cli("cutover", "--dsn", app_dsn)
    assert result.returncode == 0, result.stderr
    assert "settled 4 booking(s) from 4 waiting event(s)" in result.stdout

    # The new app only changes bookings; the listener is not running yet.
    _set_status(conn, a6, "completed")
    _set_status(conn, b3, "completed")
    _set_status(conn, a5, "cancelled")  # charged by the old code just before the cut-over
    _set_status(conn, a2, "cancelled")  # adopted at install
    Ledger(app_dsn).complete_as_user(a7, org.trainer_user_id)  # the trainer's browser, under RLS

    # 4. Start the listener.
    Worker(Settings(dsn=SecretStr(app_dsn))).run(drain=True)

    # 5. The reconcile-style check: every booking charged exactly once, to its pack.
    verdict = check(conn, start)
    assert verdict.ok, verdict.examples
    assert demo_data.sessions_used(conn, a) == 3  # a4, a6, a7
    assert demo_data.sessions_used(conn, b) == 1 + 3  # b1, b2, b3
    assert _source(conn, b1) == ("paid", "adoption")
    assert _source(conn, a4) == ("paid", "cut-over")
    assert _source(conn, a6) == ("paid", "listener")
    assert _source(conn, a5) == ("released", "listener")
    conn.close()


def test_cutover_refuses_without_a_ledger_or_with_a_running_listener(app_dsn: str, ledger_dsn: str) -> None:
    with pytest.raises(SchemaOutOfDate, match="run `listener migrate` first"):
        cutover(app_dsn)
    with connect(ledger_dsn) as conn:
        installed = conn.execute("SELECT adopt_until FROM session_ledger.config").fetchone()
    assert installed is not None and installed["adopt_until"] is not None  # the install is the cut-over
    listener = ListenerThread(ledger_dsn).start()
    try:
        with pytest.raises(ListenerError, match=r"a listener is running .*: stop it first, then cut over"):
            cutover(ledger_dsn)
    finally:
        listener.stop()
    with connect(ledger_dsn) as conn:
        row = conn.execute("SELECT adopt_until FROM session_ledger.config").fetchone()
    assert row == installed


def test_cutover_at_the_deploy_time_settles_old_events_and_names_straddlers(ledger_dsn: str) -> None:
    conn = connect(ledger_dsn)
    conn.execute("UPDATE session_ledger.config SET absorb_legacy_calls = false")  # the old choreography
    old = OldApp(conn)
    org = demo_data.create_org(conn)
    pack = demo_data.create_pack(conn, org, sessions_total=10)
    other = demo_data.create_pack(conn, org, sessions_total=10)
    before, after = demo_data.create_bookings(conn, org, pack, count=2)
    [straddling] = demo_data.create_bookings(conn, org, other)

    old.complete(before, pack)
    old.complete(straddling, other)
    row = conn.execute("SELECT clock_timestamp() AS t").fetchone()
    assert row is not None
    deployed_at = row["t"]  # the new app went live here; the cut-over is run later
    _set_status(conn, after, "completed")
    _set_status(conn, straddling, "cancelled")

    report = cutover(ledger_dsn, deployed_at)
    assert report.adopt_until == deployed_at
    assert (report.settled_bookings, report.archived_events) == (1, 1)
    # Its state at the cut-over time is unknowable, so the command names it for a person to check.
    assert report.straddling == [straddling]
    assert _source(conn, before) == ("paid", "cut-over")

    Worker(Settings(dsn=SecretStr(ledger_dsn))).run(drain=True)
    assert demo_data.sessions_used(conn, pack) == 2  # before: by the old code; after: by the listener
    assert _source(conn, after) == ("paid", "listener")
    conn.close()
