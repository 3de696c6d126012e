"""`listener doctor`: a read-only security audit of the database the ledger is, or will be, installed on.

Each check reads the catalogs (queries `doctor_*` in sql/queries.sql) and turns the rows into
findings with a pure function, so the judgement is testable apart from the database. The
listener checks judge the login of --listener-dsn, or the DSN's own unless it is the owner's.

A module per family of checks: policies (1), views (2), grants (3), definers (4), app_tables
(4b), pooler (5) and listener_login (6); report holds the findings and how they name things,
and runner runs them all. The names callers use are importable from here.
"""

from __future__ import annotations

from listener.ops.doctor.app_tables import check_app_tables, judge_app_table_grants, judge_app_table_triggers
from listener.ops.doctor.definers import (
    GUARD_DEPENDENCIES,
    check_definers,
    judge_definer_search_paths,
    pg_temp_last,
    pinned_path,
    search_path_elements,
)
from listener.ops.doctor.grants import EXPECTED_GRANTS, api_role_exposure, judge_grants, judge_pgmq_public
from listener.ops.doctor.listener_login import (
    LISTENER_CHECKS,
    connected_role,
    judge_connected_role,
    judge_listener_login,
    owners_login,
)
from listener.ops.doctor.policies import (
    check_bookings_policies,
    constrains_charge,
    judge_bookings_policies,
    judge_bookings_table,
    member_scoped,
)
from listener.ops.doctor.pooler import (
    SUPABASE_POOLER_HOST,
    TRANSACTION_POOLER_PORT,
    check_pooler,
    dsn_endpoints,
    dsn_pooler_findings,
    judge_pooler,
    probe_pool_mode,
)
from listener.ops.doctor.report import (
    LISTENER_DSN_OPTION,
    SEVERITY_ORDER,
    Finding,
    NotChecked,
    Report,
    Row,
    Severity,
)
from listener.ops.doctor.runner import CATALOG_CHECKS, audit, doctor
from listener.ops.doctor.views import check_views, judge_views, security_invoker

__all__ = [
    "CATALOG_CHECKS",
    "EXPECTED_GRANTS",
    "GUARD_DEPENDENCIES",
    "LISTENER_CHECKS",
    "LISTENER_DSN_OPTION",
    "SEVERITY_ORDER",
    "SUPABASE_POOLER_HOST",
    "TRANSACTION_POOLER_PORT",
    "Finding",
    "NotChecked",
    "Report",
    "Row",
    "Severity",
    "api_role_exposure",
    "audit",
    "check_app_tables",
    "check_bookings_policies",
    "check_definers",
    "check_pooler",
    "check_views",
    "connected_role",
    "constrains_charge",
    "doctor",
    "dsn_endpoints",
    "dsn_pooler_findings",
    "judge_app_table_grants",
    "judge_app_table_triggers",
    "judge_bookings_policies",
    "judge_bookings_table",
    "judge_connected_role",
    "judge_definer_search_paths",
    "judge_grants",
    "judge_listener_login",
    "judge_pgmq_public",
    "judge_pooler",
    "judge_views",
    "member_scoped",
    "owners_login",
    "pg_temp_last",
    "pinned_path",
    "probe_pool_mode",
    "search_path_elements",
    "security_invoker",
]
