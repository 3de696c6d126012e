"""A real `listener run --http-port` process for the HTTP tests, and the least-privilege login it runs as."""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from listener.devtools.ports import free_port

from support.world import LISTENER


class Headers(dict[str, str]):
    """Response headers, found by name in any case, as HTTP compares them."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        super().__init__((name.lower(), value) for name, value in items)

    def __getitem__(self, name: str) -> str:
        return super().__getitem__(name.lower())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and super().__contains__(name.lower())


@dataclass
class Response:
    """One HTTP answer."""

    status: int
    headers: Headers
    body: str


def request(
    url: str,
    *,
    token: str | None = None,
    bearer: bool = False,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """GET (or POST with data) and return the answer, 4xx and 5xx included."""
    all_headers = dict(headers or {})
    if token is not None:
        if bearer:
            all_headers["Authorization"] = f"Bearer {token}"
        else:
            all_headers["Authorization"] = "Basic " + base64.b64encode(f"ops:{token}".encode()).decode()
    req = urllib.request.Request(
        url, data=data, headers=all_headers, method="POST" if data is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return Response(r.status, Headers(r.headers.items()), r.read().decode())
    except urllib.error.HTTPError as e:
        return Response(e.code, Headers(e.headers.items()), e.read().decode())


class ListenerProcess:
    """`python -m listener run --http-port P` on a test database, stderr kept in a file."""

    def __init__(
        self, dsn: str, *, token: str | None = None, host: str = "127.0.0.1", extra: tuple[str, ...] = ()
    ) -> None:
        self.host = host
        self.port = free_port(host)
        self.log = Path(tempfile.mkstemp(prefix="listener-http-", suffix=".log")[1])
        env = {
            k: v for k, v in os.environ.items() if k not in ("LISTENER_DASHBOARD_TOKEN", "LISTENER_HTTP_HOST")
        }
        env["LISTENER_POLL_INTERVAL_S"] = "0.2"
        if token is not None:
            env["LISTENER_DASHBOARD_TOKEN"] = token
        argv = [*LISTENER, "run", "--dsn", dsn, "--http-port", str(self.port), *extra]
        self._stderr = self.log.open("w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._stderr, env=env)
        self.base = f"http://{host}:{self.port}"

    def wait_ready(self, timeout: float = 60) -> ListenerProcess:
        """Block until /readyz answers 200."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"listener exited: {self.log.read_text()}"
            try:
                if request(f"{self.base}/readyz").status == 200:
                    return self
            except OSError:  # refused, reset or timed out: not up yet
                pass
            assert time.monotonic() < deadline, f"listener never became ready: {self.log.read_text()}"
            time.sleep(0.1)

    def stop(self) -> str:
        """Stop it; return what it logged."""
        self.proc.terminate()
        try:
            code = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        self._stderr.close()
        text = self.log.read_text()
        self.log.unlink(missing_ok=True)
        assert code == 0, text
        return text


@contextmanager
def running(dsn: str, **kwargs: object) -> Iterator[ListenerProcess]:
    """A ready listener process for the block's duration."""
    proc = ListenerProcess(dsn, **kwargs)  # type: ignore[arg-type]
    try:
        yield proc.wait_ready()
    finally:
        if proc.proc.poll() is None:
            proc.stop()


def metric(text: str, name: str) -> float:
    """The value of an unlabelled sample in a /metrics page."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")
