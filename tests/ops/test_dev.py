"""`listener dev` as a user runs it: a separate process, its printed DSN, a completion, Ctrl-C."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from listener.core.db import connect
from listener.devtools import demo_data
from listener.devtools.ports import free_port

from support.http import request
from support.world import LISTENER

# The slow tier: every case a CLI subprocess, a promtool run, or an embedded or HTTP server of its own.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))


def test_dev_prints_a_working_dsn_charges_a_completion_and_cleans_up_on_ctrl_c() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*LISTENER, "dev", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, out), daemon=True).start()
    printed: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 90
        while "the listener is running" not in printed.get("last", ""):
            assert proc.poll() is None, f"listener dev exited: {proc.stderr.read() if proc.stderr else ''}"
            assert time.monotonic() < deadline, f"no DSN printed; got {printed}"
            try:
                line = out.get(timeout=0.5)
            except queue.Empty:
                continue
            key, sep, value = line.partition("=")
            if sep and key.isupper():
                printed[key] = value
            elif line.startswith("data:"):
                printed["data"] = line.split()[1]
            printed["last"] = line
        dsn, tcp, data = printed["DATABASE_URL"], printed["TCP_DATABASE_URL"], Path(printed["data"])
        assert tcp == f"postgresql://postgres@127.0.0.1:{port}/app"
        assert data.is_dir()

        with connect(dsn) as conn:
            org = demo_data.create_org(conn)
            pack = demo_data.create_pack(conn, org, sessions_total=5)
            [booking] = demo_data.create_bookings(conn, org, pack)
            conn.execute("UPDATE public.bookings SET status = 'completed' WHERE id = %s", [booking])
        with connect(tcp) as conn:
            deadline = time.monotonic() + 60  # ends as soon as it is charged
            while demo_data.sessions_used(conn, pack) != 1:
                assert time.monotonic() < deadline, "the dev listener did not charge the completion"
                time.sleep(0.05)
            row = conn.execute(
                "SELECT state FROM session_ledger.charges WHERE booking_id = %s", [booking]
            ).fetchone()
            assert row is not None and row["state"] == "paid"

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in stderr
    assert not data.exists(), "the data directory is deleted unless --keep"
    assert not data.parent.exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the server is stopped"


def test_dev_psql_example_script_completes_a_booking() -> None:
    assert shutil.which("psql") is not None, "psql is not installed (apt-get install postgresql-client-15)"
    env = {**os.environ, "LISTENER": f"{sys.executable} -m listener"}
    result = subprocess.run(
        ["bash", str(ROOT / "examples" / "dev_psql.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    after = result.stdout.split("after:", 1)[1]
    assert " 1 |" in after and "| paid" in after, result.stdout


def test_dev_serves_the_dashboard_on_its_http_port() -> None:
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "LISTENER_DASHBOARD_TOKEN"}
    proc = subprocess.Popen(
        [*LISTENER, "dev", "--http-port", str(http_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    out: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, out), daemon=True).start()
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while not lines or "the listener is running" not in lines[-1]:
            assert proc.poll() is None, f"listener dev exited: {proc.stderr.read() if proc.stderr else ''}"
            assert time.monotonic() < deadline, f"never ready; got {lines}"
            try:
                lines.append(out.get(timeout=0.5))
            except queue.Empty:
                continue
        [line] = [x for x in lines if x.startswith("dashboard: ")]
        base = f"http://127.0.0.1:{http_port}"
        assert line.startswith(f"dashboard: {base}/ (HTTP Basic, any user name, password ")
        token = line.rsplit(" ", 1)[1].rstrip(")")
        assert len(token) >= 16
        # Ready once the listener's first poll is done, just after that line.
        while request(f"{base}/readyz").status != 200:
            assert time.monotonic() < deadline, "the dev listener never became ready"
            time.sleep(0.1)
        assert request(f"{base}/").status == 401
        page = request(f"{base}/", token=token)
        assert page.status == 200 and 'id="queue-depth"' in page.body
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", http_port)) != 0, "the HTTP port is closed"
