"""Throwaway databases on an admin connection: uniquely named, cloned from a template, dropped with force."""

from __future__ import annotations

import logging
import uuid

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from listener.core.db import connect, describe
from listener.core.sql_files import query
from listener.errors import DatabaseUnreachable

log = logging.getLogger("listener.throwaway")


def with_database(dsn: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    return make_conninfo(dsn, dbname=dbname)


def create_database(admin_dsn: str, *, prefix: str, template: str | None = None) -> str:
    """Create a uniquely named database (optionally from a template); return its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with connect(admin_dsn, purpose="tests") as conn:
        if template:
            conn.execute(
                sql.SQL(query("create_database_from_template")).format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        else:
            conn.execute(sql.SQL(query("create_database")).format(sql.Identifier(name)))
    return with_database(admin_dsn, name)


def drop_database(admin_dsn: str, dsn: str) -> None:
    """Drop a database made by create_database, disconnecting whoever is still on it."""
    name = conninfo_to_dict(dsn)["dbname"]
    try:
        with connect(admin_dsn, purpose="tests") as conn:
            conn.execute(sql.SQL(query("drop_database")).format(sql.Identifier(str(name))))
    except (psycopg.Error, DatabaseUnreachable) as exc:
        log.warning("could not drop %s: %s", describe(dsn), type(exc).__name__)
