"""python -m faults: run the fault-injection scenarios, print a table of figures, write JSON.

Without --dsn the suite starts its own throwaway PostgreSQL cluster (initdb/pg_ctl)
and runs everything there. With --dsn (an admin DSN) every scenario except the
restarts runs on that server in databases it creates and drops; the restarts
always use the suite's own cluster, so no shared server is ever restarted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict
from rich.console import Console
from rich.table import Table

from faults import apps, scenarios
from faults.cluster import Cluster, own_cluster
from faults.harness import Result
from listener.core.db import connect
from listener.devtools.throwaway import create_database, drop_database
from listener.ops.migrate import migrate
from listener.testing import supabase
from listener.testing.supabase import SupabaseCluster

SCENARIOS = [
    "kills",
    "restarts",
    "terminate",
    "kill-mid-batch",
    "backlog",
    "no-notify",
    "races",
    "short-vt",
    "held-snapshot",
    "net-drop",
    "proxy-stall",
    "broken-ack-first",
    "broken-no-ledger",
    "gym",
    "marketplace",
]


class Target:
    """A server on which each scenario gets a fresh migrated database cloned from one template."""

    def __init__(self, admin_dsn: str, *, keep: bool = False) -> None:
        self.admin_dsn = admin_dsn
        self.keep = keep
        self._template: str | None = None
        self.made: list[str] = []

    def fresh(self) -> str:
        """A new database with the demo schema and the ledger migrated."""
        if self._template is None:
            dsn = create_database(self.admin_dsn, prefix="faults_tmpl")
            migrate(dsn, with_demo_schema=True)
            self._template = str(conninfo_to_dict(dsn)["dbname"])
            self.made.append(dsn)
        dsn = create_database(self.admin_dsn, prefix="faults", template=self._template)
        self.made.append(dsn)
        return dsn

    def fresh_gym(self) -> str:
        """A new database with the gym's schema and the ledger rendered from its mapping."""
        dsn = apps.install_gym(self.admin_dsn)
        self.made.append(dsn)
        return dsn

    def version(self) -> str:
        """The server's version."""
        with connect(self.admin_dsn, purpose="faults") as conn:
            row = conn.execute("SELECT current_setting('server_version') AS v").fetchone()
        return str(row["v"]) if row else "?"

    def cleanup(self) -> None:
        """Drop every database made here (the template last)."""
        if not self.keep:
            for dsn in reversed(self.made):
                drop_database(self.admin_dsn, dsn)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if v < 10 else f"{v:.1f}"
    return str(v)


def render(results: list[dict[str, Any]], console: Console) -> None:
    """The figures table, one row per scenario."""
    table = Table(title="session-ledger fault injection", show_lines=False)
    for col in (
        "scenario",
        "events",
        "lost",
        "double",
        "dup supp.",
        "dead-l.",
        "redeliv.",
        "lag p50/p99 s",
        "faults",
        "recovery p50/max s",
        "drain s",
        "result",
    ):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for r in results:
        f = r.get("figures", {})
        if r.get("error"):
            table.add_row(r["name"], *["-"] * 10, "[red]ERROR[/red]")
            continue
        if r["expect_checker_to_fail"]:
            verdict = "[green]caught[/green]" if r["passed"] else "[red]MISSED[/red]"
        else:
            verdict = "[green]pass[/green]" if r["passed"] else "[red]FAIL[/red]"
        table.add_row(
            r["name"],
            _fmt(f.get("events")),
            _fmt(f.get("lost")),
            _fmt(f.get("double_charged")),
            _fmt(f.get("duplicates_suppressed")),
            _fmt(f.get("dead_lettered")),
            _fmt(f.get("redelivered")),
            f"{_fmt(f.get('lag_p50_s'))}/{_fmt(f.get('lag_p99_s'))}",
            _fmt(f.get("faults")),
            f"{_fmt(f.get('recovery_p50_s'))}/{_fmt(f.get('recovery_max_s'))}",
            _fmt(f.get("drain_s")),
            verdict,
        )
    console.print(table)


_EXTRAS = (
    "kills_mid_batch",
    "restarts",
    "catch_up_p50_s",
    "catch_up_max_s",
    "backlog",
    "notifications_heard",
    "lock_holds",
    "dequeue_p99_ms_before",
    "dequeue_p99_ms_held",
    "queue_dead_tuples_max",
    "listener_idle_in_tx_max_s",
    "detect_s",
    "phases",
)


def render_extras(results: list[dict[str, Any]], console: Console) -> None:
    """Scenario-specific figures, and every failure, below the table."""
    for r in results:
        f = r.get("figures", {})
        bits = [f"{k}={json.dumps(f[k])}" for k in _EXTRAS if f.get(k) is not None]
        if bits:
            console.print(f"[bold]{r['name']}[/bold]: " + ", ".join(bits), highlight=False)
        for failure in r.get("failures", []):
            console.print(f"  [red]✗[/red] {failure}", highlight=False)
        if r.get("error"):
            console.print(f"  [red]error:[/red] {r['error']}", highlight=False)


@contextlib.contextmanager
def _maybe_supabase(needed: bool) -> Iterator[SupabaseCluster | None]:
    if not needed:
        yield None
        return
    with supabase.supabase_cluster() as cluster:
        yield cluster


@contextlib.contextmanager
def _maybe_cluster(needed: bool, bindir: Path | None) -> Iterator[Cluster | None]:
    if not needed:
        yield None
        return
    with own_cluster(bindir) as cluster:
        yield cluster


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios; exit 0 only when every one passed."""
    parser = argparse.ArgumentParser(prog="python -m faults", description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="admin DSN of a server to use (default: the suite's own cluster)")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every scenario")
    parser.add_argument("--json", type=Path, help="write the results here (default: WORKDIR/faults.json)")
    parser.add_argument(
        "--only", nargs="+", choices=SCENARIOS, metavar="NAME", help=f"run only these: {SCENARIOS}"
    )
    parser.add_argument("--workdir", type=Path, help="histories and listener logs (default: a new temp dir)")
    parser.add_argument("--pg-bindir", type=Path, help="initdb/pg_ctl for the suite's own cluster")
    parser.add_argument("--keep", action="store_true", help="keep the scenario databases")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    chosen = args.only or SCENARIOS
    if {"net-drop", "proxy-stall"} & set(chosen) and os.geteuid() != 0:
        parser.error("net-drop and proxy-stall need root (a network namespace); leave them out with --only")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="session-ledger-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out = args.json or workdir / "faults.json"
    console = Console(width=max(160, Console().width))
    console.print(f"workdir: {workdir}", highlight=False)
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    needs_cluster = args.dsn is None or "restarts" in chosen
    with (
        _maybe_cluster(needs_cluster, args.pg_bindir) as cluster,
        # The marketplace runs on Supabase's roles: a cluster shaped as Supabase sets one up.
        _maybe_supabase("marketplace" in chosen) as supabase_cluster,
    ):
        main_dsn = args.dsn or (cluster.dsn if cluster else "")
        target = Target(main_dsn, keep=args.keep)
        restart_target = Target(cluster.dsn, keep=args.keep) if cluster else None
        server = target.version()
        console.print(f"server: PostgreSQL {server}; restarts on the suite's own cluster", highlight=False)
        try:
            for name in chosen:
                console.print(f"[bold]▶ {name}[/bold]", highlight=False)
                runner = _runner(
                    name,
                    target=target,
                    restart_target=restart_target,
                    cluster=cluster,
                    supabase_cluster=supabase_cluster,
                    workdir=workdir,
                    quick=args.quick,
                )
                try:
                    results.append(runner().as_json())
                except Exception as exc:
                    results.append(
                        {
                            "name": name,
                            "error": f"{type(exc).__name__}: {exc}",
                            "passed": False,
                            "failures": [],
                        }
                    )
                    traceback.print_exc()
                r = results[-1]
                console.print(
                    f"  {'ok' if r['passed'] else 'FAILED'} in {r.get('seconds', 0)}s "
                    f"({r.get('figures', {}).get('events', '-')} events)",
                    highlight=False,
                )
        finally:
            target.cleanup()
            if restart_target is not None:
                restart_target.cleanup()
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "server": server,
        "restart_cluster": str(cluster.bindir) if cluster else None,
        "quick": args.quick,
        "seconds": round(time.monotonic() - started, 1),
        "results": results,
    }
    out.write_text(json.dumps(report, indent=2, default=str))
    render(results, console)
    render_extras(results, console)
    console.print(f"JSON: {out}  ({report['seconds']}s)", highlight=False)
    return 0 if all(r["passed"] for r in results) else 1


def _runner(
    name: str,
    *,
    target: Target,
    restart_target: Target | None,
    cluster: Cluster | None,
    workdir: Path,
    quick: bool,
    supabase_cluster: SupabaseCluster | None = None,
) -> Callable[[], Result]:
    """A thunk that runs one scenario on a fresh database."""
    if name == "restarts":
        assert restart_target is not None
        assert cluster is not None
        return lambda: scenarios.restarts(restart_target.fresh(), workdir, quick=quick, cluster=cluster)
    if name == "marketplace":
        assert supabase_cluster is not None
        return lambda: _marketplace(supabase_cluster, workdir, quick=quick, keep=target.keep)
    table: dict[str, Callable[[], Result]] = {
        "kills": lambda: scenarios.kills(target.fresh(), workdir, quick=quick),
        "terminate": lambda: scenarios.terminate_backends(target.fresh(), workdir, quick=quick),
        "kill-mid-batch": lambda: scenarios.kill_mid_batch(target.fresh(), workdir, quick=quick),
        "backlog": lambda: scenarios.backlog(target.fresh(), workdir, quick=quick),
        "no-notify": lambda: scenarios.no_notify(target.fresh(), workdir, quick=quick),
        "races": lambda: scenarios.races(target.fresh(), workdir, quick=quick),
        "short-vt": lambda: scenarios.short_vt(target.fresh(), workdir, quick=quick),
        "held-snapshot": lambda: scenarios.held_snapshot(target.fresh(), workdir, quick=quick),
        "net-drop": lambda: scenarios.net_drop(target.fresh(), workdir, quick=quick),
        "proxy-stall": lambda: scenarios.net_drop(target.fresh(), workdir, quick=quick, stall=True),
        "broken-ack-first": lambda: scenarios.kill_mid_batch(
            target.fresh(), workdir, quick=quick, broken="ack-first"
        ),
        "broken-no-ledger": lambda: scenarios.broken_no_ledger(target.fresh(), workdir, quick=quick),
        "gym": lambda: apps.gym(target.fresh_gym(), workdir, quick=quick),
    }
    return table[name]


def _marketplace(cluster: SupabaseCluster, workdir: Path, *, quick: bool, keep: bool) -> Result:
    """The marketplace scenario on a fresh app database of the Supabase-shaped cluster."""
    db = apps.install_marketplace(cluster)
    try:
        return apps.marketplace(db, workdir, quick=quick)
    finally:
        if not keep:
            supabase.drop_app_database(cluster, db.name)


if __name__ == "__main__":
    sys.exit(main())
