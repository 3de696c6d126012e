"""The guard and the bookings trigger on the example apps' mappings, and what they cost on the coaching app's.

Each example app (examples/gym, examples/marketplace) gets its own database: its tables as
the app has them, then `migrate(dsn, mapping=...)` with its mapping file. On each: a writer
the mapping does not trust is refused wherever a write would move a session, a trusted
writer's write enqueues exactly one event per booking that starts or stops consuming, and
an edit that moves nothing enqueues nothing. What the listener then charges is the
examples' own suites' business; here the queue is read, never drained.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict

from listener.core.db import connect
from listener.devtools.throwaway import create_database, drop_database
from listener.mapping import model
from listener.ops.migrate import migrate

from support import ROOT
from support.world import World

# The gym: its own login (gym_server), integer ids, packages counted down, times on the class.
GYM_SCHEMA = """
CREATE SCHEMA gym;
CREATE TABLE gym.members (id serial PRIMARY KEY, email text NOT NULL UNIQUE);
CREATE TABLE gym.classes (id serial PRIMARY KEY, name text NOT NULL,
    starts_at timestamptz NOT NULL, ends_at timestamptz NOT NULL);
CREATE TABLE gym.packages (id serial PRIMARY KEY, member_id integer NOT NULL REFERENCES gym.members,
    sessions_remaining integer NOT NULL CHECK (sessions_remaining >= 0),
    expires_on timestamptz, is_expired boolean NOT NULL DEFAULT false);
CREATE TABLE gym.bookings (id serial PRIMARY KEY, member_id integer NOT NULL REFERENCES gym.members,
    class_id integer NOT NULL REFERENCES gym.classes, package_id integer REFERENCES gym.packages,
    status text NOT NULL DEFAULT 'booked' CHECK (status IN ('booked', 'attended', 'no_show', 'cancelled')),
    notes text);
-- gym_server is the app's server; gym_other any other role that can write the tables.
-- Roles are cluster-wide: created only when missing, racing another database's setup.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['gym_server', 'gym_other'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
END
$$;
GRANT USAGE ON SCHEMA gym TO gym_server, gym_other;
GRANT ALL ON ALL TABLES IN SCHEMA gym TO gym_server, gym_other;
GRANT ALL ON ALL SEQUENCES IN SCHEMA gym TO gym_server, gym_other;
"""

# The credits marketplace: Supabase's roles, uuid ids, one wallet per user, bookings costing credits.
MARKETPLACE_SCHEMA = """
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                IF r = 'service_role' THEN
                    EXECUTE format('CREATE ROLE %I NOLOGIN BYPASSRLS', r);
                ELSE
                    EXECUTE format('CREATE ROLE %I NOLOGIN', r);
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
END
$$;
CREATE SCHEMA auth;
CREATE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE SET search_path = ''
AS $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
CREATE TABLE public.credit_wallets (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL UNIQUE, credits_balance integer NOT NULL DEFAULT 0 CHECK (credits_balance >= 0));
CREATE TABLE public.bookings (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid NOT NULL,
    class_name text NOT NULL, starts_at timestamptz NOT NULL, ends_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'confirmed' CHECK (status IN ('confirmed', 'completed', 'cancelled')),
    payment_method text NOT NULL CHECK (payment_method IN ('credits', 'card')),
    credits_used integer NOT NULL DEFAULT 1 CHECK (credits_used >= 0));
-- Supabase's defaults: the API roles hold every privilege; RLS keeps users to their own rows.
GRANT ALL ON public.credit_wallets, public.bookings TO anon, authenticated, service_role;
ALTER TABLE public.credit_wallets ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.bookings ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_wallet ON public.credit_wallets FOR SELECT TO authenticated USING (auth.uid() = user_id);
CREATE POLICY own_bookings ON public.bookings FOR ALL TO authenticated
    USING (auth.uid() = user_id) WITH CHECK (auth.uid() = user_id);
"""

_EVENTS = """
WITH taken AS (DELETE FROM pgmq.q_booking_events RETURNING message)
SELECT session_ledger.event_booking_id(t.message) AS id, t.message FROM taken t
"""


def _installed(server: str, schema: str, mapping_file: Path, prefix: str) -> Iterator[str]:
    """A template database: the app's tables, then the ledger migrated with the app's mapping."""
    dsn = create_database(server, prefix=prefix)
    try:
        with connect(dsn, purpose="tests") as conn:
            conn.execute(schema)
        migrate(dsn, mapping=model.load(mapping_file))
    except BaseException:
        drop_database(server, dsn)
        raise
    yield str(conninfo_to_dict(dsn)["dbname"])
    drop_database(server, dsn)


@pytest.fixture(scope="module")
def gym_template(ledger_server: str) -> Iterator[str]:
    yield from _installed(ledger_server, GYM_SCHEMA, ROOT / "examples" / "gym" / "mapping.toml", "guard_gym")


@pytest.fixture(scope="module")
def marketplace_template(ledger_server: str) -> Iterator[str]:
    yield from _installed(
        ledger_server, MARKETPLACE_SCHEMA, ROOT / "examples" / "marketplace" / "mapping.toml", "guard_market"
    )


def _clone(server: str, template: str) -> Iterator[psycopg.Connection[dict[str, object]]]:
    dsn = create_database(server, prefix="guard_test", template=template)
    try:
        with connect(dsn, purpose="tests") as conn:
            yield conn
    finally:
        drop_database(server, dsn)


@pytest.fixture
def gym(ledger_server: str, gym_template: str) -> Iterator[psycopg.Connection[dict[str, object]]]:
    """A connection, as the ledger's owner, to a fresh copy of the installed gym."""
    yield from _clone(ledger_server, gym_template)


@pytest.fixture
def marketplace(
    ledger_server: str, marketplace_template: str
) -> Iterator[psycopg.Connection[dict[str, object]]]:
    """A connection, as the ledger's owner, to a fresh copy of the installed marketplace."""
    yield from _clone(ledger_server, marketplace_template)


def _events(conn: psycopg.Connection[dict[str, object]]) -> list[object]:
    """The bookings the queued events name, each as often as it is named; the queue is emptied."""
    rows = conn.execute(_EVENTS).fetchall()
    assert all(r["id"] is not None for r in rows), rows
    return sorted((r["id"] for r in rows), key=str)


def _as(
    conn: psycopg.Connection[dict[str, object]],
    role: str,
    statement: str,
    params: list[object],
    uid: object = None,
) -> None:
    """Run one statement as `role` (and signed in as `uid`), in its own transaction."""
    with conn.transaction():
        conn.execute("SELECT set_config('role', %s, true)", [role])
        if uid is not None:
            conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", [str(uid)])
        conn.execute(statement, params)


# --- the gym: trusted_writers, only gym_server may move a session --------------------------


def _gym_world(conn: psycopg.Connection[dict[str, object]], bookings: int) -> tuple[int, list[int]]:
    """One member with a package of 10, and `bookings` booked classes on it, an hour from now."""
    member = conn.execute("INSERT INTO gym.members (email) VALUES ('m@gym.test') RETURNING id").fetchone()
    assert member is not None
    package = conn.execute(
        "INSERT INTO gym.packages (member_id, sessions_remaining) VALUES (%s, 10) RETURNING id",
        [member["id"]],
    ).fetchone()
    assert package is not None
    ids = [
        row["id"]
        for row in conn.execute(
            """WITH c AS (INSERT INTO gym.classes (name, starts_at, ends_at)
                          SELECT 'class ' || g, now() + interval '1 hour', now() + interval '2 hours'
                          FROM generate_series(1, %s) AS g RETURNING id)
               INSERT INTO gym.bookings (member_id, class_id, package_id)
               SELECT %s, c.id, %s FROM c ORDER BY c.id RETURNING id""",
            [bookings, member["id"], package["id"]],
        ).fetchall()
    ]
    _events(conn)
    return int(str(package["id"])), [int(str(i)) for i in ids]


def test_gym_a_role_that_is_not_the_server_may_not_mark_a_booking_attended(
    gym: psycopg.Connection[dict[str, object]],
) -> None:
    _, [booking, other] = _gym_world(gym, 2)
    for status in ("attended", "no_show"):
        with pytest.raises(errors.InsufficientPrivilege, match="may not change which session pack"):
            _as(gym, "gym_other", "UPDATE gym.bookings SET status = %s WHERE id = %s", [status, booking])
    # nor take back a session the server marked, nor delete the booking that holds it
    _as(gym, "gym_server", "UPDATE gym.bookings SET status = 'attended' WHERE id = %s", [other])
    assert _events(gym) == [other]
    with pytest.raises(errors.InsufficientPrivilege):
        _as(gym, "gym_other", "UPDATE gym.bookings SET status = 'cancelled' WHERE id = %s", [other])
    with pytest.raises(errors.InsufficientPrivilege):
        _as(gym, "gym_other", "DELETE FROM gym.bookings WHERE id = %s", [other])
    with pytest.raises(errors.InsufficientPrivilege, match="may not truncate"):
        _as(gym, "gym_other", "TRUNCATE gym.bookings CASCADE", [])
    assert _events(gym) == []


def test_gym_the_servers_write_enqueues_one_event_per_booking_that_starts_or_stops_consuming(
    gym: psycopg.Connection[dict[str, object]],
) -> None:
    package, ids = _gym_world(gym, 7)
    starts, stops, both, neither, unpaid, id_moved = ids[0:2], ids[2:3], ids[3:4], ids[4:5], ids[5:6], ids[6]
    gym.execute("UPDATE gym.bookings SET status = 'attended' WHERE id = ANY (%s)", [stops + both])
    gym.execute("UPDATE gym.bookings SET package_id = NULL WHERE id = ANY (%s)", [unpaid])
    _events(gym)
    # one statement: two start consuming, one stops, one goes attended -> no_show (still
    # consuming the same package), one is cancelled unused, one without a package attends
    _as(
        gym,
        "gym_server",
        """UPDATE gym.bookings b SET status = v.status
           FROM (VALUES (%s, 'attended'), (%s, 'no_show'), (%s, 'cancelled'), (%s, 'no_show'),
                        (%s, 'cancelled'), (%s, 'attended')) AS v(id, status)
           WHERE b.id = v.id::int""",
        [starts[0], starts[1], stops[0], both[0], neither[0], unpaid[0]],
    )
    assert _events(gym) == sorted(starts + stops)
    # a new booking inserted attended consumes from the start; deleting it stops it
    row = gym.execute(
        """INSERT INTO gym.bookings (member_id, class_id, package_id, status)
           SELECT b.member_id, b.class_id, b.package_id, 'attended' FROM gym.bookings b WHERE b.id = %s
           RETURNING id""",
        [id_moved],
    ).fetchone()
    assert row is not None
    assert _events(gym) == [row["id"]]
    _as(gym, "gym_server", "DELETE FROM gym.bookings WHERE id = %s", [row["id"]])
    assert _events(gym) == [row["id"]]
    # the package itself moved nothing the ledger holds: no event from the pack trigger
    _as(gym, "gym_server", "UPDATE gym.packages SET sessions_remaining = 9 WHERE id = %s", [package])
    assert _events(gym) == []


def test_gym_a_notes_edit_enqueues_nothing_whoever_writes_it(
    gym: psycopg.Connection[dict[str, object]],
) -> None:
    _, [booked, attended] = _gym_world(gym, 2)
    _as(gym, "gym_server", "UPDATE gym.bookings SET status = 'attended' WHERE id = %s", [attended])
    _events(gym)
    for role in ("gym_server", "gym_other"):
        _as(gym, role, "UPDATE gym.bookings SET notes = %s WHERE id = ANY (%s)", [role, [booked, attended]])
        assert _events(gym) == []
    # moving a booking to another class moves its session's times (they live on the class): the
    # guard judges that as it judges an app's own times
    later = gym.execute(
        "INSERT INTO gym.classes (name, starts_at, ends_at)"
        " VALUES ('later', now() + interval '1 day', now() + interval '1 day 1 hour') RETURNING id"
    ).fetchone()
    assert later is not None
    with pytest.raises(errors.InsufficientPrivilege):
        _as(gym, "gym_other", "UPDATE gym.bookings SET class_id = %s WHERE id = %s", [later["id"], booked])
    _as(gym, "gym_server", "UPDATE gym.bookings SET class_id = %s WHERE id = %s", [later["id"], booked])
    assert _events(gym) == []


# --- the marketplace: supabase, no membership function: only service_role moves credits ----


def _market_world(
    conn: psycopg.Connection[dict[str, object]], user: object, methods: list[str]
) -> list[object]:
    """A wallet of 10 credits for `user`, and one future booking per payment method given."""
    conn.execute("INSERT INTO public.credit_wallets (user_id, credits_balance) VALUES (%s, 10)", [user])
    ids = [
        row["id"]
        for row in conn.execute(
            """INSERT INTO public.bookings (user_id, class_name, starts_at, ends_at, payment_method)
               SELECT %s, 'yoga', now() + interval '1 day', now() + interval '1 day 1 hour', m
               FROM unnest(%s::text[]) WITH ORDINALITY AS u(m, n) ORDER BY u.n RETURNING id""",
            [user, methods],
        ).fetchall()
    ]
    _events(conn)
    return ids


def test_marketplace_a_user_may_not_complete_their_own_credits_booking(
    marketplace: psycopg.Connection[dict[str, object]],
) -> None:
    conn = marketplace
    user = conn.execute("SELECT gen_random_uuid() AS u").fetchone()["u"]  # type: ignore[index]
    credits, card = _market_world(conn, user, ["credits", "card"])
    with pytest.raises(errors.InsufficientPrivilege, match="may not change which session pack"):
        _as(
            conn,
            "authenticated",
            "UPDATE public.bookings SET status = 'completed' WHERE id = %s",
            [credits],
            user,
        )
    # nor turn a card booking into a credits one once completed
    _as(conn, "authenticated", "UPDATE public.bookings SET status = 'completed' WHERE id = %s", [card], user)
    with pytest.raises(errors.InsufficientPrivilege):
        _as(
            conn,
            "authenticated",
            "UPDATE public.bookings SET payment_method = 'credits' WHERE id = %s",
            [card],
            user,
        )
    # what moves no credits is theirs: a card booking completed, a class renamed, a booking cancelled
    _as(
        conn,
        "authenticated",
        "UPDATE public.bookings SET class_name = 'pilates' WHERE user_id = %s",
        [user],
        user,
    )
    _as(
        conn,
        "authenticated",
        "UPDATE public.bookings SET status = 'cancelled' WHERE id = %s",
        [credits],
        user,
    )
    assert _events(conn) == []


def test_marketplace_service_role_completions_enqueue_one_event_per_credits_booking(
    marketplace: psycopg.Connection[dict[str, object]],
) -> None:
    conn = marketplace
    user = conn.execute("SELECT gen_random_uuid() AS u").fetchone()["u"]  # type: ignore[index]
    ids = _market_world(conn, user, ["credits", "credits", "card"])
    credits = ids[:2]
    _as(conn, "service_role", "UPDATE public.bookings SET status = 'completed' WHERE user_id = %s", [user])
    assert _events(conn) == sorted(credits, key=str)
    # a repeat of the completion changes nothing; a cancel of one completed credits booking releases it
    _as(conn, "service_role", "UPDATE public.bookings SET status = 'completed' WHERE user_id = %s", [user])
    assert _events(conn) == []
    _as(
        conn, "service_role", "UPDATE public.bookings SET status = 'cancelled' WHERE id = ANY (%s)", [ids[1:]]
    )
    assert _events(conn) == [ids[1]]
    _as(conn, "service_role", "UPDATE public.bookings SET class_name = 'notes' WHERE user_id = %s", [user])
    assert _events(conn) == []


def test_marketplace_a_user_may_not_change_what_their_own_booking_costs(
    marketplace: psycopg.Connection[dict[str, object]],
) -> None:
    conn = marketplace
    user = conn.execute("SELECT gen_random_uuid() AS u").fetchone()["u"]  # type: ignore[index]
    future, past, card = _market_world(conn, user, ["credits", "credits", "card"])
    conn.execute(
        "UPDATE public.bookings SET starts_at = now() - interval '2 hours', ends_at = now() - interval '1 hour'"
        " WHERE id = %s",
        [past],
    )
    reprice = "UPDATE public.bookings SET credits_used = 0 WHERE id = %s"
    # a past confirmed credits booking the cron has yet to complete, and one next week: the price is
    # what the wallet pays, so it is the wallet's business either way
    for booking in (past, future):
        with pytest.raises(errors.InsufficientPrivilege, match="nor how much"):
            _as(conn, "authenticated", reprice, [booking], user)
    # a card booking names no wallet: its price is not the ledger's to guard
    _as(conn, "authenticated", reprice, [card], user)
    costs = conn.execute(
        "SELECT id, credits_used FROM public.bookings WHERE id = ANY (%s)", [[future, past]]
    ).fetchall()
    assert {r["credits_used"] for r in costs} == {1}
    assert _events(conn) == []


def test_marketplace_a_changed_amount_enqueues_an_event_while_it_consumes(
    marketplace: psycopg.Connection[dict[str, object]],
) -> None:
    conn = marketplace
    user = conn.execute("SELECT gen_random_uuid() AS u").fetchone()["u"]  # type: ignore[index]
    completed, _upcoming, card = _market_world(conn, user, ["credits", "credits", "card"])
    _as(
        conn,
        "service_role",
        "UPDATE public.bookings SET status = 'completed' WHERE id = ANY (%s)",
        [[completed, card]],
    )
    assert _events(conn) == [completed]
    # only the completed credits booking consumes: its ledger row converges to its new amount
    _as(conn, "service_role", "UPDATE public.bookings SET credits_used = 3 WHERE user_id = %s", [user])
    assert _events(conn) == [completed]
    _as(conn, "service_role", "UPDATE public.bookings SET credits_used = 3 WHERE user_id = %s", [user])
    assert _events(conn) == []


# --- the coaching app: the canonical rows cost nothing --------------------------------------


def test_the_triggers_statements_read_the_transition_tables_with_no_subquery_left(world: World) -> None:
    """The canonical subqueries over new_rows/old_rows are pulled up: no Subquery Scan of them in any plan."""
    conn = world.conn
    pack = world.pack(sessions_total=5)
    [booking] = world.bookings(pack, count=1)
    plans: list[str] = []
    conn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
    with conn.transaction(force_rollback=True):
        conn.execute("LOAD 'auto_explain'")
        conn.execute("SET LOCAL auto_explain.log_min_duration = 0")
        conn.execute("SET LOCAL auto_explain.log_nested_statements = on")
        conn.execute("SET LOCAL client_min_messages = log")
        # a signed-in member: the guard's statement runs as well as the events'
        conn.execute("SELECT set_config('role', 'authenticated', true)")
        conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", [str(world.org.trainer_user_id)])
        conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [booking])
        conn.execute("UPDATE public.client_purchases SET sessions_total = 6 WHERE id = %s", [pack])
    over_transitions = [p for p in plans if "Named Tuplestore Scan" in p]
    # the guard's pairing, the events' (bookings), and the pack trigger's
    assert len(over_transitions) >= 3, plans
    # (an INSERT's own SELECT shows as Subquery Scan on "*SELECT*"; the canonical rows are n and o)
    left = [p for p in over_transitions if re.search(r"Subquery Scan on [no](_\d+)?\s", p)]
    assert not left, "\n\n".join(left)
