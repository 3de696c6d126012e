"""Every command, fed what operators get wrong: a non-zero exit, one line on stderr that says what to do, never a traceback.

The cases are run once, side by side (each a `python -m listener` process), and
judged one test each.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from listener.cli.main import build_parser
from listener.core.db import connect
from listener.core.sql_files import demo_schema
from listener.devtools.throwaway import create_database, drop_database

from support.world import LISTENER

# The slow tier: every case a CLI subprocess, a promtool run, or an embedded or HTTP server of its own.
pytestmark = pytest.mark.slow

PASSWORD = "hunter2secret"


@dataclass(frozen=True)
class Case:
    """One command line, the database it is pointed at, and what its one line of stderr must say."""

    id: str
    argv: tuple[str, ...]
    says: str
    dsn: str | None = None  # a key of Targets.dsns, given as --dsn
    code: int = 1


# Commands that take --dsn, as an operator would first type them.
DB_COMMANDS: dict[str, tuple[str, ...]] = {
    "status": ("status",),
    "reconcile": ("reconcile",),
    "reconcile-dry-run": ("reconcile", "--dry-run"),
    "complete-past": ("complete-past",),
    "replay-archive": ("replay", "--from-archive"),
    "replay-dead-letters": ("replay", "--dead-letter", "--all"),
    "prune": ("prune", "--older-than", "30d"),
    "discard": ("discard", "--dead-letter", "--all", "--reason", "poison"),
    "audit": ("audit",),
    "audit-charge": ("audit", "--charge-all"),
    "cutover": ("cutover",),
    "run": ("run", "--drain"),
    "migrate": ("migrate",),
    "pause": ("pause",),
    "resume": ("resume",),
}
OWNER_ONLY = (
    "reconcile",
    "reconcile-dry-run",
    "replay-archive",
    "replay-dead-letters",
    "prune",
    "discard",
    "audit",
    "audit-charge",
    "cutover",
    "migrate",
    "uninstall",
    "pause",
    "resume",
)
# Connection problems are the same for every command that connects.
CONNECTING = {**DB_COMMANDS, "doctor": ("doctor",), "uninstall": ("uninstall", "--yes")}


def _subcommands() -> list[str]:
    """Every subcommand the parser knows, so a new one is fed an unknown flag too."""
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


REQUIRED = {
    "export-migrations": ("out",),
    "prune": ("--older-than", "30d"),
    "replay": ("--from-archive",),
    "discard": ("--dead-letter", "--all", "--reason", "poison"),
}
NO_LEDGER = "no session ledger here: run `listener migrate` first"
NOT_OWNER = "this command needs the ledger's owner (role {login} cannot "


def _cases() -> list[Case]:
    cases: list[Case] = []
    for name, argv in CONNECTING.items():
        cases.append(
            Case(f"unreachable-{name}", argv, "cannot connect to alice@127.0.0.1:{port}/app", "down")
        )
        cases.append(Case(f"wrong-database-{name}", argv, '"ledger_nowhere" does not exist', "nodb"))
    # One code path each, whatever the command: a few commands stand for all.
    for name in ("status", "migrate", "reconcile", "run"):
        cases.append(
            Case(
                f"garbage-dsn-{name}",
                CONNECTING[name],
                "the DSN is not a valid connection string",
                "garbage",
                2,
            )
        )
        cases.append(
            Case(
                f"no-dsn-{name}",
                CONNECTING[name],
                "no database given: pass --dsn or set LISTENER_DSN (or DATABASE_URL)",
                None,
                2,
            )
        )
        cases.append(
            Case(f"unknown-host-{name}", CONNECTING[name], "cannot connect to alice@host.invalid", "nohost")
        )
    for name, argv in DB_COMMANDS.items():
        if name != "migrate":
            cases.append(Case(f"no-ledger-{name}", argv, NO_LEDGER, "app"))
    for name in ("status", "complete-past", "run", "reconcile"):
        cases.append(Case(f"no-ledger-listener-role-{name}", DB_COMMANDS[name], NO_LEDGER, "listener-app"))
    for name in OWNER_ONLY:
        cases.append(Case(f"listener-role-{name}", CONNECTING[name], NOT_OWNER, "listener"))
    # A login that is neither the owner nor in session_ledger_listener.
    for name in ("status", "run"):
        cases.append(
            Case(
                f"stranger-{name}",
                DB_COMMANDS[name],
                "role {stranger} may not use the session ledger",
                "stranger",
            )
        )
    for name in ("reconcile", "uninstall", "migrate"):
        cases.append(Case(f"stranger-{name}", CONNECTING[name], "(role {stranger} cannot ", "stranger"))
    cases.append(
        Case(
            "stranger-complete-past",
            DB_COMMANDS["complete-past"],
            "role {stranger} may not complete bookings through the ledger",
            "stranger",
        )
    )
    cases.append(
        Case(
            "listener-role-migrate-without-ledger",
            ("migrate",),
            "role {login} lacks the rights `listener migrate` needs: SELECT, UPDATE, TRIGGER on public.bookings",
            "listener-app",
        )
    )
    for command in _subcommands():
        # With what the command requires, so the unknown flag is what argparse trips on.
        argv = (command, *REQUIRED.get(command, ()), "--no-such-flag")
        cases.append(Case(f"unknown-flag-{command}", argv, "unrecognized arguments: --no-such-flag", code=2))
    bad_values: list[tuple[str, tuple[str, ...], str]] = [
        (
            "booking-not-uuid",
            ("replay", "--from-archive", "--booking", "b-1"),
            "not a booking id (UUID): 'b-1'",
        ),
        ("org-not-uuid", ("audit", "--org", "acme"), "not an organisation id (UUID): 'acme'"),
        ("pack-not-uuid", ("audit", "--charge", "nope"), "not a pack id (UUID): 'nope'"),
        ("pack-half-uuid", ("audit", "--charge", str(uuid.uuid4())[:20]), "not a pack id (UUID)"),
        ("message-id-word", ("replay", "--dead-letter", "--id", "five"), "not a message id"),
        ("message-id-too-big", ("replay", "--dead-letter", "--id", "9" * 20), "not a message id"),
        ("message-id-zero", ("replay", "--dead-letter", "--id", "0"), "not a message id"),
        ("duration-words", ("prune", "--older-than", "thirty days"), "cannot read duration 'thirty days'"),
        ("duration-negative", ("prune", "--older-than=-1d"), "cannot read duration '-1d'"),
        ("duration-fraction", ("prune", "--older-than", "1.5d"), "cannot read duration '1.5d'"),
        ("duration-empty", ("prune", "--older-than", ""), "cannot read duration ''"),
        ("duration-huge", ("prune", "--older-than", "9" * 20 + "d"), "is longer than 36600 days"),
        ("duration-missing", ("prune",), "the following arguments are required: --older-than"),
        (
            "duration-ambiguous",
            ("prune", "--older-than", "1m"),
            "duration '1m' is ambiguous: write 1min for minutes",
        ),
        (
            "duration-under-a-day",
            ("prune", "--older-than", "0d"),
            "a retention under one day (0s) removes what",
        ),
        (
            "discard-no-reason",
            ("discard", "--dead-letter", "--all"),
            "the following arguments are required: --reason",
        ),
        (
            "discard-blank-reason",
            ("discard", "--dead-letter", "--all", "--reason", " "),
            "--reason is required",
        ),
        (
            "discard-which",
            ("discard", "--dead-letter", "--reason", "x"),
            "say which dead letters: --id N ... or --all",
        ),
        (
            "discard-id-and-all",
            ("discard", "--dead-letter", "--all", "--id", "1", "--reason", "x"),
            "not both",
        ),
        (
            "discard-id-word",
            ("discard", "--dead-letter", "--id", "five", "--reason", "x"),
            "not a message id",
        ),
        ("cutover-at-words", ("cutover", "--at", "yesterday"), "not an ISO 8601 time: 'yesterday'"),
        ("since-month-13", ("replay", "--from-archive", "--since", "2025-13-01"), "not an ISO 8601 time"),
        (
            "since-after-until",
            ("replay", "--from-archive", "--since", "2026-02-01", "--until", "2026-01-01"),
            "--since must be earlier than --until",
        ),
        (
            "ids-with-archive",
            ("replay", "--from-archive", "--id", "1"),
            "--id and --all apply to --dead-letter",
        ),
        (
            "booking-with-dead-letters",
            ("replay", "--dead-letter", "--booking", str(uuid.uuid4())),
            "--since, --until and --booking apply to --from-archive",
        ),
        ("replay-no-source", ("replay",), "one of the arguments --from-archive --dead-letter is required"),
        ("redrive-which", ("replay", "--dead-letter"), "say which dead letters: --id N ... or --all"),
        ("audit-yes-alone", ("audit", "--yes"), "--yes applies to --charge or --charge-all"),
        ("batch-size-zero", ("run", "--batch-size", "0"), "invalid batch_size"),
        ("batch-size-word", ("run", "--batch-size", "many"), "invalid int value: 'many'"),
        ("http-port-too-big", ("run", "--http-port", "99999"), "invalid http_port"),
        ("http-timeout-zero", ("run", "--http-timeout", "0"), "invalid http_timeout_s"),
        ("poll-negative", ("run", "--poll-interval", "-1"), "invalid poll_interval_s"),
        ("log-format", ("run", "--log-format", "xml"), "invalid choice: 'xml'"),
        ("max-age-word", ("status", "--max-age", "soon"), "not a number of seconds (0 or more): 'soon'"),
        ("max-age-negative", ("status", "--max-age", "-1"), "not a number of seconds (0 or more): '-1'"),
        ("max-age-nan", ("status", "--max-age", "nan"), "not a number of seconds (0 or more): 'nan'"),
        (
            "dead-letter-all-and-ids",
            ("replay", "--dead-letter", "--all", "--id", "1"),
            "--all and --id contradict each other",
        ),
        ("pgmq-kind", ("export-migrations", "out", "--pgmq", "rpm"), "invalid choice: 'rpm'"),
    ]
    for name, argv, says in bad_values:
        # A reachable database with a ledger: only the bad value is wrong.
        cases.append(Case(f"bad-{name}", argv, says, "ledger", 2))
    cases.append(
        Case(
            "bad-unknown-dead-letter",
            ("replay", "--dead-letter", "--id", "424242"),
            "no dead letter with id 424242",
            "ledger",
        )
    )
    cases.append(
        Case(
            "bad-unknown-discard",
            ("discard", "--dead-letter", "--id", "424242", "--reason", "x"),
            "no dead letter with id 424242; nothing was discarded",
            "ledger",
        )
    )
    cases.append(
        Case(
            "bad-unknown-pack",
            ("audit", "--charge", "00000000-0000-0000-0000-000000000000"),
            "no such pack: 00000000-0000-0000-0000-000000000000",
            "ledger",
        )
    )
    for name, argv in (("audit", ("audit",)), ("audit-charge", ("audit", "--charge-all"))):
        cases.append(
            Case(
                f"bad-unknown-org-{name}",
                (*argv, "--org", "00000000-0000-0000-0000-000000000000"),
                "no pack or booking belongs to organisation 00000000-0000-0000-0000-000000000000",
                "ledger",
            )
        )
    cases.append(
        Case(
            "bad-unknown-booking",
            ("replay", "--from-archive", "--booking", "00000000-0000-0000-0000-000000000000"),
            "no archived events for booking(s) 00000000-0000-0000-0000-000000000000",
            "ledger",
        )
    )
    cases.append(Case("bad-unknown-command", ("frobnicate",), "invalid choice: 'frobnicate'", code=2))
    cases.append(
        Case(
            "export-no-path",
            ("export-migrations",),
            "the following arguments are required: directory",
            code=2,
        )
    )
    cases.append(Case("export-empty-path", ("export-migrations", ""), "no directory given", code=2))
    # /proc refuses new files even to root, so the read-only cases hold whoever runs the suite.
    for name, path, says, code in (
        ("export-to-a-file", "{file}", "{file} exists and is not a directory", 2),
        (
            "export-under-a-file",
            "{file}/migrations",
            "cannot write the migrations to {file}/migrations: not a",
            1,
        ),
        ("export-read-only", "/proc", "cannot write the migrations to /proc: ", 1),
        (
            "export-cannot-create",
            "/proc/ledger-migrations",
            "cannot write the migrations to /proc/ledger-",
            1,
        ),
    ):
        cases.append(Case(name, ("export-migrations", path), says, code=code))
    return cases


CASES = _cases()


@dataclass(frozen=True)
class Targets:
    """What the cases point at: DSNs by name, and the names their messages mention."""

    dsns: dict[str, str]
    login: str
    stranger: str
    port: int
    file: Path


@pytest.fixture(scope="module")
def targets(
    ledger_server: str, ledger_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Targets]:
    """A migrated database, one with only the app's tables, a login in session_ledger_listener and one in nothing."""
    ledger = create_database(ledger_server, prefix="ledger_bad", template=ledger_template)
    app = create_database(ledger_server, prefix="ledger_bad_app")
    login = f"ledger_bad_{uuid.uuid4().hex[:8]}"
    stranger = f"{login}_stranger"
    try:
        with connect(app, purpose="tests") as conn:
            conn.execute(demo_schema())
        with connect(ledger_server, purpose="tests") as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN IN ROLE session_ledger_listener").format(sql.Identifier(login))
            )
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(stranger)))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # nothing listens here once the socket is closed
        file = tmp_path_factory.mktemp("bad_inputs") / "not-a-directory.sql"
        file.write_text("-- in the way\n", encoding="utf-8")
        yield Targets(
            dsns={
                "ledger": ledger,
                "app": app,
                "listener": _as_role(ledger, login),
                "listener-app": _as_role(app, login),
                "stranger": _as_role(ledger, stranger),
                "down": f"postgresql://alice:{PASSWORD}@127.0.0.1:{port}/app",
                "nohost": f"postgresql://alice:{PASSWORD}@host.invalid:5432/app",
                "nodb": make_conninfo(ledger_server, dbname="ledger_nowhere"),
                "garbage": f"not a dsn password={PASSWORD}",
            },
            login=login,
            stranger=stranger,
            port=port,
            file=file,
        )
    finally:
        drop_database(ledger_server, ledger)
        drop_database(ledger_server, app)
        with connect(ledger_server, purpose="tests") as conn:
            for role in (login, stranger):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def _as_role(dsn: str, login: str) -> str:
    params = conninfo_to_dict(dsn)
    params["user"] = login
    params.pop("password", None)
    return make_conninfo("", **{k: str(v) for k, v in params.items() if v is not None})


def _fill(text: str, t: Targets) -> str:
    return text.format(login=t.login, stranger=t.stranger, port=t.port, file=t.file)


@pytest.fixture(scope="module")
def results(targets: Targets) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every case's process, run four at a time."""
    env = {**os.environ, "DATABASE_URL": "", "LISTENER_DSN": "", "COLUMNS": "200"}

    def run(case: Case) -> subprocess.CompletedProcess[str]:
        argv = [_fill(a, targets) for a in case.argv]
        if case.dsn is not None:
            argv += ["--dsn", targets.dsns[case.dsn]]
        return subprocess.run(
            [*LISTENER, *argv], capture_output=True, text=True, timeout=120, env=env, check=False
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip([c.id for c in CASES], pool.map(run, CASES), strict=True))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_is_one_line_that_says_what_is_wrong(
    case: Case, targets: Targets, results: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = results[case.id]
    shown = f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"
    assert "Traceback" not in result.stdout + result.stderr, shown
    assert PASSWORD not in result.stdout + result.stderr, shown
    assert result.returncode == case.code, shown
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, shown
    [line] = lines
    assert line.startswith("listener"), shown
    assert _fill(case.says, targets) in line, shown
    assert len(line) <= 400, shown
