"""The mapping's check against the catalog: each thing broken gives one line naming its key, and
`listener migrate` refuses before anything changes; `listener map` proposes the mappings back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from listener.core.db import Conn, connect
from listener.core.sql_files import demo_schema
from listener.devtools.app_schema import apply_sql_file
from listener.devtools.throwaway import create_database, drop_database
from listener.errors import HostSchemaMissing
from listener.mapping import model
from listener.ops.mapping_check import check, problems
from listener.ops.mapping_propose import propose
from listener.ops.migrate import migrate

from support import ROOT
from support.mapped_apps import GYM_MAPPING as GYM
from support.mapped_apps import MARKET_MAPPING as MARKETPLACE
from support.world import run_cli

GYM_SQL = """
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
DO $$ BEGIN CREATE ROLE gym_server NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
"""

MARKETPLACE_SQL = """
CREATE SCHEMA IF NOT EXISTS auth;
CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$ SELECT NULL::uuid $$;
CREATE TABLE public.credit_wallets (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL UNIQUE, credits_balance integer NOT NULL DEFAULT 0 CHECK (credits_balance >= 0));
CREATE TABLE public.bookings (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid NOT NULL,
    class_name text NOT NULL, starts_at timestamptz NOT NULL, ends_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'confirmed' CHECK (status IN ('confirmed', 'completed', 'cancelled')),
    payment_method text NOT NULL CHECK (payment_method IN ('credits', 'card')),
    credits_used integer NOT NULL DEFAULT 1 CHECK (credits_used >= 0));
"""


@pytest.fixture
def blank_dsn(ledger_server: str) -> Iterator[str]:
    dsn = create_database(ledger_server, prefix="ledger_mapping")
    yield dsn
    drop_database(ledger_server, dsn)


@pytest.fixture
def gym(blank_dsn: str) -> Iterator[Conn]:
    with connect(blank_dsn) as conn:
        conn.execute(GYM_SQL)
        yield conn


@pytest.fixture
def market(blank_dsn: str) -> Iterator[Conn]:
    with connect(blank_dsn) as conn:
        conn.execute(MARKETPLACE_SQL)
        yield conn


def _gym(**changes: str) -> model.Mapping:
    """The gym's mapping with `section__key="TOML value"` lines replaced or added."""
    return model.parse(_changed(GYM, changes))


def _market(**changes: str) -> model.Mapping:
    return model.parse(_changed(MARKETPLACE, changes))


def _changed(text: str, changes: dict[str, str]) -> str:
    """The TOML with `section__key` set in its section (booking_session for [booking.session])."""
    lines = text.strip().splitlines()
    for name, value in changes.items():
        section, key = name.split("__")
        header = "[booking.session]" if section == "booking_session" else f"[{section}]"
        start = lines.index(header) + 1
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
        body = [ln for ln in lines[start:end] if not ln.startswith(f"{key} =")]
        lines = [*lines[:start], f"{key} = {value}", *body, *lines[end:]]
    return "\n".join(lines) + "\n"


def test_the_example_apps_and_the_coaching_app_fit_their_mappings(gym: Conn, blank_dsn: str) -> None:
    assert check(gym, _gym()).problems == [] and check(gym, _gym()).warnings == []
    with connect(blank_dsn) as conn:
        conn.execute(demo_schema())
        assert problems(conn, model.default()) == []


def test_marketplace_fits(market: Conn) -> None:
    assert problems(market, _market()) == []


def test_a_missing_column_names_its_key_and_the_columns_there_are(gym: Conn) -> None:
    assert problems(gym, _gym(pack__remaining='"sessions_left"')) == [
        "pack.remaining: column gym.packages.sessions_left does not exist "
        "(columns: id, member_id, sessions_remaining, expires_on, is_expired)"
    ]


def test_missing_tables_name_the_tables_there_are(gym: Conn) -> None:
    assert problems(gym, _gym(booking_session__table='"gym.lessons"')) == [
        "booking.session.table: table gym.lessons does not exist "
        "(tables in gym: bookings, classes, members, packages)"
    ]
    assert problems(gym, _gym(pack__table='"shop.packages"')) == [
        "pack.table: table shop.packages does not exist (there is no schema shop)"
    ]


def test_a_view_is_not_a_bookings_table(gym: Conn) -> None:
    gym.execute("CREATE VIEW gym.booking_view AS SELECT * FROM gym.bookings")
    assert problems(gym, _gym(booking__table='"gym.booking_view"')) == [
        "booking.table: gym.booking_view is a view: the ledger needs a table here "
        "(it puts triggers on it, updates it)"
    ]


def test_key_types(gym: Conn) -> None:
    gym.execute("ALTER TABLE gym.bookings DROP CONSTRAINT bookings_member_id_fkey")
    gym.execute("ALTER TABLE gym.packages DROP CONSTRAINT packages_member_id_fkey")
    gym.execute("ALTER TABLE gym.bookings ALTER COLUMN member_id TYPE numeric")
    gym.execute("ALTER TABLE gym.packages ALTER COLUMN member_id TYPE numeric")
    assert problems(gym, _gym()) == [
        "booking.client: column gym.bookings.member_id is numeric: keys must be uuid, integer, bigint or text",
        "pack.client: column gym.packages.member_id is numeric: keys must be uuid, integer, bigint or text",
    ]


def test_the_pack_column_has_the_pack_ids_type_and_a_missing_foreign_key_is_a_warning(gym: Conn) -> None:
    gym.execute("ALTER TABLE gym.bookings DROP CONSTRAINT bookings_package_id_fkey")
    found = check(gym, _gym())
    assert found.problems == []
    assert found.warnings == [
        "pack.column: no foreign key from gym.bookings.package_id to gym.packages.id: a booking naming a pack "
        "that does not exist is recorded unfunded ('pack does not exist')"
    ]
    gym.execute("ALTER TABLE gym.bookings ALTER COLUMN package_id TYPE bigint")
    assert problems(gym, _gym()) == [
        "pack.column: column gym.bookings.package_id is bigint, but pack.id (gym.packages.id) is integer: "
        "they must have the same type"
    ]


def test_decimal_balances_and_amounts_are_refused(market: Conn) -> None:
    market.execute("ALTER TABLE public.credit_wallets ALTER COLUMN credits_balance TYPE numeric(10, 2)")
    market.execute("ALTER TABLE public.bookings ALTER COLUMN credits_used TYPE numeric")
    assert problems(market, _market()) == [
        "pack.remaining: column public.credit_wallets.credits_balance is numeric: decimal amounts are not "
        "supported: charges are whole sessions or credits",
        "pack.amount_column: column public.bookings.credits_used is numeric: decimal amounts are not "
        "supported: charges are whole sessions or credits",
    ]
    market.execute("ALTER TABLE public.bookings DROP CONSTRAINT bookings_credits_used_check")
    market.execute("ALTER TABLE public.bookings ALTER COLUMN credits_used TYPE text")
    assert problems(market, _market())[1] == (
        "pack.amount_column: column public.bookings.credits_used is text: it must be an integer"
    )


def test_times_without_a_zone_are_refused(gym: Conn) -> None:
    gym.execute("ALTER TABLE gym.classes ALTER COLUMN starts_at TYPE timestamp")
    gym.execute("ALTER TABLE gym.packages ALTER COLUMN expires_on TYPE date")
    assert problems(gym, _gym()) == [
        "booking.session.start: column gym.classes.starts_at is timestamp without time zone: times must be "
        "timestamptz (ALTER TABLE gym.classes ALTER COLUMN starts_at TYPE timestamptz USING starts_at AT TIME "
        "ZONE 'UTC', if they were written in UTC)",
        "pack.expires: column gym.packages.expires_on is date: times must be timestamptz (ALTER TABLE "
        "gym.packages ALTER COLUMN expires_on TYPE timestamptz USING (expires_on + 1)::timestamp AT TIME ZONE "
        "'UTC', for the end of the last valid day in UTC)",
    ]
    # and the fix it names is one the check then accepts
    gym.execute(
        "ALTER TABLE gym.packages ALTER COLUMN expires_on TYPE timestamptz "
        "USING (expires_on + 1)::timestamp AT TIME ZONE 'UTC'"
    )
    assert problems(gym, _gym())[1:] == []


def test_status_is_text_or_an_enum_holding_the_statuses(gym: Conn) -> None:
    gym.execute("ALTER TABLE gym.bookings DROP CONSTRAINT bookings_status_check")
    gym.execute("ALTER TABLE gym.bookings ALTER COLUMN status DROP DEFAULT")
    gym.execute("CREATE TYPE gym.booking_status AS ENUM ('booked', 'attended', 'cancelled')")
    gym.execute(
        "ALTER TABLE gym.bookings ALTER COLUMN status TYPE gym.booking_status USING status::gym.booking_status"
    )
    assert problems(gym, _gym()) == [
        "booking.consuming_statuses: 'no_show' is not a value of gym.booking_status "
        "(values: booked, attended, cancelled)"
    ]
    gym.execute("ALTER TABLE gym.bookings ALTER COLUMN status TYPE integer USING 0")
    assert problems(gym, _gym()) == [
        "booking.status: column gym.bookings.status is integer: a status must be text, varchar or an enum"
    ]


def test_fragments_compile_as_the_ledger_runs_them(gym: Conn, market: Conn) -> None:
    assert problems(gym, _gym(pack__unusable_when='"{row}.is_gone"')) == [
        "pack.unusable_when: does not compile over gym.packages (search_path pg_catalog, pg_temp): "
        "column r.is_gone does not exist"
    ]
    assert problems(gym, _gym(pack__unusable_when='"{row}.sessions_remaining"')) == [
        "pack.unusable_when: is integer, not boolean: it must be a condition on the row"
    ]
    assert problems(gym, _gym(pack__unusable_reason='"{row}.sessions_remaining + 1"')) == [
        "pack.unusable_reason: is integer, not text: it must be the reason, as text"
    ]
    # The app's own function, unqualified, is not found where the ledger's functions run.
    gym.execute(
        "CREATE FUNCTION public.lapsed(p gym.packages) RETURNS boolean LANGUAGE sql AS 'SELECT false'"
    )
    [line] = problems(gym, _gym(pack__unlimited_when='"lapsed({row})"'))
    assert line.startswith(
        "pack.unlimited_when: does not compile over gym.packages (search_path pg_catalog, pg_temp): function lapsed("
    )
    assert problems(gym, _gym(pack__unlimited_when='"public.lapsed({row})"')) == []
    assert (
        problems(
            market,
            _market(booking__consumes_when="\"{row}.payment_method = 'credits' AND {row}.credits_used > 0\""),
        )
        == []
    )


def test_a_fragment_cannot_write(gym: Conn) -> None:
    gym.execute("CREATE TABLE public.written (n int)")
    gym.execute(
        "CREATE FUNCTION public.writes() RETURNS boolean LANGUAGE sql VOLATILE "
        "AS 'INSERT INTO public.written VALUES (1) RETURNING true'"
    )
    # Planned, never run: and were it run, the transaction is read-only and rolled back.
    assert problems(gym, _gym(pack__unlimited_when='"public.writes() AND (SELECT public.writes())"')) == []
    assert gym.execute("SELECT count(*) AS n FROM public.written").fetchone() == {"n": 0}
    assert gym.execute("SHOW search_path").fetchone() != {"search_path": "pg_catalog, pg_temp"}


def test_functions_need_the_keys_types(blank_dsn: str) -> None:
    with connect(blank_dsn) as conn:
        conn.execute(demo_schema())
        conn.execute("DROP FUNCTION public.is_org_member(uuid) CASCADE")
        conn.execute(
            "CREATE FUNCTION public.is_org_member(_org text) RETURNS boolean LANGUAGE sql AS 'SELECT true'"
        )
        conn.execute("DROP FUNCTION public.release_session(uuid)")
        conn.execute(
            "CREATE FUNCTION public.release_session(p uuid) RETURNS boolean LANGUAGE sql AS 'SELECT true'"
        )
        conn.execute("DROP FUNCTION public.use_session(uuid)")
        assert problems(conn, model.default()) == [
            "access.membership_function: function public.is_org_member(uuid) does not exist "
            "(there is is_org_member(text))",
            "legacy.use: function public.use_session(uuid) does not exist (no function of that name)",
            "legacy.release: function public.release_session(uuid) returns boolean, not integer",
        ]


def test_by_client_needs_one_pack_per_client(market: Conn) -> None:
    market.execute("ALTER TABLE public.credit_wallets DROP CONSTRAINT credit_wallets_user_id_key")
    market.execute("CREATE UNIQUE INDEX ON public.credit_wallets (user_id) WHERE credits_balance > 0")
    assert problems(market, _market()) == [
        "pack.client: pack.find = 'by_client' needs one pack per client: public.credit_wallets.user_id has no "
        "unique constraint or index of its own"
    ]


def test_roles_must_exist(gym: Conn) -> None:
    assert problems(gym, _gym(access__trusted_roles='["gym_server", "no_such_role_q7"]')) == [
        "access.trusted_roles: role no_such_role_q7 does not exist"
    ]


def test_a_membership_function_is_asked_only_of_members_of_authenticated(gym: Conn) -> None:
    """The gym's server role as the signed-in users' role: the function would never be asked of it."""
    gym.execute(
        """DO $$ BEGIN CREATE ROLE authenticated NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"""
    )
    gym.execute("CREATE FUNCTION gym.may_mark(uuid) RETURNS boolean LANGUAGE sql AS 'SELECT true'")
    signed_in = {
        "access__mode": '"supabase"',
        "access__api_roles": '["gym_server"]',
        "access__trusted_roles": "[]",
        "access__membership_function": '"gym.may_mark"',
    }
    found = check(gym, _gym(**signed_in))
    assert found.problems == []
    assert found.warnings == [
        "access.membership_function: none of access.api_roles (gym_server) is a member of role "
        "authenticated, the only role the ledger asks it of: their writes that move a session are refused "
        "(GRANT authenticated TO the role your signed-in users write as)"
    ]
    gym.execute("CREATE ROLE gym_web_q7 NOLOGIN IN ROLE authenticated")
    try:
        assert check(gym, _gym(**{**signed_in, "access__api_roles": '["gym_web_q7"]'})).warnings == []
    finally:
        gym.execute("DROP ROLE gym_web_q7")


def test_migrate_refuses_before_anything_changes(gym: Conn, blank_dsn: str) -> None:
    gym.execute("ALTER TABLE gym.packages ALTER COLUMN sessions_remaining TYPE numeric")
    mapping = _gym(booking__client='"member"')
    with pytest.raises(HostSchemaMissing) as err:
        migrate(blank_dsn, mapping=mapping)
    assert str(err.value).splitlines() == [
        "the app's schema is incomplete: missing gym.bookings columns member (booking.client) "
        "(check the mapping's names against the database)",
        "pack.remaining: column gym.packages.sessions_remaining is numeric: decimal amounts are not "
        "supported: charges are whole sessions or credits",
    ]
    gym.execute("ALTER TABLE gym.packages ALTER COLUMN sessions_remaining TYPE integer")
    with pytest.raises(HostSchemaMissing) as err:
        migrate(blank_dsn, mapping=_gym(pack__expires='"is_expired"'))
    assert str(err.value).splitlines() == [
        "the app's schema does not fit the mapping:",
        "pack.expires: column gym.packages.is_expired is boolean: times must be timestamptz",
    ]
    assert gym.execute("SELECT to_regnamespace('session_ledger') IS NULL AS untouched").fetchone() == {
        "untouched": True
    }


def test_map_proposes_the_coaching_apps_mapping(blank_dsn: str) -> None:
    with connect(blank_dsn) as conn:
        conn.execute(demo_schema())
        text = propose(conn)
    assert "# guess: " in text
    assert model.parse(text) == model.default()


def test_map_proposes_the_gyms_mapping(gym: Conn) -> None:
    proposed = model.parse(propose(gym))
    expected = _gym()
    assert proposed.booking == expected.booking
    assert proposed.pack == expected.pack
    assert proposed.access.mode == "trusted_writers" and "gym_server" in proposed.access.trusted_roles


def test_map_proposes_the_marketplaces_mapping(market: Conn) -> None:
    proposed = model.parse(propose(market))
    expected = _market()
    assert proposed.booking == expected.booking
    assert proposed.pack == expected.pack
    assert proposed.completion == expected.completion
    assert (proposed.access.mode, proposed.access.trusted_roles) == ("supabase", ("service_role",))


def test_map_proposes_the_music_schools_mapping(blank_dsn: str) -> None:
    """A state enum, *_start and *_end times, lessons_taken of lessons_bought, a branch as the
    organisation, an unlimited flag and a refunded_at stamp: each guessed, and the trusted role
    is the one that may update both tables, not every role named for the schema."""
    school = ROOT / "examples" / "music_school"
    apply_sql_file(blank_dsn, school / "schema.sql")
    with connect(blank_dsn) as conn:
        text = propose(conn)
    proposed, expected = model.parse(text), model.load(school / "mapping.toml")
    assert proposed.booking == expected.booking
    assert proposed.pack == expected.pack.model_copy(update={"unusable_reason": "'credit bundle refunded'"})
    assert proposed.access.mode == "trusted_writers" and proposed.access.trusted_roles == ("school_staff",)
    assert "# school.can_manage_branch looks like a membership check" in text


def test_map_says_once_when_it_finds_nothing(blank_dsn: str) -> None:
    result = run_cli("map", "--dsn", blank_dsn)
    assert result.returncode == 1
    assert "*_taken" in result.stdout, "the proposal says what it looks for"
    assert result.stderr.splitlines() == [
        "listener map: No bookings table found (a status column and a start time) pointing at a packs "
        "table (an integer balance): write the mapping by hand from docs/mapping.md."
    ]


def test_the_cli_map_and_migrate_with_a_mapping(gym: Conn, blank_dsn: str, tmp_path: Path) -> None:
    result = run_cli("map", "--dsn", blank_dsn)
    assert result.returncode == 0, result.stderr
    assert model.parse(result.stdout).pack.table == "gym.packages"

    bad = tmp_path / "bad.toml"
    bad.write_text(_changed(GYM, {"pack__find": '"by_org"', "access__mode": '"open"'}))
    result = run_cli("migrate", "--dsn", blank_dsn, "--mapping", str(bad))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"listener migrate: {bad}: pack.find: Input should be 'column' or 'by_client'",
        f"{bad}: access.mode: Input should be 'supabase' or 'trusted_writers'",
    ]
    result = run_cli("migrate", "--dsn", blank_dsn, "--mapping", str(tmp_path / "none.toml"))
    assert result.returncode == 2
    assert "cannot read the mapping" in result.stderr
