"""`listener dev`'s environment: a private PostgreSQL with PGMQ, the app's schema and the ledger, a
listener on it, and the HTTP port when asked for.

For apps written in other languages: point the app (or psql) at the DSN the command prints,
complete bookings, and watch the listener charge them in the terminal. Ctrl-C stops the listener
and the server and deletes the data directory unless --keep. With an HTTP port the dashboard is
served too, so an app's developer sees what the ledger did; its password is
$LISTENER_DASHBOARD_TOKEN or one made for the session. The app's schema is the demo schema, or
the app's own SQL files on a Supabase-shaped base (listener.devtools.app_schema states the rule).
The command (listener/cli/commands/dev.py) prints and runs the listener; this module sets up and
tears down what it runs on.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from psycopg import sql
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from listener.core.db import connect
from listener.core.sql_files import query
from listener.devtools import app_schema
from listener.devtools.app_schema import SchemaPath
from listener.devtools.embedded import check_port, embedded_server
from listener.errors import ConfigError
from listener.mapping import model as mapping_model
from listener.mapping.model import Mapping
from listener.ops.migrate import migrate
from listener.settings import Settings

if TYPE_CHECKING:
    from listener.core.worker import Worker

DEV_DATABASE = "app"


@dataclass(frozen=True)
class DevSession:
    """A running dev environment: where to connect, the listener to run, and the dashboard if served."""

    dsn: str
    tcp_dsn: str | None
    data_dir: Path
    # How many of the app's own schema files it was built from; 0 for the demo schema.
    schema_files: int
    worker: Worker
    dashboard_url: str | None = None
    # The dashboard's password when one was made for the session; None when it is $LISTENER_DASHBOARD_TOKEN.
    made_token: SecretStr | None = None


def prepare_database(
    admin_dsn: str, *, schema: Sequence[SchemaPath] = (), mapping: Mapping | None = None
) -> str:
    """Create the dev database if missing and install the app's schema (default: the demo schema),
    PGMQ and the ledger rendered from `mapping` (default: the coaching app's); return its DSN."""
    with connect(admin_dsn, purpose="dev") as conn:
        row = conn.execute(query("database_exists"), [DEV_DATABASE]).fetchone()
        if row is None:
            conn.execute(sql.SQL(query("create_database")).format(sql.Identifier(DEV_DATABASE)))
    dsn = make_conninfo(admin_dsn, dbname=DEV_DATABASE)
    if schema:
        app_schema.build_app_database(dsn, schema, mapping=mapping)
    else:
        migrate(dsn, with_demo_schema=True, mapping=mapping)
    return dsn


def check_options(*, port: int | None, schema: Sequence[SchemaPath]) -> list[Path]:
    """Refuse a taken TCP port or a missing schema file before anything starts; return the schema files."""
    check_port(port)
    return app_schema.schema_files(schema) if schema else []


def load_mapping(path: SchemaPath | None) -> Mapping | None:
    """The mapping file given with --mapping, parsed before anything starts (None: the coaching app's)."""
    if path is None:
        return None
    try:
        return mapping_model.load(Path(path))
    except mapping_model.MappingError as exc:
        raise ConfigError(str(exc)) from None


@contextmanager
def dev_session(
    settings: Settings,
    *,
    keep: bool = False,
    port: int | None = None,
    schema_files: Sequence[Path] = (),
    mapping: Mapping | None = None,
    http_port: int | None = None,
) -> Iterator[DevSession]:
    """Start the server, build the database, make the listener and serve HTTP if asked; stop them all after."""
    from listener.core.worker import Worker
    from listener.http.server import HttpServer, serve

    with embedded_server(keep=keep, port=port) as server:
        prepare_database(server.dsn(), schema=schema_files, mapping=mapping)
        dsn = server.dsn(DEV_DATABASE)
        worker = Worker(settings.model_copy(update={"dsn": SecretStr(dsn)}))
        http: HttpServer | None = None
        dashboard_url = made = None
        if http_port is not None:
            made = None if settings.dashboard_token else SecretStr(secrets.token_urlsafe(16))
            token = settings.dashboard_token or made
            http = serve(
                worker,
                port=http_port,
                host=settings.http_host,
                dashboard_token=token,
                timeout_s=settings.http_timeout_s,
            )
            host, bound = http.server_address
            dashboard_url = f"http://{host}:{bound}/"
        try:
            yield DevSession(
                dsn=dsn,
                tcp_dsn=server.tcp_dsn(DEV_DATABASE),
                data_dir=server.data_dir,
                schema_files=len(schema_files),
                worker=worker,
                dashboard_url=dashboard_url,
                made_token=made,
            )
        finally:
            if http is not None:
                http.shutdown()
                http.server_close()
