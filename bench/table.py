"""A results JSON as the README's Markdown table: every target, then the reported figures.

A run of some steps only (`bench.run --only`) gives the rows of the figures it has.

python -m bench.table bench/results/latest.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.run import TARGETS, _verdict, generated_cells, spread_text, writer_cells

# Figures reported beside the targets, with what each is.
REPORTED: list[tuple[str, str]] = [
    ("browser_tps_ratio", "browser, NOTIFY in every commit ÷ bare UPDATE (worst case)"),
    ("browser_tps_ratio_live_listener", "browser, trigger + guard + live listener ÷ bare UPDATE"),
    ("browser_quiet_vs_legacy", "browser, trigger + guard, no NOTIFY ÷ today's app"),
    ("writer_wal_v020_vs_floor", "WAL per completion, 0.2.0's trigger ÷ the floor"),
    ("writer_cpu_vs_v020", "server CPU per completion, today's trigger ÷ 0.2.0's"),
    ("writer_us_no_echo_vs_v020", "µs per completion, echo records off ÷ 0.2.0's trigger"),
    ("writer_us_vs_floor", "µs per completion, today's trigger ÷ the floor"),
    ("writer_us_vs_legacy", "µs per completion, today's trigger ÷ today's app's two calls"),
    ("browser_echo_cost_pct", "echo records' share of browser TPS, % (trigger with ÷ without them)"),
    ("browser_no_echo_vs_v020", "browser, trigger with echo records off ÷ 0.2.0's trigger"),
    ("browser_tps_ratio_notify_once_in_flight", "lever: one NOTIFY in flight, forced-NOTIFY arm ÷ bare"),
    ("bulk_large_ratio_inlined_rules", "lever: bulk 100k with the per-row rules inlinable, ÷ no trigger"),
    ("guard_bulk_service_role_vs_owner", "bulk 100k as service_role ÷ as owner"),
    ("guard_bulk_trusted_pct", "guard's share of the trusted bulk UPDATE, %"),
    ("guard_untrusted_pct", "guard's share of one untrusted UPDATE (rolled back), %"),
    ("guard_untrusted_us_per_statement", "… µs of guard per untrusted UPDATE"),
    ("generated_cpu_vs_v030", "server CPU per completion, generated coaching trigger ÷ 0.3.0's"),
    ("generated_wal_bytes_vs_v030", "WAL bytes per completion, generated coaching trigger ÷ 0.3.0's"),
    ("generated_buffers_hit_vs_v030", "buffers hit per completion, generated coaching trigger ÷ 0.3.0's"),
]

_RATES: list[tuple[str, str]] = [
    ("browser_tps_off", "bare UPDATE"),
    ("browser_tps_no_guard", "trigger without guard"),
    ("browser_tps_quiet", "trigger + guard"),
    ("browser_tps_no_echo", "echo records off"),
    ("browser_tps_v020", "0.2.0's trigger"),
    ("browser_tps_live_listener", "+ live listener"),
    ("browser_tps_on", "NOTIFY every commit"),
    ("browser_tps_on_notify_once_in_flight", "NOTIFY once in flight"),
    ("browser_tps_legacy", "today's app"),
]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    v = float(value)
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def render(res: dict[str, Any]) -> str:
    """The Markdown table of one run."""
    lines = ["| figure | target | measured | met |", "|---|---|---|---|"]
    met = 0
    total = 0
    for key, target, kind in TARGETS:
        if key not in res:
            continue
        value = res[key]
        ok = value is not None and _verdict(float(value), target, kind)
        met += ok
        total += 1
        lines.append(
            f"| `{key}` | {'≥' if kind == 'min' else '≤'} {target:g} | {_fmt(value)}{spread_text(res, key)} "
            f"| {'yes' if ok else 'no'} |"
        )
    if "scale_rates" in res:
        rates = res["scale_rates"]
        scale_ok = bool(res["scale_never_slower"] and res["scale_exactly_once"])
        met += scale_ok
        total += 1
        lines.append(
            f"| `scale_rates` 1/2/4 processes (events/s) | never slower than 1 | "
            f"{' / '.join(f'{rates[k]:.0f}' for k in ('1', '2', '4'))} | {'yes' if scale_ok else 'no'} |"
        )
    for key, label in REPORTED:
        if key in res:
            lines.append(f"| {label} (`{key}`) | reported | {_fmt(res.get(key))}{spread_text(res, key)} | |")
    rates_present = [(key, label) for key, label in _RATES if key in res]
    if rates_present:
        lines.append(
            "| browser TPS: "
            + ", ".join(label for _, label in rates_present)
            + " | | "
            + " / ".join(_fmt(res.get(key)) for key, _ in rates_present)
            + " | |"
        )
    text = "\n".join(lines) + f"\n\n{met} of {total} targets met.\n"
    if "writer_counters" in res:
        arms = list(res["writer_counters"])
        text += "\n| per completion | " + " | ".join(arms) + " |\n|---|" + "---|" * len(arms) + "\n"
        for label, cells in writer_cells(res):
            text += f"| {label.strip()} | " + " | ".join(cells) + " |\n"
    if "generated_counters" in res:
        arms = list(res["generated_counters"])
        text += "\n| per completion | " + " | ".join(arms) + " |\n|---|" + "---|" * len(arms) + "\n"
        for label, cells in writer_cells(res, "generated") + generated_cells(res):
            text += f"| {label.strip()} | " + " | ".join(cells) + " |\n"
    return text


def main(argv: list[str]) -> int:
    """Print the table of the results file given."""
    for path in argv:
        print(render(json.loads(Path(path).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
