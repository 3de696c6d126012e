"""Check 2: views over bookings or client_purchases that run with their owner's rights."""

from __future__ import annotations

from collections.abc import Iterable

from listener.core.db import Conn
from listener.core.sql_files import query
from listener.ops.doctor.report import Finding, Row
from listener.ops.doctor.tables import AppTables

_TRUE = frozenset({"true", "on", "yes", "1", "t", "y"})


def security_invoker(options: Iterable[str]) -> bool:
    """Whether a view's reloptions say security_invoker is on."""
    for option in options:
        key, _, value = option.partition("=")
        if key.strip().lower() == "security_invoker":
            return value.strip().lower() in _TRUE
    return False


def judge_views(views: Iterable[Row]) -> list[Finding]:
    """Views over bookings or packs that API roles may read with the owner's rights."""
    findings = []
    for row in views:
        readers = list(row["readers"])
        materialized = row["kind"] == "m"
        if not readers or (not materialized and security_invoker(row["options"])):
            continue
        name = row["name"]
        kind = "materialized view" if materialized else "view"
        fix = (
            f"REVOKE SELECT ON {name} FROM {', '.join(readers)}"
            if materialized
            else f"ALTER VIEW {name} SET (security_invoker = true)"
        )
        findings.append(
            Finding(
                check="view_without_security_invoker",
                severity="high",
                object=name,
                message=(
                    f"{kind} {name} reads bookings or packs with its owner's rights and {', '.join(readers)} "
                    "may select it: it shows other clients' bookings and pack ids"
                ),
                fix=fix,
            )
        )
    return findings


def check_views(conn: Conn, tables: AppTables) -> list[Finding]:
    """Check 2: views over the app's bookings or packs without security_invoker."""
    return judge_views(conn.execute(query("doctor_views_over_money"), tables.params).fetchall())
