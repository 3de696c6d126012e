"""Check 6: the listener's own login, neither a superuser nor an owner of what it guards."""

from __future__ import annotations

from listener.core.db import Conn
from listener.core.sql_files import query
from listener.ops.doctor.report import LISTENER_DSN_OPTION, Finding, NotChecked, Report, Row, dsn_label
from listener.ops.doctor.tables import AppTables

# The checks that judge the listener's login.
LISTENER_CHECKS = ("listener_superuser", "listener_owner")


def judge_connected_role(row: Row, *, listener: bool = False) -> list[Finding]:
    """The listener's role must be neither a superuser nor (a member of) an owner of what it guards."""
    who = row["name"]
    label = dsn_label(listener)
    findings = []
    if row["superuser"]:
        findings.append(
            Finding(
                check="listener_superuser",
                severity="high",
                object=who,
                message=f"{label} connects as {who}, a superuser: a bug or a leaked DSN can do anything",
                fix="CREATE ROLE ledger_listener LOGIN PASSWORD '...' IN ROLE session_ledger_listener; use it in the DSN",
            )
        )
    for target, owner_key, flag_key in (
        ("schema session_ledger", "schema_owner", "acts_as_schema_owner"),
        (f"table {row['bookings_table']}", "bookings_owner", "acts_as_bookings_owner"),
    ):
        if not row[flag_key]:
            continue
        owner = row[owner_key]
        how = "owns" if owner == who else f"is a member of {owner}, the owner of"
        findings.append(
            Finding(
                check="listener_owner",
                severity="high",
                object=target.split(" ", 1)[1],
                message=f"{label} connects as {who}, which {how} {target}: it can drop or rewrite it",
                fix="connect as a login role that is only a member of session_ledger_listener",
            )
        )
    return findings


def owners_login(row: Row) -> str | None:
    """Why a login is the owner's rather than a listener's (a superuser, or the owner itself); None if not."""
    who = row["name"]
    if row["superuser"]:
        return f"{who}, a superuser"
    if who == row["schema_owner"]:
        return f"{who}, the owner of schema session_ledger"
    if who == row["bookings_owner"]:
        return f"{who}, the owner of table {row['bookings_table']}"
    return None


def connected_role(conn: Conn, tables: AppTables) -> Row | None:
    """The doctor_connected_role row of a connection."""
    row: Row | None = conn.execute(query("doctor_connected_role"), tables.params).fetchone()
    return row


def judge_listener_login(report: Report, row: Row | None, *, listener: bool) -> None:
    """Check 6 into report: judge the listener's login, or say why it was not checked.

    Without --listener-dsn the DSN's own login stands for the listener's unless it is the owner's:
    doctor is run as the owner, and the owner is no listener.
    """
    if row is None:
        return
    if not listener:
        owner = owners_login(row)
        if owner is not None:
            reason = (
                f"the DSN is the owner's ({owner}), not a listener's: "
                f"pass {LISTENER_DSN_OPTION} with the listener's login to check it"
            )
            report.not_checked.extend(NotChecked(check, reason) for check in LISTENER_CHECKS)
            return
    report.findings.extend(judge_connected_role(row, listener=listener))
