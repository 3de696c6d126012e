"""Everything the commands print: their reports as lines, tables or JSON, on stdout."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from listener.ops.uninstall import REVOKED_FROM

if TYPE_CHECKING:
    from listener.ops.audit import AuditReport, ChargeReport
    from listener.ops.cutover import CutoverReport
    from listener.ops.discard import DiscardReport
    from listener.ops.doctor import Report as DoctorReport
    from listener.ops.migrate import MigrateReport
    from listener.ops.prune import PruneReport
    from listener.ops.reconcile import ReconcileReport
    from listener.ops.replay import RedriveReport, ReplayReport
    from listener.ops.uninstall import UninstallReport

# The straddling bookings a cut-over names one by one; the rest are counted.
STRADDLING_SHOWN = 10


def render_error(line: str) -> None:
    """Print why a command failed, one line on stderr."""
    print(line, file=sys.stderr)


def render_json(report: object) -> None:
    """Print a report's JSON for scripts (`--json`)."""
    print(json.dumps(report, indent=2, default=str))


def counts_text(counts: Mapping[str, int], *, empty: str = "nothing to do") -> str:
    """Counts by name in one phrase, e.g. `paid: 3, released: 1`; `empty` when there are none."""
    return ", ".join(f"{k}: {v}" for k, v in counts.items()) or empty


def render_pack_changes(console: Console, rows: list[dict[str, Any]], title: str) -> None:
    """Print per-pack changes (as from PackChanges.as_json) as a table."""
    if not rows:
        console.print(f"{title}: no pack changed")
        return
    table = Table(title=title)
    for col in ("pack", "charged", "released", "net"):
        table.add_column(col, justify="left" if col == "pack" else "right")
    for r in rows:
        table.add_row(r["purchase_id"], str(r["charged"]), str(r["released"]), f"{r['net']:+d}")
    console.print(table)


def short(value: object) -> str:
    """An id shortened as git shortens hashes: its first 8 characters (`--json` keeps the whole)."""
    return str(value)[:8]


def cause_text(cause: dict[str, Any] | None) -> str:
    """Who caused a change, in a few words: role, user and trace id, each shortened."""
    if not cause:
        return "unknown"
    parts = [str(cause.get("role") or "?")]
    if cause.get("uid"):
        parts.append(f"user {short(cause['uid'])}")
    if cause.get("trace"):
        parts.append(f"trace {str(cause['trace']).split('-')[1][:8]}")
    return " ".join(parts)


def render_audit(report: AuditReport, console: Console | None = None, *, wide: bool = False) -> None:
    """Print the packs that gave sessions away and those with manual deductions, side by side with the ledger.

    At 80 columns the table shows what to act on; `wide` adds the ledger's paid bookings by source.
    """
    console = console or Console()
    named = report.given_away + report.manual
    if named:
        table = Table(title="packs whose balance disagrees with their bookings", box=box.SIMPLE_HEAD)
        columns: tuple[str, ...] = ("pack", "kind", "used", "bookings", "given away", "manual", "to charge")
        if wide:
            columns += ("paid: adoption", "cut-over", "listener", "audit", "unfunded")
        for col in columns:
            table.add_column(col, justify="left" if col in ("pack", "kind") else "right")
        for p in named:
            values: list[object] = [p.consuming, p.given_away, p.manual, p.to_charge]
            if wide:
                values += [p.paid_adoption, p.paid_cutover, p.paid_listener, p.paid_audit, p.unfunded]
            table.add_row(
                str(p.purchase_id) if wide else short(p.purchase_id),
                p.kind.replace("-", " "),
                f"{p.sessions_used}/{'-' if p.sessions_total is None else p.sessions_total}",
                *(str(v) for v in values),
            )
        if wide:
            # Asked for width: never squeezed to the terminal, where it would show less than the
            # default view; lines longer than the terminal wrap instead.
            needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
            if needed > console.width:
                Console(
                    file=console.file,
                    width=needed,
                    force_terminal=console.is_terminal,
                    no_color=console.no_color,
                ).print(table)
            else:
                console.print(table)
        else:
            console.print(table)
    summary = report.as_json()
    console.print(
        f"{summary['packs_checked']} pack(s) checked: {summary['given_away_packs']} gave away "
        f"{summary['sessions_given_away']} session(s), {summary['sessions_to_charge']} of them still to charge; "
        f"{summary['manual_deduction_packs']} with manual deductions"
    )
    if report.calls:
        absorbed = sum(c["absorbed"] for c in report.calls)
        legacy = sum(c["legacy_moved"] for c in report.calls)
        manual = sum(c["manual_moved"] for c in report.calls)
        console.print(
            f"direct calls on {len(report.calls)} pack(s): {absorbed} of the app's old calls absorbed as echoes "
            f"of booking writes, {legacy} moved a balance, {manual} manual adjustment(s) with a reason"
        )
    if summary["sessions_to_charge"]:
        console.print("next: `listener audit --charge-all` shows what charging would do; add --yes to do it")
    if named and not wide:
        console.print(
            "ids are shortened; `--wide` shows them whole with the ledger's paid bookings by source"
        )


def render_replay_examples(examples: list[dict[str, Any]], console: Console) -> None:
    """The first bookings a replay moves: what it does to each, and who caused its archived event."""
    if not examples:
        return
    table = Table(title="bookings it moves (first few)")
    for col in ("booking", "action", "pack", "from pack", "caused by"):
        table.add_column(col)
    for e in examples:
        table.add_row(
            short(e["booking_id"]),
            e["action"],
            short(e["purchase_id"]) if e["purchase_id"] else "-",
            short(e["previous_purchase_id"]) if e["previous_purchase_id"] else "-",
            cause_text(e["caused_by"]),
        )
    console.print(table)


def render_charge(report: ChargeReport, console: Console | None = None) -> None:
    """Print each booking a charge run judged, then the totals per pack."""
    console = console or Console()
    if report.outcomes:
        table = Table(title="given-away sessions" + (" (dry run)" if report.dry_run else ""))
        for col in ("pack", "booking", "session at", "outcome"):
            table.add_column(col)
        for o in report.outcomes:
            outcome = "charged" if o.charged else f"unfunded: {o.reason}"
            table.add_row(short(o.purchase_id), short(o.booking_id), o.start_time.isoformat()[:16], outcome)
        console.print(table)
    verb = "would charge" if report.dry_run else "charged"
    console.print(
        f"{verb} {report.charged} session(s) on {report.packs_charged} pack(s); "
        f"{report.unfunded} session(s) on {report.packs_unfunded} pack(s) could not be paid",
        soft_wrap=True,
    )
    if report.unfunded:
        console.print("(recorded as unfunded: the listener judges them again when their pack can pay)")
    if report.skipped:
        console.print(
            f"left {len(report.skipped)} pack(s) for a later run: a booking's event is still in flight "
            "(run the listener, or `listener reconcile`, then audit again)"
        )
    if report.dry_run and report.outcomes:
        console.print("dry run: nothing changed; add --yes to charge")


def render_dead_letters(report: RedriveReport, console: Console | None = None) -> None:
    """Print each dead letter with its reason, then what was done."""
    console = console or Console()
    table = Table(title="dead letters")
    for col in ("id", "dead-lettered at", "reason", "payload"):
        table.add_column(col)
    for d in report.letters:
        table.add_row(str(d["id"]), d["dead_lettered_at"][:19], str(d["reason"]), str(d["preview"]))
    console.print(table)
    verb = "would move" if report.dry_run else "moved"
    count = len(report.letters) if report.dry_run else report.moved
    console.print(f"{verb} {count} dead letter(s) back to the queue")


def render_discarded(report: DiscardReport, console: Console | None = None) -> None:
    """Print each dead letter with its reason, then how many were discarded and why."""
    console = console or Console()
    table = Table(title="dead letters")
    for col in ("id", "dead-lettered at", "reason", "payload"):
        table.add_column(col)
    for d in report.letters:
        table.add_row(str(d["id"]), d["dead_lettered_at"][:19], str(d["reason"]), str(d["preview"]))
    console.print(table)
    verb = "would discard" if report.dry_run else "discarded"
    count = len(report.letters) if report.dry_run else report.discarded
    console.print(f"{verb} {count} dead letter(s), archived with the reason: {report.reason}", markup=False)


def render_status(report: dict[str, Any], console: Console | None = None) -> None:
    """Print the status as readable tables."""
    console = console or Console()
    versions = report.get("versions") or {}
    if versions:
        console.print(
            f"session-ledger-listener {versions['package']}, schema version {versions['schema']}"
            + (f" (migrated by {versions['migrated_by']})" if versions.get("migrated_by") else ""),
            markup=False,
        )
    summary = Table(title="session ledger", show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    age = report.get("oldest_event_age_s")
    for label, value in (
        ("queue depth", report["queue_depth"]),
        ("  visible", report["queue_visible"]),
        ("  in flight", report["queue_in_flight"]),
        ("  redelivered", report["queue_redelivered"]),
        ("oldest event age", "-" if age is None else f"{float(age):.1f}s"),
        ("dead letters", report["dead_letter_depth"]),
        ("paid bookings", report["paid_bookings"]),
        ("unfunded bookings", report["unfunded_bookings"]),
        ("bookings out of sync", report["bookings_out_of_sync"]),
        ("consuming statuses", ", ".join(report["consuming_statuses"])),
    ):
        summary.add_row(label, str(value))
    console.print(summary)
    _render_dead_letter_ids(report, console)

    outcomes = Table(title="outcomes (all listeners)")
    for name in report["outcomes"]:
        outcomes.add_column(name, justify="right")
    outcomes.add_row(*(str(v) for v in report["outcomes"].values()))
    console.print(outcomes)

    for title, key in (
        ("dead-letter reasons", "dead_letter_reasons"),
        ("unfunded reasons", "unfunded_reasons"),
    ):
        if report[key]:
            reasons = Table(title=title)
            reasons.add_column("reason")
            reasons.add_column("count", justify="right")
            for item in report[key]:
                reasons.add_row(str(item["reason"]), str(item["count"]))
            console.print(reasons)

    listeners = Table(title="live listeners")
    for col in ("host", "pid", "started", "heartbeat age", "events", "idle"):
        listeners.add_column(col)
    for x in report["listeners"]:
        listeners.add_row(
            x["host"],
            str(x["pid"]),
            str(x["started_at"])[:19],
            f"{x['heartbeat_age_s']}s",
            str(x["events_handled"]),
            "yes" if x["waiting"] else "no",
        )
    console.print(listeners)
    console.print("migrations: " + ", ".join(f"{m['version']:04d}_{m['name']}" for m in report["migrations"]))
    if (report.get("drain") or {}).get("last_at"):
        d = report["drain"]
        console.print(
            f"drain(): last run {d['last_age_s']}s ago handled {d['last_handled']}; "
            f"{d['runs_last_hour']} run(s) handled {d['handled_last_hour']} event(s) in the last hour"
        )
    legacy = report.get("legacy_calls") or {}
    if legacy:
        console.print(
            f"the app's old calls: {legacy['legacy_calls']} in all, {legacy['absorbed']} absorbed as echoes "
            f"({_by_kind(legacy.get('absorbed_by_kind'))}; {legacy['absorbed_last_hour']} in the last hour), "
            f"last absorbed {legacy['last_absorbed_at'] or 'never'}; "
            + ("absorbing" if legacy["absorbing"] else "not absorbing")
            + f" within {legacy['window_s']}s; {legacy['manual_calls']} manual adjustment(s)"
        )
        if legacy.get("app_deployed_at"):
            console.print(
                f"new app deployed at {legacy['app_deployed_at']}: "
                f"{legacy.get('absorbed_since_app_deployed', 0)} old call(s) absorbed since"
            )
    if report.get("paused"):
        p = report["paused"]
        why = f": {p['reason']}" if p.get("reason") else ""
        console.print(f"[bold red]charging paused[/] since {p['paused_at']} by {p['paused_by']}{why}")
    for warning in report.get("warnings") or []:
        console.print(f"[bold yellow]warning:[/] {warning}")
    problems = report.get("problems") or []
    if problems:
        console.print("[bold red]unhealthy:[/] " + "; ".join(problems))
    else:
        console.print("[bold green]healthy[/]")


def _render_dead_letter_ids(report: dict[str, Any], console: Console) -> None:
    """The oldest dead letters, by the id `replay --dead-letter` and `discard --dead-letter` take."""
    letters = report.get("dead_letters") or []
    if not letters:
        return
    table = Table(title="dead letters (ids for replay and discard)")
    for col in ("id", "dead-lettered at", "booking", "reason"):
        table.add_column(col)
    for d in letters:
        table.add_row(
            str(d["id"]), str(d["dead_lettered_at"])[:19], str(d.get("booking_id") or "-"), str(d["reason"])
        )
    console.print(table)
    more = int(report.get("dead_letter_depth") or 0) - len(letters)
    if more > 0:
        console.print(
            f"and {more} more: `listener replay --dead-letter --all --dry-run` lists them all", markup=False
        )
    console.print(
        f"after a fix: `listener replay --dead-letter --id {letters[0]['id']}`; never chargeable: "
        f"`listener discard --dead-letter --id {letters[0]['id']} --reason TEXT`",
        markup=False,
    )


def render_migrate(report: MigrateReport) -> None:
    """Print what a migrate run changed, a line a kind, or that nothing needed to."""
    if report.demo_schema:
        print("created the demo app schema")
    if report.pgmq != "present":
        print(f"installed PGMQ ({report.pgmq})")
    if report.recovered:
        print(
            f"removed an install an earlier run left half-done ({report.recovered}) and installed again; "
            "completed bookings were adopted afresh"
        )
    if report.applied:
        print("applied " + ", ".join(report.applied))
    if report.repeatables:
        print("re-applied functions, triggers and grants: " + ", ".join(report.repeatables))
    for revoked in report.revoked:
        print(f"revoked {revoked}: no app flow needs it, and it would let a caller go around the ledger")
    if not report.changed:
        print(f"already up to date (schema version {report.schema_version})")


def render_doctor(report: DoctorReport) -> None:
    """Print each finding with its fix, the checks skipped and why, the notes, and a count."""
    for finding in report.findings:
        print(f"{finding.severity.upper():<6} {finding.check}  {finding.object}")
        print(f"       {finding.message}")
        print(f"       fix: {finding.fix}")
    skipped: dict[str, list[str]] = {}
    for item in report.not_checked:
        skipped.setdefault(item.reason, []).append(item.check)
    for reason, checks in skipped.items():
        print(f"not checked: {', '.join(checks)}: {reason}")
    for note in report.notes:
        print(f"note: {note}")
    high = sum(f.severity == "high" for f in report.findings)
    print(f"{len(report.findings)} finding(s), {high} high" if report.findings else "no findings")


def render_completed(count: int) -> None:
    """Print how many past bookings the cron path completed."""
    print(f"completed {count} past booking{'s' if count != 1 else ''}")


def render_replay(report: ReplayReport, console: Console | None = None) -> None:
    """Print what replaying the archive matched, what converging does now, the first bookings and the packs."""
    console = console or Console()
    verb = "would enqueue" if report.dry_run else "enqueued"
    count = report.bookings if report.dry_run else report.enqueued
    console.print(f"{report.bookings} booking(s) in the archive match; {verb} {count} event(s)")
    console.print("what converging them does now: " + counts_text(report.actions))
    render_replay_examples(report.examples, console)
    render_pack_changes(console, report.packs, "expected pack changes")


def render_reconcile(report: ReconcileReport, console: Console | None = None) -> None:
    """Print how many bookings were out of sync, what converging them did, and the packs it moved."""
    console = console or Console()
    verb = "would change" if report.dry_run else "changed"
    console.print(f"{report.out_of_sync} booking(s) out of sync; " + counts_text(report.outcomes))
    if report.bookings:
        shown = len(report.bookings)
        which = f"the first {shown} of {report.out_of_sync}" if shown < report.out_of_sync else "each"
        table = Table(title=f"bookings out of sync ({which}): what reconcile {verb}", box=box.SIMPLE_HEAD)
        for col in ("booking", "action", "pack", "from pack"):
            table.add_column(col, no_wrap=col == "booking")
        for b in report.bookings:
            table.add_row(
                b["booking_id"],
                b["action"] if b["action"] != "no-op" else f"no-op: {b['detail']}",
                short(b["purchase_id"]) if b["purchase_id"] else "-",
                short(b["previous_purchase_id"]) if b["previous_purchase_id"] else "-",
            )
        console.print(table)
    render_pack_changes(console, report.packs, f"packs {verb}")


def render_pruned(report: PruneReport) -> None:
    """Print what a prune removed, or would remove."""
    verb = "would remove" if report.dry_run else "removed"
    print(
        f"{verb} {report.archived_events} archived event(s), {report.archived_dead_letters} archived dead "
        f"letter(s), {report.pack_calls} old pack call(s), {report.booking_writes} expired booking write "
        f"echo(es) and {report.stopped_listeners} old listener heartbeat(s)"
    )


def render_paused(paused: dict[str, Any]) -> None:
    """Print since when, by whom and why charging is paused."""
    why = f": {paused['reason']}" if paused.get("reason") else ""
    print(f"charging paused since {paused['paused_at']} by {paused['paused_by']}{why}; events keep queuing")


def render_resumed(ended: dict[str, Any] | None) -> None:
    """Print the pause that resuming ended, or that there was none."""
    if ended is None:
        print("charging was not paused")
    else:
        print(f"charging resumed; it was paused since {ended['paused_at']} by {ended['paused_by']}")


def render_cutover(report: CutoverReport) -> None:
    """Print the cut-over time, what it settled, the bookings to check by hand, and what to do next."""
    print(
        f"cut-over at {report.adopt_until.isoformat()}: events enqueued before it record what the "
        "app's old code did, without charging or releasing again"
    )
    if report.archived_events:
        print(
            f"settled {report.settled_bookings} booking(s) from {report.archived_events} waiting event(s) "
            "as the old code left them (ledger source 'cut-over'; no balance changed)"
        )
    if report.straddling:
        shown = ", ".join(str(b) for b in report.straddling[:STRADDLING_SHOWN])
        rest = len(report.straddling) - STRADDLING_SHOWN
        more = f" and {rest} more" if rest > 0 else ""
        print(
            f"check by hand: {len(report.straddling)} booking(s) changed both before and after the "
            f"cut-over time, and the listener will record them without charging: {shown}{more}"
        )
    print("next: start the listener (`listener run`)")


def render_uninstall(report: UninstallReport) -> None:
    """Print what an uninstall removed, what it restored and who may call it now, and what it kept."""
    if not report.installed:
        print("nothing to uninstall: this database has no session ledger")
        return
    print(
        "removed the bookings triggers, the session_ledger schema and the queues booking_events, booking_events_dlq"
    )
    if report.restored:
        print("restored the app's own " + ", ".join(report.restored) + " with search_path pinned")
        callers = sorted({role for roles in report.executors.values() for role in roles})
        may = ", ".join(callers) if callers else "nobody but their owner"
        if report.kept_grants:
            print(
                f"kept their grants (--keep-grants): {may} may execute them; WARNING: their bodies check "
                "nobody: whoever may call them may move any pack's sessions"
            )
        else:
            print(
                f"revoked EXECUTE on them from {', '.join(REVOKED_FROM)}: their bodies check nobody; "
                f"may execute them now: {may}; --keep-grants keeps the grants"
            )
    if report.dead_letters:
        print(f"dropped {report.dead_letters} unresolved dead letter(s) with the dead-letter queue (--force)")
    print(
        "kept: the app's tables and every pack's balance; the pgmq schema (other queues may use it); "
        "the cluster-wide role session_ledger_listener (DROP ROLE it once no database uses it)"
    )


def render_exported(target: Path, written: list[Path]) -> None:
    """Print each migration file written, or that the directory already held them all."""
    for path in written:
        print(path)
    if not written:
        print(f"{target} already holds every session ledger migration")


def _by_kind(kinds: object) -> str:
    """Absorbed calls per kind, as status() counts them: 'use' echoes a completion, 'release' a cancel."""
    if not isinstance(kinds, dict):
        return "by kind: unknown"
    return f"{kinds.get('use', 0)} use_session, {kinds.get('release', 0)} release_session"
