"""Check 4b: code and privileges on the app's tables that the ledger writes as their owner."""

from __future__ import annotations

from collections.abc import Iterable

from listener.core.db import Conn
from listener.core.sql_files import query
from listener.ops.doctor.report import Finding, Row, quote_ident, role_name
from listener.ops.doctor.tables import AppTables


def judge_app_table_triggers(triggers: Iterable[Row]) -> list[Finding]:
    """Triggers on bookings or client_purchases whose function a role below the table's owner owns."""
    return [
        Finding(
            check="foreign_trigger",
            severity="high",
            object=f"{row['trigger']} on {row['table_name']}",
            message=(
                f"trigger {row['trigger']} on {row['table_name']} runs {row['function']}, owned by "
                f"{row['function_owner']}: every write the ledger makes as {row['table_owner']} would run it "
                "with the owner's rights, so the ledger refuses to write that table until it is gone"
            ),
            fix=f"DROP TRIGGER {quote_ident(row['trigger'])} ON {row['table_name']}",
        )
        for row in triggers
    ]


def judge_app_table_grants(grants: Iterable[Row]) -> list[Finding]:
    """TRIGGER, TRUNCATE or REFERENCES held by PUBLIC or an API role on bookings or client_purchases."""
    findings = []
    for row in grants:
        privileges = list(row["privileges"])
        dangerous = [p for p in privileges if p in ("TRIGGER", "TRUNCATE")]
        why = (
            "TRIGGER lets it attach code the ledger then runs as the owner; TRUNCATE goes around every row trigger"
            if dangerous
            else "no app flow needs it"
        )
        findings.append(
            Finding(
                check="app_table_privilege",
                severity="high" if dangerous else "medium",
                object=row["table_name"],
                message=f"{row['grantee']} holds {', '.join(privileges)} on {row['table_name']}: {why} "
                "(`listener migrate` revokes it)",
                fix=f"REVOKE {', '.join(privileges)} ON {row['table_name']} FROM {role_name(row['grantee'])}",
            )
        )
    return findings


def check_app_tables(conn: Conn, tables: AppTables) -> list[Finding]:
    """Check 4b: foreign triggers on, and API roles' TRIGGER/TRUNCATE/REFERENCES on, bookings and packs."""
    return judge_app_table_triggers(
        conn.execute(query("doctor_app_table_triggers"), tables.params).fetchall()
    ) + judge_app_table_grants(conn.execute(query("doctor_app_table_grants"), tables.params).fetchall())
