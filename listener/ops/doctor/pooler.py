"""Check 5: a transaction-mode pooler between the listener and the database, from the DSN's text and live."""

from __future__ import annotations

import psycopg
from psycopg import errors
from psycopg.conninfo import conninfo_to_dict

from listener.core.db import Conn
from listener.core.sql_files import query
from listener.errors import ConfigError
from listener.ops.doctor.report import LISTENER_DSN_OPTION, Finding, dsn_label

TRANSACTION_POOLER_PORT = 6543
SUPABASE_POOLER_HOST = "pooler.supabase.com"


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
                f"{dsn_label(listener)} goes through a transaction-mode pooler ("
                + "; ".join(reasons)
                + "), which supports neither LISTEN nor prepared statements"
            ),
            fix="use the direct connection (5432) or the session pooler",
        )
    ]


def dsn_endpoints(dsn: str, *, listener: bool = False) -> tuple[list[str], list[int]]:
    """The (hosts, ports) a DSN (--listener-dsn when listener) names, pairwise; port 5432 where it names none."""
    label = dsn_label(listener)
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
