"""A throwaway PostgreSQL 15 cluster initialised as Supabase initialises one, and PostgREST-shaped
requests against it: for the tests and the fault scenarios; no pytest here.

The cluster runs the system's PostgreSQL 15 (``/usr/lib/postgresql/15/bin``) as the ``postgres`` OS
user when we are root, on a free TCP port of 127.0.0.1 with trust authentication and fsync on.
As on Supabase: the bootstrap superuser is ``supabase_admin``; ``postgres`` is created a superuser,
the Supabase-shaped base is applied, and then ``postgres`` is demoted to ``NOSUPERUSER CREATEDB
CREATEROLE LOGIN REPLICATION BYPASSRLS``. With ``pg_cron=True`` the server preloads pg_cron
(Debian's ``postgresql-15-cron``; missing, it is an error, never a skip), ``supabase_admin``
creates the extension in ``cron.database_name`` and grants ``postgres`` what Supabase's event
trigger grants.

An app database (:func:`create_app_database`) is created owned by ``postgres``; the base and the
app's schema files are applied as ``supabase_admin`` (the platform restoring the app's dump: its
``OWNER TO postgres`` lines make ``postgres`` the owner of every app object, as in production),
and the ledger is installed by ``migrate()`` connected as the non-superuser ``postgres``, as
``listener migrate`` runs on Supabase.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql

from listener.core.db import connect
from listener.core.sql_files import query
from listener.devtools.app_schema import SchemaPath, apply_supabase_base, build_app_database, schema_files
from listener.devtools.ports import free_port
from listener.errors import ClusterUnavailable, PgCronUnavailable
from listener.ops.migrate import MigrateReport, migrate
from listener.testing.postgrest import ApiResult, api_request

SYSTEM_BIN = Path("/usr/lib/postgresql/15/bin")
ADMIN = "supabase_admin"
OS_USER = "postgres"


@dataclass(frozen=True)
class SupabaseCluster:
    """Where a running Supabase-shaped cluster is, and how to reach it as each role."""

    data_dir: Path
    socket_dir: Path
    port: int
    cron_database: str | None

    def dsn(self, dbname: str = "postgres", *, user: str = ADMIN) -> str:
        """A libpq URI over TCP as `user` (trust authentication: no password)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def admin_dsn(self, dbname: str = "postgres") -> str:
        """As the cluster's superuser, supabase_admin."""
        return self.dsn(dbname, user=ADMIN)

    def postgres_dsn(self, dbname: str = "postgres") -> str:
        """As the demoted, non-superuser postgres that migrations run as."""
        return self.dsn(dbname, user="postgres")

    def authenticator_dsn(self, dbname: str = "postgres") -> str:
        """As authenticator, the role PostgREST logs in as."""
        return self.dsn(dbname, user="authenticator")


def _as_os_user(cmd: list[str], *, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a server binary: as the postgres OS user when root (initdb and postgres refuse root)."""
    kwargs: dict[str, Any] = {}
    if os.geteuid() == 0:
        kwargs = {"user": OS_USER, "group": OS_USER, "extra_groups": []}
    try:
        return subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=True, **kwargs
        )
    except FileNotFoundError:
        raise ClusterUnavailable(
            f"{cmd[0]} not found: the tests need the system PostgreSQL 15 (apt-get install postgresql-15)"
        ) from None
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise ClusterUnavailable(f"{Path(cmd[0]).name} failed: {lines[-1] if lines else exc}") from None


def pg_cron_installed(bin_dir: Path = SYSTEM_BIN) -> bool:
    """Whether the server binaries in bin_dir have the pg_cron library."""
    return (bin_dir.parent / "lib" / "pg_cron.so").is_file()


def _settings(port: int, socket_dir: Path, cron_database: str | None) -> str:
    lines = [
        "listen_addresses = '127.0.0.1'",
        f"port = {port}",
        f"unix_socket_directories = '{socket_dir}'",
        "fsync = on",
        "max_connections = 100",
        "shared_buffers = 32MB",
    ]
    if cron_database is not None:
        lines += [
            "shared_preload_libraries = 'pg_cron'",
            f"cron.database_name = '{cron_database}'",
            # jobs connect over TCP to this server, which listens on 127.0.0.1 only
            "cron.host = '127.0.0.1'",
        ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def supabase_cluster(
    *, pg_cron: bool = False, cron_database: str = "postgres", bin_dir: Path = SYSTEM_BIN
) -> Iterator[SupabaseCluster]:
    """Initialise and start a Supabase-shaped cluster in a temporary directory; stop and delete it after."""
    if pg_cron and not pg_cron_installed(bin_dir):
        raise PgCronUnavailable(
            f"pg_cron is not installed for {bin_dir.parent}: apt-get install -y postgresql-15-cron"
        )
    if not (bin_dir / "initdb").is_file():
        raise ClusterUnavailable(
            f"{bin_dir}/initdb not found: the tests need the system PostgreSQL 15 (apt-get install postgresql-15)"
        )
    parent = Path(tempfile.mkdtemp(prefix="session-ledger-supabase-"))
    data, socket_dir = parent / "data", parent / "socket"
    socket_dir.mkdir()
    if os.geteuid() == 0:
        for path in (parent, socket_dir):
            shutil.chown(path, OS_USER, OS_USER)
    started = False
    try:
        _as_os_user(
            [str(bin_dir / "initdb"), "-D", str(data), "-U", ADMIN, "--auth=trust", "-E", "UTF8",
             "--locale=C", "--no-instructions"],
            cwd=parent,
        )  # fmt: skip
        with (data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("include = 'supabase.conf'\n")
        port = 0
        for _attempt in range(3):  # a free port may be taken between the probe and the start
            port = free_port()
            (data / "supabase.conf").write_text(
                _settings(port, socket_dir, cron_database if pg_cron else None), encoding="utf-8"
            )
            try:
                _as_os_user(
                    [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(parent / "server.log"), "-w",
                     "-t", "60", "start"],
                    cwd=parent,
                )  # fmt: skip
                started = True
                break
            except ClusterUnavailable:
                continue
        if not started:
            log = (parent / "server.log").read_text(errors="replace").strip().splitlines()
            raise ClusterUnavailable(f"PostgreSQL did not start: {log[-1] if log else 'no log'}")
        cluster = SupabaseCluster(data, socket_dir, port, cron_database if pg_cron else None)
        _bootstrap(cluster)
        yield cluster
    finally:
        if started:
            with contextlib.suppress(ClusterUnavailable, subprocess.TimeoutExpired):
                _as_os_user(
                    [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], cwd=parent
                )
        shutil.rmtree(parent, ignore_errors=True)


def _bootstrap(cluster: SupabaseCluster) -> None:
    """What Supabase's init scripts do once per cluster, in their order."""
    with connect(cluster.admin_dsn(), purpose="tests") as conn:
        conn.execute(query("supabase_postgres_role"))
    apply_supabase_base(cluster.admin_dsn())
    with connect(cluster.admin_dsn(), purpose="tests") as conn:
        conn.execute(query("supabase_role_settings"))
    if cluster.cron_database is not None:
        with connect(cluster.admin_dsn(cluster.cron_database), purpose="tests") as conn:
            conn.execute(query("supabase_pg_cron"))


def create_app_database(
    cluster: SupabaseCluster,
    *,
    schema: Sequence[SchemaPath] = (),
    name: str | None = None,
    template: str | None = None,
    ledger: bool = True,
) -> str:
    """A database owned by postgres: from a template, or the base, the app's schema files and the ledger
    (migrated as postgres); return its name."""
    name = name or f"app_{uuid.uuid4().hex[:12]}"
    schema_files(schema)  # a missing path fails before the database is created
    with connect(cluster.admin_dsn(), purpose="tests") as conn:
        if template is None:
            statement = sql.SQL(query("supabase_create_app_database")).format(sql.Identifier(name))
        else:
            statement = sql.SQL(query("supabase_create_app_database_from_template")).format(
                sql.Identifier(name), sql.Identifier(template)
            )
        conn.execute(statement)
    if template is None:
        build_app_database(
            cluster.admin_dsn(name), schema, ledger_dsn=cluster.postgres_dsn(name), ledger=ledger
        )
    return name


def migrate_as_postgres(cluster: SupabaseCluster, dbname: str) -> MigrateReport:
    """`listener migrate` as Supabase runs it: connected as the non-superuser postgres."""
    return migrate(cluster.postgres_dsn(dbname))


def drop_app_database(cluster: SupabaseCluster, name: str) -> None:
    """Drop a database, disconnecting whoever is still on it."""
    with connect(cluster.admin_dsn(), purpose="tests") as conn:
        conn.execute(sql.SQL(query("drop_database")).format(sql.Identifier(name)))


def mark_template(cluster: SupabaseCluster, name: str) -> None:
    """Let databases be cloned from this one without connections to it."""
    with connect(cluster.admin_dsn(), purpose="tests") as conn:
        conn.execute(sql.SQL(query("mark_template")).format(sql.Identifier(name)))


@dataclass(frozen=True)
class SupabaseAppDb:
    """One app database on a Supabase-shaped cluster, reachable as each of Supabase's roles."""

    cluster: SupabaseCluster
    name: str

    @property
    def admin_dsn(self) -> str:
        """As supabase_admin, the superuser."""
        return self.cluster.admin_dsn(self.name)

    @property
    def postgres_dsn(self) -> str:
        """As the non-superuser postgres: the owner of the app's objects, and what `listener migrate` and
        the listener connect as on Supabase."""
        return self.cluster.postgres_dsn(self.name)

    @property
    def authenticator_dsn(self) -> str:
        """As authenticator, the API's login."""
        return self.cluster.authenticator_dsn(self.name)

    def request(
        self,
        statement: str,
        params: Sequence[Any] | dict[str, Any] | None = None,
        *,
        role: str,
        user_id: uuid.UUID | None = None,
        claims: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> ApiResult:
        """One PostgREST-style request (see listener.testing.postgrest)."""
        return api_request(
            self.authenticator_dsn,
            statement,
            params,
            role=role,
            user_id=user_id,
            claims=claims,
            headers=headers,
        )
