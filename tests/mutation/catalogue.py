"""The mutants: one broken rule each, in sql/functions, and the tests expected to notice.

A mutant replaces one snippet of one file, found there exactly once; the runner refuses
a catalogue whose snippet is gone or ambiguous. `hint` names the tests (node ids or
files) or `hint_k` a -k expression that should kill the mutant fast; the runner falls
back on the whole fast tier when they do not. A mutant that cannot change behaviour
carries `equivalent`, the argument why; the runner reports it and does not run it
(unless asked to, to check the argument).
"""

from __future__ import annotations

from dataclasses import dataclass

PINNED = "tests/db/test_rules_pinned.py"
PACKS = "tests/db/test_pack_changes.py"
TRANSITIONS = "tests/db/test_transitions.py"


@dataclass(frozen=True)
class Mutant:
    """One rule broken in one place."""

    id: str
    rule: str
    file: str
    original: str
    replacement: str
    hint: tuple[str, ...] = ()
    hint_k: str = ""
    equivalent: str = ""


def _pinned(*names: str) -> tuple[str, ...]:
    return tuple(f"{PINNED}::{name}" for name in names)


def _transitions(*names: str) -> tuple[str, ...]:
    return tuple(f"{TRANSITIONS}::{name}" for name in names)


# ---------------------------------------------------------------------------------------
# 10_rules.sql: what a booking consumes, what the ledger holds, what a pack may pay for,
# which messages are events, and who may move a session (the guard itself excepted, below)
# ---------------------------------------------------------------------------------------
RULES = (
    Mutant(
        id="consumed-any-status",
        rule="a booking consumes its pack only while its status is a consuming status",
        file="10_rules.sql",
        original="ANY (p_consuming) AND p_consumes THEN p_purchase_id END",
        replacement="ANY (p_consuming) OR true THEN p_purchase_id END",
        hint=_transitions("test_cancel_releases_and_recomplete_charges_again"),
    ),
    Mutant(
        id="consumed-ignores-config",
        rule="the consuming statuses are config.consuming_statuses, not a fixed list",
        file="10_rules.sql",
        original="ANY (p_consuming) AND p_consumes THEN p_purchase_id END",
        replacement="ANY ('{completed}'::text[]) AND p_consumes THEN p_purchase_id END",
        hint=_transitions("test_no_show_consumes_when_configured"),
    ),
    Mutant(
        id="held-counts-unfunded",
        rule="only a paid ledger row holds a session of its pack",
        file="10_rules.sql",
        original="SELECT CASE WHEN p_state OPERATOR(pg_catalog.=) 'paid' THEN p_purchase_id END",
        replacement="SELECT CASE WHEN p_state OPERATOR(pg_catalog.=) ANY ('{paid,unfunded}'::text[]) THEN p_purchase_id END",
        hint=_pinned("test_an_unfunded_booking_holds_no_session"),
    ),
    Mutant(
        id="judged-ignores-unfunded",
        rule="an unfunded ledger row is a judgement by its pack, as a paid one is",
        file="10_rules.sql",
        original="ANY ('{paid,unfunded}'::text[]) THEN p_purchase_id END",
        replacement="ANY ('{paid}'::text[]) THEN p_purchase_id END",
        hint=_transitions("test_exhausted_pack_records_unfunded_and_a_replay_changes_nothing"),
    ),
    Mutant(
        id="out-of-sync-counts-unfunded",
        rule="a booking the ledger judged unfunded is in sync (reconcile leaves it alone)",
        file="10_rules.sql",
        original="      IS DISTINCT FROM session_ledger.judged_pack(l.state, l.purchase_id);",
        replacement="      IS DISTINCT FROM session_ledger.held_pack(l.state, l.purchase_id);",
        hint=_pinned("test_the_ledger_is_out_of_sync_only_where_it_has_not_judged_a_booking_as_it_stands"),
    ),
    Mutant(
        id="non-pack-funds",
        rule="a purchase without sessions_total is not a session pack and pays for nothing",
        file="10_rules.sql",
        original="        WHEN p_sessions_total IS NULL THEN 'purchase is not a session pack'\n",
        replacement="",
        hint=_transitions("test_refunded_and_non_pack_purchases_are_unfunded"),
    ),
    # Which packs are unusable (refunded, failed) is the mapping's pack.unusable_when now;
    # the rule here is that an unusable pack pays for nothing.
    Mutant(
        id="refund-funds",
        rule="an unusable pack (the coaching app's: refunded or failed) pays for nothing",
        file="10_rules.sql",
        original="        WHEN p_unusable IS NOT NULL THEN p_unusable\n",
        replacement="",
        hint=_transitions("test_refunded_and_non_pack_purchases_are_unfunded"),
    ),
    Mutant(
        id="expiry-strict",
        rule="a pack has expired for a session that starts at its expiry instant",
        file="10_rules.sql",
        original="p_expires_at OPERATOR(pg_catalog.<=) p_at",
        replacement="p_expires_at OPERATOR(pg_catalog.<) p_at",
        hint=_pinned("test_a_pack_has_expired_for_a_session_starting_at_its_expiry"),
    ),
    Mutant(
        id="expiry-judged-now",
        rule="expiry is judged at the session's start, not when the event is processed",
        file="10_rules.sql",
        original="p_expires_at OPERATOR(pg_catalog.<=) p_at",
        replacement="p_expires_at OPERATOR(pg_catalog.<=) pg_catalog.now()",
        hint=_transitions("test_expiry_is_judged_at_the_sessions_start_not_at_processing"),
    ),
    Mutant(
        id="event-any-version",
        rule="the database handles only version 1 of the event",
        file="10_rules.sql",
        original="             AND p_message OPERATOR(pg_catalog.->>) 'v' OPERATOR(pg_catalog.=) '1'\n",
        replacement="",
        hint=_pinned("test_the_database_dead_letters_what_is_not_exactly_our_event"),
    ),
    Mutant(
        id="event-uuid-any-case",
        rule="an event names its booking by the canonical (lowercase) uuid only",
        file="10_rules.sql",
        original="coalesce(p_text OPERATOR(pg_catalog.~) '^[0-9a-f]",
        replacement="coalesce(p_text OPERATOR(pg_catalog.~*) '^[0-9a-f]",
        hint=_pinned("test_the_database_dead_letters_what_is_not_exactly_our_event"),
    ),
    Mutant(
        id="trusted-without-owner",
        rule="the ledger's owner and the roles that are members of it are trusted",
        file="10_rules.sql",
        original="RETURN coalesce(pg_catalog.pg_has_role(v_who, v_owner, 'MEMBER'), false)\n{%- for",
        replacement="RETURN false\n{%- for",
        hint=_pinned("test_the_ledgers_owner_and_its_members_are_trusted"),
    ),
    Mutant(
        id="trusted-without-service-role",
        rule="the mapping's trusted roles (service_role) and their members (the cron) are trusted",
        file="10_rules.sql",
        original="\n        OR coalesce(pg_catalog.pg_has_role(v_who, pg_catalog.to_regrole({{ app.lit(role) }}), 'MEMBER'), false)",
        replacement="",
        hint=_transitions("test_bulk_completion_enqueues_one_event_per_booking_and_charges_each"),
    ),
    Mutant(
        id="trusted-without-listener-role",
        rule="the listener's role is trusted",
        file="10_rules.sql",
        original="\n        OR coalesce(pg_catalog.pg_has_role(v_who, pg_catalog.to_regrole('session_ledger_listener'), 'MEMBER'), false);",
        replacement=";",
        hint=_pinned("test_the_listeners_role_is_trusted"),
    ),
    Mutant(
        id="may-move-without-authenticated",
        rule="only a signed-in user (a member of authenticated) may move the sessions of their organisation",
        file="10_rules.sql",
        original="\n                    AND pg_catalog.pg_has_role(session_ledger.caller(), pg_catalog.to_regrole('authenticated'), 'MEMBER')",
        replacement="",
        hint=_pinned("test_only_a_signed_in_member_of_the_packs_organisation_may_move_its_sessions"),
    ),
    Mutant(
        id="may-move-unknown-passes",
        rule="an unknown answer about a caller's membership is a refusal",
        file="10_rules.sql",
        original="AND {{ app.membership_function }}(p_org),\n                    false);",
        replacement="AND {{ app.membership_function }}(p_org),\n                    true);",
        hint=_pinned("test_an_unknown_membership_is_a_refusal"),
    ),
    Mutant(
        id="ghost-pack-open",
        rule="of a pack that does not exist, only a trusted caller hears so",
        file="10_rules.sql",
        original="        RETURN coalesce(p_trusted, session_ledger.caller_is_trusted());\n    END IF;\n    RETURN session_ledger.may_move_sessions(v_org, p_trusted);",
        replacement="        RETURN true;\n    END IF;\n    RETURN session_ledger.may_move_sessions(v_org, p_trusted);",
        hint=_pinned("test_only_a_trusted_caller_learns_that_a_pack_does_not_exist"),
    ),
    Mutant(
        id="assert-refuses-only-false",
        rule="assert_may_move_pack refuses whatever is not a yes",
        file="10_rules.sql",
        original="IF session_ledger.may_move_pack(p_purchase_id) IS NOT TRUE THEN",
        replacement="IF session_ledger.may_move_pack(p_purchase_id) IS FALSE THEN",
        equivalent=(
            "may_move_pack never returns NULL: for a missing pack it returns coalesce(p_trusted,"
            " caller_is_trusted()) with p_trusted NULL here, and caller_is_trusted() ORs three"
            " coalesce(..., false); otherwise may_move_sessions returns true or coalesce(..., false)."
            " IS NOT TRUE is the fail-closed spelling, kept for any future NULL."
        ),
    ),
)

# ---------------------------------------------------------------------------------------
# 20_charge.sql: settle_packs (the one balance change) and apply_bookings (what to ask of it)
# ---------------------------------------------------------------------------------------
CHARGE = (
    Mutant(
        id="release-at-zero",
        rule="a pack at zero has nothing to give back",
        file="20_charge.sql",
        original="p.id IS NOT NULL AND r.give_upto <= p.sessions_used AS ok",
        replacement="p.id IS NOT NULL AS ok",
        hint=_pinned("test_a_pack_gives_back_no_more_sessions_than_it_used"),
    ),
    Mutant(
        id="release-counts-one",
        rule="releases of one pack in one batch give back at most what it used, each counted",
        file="20_charge.sql",
        original="p.id IS NOT NULL AND r.give_upto <= p.sessions_used AS ok",
        replacement="p.id IS NOT NULL AND r.give <= p.sessions_used AS ok",
        hint=_pinned("test_a_pack_gives_back_no_more_sessions_than_it_used"),
    ),
    Mutant(
        id="other-org-charged",
        rule="a pack never pays for a booking of another organisation",
        file="20_charge.sql",
        original="                   WHEN r.org IS NOT NULL AND p.org_id IS DISTINCT FROM r.org THEN 'pack belongs to another organisation'\n",
        replacement="",
        hint=_pinned("test_a_pack_pays_only_for_its_own_client_unless_packs_are_shared"),
    ),
    Mutant(
        id="other-client-charged",
        rule="a pack pays only for its own client's bookings",
        file="20_charge.sql",
        original="                   WHEN r.client IS NOT NULL AND NOT v_shared AND p.client_id IS DISTINCT FROM r.client\n                       THEN 'pack belongs to another client'\n",
        replacement="",
        hint=_pinned("test_a_pack_pays_only_for_its_own_client_unless_packs_are_shared"),
    ),
    Mutant(
        id="shared-packs-ignored",
        rule="config.allow_shared_packs lets a pack pay for another client of its organisation",
        file="20_charge.sql",
        original="WHEN r.client IS NOT NULL AND NOT v_shared AND p.client_id",
        replacement="WHEN r.client IS NOT NULL AND p.client_id",
        hint=_pinned("test_a_pack_pays_only_for_its_own_client_unless_packs_are_shared"),
    ),
    Mutant(
        id="capacity-off-by-one",
        rule="a pack pays for as much as it has left (cost_upto <= total - used)",
        file="20_charge.sql",
        original="c.cost_upto <= p.sessions_total - p.used_after) AS ok",
        replacement="c.cost_upto < p.sessions_total - p.used_after) AS ok",
        hint=_transitions("test_exhausted_pack_records_unfunded_and_a_replay_changes_nothing"),
    ),
    Mutant(
        id="capacity-before-release",
        rule="a session released in the same batch is free to pay for another",
        file="20_charge.sql",
        original="c.cost_upto <= p.sessions_total - p.used_after) AS ok",
        replacement="c.cost_upto <= p.sessions_total - p.sessions_used) AS ok",
        hint=_transitions("test_released_session_pays_for_another_in_the_same_batch"),
    ),
    Mutant(
        id="refused-takes-a-place",
        rule="a session the pack refuses for another reason takes no place within what it has left",
        file="20_charge.sql",
        original="PARTITION BY c0.pack, c0.bad IS NULL ORDER BY",
        replacement="PARTITION BY c0.pack ORDER BY",
        hint=_pinned("test_a_refused_session_takes_no_place_in_the_pack"),
    ),
    Mutant(
        id="latest-sessions-first",
        rule="an exhausted pack pays for its earliest sessions",
        file="20_charge.sql",
        original="ORDER BY c0.at, c0.ord ROWS UNBOUNDED PRECEDING)\n                         AS cost_upto",
        replacement="ORDER BY c0.at DESC, c0.ord ROWS UNBOUNDED PRECEDING)\n                         AS cost_upto",
        hint=_transitions("test_exhausted_pack_records_unfunded_and_a_replay_changes_nothing"),
    ),
    Mutant(
        id="request-order-first",
        rule="an exhausted pack pays for its earliest sessions, whatever order they were asked in",
        file="20_charge.sql",
        original="ORDER BY c0.at, c0.ord ROWS UNBOUNDED PRECEDING)\n                         AS cost_upto",
        replacement="ORDER BY c0.ord ROWS UNBOUNDED PRECEDING)\n                         AS cost_upto",
        hint=_pinned("test_an_exhausted_pack_pays_for_the_earliest_sessions_whatever_the_order_asked"),
    ),
    Mutant(
        id="balance-write-unguarded",
        rule="a balance is written only over the balance it was decided on",
        file="20_charge.sql",
        original="         WHERE p.{{ app.pack_id }} = u.pack\n           AND {{ app.pack_field('p', 'sessions_used') }} = u.used\n           AND {{ app.pack_field('p', 'sessions_total') }} IS NOT DISTINCT FROM u.total;",
        replacement="         WHERE p.{{ app.pack_id }} = u.pack;",
        equivalent=(
            "settle_packs locks every pack it will write (FOR NO KEY UPDATE) in a statement before"
            " the one that reads the balances: under READ COMMITTED that read takes a new snapshot"
            " and sees every change committed before the lock was granted, and under REPEATABLE"
            " READ or SERIALIZABLE the lock itself fails with 40001 on a row changed since the"
            " snapshot. So the guard never finds a row whose balance differs; it is defence in depth."
        ),
    ),
    Mutant(
        id="adopt-boundary",
        rule="an event queued at the cut-over instant or later is charged (first_at < adopt_until adopts)",
        file="20_charge.sql",
        original="coalesce(i.first_at < v_cfg.adopt_until, false)",
        replacement="coalesce(i.first_at <= v_cfg.adopt_until, false)",
        hint=_pinned("test_an_event_queued_at_the_cut_over_instant_is_charged"),
    ),
    Mutant(
        id="adopt-never",
        rule="a booking whose first event came before the cut-over is recorded without touching a balance",
        file="20_charge.sql",
        original="coalesce(i.first_at < v_cfg.adopt_until, false)",
        replacement="false",
        hint=("tests/db/test_migrate.py::test_cut_over_records_old_code_charges_without_charging_again",),
    ),
    Mutant(
        id="adopt-latest-event",
        rule="the cut-over judges a booking by its first queued event, not its latest",
        file="20_charge.sql",
        original="min(u.at) AS first_at",
        replacement="max(u.at) AS first_at",
        hint=_pinned("test_the_cut_over_judges_a_booking_by_its_first_queued_event"),
    ),
    Mutant(
        id="adopted-release-moves-balance",
        rule="a release before the cut-over gives nothing back (the app's old code did not charge it)",
        file="20_charge.sql",
        original="WHERE d.rel AND NOT d.adopt",
        replacement="WHERE d.rel",
        hint=_pinned("test_a_release_before_the_cut_over_moves_no_balance"),
    ),
    Mutant(
        id="adopted-charge-moves-balance",
        rule="a charge before the cut-over takes nothing (the app's old code charged it)",
        file="20_charge.sql",
        original="WHERE d.chg AND NOT d.adopt",
        replacement="WHERE d.chg",
        hint=("tests/db/test_migrate.py::test_cut_over_records_old_code_charges_without_charging_again",),
    ),
    Mutant(
        id="cutover-records-unfunded",
        rule="a booking adopted at the cut-over is recorded as paid",
        file="20_charge.sql",
        original="CASE WHEN d.adopt OR d.charge_ok THEN 'paid'",
        replacement="CASE WHEN d.charge_ok THEN 'paid'",
        hint=("tests/db/test_migrate.py::test_cut_over_records_old_code_charges_without_charging_again",),
    ),
    Mutant(
        id="other-client-not-judged",
        rule="a paid booking given to another client is judged again (paid by P for another client: moved)",
        file="20_charge.sql",
        original="coalesce(l.client_id, b.client_id) AS l_client",
        replacement="b.client_id AS l_client",
        hint=_pinned("test_a_paid_booking_given_to_another_client_is_judged_again"),
    ),
    Mutant(
        id="other-org-not-judged",
        rule="a paid booking moved to another organisation is judged again (paid by P for another org: moved)",
        file="20_charge.sql",
        original="coalesce(l.org_id, b.org_id) AS l_org",
        replacement="b.org_id AS l_org",
        hint=_pinned("test_a_paid_booking_moved_to_another_organisation_is_judged_again"),
    ),
    Mutant(
        id="owner-never-judged",
        rule="the ledger row's client and organisation are part of what it judged",
        file="20_charge.sql",
        original="session_ledger.judged_pack(c0.l_state, c0.l_pack), c0.l_client, c0.l_org,",
        replacement="session_ledger.judged_pack(c0.l_state, c0.l_pack), c0.client, c0.org,",
        hint=_pinned(
            "test_a_paid_booking_given_to_another_client_is_judged_again",
            "test_a_paid_booking_moved_to_another_organisation_is_judged_again",
        ),
    ),
    Mutant(
        id="ownerless-row-rejudged",
        rule="a ledger row written before the ledger kept client and organisation was judged for the booking as it is",
        file="20_charge.sql",
        original="coalesce(l.client_id, b.client_id) AS l_client",
        replacement="l.client_id AS l_client",
        hint=_pinned("test_a_ledger_row_without_client_and_organisation_is_not_judged_again"),
    ),
    Mutant(
        id="unfunded-rejudged-as-new",
        rule="an unfunded booking judged again on the same key and still unfunded is a no-op: its row stays",
        file="20_charge.sql",
        original="session_ledger.judged_pack(c0.l_state, c0.l_pack), c0.l_client",
        replacement="session_ledger.held_pack(c0.l_state, c0.l_pack), c0.l_client",
        hint=(
            f"{PACKS}::test_a_still_unfunded_booking_gets_todays_reason_and_its_event_changes_nothing_else",
        ),
    ),
    Mutant(
        id="unfunded-never-retried",
        rule="an event for an unfunded booking judges it again: its pack may pay now",
        file="20_charge.sql",
        original="AND c1.l_state = 'unfunded' AND NOT c1.adopt AS retry",
        replacement="AND c1.l_state = 'unfunded' AND false AS retry",
        hint=(f"{PACKS}::test_a_topped_up_pack_pays_for_its_unfunded_booking_with_no_command",),
    ),
    Mutant(
        id="given-away-given-back",
        rule="a cancelled adopted booking first uses up its pack's given-away count",
        file="20_charge.sql",
        original="IF true = ANY (d_adopted) THEN",
        replacement="IF false THEN",
        hint=(f"{PACKS}::test_cancelled_adopted_bookings_give_back_only_what_the_old_code_charged",),
    ),
    Mutant(
        id="release-without-holding",
        rule="only a booking that holds a session releases one",
        file="20_charge.sql",
        original="array_agg(c.held IS NOT NULL AND (c.changed OR c.repriced)),",
        replacement="array_agg(c.changed OR c.repriced),",
        hint=_pinned("test_the_outcome_names_what_happened"),
    ),
    Mutant(
        id="charge-without-wanting",
        rule="only a booking that consumes a pack asks it for a session",
        file="20_charge.sql",
        original="array_agg(c.want IS NOT NULL AND (c.changed OR c.retry OR c.repriced)),",
        replacement="array_agg(c.changed OR c.retry OR c.repriced),",
        hint=_pinned("test_the_outcome_names_what_happened"),
    ),
    Mutant(
        id="amount-never-converges",
        rule="a paid booking charged at another amount than it costs now gives back what it paid and pays anew",
        file="20_charge.sql",
        original="                   AND c1.l_amount IS DISTINCT FROM c1.cost AND NOT c1.l_unlimited AS repriced",
        replacement="                   AND false AS repriced",
        hint=("tests/db/test_mapped_charge.py::test_marketplace_a_repriced_booking_converges",),
    ),
    Mutant(
        id="moved-reported-as-paid",
        rule="a session released by one pack and paid by another is reported as moved",
        file="20_charge.sql",
        original="               WHEN d.do_charge AND d.charge_ok AND d.do_release THEN 'moved'\n",
        replacement="",
        hint=_pinned("test_the_outcome_names_what_happened"),
    ),
    Mutant(
        id="unfunded-kept-when-not-consuming",
        rule="an unfunded booking that stops consuming is released, so consuming again is judged again",
        file="20_charge.sql",
        original="               WHEN d.want IS NULL AND d.l_state = 'unfunded' THEN 'released'\n",
        replacement="",
        hint=_pinned("test_an_unfunded_booking_that_consumes_again_is_judged_again"),
    ),
    Mutant(
        id="use-session-judged-now",
        rule="use_session(pack, at) judges the pack's validity at the session's time",
        file="20_charge.sql",
        original="ARRAY[p_purchase_id], ARRAY[1], ARRAY[p_session_at],",
        replacement="ARRAY[p_purchase_id], ARRAY[1], ARRAY[pg_catalog.now()],",
        hint=_pinned("test_use_session_judges_the_pack_at_the_sessions_time"),
    ),
)

# ---------------------------------------------------------------------------------------
# 30_queue.sql: the claim, the ack, dead letters
# ---------------------------------------------------------------------------------------
QUEUE = (
    Mutant(
        id="claim-in-flight",
        rule="a claimed message stays invisible to other readers until its visibility timeout",
        file="30_queue.sql",
        original="WHERE q.vt <= pg_catalog.clock_timestamp()",
        replacement="WHERE true",
        hint=_pinned("test_a_claimed_message_is_invisible_until_its_visibility_timeout"),
    ),
    Mutant(
        id="handled-not-acked",
        rule="the handled messages are acked (archived) in the transaction that applies them",
        file="30_queue.sql",
        original="        PERFORM session_ledger.archive_events('booking_events', v_ids);\n",
        replacement="",
        hint=_pinned("test_a_handled_message_is_archived_with_its_charge"),
    ),
    Mutant(
        id="ack-without-archive",
        rule="an acked message is kept in the archive, not just deleted",
        file="30_queue.sql",
        original="SELECT g.msg_id, g.read_ct, g.enqueued_at, g.vt, g.message FROM gone g;\n    ELSIF p_queue OPERATOR(pg_catalog.=) 'booking_events_dlq'",
        replacement="SELECT g.msg_id, g.read_ct, g.enqueued_at, g.vt, g.message FROM gone g WHERE false;\n    ELSIF p_queue OPERATOR(pg_catalog.=) 'booking_events_dlq'",
        hint=_pinned("test_a_handled_message_is_archived_with_its_charge"),
    ),
    Mutant(
        id="non-events-stay-queued",
        rule="the database dead-letters a message that is not exactly our event",
        file="30_queue.sql",
        original="array_agg(q.msg_id ORDER BY q.msg_id) FILTER (WHERE b.id IS NULL)",
        replacement="array_agg(q.msg_id ORDER BY q.msg_id) FILTER (WHERE false)",
        hint=_pinned("test_the_database_dead_letters_what_is_not_exactly_our_event"),
    ),
    Mutant(
        id="max-reads-boundary",
        rule="drain() dead-letters a message read more than max_reads times, and handles one read exactly max_reads",
        file="30_queue.sql",
        original="FILTER (WHERE r.read_ct <= v_max_reads),\n               array_agg(r.msg_id ORDER BY r.msg_id) FILTER (WHERE r.read_ct > v_max_reads),",
        replacement="FILTER (WHERE r.read_ct < v_max_reads),\n               array_agg(r.msg_id ORDER BY r.msg_id) FILTER (WHERE r.read_ct >= v_max_reads),",
        hint=_pinned("test_drain_dead_letters_a_message_read_more_than_max_reads_times"),
    ),
    Mutant(
        id="max-reads-applied",
        rule="drain() never applies a message read more than max_reads times",
        file="30_queue.sql",
        original="FILTER (WHERE r.read_ct <= v_max_reads),\n               array_agg(r.msg_id ORDER BY r.msg_id) FILTER (WHERE r.read_ct > v_max_reads),",
        replacement="FILTER (WHERE true),\n               array_agg(r.msg_id ORDER BY r.msg_id) FILTER (WHERE false),",
        hint=_pinned("test_drain_dead_letters_a_message_read_more_than_max_reads_times"),
    ),
)

# ---------------------------------------------------------------------------------------
# 60_audit.sql: which sessions the app's old code gave away, and taking them
# ---------------------------------------------------------------------------------------
AUDIT = (
    Mutant(
        id="audit-ignores-certain",
        rule="a pack's balance covers its adopted bookings only after the bookings certainly charged",
        file="60_audit.sql",
        original="a.rn > greatest(p.sessions_used - coalesce(k.n, 0), 0)",
        replacement="a.rn > p.sessions_used",
        hint=_pinned("test_audit_finds_the_sessions_a_packs_balance_does_not_cover"),
    ),
    Mutant(
        id="audit-latest-covered",
        rule="a pack's balance covers its earliest adopted bookings",
        file="60_audit.sql",
        original="ORDER BY x.start_time, x.id) AS rn",
        replacement="ORDER BY x.start_time DESC, x.id) AS rn",
        hint=_pinned("test_audit_finds_the_sessions_a_packs_balance_does_not_cover"),
    ),
    Mutant(
        id="audit-charges-uncertain",
        rule="a session audit charged is certainly charged",
        file="60_audit.sql",
        original="WHERE x.paid_by IN ('listener', 'audit')",
        replacement="WHERE x.paid_by IN ('listener')",
        hint=_pinned("test_audit_finds_the_sessions_a_packs_balance_does_not_cover"),
    ),
    Mutant(
        id="audit-charge-any-client",
        rule="audit charges a pack only for its own client's bookings",
        file="60_audit.sql",
        original="q_at, q_client, q_org) AS s;",
        replacement="q_at, NULL, NULL) AS s;",
        hint=_pinned("test_audit_charges_a_pack_only_for_its_own_clients_bookings"),
    ),
)

# ---------------------------------------------------------------------------------------
# 40_trigger.sql and the guard in 10_rules.sql: what the trigger judges and enqueues, and
# who may change what a booking charges; 20_charge.sql's absorbing of the app's old calls
# ---------------------------------------------------------------------------------------
GUARD = "tests/db/test_guard.py"
LEGACY = "tests/db/test_legacy_calls.py"


def _guard(*names: str) -> tuple[str, ...]:
    return tuple(f"{GUARD}::{name}" for name in names)


def _legacy(*names: str) -> tuple[str, ...]:
    return tuple(f"{LEGACY}::{name}" for name in names)


TRIGGER_AND_GUARD: tuple[Mutant, ...] = (
    Mutant(
        id="trigger-trusts-everyone",
        rule="the trigger judges every write of an untrusted writer",
        file="40_trigger.sql",
        original="    IF NOT v_trusted THEN",
        replacement="    IF false THEN",
        hint=_guard("test_the_trigger_refuses_a_member_pointing_a_booking_at_another_orgs_pack"),
    ),
    Mutant(
        id="guard-pairs-only-same-ids",
        rule="for the guard, a changed id is the old booking deleted and a new one inserted",
        file="40_trigger.sql",
        original="            SELECT coalesce(o.id, n.id) INTO v_refused\n"
        "            FROM {{ app.booking_rows('new_rows') }} n FULL JOIN",
        replacement="            SELECT coalesce(o.id, n.id) INTO v_refused\n"
        "            FROM {{ app.booking_rows('new_rows') }} n JOIN",
        hint=_guard("test_the_trigger_refuses_a_member_pointing_a_booking_at_another_orgs_pack"),
    ),
    Mutant(
        id="events-pair-only-same-ids",
        rule="both ids of a changed booking id get an event",
        file="40_trigger.sql",
        original="FULL JOIN {{ app.booking_rows('old_rows') }} o ON o.id = n.id\n        ){% if app.legacy_use %}",
        replacement="JOIN {{ app.booking_rows('old_rows') }} o ON o.id = n.id\n        ){% if app.legacy_use %}",
        hint=_guard("test_an_id_change_is_the_old_booking_deleted_and_a_new_one_inserted"),
    ),
    Mutant(
        id="insert-enqueues-nothing",
        rule="a booking inserted consuming a pack gets an event",
        file="40_trigger.sql",
        original="        FROM k WHERE k.now_pack IS NOT NULL;",
        replacement="        FROM k WHERE false;",
        hint=_transitions("test_inserting_a_completed_booking_charges"),
    ),
    Mutant(
        id="delete-enqueues-nothing",
        rule="a deleted booking that consumed a pack gets an event",
        file="40_trigger.sql",
        original="        FROM k WHERE k.was_pack IS NOT NULL;",
        replacement="        FROM k WHERE false;",
        hint=_transitions("test_deleting_a_completed_booking_releases"),
    ),
    Mutant(
        id="trigger-key-ignores-owner",
        rule="a consuming booking handed to another client or organisation gets an event",
        file="40_trigger.sql",
        original="                   AND (k.was_client IS DISTINCT FROM k.now_client OR k.was_org IS DISTINCT FROM k.now_org\n",
        replacement="                   AND (false\n",
        hint=_guard("test_a_paid_booking_handed_to_another_client_is_judged_again"),
    ),
    Mutant(
        id="no-use-echo",
        rule="a completion is echoed for the old code's use_session",
        file="40_trigger.sql",
        original="                  WHERE k.paired AND k.now_pack IS NOT NULL\n                    AND (k.was_pack IS NULL\n",
        replacement="                  WHERE k.paired AND k.now_pack IS NOT NULL\n                    AND (false\n",
        hint=_legacy("test_a_completion_then_use_session_by_the_same_caller_charges_once"),
    ),
    Mutant(
        id="second-tab-not-echoed",
        rule="a write repeating a recent completion is echoed too (a second browser tab)",
        file="40_trigger.sql",
        original="                         OR (k.was_pack = k.now_pack\n",
        replacement="                         OR (false\n",
        hint=_legacy("test_a_completion_then_use_session_by_the_same_caller_charges_once"),
    ),
    Mutant(
        id="any-write-echoed",
        rule="only a transition, or a repeat of a recent one, is echoed: a notes edit of an old booking is not",
        file="40_trigger.sql",
        original="                         OR (k.was_pack = k.now_pack\n                             AND EXISTS",
        replacement="                         OR (k.was_pack = k.now_pack\n                             OR EXISTS",
        hint=_legacy("test_a_genuine_press_after_a_write_that_starts_or_stops_nothing_is_charged"),
    ),
    Mutant(
        id="repeat-any-age",
        rule="a repeat counts only within the window after the transition",
        file="40_trigger.sql",
        original="                                           AND w.written_at > v_now - v_window)))\n                  UNION ALL",
        replacement="                                           )))\n                  UNION ALL",
        hint=_legacy("test_the_windows_edges_and_a_second_tab_only_just_after_the_transition"),
    ),
    Mutant(
        id="id-change-echoed",
        rule="an id change moves no money and records no echo",
        file="40_trigger.sql",
        original="                  WHERE k.paired AND k.now_pack IS NOT NULL\n",
        replacement="                  WHERE k.now_pack IS NOT NULL\n",
        hint=_legacy("test_a_genuine_press_after_a_write_that_starts_or_stops_nothing_is_charged"),
    ),
    Mutant(
        id="move-echoed-as-use",
        rule="a move to another pack is no completion: it echoes no use_session",
        file="40_trigger.sql",
        original="                    AND (k.was_pack IS NULL\n",
        replacement="                    AND (k.was_pack IS NULL OR k.was_pack <> k.now_pack\n",
        hint=_legacy("test_a_move_to_another_pack_is_no_echo_and_manual_adjustments_are_never_absorbed"),
    ),
    Mutant(
        id="no-release-echo",
        rule="a cancellation is echoed for the old code's release_session",
        file="40_trigger.sql",
        original="                    AND (k.was_pack IS NOT NULL\n",
        replacement="                    AND (false\n",
        hint=_legacy("test_a_cancel_then_reinstate_releases_once"),
    ),
    Mutant(
        id="guard-ignores-times",
        rule="the guard judges a write that moves a session's times",
        file="40_trigger.sql",
        original="n.org_id, n.start_time, n.end_time\n                       {{- ', n.amount' if amounts }})",
        replacement="n.org_id, o.start_time, o.end_time\n                       {{- ', n.amount' if amounts }})",
        hint=_guard("test_the_trigger_refuses_a_client_moving_a_sessions_times"),
    ),
    Mutant(
        id="guard-ignores-amount",
        rule="the guard judges a write that changes a booking's amount",
        file="40_trigger.sql",
        original="{{- ', n.amount' if amounts }}) IS DISTINCT FROM",
        replacement="{{- ', o.amount' if amounts }}) IS DISTINCT FROM",
        hint=(
            "tests/db/test_mapped_guard.py::test_marketplace_a_user_may_not_change_what_their_own_booking_costs",
        ),
    ),
    Mutant(
        id="amount-change-no-event",
        rule="a consuming booking whose amount changes gets an event, so its ledger row converges",
        file="40_trigger.sql",
        original="                        OR k.was_amount IS DISTINCT FROM k.now_amount\n",
        replacement="                        OR false\n",
        hint=(
            "tests/db/test_mapped_guard.py::test_marketplace_a_changed_amount_enqueues_an_event_while_it_consumes",
        ),
    ),
    Mutant(
        id="truncate-open",
        rule="only a trusted caller may truncate the bookings or the packs",
        file="10_rules.sql",
        original="    IF NOT session_ledger.caller_is_trusted() THEN\n        RAISE EXCEPTION 'role % may not truncate",
        replacement="    IF false THEN\n        RAISE EXCEPTION 'role % may not truncate",
        hint=_pinned("test_only_a_trusted_caller_may_truncate_the_bookings_or_the_packs"),
    ),
    Mutant(
        id="packs-written-under-foreign-trigger",
        rule="the ledger never writes the packs as their owner while a foreign trigger is on them",
        file="20_charge.sql",
        original="    PERFORM session_ledger.assert_no_foreign_triggers({{ app.lit(app.packs_table) }}::regclass);\n",
        replacement="",
        hint=_pinned("test_the_ledger_never_writes_a_table_as_its_owner_while_a_foreign_trigger_is_on_it"),
    ),
    Mutant(
        id="bookings-written-under-foreign-trigger",
        rule="the cron path never writes the bookings as their owner while a foreign trigger is on them",
        file="30_queue.sql",
        original="    PERFORM session_ledger.assert_no_foreign_triggers({{ app.lit(app.bookings_table) }}::regclass);\n",
        replacement="",
        hint=_pinned("test_the_ledger_never_writes_a_table_as_its_owner_while_a_foreign_trigger_is_on_it"),
    ),
    Mutant(
        id="foreign-trigger-any-owner",
        rule="a trigger whose function the owner's role does not cover is foreign",
        file="10_rules.sql",
        original="      AND NOT pg_catalog.pg_has_role(p.proowner, current_user, 'MEMBER')",
        replacement="      AND false",
        hint=_pinned("test_the_ledger_never_writes_a_table_as_its_owner_while_a_foreign_trigger_is_on_it"),
    ),
    Mutant(
        id="pause-ignored-by-handle-batch",
        rule="a pause holds every entry point: handle_batch_v3 called with guessed ids charges nothing",
        file="30_queue.sql",
        original="    IF EXISTS (SELECT 1 FROM session_ledger.config c WHERE c.paused_at IS NOT NULL) THEN\n        UPDATE",
        replacement="    IF false THEN\n        UPDATE",
        hint=_pinned("test_a_pause_holds_back_the_backlog_queued_before_it_whoever_calls"),
    ),
    Mutant(
        id="pause-ignores-backlog",
        rule="a pause holds back the backlog queued before it, not only what is queued after",
        file="30_queue.sql",
        original="                 AND NOT EXISTS (SELECT 1 FROM session_ledger.config c WHERE c.paused_at IS NOT NULL)\n",
        replacement="",
        hint=_pinned("test_a_pause_holds_back_the_backlog_queued_before_it_whoever_calls"),
    ),
    Mutant(
        id="complete-past-newest-first",
        rule="complete_past_bookings() completes the oldest bookings first",
        file="30_queue.sql",
        original="IS NULL, {{ app.session_end('x') }}, x.{{ app.booking_id }}",
        replacement="IS NULL, {{ app.session_end('x') }} DESC, x.{{ app.booking_id }}",
        hint=_pinned("test_complete_past_bookings_takes_the_oldest_first_and_chunks_while_its_budget_lasts"),
    ),
    Mutant(
        id="complete-past-one-chunk",
        rule="complete_past_bookings() keeps taking chunks while its budget lasts",
        file="30_queue.sql",
        original="        EXIT WHEN v_done < p_chunk\n",
        replacement="        EXIT WHEN true\n",
        hint=_pinned("test_complete_past_bookings_takes_the_oldest_first_and_chunks_while_its_budget_lasts"),
    ),
    Mutant(
        id="cause-of-earliest-event",
        rule="a booking's ledger row records the cause of its latest change in the batch",
        file="20_charge.sql",
        original="(array_agg(u.cause ORDER BY u.at DESC, u.n DESC))[1]",
        replacement="(array_agg(u.cause ORDER BY u.at, u.n))[1]",
        hint=_pinned("test_a_ledger_row_records_the_cause_of_its_latest_change"),
    ),
    Mutant(
        id="guard-started-session-open",
        rule="a session that has started is its pack's business: a client may not cancel it after the fact",
        file="10_rules.sql",
        original="    IF o_pack IS NOT NULL AND (v_started OR n_status IS NULL)",
        replacement="    IF o_pack IS NOT NULL AND (n_status IS NULL)",
        hint=_guard(
            "test_what_a_session_is_judged_by_is_the_packs_business_once_it_started_or_for_its_times"
        ),
    ),
    Mutant(
        id="guard-times-open",
        rule="only a writer who may move the pack's sessions may move the times of a booking that names it",
        file="10_rules.sql",
        original="    IF v_moved AND n_pack IS NOT NULL AND",
        replacement="    IF false AND n_pack IS NOT NULL AND",
        hint=_guard(
            "test_what_a_session_is_judged_by_is_the_packs_business_once_it_started_or_for_its_times"
        ),
    ),
    Mutant(
        id="guard-amount-open",
        rule="only a writer who may move the pack's sessions may change the amount of a booking that names it",
        file="10_rules.sql",
        original="AND (o_start, o_end, o_amount) IS DISTINCT FROM (n_start, n_end, n_amount);",
        replacement="AND (o_start, o_end) IS DISTINCT FROM (n_start, n_end);",
        hint=(
            "tests/db/test_mapped_guard.py::test_marketplace_a_user_may_not_change_what_their_own_booking_costs",
        ),
    ),
    Mutant(
        id="guard-lets-consumption-stop",
        rule="only a writer who may move the pack's sessions may stop a booking consuming it",
        file="10_rules.sql",
        original="    IF o_c IS NOT NULL AND session_ledger.charge_key_changed(o_c, o_client, o_org, n_c, n_client, n_org)",
        replacement="    IF false AND session_ledger.charge_key_changed(o_c, o_client, o_org, n_c, n_client, n_org)",
        hint=_guard("test_a_member_may_change_what_a_booking_charges_and_a_client_may_not"),
    ),
    Mutant(
        id="guard-lets-consumption-start",
        rule="only a writer who may move the pack's sessions may make a booking consume it",
        file="10_rules.sql",
        original="    IF n_c IS NOT NULL AND session_ledger.charge_key_changed(o_c, o_client, o_org, n_c, n_client, n_org)",
        replacement="    IF false AND session_ledger.charge_key_changed(o_c, o_client, o_org, n_c, n_client, n_org)",
        hint=_guard("test_a_member_may_change_what_a_booking_charges_and_a_client_may_not"),
    ),
    Mutant(
        id="guard-lets-pack-detach",
        rule="only a writer who may move the pack's sessions may detach or switch it",
        file="10_rules.sql",
        original="    IF o_pack IS NOT NULL AND session_ledger.charge_key_changed(o_pack, o_client, o_org, n_pack, n_client, n_org)",
        replacement="    IF false AND session_ledger.charge_key_changed(o_pack, o_client, o_org, n_pack, n_client, n_org)",
        hint=_guard("test_a_member_may_change_what_a_booking_charges_and_a_client_may_not"),
    ),
    Mutant(
        id="guard-attach-any-clients-pack",
        rule="a client may attach only their own pack",
        file="10_rules.sql",
        original="                                          AND p.client_id OPERATOR(pg_catalog.=) n_client",
        replacement="",
        hint=_guard("test_a_client_may_attach_only_their_own_live_pack_to_a_booking_that_has_none"),
    ),
    Mutant(
        id="guard-attach-dead-pack",
        rule="a client may attach only a pack that can still pay",
        file="10_rules.sql",
        original="                                              IS NULL)),",
        replacement="                                              IS NULL OR true)),",
        hint=_guard("test_a_client_may_attach_only_their_own_live_pack_to_a_booking_that_has_none"),
    ),
    Mutant(
        id="guard-attach-over-another-pack",
        rule="a client may attach a pack only to a booking that has none",
        file="10_rules.sql",
        original="                        OR (o_pack IS NULL",
        replacement="                        OR (true",
        hint=_guard("test_a_pack_attached_over_another_needs_the_right_to_move_both"),
    ),
    Mutant(
        id="absorb-when-off",
        rule="with absorbing switched off, every old call moves the balance",
        file="20_charge.sql",
        original="    IF NOT v_on THEN",
        replacement="    IF false THEN",
        hint=_legacy("test_an_echo_outside_the_window_or_with_absorbing_off_is_not_absorbed"),
    ),
    Mutant(
        id="absorb-any-age",
        rule="only a live echo absorbs a call",
        file="20_charge.sql",
        original="      AND session_ledger.booking_write_live(w.written_at, w.caused_by, v_window)\n",
        replacement="",
        hint=_legacy("test_an_echo_outside_the_window_or_with_absorbing_off_is_not_absorbed"),
    ),
    Mutant(
        id="window-too-long",
        rule="an echo half a second past the window absorbs nothing",
        file="10_rules.sql",
        original="(pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) p_window)\n        OR EXISTS",
        replacement="(pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) p_window OPERATOR(pg_catalog.-) interval '1 second')\n        OR EXISTS",
        hint=_legacy("test_the_windows_edges_and_a_second_tab_only_just_after_the_transition"),
    ),
    Mutant(
        id="window-too-short",
        rule="an echo two seconds inside the window absorbs a call",
        file="10_rules.sql",
        original="(pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) p_window)\n        OR EXISTS",
        replacement="(pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) p_window OPERATOR(pg_catalog.+) interval '3 seconds')\n        OR EXISTS",
        hint=_legacy("test_the_windows_edges_and_a_second_tab_only_just_after_the_transition"),
    ),
    Mutant(
        id="loop-not-kept-live",
        rule="a write's echoes stay live while the old cron's calls keep absorbing them",
        file="10_rules.sql",
        original="        OR EXISTS (SELECT 1 FROM session_ledger.booking_writes s",
        replacement="        OR false AND EXISTS (SELECT 1 FROM session_ledger.booking_writes s",
        hint=_legacy("test_the_old_crons_loop_stays_live_while_its_calls_keep_coming"),
    ),
    Mutant(
        id="prune-live-echo",
        rule="pruning never removes an echo that is still live",
        file="30_queue.sql",
        original="      AND NOT EXISTS (SELECT 1 FROM kept_live k WHERE k.written_at = w.written_at AND k.caused_by = w.caused_by)",
        replacement="      AND true",
        hint=_legacy("test_pruning_keeps_every_echo_that_is_still_live"),
    ),
    Mutant(
        id="absorb-unlocked",
        rule="two old calls racing for one echo: exactly one is absorbed",
        file="20_charge.sql",
        original="    ORDER BY w.id\n    LIMIT 1\n    FOR UPDATE;",
        replacement="    ORDER BY w.id\n    LIMIT 1;",
        hint=_legacy("test_two_old_calls_racing_for_one_echo_absorb_it_once"),
    ),
    Mutant(
        id="absorb-any-role",
        rule="only the writer's own role's call is absorbed",
        file="20_charge.sql",
        original="      AND (w.caused_by ->> 'role') IS NOT DISTINCT FROM (p_cause ->> 'role')",
        replacement="",
        hint=_legacy("test_each_write_absorbs_one_call_and_only_its_own_callers"),
    ),
    Mutant(
        id="absorb-any-user",
        rule="only the writer's own signed-in user's call is absorbed",
        file="20_charge.sql",
        original="      AND (w.caused_by ->> 'uid') IS NOT DISTINCT FROM (p_cause ->> 'uid')",
        replacement="",
        hint=_legacy("test_each_write_absorbs_one_call_and_only_its_own_callers"),
    ),
    Mutant(
        id="absorb-without-limit",
        rule="each booking of a write absorbs one call, no more",
        file="20_charge.sql",
        original="      AND w.absorbed < pg_catalog.cardinality(w.booking_ids)",
        replacement="",
        hint=_legacy("test_each_write_absorbs_one_call_and_only_its_own_callers"),
    ),
    Mutant(
        id="absorbed-call-adopted",
        rule="a booking whose old call was absorbed is never adopted by a late cut-over",
        file="20_charge.sql",
        original="WHERE pc.booking_id = i.id AND pc.outcome = 'absorbed') AS adopt,",
        replacement="WHERE false) AS adopt,",
        hint=(
            "tests/db/test_migrate.py::test_a_late_cut_over_never_adopts_a_booking_whose_old_call_was_absorbed",
        ),
    ),
)

# ---------------------------------------------------------------------------------------
# 35_operator.sql: discarding dead letters, and the dead letters status names
# ---------------------------------------------------------------------------------------
DISCARD = "tests/ops/test_discard.py"
OPERATOR = (
    Mutant(
        id="discard-without-reason",
        rule="a discard needs a reason, whoever calls the function",
        file="35_operator.sql",
        original="    IF v_reason IS NULL OR v_reason OPERATOR(pg_catalog.=) '' THEN",
        replacement="    IF false THEN",
        hint=(f"{DISCARD}::test_the_database_function_requires_a_reason_itself",),
    ),
    Mutant(
        id="discard-records-the-owner",
        rule="a discard records the login that made it, not the function's owner",
        file="35_operator.sql",
        original="        'login', session_user,",
        replacement="        'login', current_user,",
        hint=(f"{DISCARD}::test_the_listeners_login_may_discard_and_is_recorded_by_name",),
    ),
    Mutant(
        id="discard-every-letter",
        rule="a discard archives the letters named, no other",
        file="35_operator.sql",
        original="DELETE FROM pgmq.q_booking_events_dlq q WHERE q.msg_id OPERATOR(pg_catalog.=) ANY (v_ids)",
        replacement="DELETE FROM pgmq.q_booking_events_dlq q WHERE true",
        hint=(
            f"{DISCARD}::test_discard_archives_each_letter_with_who_when_and_why_and_status_turns_healthy",
        ),
    ),
    Mutant(
        id="status-newest-dead-letters",
        rule="status names the oldest dead letters",
        file="35_operator.sql",
        original="                  ORDER BY q.msg_id\n",
        replacement="                  ORDER BY q.msg_id DESC\n",
        hint=(f"{DISCARD}::test_status_names_how_many_dead_letters_it_leaves_out",),
    ),
)

# ---------------------------------------------------------------------------------------
# 45_pack_changes.sql and the audit's side of it: a pack that may pay judges its unfunded
# bookings again; sessions the old code gave away stay given away
# ---------------------------------------------------------------------------------------
PACK_CHANGES = (
    Mutant(
        id="top-up-unnoticed",
        rule="more sessions on a pack judge its unfunded bookings again",
        file="45_pack_changes.sql",
        original="(o_total IS NULL OR n_total OPERATOR(pg_catalog.>) o_total)",
        replacement="(o_total IS NULL)",
        hint=(f"{PACKS}::test_a_topped_up_pack_pays_for_its_unfunded_booking_with_no_command",),
    ),
    Mutant(
        id="charge-enqueues",
        rule="a pack's sessions_used going up (every charge) can pay for nothing more: no event",
        file="45_pack_changes.sql",
        original="OR n_used OPERATOR(pg_catalog.<) o_used",
        replacement="OR n_used OPERATOR(pg_catalog.<>) o_used",
        hint=(f"{PACKS}::test_a_change_that_cannot_let_a_pack_pay_enqueues_nothing",),
    ),
    Mutant(
        id="unfunded-latest-first",
        rule="a pack's unfunded bookings are judged again earliest session first",
        file="45_pack_changes.sql",
        original="ORDER BY b.start_time, b.id) AS x;",
        replacement="ORDER BY b.start_time DESC, b.id) AS x;",
        hint=(f"{PACKS}::test_a_session_given_back_pays_for_the_earliest_unfunded_booking_first",),
    ),
    Mutant(
        id="given-away-count-includes-charged",
        rule="the given-away count leaves out what the balance covers after the sessions the ledger charged",
        file="45_pack_changes.sql",
        original="- greatest(p.sessions_used - count(*) FILTER (WHERE l.source IN ('listener', 'audit')), 0),",
        replacement="- 0,",
        hint=(f"{PACKS}::test_cancelled_adopted_bookings_give_back_only_what_the_old_code_charged",),
    ),
    Mutant(
        id="audit-keeps-given-away",
        rule="audit --charge sets the given-away count of the packs it judges to zero",
        file="60_audit.sql",
        original="UPDATE session_ledger.given_away g SET sessions = 0,",
        replacement="UPDATE session_ledger.given_away g SET sessions = g.sessions,",
        hint=(f"{PACKS}::test_audit_charge_sets_the_count_to_zero_as_it_charges",),
    ),
    Mutant(
        id="audit-charges-in-flight",
        rule="audit leaves a pack whose bookings have events in flight for a later run",
        file="60_audit.sql",
        original="WHERE s.now_pack IS DISTINCT FROM s.was_pack AND x.pack = ANY (p_packs)",
        replacement="WHERE false",
        hint=(f"{PACKS}::test_audit_leaves_a_pack_with_an_event_in_flight_for_a_later_run",),
    ),
)

CATALOGUE: tuple[Mutant, ...] = RULES + CHARGE + QUEUE + AUDIT + TRIGGER_AND_GUARD + OPERATOR + PACK_CHANGES
