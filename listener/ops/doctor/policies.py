"""Check 1: who may write the app's bookings past row-level security."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from listener.core.db import Conn
from listener.core.sql_files import query
from listener.ops.doctor.report import Finding, Row, Severity, quote
from listener.ops.doctor.tables import AppTables

# Qualified under doctor's empty search_path, bare where the caller's path has public; never another schema's.
_MEMBER_CALL = re.compile(r"(?<![\w.])(?:public\.)?is_org_member\s*\(")
_OR = re.compile(r"\bOR\b")

# What a client's booking may say: never a charging status, only its own pack in its own org.
_CLIENT_CHECK = (
    "status IN ('pending', 'confirmed', 'cancelled') AND (purchase_id IS NULL OR purchase_id IN "
    "(SELECT p.id FROM public.client_purchases p WHERE p.client_id = bookings.client_id "
    "AND p.org_id = bookings.org_id))"
)


def member_scoped(expression: str | None) -> bool:
    """Whether a deparsed policy expression confines rows to the caller's organisations."""
    if not expression or not _MEMBER_CALL.search(expression):
        return False
    # An OR beside the membership call lets a non-member in through the other branch.
    return not _OR.search(expression)


def constrains_charge(expression: str | None) -> bool:
    """Whether a policy's check at least speaks of both columns that decide a charge."""
    if not expression:
        return False
    return all(re.search(rf"\b{column}\b", expression) for column in ("status", "purchase_id"))


def judge_bookings_table(row: Row | None) -> list[Finding]:
    """RLS off on bookings while an API role may write it: every policy is moot."""
    if row is None or row["rls"] or not row["writers"]:
        return []
    roles = ", ".join(row["writers"])
    return [
        Finding(
            check="bookings_rls_disabled",
            severity="high",
            object=row["table_name"],
            message=f"row-level security is off on {row['table_name']} and {roles} may write it",
            fix=f"ALTER TABLE {row['table_name']} ENABLE ROW LEVEL SECURITY",
        )
    ]


def judge_bookings_policies(policies: Iterable[Row], guards: Mapping[str, list[str]]) -> list[Finding]:
    """INSERT/UPDATE/ALL policies that let a non-member write what a booking charges.

    guards maps a write (INSERT, UPDATE, DELETE) to the enabled guard triggers that fire on it.
    """
    rows = list(policies)
    # A restrictive policy only narrows; one confining every role's writes closes the permissive ones.
    closed = {
        row["cmd"]
        for row in rows
        if not row["permissive"]
        and "public" in row["roles"]
        and member_scoped(_write_check(row))
        and row["cmd"] in ("INSERT", "UPDATE", "ALL")
    }
    findings = []
    for row in rows:
        cmd = row["cmd"]
        if not row["permissive"] or cmd not in ("INSERT", "UPDATE", "ALL"):
            continue
        if "ALL" in closed or cmd in closed or member_scoped(_write_check(row)):
            continue
        columns = list(row["writable_columns"])
        if not columns:
            continue  # column privileges already keep the policy's roles off the charging columns
        findings.append(_loose_policy(row, columns, guards))
    return findings


def _write_check(row: Row) -> str | None:
    """The expression a new or changed row must pass: WITH CHECK, else USING."""
    with_check: str | None = row["with_check"]
    qual: str | None = row["qual"]
    return with_check if with_check is not None or row["cmd"] == "INSERT" else qual


# The writes a policy's check judges: an ALL policy's check applies to inserts and updates.
_POLICY_WRITES = {"INSERT": ("INSERT",), "UPDATE": ("UPDATE",), "ALL": ("INSERT", "UPDATE")}


def _guarding(cmd: str, guards: Mapping[str, list[str]]) -> list[str]:
    """The guard triggers that fire on every write a policy allows; empty unless each write has one."""
    writes = _POLICY_WRITES[cmd]
    if not all(guards.get(write) for write in writes):
        return []
    return list(dict.fromkeys(name for write in writes for name in guards[write]))


def _loose_policy(row: Row, columns: list[str], guards: Mapping[str, list[str]]) -> Finding:
    name = quote(row["name"])
    roles = ", ".join("PUBLIC" if r == "public" else r for r in row["roles"])
    what = "insert bookings setting" if row["cmd"] == "INSERT" else "change their bookings'"
    check = _write_check(row)
    message = (
        f"{row['cmd']} policy {name} on {row['table_name']} lets {roles} {what} "
        f"{', '.join(columns)} without being an org member"
    )
    triggers = _guarding(row["cmd"], guards)
    guard = (
        "the ledger's guard trigger already refuses"
        if triggers
        else "the ledger's guard (in its bookings triggers, from `listener migrate`) refuses"
    ) + " writes that change what a booking charges"
    severity: Severity
    if constrains_charge(check):
        # Tightened the way the fix below suggests; only a reader can tell whether it is tight enough.
        severity = "low"
        message += "; its check constrains status and purchase_id"
        fix = f"{guard}; make sure {name} allows no charging status and only the client's own packs"
    else:
        severity = "medium" if triggers else "high"
        if triggers:
            refuse = "refuses" if len(triggers) == 1 else "refuse"
            message += (
                f" (guard trigger{'s' if len(triggers) > 1 else ''} {', '.join(triggers)} {refuse} "
                "changes to what a booking charges; policy still loose)"
            )
        condition = " ".join((check or "true").split())
        fix = f"{guard}; tighten: ALTER POLICY {name} ON {row['table_name']} WITH CHECK (({condition}) AND {_CLIENT_CHECK})"
    return Finding(
        check="bookings_policy_not_member_scoped",
        severity=severity,
        object=f"{name} ON {row['table_name']}",
        message=message,
        fix=fix,
    )


def check_bookings_policies(conn: Conn, tables: AppTables) -> list[Finding]:
    """Check 1: who may write the app's bookings past row-level security."""
    table = conn.execute(query("doctor_bookings_table"), tables.params).fetchone()
    if table is None:
        return []
    guards: dict[str, list[str]] = {}
    for trigger in conn.execute(query("doctor_guard_trigger_events"), tables.params):
        if trigger["enabled"]:
            for write in trigger["events"]:
                guards.setdefault(write, []).append(trigger["name"])
    policies = conn.execute(query("doctor_bookings_policies"), tables.params).fetchall()
    return judge_bookings_table(table) + judge_bookings_policies(policies, guards)
