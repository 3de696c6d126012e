"""The CLI contract scripts depend on: subcommands, exit codes, one-line errors, JSON keys."""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from listener.cli.main import build_parser, main
from listener.http.server import TIMEOUT_S
from listener.settings import Settings

from support.world import LISTENER, World, run_cli

# The slow tier: every case a CLI subprocess, a promtool run, or an embedded or HTTP server of its own.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["run", "--no-such-flag"],
        ["status", "--json", "extra"],
        ["run", "--batch-size", "x"],
        [],
    ],
)
def test_wrong_usage_is_one_line_and_exit_2(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_invalid_setting_is_one_line(ledger_dsn: str) -> None:
    result = run_cli("run", "--dsn", ledger_dsn, "--batch-size", "0")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "listener run: invalid batch_size: Input should be greater than or equal to 1"
    )


def test_unreachable_dsn_is_one_line_without_the_password() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dsn = f"postgresql://alice:hunter2secret@127.0.0.1:{port}/app"
    for command in (["status"], ["migrate"], ["run"], ["complete-past"]):
        result = run_cli(*command, "--dsn", dsn)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "hunter2secret" not in result.stderr + result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert f"cannot connect to alice@127.0.0.1:{port}/app" in lines[0]


def test_missing_dsn_says_how_to_give_one() -> None:
    result = run_cli("status", env={"DATABASE_URL": "", "LISTENER_DSN": ""})
    assert result.returncode == 2
    assert "pass --dsn or set LISTENER_DSN (or DATABASE_URL)" in result.stderr


def test_run_on_an_unmigrated_database_says_run_migrate(ledger_server: str) -> None:
    result = run_cli("run", "--dsn", ledger_server, "--drain")
    assert result.returncode == 1
    assert "run `listener migrate`" in result.stderr


def test_migrate_without_host_tables_names_them(ledger_server: str) -> None:
    from listener.devtools.throwaway import create_database, drop_database

    dsn = create_database(ledger_server, prefix="ledger_cli")
    try:
        result = run_cli("migrate", "--dsn", dsn)
        assert result.returncode == 1
        assert "missing table public.bookings" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        installed = run_cli("migrate", "--dsn", dsn, "--with-demo-schema")
        assert installed.returncode == 0, installed.stderr
        # Each fact once: the summary on stdout, and no log line on stderr saying it again.
        assert installed.stderr == ""
        said = installed.stdout + installed.stderr
        assert said.count("0001_session_ledger") == 1 and said.count("PGMQ") == 1, said
        again = run_cli("migrate", "--dsn", dsn)
        assert again.returncode == 0 and "already up to date" in again.stdout
    finally:
        drop_database(ledger_server, dsn)


def test_status_json_has_the_contract_keys(world: World) -> None:
    pack = world.pack(sessions_total=1)
    a, b = world.bookings(pack, count=2)
    world.set_status(a, "completed")
    world.set_status(b, "completed")
    world.drain()
    world.send_raw("'[]'::jsonb")
    world.set_status(a, "cancelled")  # one pending event: one booking out of sync until handled
    result = run_cli("status", "--dsn", world.ledger.dsn, "--json")
    report = json.loads(result.stdout)
    for key in (
        "queue_depth",
        "dead_letter_depth",
        "oldest_event_age_s",
        "unfunded_bookings",
        "bookings_out_of_sync",
    ):
        assert key in report
    assert report["queue_depth"] == 2
    assert report["unfunded_bookings"] == 1
    assert report["bookings_out_of_sync"] == 1
    assert result.returncode == 3  # no listener heartbeat
    world.drain()
    report = json.loads(run_cli("status", "--dsn", world.ledger.dsn, "--json").stdout)
    assert (report["queue_depth"], report["dead_letter_depth"], report["bookings_out_of_sync"]) == (0, 1, 0)
    assert report["dead_letter_reasons"][0]["reason"] == "payload is a JSON array, not an object"
    human = run_cli("status", "--dsn", world.ledger.dsn, "--no-listener-ok")
    assert "dead letters" in human.stdout and human.returncode == 3


def test_complete_past_completes_only_ended_confirmed_bookings(world: World) -> None:
    from datetime import datetime, timedelta

    pack = world.pack(sessions_total=10)
    past = world.bookings(pack, count=2)
    [future] = world.bookings(pack, start=datetime.now().astimezone() + timedelta(days=1))
    [pending] = world.bookings(pack, status="pending")
    result = run_cli("complete-past", "--dsn", world.ledger.dsn)
    assert result.returncode == 0
    assert result.stdout.strip() == "completed 2 past bookings"
    statuses = {r["id"]: r["status"] for r in world.conn.execute("SELECT id, status FROM public.bookings")}
    assert [statuses[b] for b in past] == ["completed", "completed"]
    assert (statuses[future], statuses[pending]) == ("confirmed", "pending")


def test_python_dash_m_is_the_same_cli() -> None:
    script = Path(sys.executable).parent / "listener"
    for argv in (["--help"], ["replay", "--help"], ["status", "--max-age", "soon"]):
        via_module = subprocess.run([*LISTENER, *argv], capture_output=True, text=True, check=False)
        via_script = subprocess.run([str(script), *argv], capture_output=True, text=True, check=False)
        assert (via_module.returncode, via_module.stdout, via_module.stderr) == (
            via_script.returncode,
            via_script.stdout,
            via_script.stderr,
        ), argv
    assert via_module.returncode == 2 and "Traceback" not in via_module.stderr


def test_metrics_and_health_endpoints_of_a_running_listener(world: World) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*LISTENER, "run", "--dsn", world.ledger.dsn, "--http-port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        # Each poll ends as soon as its condition holds; the deadline only bounds a failure.
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=10) as r:
                    if r.status == 200:
                        break
            except OSError:  # refused, reset or timed out: not up yet
                pass
            assert time.monotonic() < deadline, "listener never became ready"
            time.sleep(0.1)
        pack = world.pack(sessions_total=5)
        [b] = world.bookings(pack)
        world.set_status(b, "completed")
        world.send_raw("'42'::jsonb")
        world.ledger.drain(listener_running=True, timeout=60)
        with urllib.request.urlopen(f"{base}/healthz", timeout=10) as r:
            assert r.status == 200
        # The listener counts a batch a moment after the commit that emptied the queue.
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
                text = r.read().decode()
            if 'session_ledger_events_total{outcome="dead-lettered"} 1.0' in text:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.1)
        assert 'session_ledger_events_total{outcome="paid"} 1.0' in text
        assert 'session_ledger_events_total{outcome="dead-lettered"} 1.0' in text
        assert "session_ledger_dead_letter_depth 1.0" in text
        assert "session_ledger_queue_depth 0.0" in text
        assert "session_ledger_charge_lag_seconds_count" in text
        status = json.loads(run_cli("status", "--dsn", world.ledger.dsn, "--json").stdout)
        assert status["dead_letter_depth"] == 1 and status["queue_depth"] == 0
        assert len(status["listeners"]) == 1
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _help_entries(text: str) -> dict[str, str]:
    """Each option's entry in a --help text (its flags, then its help) by its first flag, whitespace collapsed."""
    entries: dict[str, str] = {}
    flag = None
    for line in text.splitlines():
        match = re.match(r"^  (-[-\w]+)", line)
        if match:
            flag = match.group(1)
            entries[flag] = line
        elif flag is not None and line.startswith("   "):
            entries[flag] += " " + line
        else:
            flag = None
    return {f: " ".join(entry.split()) for f, entry in entries.items()}


@pytest.mark.parametrize("name", sorted(_subparsers()))
def test_each_subcommand_help_has_a_description_and_shows_its_defaults(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exited:
        main([name, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    parser = _subparsers()[name]
    # The paragraph after the usage is the command's one-sentence description.
    usage, description, *_ = out.split("\n\n")
    assert usage.startswith(f"usage: listener {name}")
    sentence = " ".join(description.split())
    assert sentence == parser.description, out
    assert sentence[0].isupper() and sentence.endswith(".") and sentence.count(". ") == 0, sentence
    entries = _help_entries(out)
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0:
            continue  # a flag is off unless given; --help has nothing to default
        entry = entries[action.option_strings[0]]
        if action.default is not None:
            shown = "" if isinstance(action.default, list) else str(action.default)
            assert f"(default: {shown}" in entry, entry
        if action.dest in Settings.model_fields and Settings.model_fields[action.dest].default is not None:
            # An option that overrides a setting names the setting's default, whatever argparse's is.
            assert f"else {Settings.model_fields[action.dest].default})" in entry, entry
    if name == "run":
        # The HTTP server's own default is the setting's, which the help shows.
        assert f"else {TIMEOUT_S})" in entries["--http-timeout"]
