"""`listener dev --schema`: the app's own schema files on a Supabase-shaped base, a completion
made with psql charged; wrong files fail with one line naming the file and line."""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO

import pytest

from listener.devtools.ports import free_port

from support.supabase_fixtures import APP_SCHEMA
from support.world import LISTENER, run_cli

# The slow tier: every case a CLI subprocess, a promtool run, or an embedded or HTTP server of its own.
pytestmark = pytest.mark.slow

APP_SEED = APP_SCHEMA.parent / "seed.sql"


def _lines(stream: IO[str], into: queue.Queue[str]) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))


def _psql(dsn: str, script: str) -> str:
    psql = shutil.which("psql")
    assert psql is not None, "psql is not installed (apt-get install postgresql-client-15)"
    result = subprocess.run(
        [psql, dsn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-f", "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_dev_with_the_apps_dump_and_seed_runs_the_example_completion() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*LISTENER, "dev", "--port", str(port), "--schema", str(APP_SCHEMA), "--schema", str(APP_SEED)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stdout, out), daemon=True).start()
    printed: dict[str, str] = {}
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not lines or "the listener is running" not in lines[-1]:
            assert proc.poll() is None, f"listener dev exited: {proc.stderr.read() if proc.stderr else ''}"
            assert time.monotonic() < deadline, f"no DSN printed; got {lines}"
            try:
                line = out.get(timeout=0.5)
            except queue.Empty:
                continue
            lines.append(line)
            key, sep, value = line.partition("=")
            if sep and key.isupper():
                printed[key] = value
        assert any("the app schema from 2 file(s)" in line for line in lines), lines
        tcp = printed["TCP_DATABASE_URL"]
        assert tcp == f"postgresql://postgres@127.0.0.1:{port}/app"
        # The example as its header says to run it: the trainer's browser completes a seeded booking.
        output = _psql(tcp, (APP_SEED.parent / "complete_a_booking.sql").read_text(encoding="utf-8"))
        before, after = output.strip().splitlines()[1], output.strip().splitlines()[-1]
        assert before == "2|8"
        assert after.startswith("3|7|paid|"), output
        assert '"trace": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"' in after
        assert '"uid": "00000000-0000-4000-8000-00000000a001"' in after
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in stderr


def test_dev_with_a_missing_schema_file_fails_before_starting(tmp_path: Path) -> None:
    result = run_cli("dev", "--schema", str(tmp_path / "nope.sql"), timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == f"listener dev: schema file {tmp_path / 'nope.sql'} does not exist"
    assert "starting" not in result.stdout


def test_dev_with_a_broken_schema_file_names_its_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "001_tables.sql").write_text("CREATE TABLE public.orgs (id uuid PRIMARY KEY);\n")
    (folder / "002_broken.sql").write_text(
        "-- second file\nALTER TABLE public.orgs\n    ADD COLUMN x nosuchtype;\n"
    )
    result = run_cli("dev", "--schema", str(folder), timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f'listener dev: {folder / "002_broken.sql"}:3: ERROR 42704: type "nosuchtype" does not exist'
    ], result.stderr


def test_dev_with_a_schema_lacking_the_apps_tables_says_the_files_must_create_them(tmp_path: Path) -> None:
    schema = tmp_path / "only_orgs.sql"
    schema.write_text("CREATE TABLE public.orgs (id uuid PRIMARY KEY);\n")
    result = run_cli("dev", "--schema", str(schema), timeout=120)
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("listener dev: the app's schema is incomplete: missing "), line
    assert line.endswith("(the app's schema files must create them)"), line
    # `listener dev` has no such flag: the hint must not send anyone looking for it.
    assert "--with-demo-schema" not in line
