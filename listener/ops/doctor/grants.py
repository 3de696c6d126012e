"""Check 3: what PUBLIC and the API roles hold on the ledger's and PGMQ's objects, beyond what the app needs."""

from __future__ import annotations

from collections.abc import Iterable

from listener.core.db import Conn
from listener.core.sql_files import query
from listener.ops.doctor.report import Finding, Row, Severity, role_name

# The grants the app needs and the migration makes on purpose: (object, grantee, privilege).
EXPECTED_GRANTS: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("public.use_session(uuid)", "authenticated", "EXECUTE"),
        ("public.release_session(uuid)", "authenticated", "EXECUTE"),
        ("public.use_session(uuid)", "service_role", "EXECUTE"),
        ("public.release_session(uuid)", "service_role", "EXECUTE"),
        # the trainer's buttons with a reason
        ("public.use_session(uuid, text)", "authenticated", "EXECUTE"),
        ("public.release_session(uuid, text)", "authenticated", "EXECUTE"),
        ("public.use_session(uuid, text)", "service_role", "EXECUTE"),
        ("public.release_session(uuid, text)", "service_role", "EXECUTE"),
        ("session_ledger.complete_past_bookings(integer, interval)", "service_role", "EXECUTE"),
        ("session_ledger", "service_role", "USAGE"),
    }
)
_REVOKE = {"schema": "SCHEMA", "table": "TABLE", "sequence": "SEQUENCE", "function": "FUNCTION"}


def judge_grants(grants: Iterable[Row]) -> list[Finding]:
    """Privileges PUBLIC or an API role holds on the ledger's or the queue's objects, less the expected."""
    findings = []
    for row in grants:
        name, grantee = row["name"], row["grantee"]
        extra = [p for p in row["privileges"] if (name, grantee, p) not in EXPECTED_GRANTS]
        if not extra:
            continue
        keyword = _REVOKE[row["kind"]]
        # service_role's key lives only on servers; PUBLIC, anon and authenticated reach any browser.
        severity: Severity = "medium" if grantee == "service_role" else "high"
        revoke = "EXECUTE" if row["kind"] == "function" else "ALL"
        if name in {obj for obj, who, _ in EXPECTED_GRANTS if who == grantee}:
            revoke = ", ".join(extra)
        findings.append(
            Finding(
                check="api_role_privilege",
                severity=severity,
                object=name,
                message=f"{grantee} holds {', '.join(extra)} on {row['kind']} {name}",
                fix=f"REVOKE {revoke} ON {keyword} {name} FROM {role_name(grantee)}",
            )
        )
    return findings


def judge_pgmq_public(row: Row | None) -> list[Finding]:
    """The pgmq_public schema opens the queues to the API when it exists."""
    if row is None:
        return []
    users = list(row["users"])
    if users:
        message = (
            f"schema pgmq_public exists and {', '.join(users)} may use it: the queues are open to the API"
        )
    else:
        message = "schema pgmq_public exists; no API role may use it now, but exposing it opens the queues"
    revoke = ", ".join(role_name(u) for u in users) or "anon, authenticated, service_role"
    return [
        Finding(
            check="pgmq_public_exposed",
            severity="high" if users else "medium",
            object="pgmq_public",
            message=message,
            fix=f"remove pgmq_public from the API's exposed schemas and REVOKE ALL ON SCHEMA pgmq_public FROM {revoke}",
        )
    ]


def api_role_exposure(conn: Conn) -> list[Finding]:
    """Check 3: PUBLIC and the API roles on the ledger, the queues and pgmq_public (for `listener status`)."""
    grants = conn.execute(query("doctor_api_grants")).fetchall()
    pgmq_public = conn.execute(query("doctor_pgmq_public")).fetchone()
    return judge_grants(grants) + judge_pgmq_public(pgmq_public)
