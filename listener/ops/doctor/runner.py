"""The whole audit: every check on read-only transactions, the listener's login where given, worst first."""

from __future__ import annotations

from collections.abc import Callable

from listener.core.db import Conn, connect
from listener.core.schema import ledger_state
from listener.core.sql_files import query
from listener.ops.doctor.app_tables import check_app_tables
from listener.ops.doctor.definers import check_definers
from listener.ops.doctor.grants import api_role_exposure
from listener.ops.doctor.listener_login import connected_role, judge_listener_login
from listener.ops.doctor.policies import check_bookings_policies
from listener.ops.doctor.pooler import check_pooler, dsn_pooler_findings
from listener.ops.doctor.report import LISTENER_DSN_OPTION, SEVERITY_ORDER, Finding, Report
from listener.ops.doctor.tables import AppTables, app_tables
from listener.ops.doctor.views import check_views

CATALOG_CHECKS: tuple[Callable[[Conn, AppTables], list[Finding]], ...] = (
    check_bookings_policies,
    check_views,
    lambda conn, _tables: api_role_exposure(conn),
    check_definers,
    check_app_tables,
)


def _read_only(conn: Conn) -> None:
    # Deparsed expressions then name every function with its schema.
    conn.execute(query("doctor_read_only"))


def audit(conn: Conn, *, listener: Conn | None = None) -> Report:
    """Run every check on open autocommit connections, each in one read-only transaction.

    The listener checks judge listener's login when given, else conn's unless it is the owner's.
    """
    report = Report(findings=check_pooler(conn))
    with conn.transaction():
        _read_only(conn)
        tables = app_tables(conn)
        installed = conn.execute(query("doctor_installed"), tables.params).fetchone()
        assert installed is not None
        report.ledger_installed = ledger_state(conn).installed
        if not report.ledger_installed:
            report.notes.append(
                "the ledger is not installed yet (run `listener migrate`); checked what applies before it"
            )
        if not installed["bookings"]:
            report.notes.append(f"{tables.bookings} does not exist; its policies and owner were not checked")
        if not installed["pgmq"]:
            report.notes.append("PGMQ is not installed; there are no queues to check yet")
        for check in CATALOG_CHECKS:
            report.findings.extend(check(conn, tables))
        if listener is None:
            judge_listener_login(report, connected_role(conn, tables), listener=False)
    if listener is not None:
        report.findings.extend(check_pooler(listener, listener=True))
        with listener.transaction():
            _read_only(listener)
            row = connected_role(listener, tables)
        judge_listener_login(report, row, listener=True)
        if row is not None:
            report.notes.append(
                f"the listener checks judged {row['name']}, the login of {LISTENER_DSN_OPTION}"
            )
    report.findings.sort(key=lambda f: SEVERITY_ORDER[f.severity])
    return report


def doctor(dsn: str, *, listener_dsn: str | None = None) -> Report:
    """Audit the database behind a DSN, changing nothing; the listener checks on listener_dsn's login when given."""
    from_text = dsn_pooler_findings(dsn)
    if listener_dsn is not None:
        from_text += dsn_pooler_findings(listener_dsn, listener=True)
    with connect(dsn, purpose="doctor") as conn:
        conn.prepare_threshold = None  # a transaction-mode pooler cannot keep prepared statements
        if listener_dsn is None:
            report = audit(conn)
        else:
            with connect(listener_dsn, purpose="doctor") as listener:
                listener.prepare_threshold = None
                report = audit(conn, listener=listener)
    # What a DSN's text gives away counts where its live connection did not show it (a pooler
    # that passes SHOW through, or a host that resolves elsewhere).
    live = {_listeners(f) for f in report.findings if f.check == "transaction_pooler"}
    report.findings[:0] = [f for f in from_text if _listeners(f) not in live]
    return report


def _listeners(finding: Finding) -> bool:
    """Whether a pooler finding is about --listener-dsn rather than the DSN."""
    return finding.object.endswith(f"({LISTENER_DSN_OPTION})")
