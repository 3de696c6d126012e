"""Mutation testing of the SQL rules: break one rule at a time and check the fast tiers notice.

    python -m tests.mutation                  # the whole catalogue
    python -m tests.mutation --only ID ...    # some mutants
    python -m tests.mutation --sample 8       # today's slice of a rotation through the catalogue
    python -m tests.mutation --list           # the catalogue, checked against sql/functions

The checkout is copied to a temporary directory once per job. Each mutant is applied to
the copy's sql/functions file, tests/unit and tests/db run against the copy (PYTHONPATH
points at it, so the template database is migrated from the mutated SQL; checked once
per copy), and the file is restored. The hinted tests run first; the rest of the tier
runs only when they did not kill the mutant. pytest stops at the first failure (-x).

A kill counts only if the killing test passes without any mutant: after the mutants,
every killing test runs once on the unmutated copy, and a mutant killed by a test that
fails there is run again with that test deselected.

Exit status: 0 every mutant killed; 1 a mutant survived, broke the schema, or errored;
2 the catalogue is stale or the run could not start; 3 all killed, but some tests fail
without any mutant.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .catalogue import CATALOGUE, Mutant
from .record import FAILURES_ENV

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = Path("sql") / "functions"
TIERS = ("tests/unit", "tests/db")
# Order of the fallback run: the pinned rules first; last, the model's random sequences and
# the tests that start clusters or wait on pg_cron (a name missing here is simply not reordered).
FIRST = ("tests/db/test_rules_pinned.py",)
LAST = (
    "tests/db/test_model.py",
    "tests/db/test_drain.py",
    "tests/db/test_supabase_lints.py",
    "tests/db/test_supabase_cluster.py",
)
# Caches and version control are not copied, nor any virtualenv (CI keeps one inside the checkout).
COPY_SKIP = {".git", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis"}
RUN_TIMEOUT_S = 1800


class StaleCatalogue(Exception):
    """A mutant's snippet is not in its file exactly once, or its hint names no test file."""


class WrongSqlDir(Exception):
    """The copy's tests would not load the copy's SQL."""


class RunFailed(Exception):
    """pytest could not run (usage error, internal error, timeout, or no test selected)."""


@dataclass(frozen=True)
class Failure:
    """A test that failed: node id, phase and the first line of its error."""

    nodeid: str
    when: str
    message: str


@dataclass
class Outcome:
    """What running the tiers against one mutant found."""

    mutant: Mutant
    status: str  # KILLED, SURVIVED, BROKEN, ERROR, EQUIVALENT
    seconds: float = 0.0
    killer: Failure | None = None
    detail: str = ""
    deselected: tuple[str, ...] = field(default=())

    def line(self) -> str:
        """One line: id, status, seconds, and the first failing test (or why)."""
        if self.status == "EQUIVALENT":
            return f"{self.mutant.id:<34} EQUIVALENT       -  {self.mutant.equivalent}"
        what = ""
        if self.killer is not None:
            what = self.killer.nodeid
            if self.killer.when != "call":
                what += f" (at {self.killer.when})"
            message = self.killer.message.strip()
            if message:
                what += f": {message[:117] + '...' if len(message) > 120 else message}"
        elif self.detail:
            what = self.detail
        if self.deselected:
            what += f" [without {len(self.deselected)} test(s) that fail unmutated]"
        return f"{self.mutant.id:<34} {self.status:<10} {self.seconds:6.1f}s  {what}".rstrip()


def mutate(mutant: Mutant, text: str) -> str:
    """The file's text with the mutant applied; StaleCatalogue unless its snippet occurs exactly once."""
    count = text.count(mutant.original)
    if count != 1:
        raise StaleCatalogue(
            f"mutant {mutant.id}: its original snippet occurs {count} times in sql/functions/{mutant.file}, not once"
        )
    if mutant.original == mutant.replacement:
        raise StaleCatalogue(f"mutant {mutant.id}: its replacement is its original")
    return text.replace(mutant.original, mutant.replacement)


def check_catalogue(tree: Path, mutants: Sequence[Mutant]) -> None:
    """Every id unique, every snippet found once, every hinted file present; StaleCatalogue otherwise."""
    seen: set[str] = set()
    problems: list[str] = []
    for m in mutants:
        if m.id in seen:
            problems.append(f"mutant id {m.id} is used twice")
        seen.add(m.id)
        path = tree / FUNCTIONS / m.file
        if not path.is_file():
            problems.append(f"mutant {m.id}: no file sql/functions/{m.file}")
            continue
        try:
            mutate(m, path.read_text(encoding="utf-8"))
        except StaleCatalogue as exc:
            problems.append(str(exc))
        for target in m.hint:
            if not (tree / target.split("::", 1)[0]).exists():
                problems.append(f"mutant {m.id}: its hint names {target}, which does not exist")
        if m.hint and m.hint_k:
            problems.append(f"mutant {m.id}: give hint or hint_k, not both")
    if problems:
        raise StaleCatalogue("\n  ".join(["", *problems]))


def rotation(mutants: Sequence[Mutant], size: int, day: int) -> list[Mutant]:
    """Day `day`'s slice of a fixed shuffle: consecutive days cover the whole catalogue in turn."""
    order = sorted(mutants, key=lambda m: m.id)
    random.Random(20240518).shuffle(order)
    if size >= len(order):
        return order
    start = (day * size) % len(order)
    return [order[(start + i) % len(order)] for i in range(size)]


@dataclass
class Workspace:
    """A copy of the checkout that the tests run against."""

    root: Path

    def env(self, failures: Path) -> dict[str, str]:
        """The environment of a pytest run on this copy."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", FAILURES_ENV)}
        env["PYTHONPATH"] = str(self.root)
        env[FAILURES_ENV] = str(failures)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def assert_loads_own_sql(self) -> None:
        """Check, in a subprocess set up as the tests are, that `listener` and its SQL come from this copy."""
        probe = "import listener, listener.core.sql_files as f; print(listener.__file__); print(f.sql_dir())"
        env = self.env(self.root / ".probe")
        result = subprocess.run(
            [sys.executable, "-P", "-c", probe],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        lines = result.stdout.split()
        if result.returncode != 0 or len(lines) != 2:
            raise WrongSqlDir(f"could not ask the copy where its SQL is: {result.stderr.strip()[-300:]}")
        package, sql_dir = (Path(x).resolve() for x in lines)
        if not package.is_relative_to(self.root.resolve()) or sql_dir != (self.root / "sql").resolve():
            raise WrongSqlDir(f"the tests would load listener from {package.parent} and SQL from {sql_dir}")

    def pytest(self, selection: Sequence[str], *, stop_first: bool = True) -> tuple[int, list[Failure], str]:
        """Run pytest on this copy: (exit code, failures in order, tail of its output)."""
        failures = self.root / ".mutation-failures.jsonl"
        failures.unlink(missing_ok=True)
        args = [
            sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.mutation.record",
            "-m", "not slow", *(["-x"] if stop_first else []), *selection,
        ]  # fmt: skip
        try:
            result = subprocess.run(
                args, cwd=self.root, env=self.env(failures), capture_output=True, text=True,
                timeout=RUN_TIMEOUT_S, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise RunFailed(f"pytest ran longer than {RUN_TIMEOUT_S}s") from exc
        found: list[Failure] = []
        if failures.exists():
            for raw in failures.read_text(encoding="utf-8").splitlines():
                item = json.loads(raw)
                found.append(Failure(item["nodeid"], item["when"], (item["message"] or [""])[0]))
        tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        return result.returncode, found, " | ".join(tail)


def fallback_selection(tree: Path, hint: Sequence[str], hint_k: str, deselect: Sequence[str]) -> list[str]:
    """The whole fast tier, pinned rules first and the slowest files last, minus what already ran."""
    files = [str(p.relative_to(tree)) for tier in TIERS for p in sorted((tree / tier).rglob("test_*.py"))]
    first = [f for f in FIRST if f in files]
    last = [f for f in LAST if f in files]
    middle = [f for f in files if f not in first and f not in last]
    selection = [*first, *middle, *last]
    for nodeid in (*hint, *deselect):
        selection += ["--deselect", nodeid]
    if hint_k:
        selection += ["-k", f"not ({hint_k})"]
    return selection


def run_mutant(ws: Workspace, mutant: Mutant, deselect: Sequence[str]) -> Outcome:
    """Apply one mutant to the copy, run the hinted tests then (if needed) the rest, restore the file."""
    path = ws.root / FUNCTIONS / mutant.file
    pristine = path.read_text(encoding="utf-8")
    mutated = mutate(mutant, pristine)
    started = time.monotonic()
    path.write_text(mutated, encoding="utf-8")
    try:
        runs: list[tuple[list[str], bool]] = []
        if mutant.hint or mutant.hint_k:
            hinted = list(mutant.hint or TIERS)
            if mutant.hint_k:
                hinted += ["-k", mutant.hint_k]
            for nodeid in deselect:
                hinted += ["--deselect", nodeid]
            runs.append((hinted, True))
        runs.append((fallback_selection(ws.root, mutant.hint, mutant.hint_k, deselect), False))
        for selection, is_hint in runs:
            code, failures, tail = ws.pytest(selection)
            if failures:
                first = failures[0]
                status = "BROKEN" if first.when in ("setup", "collect") else "KILLED"
                return Outcome(mutant, status, time.monotonic() - started, first, deselected=tuple(deselect))
            if code == 5 and is_hint and not deselect:
                raise RunFailed(f"mutant {mutant.id}: its hint selects no test")
            if code not in (0, 5):
                raise RunFailed(f"pytest exited {code} with no failing test: {tail}")
        return Outcome(mutant, "SURVIVED", time.monotonic() - started, deselected=tuple(deselect))
    except RunFailed as exc:
        return Outcome(mutant, "ERROR", time.monotonic() - started, detail=str(exc))
    finally:
        path.write_text(pristine, encoding="utf-8")


def failing_without_mutants(ws: Workspace, nodeids: set[str]) -> set[str]:
    """Of these tests, the ones that fail on the unmutated copy."""
    if not nodeids:
        return set()
    _, failures, _ = ws.pytest(sorted(nodeids), stop_first=False)
    return {f.nodeid for f in failures} & nodeids


def _not_copied(directory: str, names: list[str]) -> set[str]:
    """copytree's ignore: caches, version control and virtualenvs."""
    return {
        n for n in names
        if n in COPY_SKIP or n.endswith(".egg-info") or (Path(directory) / n / "pyvenv.cfg").exists()
    }  # fmt: skip


@contextmanager
def workspaces(count: int) -> Iterator[list[Workspace]]:
    """`count` copies of the checkout, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="sql-mutation-"))
    try:
        copies = []
        for i in range(count):
            root = base / f"tree{i}"
            shutil.copytree(ROOT, root, ignore=_not_copied, symlinks=True)
            copies.append(Workspace(root))
        yield copies
    finally:
        shutil.rmtree(base, ignore_errors=True)


class Printer:
    """Prints lines from worker threads, whole."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._lock = threading.Lock()

    def say(self, text: str, *, always: bool = False) -> None:
        """Print unless quiet (or always)."""
        if always or not self.quiet:
            with self._lock:
                print(text, flush=True)


def run_all(
    mutants: Sequence[Mutant], copies: list[Workspace], printer: Printer
) -> tuple[dict[str, Outcome], set[str]]:
    """Run the mutants on the copies; re-run those killed by a test that fails without any mutant."""
    pool: queue.Queue[Workspace] = queue.Queue()
    for ws in copies:
        pool.put(ws)
    outcomes: dict[str, Outcome] = {}
    broken_without: set[str] = set()
    verified: set[str] = set()

    def one(m: Mutant) -> Outcome:
        ws = pool.get()
        try:
            outcome = run_mutant(ws, m, sorted(broken_without))
        finally:
            pool.put(ws)
        quiet_ok = outcome.status == "KILLED"
        printer.say(outcome.line(), always=not quiet_ok)
        return outcome

    todo = list(mutants)
    while todo:
        with ThreadPoolExecutor(max_workers=len(copies)) as executor:
            for outcome in executor.map(one, todo):
                outcomes[outcome.mutant.id] = outcome
        killers = {o.killer.nodeid for o in outcomes.values() if o.status == "KILLED" and o.killer} - verified
        newly_broken = failing_without_mutants(copies[0], killers)
        verified |= killers - newly_broken
        broken_without |= newly_broken
        todo = [
            o.mutant for o in outcomes.values()
            if o.status == "KILLED" and o.killer is not None and o.killer.nodeid in newly_broken
        ]  # fmt: skip
        for nodeid in sorted(newly_broken):
            printer.say(
                f"  {nodeid} fails without any mutant: re-running the mutants it killed without it",
                always=True,
            )
    return outcomes, broken_without


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutants")
    parser.add_argument("--sample", type=int, metavar="N", help="run N mutants: today's slice of a rotation")
    parser.add_argument("--day", type=int, help="the rotation's day number (default: today's date ordinal)")
    parser.add_argument(
        "--list", action="store_true", help="list the catalogue (checked against sql/functions)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="mutants run at once, each on its own copy (default 1)"
    )
    parser.add_argument(
        "--run-equivalent", action="store_true", help="also run the mutants argued equivalent"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only mutants that were not killed")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.sample is not None and args.sample < 1:
        parser.error("--sample must be at least 1")
    if args.only and args.sample:
        parser.error("--only and --sample do not go together")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the catalogue (or part of it) and report; the exit status says whether every mutant was killed."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    printer = Printer(args.quiet)
    try:
        check_catalogue(ROOT, CATALOGUE)
    except StaleCatalogue as exc:
        print(f"stale catalogue: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for m in CATALOGUE:
            note = "  [equivalent]" if m.equivalent else ""
            print(f"{m.id:<34} {m.file:<14} {m.rule}{note}")
        print(f"{len(CATALOGUE)} mutants, {sum(1 for m in CATALOGUE if m.equivalent)} argued equivalent")
        return 0

    chosen: list[Mutant] = list(CATALOGUE)
    if args.only:
        by_id = {m.id: m for m in CATALOGUE}
        unknown = [i for i in args.only if i not in by_id]
        if unknown:
            print(f"no such mutant: {', '.join(unknown)} (see --list)", file=sys.stderr)
            return 2
        chosen = [by_id[i] for i in args.only]
    elif args.sample:
        day = args.day if args.day is not None else dt.date.today().toordinal()
        chosen = rotation(CATALOGUE, args.sample, day)
        printer.say(f"sample of {len(chosen)} for day {day}: {' '.join(m.id for m in chosen)}")

    if not os.environ.get("LISTENER_TEST_DSN"):
        printer.say("LISTENER_TEST_DSN is not set: every pytest run starts its own server, which is slow")
    skipped = [m for m in chosen if m.equivalent and not args.run_equivalent]
    to_run = [m for m in chosen if m not in skipped]
    started = time.monotonic()
    with workspaces(min(args.jobs, max(len(to_run), 1))) as copies:
        try:
            for ws in copies:
                # The copy is what the tests must load, and the catalogue must still match it.
                ws.assert_loads_own_sql()
                check_catalogue(ws.root, to_run)
        except (WrongSqlDir, StaleCatalogue) as exc:
            print(f"cannot start: {exc}", file=sys.stderr)
            return 2
        printer.say(
            f"{len(to_run)} mutant(s) on {len(copies)} copy(ies) of {ROOT}; SQL loaded from each copy"
        )
        outcomes, broken_without = run_all(to_run, copies, printer)
    for m in skipped:
        printer.say(Outcome(m, "EQUIVALENT").line(), always=True)

    elapsed = time.monotonic() - started
    counts: dict[str, int] = {}
    for o in outcomes.values():
        if o.mutant.equivalent and o.status == "SURVIVED":
            o.status = "EQUIVALENT"  # run on request, and it survived as argued
        elif o.mutant.equivalent and o.status == "KILLED":
            o.status = "ERROR"
            o.detail = f"argued equivalent, yet killed by {o.killer.nodeid if o.killer else '?'}: revise the argument"
            printer.say(o.line(), always=True)
        counts[o.status] = counts.get(o.status, 0) + 1
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    printer.say(
        f"{len(outcomes)} run ({summary}), {len(skipped)} argued equivalent and not run; {elapsed:.0f}s wall,"
        f" {sum(o.seconds for o in outcomes.values()):.0f}s in mutants",
        always=True,
    )
    if broken_without:
        printer.say("failing without any mutant: " + " ".join(sorted(broken_without)), always=True)
    if any(o.status not in ("KILLED", "EQUIVALENT") for o in outcomes.values()):
        return 1
    return 3 if broken_without else 0


if __name__ == "__main__":
    sys.exit(main())
