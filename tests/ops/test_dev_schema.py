"""`listener dev --schema`: the app's own schema files on a Supabase-shaped base, a completion
made with psql charged; wrong files fail with one line naming the file and line."""

from __future__ import annotations

import queue
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import IO

from listener.core.db import connect
from listener.devtools.ports import free_port

from support.supabase_fixtures import APP_SCHEMA
from support.world import LISTENER, run_cli


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


def test_dev_with_the_apps_dump_charges_a_completion_made_with_psql() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*LISTENER, "dev", "--port", str(port), "--schema", str(APP_SCHEMA)],
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
        assert any("the app schema from 1 file(s)" in line for line in lines), lines
        tcp = printed["TCP_DATABASE_URL"]
        assert tcp == f"postgresql://postgres@127.0.0.1:{port}/app"

        trainer, org, client, offer, pack, booking = (uuid.uuid4() for _ in range(6))
        _psql(
            tcp,
            f"""
            INSERT INTO auth.users (id, email) VALUES ('{trainer}', 'trainer@example.com');
            INSERT INTO public.orgs (id, name, slug) VALUES ('{org}', 'Studio', 'studio');
            INSERT INTO public.org_members (org_id, user_id, role) VALUES ('{org}', '{trainer}', 'staff');
            INSERT INTO public.clients (id, org_id, full_name) VALUES ('{client}', '{org}', 'Client');
            INSERT INTO public.offers (id, org_id, name, offer_type, price_cents)
                VALUES ('{offer}', '{org}', '5 sessions', 'session_pack', 25000);
            INSERT INTO public.client_purchases
                (id, org_id, client_id, offer_id, sessions_total, payment_method, payment_status)
                VALUES ('{pack}', '{org}', '{client}', '{offer}', 5, 'cash', 'pending');
            INSERT INTO public.bookings (id, org_id, client_id, start_time, end_time, purchase_id, booked_by)
                VALUES ('{booking}', '{org}', '{client}', now() - interval '2 hours', now() - interval '1 hour',
                        '{pack}', '{trainer}');
            -- as the trainer's browser does it, through the API's roles
            BEGIN;
            SET LOCAL ROLE authenticated;
            SELECT set_config('request.jwt.claims', '{{"sub": "{trainer}", "role": "authenticated"}}', true);
            UPDATE public.bookings SET status = 'completed' WHERE id = '{booking}';
            COMMIT;
            """,
        )
        with connect(tcp) as conn:
            deadline = time.monotonic() + 15
            while True:
                row = conn.execute(
                    "SELECT p.sessions_used, l.state FROM public.client_purchases p"
                    " LEFT JOIN session_ledger.charges l ON l.booking_id = %s WHERE p.id = %s",
                    [booking, pack],
                ).fetchone()
                if row == {"sessions_used": 1, "state": "paid"}:
                    break
                assert time.monotonic() < deadline, f"the dev listener did not charge the completion: {row}"
                time.sleep(0.05)
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
