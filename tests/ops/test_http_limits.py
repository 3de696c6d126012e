"""The HTTP port under slow clients: a fixed number of threads, probes that still answer, stalled connections closed."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
import pytest

from listener.http.server import MAX_CONNECTIONS, WORKER_THREADS

from support.http import ListenerProcess, request, running

# The slow tier: an HTTP server of its own.
pytestmark = pytest.mark.slow

# Seconds; short so that the tests that wait for it wait little.
TIMEOUT = 3
# Seconds; longer than any test runs, so that nothing is closed for silence meanwhile: a probe that
# needed a request thread held by a slow client would not be answered before the test gives up.
HELD_TIMEOUT = 600
# Every poll below ends as soon as its condition holds; the deadline only bounds a failure,
# so it is generous enough for a loaded two-core machine.
WAIT_S = 60.0
SLOW = 200
# Requests that never arrive whole: half a request line, headers never ended, a body never
# finished, and nothing at all.
PARTIALS = (
    b"GET /metr",
    b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/plain\r\n",
    b"POST /replay HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nbooking=",
    b"",
)


@dataclass
class Stalled:
    """Client sockets that sent part of a request and then went quiet."""

    socks: list[socket.socket]
    # Taken just before each connected and sent its bytes: the server's clock for it starts later,
    # however long this process is paused in between.
    sent_at: dict[socket.socket, float]


@contextmanager
def stalled(port: int, count: int) -> Iterator[Stalled]:
    """Open `count` connections, each sending one of PARTIALS and then nothing; closed afterwards."""
    socks: list[socket.socket] = []
    sent_at: dict[socket.socket, float] = {}
    try:
        for i in range(count):
            before = time.monotonic()
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(sock)
            sock.sendall(PARTIALS[i % len(PARTIALS)])
            sent_at[sock] = before
        yield Stalled(socks, sent_at)
    finally:
        for sock in socks:
            sock.close()


def still_open(sock: socket.socket) -> bool:
    """Whether the server has neither closed this connection nor answered on it."""
    # A socket with a timeout would wait for data first, however the flags say not to.
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except ConnectionError:
        return False
    return False  # end of stream, or an answer


def wait_closed(socks: list[socket.socket], within_s: float) -> dict[socket.socket, tuple[float, bytes]]:
    """For each socket the server closed within `within_s`: when (monotonic) and what it had sent first."""
    closed: dict[socket.socket, tuple[float, bytes]] = {}
    received: dict[socket.socket, bytes] = {s: b"" for s in socks}
    deadline = time.monotonic() + within_s
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
        while len(closed) < len(socks) and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
                fileobj = key.fileobj
                assert isinstance(fileobj, socket.socket)
                sock = fileobj
                try:
                    data = sock.recv(4096)
                except ConnectionError:
                    data = b""
                if data:
                    received[sock] += data
                    continue
                closed[sock] = (time.monotonic(), received[sock])
                sel.unregister(sock)
    return closed


def held(proc: psutil.Process, port: int) -> int:
    """Connections to the HTTP port that the listener has accepted and not yet closed."""
    return sum(
        1
        for c in proc.net_connections(kind="tcp")
        if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED
    )


def warmed(proc: ListenerProcess) -> psutil.Process:
    """The listener's process after every endpoint has answered once, so that any thread made lazily exists."""
    for path in ("/readyz", "/healthz", "/metrics"):
        assert request(f"{proc.base}{path}").status == 200
    ps = psutil.Process(proc.proc.pid)
    # Its own threads (main, the connection watchdog, the HTTP event loop) and the request threads.
    assert ps.num_threads() <= WORKER_THREADS + 4, ps.num_threads()
    return ps


def test_slow_clients_hold_sockets_not_threads_and_probes_still_answer(ledger_dsn: str) -> None:
    assert SLOW + 10 < MAX_CONNECTIONS, "this test stays under the connection limit"
    with running(ledger_dsn, extra=("--http-timeout", str(HELD_TIMEOUT))) as proc:
        ps = warmed(proc)
        baseline = ps.num_threads()
        threads = [baseline]
        with stalled(proc.port, SLOW) as slow:
            deadline = time.monotonic() + WAIT_S
            while held(ps, proc.port) < SLOW:
                threads.append(ps.num_threads())
                assert time.monotonic() < deadline, f"only {held(ps, proc.port)} of {SLOW} were accepted"
                time.sleep(0.05)

            # With every slow client accepted and held, the probes still answer: none of them
            # waits for a request thread, which a slow client would hold for HELD_TIMEOUT.
            for _ in range(3):
                for path in ("/readyz", "/metrics", "/healthz"):
                    assert request(f"{proc.base}{path}").status == 200, path
                threads.append(ps.num_threads())
            dropped = [i for i, s in enumerate(slow.socks) if not still_open(s)]
            assert not dropped, (
                f"{len(dropped)} slow clients (e.g. #{dropped[:5]}) were dropped before their timeout"
            )
            assert held(ps, proc.port) >= SLOW

        assert max(threads) <= baseline, f"threads grew from {baseline} to {max(threads)}"
        deadline = time.monotonic() + WAIT_S
        while held(ps, proc.port):
            assert time.monotonic() < deadline, "the listener kept sockets the clients saw closed"
            time.sleep(0.05)
        assert request(f"{proc.base}/readyz").status == 200
        logs = proc.stop()
    assert "Traceback" not in logs, logs


def test_stalled_connections_are_closed_unanswered_after_the_timeout(ledger_dsn: str) -> None:
    with running(ledger_dsn, extra=("--http-timeout", str(TIMEOUT))) as proc:
        ps = warmed(proc)
        baseline = ps.num_threads()
        with stalled(proc.port, SLOW) as slow:
            closed = wait_closed(slow.socks, within_s=TIMEOUT + WAIT_S)
            threads = ps.num_threads()
            assert len(closed) == SLOW, f"{SLOW - len(closed)} stalled connections were never closed"
            assert all(data == b"" for _, data in closed.values()), "an incomplete request was answered"
            after = [at - slow.sent_at[sock] for sock, (at, _) in closed.items()]
            earliest, latest = min(after), max(after)
            # The server's clock starts after the client's, so no machine's slowness can make this early.
            assert earliest >= TIMEOUT - 0.1, f"closed after {earliest:.2f}s, before the {TIMEOUT}s timeout"
            print(f"stalled connections closed after {earliest:.2f}-{latest:.2f}s (timeout {TIMEOUT}s)")
        assert threads <= baseline, f"threads grew from {baseline} to {threads}"
        assert request(f"{proc.base}/readyz").status == 200
        logs = proc.stop()
    assert "Traceback" not in logs, logs


def _trickle(port: int, gap_s: float) -> tuple[float | None, float]:
    """Send a request a byte every `gap_s` until the server closes it: (seconds until then or None, longest gap)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        # Taken before the first byte leaves, so the server's clock starts later, however long this pauses.
        started = last = time.monotonic()
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        longest_gap = 0.0
        while time.monotonic() - started < TIMEOUT + WAIT_S:
            if not still_open(sock):
                return time.monotonic() - started, longest_gap
            try:
                sock.sendall(b"a")
            except OSError:
                return time.monotonic() - started, longest_gap
            now = time.monotonic()
            longest_gap, last = max(longest_gap, now - last), now
            time.sleep(gap_s)
        return None, longest_gap
    finally:
        sock.close()


def test_a_request_trickled_byte_by_byte_is_cut_off_at_the_timeout(ledger_dsn: str) -> None:
    # Never silent for long, so only the deadline on the whole request can end it.
    gap_s = 0.25
    with running(ledger_dsn, extra=("--http-timeout", str(TIMEOUT))) as proc:
        for _ in range(5):
            closed_after, longest_gap = _trickle(proc.port, gap_s)
            # An attempt in which this machine paused the client for long counts for nothing:
            # the server's timeout for silence could have ended it.
            if longest_gap < TIMEOUT / 2:
                break
        assert longest_gap < TIMEOUT / 2, f"the client went quiet for {longest_gap:.2f}s in every attempt"
        assert closed_after is not None, f"a trickling request was still open after {TIMEOUT + WAIT_S}s"
        assert closed_after >= TIMEOUT - 0.1
        print(f"trickling request cut off after {closed_after:.2f}s (timeout {TIMEOUT}s)")
        assert request(f"{proc.base}/readyz").status == 200
        proc.stop()


def test_connections_past_the_limit_wait_in_the_backlog_and_are_served_later(ledger_dsn: str) -> None:
    over = MAX_CONNECTIONS + 44
    with running(ledger_dsn, extra=("--http-timeout", str(TIMEOUT))) as proc:
        ps = warmed(proc)
        baseline = ps.num_threads()
        threads = [baseline]
        most = 0
        with stalled(proc.port, over) as slow:
            # The first ones time out, the backlog's are accepted in their place and time out in turn.
            closed: dict[socket.socket, tuple[float, bytes]] = {}
            deadline = time.monotonic() + TIMEOUT + WAIT_S
            while len(closed) < over and time.monotonic() < deadline:
                most = max(most, held(ps, proc.port))
                threads.append(ps.num_threads())
                open_socks = [s for s in slow.socks if s not in closed]
                closed.update(wait_closed(open_socks, within_s=0.2))
            assert len(closed) == over, f"{over - len(closed)} connections were never closed"
        assert most <= MAX_CONNECTIONS, f"{most} connections open at once"
        assert most >= MAX_CONNECTIONS - 10, f"the limit was never reached ({most} at most)"
        assert max(threads) <= baseline, f"threads grew from {baseline} to {max(threads)}"
        assert request(f"{proc.base}/readyz").status == 200
        proc.stop()
