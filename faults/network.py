"""Network faults: a TCP proxy the suite controls, and a network namespace whose route can be black-holed.

Two kinds of silent drop, because they fail differently:

- ``NetNs.drop()`` adds blackhole routes on both sides of a veth pair. Packets
  vanish in the kernel with no RST and no FIN, as on a dead network path, so
  TCP keep-alives and ``tcp_user_timeout`` get no acknowledgement.
- ``Proxy.stall()`` stops forwarding in user space but keeps both sockets open.
  The proxy's kernel still acknowledges everything, as a hung middlebox would.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import subprocess
import threading
import time


class Proxy:
    """Forward TCP connections from (host, port) to a target address, and break them on demand."""

    def __init__(self, listen_host: str, target: tuple[str, int] | str) -> None:
        self.target = target
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind((listen_host, 0))
        self.server.listen(64)
        self.port = int(self.server.getsockname()[1])
        self.stalled = threading.Event()
        self.closing = threading.Event()
        self.accepted = 0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name="faults-proxy", daemon=True).start()

    def _connect_target(self) -> socket.socket:
        if isinstance(self.target, str):
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        upstream.connect(self.target)
        return upstream

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = self._connect_target()
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        try:
            while not self.closing.is_set():
                if self.stalled.is_set():
                    # Read nothing, write nothing, close nothing.
                    time.sleep(0.05)
                    continue
                ready, _, _ = select.select([a, b], [], [], 0.05)
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    peer[s].sendall(data)
        except (OSError, ValueError):  # ValueError: reset_all() closed a socket under select()
            return
        finally:
            if not self.stalled.is_set():
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.close()

    def stall(self) -> None:
        """Stop forwarding on every connection, keeping the sockets open."""
        self.stalled.set()

    def reset_all(self) -> None:
        """Abort every open connection with an RST, then forward new ones again."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.close()
        self.stalled.clear()

    def close(self) -> None:
        """Stop accepting and drop everything."""
        self.closing.set()
        with contextlib.suppress(OSError):
            self.server.close()
        self.reset_all()


def _ip(*args: str, netns: str | None = None, check: bool = True) -> None:
    cmd = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {done.stderr.strip()}")


class NetNs:
    """A network namespace joined to the host by a private veth pair on 10.213.<n>.0/30."""

    def __init__(self, tag: int) -> None:
        n = tag % 250 + 1
        self.name = f"slfaults{n}"
        self.host_if = f"slfh{n}"
        self.ns_if = f"slfn{n}"
        self.host_ip = f"10.213.{n}.1"
        self.ns_ip = f"10.213.{n}.2"
        self.dropped = False

    def create(self) -> None:
        """Create the namespace, the veth pair and their addresses."""
        self.destroy()
        _ip("netns", "add", self.name)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _ip("link", "set", self.ns_if, "netns", self.name)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        _ip("addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if, netns=self.name)
        _ip("link", "set", self.ns_if, "up", netns=self.name)
        _ip("link", "set", "lo", "up", netns=self.name)

    def drop(self) -> None:
        """Black-hole the path in both directions: packets vanish, nobody is told."""
        _ip("route", "add", "blackhole", f"{self.host_ip}/32", netns=self.name)
        _ip("route", "add", "blackhole", f"{self.ns_ip}/32")
        self.dropped = True

    def restore(self) -> None:
        """Remove the blackhole routes."""
        _ip("route", "del", "blackhole", f"{self.host_ip}/32", netns=self.name, check=False)
        _ip("route", "del", "blackhole", f"{self.ns_ip}/32", check=False)
        self.dropped = False

    def destroy(self) -> None:
        """Remove the routes, the veth pair and the namespace, whatever exists of them."""
        _ip("route", "del", "blackhole", f"{self.ns_ip}/32", check=False)
        _ip("link", "del", self.host_if, check=False)
        _ip("netns", "del", self.name, check=False)
