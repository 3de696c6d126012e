"""Check 4: the app's SECURITY DEFINER functions whose search path lets pg_temp come first."""

from __future__ import annotations

from collections.abc import Iterable

from listener.core.db import Conn
from listener.core.sql_files import query
from listener.ops.doctor.report import Finding, Row, Severity
from listener.ops.doctor.tables import AppTables

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


def check_definers(conn: Conn, tables: AppTables) -> list[Finding]:
    """Check 4: the app's SECURITY DEFINER functions whose search path lets pg_temp come first."""
    return judge_definer_search_paths(
        conn.execute(query("doctor_definer_search_path"), tables.params).fetchall()
    )
