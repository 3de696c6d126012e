"""`listener run --http-port`: /metrics, /livez, /healthz and /readyz for machines, and the operator dashboard at /.

/livez says the process's loop goes round (container liveness: restart when it fails);
/readyz that it charges now (LISTEN alive, the queue polled, charging not paused);
/healthz that the database answers.

Trust boundary: the port binds 127.0.0.1 unless told otherwise. /metrics and the
probes are unauthenticated, as Prometheus and orchestrators expect, and every one
of them reads through the shared `Snapshot` (one connection, cached reads). The
dashboard exists only when LISTENER_DASHBOARD_TOKEN is set (404 otherwise), needs
that token on every request, and acts only on a POST that carries the
per-process form nonce from a same-origin page, or a Bearer token.

Bounded by construction: waitress reads every request whole on its one event-loop
thread and only then hands it to a fixed pool of `WORKER_THREADS`, so a slow or
stalled client holds a socket, never a thread. A connection silent for `TIMEOUT_S`,
or whose request is still incomplete `TIMEOUT_S` after its first byte, is closed.
At most `MAX_CONNECTIONS` are open at once; past that, new ones wait in the
kernel's backlog until others close.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from listener.core.events import RawMessage
from listener.core.store import Outcome
from listener.core.worker import Worker
from listener.errors import ConfigError, DatabaseUnreachable
from listener.http import dashboard, dashboard_store
from listener.http.auth import REALM, Auth
from listener.http.metrics import OUTCOMES, DatabaseCollector, Metrics
from listener.http.snapshot import Snapshot
from listener.settings import Settings

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["MAX_CONNECTIONS", "OUTCOMES", "TIMEOUT_S", "WORKER_THREADS", "HttpServer", "serve"]

log = logging.getLogger("listener.http.server")

# Requests run here; every read goes through the one Snapshot connection, so more would only queue there.
WORKER_THREADS = 4
# Seconds a connection may stay silent, and that a request may take to arrive whole from its first
# byte: the http_timeout_s setting's default, for callers that pass no setting.
TIMEOUT_S: int = Settings.model_fields["http_timeout_s"].default
# Open connections at once; each costs a file descriptor and at most one buffered request.
MAX_CONNECTIONS = 256

_MAX_FORM_BYTES = 65_536
_MAX_HEADER_BYTES = 65_536
_DASHBOARD_PATHS = ("/", "/redrive", "/replay", "/discard", "/pack", "/search")
_ACTIONS = ("/redrive", "/replay", "/discard")
# The longest search the dashboard takes: an id or a part of a name, never a document.
_MAX_SEARCH = 200


class _Parser(HTTPRequestParser):
    """Waitress's request parser, remembering when its request's first byte arrived."""

    def __init__(self, adj: Adjustments) -> None:
        super().__init__(adj)
        self.started = time.monotonic()


class _Channel(HTTPChannel):
    """One connection, closed when its request has not arrived whole within the timeout."""

    parser_class = _Parser

    def readable(self) -> bool:
        """Waitress's readiness, after closing a connection whose request is overdue."""
        # Waitress's own timeout counts only silence: a client sending a byte every second
        # would keep a half-sent request, and its connection, for ever.
        request = self.request
        if (
            isinstance(request, _Parser)
            and not self.requests
            and not self.will_close
            and time.monotonic() - request.started > self.adj.channel_timeout
        ):
            log.debug("closing a connection whose request was incomplete after %ds", self.adj.channel_timeout)
            self.will_close = True
        return bool(super().readable())


class _Server(TcpWSGIServer):
    channel_class = _Channel


class HttpServer:
    """The HTTP port: one event-loop thread and a fixed pool of request threads; closing it closes the shared database connection too."""

    def __init__(
        self,
        address: tuple[str, int],
        snapshot: Snapshot,
        app: WSGIApplication,
        *,
        threads: int = WORKER_THREADS,
        timeout_s: int = TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        for name, value in (
            ("threads", threads),
            ("timeout", timeout_s),
            ("max connections", max_connections),
        ):
            if value < 1:
                raise ConfigError(f"invalid http {name}: {value} (must be at least 1)")
        self.snapshot = snapshot
        self.threads = threads
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        sock = _listening_socket(*address)
        self.server_address: tuple[str, int] = sock.getsockname()[:2]
        adj = Adjustments(
            sockets=[sock],
            threads=threads,
            channel_timeout=timeout_s,
            # How often idle connections are looked for, and the longest the loop sleeps between looks.
            cleanup_interval=1,
            asyncore_loop_timeout=1,
            # select() fails past descriptor 1023; poll() has no such limit.
            asyncore_use_poll=True,
            connection_limit=max_connections,
            max_request_header_size=_MAX_HEADER_BYTES,
            max_request_body_size=_MAX_FORM_BYTES,
            ident="session-ledger",
            expose_tracebacks=False,
            # A client resetting its connection is not worth a traceback in the logs.
            log_socket_errors=False,
        )
        self._map: dict[int, Any] = {}
        self._dispatcher = ThreadedTaskDispatcher()
        self._server = _Server(
            app,
            self._map,
            _sock=sock,
            dispatcher=self._dispatcher,
            adj=adj,
            bind_socket=False,
            sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()),
        )
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the request threads and the event loop, each a daemon thread."""
        self._dispatcher.set_thread_count(self.threads)
        self._thread = threading.Thread(target=self._loop, name="listener-http", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            wasyncore.loop(timeout=1, map=self._map, use_poll=True, count=1)

    def shutdown(self) -> None:
        """Stop the event loop and wait until it has stopped."""
        self._stopping.set()
        if self._thread is not None:
            self._server.pull_trigger()
            self._thread.join()
            self._thread = None

    def server_close(self) -> None:
        """Stop listening, close every connection and the request threads, and close the metrics connection."""
        self.shutdown()
        self._dispatcher.shutdown(timeout=5)
        wasyncore.close_all(self._map)
        self.snapshot.close()


def _listening_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve(
    worker: Worker,
    *,
    port: int,
    host: str = "127.0.0.1",
    dashboard_token: SecretStr | None = None,
    threads: int = WORKER_THREADS,
    timeout_s: int = TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
) -> HttpServer:
    """Serve the port in daemon threads; the worker's batches feed the metrics."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    snapshot = Snapshot(worker.dsn)
    registry.register(DatabaseCollector(snapshot, worker))
    auth = Auth(dashboard_token)
    app = _App(worker=worker, registry=registry, snapshot=snapshot, auth=auth)
    try:
        server = HttpServer(
            (host, port),
            snapshot,
            app,
            threads=threads,
            timeout_s=timeout_s,
            max_connections=max_connections,
        )
    except ConfigError:
        snapshot.close()
        raise
    previous = worker.on_batch

    def on_batch(batch: Sequence[RawMessage], outcomes: Sequence[Outcome], seconds: float) -> None:
        metrics.observe_batch(batch, outcomes, seconds)
        if previous is not None:
            previous(batch, outcomes, seconds)

    worker.on_batch = on_batch
    server.start()
    bound_host, bound_port = server.server_address
    log.info(
        "serving /metrics, /livez, /healthz and /readyz%s on %s:%d (%d request threads, at most %d connections, %ds timeout)",
        " and the dashboard" if auth.enabled else "",
        bound_host,
        bound_port,
        threads,
        max_connections,
        timeout_s,
    )
    return server


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    ctype: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)


class _App:
    """The WSGI application behind the port."""

    def __init__(
        self, *, worker: Worker, registry: CollectorRegistry, snapshot: Snapshot, auth: Auth
    ) -> None:
        self.worker = worker
        self.registry = registry
        self.snapshot = snapshot
        self.auth = auth

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """Answer one request that waitress has read whole."""
        method = str(environ["REQUEST_METHOD"])
        if method == "GET":
            reply = self._get(environ)
        elif method == "POST":
            reply = self._post(environ)
        else:
            reply = _Reply(501, b"unsupported method\n", headers={"Allow": "GET, POST"})
        headers = [("Content-Type", reply.ctype), ("Content-Length", str(len(reply.body)))]
        headers.extend(reply.headers.items())
        start_response(f"{reply.status} {HTTPStatus(reply.status).phrase}", headers)
        request_line = (
            f"{method} {environ.get('REQUEST_URI', environ['PATH_INFO'])} {environ['SERVER_PROTOCOL']}"
        )
        self.log_message('"%s" %d %d', request_line, reply.status, len(reply.body))
        return [reply.body]

    def log_message(self, format: str, *args: Any) -> None:
        """Log one answered request at debug level."""
        # The request line only; headers, and so the token, are never logged.
        log.debug(format, *args)

    def _get(self, environ: WSGIEnvironment) -> _Reply:
        path = environ["PATH_INFO"]
        if path == "/metrics":
            return _Reply(200, generate_latest(self.registry), "text/plain; version=0.0.4")
        if path == "/livez":
            # Nothing but the loop itself: a database outage or a pause is no reason to restart.
            stalled = self.worker.stalled_s
            if stalled is not None:
                return _Reply(503, f"listener loop stalled for {stalled:.0f}s\n".encode())
            return _Reply(200, b"alive\n")
        if path == "/healthz":
            ok = self.snapshot.depths() is not None
            return _Reply(200 if ok else 503, b"ok\n" if ok else b"database unreachable\n")
        if path == "/readyz":
            if not self.worker.ready:
                return _Reply(503, b"not ready\n")
            # A paused ledger never reads as ready: charging has stopped everywhere.
            paused = self.snapshot.paused()
            if paused:
                # Who paused and why is for operators (the dashboard token), not for any prober.
                if self.auth.scheme(environ.get("HTTP_AUTHORIZATION")) is None:
                    return _Reply(503, b"charging paused\n")
                why = f": {paused['reason']}" if paused.get("reason") else ""
                line = f"charging paused since {paused['paused_at']} by {paused['paused_by']}{why}\n"
                return _Reply(503, line.encode())
            return _Reply(200, b"ready\n")
        if path in _DASHBOARD_PATHS:
            scheme = self._authorized(environ)
            if isinstance(scheme, _Reply):
                return scheme
            return self._dashboard_get(path, parse_qs(environ.get("QUERY_STRING", "")))
        return _Reply(404, b"not found\n")

    def _post(self, environ: WSGIEnvironment) -> _Reply:
        path = environ["PATH_INFO"]
        if path not in _ACTIONS:
            return _Reply(404, b"not found\n")
        scheme = self._authorized(environ)
        if isinstance(scheme, _Reply):
            return scheme
        form = _form(environ)
        if form is None:
            return _Reply(413, b"form too large\n")
        allowed = self.auth.form_allowed(
            scheme=scheme,
            nonce=next(iter(form.get("csrf", [])), None),
            origin=environ.get("HTTP_ORIGIN"),
            fetch_site=environ.get("HTTP_SEC_FETCH_SITE"),
            host=environ.get("HTTP_HOST"),
        )
        if not allowed or (form.get("confirm") or [""])[0] != "yes":
            log.warning("dashboard: refused a %s from %s (no valid form nonce)", path, _client(environ))
            return _html(403, dashboard.render_message("refused", "This action needs the dashboard's form."))
        try:
            if path == "/redrive":
                return self._redrive(form, environ)
            if path == "/discard":
                return self._discard(form, environ)
            return self._replay(form, environ)
        except DatabaseUnreachable:
            return _html(503, dashboard.render_message("unavailable", "The database could not be reached."))

    def _authorized(self, environ: WSGIEnvironment) -> str | _Reply:
        """The auth scheme used, or the 404 (no token set) or 401 (no valid token) to answer instead."""
        if not self.auth.enabled:
            return _Reply(404, b"not found\n")
        scheme = self.auth.scheme(environ.get("HTTP_AUTHORIZATION"))
        if scheme is None:
            return _Reply(401, b"authentication required\n", headers={"WWW-Authenticate": REALM})
        return scheme

    def _dashboard_get(self, path: str, params: dict[str, list[str]]) -> _Reply:
        refresh = params.get("refresh", [""])[0] != "off"
        try:
            if path == "/":
                before_text = params.get("before", [""])[0]
                before = dashboard_store.parse_cursor(
                    before_text, dashboard_store.key_types(self.snapshot).get("booking", "uuid")
                )
                if before_text and before is None:
                    return _html(
                        400,
                        dashboard.render_message(
                            "bad request",
                            "That page of recent changes does not exist; start from the newest.",
                        ),
                    )
                data = dashboard_store.read_dashboard(self.snapshot, before=before)
                page = dashboard.render_page(
                    data, ready=self.worker.ready, listener_id=str(self.worker.id), refresh=refresh
                )
                return _html(200, page)
            if path in ("/redrive", "/discard"):
                ids = _ints(params.get("id", []))
                if ids is None:
                    return _html(
                        400, dashboard.render_message("bad request", "Dead-letter ids are integers.")
                    )
                letters = dashboard_store.dead_letters_by_id(self.snapshot, ids)
                confirm = (
                    dashboard.render_redrive_confirm
                    if path == "/redrive"
                    else dashboard.render_discard_confirm
                )
                return _html(200, confirm(letters, nonce=self.auth.nonce))
            if path == "/pack":
                return self._pack(params, refresh)
            if path == "/search":
                text = params.get("q", [""])[0].strip()
                if len(text) > _MAX_SEARCH:
                    return _html(
                        400,
                        dashboard.render_message(
                            "bad request", f"A search is at most {_MAX_SEARCH} characters: an id or a name."
                        ),
                    )
                found = dashboard_store.search(self.snapshot, text)
                return _html(200, dashboard.render_search(found, refresh=refresh))
            booking = self._key("booking", params.get("booking", [""])[0])
            if booking is None:
                return self._not_a_key("booking")
            row = dashboard_store.find_booking(self.snapshot, booking)
            if row is None:
                return _unknown_booking(booking)
            names = dashboard_store.read_names(
                self.snapshot, [row["purchase_id"], row["ledger_purchase_id"], row["client_id"]]
            )
            return _html(200, dashboard.render_replay_confirm(row, names, nonce=self.auth.nonce))
        except DatabaseUnreachable:
            return _html(503, dashboard.render_message("unavailable", "The database could not be read."))

    def _key(self, kind: str, text: str) -> str | None:
        """An id typed in, as the app's key of this kind prints; None when it cannot be one."""
        return dashboard_store.key_of(self.snapshot, kind, text)

    def _not_a_key(self, kind: str) -> _Reply:
        key_type = dashboard_store.key_types(self.snapshot).get(kind, "uuid")
        return _html(400, dashboard.render_message("bad request", f"A {kind} id is {_KEY_WORDS[key_type]}."))

    def _pack(self, params: dict[str, list[str]], refresh: bool) -> _Reply:
        pack = self._key("pack", params.get("id", [""])[0])
        if pack is None:
            return self._not_a_key("pack")
        view = dashboard_store.read_pack(self.snapshot, pack)
        if view.pack is None:
            return _html(
                404, dashboard.render_message("no such pack", f"No pack has id {pack}: the app holds none.")
            )
        page = dashboard.render_pack(
            view, ready=self.worker.ready, listener_id=str(self.worker.id), refresh=refresh
        )
        return _html(200, page)

    def _discard(self, form: dict[str, list[str]], environ: WSGIEnvironment) -> _Reply:
        ids = _ints(form.get("id", []))
        if not ids:
            return _html(400, dashboard.render_message("bad request", "No dead letter was selected."))
        reason = " ".join((form.get("reason") or [""])[0].split())
        if not reason:
            return _html(400, dashboard.render_message("bad request", "A discard needs a reason."))
        if len(reason) > dashboard.MAX_REASON:
            return _html(
                400,
                dashboard.render_message(
                    "bad request", f"A discard's reason is at most {dashboard.MAX_REASON} characters."
                ),
            )
        discarded = dashboard_store.discard(self.snapshot, ids, reason)
        log.info(
            "dashboard: discarded %d of %d dead letter(s) %s at the request of %s",
            discarded,
            len(ids),
            ids,
            _client(environ),
        )
        return _html(
            200,
            dashboard.render_message(
                "discarded", f"Discarded {discarded} dead letter(s); each is archived with who, when and why."
            ),
        )

    def _redrive(self, form: dict[str, list[str]], environ: WSGIEnvironment) -> _Reply:
        ids = _ints(form.get("id", []))
        if not ids:
            return _html(400, dashboard.render_message("bad request", "No dead letter was selected."))
        moved = dashboard_store.redrive(self.snapshot, ids)
        log.info(
            "dashboard: redrove %d of %d dead letter(s) %s at the request of %s",
            moved,
            len(ids),
            ids,
            _client(environ),
        )
        return _html(
            200, dashboard.render_message("redriven", f"Moved {moved} dead letter(s) back onto the queue.")
        )

    def _replay(self, form: dict[str, list[str]], environ: WSGIEnvironment) -> _Reply:
        booking = self._key("booking", (form.get("booking") or [""])[0])
        if booking is None:
            return self._not_a_key("booking")
        if dashboard_store.find_booking(self.snapshot, booking) is None:
            return _unknown_booking(booking)
        sent = dashboard_store.replay(self.snapshot, booking)
        log.info(
            "dashboard: replayed booking %s (%d event) at the request of %s",
            booking,
            sent,
            _client(environ),
        )
        return _html(200, dashboard.render_message("replayed", f"Enqueued booking {booking} again."))


def _form(environ: WSGIEnvironment) -> dict[str, list[str]] | None:
    """The POSTed form; None when it is larger than a dashboard form can be."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or "0")
    except ValueError:
        length = -1
    if not 0 <= length <= _MAX_FORM_BYTES:
        return None
    body = environ["wsgi.input"].read(length).decode("utf-8", errors="replace")
    return parse_qs(body, max_num_fields=1000)


def _unknown_booking(booking: str) -> _Reply:
    """What replaying an id no booking has answers: nothing was, or will be, enqueued."""
    text = (
        f"No booking has id {booking}: neither the app's bookings nor the ledger holds it. Nothing to replay."
    )
    return _html(404, dashboard.render_message("no such booking", text))


def _html(code: int, page: str) -> _Reply:
    return _Reply(
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


def _client(environ: WSGIEnvironment) -> str:
    return str(environ.get("REMOTE_ADDR", ""))


def _ints(values: list[str]) -> list[int] | None:
    try:
        return [int(v) for v in values]
    except ValueError:
        return None


# How an id of each key type is written, for the page that refuses one.
_KEY_WORDS = {"uuid": "a UUID", "integer": "an integer", "bigint": "an integer", "text": "some text"}
