"""Where a test's PostgreSQL comes from: a given DSN, a Docker container (testcontainers), or the embedded wheel."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from listener.core.db import connect
from listener.devtools.embedded import embedded_server
from listener.errors import ConfigError


def docker_answers() -> bool:
    """Whether a Docker engine responds, so testcontainers can be used."""
    try:
        import docker  # installed with testcontainers

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:  # any failure (no package, no socket, no engine) means "no usable engine"
        return False


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
        with embedded_server() as server:
            yield server.dsn()
    else:
        raise ConfigError(f"unknown LISTENER_TEST_BACKEND {backend!r}: use dsn, docker or embedded")
