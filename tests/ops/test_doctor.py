"""`listener doctor`: each check reports the real app's weak spots on a real database, and stops once fixed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from listener.core.db import connect
from listener.core.sql_files import demo_schema, query
from listener.devtools.throwaway import create_database, drop_database
from listener.errors import ConfigError
from listener.mapping.model import default as default_mapping
from listener.ops.doctor import (
    EXPECTED_GRANTS,
    Finding,
    Report,
    api_role_exposure,
    check_pooler,
    doctor,
    dsn_pooler_findings,
    judge_bookings_policies,
    judge_definer_search_paths,
    member_scoped,
    probe_pool_mode,
    security_invoker,
)
from listener.ops.doctor.tables import tables_of
from listener.testing import app_data
from listener.testing.ledger import Ledger
from listener.testing.supabase import SupabaseAppDb

from support import SUPPORT, roles
from support.world import run_cli

APP_SQL = (SUPPORT / "sql" / "app_booking_policies.sql").read_text(encoding="utf-8")
INSERT_POLICY = '"bookings insert by client" ON public.bookings'
UPDATE_POLICY = '"bookings update by client" ON public.bookings'
# The listener's own role: the tests connect as a superuser that owns everything, so without
# --listener-dsn these are not checked.
ROLE_CHECKS = {"listener_superuser", "listener_owner"}

# (check, object) -> severity, for the state tests/sql/app_booking_policies.sql creates.
EXPECTED = {
    ("bookings_policy_not_member_scoped", INSERT_POLICY): "high",
    ("bookings_policy_not_member_scoped", UPDATE_POLICY): "high",
    ("view_without_security_invoker", "public.upcoming_bookings"): "high",
    ("view_without_security_invoker", "public.next_bookings"): "high",
    ("security_definer_search_path", "public.pack_balance(uuid)"): "high",
    ("security_definer_search_path", "public.pack_used(uuid)"): "high",
    # Supabase's default privileges, re-granted after migrate revoked them.
    ("app_table_privilege", "public.bookings"): "high",
    ("api_role_privilege", "pgmq.q_booking_events"): "high",
    ("api_role_privilege", "pgmq.q_booking_events_msg_id_seq"): "high",
    ("api_role_privilege", "pgmq"): "high",
    ("api_role_privilege", "session_ledger.charges"): "high",
    ("api_role_privilege", "session_ledger.status()"): "high",
    ("api_role_privilege", "pgmq.meta"): "medium",
    ("api_role_privilege", "session_ledger"): "medium",
    ("pgmq_public_exposed", "pgmq_public"): "high",
}

# The coaching app's tables, as the doctor takes them from a recorded mapping or the default one.
COACHING = tables_of(default_mapping())


def _keyed(findings: list[Finding]) -> dict[tuple[str, str], Finding]:
    keyed = {(f.check, f.object): f for f in findings if f.check not in ROLE_CHECKS}
    assert len(keyed) == len([f for f in findings if f.check not in ROLE_CHECKS]), findings
    return keyed


@pytest.fixture
def app_dsn(ledger_dsn: str) -> str:
    """A migrated database carrying the real app's policies, view, function and careless grants."""
    with connect(ledger_dsn, purpose="tests") as conn:
        # A guard the ledger may install later must not hide the unguarded verdict: disable it here.
        for row in conn.execute(query("doctor_guard_trigger_events"), COACHING.params).fetchall():
            conn.execute(
                sql.SQL("ALTER TABLE public.bookings DISABLE TRIGGER {}").format(sql.Identifier(row["name"]))
            )
        conn.execute(APP_SQL)
    return ledger_dsn


@pytest.fixture
def listener_login(ledger_server: str) -> Iterator[str]:
    """The name of a login role that is only a member of session_ledger_listener, as the listener should run."""
    with roles.listener_login(ledger_server) as dsn:
        yield str(conninfo_to_dict(dsn)["user"])


def test_every_check_reports_the_app_and_goes_quiet_once_fixed(app_dsn: str, listener_login: str) -> None:
    report = doctor(app_dsn)
    found = _keyed(report.findings)
    assert {k: f.severity for k, f in found.items()} == EXPECTED
    assert report.ledger_installed and report.has_high
    # Run as the owner: the listener checks are skipped and said to be, never findings.
    assert not any(f.check in ROLE_CHECKS for f in report.findings)
    assert {n.check for n in report.not_checked} == ROLE_CHECKS
    assert [f.severity for f in report.findings] == sorted(
        (f.severity for f in report.findings), key=["high", "medium", "low"].index
    )

    # The client policies: every charging column is theirs to write, and the fix names the guard.
    update = found[("bookings_policy_not_member_scoped", UPDATE_POLICY)]
    assert "client_id, org_id, purchase_id, status" in update.message
    assert "guard" in update.fix and "WITH CHECK" in update.fix
    # The org-member policy (ALL, USING only) and the read policies are not findings.
    assert not any("org members" in f.object for f in report.findings)
    assert (
        found[("api_role_privilege", "session_ledger")].fix
    ) == "REVOKE CREATE ON SCHEMA session_ledger FROM service_role"
    assert "anon" in found[("view_without_security_invoker", "public.upcoming_bookings")].message
    assert found[("api_role_privilege", "pgmq.q_booking_events_msg_id_seq")].message == (
        "authenticated holds USAGE on sequence pgmq.q_booking_events_msg_id_seq"
    )

    # --json lists the same findings; a high one makes the exit code 3.
    result = run_cli("doctor", "--dsn", app_dsn, "--json")
    assert result.returncode == 3, result.stderr
    document = json.loads(result.stdout)
    assert document["ledger_installed"] is True
    listed = {(f["check"], f["object"]): f["severity"] for f in document["findings"]}
    assert listed == EXPECTED
    assert set(document["findings"][0]) == {"check", "severity", "object", "message", "fix"}
    assert {n["check"] for n in document["not_checked"]} == ROLE_CHECKS

    # The ledger's guard (re-enabled) makes the loose policies medium: the money is guarded,
    # the policy still loose.
    with connect(app_dsn, purpose="tests") as conn:
        names = [
            row["name"]
            for row in conn.execute(query("doctor_guard_trigger_events"), COACHING.params).fetchall()
        ]
        assert len(names) == 3, "the guard rides the ledger's three bookings triggers"
        for name in names:
            conn.execute(
                sql.SQL("ALTER TABLE public.bookings ENABLE TRIGGER {}").format(sql.Identifier(name))
            )
    guarded = _keyed(doctor(app_dsn).findings)
    for key, trigger in (
        (("bookings_policy_not_member_scoped", INSERT_POLICY), "session_ledger_enqueue_insert"),
        (("bookings_policy_not_member_scoped", UPDATE_POLICY), "session_ledger_enqueue_update"),
    ):
        assert guarded[key].severity == "medium"
        # Each policy names the trigger that guards its own write, and no other.
        assert f"(guard trigger {trigger} refuses changes to what a booking charges; policy still loose)" in (
            guarded[key].message
        )
        assert guarded[key].message.count("session_ledger_enqueue_") == 1

    # The suggested tightening is valid SQL and turns the finding into a low reminder.
    tighten = guarded[("bookings_policy_not_member_scoped", INSERT_POLICY)].fix.split("tighten: ", 1)[1]
    with connect(app_dsn, purpose="tests") as conn:
        conn.execute(tighten)
    tightened = _keyed(doctor(app_dsn).findings)
    assert tightened[("bookings_policy_not_member_scoped", INSERT_POLICY)].severity == "low"

    # Fix everything: the SQL fixes doctor printed, and dropping the client policies and pgmq_public.
    with connect(app_dsn, purpose="tests") as conn:
        for (check, _), finding in found.items():
            if check in {
                "view_without_security_invoker",
                "security_definer_search_path",
                "api_role_privilege",
                "app_table_privilege",
            }:
                conn.execute(finding.fix)
        conn.execute('DROP POLICY "bookings insert by client" ON public.bookings')
        conn.execute('DROP POLICY "bookings update by client" ON public.bookings')
        conn.execute("DROP SCHEMA pgmq_public")
    after = doctor(app_dsn)
    assert after.findings == []
    assert {n.check for n in after.not_checked} == ROLE_CHECKS  # still connected as the superuser
    owner = run_cli("doctor", "--dsn", app_dsn)
    assert owner.returncode == 0, owner.stdout + owner.stderr
    assert "not checked: listener_superuser, listener_owner: the DSN is the owner's (" in owner.stdout
    assert "pass --listener-dsn with the listener's login to check it" in owner.stdout

    # As the listener's proper role, nothing is left and the exit code is 0.
    as_listener = make_conninfo(app_dsn, user=listener_login)
    result = run_cli("doctor", "--dsn", as_listener, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["findings"] == []
    text = run_cli("doctor", "--dsn", as_listener)
    assert text.returncode == 0 and "no findings" in text.stdout and "not checked" not in text.stdout
    # The owner's DSN with the listener's: every check runs, the listener ones on its login.
    both = run_cli("doctor", "--dsn", app_dsn, "--listener-dsn", as_listener, "--json")
    assert both.returncode == 0, both.stdout + both.stderr
    document = json.loads(both.stdout)
    assert document["findings"] == [] and document["not_checked"] == []
    assert f"the listener checks judged {listener_login}, the login of --listener-dsn" in document["notes"]


def _role_findings(report: Report) -> dict[tuple[str, str], str]:
    return {(f.check, f.object): f.severity for f in report.findings if f.check in ROLE_CHECKS}


def test_the_listener_checks_judge_the_listener_login_not_the_owner_running_doctor(
    ledger_dsn: str, listener_login: str
) -> None:
    with connect(ledger_dsn, purpose="tests") as conn:
        row = conn.execute("SELECT current_user AS me").fetchone()
    assert row is not None
    me = str(row["me"])  # the test server's superuser: root here, postgres on the embedded one
    as_listener = make_conninfo(ledger_dsn, user=listener_login)

    # Doctor run as the owner, as ADOPTING.md says: its own login is not a listener's.
    owner = doctor(ledger_dsn)
    assert _role_findings(owner) == {}
    assert [(n.check, n.reason) for n in owner.not_checked] == [
        (check, f"the DSN is the owner's ({me}, a superuser), not a listener's: "
         "pass --listener-dsn with the listener's login to check it")
        for check in ("listener_superuser", "listener_owner")
    ]  # fmt: skip

    # The owner's login given as the listener's is judged as one: a superuser and the owner.
    misused = doctor(ledger_dsn, listener_dsn=ledger_dsn)
    assert _role_findings(misused) == {
        ("listener_superuser", me): "high",
        ("listener_owner", "session_ledger"): "high",
        ("listener_owner", "public.bookings"): "high",
    }
    assert misused.not_checked == []
    assert all(
        f.message.startswith(f"the listener's DSN connects as {me}")
        for f in misused.findings
        if f.check in ROLE_CHECKS
    )

    # A login that is only in session_ledger_listener passes, given either way.
    assert _role_findings(doctor(ledger_dsn, listener_dsn=as_listener)) == {}
    alone = doctor(as_listener)
    assert _role_findings(alone) == {} and alone.not_checked == []

    # A member of the owner role can act as the owner: flagged, given either way.
    with connect(ledger_dsn, purpose="tests") as conn:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(me), sql.Identifier(listener_login)))
    for report in (doctor(ledger_dsn, listener_dsn=as_listener), doctor(as_listener)):
        member = [f for f in report.findings if f.check in ROLE_CHECKS]
        assert {(f.check, f.object) for f in member} == {
            ("listener_owner", "session_ledger"),
            ("listener_owner", "public.bookings"),
        }
        assert all(f"member of {me}" in f.message for f in member)

    # On the command line: a high listener finding makes the exit code 3; a bad --listener-dsn is one line.
    flagged = run_cli("doctor", "--dsn", ledger_dsn, "--listener-dsn", as_listener)
    assert flagged.returncode == 3 and "listener_owner" in flagged.stdout
    bad = run_cli("doctor", "--dsn", ledger_dsn, "--listener-dsn", "host=a,b port=1,2,3")
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "listener doctor: the listener's DSN names a different number of hosts and ports"
    )


def test_rls_off_and_a_readable_materialized_view_are_high_until_fixed(ledger_dsn: str) -> None:
    with connect(ledger_dsn, purpose="tests") as conn:
        conn.execute(
            "ALTER TABLE public.bookings DISABLE ROW LEVEL SECURITY;"
            " CREATE MATERIALIZED VIEW public.pack_totals AS"
            " SELECT client_id, sum(sessions_used) AS used FROM public.client_purchases GROUP BY client_id;"
            " GRANT SELECT ON public.pack_totals TO authenticated"
        )
    found = _keyed(doctor(ledger_dsn).findings)
    assert {k: f.severity for k, f in found.items()} == {
        ("bookings_rls_disabled", "public.bookings"): "high",
        ("view_without_security_invoker", "public.pack_totals"): "high",
    }
    assert "anon, authenticated may write it" in found[("bookings_rls_disabled", "public.bookings")].message
    with connect(ledger_dsn, purpose="tests") as conn:
        for finding in found.values():
            conn.execute(finding.fix)
    assert _keyed(doctor(ledger_dsn).findings) == {}


def test_doctor_works_before_migrate_and_flags_the_original_use_session(ledger_server: str) -> None:
    dsn = create_database(ledger_server, prefix="ledger_test")
    try:
        with connect(dsn, purpose="tests") as conn:
            conn.execute(demo_schema())
        report = doctor(dsn)
        assert not report.ledger_installed
        assert any("not installed yet" in note for note in report.notes)
        found = _keyed(report.findings)
        # The app's original functions: SECURITY DEFINER without search_path, executable by PUBLIC.
        assert found[("security_definer_search_path", "public.use_session(uuid)")].severity == "high"
        assert found[("security_definer_search_path", "public.release_session(uuid)")].severity == "high"
        assert found[("api_role_privilege", "public.use_session(uuid)")].message == (
            "PUBLIC holds EXECUTE on function public.use_session(uuid)"
        )
        result = run_cli("doctor", "--dsn", dsn)
        assert result.returncode == 3
        assert "note: the ledger is not installed yet" in result.stdout
    finally:
        drop_database(ledger_server, dsn)


def test_expected_grants_are_not_findings(ledger_dsn: str) -> None:
    with connect(ledger_dsn, purpose="tests") as conn:
        grants = conn.execute(query("doctor_api_grants")).fetchall()
        exposure = api_role_exposure(conn)
    held = {(r["name"], r["grantee"], p) for r in grants for p in r["privileges"]}
    assert held == EXPECTED_GRANTS  # the migration grants exactly the allow-list ...
    assert exposure == []  # ... and the allow-list makes none of it a finding


@pytest.mark.parametrize(
    ("dsn", "flagged"),
    [
        ("postgresql://postgres.abc:secret@aws-0-eu-west-1.pooler.supabase.com:6543/postgres", True),
        ("postgresql://app@db.example.com:6543/app", True),
        ("host=a.example.com,b.example.com port=5432,6543 dbname=app", True),
        ("postgresql://postgres.abc:secret@aws-0-eu-west-1.pooler.supabase.com:5432/postgres", False),
        ("postgresql://postgres@db.abc.supabase.co:5432/postgres", False),
        ("dbname=app", False),
    ],
)
def test_transaction_pooler_from_the_dsn(dsn: str, flagged: bool) -> None:
    findings = dsn_pooler_findings(dsn)
    assert [f.check for f in findings] == (["transaction_pooler"] if flagged else [])
    for finding in findings:
        assert finding.severity == "high"
        assert finding.fix == "use the direct connection (5432) or the session pooler"
        assert "secret" not in finding.object + finding.message


def test_supabase_pooler_host_is_named() -> None:
    (finding,) = dsn_pooler_findings("postgresql://u:p@aws-0-eu-west-1.pooler.supabase.com:6543/postgres")
    assert "aws-0-eu-west-1.pooler.supabase.com" in finding.message
    assert finding.object == "aws-0-eu-west-1.pooler.supabase.com:6543"


def test_unparsable_dsn_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        dsn_pooler_findings("host=a,b port=1,2,3")
    result = run_cli("doctor", "--dsn", "not a dsn ===")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_plain_postgresql_is_not_a_pooler(ledger_server: str) -> None:
    with connect(ledger_server, purpose="tests") as conn:
        assert probe_pool_mode(conn) is None  # SHOW pool_mode fails on PostgreSQL, and is caught
        assert check_pooler(conn) == []
        assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}  # the connection survived


def test_policy_expression_judgements() -> None:
    assert member_scoped("public.is_org_member(org_id)")
    assert not member_scoped("(public.is_org_member(org_id) OR public.is_platform_admin())")
    assert not member_scoped("(client_id IN ( SELECT clients.id FROM public.clients))")
    assert not member_scoped(None)
    assert member_scoped("is_org_member(org_id)")  # deparsed under a search_path holding public
    assert not member_scoped("evil.is_org_member(org_id)")
    assert security_invoker(["security_invoker=true"]) and security_invoker(["security_invoker=on"])
    assert not security_invoker(["security_invoker=false"]) and not security_invoker([])
    loose = {
        "name": "p",
        "table_name": "public.bookings",
        "cmd": "UPDATE",
        "permissive": True,
        "roles": ["authenticated"],
        "qual": "(client_id = auth.uid())",
        "with_check": None,
    }
    # Column privileges that keep the policy's roles off the charging columns make it harmless.
    assert judge_bookings_policies([{**loose, "writable_columns": []}], {}) == []
    assert len(judge_bookings_policies([{**loose, "writable_columns": ["status"]}], {})) == 1
    # A member-scoped WITH CHECK closes an UPDATE whose USING is loose; a restrictive one closes all.
    closed = {**loose, "with_check": "public.is_org_member(org_id)", "writable_columns": ["status"]}
    assert judge_bookings_policies([closed], {}) == []
    restrictive = {
        **loose,
        "name": "r",
        "table_name": "public.bookings",
        "cmd": "ALL",
        "permissive": False,
        "roles": ["public"],
        "qual": "public.is_org_member(org_id)",
        "writable_columns": ["status"],
    }
    assert judge_bookings_policies([{**loose, "writable_columns": ["status"]}, restrictive], {}) == []


def test_a_policy_is_guarded_only_by_triggers_on_the_writes_it_allows() -> None:
    policy = {
        "name": "p",
        "table_name": "public.bookings",
        "permissive": True,
        "roles": ["authenticated"],
        "qual": "(client_id = auth.uid())",
        "with_check": None,
        "writable_columns": ["status"],
    }
    every = {
        "INSERT": ["session_ledger_enqueue_insert"],
        "UPDATE": ["session_ledger_enqueue_update"],
        "DELETE": ["session_ledger_enqueue_delete"],
    }

    def judged(cmd: str, guards: dict[str, list[str]]) -> Finding:
        (finding,) = judge_bookings_policies([{**policy, "cmd": cmd}], guards)
        return finding

    assert "(guard trigger session_ledger_enqueue_insert refuses" in judged("INSERT", every).message
    assert "(guard trigger session_ledger_enqueue_update refuses" in judged("UPDATE", every).message
    assert (
        "(guard triggers session_ledger_enqueue_insert, session_ledger_enqueue_update refuse"
        in judged("ALL", every).message
    )
    assert all("delete" not in judged(cmd, every).message for cmd in ("INSERT", "UPDATE", "ALL"))
    # The delete trigger alone guards no write a policy's check judges; an ALL policy needs both.
    assert judged("UPDATE", {"DELETE": every["DELETE"]}).severity == "high"
    only_insert = judged("ALL", {"INSERT": every["INSERT"]})
    assert only_insert.severity == "high" and "guard trigger" not in only_insert.message


@pytest.mark.parametrize(
    ("setting", "fix_path", "flagged"),
    [
        (None, "public, pg_temp", True),
        ("public", "public, pg_temp", True),
        ('""', "pg_catalog, pg_temp", True),
        ('"$user", public, extensions', '"$user", public, extensions, pg_temp', True),
        ("pg_temp, public", "public, pg_temp", True),
        ("public, pg_temp, extensions", "public, extensions, pg_temp", True),
        ('"Odd, Schema", public', '"Odd, Schema", public, pg_temp', True),
        ("public, pg_temp", None, False),
        ("pg_catalog, pg_temp", None, False),
        ('public, "pg_temp"', None, False),
        ("pg_temp", None, False),
    ],
)
def test_definer_search_path_judgement_and_fix(
    setting: str | None, fix_path: str | None, flagged: bool
) -> None:
    row = {
        "name": "public.f(uuid)",
        "schema": "public",
        "function": "f",
        "search_path": setting,
        "touches_money": False,
    }
    findings = judge_definer_search_paths([row])
    assert [f.check for f in findings] == (["security_definer_search_path"] if flagged else [])
    for finding in findings:
        assert finding.severity == "medium"
        assert finding.fix == f"ALTER FUNCTION public.f(uuid) SET search_path = {fix_path}"


def test_definer_search_path_severity_follows_what_the_ledger_depends_on() -> None:
    def severity(schema: str, function: str, touches_money: bool = False) -> str:
        row = {
            "name": f"{schema}.{function}()",
            "schema": schema,
            "function": function,
            "search_path": "public",
            "touches_money": touches_money,
        }
        (finding,) = judge_definer_search_paths([row])
        return finding.severity

    assert severity("public", "is_org_member") == "high"
    assert {severity("auth", f) for f in ("uid", "role", "jwt")} == {"high"}
    assert severity("public", "pack_report", touches_money=True) == "high"
    assert severity("public", "is_platform_admin") == "medium"
    assert severity("auth", "email") == "medium"
    assert severity("billing", "is_org_member") == "medium"  # only the guard's own is_org_member


def _hijack_is_org_member(dsn: str) -> None:
    """As a login of no standing: a temporary type named uuid whose CHECK moves every pack, then is_org_member."""
    with connect(dsn, purpose="tests") as conn:
        conn.execute("SET check_function_bodies = off")
        conn.execute(
            "CREATE FUNCTION pg_temp.evil(v pg_catalog.uuid) RETURNS pg_catalog.bool LANGUAGE sql"
            " AS $$ UPDATE public.client_purchases SET sessions_used = 9; SELECT true $$"
        )
        conn.execute("CREATE DOMAIN pg_temp.uuid AS pg_catalog.uuid CHECK (pg_temp.evil(VALUE))")
        conn.execute("SELECT public.is_org_member(%s)", [uuid.uuid4()])


@pytest.mark.slow  # its own Supabase-shaped cluster
def test_doctor_flags_the_apps_is_org_member_on_supabase_until_fixed(supabase_app_db: SupabaseAppDb) -> None:
    dsn = supabase_app_db.postgres_dsn  # the owner, as ADOPTING.md runs doctor
    report = doctor(dsn)
    definers = {f.object: f for f in report.findings if f.check == "security_definer_search_path"}
    member = definers["public.is_org_member(uuid)"]
    assert member.severity == "high"
    assert member.fix == "ALTER FUNCTION public.is_org_member(uuid) SET search_path = public, pg_temp"
    assert "has search_path public, which does not name pg_temp" in member.message
    assert "the ledger's guard calls it" in member.message
    # The app's other definer reads only the JWT, but the SELECT policies of bookings and packs call it.
    admin = definers["public.is_platform_admin()"]
    assert admin.severity == "high"
    assert "a row security policy of bookings calls it" in admin.message
    assert admin.fix == "ALTER FUNCTION public.is_platform_admin() SET search_path = public, pg_temp"
    # The ledger's own functions, and the app's use_session/release_session it replaced, are pinned.
    assert set(definers) == {"public.is_org_member(uuid)", "public.is_platform_admin()"}
    # postgres owns the ledger: doctor says so and leaves the listener checks unjudged.
    assert not any(f.check in ROLE_CHECKS for f in report.findings)
    assert {n.check for n in report.not_checked} == ROLE_CHECKS
    assert all("the owner of schema session_ledger" in n.reason for n in report.not_checked)

    # What the finding is about: any login's temporary type runs as postgres inside is_org_member.
    mallory = f"doctor_mallory_{uuid.uuid4().hex[:8]}"
    with connect(supabase_app_db.admin_dsn, purpose="tests") as admin_conn:
        admin_conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(mallory)))
    ledger = Ledger(dsn)
    try:
        studio = app_data.create_studio(ledger.conn)
        pack = app_data.create_pack(ledger.conn, studio, sessions_total=10)
        as_mallory = supabase_app_db.cluster.dsn(supabase_app_db.name, user=mallory)
        _hijack_is_org_member(as_mallory)
        assert ledger.sessions_used(pack) == 9
        ledger.conn.execute("UPDATE public.client_purchases SET sessions_used = 0 WHERE id = %s", [pack])

        ledger.conn.execute(member.fix)
        after = doctor(dsn)
        fixed = {f.object for f in after.findings if f.check == "security_definer_search_path"}
        assert fixed == {"public.is_platform_admin()"}
        _hijack_is_org_member(as_mallory)
        assert ledger.sessions_used(pack) == 0
    finally:
        ledger.close()
        with connect(supabase_app_db.admin_dsn, purpose="tests") as admin_conn:
            admin_conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(mallory)))


def test_doctor_finds_nothing_high_on_a_fresh_install_with_the_demo_schema(ledger_dsn: str) -> None:
    report = doctor(ledger_dsn)
    assert not report.has_high, [f"{f.check} {f.object}" for f in report.findings]
    assert not [f for f in report.findings if f.check == "security_definer_search_path"]
