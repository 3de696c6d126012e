"""The HTTP port under slow clients: a fixed number of threads, probes that still answer, stalled connections closed."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from listener.http.server import MAX_CONNECTIONS, WORKER_THREADS

from support.http import ListenerProcess, request, running

# Seconds; short so that the tests wait little, long enough that a probe answers well within it.
TIMEOUT = 3
# A probe that waited for a request thread held by a slow client would take about TIMEOUT.
PROMPT_S = 1.5
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
    # When each last sent a byte (or connected, for those that send none): the server's clock starts later.
    sent_at: dict[socket.socket, float]


@contextmanager
def stalled(port: int, count: int) -> Iterator[Stalled]:
    """Open `count` connections, each sending one of PARTIALS and then nothing; closed afterwards."""
    socks: list[socket.socket] = []
    sent_at: dict[socket.socket, float] = {}
    try:
        for i in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(sock)
            sock.sendall(PARTIALS[i % len(PARTIALS)])
            sent_at[sock] = time.monotonic()
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


def prompt(url: str) -> float:
    """Seconds a GET took; it must answer 200."""
    started = time.monotonic()
    assert request(url).status == 200, url
    return time.monotonic() - started


def warmed(proc: ListenerProcess) -> psutil.Process:
    """The listener's process after every endpoint has answered once, so that any thread made lazily exists."""
    for path in ("/readyz", "/healthz", "/metrics"):
        assert request(f"{proc.base}{path}").status == 200
    ps = psutil.Process(proc.proc.pid)
    # Its own threads (main, the connection watchdog, the HTTP event loop) and the request threads.
    assert ps.num_threads() <= WORKER_THREADS + 4, ps.num_threads()
    return ps


def test_slow_clients_hold_sockets_not_threads_and_are_closed_after_the_timeout(ledger_dsn: str) -> None:
    assert SLOW + 10 < MAX_CONNECTIONS, "this test stays under the connection limit"
    with running(ledger_dsn, extra=("--http-timeout", str(TIMEOUT))) as proc:
        ps = warmed(proc)
        baseline = ps.num_threads()
        threads = [baseline]
        with stalled(proc.port, SLOW) as slow:
            deadline = time.monotonic() + 10
            while held(ps, proc.port) < SLOW:
                threads.append(ps.num_threads())
                assert time.monotonic() < deadline, f"only {held(ps, proc.port)} of {SLOW} were accepted"
                time.sleep(0.05)

            # With every slow client accepted and held, the probes still answer at once.
            for _ in range(3):
                for path in ("/readyz", "/metrics", "/healthz"):
                    took = prompt(f"{proc.base}{path}")
                    assert took < PROMPT_S, f"{path} took {took:.2f}s beside {SLOW} slow clients"
                threads.append(ps.num_threads())
            dropped = [i for i, s in enumerate(slow.socks) if not still_open(s)]
            assert not dropped, (
                f"{len(dropped)} slow clients (e.g. #{dropped[:5]}) were dropped"
                f" {time.monotonic() - min(slow.sent_at.values()):.2f}s in, before the probes were done"
            )
            assert held(ps, proc.port) >= SLOW

            closed = wait_closed(slow.socks, within_s=TIMEOUT + 10)
            threads.append(ps.num_threads())
            assert len(closed) == SLOW, f"{SLOW - len(closed)} stalled connections were never closed"
            assert all(data == b"" for _, data in closed.values()), "an incomplete request was answered"
            after = [at - slow.sent_at[sock] for sock, (at, _) in closed.items()]
            earliest, latest = min(after), max(after)
            assert earliest >= TIMEOUT - 0.1, f"closed after {earliest:.2f}s, before the {TIMEOUT}s timeout"
            print(f"stalled connections closed after {earliest:.2f}-{latest:.2f}s (timeout {TIMEOUT}s)")

        assert max(threads) <= baseline, f"threads grew from {baseline} to {max(threads)}"
        deadline = time.monotonic() + 5
        while held(ps, proc.port):
            assert time.monotonic() < deadline, "the listener kept sockets the clients saw closed"
            time.sleep(0.05)
        assert request(f"{proc.base}/readyz").status == 200
        logs = proc.stop()
    assert "Traceback" not in logs, logs


def test_a_request_trickled_byte_by_byte_is_cut_off_at_the_timeout(ledger_dsn: str) -> None:
    # Never silent for long, so only the deadline on the whole request can end it.
    gap_s = 0.25
    with running(ledger_dsn, extra=("--http-timeout", str(TIMEOUT))) as proc:
        sock = socket.create_connection(("127.0.0.1", proc.port), timeout=5)
        try:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            started = last = time.monotonic()
            longest_gap = 0.0
            closed_at = None
            while time.monotonic() - started < 4 * TIMEOUT:
                if not still_open(sock):
                    closed_at = time.monotonic()
                    break
                try:
                    sock.sendall(b"a")
                except OSError:
                    closed_at = time.monotonic()
                    break
                now = time.monotonic()
                longest_gap, last = max(longest_gap, now - last), now
                time.sleep(gap_s)
            assert closed_at is not None, f"a trickling request was still open after {4 * TIMEOUT}s"
            assert longest_gap < TIMEOUT / 2, f"the client went quiet for {longest_gap:.2f}s"
            assert closed_at - started >= TIMEOUT - 0.1
            print(f"trickling request cut off after {closed_at - started:.2f}s (timeout {TIMEOUT}s)")
        finally:
            sock.close()
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
            deadline = time.monotonic() + 4 * (TIMEOUT + 2)
            while len(closed) < over and time.monotonic() < deadline:
                most = max(most, held(ps, proc.port))
                threads.append(ps.num_threads())
                open_socks = [s for s in slow.socks if s not in closed]
                closed.update(wait_closed(open_socks, within_s=0.2))
            assert len(closed) == over, f"{over - len(closed)} connections were never closed"
        assert most <= MAX_CONNECTIONS, f"{most} connections open at once"
        assert most >= MAX_CONNECTIONS - 10, f"the limit was never reached ({most} at most)"
        assert max(threads) <= baseline, f"threads grew from {baseline} to {max(threads)}"
        assert prompt(f"{proc.base}/readyz") < PROMPT_S
        proc.stop()
