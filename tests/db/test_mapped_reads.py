"""The ledger's reads on apps shaped unlike the coaching app: the canonical views, the cron path,
status, the audit and the dashboard on a gym (integer keys, packages counted down, the session's
times on its class, no completion mapped) and a credits marketplace (uuid keys, a wallet found by
the user, amounts, confirmed bookings completed by the cron). Each is installed in a database of
its own with `migrate(dsn, mapping=...)`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from listener.core.db import Conn, connect
from listener.core.events import Accepted, RawMessage, judge
from listener.core.sql_files import query
from listener.devtools.throwaway import create_database, drop_database
from listener.errors import MigrateNotPermitted
from listener.mapping import model
from listener.mapping.model import Mapping
from listener.ops.audit import NOT_AUDITED, audit
from listener.ops.migrate import migrate

from support.mapped_apps import GYM_MAPPING, GYM_TABLES, MARKET_MAPPING, MARKET_TABLES


@dataclass
class App:
    """One installed app: its DSN, and a connection as the owner."""

    dsn: str
    conn: Conn

    def one(self, sql: str, params: dict[str, Any] | None = None) -> Any:
        row = self.conn.execute(sql, params or {}).fetchone()
        assert row is not None
        return next(iter(row.values()))

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.conn.execute(sql, params or {}).fetchall()


def _install(admin: str, schema: str, mapping: Mapping) -> Iterator[App]:
    dsn = create_database(admin, prefix="ledger_reads")
    try:
        with connect(dsn, autocommit=True, purpose="tests") as conn:
            conn.execute(schema)
        migrate(dsn, mapping=mapping)
        with connect(dsn, autocommit=True, purpose="tests") as conn:
            yield App(dsn, conn)
    finally:
        drop_database(admin, dsn)


@pytest.fixture
def gym(ledger_server: str) -> Iterator[App]:
    """A gym, installed from its mapping."""
    yield from _install(ledger_server, GYM_TABLES, model.parse(GYM_MAPPING, source="gym"))


@pytest.fixture
def market(ledger_server: str) -> Iterator[App]:
    """A credits marketplace, installed from its mapping."""
    yield from _install(ledger_server, MARKET_TABLES, model.parse(MARKET_MAPPING, source="marketplace"))


def _gym_data(app: App) -> dict[str, int]:
    """A member with a live package of 5 and an expired one, a past class booked on each, a future one."""
    member = app.one("INSERT INTO gym.members (email) VALUES ('a@example.org') RETURNING id")
    live = app.one(
        "INSERT INTO gym.packages (member_id, sessions_remaining) VALUES (%(m)s, 5) RETURNING id",
        {"m": member},
    )
    expired = app.one(
        "INSERT INTO gym.packages (member_id, sessions_remaining, is_expired) VALUES (%(m)s, 2, true) RETURNING id",
        {"m": member},
    )
    past = app.one(
        "INSERT INTO gym.classes (name, starts_at, ends_at) "
        "VALUES ('spin', now() - interval '3 hours', now() - interval '2 hours') RETURNING id"
    )
    future = app.one(
        "INSERT INTO gym.classes (name, starts_at, ends_at) "
        "VALUES ('yoga', now() + interval '2 hours', now() + interval '3 hours') RETURNING id"
    )
    booked = app.one(
        "INSERT INTO gym.bookings (member_id, class_id, package_id) VALUES (%(m)s, %(c)s, %(p)s) RETURNING id",
        {"m": member, "c": past, "p": live},
    )
    later = app.one(
        "INSERT INTO gym.bookings (member_id, class_id, package_id) VALUES (%(m)s, %(c)s, %(p)s) RETURNING id",
        {"m": member, "c": future, "p": expired},
    )
    return {
        "member": member,
        "live": live,
        "expired": expired,
        "booked": booked,
        "later": later,
        "past": past,
    }


def _market_booking(app: App, user: str, *, hours_ago: int, method: str = "credits", credits: int = 1) -> Any:
    return app.one(
        "INSERT INTO public.bookings (user_id, class_name, starts_at, ends_at, payment_method, credits_used) "
        "VALUES (%(u)s, 'pilates', now() - make_interval(hours => %(h)s), "
        "now() - make_interval(hours => %(h)s) + interval '1 hour', %(m)s, %(c)s) RETURNING id",
        {"u": user, "h": hours_ago, "m": method, "c": credits},
    )


def test_the_views_give_a_gyms_rows_in_canonical_terms(gym: App) -> None:
    d = _gym_data(gym)
    bookings = {r["id"]: r for r in gym.rows("SELECT * FROM session_ledger.app_bookings")}
    assert set(bookings) == {d["booked"], d["later"]}
    row = bookings[d["booked"]]
    assert (row["status"], row["purchase_id"], row["client_id"], row["org_id"]) == (
        "booked",
        d["live"],
        d["member"],
        None,
    )
    assert (row["amount"], row["consumes"]) == (1, True)
    times = gym.rows("SELECT starts_at, ends_at FROM gym.classes WHERE id = %(c)s", {"c": d["past"]})[0]
    assert (row["start_time"], row["end_time"]) == (times["starts_at"], times["ends_at"])
    packs = {r["id"]: r for r in gym.rows("SELECT * FROM session_ledger.app_packs")}
    # counted down: what remains is the total, nothing is used
    assert (packs[d["live"]]["sessions_total"], packs[d["live"]]["sessions_used"]) == (5, 0)
    assert packs[d["live"]]["unusable"] is None
    assert packs[d["expired"]]["unusable"] == "package expired"
    assert packs[d["live"]]["client_id"] == d["member"]
    types = {
        r["column_name"]: r["data_type"]
        for r in gym.rows(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'session_ledger' AND table_name = 'app_bookings'"
        )
    }
    assert (types["id"], types["purchase_id"], types["client_id"]) == ("integer", "integer", "integer")


def test_the_views_give_a_marketplaces_rows_in_canonical_terms(market: App) -> None:
    user = "0b6b3f1e-8d5c-4a3e-9f00-1a2b3c4d5e6f"
    wallet = market.one(
        "INSERT INTO public.credit_wallets (user_id, credits_balance) VALUES (%(u)s, 7) RETURNING id",
        {"u": user},
    )
    credits = _market_booking(market, user, hours_ago=3, credits=3)
    card = _market_booking(market, user, hours_ago=3, method="card")
    bookings = {r["id"]: r for r in market.rows("SELECT * FROM session_ledger.app_bookings")}
    assert (bookings[credits]["purchase_id"], bookings[credits]["amount"], bookings[credits]["consumes"]) == (
        wallet,
        3,
        True,
    )
    assert (bookings[card]["purchase_id"], bookings[card]["consumes"]) == (wallet, False)
    (pack,) = market.rows("SELECT * FROM session_ledger.app_packs")
    assert (pack["id"], pack["sessions_total"], pack["sessions_used"], pack["unlimited"]) == (
        wallet,
        7,
        0,
        False,
    )


def test_the_marketplaces_cron_completes_its_confirmed_past_bookings_oldest_first(market: App) -> None:
    user = "0b6b3f1e-8d5c-4a3e-9f00-1a2b3c4d5e6f"
    market.one(
        "INSERT INTO public.credit_wallets (user_id, credits_balance) VALUES (%(u)s, 9) RETURNING id",
        {"u": user},
    )
    old = _market_booking(market, user, hours_ago=5)
    recent = _market_booking(market, user, hours_ago=3, method="card")
    ahead = _market_booking(market, user, hours_ago=-5)
    cancelled = _market_booking(market, user, hours_ago=4)
    market.conn.execute("UPDATE public.bookings SET status = 'cancelled' WHERE id = %(b)s", {"b": cancelled})

    # one chunk of one: the oldest goes first
    assert market.one("SELECT session_ledger.complete_past_bookings(1, interval '0')") == 1
    status = {r["id"]: r["status"] for r in market.rows("SELECT id, status FROM public.bookings")}
    assert (status[old], status[recent]) == ("completed", "confirmed")
    assert market.one("SELECT session_ledger.complete_past_bookings()") == 1
    status = {r["id"]: r["status"] for r in market.rows("SELECT id, status FROM public.bookings")}
    assert status == {old: "completed", recent: "completed", ahead: "confirmed", cancelled: "cancelled"}
    assert market.one("SELECT session_ledger.complete_past_bookings()") == 0


def test_the_marketplaces_cron_refuses_while_a_foreign_trigger_is_on_its_bookings(market: App) -> None:
    market.conn.execute(
        "DO $$ BEGIN CREATE ROLE reads_stranger NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    market.conn.execute(
        "CREATE FUNCTION public.stranger() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;"
        "ALTER FUNCTION public.stranger() OWNER TO reads_stranger;"
        "CREATE TRIGGER stranger AFTER UPDATE ON public.bookings FOR EACH STATEMENT EXECUTE FUNCTION public.stranger()"
    )
    with pytest.raises(psycopg.Error, match="trigger"):
        market.conn.execute("SELECT session_ledger.complete_past_bookings()")


def test_a_gym_with_no_completion_mapped_refuses_the_cron_saying_why(gym: App) -> None:
    d = _gym_data(gym)
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="no completion is mapped"):
        gym.conn.execute("SELECT session_ledger.complete_past_bookings()")
    assert gym.one("SELECT status FROM gym.bookings WHERE id = %(b)s", {"b": d["booked"]}) == "booked"


def test_status_the_audit_and_the_dashboard_read_a_gym_keyed_by_integers(gym: App) -> None:
    d = _gym_data(gym)
    gym.conn.execute("UPDATE gym.bookings SET status = 'attended' WHERE id = %(b)s", {"b": d["booked"]})
    assert gym.one("SELECT session_ledger.status() ->> 'schema_version'") is not None
    assert gym.one(query("app_keys"))["booking"] == "integer"

    report = audit(gym.dsn)
    by_pack = {p.purchase_id: p for p in report.packs}
    assert by_pack[d["live"]].consuming == 1
    # a package counted down keeps no count of what it used: shown, not judged
    assert by_pack[d["live"]].kind == "not-audited" and by_pack[d["live"]].given_away is None
    assert report.as_json()["notes"] == [NOT_AUDITED]
    assert gym.rows(query("audit_packs_to_charge"), {"org": None}) == []

    # ids go in as text and come back in the key's type
    (found,) = gym.rows(query("dashboard_bookings"), {"booking_ids": [str(d["booked"])]})
    assert (found["booking_id"], found["purchase_id"], found["client_id"]) == (
        d["booked"],
        d["live"],
        d["member"],
    )
    packs = gym.rows(
        query("dashboard_packs"), {"pack_ids": [], "client_ids": [str(d["member"])], "limit": 10}
    )
    assert {p["id"] for p in packs} == {d["live"], d["expired"]}
    assert {p["payment_status"] for p in packs} == {None}
    names = gym.rows(query("dashboard_names"), {"ids": [str(d["booked"]), str(d["live"]), "nope"]})
    assert {(n["kind"], n["id"]) for n in names} == {("booking", str(d["booked"])), ("pack", str(d["live"]))}
    kinds = {r["kind"] for r in gym.rows(query("dashboard_search"), {"query": str(d["member"]), "limit": 10})}
    assert "client" in kinds
    assert gym.one("SELECT session_ledger.booking_key('042')") is None
    assert gym.one("SELECT session_ledger.booking_key('42')") == 42


def test_a_gyms_event_names_its_booking_by_an_integer_the_listener_accepts(gym: App) -> None:
    d = _gym_data(gym)
    gym.conn.execute(query("enqueue_bookings"), {"booking_ids": [str(d["booked"])], "source": "replay"})
    message = gym.one(
        "SELECT q.message::text FROM pgmq.q_booking_events q "
        "WHERE q.message ->> 'source' = 'replay' ORDER BY q.msg_id DESC LIMIT 1"
    )
    raw = RawMessage(1, 1, datetime.now(UTC), message)
    verdict = judge(raw, max_payload_bytes=65536, max_reads=5, booking_key="integer")
    assert verdict == Accepted(1, str(d["booked"]), raw.enqueued_at)
    assert gym.one("SELECT session_ledger.event_booking_id(%(m)s::jsonb)", {"m": message}) == d["booked"]
    # a uuid-keyed listener would not take it
    assert not isinstance(judge(raw, max_payload_bytes=65536, max_reads=5), Accepted)


def test_a_given_mapping_sets_the_consuming_statuses_and_a_key_type_change_is_refused(gym: App) -> None:
    assert app_config_statuses(gym) == ["attended", "no_show"], "the install takes the mapping's statuses"
    # A mapping naming other statuses re-renders and moves the config with it.
    narrower = model.parse(GYM_MAPPING.replace('["attended", "no_show"]', '["attended"]'))
    report = migrate(gym.dsn, mapping=narrower)
    assert report.mapping_changed
    assert app_config_statuses(gym) == ["attended"]
    # Another bookings table keyed by bigint: the ledger's rows are keyed by integer, so refused.
    gym.conn.execute("CREATE TABLE gym.bookings_big (LIKE gym.bookings INCLUDING DEFAULTS)")
    gym.conn.execute("ALTER TABLE gym.bookings_big ALTER COLUMN id TYPE bigint")
    moved = model.parse(GYM_MAPPING.replace('table = "gym.bookings"', 'table = "gym.bookings_big"'))
    with pytest.raises(
        MigrateNotPermitted, match=r"key types changed \(recorded: .*booking integer.*now: .*booking bigint"
    ):
        migrate(gym.dsn, mapping=moved)
    assert app_config_statuses(gym) == ["attended"], "a refused migrate changes nothing"


def app_config_statuses(app: App) -> list[str]:
    statuses = app.one("SELECT consuming_statuses FROM session_ledger.config")
    assert isinstance(statuses, list)
    return statuses
