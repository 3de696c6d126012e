"""/livez is the container's liveness: the listener's loop goes round. A pause, or a database that
is down, is no reason to restart it; only a stalled loop is. /readyz stays the readiness probe."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from listener.devtools.driver import ListenerThread
from listener.devtools.ports import free_port
from listener.http.server import serve
from listener.ops.pause import pause

from support.http import request
from support.world import World

WAIT_S = 60.0


@contextmanager
def _served(listener: ListenerThread) -> Iterator[str]:
    port = free_port()
    server = serve(listener.worker, port=port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def _until(url: str, status: int) -> str:
    deadline = time.monotonic() + WAIT_S
    while True:
        reply = request(url)
        if reply.status == status:
            return reply.body
        assert time.monotonic() < deadline, f"{url} never answered {status}: {reply.status} {reply.body}"
        time.sleep(0.1)


def test_a_pause_leaves_the_listener_alive_though_not_ready(world: World) -> None:
    listener = ListenerThread(world.ledger.dsn).start()
    try:
        with _served(listener) as base:
            assert request(f"{base}/livez").body == "alive\n"
            _until(f"{base}/readyz", 200)
            pause(world.ledger.dsn, reason="incident")
            _until(f"{base}/readyz", 503)
            reply = request(f"{base}/livez")
            assert (reply.status, reply.body) == (200, "alive\n")
    finally:
        listener.stop()


def test_a_stalled_loop_is_not_alive(world: World) -> None:
    listener = ListenerThread(world.ledger.dsn).start()
    try:
        with _served(listener) as base:
            assert request(f"{base}/livez").status == 200
            # The loop is held still: it goes round no more, as a wedged process would not.
            listener.worker.stop_event.set()
            listener._thread.join(timeout=WAIT_S)
            worker = listener.worker
            worker.stats.last_tick = time.monotonic() - worker.liveness_window_s - 1
            reply = request(f"{base}/livez")
            assert reply.status == 503 and reply.body.startswith("listener loop stalled for ")
            worker.stats.last_tick = time.monotonic() - worker.liveness_window_s + 30
            assert request(f"{base}/livez").status == 200
    finally:
        listener.stop()
