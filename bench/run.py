"""The performance benchmark: the listener against the inline baseline, the ceiling and the peers.

    python -m bench.run [--dsn D] [--json PATH] [--quick] [--batch-size N] [--plot PATH] [--only STEP ...]

Without --dsn it starts the embedded PostgreSQL. Every measurement runs on a fresh database
cloned from a migrated template, and every figure that matters is a ratio of two rates
measured in this one run. fsync and synchronous_commit are left at the server's settings.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from psycopg.conninfo import conninfo_to_dict
from rich.console import Console
from rich.table import Table

from bench import apps, browser, guard, measurements, writer
from bench.workload import Server
from listener.core.db import connect
from listener.settings import Settings

# (key, target, "min" when the figure must be at least the target, "max" when at most).
# A figure measured in rounds is their median, with "<key>_spread" (lowest, highest) beside it.
TARGETS: list[tuple[str, float, str]] = [
    ("throughput_vs_inline", 3.0, "min"),
    ("vs_batched_sql", 0.6, "min"),
    ("vs_pgmq_consumer", 10.0, "min"),
    ("vs_pgqueuer", 4.0, "min"),
    ("bulk_overhead_100k", 2.0, "max"),
    ("bulk_linearity", 1.2, "max"),
    ("writer_wal_vs_floor", 1.15, "max"),
    ("writer_wal_vs_floor_absorbing", 1.15, "max"),
    ("writer_us_vs_v020", 1.0, "max"),
    ("browser_tps_ratio_no_wakeup", 0.8, "min"),
    ("browser_vs_legacy", 1.0, "min"),
    ("browser_quiet_vs_v020", 1.0, "min"),
    ("browser_guard_cost_pct", 10.0, "max"),
    # The trigger generated from the coaching app's mapping, no slower than 0.3.0's.
    ("generated_us_vs_v030", 1.0, "max"),
    ("generated_browser_vs_v030", 1.0, "min"),
    ("generated_bulk_vs_v030", 1.0, "max"),
    ("drain_vs_listener", 0.8, "min"),
    ("lag_p50_ms", 15.0, "max"),
    ("lag_p99_ms", 100.0, "max"),
    ("idle_wake_p50_ms", 10.0, "max"),
    ("drain_last_vs_first", 0.8, "min"),
    ("rss_mb_max", 150.0, "max"),
    ("rss_growth", 1.1, "max"),
]

console = Console(stderr=True)


@contextlib.contextmanager
def admin_server(dsn: str | None) -> Iterator[str]:
    """The given admin DSN, or the embedded PostgreSQL started for the run and stopped after it."""
    if dsn:
        yield dsn
        return
    from listener.devtools.embedded import embedded_server

    with embedded_server() as server:
        yield server.dsn()


def _server_facts(dsn: str) -> dict[str, Any]:
    with connect(dsn, purpose="bench") as conn:
        row = conn.execute(
            """SELECT version() AS version, current_setting('server_version') AS server_version,
                      current_setting('fsync') AS fsync,
                      current_setting('synchronous_commit') AS synchronous_commit,
                      current_setting('shared_buffers') AS shared_buffers,
                      current_setting('max_wal_size') AS max_wal_size,
                      current_setting('autovacuum') AS autovacuum,
                      current_setting('jit') AS jit,
                      current_setting('jit_above_cost') AS jit_above_cost,
                      pg_jit_available() AS jit_available"""
        ).fetchone()
    return dict(row or {})


def _machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _step(name: str, fn: Callable[[], dict[str, Any]], out: dict[str, Any]) -> None:
    console.log(f"[bold]{name}[/bold] ...")
    started = time.monotonic()
    result = fn()
    out.update(result)
    console.log(f"{name} done in {time.monotonic() - started:.1f}s")


@dataclass(frozen=True)
class Context:
    """What every measurement step is given."""

    server: Server
    sizes: measurements.Sizes
    work: Path
    logs: Path
    batch_size: int | None


# Each step: its --only name, what the log calls it, and the measurement.
STEPS: list[tuple[str, str, Callable[[Context], dict[str, Any]]]] = [
    (
        "listener",
        "listener: 1, 2, 4 processes",
        lambda c: measurements.horizontal(c.server, c.sizes, c.logs, c.batch_size),
    ),
    (
        "inline",
        "inline pgbench",
        lambda c: _prefixed("inline", measurements.inline(c.server, c.sizes.backlog, c.work)),
    ),
    (
        "batched_sql",
        "bare batched SQL loop",
        lambda c: _prefixed("batched_sql", measurements.peer_queue(c.server, c.sizes.backlog, "batched")),
    ),
    (
        "pgmq_consumer",
        "pgmq client consumer x2",
        lambda c: _prefixed(
            "pgmq_consumer", measurements.peer_queue(c.server, c.sizes.backlog, "pgmq", processes=2)
        ),
    ),
    (
        "pgqueuer",
        "PgQueuer",
        lambda c: _prefixed("pgqueuer", measurements.peer_pgqueuer(c.server, c.sizes.backlog)),
    ),
    (
        "bulk",
        "bulk writer",
        lambda c: (
            _prefixed(
                "bulk_large", measurements.bulk(c.server, c.sizes.bulk_large, c.sizes.bulk_repeats_large)
            )
            | _prefixed(
                "bulk_small", measurements.bulk(c.server, c.sizes.bulk_small, c.sizes.bulk_repeats_small)
            )
        ),
    ),
    ("writer", "writer: per-completion counters and µs", lambda c: writer.writer(c.server, c.sizes)),
    ("browser", "browser writer", lambda c: browser.browser(c.server, c.sizes, c.work, c.logs)),
    (
        "generated",
        "generated trigger beside 0.3.0's, and on the example apps",
        lambda c: apps.generated(c.server, c.sizes, c.work),
    ),
    (
        "drain",
        "in-database drain vs one listener",
        lambda c: measurements.drain_pair(c.server, c.sizes, c.logs, c.batch_size),
    ),
    (
        "guard_bulk",
        "guard: bulk as owner and service_role",
        lambda c: guard.bulk_roles(c.server, c.sizes.bulk_large),
    ),
    ("guard_untrusted", "guard: untrusted writer", lambda c: guard.untrusted(c.server, c.sizes, c.work)),
    ("latency", "latency", lambda c: measurements.latency(c.server, c.sizes, c.logs)),
    ("scale", "scale", lambda c: measurements.scale(c.server, c.sizes, c.logs, c.batch_size)),
    (
        "sweep",
        "batch-size sweep",
        lambda c: {"rate_by_batch_size": measurements.batch_sweep(c.server, c.sizes, c.logs)},
    ),
]
STEP_NAMES = [name for name, _, _ in STEPS]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run every measurement (or those --only names) and return the figures."""
    started = time.monotonic()
    sizes = measurements.QUICK if args.quick else measurements.FULL
    work = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    logs = work / "logs"
    logs.mkdir()
    bs = args.batch_size
    only = set(args.only or STEP_NAMES)
    if not sizes.sweep_batch_sizes or args.no_sweep:
        only.discard("sweep")
    res: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "steps": [name for name in STEP_NAMES if name in only],
        "machine": _machine(),
        "listener_batch_size": bs or Settings().batch_size,
        "sizes": {k: v for k, v in vars(sizes).items()},
    }
    with admin_server(args.dsn) as admin:
        facts = _server_facts(admin)
        res["postgresql"] = facts["server_version"]
        res["postgresql_version"] = facts["version"]
        res["fsync"] = facts["fsync"]
        res["synchronous_commit"] = facts["synchronous_commit"]
        res["server_settings"] = facts
        res["backend"] = "dsn" if args.dsn else "embedded"
        # Session settings every connection of the run carries (e.g. "-c jit=off"); never a secret.
        res["dsn_options"] = str(conninfo_to_dict(args.dsn).get("options") or "") if args.dsn else ""
        server = Server(admin)
        server.setup_template()
        ctx = Context(server, sizes, work, logs, bs)
        try:
            for name, label, measure in STEPS:
                if name in only:
                    _step(label, functools.partial(measure, ctx), res)
        finally:
            server.drop_template()
    _derive(res)
    res["workdir"] = str(work)
    res["duration_s"] = round(time.monotonic() - started, 1)
    res["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return res


def _derive(res: dict[str, Any]) -> None:
    """The ratios across steps, for the steps that ran."""
    if "listener_rate" in res:
        listener = res["listener_rate"]
        for key, rate in (
            ("throughput_vs_inline", "inline_rate"),
            ("vs_batched_sql", "batched_sql_rate"),
            ("vs_pgmq_consumer", "pgmq_consumer_rate"),
            ("vs_pgqueuer", "pgqueuer_rate"),
        ):
            if rate in res:
                res[key] = listener / res[rate]
    if "bulk_large_ratio" in res:
        res["bulk_overhead_100k"] = res["bulk_large_ratio"]
        res["bulk_overhead_10k"] = res["bulk_small_ratio"]
        res["bulk_linearity"] = res["bulk_large_ratio"] / res["bulk_small_ratio"]
    if "scale_rates" in res:
        rates = res["scale_rates"]
        res["scale_never_slower"] = all(rates[k] >= rates["1"] for k in ("2", "4"))


def _prefixed(prefix: str, result: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{k}": v for k, v in result.items()}


def _verdict(value: float, target: float, kind: str) -> bool:
    return not math.isnan(value) and (value >= target if kind == "min" else value <= target)


def render(res: dict[str, Any]) -> None:
    """Print the figures, their targets and whether each is met."""
    table = Table(title=f"session-ledger listener benchmark, {res['date']} ({res['mode']})")
    table.add_column("figure")
    table.add_column("measured", justify="right")
    table.add_column("target", justify="right")
    table.add_column("met")
    # A run of some steps only (--only) has only their figures.
    for key, target, kind in TARGETS:
        if key not in res:
            continue
        value = float(res[key])
        ok = _verdict(value, target, kind)
        table.add_row(
            key,
            f"{value:.3g}{spread_text(res, key)}",
            f"{'≥' if kind == 'min' else '≤'} {target:g}",
            "yes" if ok else "NO",
        )
    if "scale_rates" in res:
        rates = res["scale_rates"]
        table.add_row(
            "scale_rates (1/2/4 procs)",
            " / ".join(f"{rates[k]:.0f}" for k in ("1", "2", "4")),
            "2,4 ≥ 1; once",
            "yes" if res["scale_never_slower"] and res["scale_exactly_once"] else "NO",
        )
    out = Console()
    out.print(table)
    if "writer_counters" in res:
        out.print(writer_table(res))
    if "generated_counters" in res:
        out.print(writer_table(res, "generated", "the generated trigger beside 0.3.0's, per completion"))
        out.print(generated_table(res))
    rates_table = Table(title="rates (events/s) and writer figures")
    rates_table.add_column("what")
    rates_table.add_column("value", justify="right")
    for label, key in [
        ("listener, 1 process", "listener_rate"),
        ("inline pgbench, 4 clients", "inline_rate"),
        ("bare batched SQL loop", "batched_sql_rate"),
        ("pgmq client consumer, 2 processes", "pgmq_consumer_rate"),
        ("PgQueuer, asyncpg", "pgqueuer_rate"),
        ("bulk 100k: s with trigger", "bulk_large_seconds_on"),
        ("bulk 100k: s without", "bulk_large_seconds_off"),
        ("bulk 10k ratio", "bulk_small_ratio"),
        ("bulk 100k ratio, per-row rules inlinable (lever)", "bulk_large_ratio_inlined_rules"),
        ("browser TPS without trigger", "browser_tps_off"),
        ("browser TPS, trigger + guard, no NOTIFY", "browser_tps_quiet"),
        ("browser TPS, as above with echo records off", "browser_tps_no_echo"),
        ("browser TPS, 0.2.0's trigger", "browser_tps_v020"),
        ("echo records' share of browser TPS (%)", "browser_echo_cost_pct"),
        ("browser TPS, trigger without guard", "browser_tps_no_guard"),
        ("browser TPS, NOTIFY in every commit", "browser_tps_on"),
        ("  ratio to bare (reported, worst case)", "browser_tps_ratio"),
        ("browser TPS, NOTIFY once in flight (lever)", "browser_tps_on_notify_once_in_flight"),
        ("browser TPS, live listener", "browser_tps_live_listener"),
        ("browser TPS, today's app (UPDATE + use_session)", "browser_tps_legacy"),
        ("guard share of browser TPS (%)", "browser_guard_cost_pct"),
        ("in-database drain rate", "drain_rate"),
        ("listener rate beside it", "drain_listener_rate"),
        ("bulk as service_role ÷ as owner", "guard_bulk_service_role_vs_owner"),
        ("guard share of the bulk UPDATE, trusted (%)", "guard_bulk_trusted_pct"),
        ("guard share of one untrusted UPDATE (%)", "guard_untrusted_pct"),
        ("  µs per untrusted UPDATE", "guard_untrusted_us_per_statement"),
        ("scale drain rate", "scale_rate"),
    ]:
        if key in res:
            rates_table.add_row(label, f"{float(res[key]):.4g}")
    out.print(rates_table)
    out.print(
        f"PostgreSQL {res['postgresql']}, fsync={res['fsync']}, synchronous_commit={res['synchronous_commit']}, "
        f"{res['machine']['cpus']} CPUs ({res['machine']['cpu_model']})"
    )


def spread_text(res: dict[str, Any], key: str) -> str:
    """The text " (lowest..highest)" of a figure measured in rounds, else an empty string."""
    spread = res.get(f"{key}_spread")
    if not spread:
        return ""
    return f" ({spread[0]:.3g}..{spread[1]:.3g})"


# The writer's counters, per completion: (label, counter, format).
WRITER_ROWS: list[tuple[str, str, str]] = [
    ("WAL bytes, without full-page images", "wal_bytes", ".0f"),
    ("full-page images' bytes (after a checkpoint)", "wal_fpi_bytes", ".0f"),
    ("commits (WAL flushes)", "commits", ".0f"),
    ("WAL records", "wal_records", ".2f"),
    ("pages changed (WAL block refs)", "pages_changed", ".2f"),
    ("buffers hit", "buffers_hit", ".1f"),
    ("rows inserted", "rows_inserted", ".2f"),
    ("function calls", "function_calls", ".1f"),
]


def writer_cells(res: dict[str, Any], prefix: str = "writer") -> list[tuple[str, list[str]]]:
    """The writer's (or another step's, by prefix) counters and µs, one row per figure, one cell per arm."""
    counters = res[f"{prefix}_counters"]
    arms = list(counters)
    rows: list[tuple[str, list[str]]] = []
    us = res[f"{prefix}_us"]
    spread = res[f"{prefix}_us_spread"]
    rows.append(
        (
            "µs per completion to its COMMIT, median (round medians' range)",
            [f"{us[a]:.0f} ({spread[a][0]:.0f}..{spread[a][1]:.0f})" for a in arms],
        )
    )
    if f"{prefix}_cpu_us" in res:
        cpu = res[f"{prefix}_cpu_us"]
        rows.append(("server CPU µs per completion, mean", [f"{cpu[a]:.0f}" for a in arms]))
    commit = res.get(f"{prefix}_commit_us")
    if commit:
        rows.append(("µs per COMMIT (the WAL flush), median", [f"{commit[a]:.0f}" for a in arms]))
    for label, counter, fmt in WRITER_ROWS:
        cells = []
        for arm in arms:
            value = counters[arm][counter]
            if isinstance(value, dict):
                value = sum(value.values())
            cells.append(format(value, fmt))
        rows.append((label, cells))
    return rows


def writer_table(
    res: dict[str, Any], prefix: str = "writer", title: str = "the writer, per completion (one client)"
) -> Table:
    """The writer's (or another step's, by prefix) per-completion counters by arm."""
    table = Table(title=title)
    table.add_column("figure")
    for arm in res[f"{prefix}_counters"]:
        table.add_column(arm, justify="right")
    for label, cells in writer_cells(res, prefix):
        table.add_row(label, *cells)
    return table


def generated_cells(res: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """The generated step's browser TPS and bulk seconds by arm, and each arm's ratios to 0.3.0's."""
    arms = list(res["generated_counters"])

    def runs(what: str, median: str, fmt: str) -> list[str]:
        cells = []
        for arm in arms:
            values = res[f"generated_{what}_runs"][arm]
            cells.append(f"{res[median][arm]:{fmt}} ({min(values):{fmt}}..{max(values):{fmt}})")
        return cells

    def ratios(what: str) -> list[str]:
        cells = []
        for arm in arms:
            key = f"generated_{what}_vs_v030" if arm == "coaching" else f"generated_{what}_{arm}_vs_v030"
            cells.append("1" if arm == "v030" else f"{res[key]:.3g}{spread_text(res, key)}")
        return cells

    return [
        (
            "browser TPS, 8 clients, median (lowest..highest round)",
            runs("browser", "generated_browser_tps", ".0f"),
        ),
        (
            "bulk UPDATE seconds, median (lowest..highest round)",
            runs("bulk", "generated_bulk_seconds", ".3f"),
        ),
        ("µs per completion ÷ 0.3.0's, median round (range)", ratios("us")),
        ("browser TPS ÷ 0.3.0's, median round (range)", ratios("browser")),
        ("bulk seconds ÷ 0.3.0's, median round (range)", ratios("bulk")),
    ]


def generated_table(res: dict[str, Any]) -> Table:
    """The generated step's TPS, bulk seconds and ratios by arm."""
    table = Table(
        title=f"the generated trigger: browser and bulk, {res['generated_bulk_size']} bookings per bulk"
    )
    table.add_column("figure")
    for arm in res["generated_counters"]:
        table.add_column(arm, justify="right")
    for label, cells in generated_cells(res):
        table.add_row(label, *cells)
    return table


def plot(res: dict[str, Any], lags: list[float], path: Path) -> None:
    """Commit-to-charge lag distribution and throughput by batch size, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = res.get("rate_by_batch_size") or {}
    fig, axes = plt.subplots(1, 2 if sweep else 1, figsize=(11 if sweep else 6, 4))
    ax = axes[0] if sweep else axes
    ax.hist(lags, bins=60, color="#4878d0")
    for q, style in (("lag_p50_ms", "-"), ("lag_p99_ms", "--")):
        ax.axvline(res[q], color="black", linestyle=style, label=f"{q[4:7]} {res[q]:.1f} ms")
    ax.set_xlabel("commit-to-charge lag (ms)")
    ax.set_ylabel("completions")
    ax.set_title(f"lag at {measurements.FULL.lag_rate} completions/s")
    ax.legend()
    if sweep:
        sizes = [int(k) for k in sweep]
        ax2 = axes[1]
        ax2.plot(sizes, list(sweep.values()), marker="o", label="listener")
        if "inline_rate" in res:
            ax2.axhline(res["inline_rate"], color="grey", linestyle="--", label="inline, 4 clients")
        if "batched_sql_rate" in res:
            ax2.axhline(res["batched_sql_rate"], color="green", linestyle=":", label="bare batched SQL")
        ax2.set_xscale("log")
        ax2.set_xlabel("batch size")
        ax2.set_ylabel("events/s")
        ax2.set_title("drain rate by batch size")
        ax2.legend()
    fig.suptitle(f"PostgreSQL {res['postgresql']}, {res['machine']['cpus']} cores, {res['date'][:10]}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the benchmark, print and save the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dsn", help="admin DSN of a server to create throwaway databases on (default: embedded)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs")
    parser.add_argument("--batch-size", type=int, help="the listener's --batch-size (default: its own)")
    parser.add_argument("--plot", type=Path, help="write a PNG of the lag distribution and the batch sweep")
    parser.add_argument("--no-sweep", action="store_true", help="skip the batch-size sweep")
    parser.add_argument(
        "--only",
        action="append",
        choices=STEP_NAMES,
        metavar="STEP",
        help=f"run only this step (repeatable): {', '.join(STEP_NAMES)}",
    )
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the listeners' logs and pgbench scripts"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    res = run(args)
    lags = res.pop("_lags", None)
    if lags is not None:
        res["lag_histogram_ms"] = _histogram(lags)
    render(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_finite(res), indent=2, default=str) + "\n")
    if args.plot:
        if lags is None:
            console.log("no plot: the latency step did not run")
        else:
            plot(res, lags, args.plot)
    if not args.keep_logs:
        shutil.rmtree(res["workdir"], ignore_errors=True)
    return 0


def _finite(value: Any) -> Any:
    """NaN (a figure too small to measure on --quick sizes) as JSON null, so strict parsers accept it."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _histogram(lags: list[float]) -> dict[str, int]:
    edges = [1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 100, 200, 500]
    counts = {f"<={e}": 0 for e in edges} | {">500": 0}
    for lag in lags:
        bucket = next((f"<={e}" for e in edges if lag <= e), ">500")
        counts[bucket] += 1
    return counts


if __name__ == "__main__":
    sys.exit(main())
