"""Requests as Supabase's API (PostgREST) makes them, for tests: no pytest here.

PostgREST logs in as ``authenticator`` and runs every request as one transaction:
``SET LOCAL ROLE`` to the JWT's role, the claims in ``request.jwt.claims`` (and, as older
versions did, ``request.jwt.claim.sub`` and ``.role``), the statement, COMMIT.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from listener.core.db import connect
from listener.core.sql_files import query


@dataclass(frozen=True)
class ApiResult:
    """What a request's statement returned."""

    rows: list[dict[str, Any]]
    rowcount: int


def authenticator_dsn(dsn: str) -> str:
    """The same server and database, logged in as authenticator (no password: the test servers trust)."""
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None and k != "password"}
    params["user"] = "authenticator"
    return make_conninfo("", **params)


def api_request(
    dsn: str,
    statement: str,
    params: Sequence[Any] | dict[str, Any] | None = None,
    *,
    role: str,
    user_id: uuid.UUID | None = None,
    claims: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> ApiResult:
    """Run one statement as a request under `role` and, when given, the signed-in user_id and the
    request's headers (lower-case names, as PostgREST puts them in request.headers); dsn logs in as
    authenticator (see authenticator_dsn)."""
    jwt: dict[str, Any] = {"role": role, **({"sub": str(user_id)} if user_id else {}), **(claims or {})}
    with connect(dsn, autocommit=False, purpose="api") as conn:
        conn.execute(sql.SQL(query("set_local_role")).format(sql.Identifier(role)))
        conn.execute(query("set_jwt_claims"), [json.dumps(jwt)])
        conn.execute(query("set_jwt_sub"), [str(jwt.get("sub", ""))])
        conn.execute(query("set_jwt_role"), [role])
        conn.execute(query("set_request_headers"), [json.dumps(headers or {})])
        cur = conn.execute(statement, params)
        rows = cur.fetchall() if cur.description else []
        rowcount = cur.rowcount
        conn.commit()
    return ApiResult(rows, rowcount)
