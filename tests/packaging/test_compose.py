"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

The compose file is parsed with PyYAML; every service's command is parsed by the
listener's own argument parser, and the dependency graph is checked for order and
conditions. The Dockerfile's HEALTHCHECK command and the systemd units' /livez probe are
run against a real listener.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from listener.cli.main import build_parser

from support.world import LISTENER

# The slow tier: images and a fresh virtualenv.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """Parse a command line with the real CLI parser; a usage error fails the test."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"not a valid listener command line: {argv} (exit {exc.code})")


def listener_argvs(service: dict[str, Any]) -> list[list[str]]:
    """The listener command lines a service runs: its command, or `listener ...` inside a shell loop."""
    entrypoint = service.get("entrypoint")
    command = service.get("command")
    assert isinstance(command, list), "commands are lists, so no shell re-splits them"
    if entrypoint is None:
        return [list(map(str, command))]
    assert entrypoint[:2] == ["/bin/sh", "-c"], entrypoint
    [script] = command
    argvs = []
    for part in re.split(r";|&&|\|\|", script):
        words = shlex.split(part)
        while words and words[0] in ("do", "then", "else", "{"):
            words = words[1:]
        if words and words[0] == "listener":
            argvs.append(words[1:])
    return argvs


def test_services_and_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"db", "migrate", "listener", "cron"}
    assert services["db"]["image"] in (
        "postgres:17",
        "ghcr.io/pgmq/pg17-pgmq:latest",
        "ghcr.io/pgmq/pg17-pgmq",
    )
    for name in ("migrate", "listener", "cron"):
        assert services[name]["build"] == "."
        assert services[name]["image"] == services["listener"]["image"]


def test_db_healthcheck_uses_pg_isready(compose: dict[str, Any]) -> None:
    check = compose["services"]["db"]["healthcheck"]
    assert check["test"][0] == "CMD-SHELL"
    assert check["test"][1].startswith("pg_isready")
    assert "-d app" in check["test"][1]


def test_dependency_order_and_conditions(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {
        "migrate": {"db": "service_healthy"},
        "listener": {"migrate": "service_completed_successfully"},
        "cron": {"migrate": "service_completed_successfully"},
    }
    for name, deps in expected.items():
        got = {dep: cfg["condition"] for dep, cfg in services[name]["depends_on"].items()}
        assert got == deps, name
    assert "depends_on" not in services["db"]
    # A start order exists (no cycle) and puts db, then migrate, before the long-running services.
    order: list[str] = []
    pending = dict(services)
    while pending:
        ready = sorted(n for n, s in pending.items() if set(s.get("depends_on", {})) <= set(order))
        assert ready, f"dependency cycle among {sorted(pending)}"
        order.extend(ready)
        for n in ready:
            del pending[n]
    assert order.index("db") < order.index("migrate") < order.index("listener")
    assert order.index("migrate") < order.index("cron")


def test_restart_policies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["listener"]["restart"] == "unless-stopped"
    assert services["cron"]["restart"] == "unless-stopped"
    # A one-shot that restarted would never "complete successfully" for its dependants.
    assert services["migrate"].get("restart", "no") == "no"


def test_every_command_is_a_valid_listener_invocation(compose: dict[str, Any]) -> None:
    services = compose["services"]
    parsed = {
        name: [parse_cli(a) for a in listener_argvs(services[name])]
        for name in ("migrate", "listener", "cron")
    }
    [migrate] = parsed["migrate"]
    assert migrate.command == "migrate" and migrate.with_demo_schema
    [run] = parsed["listener"]
    assert run.command == "run" and not run.drain and run.http_port == 9187
    [cron] = parsed["cron"]
    assert cron.command == "complete-past"
    assert re.search(r"sleep (\d+)", services["cron"]["command"][0]), "the cron loop waits between runs"
    # The listener's metrics port is the one published.
    assert any(str(p).endswith(f":{run.http_port}") for p in services["listener"]["ports"])


def test_dsn_points_at_the_db_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    db_env = services["db"]["environment"]
    for name in ("migrate", "listener", "cron"):
        dsn = services[name]["environment"]["DATABASE_URL"]
        parts = conninfo_to_dict(dsn)
        assert parts["host"] == "db"
        assert parts["dbname"] == db_env["POSTGRES_DB"]
        assert parts["password"] == db_env["POSTGRES_PASSWORD"]


def _dockerfile() -> dict[str, str]:
    """The Dockerfile's instructions (continuation lines joined), last one of each kind."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            found[keyword.upper()] = rest.strip()
            found.setdefault(f"FIRST_{keyword.upper()}", rest.strip())
    return found


def test_dockerfile_is_slim_non_root_with_listener_entrypoint() -> None:
    d = _dockerfile()
    assert d["FIRST_FROM"] == "python:3.11-slim"
    assert json.loads(d["ENTRYPOINT"]) == ["listener"]
    assert d["USER"] not in ("root", "0")
    assert "pip install ." in DOCKERFILE.read_text(encoding="utf-8")
    default = parse_cli(json.loads(d["CMD"]))
    assert default.command == "run" and default.http_port == 9187


def test_dockerfile_healthcheck_passes_against_a_running_listener_paused_or_not(ledger_dsn: str) -> None:
    check = _dockerfile()["HEALTHCHECK"]
    assert "/livez" in check and "/readyz" not in check
    argv = json.loads(check.split("CMD", 1)[1].strip())
    assert argv[:2] == ["python", "-c"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "LISTENER_HTTP_PORT": str(port)}

    def healthcheck() -> int:
        return subprocess.run(
            [sys.executable, *argv[1:]], env=env, capture_output=True, timeout=60, check=False
        ).returncode

    assert healthcheck() != 0, "nothing is listening yet, so the check must fail"
    proc = subprocess.Popen(
        [*LISTENER, "run", "--dsn", ledger_dsn, "--http-port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60  # ends as soon as the check passes
        while healthcheck() != 0:
            assert proc.poll() is None, "the listener exited"
            assert time.monotonic() < deadline, "/livez never answered 200"
            time.sleep(0.2)
        # A deliberate pause stops charging, not the container: it stays healthy.
        paused = subprocess.run(
            [*LISTENER, "pause", "--dsn", ledger_dsn, "--reason", "healthcheck test"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert paused.returncode == 0, paused.stderr
        while _status(f"http://127.0.0.1:{port}/readyz") != 503:
            assert time.monotonic() < deadline + 60, "/readyz never saw the pause"
            time.sleep(0.2)
        assert healthcheck() == 0
    finally:
        subprocess.run(
            [*LISTENER, "resume", "--dsn", ledger_dsn], capture_output=True, timeout=60, check=False
        )
        proc.terminate()
        assert proc.wait(timeout=60) == 0


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


UNIT = ROOT / "deploy" / "listener.service"
LIVEZ_UNIT = ROOT / "deploy" / "listener-livez.service"
LIVEZ_TIMER = ROOT / "deploy" / "listener-livez.timer"
VENV_PYTHON = "/opt/session-ledger/bin/python"


def _unit(path: Path) -> dict[str, list[str]]:
    """A systemd unit's settings, every value of each key."""
    found: dict[str, list[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_the_systemd_units_probe_livez_and_the_probe_passes_against_a_running_listener(
    ledger_dsn: str,
) -> None:
    unit, check, timer = _unit(UNIT), _unit(LIVEZ_UNIT), _unit(LIVEZ_TIMER)
    [start_post] = unit["ExecStartPost"]
    [check_command] = check["ExecStart"]
    assert "/livez" in start_post and "/livez" in check_command
    assert "systemctl try-restart session-ledger-listener.service" in check_command
    assert timer["OnUnitActiveSec"] and timer["WantedBy"] == ["timers.target"]
    # The ports the probes ask are the one the unit serves.
    [exec_start] = unit["ExecStart"]
    port = str(parse_cli(shlex.split(exec_start)[1:]).http_port)
    assert f"127.0.0.1:{port}/livez" in start_post and f"127.0.0.1:{port}/livez" in check_command
    # The probe as the unit runs it, with this interpreter for the unit's venv and a free port.
    argv = shlex.split(start_post)
    assert argv[0] == VENV_PYTHON and argv[1:3] == ["-m", "listener.http.probe"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    probe = [sys.executable, *(a.replace(f":{port}/", f":{free}/") for a in argv[1:])]
    quick = [*probe[: probe.index("--wait")], "--wait", "0"]
    refused = subprocess.run(quick, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 1 and "/livez" in refused.stderr
    proc = subprocess.Popen(
        [*LISTENER, "run", "--dsn", ledger_dsn, "--http-port", str(free)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = subprocess.run(probe, capture_output=True, text=True, timeout=120, check=False)
        assert started.returncode == 0, started.stderr
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0
