"""Listener processes as real subprocesses: start, SIGKILL, restart, SIGTERM, and who owns a backend."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]


def listener_command(dsn: str, *flags: str, module: str = "listener") -> list[str]:
    """`python -m listener run --dsn D ...` (or a test-only variant module)."""
    base = [sys.executable, "-m", module]
    if module == "listener":
        base.append("run")
    return [*base, "--dsn", dsn, "--log-format", "json", *flags]


@dataclass
class Slot:
    """One listener position in the fleet; its process is replaced after each kill."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    generation: int = 0
    pids: list[int] = field(default_factory=list)


class Fleet:
    """N listener processes, with their stderr in one log file per slot."""

    def __init__(
        self,
        dsn: str,
        count: int,
        flags: Sequence[str],
        log_dir: Path,
        *,
        netns: str | None = None,
        module: str = "listener",
        name: str = "listener",
    ) -> None:
        self.command = listener_command(dsn, *flags, module=module)
        if netns is not None:
            self.command = ["ip", "netns", "exec", netns, *self.command]
        self.log_dir = log_dir
        self.name = name
        self.slots = [Slot(i) for i in range(count)]
        self.kills = 0

    def log_path(self, slot: Slot) -> Path:
        """Where a slot's processes write their logs."""
        return self.log_dir / f"{self.name}-{slot.index}.log"

    def start(self, slot: Slot | None = None) -> None:
        """Start one slot, or every slot."""
        for s in [slot] if slot is not None else self.slots:
            s.generation += 1
            with self.log_path(s).open("ab") as log:
                log.write(f"--- generation {s.generation}\n".encode())
                log.flush()
                s.proc = subprocess.Popen(
                    self.command,
                    cwd=ROOT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    stdout=log,
                    stderr=log,
                )
            s.pids.append(s.proc.pid)

    def pids(self) -> list[int]:
        """PIDs of the running processes."""
        return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.poll() is None]

    def kill(self, slot: Slot, *, restart: bool = True) -> None:
        """SIGKILL a slot's process, reap it, and start a replacement."""
        if slot.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                slot.proc.send_signal(signal.SIGKILL)
            slot.proc.wait()
            self.kills += 1
        if restart:
            self.start(slot)

    def slot_of(self, pid: int) -> Slot | None:
        """The slot whose current process has this pid."""
        for s in self.slots:
            if s.proc is not None and s.proc.pid == pid:
                return s
        return None

    def stop(self, timeout: float = 30) -> list[int | None]:
        """SIGTERM every process and return their exit codes (None: had to be killed)."""
        for s in self.slots:
            if s.proc is not None and s.proc.poll() is None:
                s.proc.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        deadline = time.monotonic() + timeout
        for s in self.slots:
            if s.proc is None:
                continue
            try:
                codes.append(s.proc.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()
                codes.append(None)
        return codes

    def crashed(self) -> list[str]:
        """Tracebacks found in the logs: a listener must never die by itself."""
        found = []
        for s in self.slots:
            path = self.log_path(s)
            if path.exists() and "Traceback" in path.read_text(errors="replace"):
                found.append(str(path))
        return found


_SS_LINE = re.compile(r"^\S+\s+\S+\s+\d+\s+\d+\s+(\S*)\s+(\d+)\s+(\S*)\s+(\d+)")


def owner_of_backend(backend_pid: int, client_port: int | None, candidates: Sequence[int]) -> int | None:
    """Which of these client processes holds the connection served by backend_pid."""
    if client_port is not None and client_port > 0:
        for pid in candidates:
            with contextlib.suppress(psutil.Error):
                for c in psutil.Process(pid).net_connections(kind="tcp"):
                    if c.laddr and c.laddr.port == client_port:
                        return pid
        return None
    # A unix socket: pair the backend's socket inode with its peer in `ss -x`.
    backend_inodes = _socket_inodes(backend_pid)
    peers: set[int] = set()
    out = subprocess.run(["ss", "-xanH"], capture_output=True, text=True, check=False).stdout
    for line in out.splitlines():
        m = _SS_LINE.match(line)
        if m and int(m.group(2)) in backend_inodes:
            peers.add(int(m.group(4)))
    for pid in candidates:
        if _socket_inodes(pid) & peers:
            return pid
    return None


def _socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes
