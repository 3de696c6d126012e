"""`listener doctor`: each check reports the real app's weak spots on a real database, and stops once fixed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from listener.core.db import connect
from listener.core.sql_files import demo_schema, query
from listener.devtools.throwaway import create_database, drop_database
from listener.errors import ConfigError
from listener.ops.doctor import (
    EXPECTED_GRANTS,
    Finding,
    api_role_exposure,
    check_pooler,
    doctor,
    dsn_pooler_findings,
    judge_bookings_policies,
    member_scoped,
    probe_pool_mode,
    security_invoker,
)

from support import SUPPORT
from support.world import run_cli

APP_SQL = (SUPPORT / "sql" / "app_booking_policies.sql").read_text(encoding="utf-8")
INSERT_POLICY = '"bookings insert by client" ON public.bookings'
UPDATE_POLICY = '"bookings update by client" ON public.bookings'
# The listener's own role: the tests connect as a superuser that owns everything.
ROLE_CHECKS = {"listener_superuser", "listener_owner"}

# (check, object) -> severity, for the state tests/sql/app_booking_policies.sql creates.
EXPECTED = {
    ("bookings_policy_not_member_scoped", INSERT_POLICY): "high",
    ("bookings_policy_not_member_scoped", UPDATE_POLICY): "high",
    ("view_without_security_invoker", "public.upcoming_bookings"): "high",
    ("view_without_security_invoker", "public.next_bookings"): "high",
    ("security_definer_search_path", "public.pack_balance(uuid)"): "high",
    ("security_definer_search_path", "public.pack_used(uuid)"): "high",
    ("api_role_privilege", "pgmq.q_booking_events"): "high",
    ("api_role_privilege", "pgmq.q_booking_events_msg_id_seq"): "high",
    ("api_role_privilege", "pgmq"): "high",
    ("api_role_privilege", "session_ledger.charges"): "high",
    ("api_role_privilege", "session_ledger.status()"): "high",
    ("api_role_privilege", "pgmq.meta"): "medium",
    ("api_role_privilege", "session_ledger"): "medium",
    ("pgmq_public_exposed", "pgmq_public"): "high",
}


def _keyed(findings: list[Finding]) -> dict[tuple[str, str], Finding]:
    keyed = {(f.check, f.object): f for f in findings if f.check not in ROLE_CHECKS}
    assert len(keyed) == len([f for f in findings if f.check not in ROLE_CHECKS]), findings
    return keyed


@pytest.fixture
def app_dsn(ledger_dsn: str) -> str:
    """A migrated database carrying the real app's policies, view, function and careless grants."""
    with connect(ledger_dsn, purpose="tests") as conn:
        # A guard the ledger may install later must not hide the unguarded verdict: disable it here.
        for row in conn.execute(query("doctor_guard_triggers")).fetchall():
            conn.execute(
                sql.SQL("ALTER TABLE public.bookings DISABLE TRIGGER {}").format(sql.Identifier(row["name"]))
            )
        conn.execute(APP_SQL)
    return ledger_dsn


@pytest.fixture
def listener_login(ledger_server: str) -> Iterator[str]:
    """A login role that is only a member of session_ledger_listener, as the listener should run."""
    name = f"doctor_listener_{uuid.uuid4().hex[:8]}"
    with connect(ledger_server, purpose="tests") as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE session_ledger_listener").format(sql.Identifier(name))
        )
    yield name
    with connect(ledger_server, purpose="tests") as conn:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def test_every_check_reports_the_app_and_goes_quiet_once_fixed(app_dsn: str, listener_login: str) -> None:
    report = doctor(app_dsn)
    found = _keyed(report.findings)
    assert {k: f.severity for k, f in found.items()} == EXPECTED
    assert report.ledger_installed and report.has_high
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
    assert {k: v for k, v in listed.items() if k[0] not in ROLE_CHECKS} == EXPECTED
    assert set(document["findings"][0]) == {"check", "severity", "object", "message", "fix"}

    # The ledger's guard (re-enabled) makes the loose policies medium: the money is guarded,
    # the policy still loose.
    with connect(app_dsn, purpose="tests") as conn:
        names = [row["name"] for row in conn.execute(query("doctor_guard_triggers")).fetchall()]
        assert len(names) == 3, "the guard rides the ledger's three bookings triggers"
        for name in names:
            conn.execute(
                sql.SQL("ALTER TABLE public.bookings ENABLE TRIGGER {}").format(sql.Identifier(name))
            )
    guarded = _keyed(doctor(app_dsn).findings)
    for key in (
        ("bookings_policy_not_member_scoped", INSERT_POLICY),
        ("bookings_policy_not_member_scoped", UPDATE_POLICY),
    ):
        assert guarded[key].severity == "medium"
        assert "session_ledger_enqueue_" in guarded[key].message and "still loose" in guarded[key].message

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
            }:
                conn.execute(finding.fix)
        conn.execute('DROP POLICY "bookings insert by client" ON public.bookings')
        conn.execute('DROP POLICY "bookings update by client" ON public.bookings')
        conn.execute("DROP SCHEMA pgmq_public")
    after = doctor(app_dsn)
    assert _keyed(after.findings) == {}
    assert {f.check for f in after.findings} == ROLE_CHECKS  # still connected as the superuser

    # As the listener's proper role, nothing is left and the exit code is 0.
    as_listener = make_conninfo(app_dsn, user=listener_login)
    result = run_cli("doctor", "--dsn", as_listener, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["findings"] == []
    text = run_cli("doctor", "--dsn", as_listener)
    assert text.returncode == 0 and "no findings" in text.stdout


def test_the_listener_role_superuser_and_owner_flagged_member_role_not(
    ledger_dsn: str, listener_login: str
) -> None:
    with connect(ledger_dsn, purpose="tests") as conn:
        row = conn.execute("SELECT current_user AS me").fetchone()
    assert row is not None
    me = str(row["me"])  # the test server's superuser: root here, postgres on the embedded one
    report = doctor(ledger_dsn)
    mine = {(f.check, f.object): f.severity for f in report.findings if f.check in ROLE_CHECKS}
    assert mine == {
        ("listener_superuser", me): "high",
        ("listener_owner", "session_ledger"): "high",
        ("listener_owner", "public.bookings"): "high",
    }
    assert doctor(make_conninfo(ledger_dsn, user=listener_login)).findings == []
    # A member of the owner role can act as the owner: flagged as such.
    with connect(ledger_dsn, purpose="tests") as conn:
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(me), sql.Identifier(listener_login)))
    member = doctor(make_conninfo(ledger_dsn, user=listener_login)).findings
    assert {(f.check, f.object) for f in member} == {
        ("listener_owner", "session_ledger"),
        ("listener_owner", "public.bookings"),
    }
    assert all(f"member of {me}" in f.message for f in member)


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
        "cmd": "UPDATE",
        "permissive": True,
        "roles": ["authenticated"],
        "qual": "(client_id = auth.uid())",
        "with_check": None,
    }
    # Column privileges that keep the policy's roles off the charging columns make it harmless.
    assert judge_bookings_policies([{**loose, "writable_columns": []}], []) == []
    assert len(judge_bookings_policies([{**loose, "writable_columns": ["status"]}], [])) == 1
    # A member-scoped WITH CHECK closes an UPDATE whose USING is loose; a restrictive one closes all.
    closed = {**loose, "with_check": "public.is_org_member(org_id)", "writable_columns": ["status"]}
    assert judge_bookings_policies([closed], []) == []
    restrictive = {
        **loose,
        "name": "r",
        "cmd": "ALL",
        "permissive": False,
        "roles": ["public"],
        "qual": "public.is_org_member(org_id)",
        "writable_columns": ["status"],
    }
    assert judge_bookings_policies([{**loose, "writable_columns": ["status"]}, restrictive], []) == []
