"""`listener doctor`: a read-only security audit of the database the ledger is, or will be, installed on.

Each check reads the catalogs (queries `doctor_*` in sql/queries.sql) and turns the rows into
findings with a pure function, so the judgement is testable apart from the database. The
listener checks judge the login of --listener-dsn, or the DSN's own unless it is the owner's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict

from listener.core.db import Conn, connect
from listener.core.sql_files import query
from listener.errors import ConfigError

Severity = Literal["high", "medium", "low"]
SEVERITY_ORDER: dict[str, int] = {"high": 0, "medium": 1, "low": 2}

TRANSACTION_POOLER_PORT = 6543
SUPABASE_POOLER_HOST = "pooler.supabase.com"

# The checks that judge the listener's login, and the option that names it.
LISTENER_CHECKS = ("listener_superuser", "listener_owner")
LISTENER_DSN_OPTION = "--listener-dsn"

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

# Qualified under doctor's empty search_path, bare where the caller's path has public; never another schema's.
_MEMBER_CALL = re.compile(r"(?<![\w.])(?:public\.)?is_org_member\s*\(")
_OR = re.compile(r"\bOR\b")
_TRUE = frozenset({"true", "on", "yes", "1", "t", "y"})
_REVOKE = {"schema": "SCHEMA", "table": "TABLE", "sequence": "SEQUENCE", "function": "FUNCTION"}

# What a client's booking may say: never a charging status, only its own pack in its own org.
_CLIENT_CHECK = (
    "status IN ('pending', 'confirmed', 'cancelled') AND (purchase_id IS NULL OR purchase_id IN "
    "(SELECT p.id FROM public.client_purchases p WHERE p.client_id = bookings.client_id "
    "AND p.org_id = bookings.org_id))"
)


@dataclass(frozen=True)
class Finding:
    """One problem: a stable check id, how bad it is, what it is about, and the one-line fix."""

    check: str
    severity: Severity
    object: str
    message: str
    fix: str


@dataclass(frozen=True)
class NotChecked:
    """A check doctor did not run, and why: not a finding, and no verdict either way."""

    check: str
    reason: str


@dataclass
class Report:
    """Everything doctor found, worst first, the checks it skipped, and lines of context that are not problems."""

    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    not_checked: list[NotChecked] = field(default_factory=list)
    ledger_installed: bool = False

    @property
    def has_high(self) -> bool:
        """Whether any finding is high, which makes the command exit non-zero."""
        return any(f.severity == "high" for f in self.findings)

    def as_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return {
            "ledger_installed": self.ledger_installed,
            "high": sum(f.severity == "high" for f in self.findings),
            "findings": [asdict(f) for f in self.findings],
            "not_checked": [asdict(n) for n in self.not_checked],
            "notes": list(self.notes),
        }


Row = Mapping[str, Any]


# --- 1. policies on public.bookings -------------------------------------------------------------


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
            object="public.bookings",
            message=f"row-level security is off on public.bookings and {roles} may write it",
            fix="ALTER TABLE public.bookings ENABLE ROW LEVEL SECURITY",
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
    name = _quote(row["name"])
    roles = ", ".join("PUBLIC" if r == "public" else r for r in row["roles"])
    what = "insert bookings setting" if row["cmd"] == "INSERT" else "change their bookings'"
    check = _write_check(row)
    message = (
        f"{row['cmd']} policy {name} on public.bookings lets {roles} {what} "
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
        fix = f"{guard}; tighten: ALTER POLICY {name} ON public.bookings WITH CHECK (({condition}) AND {_CLIENT_CHECK})"
    return Finding(
        check="bookings_policy_not_member_scoped",
        severity=severity,
        object=f"{name} ON public.bookings",
        message=message,
        fix=fix,
    )


def check_bookings_policies(conn: Conn) -> list[Finding]:
    """Check 1: who may write public.bookings past row-level security."""
    table = conn.execute(query("doctor_bookings_table")).fetchone()
    if table is None:
        return []
    guards: dict[str, list[str]] = {}
    for trigger in conn.execute(query("doctor_guard_trigger_events")):
        if trigger["enabled"]:
            for write in trigger["events"]:
                guards.setdefault(write, []).append(trigger["name"])
    policies = conn.execute(query("doctor_bookings_policies")).fetchall()
    return judge_bookings_table(table) + judge_bookings_policies(policies, guards)


# --- 2. views running with their owner's rights -----------------------------------------------


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


def check_views(conn: Conn) -> list[Finding]:
    """Check 2: views over bookings or client_purchases without security_invoker."""
    return judge_views(conn.execute(query("doctor_views_over_money")).fetchall())


# --- 3. API roles on the ledger's and PGMQ's objects ------------------------------------------


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
                fix=f"REVOKE {revoke} ON {keyword} {name} FROM {_grantee(grantee)}",
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
    revoke = ", ".join(_grantee(u) for u in users) or "anon, authenticated, service_role"
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


# --- 4. SECURITY DEFINER functions whose search path lets pg_temp come first --------------------

# What the ledger's guard calls with the owner's rights: the membership test, and the auth
# helpers that name the caller.
GUARD_DEPENDENCIES: frozenset[tuple[str, str]] = frozenset(
    {("public", "is_org_member"), ("auth", "uid"), ("auth", "role"), ("auth", "jwt")}
)


def search_path_elements(setting: str) -> list[str]:
    """The schemas of a stored search_path setting, each as written (double-quoted where it needs it)."""
    elements: list[str] = []
    current: list[str] = []
    quoted = False
    i = 0
    while i < len(setting):
        char = setting[i]
        current.append(char)
        if char == '"' and quoted and setting[i + 1 : i + 2] == '"':
            current.append('"')
            i += 1
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            current.pop()
            elements.append("".join(current).strip())
            current = []
        i += 1
    elements.append("".join(current).strip())
    # '' is stored as "": a path naming no schema at all.
    return [e for e in elements if e and e != '""']


def _is_pg_temp(element: str) -> bool:
    return element.lower() == "pg_temp" or element == '"pg_temp"'


def pg_temp_last(elements: list[str]) -> bool:
    """Whether a path names pg_temp, and names it first as its last element (a later repeat is ignored)."""
    positions = [i for i, e in enumerate(elements) if _is_pg_temp(e)]
    return bool(positions) and positions[0] == len(elements) - 1


def pinned_path(setting: str | None) -> list[str]:
    """The path to set instead: the function's own schemas, pg_temp moved or added last."""
    if setting is None:
        # The app's bodies name its tables unqualified, as its callers' path (public) found them.
        return ["public", "pg_temp"]
    kept = [e for e in search_path_elements(setting) if not _is_pg_temp(e)]
    return [*(kept or ["pg_catalog"]), "pg_temp"]


def _path_problem(setting: str | None) -> str:
    if setting is None:
        return "sets no search_path, so it runs under its caller's, where pg_temp comes first unless named"
    elements = search_path_elements(setting)
    shown = ", ".join(elements) or "''"
    if not any(_is_pg_temp(e) for e in elements):
        return f"has search_path {shown}, which does not name pg_temp, so pg_temp is searched first"
    return f"has search_path {shown}, which searches pg_temp before schemas named after it"


def judge_definer_search_paths(functions: Iterable[Row]) -> list[Finding]:
    """The app's SECURITY DEFINER functions whose search path does not put pg_temp explicitly last."""
    findings = []
    for row in functions:
        setting: str | None = row["search_path"]
        if setting is not None and pg_temp_last(search_path_elements(setting)):
            continue
        name = row["name"]
        severity: Severity = "medium"
        stake = ""
        if (row["schema"], row["function"]) in GUARD_DEPENDENCIES:
            severity, stake = "high", "; the ledger's guard calls it with the ledger owner's rights"
        elif row["touches_money"]:
            severity, stake = "high", "; its body touches bookings or client_purchases"
        elif row.get("policy_of"):
            severity, stake = "high", f"; a row security policy of {row['policy_of']} calls it"
        findings.append(
            Finding(
                check="security_definer_search_path",
                severity=severity,
                object=name,
                message=(
                    f"SECURITY DEFINER function {name} {_path_problem(setting)}: a caller's temporary "
                    f"type or table can stand in for one it names and run code as its owner{stake}"
                ),
                fix=f"ALTER FUNCTION {name} SET search_path = {', '.join(pinned_path(setting))}",
            )
        )
    return findings


def check_definers(conn: Conn) -> list[Finding]:
    """Check 4: the app's SECURITY DEFINER functions whose search path lets pg_temp come first."""
    return judge_definer_search_paths(conn.execute(query("doctor_definer_search_path")).fetchall())


# --- 4b. code and privileges on the app's tables that the ledger writes as their owner -----------


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
            fix=f"DROP TRIGGER {_quote_ident(row['trigger'])} ON {row['table_name']}",
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
                fix=f"REVOKE {', '.join(privileges)} ON {row['table_name']} FROM {_grantee(row['grantee'])}",
            )
        )
    return findings


def check_app_tables(conn: Conn) -> list[Finding]:
    """Check 4b: foreign triggers on, and API roles' TRIGGER/TRUNCATE/REFERENCES on, bookings and packs."""
    return judge_app_table_triggers(
        conn.execute(query("doctor_app_table_triggers")).fetchall()
    ) + judge_app_table_grants(conn.execute(query("doctor_app_table_grants")).fetchall())


# --- 5. transaction-mode pooler -----------------------------------------------------------------


def judge_pooler(
    *, hosts: list[str], ports: list[int], pool_mode: str | None, listener: bool = False
) -> list[Finding]:
    """A transaction-mode pooler by port, Supabase host, or PgBouncer's pool_mode (of --listener-dsn when listener)."""
    reasons = []
    if TRANSACTION_POOLER_PORT in ports:
        pooled = [h for h in hosts if SUPABASE_POOLER_HOST in h.lower()]
        where = f"Supabase's pooler {pooled[0]}" if pooled else "a host"
        reasons.append(f"{where} on port {TRANSACTION_POOLER_PORT}, the transaction-mode pooler's port")
    if pool_mode is not None and pool_mode.strip().lower() == "transaction":
        reasons.append("the server reports pool_mode = transaction")
    if not reasons:
        return []
    return [
        Finding(
            check="transaction_pooler",
            severity="high",
            object=", ".join(f"{h}:{p}" for h, p in zip(hosts, ports, strict=True))
            + (f" ({LISTENER_DSN_OPTION})" if listener else ""),
            message=(
                f"{_dsn_label(listener)} goes through a transaction-mode pooler ("
                + "; ".join(reasons)
                + "), which supports neither LISTEN nor prepared statements"
            ),
            fix="use the direct connection (5432) or the session pooler",
        )
    ]


def dsn_endpoints(dsn: str, *, listener: bool = False) -> tuple[list[str], list[int]]:
    """The (hosts, ports) a DSN (--listener-dsn when listener) names, pairwise; port 5432 where it names none."""
    label = _dsn_label(listener)
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"{label} is not a valid connection string ({type(exc).__name__})") from None
    hosts = str(params.get("host") or params.get("hostaddr") or "localhost").split(",")
    raw_ports = str(params.get("port") or "5432").split(",")
    try:
        ports = [int(p) if p.strip() else 5432 for p in raw_ports]
    except ValueError:
        raise ConfigError(f"{label}'s port is not a number") from None
    if len(ports) == 1:
        ports = ports * len(hosts)
    if len(ports) != len(hosts):
        raise ConfigError(f"{label} names a different number of hosts and ports")
    return hosts, ports


def dsn_pooler_findings(dsn: str, *, listener: bool = False) -> list[Finding]:
    """Check 5 from the DSN's text alone, without connecting."""
    hosts, ports = dsn_endpoints(dsn, listener=listener)
    return judge_pooler(hosts=hosts, ports=ports, pool_mode=None, listener=listener)


def probe_pool_mode(conn: Conn) -> str | None:
    """PgBouncer's pool_mode where a pooler answers SHOW pool_mode; None on plain PostgreSQL."""
    try:
        row = conn.execute(query("pool_mode")).fetchone()
    except (errors.ProgrammingError, errors.NotSupportedError):
        # PostgreSQL has no such setting (42704): nothing in between, or a pooler that passes it on.
        return None
    if row is None:
        return None
    return str(next(iter(row.values())))


def check_pooler(conn: Conn, *, listener: bool = False) -> list[Finding]:
    """Check 5 on the live connection: where libpq actually connected, and what it says it is."""
    pool_mode = probe_pool_mode(conn)
    return judge_pooler(
        hosts=[conn.info.host], ports=[conn.info.port], pool_mode=pool_mode, listener=listener
    )


# --- 6. the listener's own role -----------------------------------------------------------------


def judge_connected_role(row: Row, *, listener: bool = False) -> list[Finding]:
    """The listener's role must be neither a superuser nor (a member of) an owner of what it guards."""
    who = row["name"]
    label = _dsn_label(listener)
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
        ("table public.bookings", "bookings_owner", "acts_as_bookings_owner"),
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
        return f"{who}, the owner of table public.bookings"
    return None


def connected_role(conn: Conn) -> Row | None:
    """The doctor_connected_role row of a connection."""
    row: Row | None = conn.execute(query("doctor_connected_role")).fetchone()
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


# --- the whole audit ------------------------------------------------------------------------------

CATALOG_CHECKS: tuple[Callable[[Conn], list[Finding]], ...] = (
    check_bookings_policies,
    check_views,
    api_role_exposure,
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
        installed = conn.execute(query("doctor_installed")).fetchone()
        assert installed is not None
        report.ledger_installed = bool(installed["ledger"])
        if not installed["ledger"]:
            report.notes.append(
                "the ledger is not installed yet (run `listener migrate`); checked what applies before it"
            )
        if not installed["bookings"]:
            report.notes.append("public.bookings does not exist; its policies and owner were not checked")
        if not installed["pgmq"]:
            report.notes.append("PGMQ is not installed; there are no queues to check yet")
        for check in CATALOG_CHECKS:
            report.findings.extend(check(conn))
        if listener is None:
            judge_listener_login(report, connected_role(conn), listener=False)
    if listener is not None:
        report.findings.extend(check_pooler(listener, listener=True))
        with listener.transaction():
            _read_only(listener)
            row = connected_role(listener)
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


def _dsn_label(listener: bool) -> str:
    return "the listener's DSN" if listener else "the DSN"


def _listeners(finding: Finding) -> bool:
    """Whether a pooler finding is about --listener-dsn rather than the DSN."""
    return finding.object.endswith(f"({LISTENER_DSN_OPTION})")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _grantee(name: str) -> str:
    return name if name == "PUBLIC" or re.fullmatch(r"[a-z_][a-z0-9_]*", name) else _quote(name)


def _quote_ident(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else _quote(name)
