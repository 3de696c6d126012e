"""Two routes to the same ledger: a fresh install from sql/schema.sql, and an upgrade through
the numbered migrations from each released version (built by that release's own code, from
its git tag, and used before the upgrade). Both must end with the same catalog."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import SecretStr

from listener.core.db import Conn, connect
from listener.core.sql_files import demo_schema, migrations, sql_dir
from listener.core.worker import Worker
from listener.devtools import schema_dump
from listener.devtools.throwaway import create_database, drop_database
from listener.ops.export import export_migrations
from listener.ops.migrate import migrate
from listener.settings import Settings
from listener.testing.checker import check

from support import ROOT, catalog, releases

STATUSES = ("pending", "confirmed", "cancelled", "completed", "no_show")


@pytest.fixture
def databases(ledger_server: str) -> Iterator[list[str]]:
    """Throwaway databases the test creates with new(); all dropped afterwards."""
    made: list[str] = []
    yield made
    for dsn in made:
        drop_database(ledger_server, dsn)


def _new(ledger_server: str, databases: list[str], prefix: str) -> str:
    dsn = create_database(ledger_server, prefix=prefix)
    databases.append(dsn)
    return dsn


# -- the app's data, in whichever demo schema a release shipped ---------------------------


class App:
    """An organisation with a client, packs in every condition and bookings in every status."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.org, self.client, self.other_client = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        modern = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns"
            " WHERE table_name = 'orgs' AND column_name = 'slug') AS modern"
        ).fetchone()
        assert modern is not None
        if modern["modern"]:  # 0.2.0 on: the real app's column names
            conn.execute(
                "INSERT INTO public.orgs (id, name, slug) VALUES (%s, 'Studio', %s)",
                [self.org, str(self.org)],
            )
            conn.execute(
                "INSERT INTO public.org_members (org_id, user_id, role) VALUES (%s, %s, 'staff')",
                [self.org, uuid.uuid4()],
            )
            for c in (self.client, self.other_client):
                conn.execute(
                    "INSERT INTO public.clients (id, org_id, full_name) VALUES (%s, %s, 'Client')",
                    [c, self.org],
                )
        else:
            conn.execute("INSERT INTO public.orgs (id, name) VALUES (%s, 'Studio')", [self.org])
            conn.execute(
                "INSERT INTO public.org_members (org_id, user_id, role) VALUES (%s, %s, 'trainer')",
                [self.org, uuid.uuid4()],
            )
            for c in (self.client, self.other_client):
                conn.execute(
                    "INSERT INTO public.clients (id, org_id, name) VALUES (%s, %s, 'Client')", [c, self.org]
                )

    def pack(self, total: int | None, used: int = 0, **kw: Any) -> uuid.UUID:
        row = self.conn.execute(
            "INSERT INTO public.client_purchases (org_id, client_id, sessions_total, sessions_used,"
            " expires_at, payment_status) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            [
                self.org,
                kw.get("client", self.client),
                total,
                used,
                kw.get("expires_at"),
                kw.get("payment_status", "succeeded"),
            ],
        ).fetchone()
        assert row is not None
        return uuid.UUID(str(row["id"]))

    def bookings(self, pack: uuid.UUID | None, n: int, status: str = "confirmed") -> list[uuid.UUID]:
        start = datetime.now().astimezone() - timedelta(days=n + 1)
        rows = self.conn.execute(
            "INSERT INTO public.bookings (org_id, client_id, start_time, end_time, purchase_id, status)"
            " SELECT %s, %s, t, t + interval '1 hour', %s, %s"
            " FROM generate_series(%s::timestamptz, %s::timestamptz + (%s - 1) * interval '1 day',"
            " interval '1 day') t RETURNING id",
            [self.org, self.client, pack, status, start, start, n],
        ).fetchall()
        return [uuid.UUID(str(r["id"])) for r in rows]

    def set_status(self, bookings: list[uuid.UUID], status: str) -> None:
        self.conn.execute("UPDATE public.bookings SET status = %s WHERE id = ANY (%s)", [status, bookings])

    def before_install(self) -> dict[str, uuid.UUID]:
        """What the app holds before the ledger: completions its old code charged, on packs of every kind."""
        packs = {
            "busy": self.pack(10, used=2),
            "over": self.pack(2, used=1),  # three completions, one session charged: two given away
            "expired": self.pack(5, expires_at=datetime.now().astimezone() - timedelta(days=30)),
            "refunded": self.pack(5, payment_status="refunded"),
            "foreign": self.pack(5, client=self.other_client),
            "unlimited": self.pack(None),
        }
        for name, pack in packs.items():
            self.bookings(pack, 3 if name == "over" else 1, "completed")
        for status in STATUSES:
            self.bookings(packs["busy"], 1, status)
        self.bookings(None, 1, "completed")
        return packs


# -- an install by a release, used by that release ----------------------------------------


def _old_install(tree: Path, dsn: str) -> tuple[App, dict[str, uuid.UUID]]:
    """The release installs itself on an app with history, then its listener charges, releases,
    refuses and dead-letters, the app's old code still calls use_session, and events wait."""
    with connect(dsn, purpose="tests") as conn:
        conn.execute(releases.sql_file(tree, "sql/demo_schema.sql"))
        app = App(conn)
        packs = app.before_install()
        releases.run(tree, "migrate", "--dsn", dsn)
        before_cutover = app.bookings(packs["busy"], 1)
        app.set_status(before_cutover, "completed")  # the old code charged it: adopted at the cut-over
        releases.run(tree, "cutover", "--dsn", dsn)
        charged = app.bookings(packs["busy"], 3)
        app.set_status(charged, "completed")
        conn.execute("SELECT public.use_session(%s)", [packs["busy"]])  # the app's old code, not yet removed
        exhausted = app.bookings(app.pack(1, used=1), 1)
        expired = app.bookings(packs["expired"], 1)
        app.set_status(exhausted + expired, "completed")
        conn.execute(
            "SELECT pgmq.send('booking_events', '{\"type\": \"not an event\"}'::jsonb)"
        )  # dead-lettered by the old listener
        releases.run(tree, "run", "--dsn", dsn, "--drain", "--poll-interval", "0.05")
        app.set_status(charged[:1], "cancelled")
        no_show = app.bookings(packs["busy"], 1)
        app.set_status(no_show, "no_show")
        releases.run(tree, "run", "--dsn", dsn, "--drain", "--poll-interval", "0.05")
        waiting = app.bookings(packs["busy"], 2)
        app.set_status(waiting, "completed")  # queued by the old trigger, charged after the upgrade
        states = {r["state"] for r in conn.execute("SELECT DISTINCT state FROM session_ledger.charges")}
        assert states == {"paid", "unfunded", "released"}, states
        dead = conn.execute("SELECT count(*) AS n FROM pgmq.q_booking_events_dlq").fetchone()
        assert dead is not None and dead["n"] >= 1
    return app, packs


def _rows(conn: Conn, table: str) -> list[dict[str, Any]]:
    schema, name = table.split(".")
    return conn.execute(
        psycopg.sql.SQL("SELECT * FROM {} ORDER BY 1").format(psycopg.sql.Identifier(schema, name))
    ).fetchall()


def _balances(conn: Conn) -> dict[Any, int]:
    return {
        r["id"]: r["sessions_used"]
        for r in conn.execute("SELECT id, sessions_used FROM public.client_purchases")
    }


def _snapshot(dsn: str) -> list[tuple[str, str, str]]:
    with connect(dsn, purpose="tests") as conn:
        return catalog.snapshot(conn)


@pytest.mark.slow  # each release's own CLI, a subprocess per step
@pytest.mark.parametrize("tag", releases.RELEASES)
def test_an_upgraded_release_and_a_fresh_install_have_the_same_schema(
    tag: str, ledger_server: str, databases: list[str]
) -> None:
    tree = releases.tree(tag)
    old = _new(ledger_server, databases, "ledger_old")
    _, packs = _old_install(tree, old)
    with connect(old, purpose="tests") as conn:
        balances, ledger = _balances(conn), _rows(conn, "session_ledger.charges")
        queued = {r["msg_id"] for r in _rows(conn, "pgmq.q_booking_events")}

    report = migrate(old)
    shipped = {p.stem for p in (tree / "sql" / "migrations").glob("*.sql")}
    assert not report.fresh
    assert report.applied == [
        f"{m.version:04d}_{m.name}" for m in migrations() if f"{m.version:04d}_{m.name}" not in shipped
    ], "the upgrade applies exactly the migrations the release did not ship"
    assert not migrate(old).changed

    with connect(old, purpose="tests") as conn:
        assert _balances(conn) == balances, "the upgrade moves no session"
        # (0006 queues the listener's unfunded bookings to be judged again, too)
        assert queued <= {r["msg_id"] for r in _rows(conn, "pgmq.q_booking_events")}, (
            "events waiting at the upgrade survive it"
        )
        # Only adoptions on packs that could never have paid are judged again (migration 0006).
        never = {packs[k] for k in ("expired", "refunded", "foreign", "unlimited")}
        expected = {
            r["booking_id"]: "unfunded"
            if r["source"] == "adoption" and r["purchase_id"] in never
            else r["state"]
            for r in ledger
        }
        assert {r["booking_id"]: r["state"] for r in _rows(conn, "session_ledger.charges")} == expected

    # A fresh install on the same release's app, with the same history before the ledger.
    fresh = _new(ledger_server, databases, "ledger_fresh")
    with connect(fresh, purpose="tests") as conn:
        conn.execute(releases.sql_file(tree, "sql/demo_schema.sql"))
        App(conn).before_install()
    report = migrate(fresh)
    assert report.fresh and report.applied == [f"{m.version:04d}_{m.name}" for m in migrations()]

    catalog.assert_same(_snapshot(old), _snapshot(fresh), what=f"upgraded from {tag} vs fresh")
    with connect(old, purpose="tests") as a, connect(fresh, purpose="tests") as b:
        assert schema_dump.render(a) == schema_dump.render(b)

    # And the upgraded ledger goes on charging: the waiting events, then new writes.
    with connect(old, purpose="tests") as conn:
        # Each pack's balance less its paid ledger rows (adopted ones included): what check() adds them to.
        paid = [r["purchase_id"] for r in _rows(conn, "session_ledger.charges") if r["state"] == "paid"]
        start = {p: used - paid.count(p) for p, used in _balances(conn).items()}
    Worker(Settings(dsn=SecretStr(old), poll_interval_s=0.05)).run(drain=True)
    with connect(old, purpose="tests") as conn:
        assert _balances(conn)[packs["busy"]] == balances[packs["busy"]] + 2
        verdict = check(conn, start)
        assert not verdict.lost and not verdict.balance_mismatches and not verdict.queue_left, (
            verdict.examples
        )


@pytest.mark.slow
def test_sql_schema_file_is_the_schema_the_migrations_build(ledger_server: str, databases: list[str]) -> None:
    """The file a fresh install runs is what the migrations make of the first release's install."""
    old = _new(ledger_server, databases, "ledger_old")
    tree = releases.tree(releases.RELEASES[0])
    with connect(old, purpose="tests") as conn:
        conn.execute(releases.sql_file(tree, "sql/demo_schema.sql"))
    releases.run(tree, "migrate", "--dsn", old)
    assert not migrate(old).fresh
    with connect(old, purpose="tests") as conn:
        rendered = schema_dump.render(conn)
    path = sql_dir() / "schema.sql"
    if os.environ.get("LISTENER_WRITE_SCHEMA") == "1":
        path.write_text(rendered, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == rendered, (
        "sql/schema.sql is not the schema the migrations build: "
        "regenerate it with `LISTENER_WRITE_SCHEMA=1 pytest tests/db/test_routes.py -k schema_file`"
    )


def _adoption(dsn: str) -> dict[str, Any]:
    with connect(dsn, purpose="tests") as conn:
        return {
            "charges": [
                {k: v for k, v in r.items() if k not in ("updated_at",)}
                for r in conn.execute("SELECT * FROM session_ledger.charges ORDER BY booking_id")
            ],
            "given_away": conn.execute(
                "SELECT purchase_id, sessions, recorded FROM session_ledger.given_away ORDER BY 1"
            ).fetchall(),
            "replaced": [
                (r["signature"], r["definition"]) for r in _rows(conn, "session_ledger.replaced_functions")
            ],
            "config": [
                {k: (v is not None if k == "adopt_until" else v) for k, v in r.items()}
                for r in _rows(conn, "session_ledger.config")
            ],
            "queued": conn.execute("SELECT count(*) AS n FROM pgmq.q_booking_events").fetchone(),
            "balances": sorted(_balances(conn).values()),
        }


def test_the_exported_migrations_and_a_fresh_install_adopt_an_app_alike(
    ledger_server: str, databases: list[str], tmp_path: Path
) -> None:
    """Every migration from nothing (as the exported files run on a new Supabase project) and the
    fresh route build the same catalog and record the app's history the same way."""
    exported, fresh = (
        _new(ledger_server, databases, prefix) for prefix in ("ledger_exported", "ledger_fresh")
    )
    for dsn in (exported, fresh):
        with connect(dsn, purpose="tests") as conn:
            conn.execute(demo_schema())
    _same_app(exported, fresh)
    with connect(exported, autocommit=False, purpose="tests") as conn:
        for f in export_migrations(tmp_path, pgmq="script"):
            conn.execute(f.read_text(encoding="utf-8"))
            conn.commit()
    report = migrate(fresh)
    assert report.fresh
    assert not migrate(exported).changed, "the exported files record what migrate would"
    catalog.assert_same(_snapshot(exported), _snapshot(fresh), what="exported migrations vs fresh")
    assert _adoption(exported) == _adoption(fresh)


def _same_app(*dsns: str) -> None:
    """The same app rows, ids and all, in each database."""
    tables = ("orgs", "org_members", "clients", "client_purchases", "bookings")
    with connect(dsns[0], purpose="tests") as conn:
        App(conn).before_install()
        rows = {t: _rows(conn, f"public.{t}") for t in tables}
        generated = {
            (r["table_name"], r["column_name"])
            for r in conn.execute(
                "SELECT table_name::text, column_name::text FROM information_schema.columns"
                " WHERE table_schema = 'public' AND is_generated = 'ALWAYS'"
            )
        }
    for dsn in dsns[1:]:
        with connect(dsn, purpose="tests") as conn:
            for t in tables:
                for r in rows[t]:
                    cols = [c for c in r if (t, c) not in generated]
                    conn.execute(
                        psycopg.sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                            psycopg.sql.Identifier("public", t),
                            psycopg.sql.SQL(", ").join(map(psycopg.sql.Identifier, cols)),
                            psycopg.sql.SQL(", ").join(psycopg.sql.Placeholder() * len(cols)),
                        ),
                        [r[c] for c in cols],
                    )


# -- the comparison can fail ----------------------------------------------------------------

SEEDED = {
    "column default": "ALTER TABLE session_ledger.charges ALTER COLUMN reason SET DEFAULT 'seeded'",
    "column": "ALTER TABLE session_ledger.given_away ADD COLUMN seeded int",
    "constraint": "ALTER TABLE session_ledger.charges ADD CONSTRAINT seeded CHECK (reason <> 'seeded')",
    "index": "CREATE INDEX seeded_idx ON session_ledger.charges (reason)",
    "queue index": "CREATE INDEX q_booking_events_vt_idx ON pgmq.q_booking_events (vt)",
    "storage option": "ALTER TABLE pgmq.q_booking_events RESET (autovacuum_vacuum_threshold)",
    "row-level security": "ALTER TABLE session_ledger.charges DISABLE ROW LEVEL SECURITY",
    "policy": "CREATE POLICY seeded ON session_ledger.charges FOR SELECT USING (true)",
    "function body": "CREATE OR REPLACE FUNCTION session_ledger.installed_schema() RETURNS int"
    " LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
    " AS $$ SELECT 0 $$",
    "function config": "ALTER FUNCTION session_ledger.queue_depths() SET work_mem = '1MB'",
    "trigger": "ALTER TABLE public.bookings DISABLE TRIGGER session_ledger_enqueue_update",
    "grant": "GRANT SELECT ON session_ledger.charges TO session_ledger_listener",
    "function grant": "GRANT EXECUTE ON FUNCTION session_ledger.drain(int) TO PUBLIC",
    "owner": "ALTER TABLE session_ledger.pack_calls OWNER TO session_ledger_listener",
}


@pytest.fixture(scope="module")
def installed_pair(ledger_server: str) -> Iterator[tuple[str, str]]:
    dsns = [create_database(ledger_server, prefix="ledger_pair") for _ in range(2)]
    for dsn in dsns:
        migrate(dsn, with_demo_schema=True)
    yield dsns[0], dsns[1]
    for dsn in dsns:
        drop_database(ledger_server, dsn)


@pytest.mark.parametrize("difference", SEEDED)
def test_a_seeded_difference_fails_the_comparison(installed_pair: tuple[str, str], difference: str) -> None:
    first, second = installed_pair
    catalog.assert_same(_snapshot(first), _snapshot(second), what="two fresh installs")
    with connect(second, autocommit=False, purpose="tests") as conn:
        conn.execute(SEEDED[difference])
        seeded = catalog.snapshot(conn)
        conn.rollback()
    with pytest.raises(AssertionError, match=r"1 differences|2 differences|\d+ differences"):
        catalog.assert_same(_snapshot(first), seeded, what="seeded")


def test_a_missing_release_fails_the_test_rather_than_skipping_it(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"release v0\.0\.0 \(commit unknown\) is missing"):
        releases.extract("v0.0.0", tmp_path)


def test_each_release_commit_carries_its_version() -> None:
    for tag, commit in releases.COMMITS.items():
        shown = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{commit}:pyproject.toml"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f'version = "{tag[1:]}"' in shown, tag
