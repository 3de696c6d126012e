"""`listener run --http-port`: /metrics, /healthz and /readyz for machines, and the operator dashboard at /.

Trust boundary: the port binds 127.0.0.1 unless told otherwise. /metrics and the
probes are unauthenticated, as Prometheus and orchestrators expect, and every one
of them reads through the shared `Snapshot` (one connection, cached reads). The
dashboard exists only when LISTENER_DASHBOARD_TOKEN is set (404 otherwise), needs
that token on every request, and acts only on a POST that carries the
per-process form nonce from a same-origin page, or a Bearer token.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from listener.core.events import RawMessage
from listener.core.store import Outcome
from listener.core.worker import Worker
from listener.errors import DatabaseUnreachable
from listener.http import dashboard, dashboard_store
from listener.http.auth import REALM, Auth
from listener.http.metrics import OUTCOMES, DatabaseCollector, Metrics
from listener.http.snapshot import Snapshot

__all__ = ["OUTCOMES", "HttpServer", "serve"]

log = logging.getLogger("listener.http.server")

_MAX_FORM_BYTES = 65_536
_DASHBOARD_PATHS = ("/", "/redrive", "/replay")


class HttpServer(ThreadingHTTPServer):
    """The HTTP port; closing it closes the shared database connection too."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], snapshot: Snapshot, handler: type[BaseHTTPRequestHandler]):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)
        self.snapshot = snapshot

    def server_close(self) -> None:
        """Stop listening and close the metrics connection."""
        super().server_close()
        self.snapshot.close()


def serve(
    worker: Worker, *, port: int, host: str = "127.0.0.1", dashboard_token: SecretStr | None = None
) -> HttpServer:
    """Serve the port in a daemon thread; the worker's batches feed the metrics."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    snapshot = Snapshot(worker.dsn)
    registry.register(DatabaseCollector(snapshot, worker))
    auth = Auth(dashboard_token)
    previous = worker.on_batch

    def on_batch(batch: Sequence[RawMessage], outcomes: Sequence[Outcome], seconds: float) -> None:
        metrics.observe_batch(batch, outcomes, seconds)
        if previous is not None:
            previous(batch, outcomes, seconds)

    worker.on_batch = on_batch
    handler = _handler(worker=worker, registry=registry, snapshot=snapshot, auth=auth)
    server = HttpServer((host, port), snapshot, handler)
    threading.Thread(target=server.serve_forever, name="listener-http", daemon=True).start()
    bound_host, bound_port = server.server_address[:2]
    log.info(
        "serving /metrics, /healthz and /readyz%s on %s:%d",
        " and the dashboard" if auth.enabled else "",
        bound_host,
        bound_port,
    )
    return server


def _handler(
    *, worker: Worker, registry: CollectorRegistry, snapshot: Snapshot, auth: Auth
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "session-ledger"
        sys_version = ""

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/metrics":
                self._send(200, generate_latest(registry), "text/plain; version=0.0.4")
            elif url.path == "/healthz":
                ok = snapshot.depths() is not None
                self._send(200 if ok else 503, b"ok\n" if ok else b"database unreachable\n")
            elif url.path == "/readyz":
                ready = worker.ready
                self._send(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
            elif url.path in _DASHBOARD_PATHS:
                if self._authorized() is not None:
                    self._dashboard_get(url.path, parse_qs(url.query))
            else:
                self._send(404, b"not found\n")

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            if url.path not in ("/redrive", "/replay"):
                self._send(404, b"not found\n")
                return
            scheme = self._authorized()
            if scheme is None:
                return
            form = self._form()
            if form is None:
                return
            allowed = auth.form_allowed(
                scheme=scheme,
                nonce=next(iter(form.get("csrf", [])), None),
                origin=self.headers.get("Origin"),
                fetch_site=self.headers.get("Sec-Fetch-Site"),
                host=self.headers.get("Host"),
            )
            if not allowed or (form.get("confirm") or [""])[0] != "yes":
                log.warning("dashboard: refused a %s from %s (no valid form nonce)", url.path, self._client())
                self._html(
                    403, dashboard.render_message("refused", "This action needs the dashboard's form.")
                )
                return
            try:
                if url.path == "/redrive":
                    self._redrive(form)
                else:
                    self._replay(form)
            except DatabaseUnreachable:
                self._html(503, dashboard.render_message("unavailable", "The database could not be reached."))

        def _authorized(self) -> str | None:
            """The auth scheme used; None after answering 404 (no token set) or 401 (no valid token)."""
            if not auth.enabled:
                self._send(404, b"not found\n")
                return None
            scheme = auth.scheme(self.headers.get("Authorization"))
            if scheme is None:
                self._send(401, b"authentication required\n", headers={"WWW-Authenticate": REALM})
            return scheme

        def _dashboard_get(self, path: str, params: dict[str, list[str]]) -> None:
            try:
                if path == "/":
                    data = dashboard_store.read_dashboard(snapshot)
                    page = dashboard.render_page(data, ready=worker.ready, listener_id=str(worker.id))
                    self._html(200, page)
                elif path == "/redrive":
                    ids = _ints(params.get("id", []))
                    if ids is None:
                        self._html(
                            400, dashboard.render_message("bad request", "Dead-letter ids are integers.")
                        )
                        return
                    letters = dashboard_store.dead_letters_by_id(snapshot, ids)
                    self._html(200, dashboard.render_redrive_confirm(letters, nonce=auth.nonce))
                else:
                    booking = _booking(params.get("booking", [""])[0])
                    if booking is None:
                        self._html(400, dashboard.render_message("bad request", "A booking id is a UUID."))
                        return
                    data = dashboard_store.read_dashboard(snapshot)
                    row = next((r for r in data.out_of_sync if r["booking_id"] == booking), None)
                    self._html(200, dashboard.render_replay_confirm(str(booking), row, nonce=auth.nonce))
            except DatabaseUnreachable:
                self._html(503, dashboard.render_message("unavailable", "The database could not be read."))

        def _redrive(self, form: dict[str, list[str]]) -> None:
            ids = _ints(form.get("id", []))
            if not ids:
                self._html(400, dashboard.render_message("bad request", "No dead letter was selected."))
                return
            moved = dashboard_store.redrive(snapshot, ids)
            log.info(
                "dashboard: redrove %d of %d dead letter(s) %s at the request of %s",
                moved,
                len(ids),
                ids,
                self._client(),
            )
            self._html(
                200,
                dashboard.render_message("redriven", f"Moved {moved} dead letter(s) back onto the queue."),
            )

        def _replay(self, form: dict[str, list[str]]) -> None:
            booking = _booking((form.get("booking") or [""])[0])
            if booking is None:
                self._html(400, dashboard.render_message("bad request", "A booking id is a UUID."))
                return
            sent = dashboard_store.replay(snapshot, booking)
            log.info(
                "dashboard: replayed booking %s (%d event) at the request of %s",
                booking,
                sent,
                self._client(),
            )
            self._html(200, dashboard.render_message("replayed", f"Enqueued booking {booking} again."))

        def _form(self) -> dict[str, list[str]] | None:
            try:
                length = int(self.headers.get("Content-Length") or "0")
            except ValueError:
                length = -1
            if not 0 <= length <= _MAX_FORM_BYTES:
                self._send(413, b"form too large\n")
                return None
            body = self.rfile.read(length).decode("utf-8", errors="replace")
            return parse_qs(body, max_num_fields=1000)

        def _client(self) -> str:
            return str(self.client_address[0])

        def _html(self, code: int, page: str) -> None:
            self._send(
                code,
                page.encode("utf-8"),
                "text/html; charset=utf-8",
                headers={
                    "Content-Security-Policy": dashboard.CSP,
                    "Cache-Control": "no-store",
                    "X-Frame-Options": "DENY",
                    "X-Content-Type-Options": "nosniff",
                    # no-referrer would make browsers send `Origin: null` on the forms, which the CSRF check refuses.
                    "Referrer-Policy": "same-origin",
                },
            )

        def _send(
            self, code: int, body: bytes, ctype: str = "text/plain", *, headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # The request line only; headers, and so the token, are never logged.
            log.debug(format, *args)

    return Handler


def _ints(values: list[str]) -> list[int] | None:
    try:
        return [int(v) for v in values]
    except ValueError:
        return None


def _booking(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text.strip())
    except ValueError:
        return None
