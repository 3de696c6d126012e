"""`listener dev`: a private PostgreSQL with PGMQ, the app's schema and the ledger, and a listener in front.

For apps written in other languages: point the app (or psql) at the printed DSN,
complete bookings, and watch the listener charge them in this terminal. Ctrl-C
stops the listener and the server and deletes the data directory unless --keep.
With --http-port the dashboard is served too, so an app's developer sees what the
ledger did; its password is $LISTENER_DASHBOARD_TOKEN or one made for the session.
The app's schema is the demo schema, or with --schema the app's own SQL files on a
Supabase-shaped base (listener.devtools.app_schema states the rule).
"""

from __future__ import annotations

import logging
import secrets
import signal
import sys
from collections.abc import Sequence
from types import FrameType
from typing import TextIO

from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from listener.core.db import connect
from listener.core.sql_files import query
from listener.devtools import app_schema
from listener.devtools.app_schema import SchemaPath
from listener.devtools.embedded import check_port, embedded_server
from listener.ops.migrate import migrate
from listener.settings import Settings

log = logging.getLogger("listener.dev")

DEV_DATABASE = "app"


def prepare_database(admin_dsn: str, *, schema: Sequence[SchemaPath] = ()) -> str:
    """Create the dev database if missing and install the app's schema (default: the demo schema),
    PGMQ and the ledger; return its DSN."""
    with connect(admin_dsn, purpose="dev") as conn:
        row = conn.execute(query("database_exists"), [DEV_DATABASE]).fetchone()
        if row is None:
            conn.execute(sql.SQL(query("create_database")).format(sql.Identifier(DEV_DATABASE)))
    dsn = make_conninfo(admin_dsn, dbname=DEV_DATABASE)
    if schema:
        app_schema.build_app_database(dsn, schema)
    else:
        migrate(dsn, with_demo_schema=True)
    return dsn


def run_dev(
    settings: Settings,
    *,
    keep: bool = False,
    port: int | None = None,
    out: TextIO | None = None,
    schema_files: Sequence[SchemaPath] = (),
    http_port: int | None = None,
) -> None:
    """Start everything, print how to connect, and run the listener until SIGINT or SIGTERM."""
    from listener.core.worker import Worker
    from listener.http.server import HttpServer, serve

    out = out or sys.stdout
    check_port(port)
    # a missing file fails before the server starts
    files = app_schema.schema_files(schema_files) if schema_files else []

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    say("starting an embedded PostgreSQL (no server or Docker needed)...")
    with embedded_server(keep=keep, port=port) as server:
        prepare_database(server.dsn(), schema=files)
        dsn = server.dsn(DEV_DATABASE)
        worker = Worker(settings.model_copy(update={"dsn": SecretStr(dsn)}))

        def stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s; stopping", signal.Signals(signum).name)
            worker.request_stop()

        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        what = f"the app schema from {len(files)} file(s)" if files else "the demo app schema"
        say(f"PostgreSQL with PGMQ, {what} and the session ledger is ready.")
        say(f"DATABASE_URL={dsn}")
        tcp = server.tcp_dsn(DEV_DATABASE)
        if tcp:
            say(f"TCP_DATABASE_URL={tcp}")
        say(f'connect:  psql "{tcp or dsn}"')
        say(f"data:     {server.data_dir} ({'kept' if keep else 'deleted'} on exit)")
        http: HttpServer | None = None
        if http_port is not None:
            given = settings.dashboard_token
            token = given or SecretStr(secrets.token_urlsafe(16))
            http = serve(worker, port=http_port, host=settings.http_host, dashboard_token=token)
            host, bound = http.server_address
            password = "$LISTENER_DASHBOARD_TOKEN" if given else token.get_secret_value()
            say(f"dashboard: http://{host}:{bound}/ (HTTP Basic, any user name, password {password})")
        say("the listener is running: complete a booking and watch it charged here; Ctrl-C stops everything")
        try:
            worker.run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if http is not None:
                http.shutdown()
                http.server_close()
    say("stopped the listener and the server" + ("" if keep else "; deleted the data directory"))
    if keep:
        say(f"data directory kept at {server.data_dir}")
