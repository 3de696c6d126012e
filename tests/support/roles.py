"""Throwaway login roles, as an app or an operator would create them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from listener.core.db import connect


@contextmanager
def login_role(admin_dsn: str, member_of: str, *, prefix: str = "ledger_login") -> Iterator[str]:
    """A DSN, on admin_dsn's server and database, of a fresh login in member_of; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with connect(admin_dsn, purpose="tests") as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(sql.Identifier(name), sql.Identifier(member_of))
        )
    params = {k: v for k, v in conninfo_to_dict(admin_dsn).items() if k != "password"}
    params["user"] = name
    try:
        yield make_conninfo("", **params)
    finally:
        with connect(admin_dsn, purpose="tests") as conn:
            conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@contextmanager
def listener_login(admin_dsn: str) -> Iterator[str]:
    """A DSN of a fresh login that is only a member of session_ledger_listener, as production runs it."""
    with login_role(admin_dsn, "session_ledger_listener", prefix="ledger_listener") as dsn:
        yield dsn
