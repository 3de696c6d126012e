-- What each function and view a user may call is for, as COMMENT ON: psql's \df+
-- and \dv+ show it, and docs/sql-api.md is rendered from it
-- (listener/devtools/sql_api.py). A function is a user's to call when a role other
-- than the ledger's owner may execute it (90_grants.sql), when an operator command
-- runs it, or when it is the app's own; tests/db/test_sql_api.py fails, naming it,
-- when one has no comment here. The first sentence of each stands alone: it is the
-- one-line summary.

-- The app's functions, in public ---------------------------------------------------

{%- if app.legacy_use %}
COMMENT ON FUNCTION public.use_session({{ app.keys.pack }}) IS $$Charge one session of a pack, judged at now(): the app's signature, unchanged for its existing callers.
Returns true when the session was charged, false when the pack could not pay (used up, expired or unpaid). The caller must be trusted or a signed-in member of the pack's organisation. While the app's old code may still run, a call that echoes a booking write the ledger already charges is absorbed and returns true without moving the balance a second time.$$;

COMMENT ON FUNCTION public.release_session({{ app.keys.pack }}) IS $$Give one session back to a pack ("reinstate"): the app's signature, unchanged for its existing callers.
Returns the pack's new sessions_used, or -1 when there was nothing to give back (already 0, or no such pack). Absorbs the echo of a cancellation the ledger releases, as use_session(uuid) does.$$;

COMMENT ON FUNCTION public.use_session({{ app.keys.pack }}, text) IS $$The trainer's "Use 1 Session" button: charge one session by hand, judged at now(), with the reason the trainer gives.
Returns true when charged. Never absorbed: a manual adjustment is never the echo of a booking write. Recorded in session_ledger.pack_calls with who made it.$$;

COMMENT ON FUNCTION public.release_session({{ app.keys.pack }}, text) IS $$The trainer's button to give one session back by hand, with the reason the trainer gives.
Returns the pack's new sessions_used, or -1 when there was nothing to give back. Recorded in session_ledger.pack_calls with who made it.$$;

COMMENT ON FUNCTION public.use_session({{ app.keys.pack }}, timestamptz) IS $$Charge one session, judging the pack's validity at the given session time; the ledger's owner only.
A charge for a given session time is the ledger's own business, so every other role's right to it is revoked.$$;
{%- endif %}

-- Operators and pg_cron -----------------------------------------------------------

COMMENT ON FUNCTION session_ledger.drain(int) IS $$The in-database consumer, for pg_cron: handle queued events until the queue is empty, p_max_events were handled, or one more batch would not fit in half the statement_timeout.
Returns how many events it handled. Everything it does commits with the calling statement. A batch the database rejects is retried one message at a time and the failing one is dead-lettered, so one bad message cannot wedge later runs. Keep p_max_events in the low thousands: each booking handled holds an advisory lock until the call commits. The ledger's owner and the listener's role may call it.$$;

COMMENT ON FUNCTION session_ledger.complete_past_bookings(int, interval) IS $$The cron path: move the bookings that have ended from the mapped status to the completed one (confirmed to completed, by default), and nothing else; the trigger then queues their charges.
With no [completion] in the mapping the app completes its own bookings, and a call refuses, saying so. Works in chunks of p_chunk (bookings with a pack first, oldest first) until none is left or one more chunk would not fit p_budget (by default half the statement_timeout); at least one chunk per call. Returns how many bookings this call completed. What a call did commits with it, so a flood of bookings cannot make it time out having done nothing. service_role and the listener's role may call it.$$;

COMMENT ON FUNCTION session_ledger.enqueue_bookings({{ app.keys.booking }}[], text) IS $$Queue an event for each of these bookings, as the trigger would; p_source says who did (`replay`, for instance).
Returns how many events were queued. Level-triggered: the listener converges each booking to its current row, so an extra event is harmless. `listener replay --booking` calls it.$$;

COMMENT ON FUNCTION session_ledger.redrive_dead_letters(bigint[]) IS $$Move these dead letters back onto the queue, their original payload unwrapped; the dead letters themselves are archived, so their reasons stay on record.
Returns how many were moved. `listener replay --dead-letter` calls it, with the ids `listener status` shows.$$;

COMMENT ON FUNCTION session_ledger.pause_charging(text) IS $$Pause charging, for an incident or an investigation: no listener and no drain() claims an event until resume_charging(); the trigger keeps queuing.
Returns the pause (who, when, why). Pausing again only updates the reason. `listener pause` calls it.$$;

COMMENT ON FUNCTION session_ledger.resume_charging() IS $$Resume charging after pause_charging().
Returns the pause it ended, or NULL when charging was not paused. `listener resume` calls it.$$;

COMMENT ON FUNCTION session_ledger.pause_state() IS $$Who paused charging, when and why, as jsonb; NULL while charging runs.
Cheap enough for every probe: the listener's readiness check and metrics call it.$$;

COMMENT ON FUNCTION session_ledger.status() IS $$Everything `listener status` reports, as one jsonb document, in one call the listener's role may make.
Queue and dead-letter depths with the dead letters' reasons, charges paid and unfunded with the commonest reasons, bookings out of sync, the pause, and the listeners with their heartbeats.$$;

COMMENT ON FUNCTION session_ledger.queue_depths() IS $$Queue depth, how much of it is visible, the oldest event's age in seconds, and the dead-letter depth, in one row.
Cheap enough for every metrics scrape.$$;

COMMENT ON FUNCTION session_ledger.installed_schema() IS $$The schema version `listener migrate` recorded.
A listener refuses to start on a version it does not know.$$;

COMMENT ON FUNCTION session_ledger.apply_bookings({{ app.keys.booking }}[], timestamptz[], jsonb[]) IS $$Bring each named booking's ledger row in line with the booking's current row, now: charge, release, move or record it unfunded.
Level-triggered, so duplicate, late or replayed calls find nothing left to do. Returns one outcome per booking. Handling an event does this; `listener reconcile` and `listener replay` call it directly as the ledger's owner.$$;

COMMENT ON FUNCTION session_ledger.event_booking_id(jsonb) IS $$The booking a queued message names, or NULL when the message is not exactly the ledger's event.
For reading the queue by hand, as the operator commands do.$$;

COMMENT ON FUNCTION session_ledger.audit_packs({{ app.keys.org }}) IS $$Per pack (of one organisation, or all when NULL): its consuming bookings, its sessions_used and what the ledger says, side by side.
given_away counts consuming bookings beyond sessions_used (sessions the app's old code never took); manual counts sessions_used beyond them (the trainer's manual charges); to_charge is what audit_charge() would still try. Where bookings cost amounts, these are amounts. A pack counted down keeps no count of what it used, so its balance is not audited: its given_away, manual and to_charge are NULL. `listener audit` shows it.$$;

COMMENT ON FUNCTION session_ledger.audit_uncharged({{ app.keys.org }}, {{ app.keys.pack }}[]) IS $$The bookings of these packs (NULL: every pack, of one organisation when given) whose session was never taken from the pack.
What `listener audit --charge-all` would charge.$$;

COMMENT ON FUNCTION session_ledger.audit_charge({{ app.keys.pack }}[]) IS $$Charge the sessions these packs gave away, through the same rules as any charge: one request per uncharged booking at its start time, earliest first, so exhaustion and expiry are judged as usual.
Each booking's ledger row then says what audit did (paid, or unfunded with the reason) and an adjustment row records who ran it. Returns one row per booking judged. `listener audit --charge-all` calls it.$$;

-- The listener's role ---------------------------------------------------------------

COMMENT ON FUNCTION session_ledger.read_events(int, int) IS $$Claim up to p_qty queued events for p_vt_seconds, as pgmq.read claims them; the claim commits with the statement, so read counts survive a crash.
The listener's first call of each batch.$$;

COMMENT ON FUNCTION session_ledger.handle_batch_v3(uuid, bigint[], bigint[], text[]) IS $$Apply a batch of claimed events and acknowledge them in one transaction: the charges, the ledger rows, the archive, the dead letters and the listener's counters commit together.
p_msg_ids are the events the listener accepts; p_dead_msg_ids, with p_dead_reasons, those it rejects. The bookings and enqueue times come from the queue rows, never from the caller. Returns one outcome per booking, with who caused it; a dead-lettered message's outcome names its dead-letter id.$$;

COMMENT ON FUNCTION session_ledger.handle_batch_v2(uuid, bigint[], bigint[], text[]) IS $$Release 0.2.0's entry point, kept for a listener of that release still running during an upgrade: handle_batch_v3() without the causes.$$;

COMMENT ON FUNCTION session_ledger.handle_batch(uuid, bigint[], uuid[], timestamptz[], bigint[], text[], boolean) IS $$Release 0.1.0's entry point, kept for a listener of that release still running during an upgrade.
The booking ids and enqueue times it passes are ignored: the batch is handled from the queue rows.$$;

COMMENT ON FUNCTION session_ledger.heartbeat(uuid, text, int, boolean) IS $$Register a running listener or refresh its heartbeat; p_waiting says it sleeps and wants a NOTIFY from the next writer.$$;

COMMENT ON FUNCTION session_ledger.stop_listener(uuid) IS $$Record that a listener stopped cleanly.$$;

COMMENT ON FUNCTION session_ledger.app_keys() IS $$The SQL types of the app's keys (uuid, integer, bigint or text) this install was rendered for, as {"booking", "pack", "client", "org"}.
The listener checks each event's booking_id against the booking's before it hands a batch over; the dashboard reads the ids typed into it by them.$$;

COMMENT ON FUNCTION session_ledger.dashboard_lag(int) IS $$The dashboard: commit-to-charge lag (p50, p99, max) and events handled, per minute over the last p_minutes.
Minutes without events are left out.$$;

COMMENT ON FUNCTION session_ledger.dashboard_dead_letters(int) IS $$The dashboard: the newest p_limit dead letters, why each was set aside and what it carried.$$;

COMMENT ON FUNCTION session_ledger.dashboard_dead_letters_by_id(bigint[]) IS $$The dashboard: the dead letters among these ids, whatever their age, for the redrive confirmation.$$;

COMMENT ON FUNCTION session_ledger.dashboard_unfunded(int) IS $$The dashboard: the newest p_limit bookings that consume a session but found no pack able to pay, and why.$$;

COMMENT ON FUNCTION session_ledger.dashboard_out_of_sync(int) IS $$The dashboard: up to p_limit bookings whose ledger row disagrees with the booking, what `listener reconcile` repairs.$$;

COMMENT ON FUNCTION session_ledger.dashboard_recent_changes(int, timestamptz, {{ app.keys.booking }}) IS $$The dashboard: one page of the ledger's changes, newest first, with who caused each.
Keyset-paged: a page starts after the row (p_before_at, p_before_booking) that ended the previous one; NULL p_before_at is the newest page.$$;

COMMENT ON FUNCTION session_ledger.dashboard_absorbed_calls(int) IS $$The dashboard: the app's old use_session / release_session calls most recently absorbed as the echo of a booking write, with who made each and the booking it matched.$$;

COMMENT ON FUNCTION session_ledger.dashboard_redrive(bigint[]) IS $$The dashboard's action: move these dead letters back onto the queue, as `listener replay --dead-letter --id` does.
Returns how many were moved.$$;

COMMENT ON FUNCTION session_ledger.dashboard_replay({{ app.keys.booking }}) IS $$The dashboard's action: queue one booking again, as the trigger would; the listener converges it.
Returns how many events were queued.$$;

-- Views ------------------------------------------------------------------------------

COMMENT ON VIEW session_ledger.live_listeners IS $$Listeners that are alive: not stopped, and heard from within the configured window, with what each has handled.$$;

COMMENT ON VIEW session_ledger.app_bookings IS $$The app's bookings as the ledger names them (id, status, purchase_id, client_id, org_id, start_time, end_time, amount, consumes), whatever the app calls them: what the named queries read.$$;

COMMENT ON VIEW session_ledger.app_packs IS $$The app's packs as the ledger names them (id, client_id, org_id, sessions_total, sessions_used, expires_at, unusable, unlimited); for a pack counted down, sessions_total is what remains and sessions_used is 0.$$;

COMMENT ON VIEW session_ledger.out_of_sync IS $$Bookings whose ledger row disagrees with their current row, and ledger rows of bookings that are gone: what `listener reconcile` repairs.$$;

COMMENT ON FUNCTION session_ledger.dashboard_discard(bigint[], text) IS $$The dashboard's action: archive these dead letters for good, with who, when and why, as `listener discard --dead-letter --id` does.
Returns how many were archived.$$;

COMMENT ON FUNCTION session_ledger.dashboard_names(text[]) IS $$The dashboard: the app's names for these ids, of any kind and as text (a client's full_name, a pack's offer, client and purchase date), where the app has those columns.$$;

COMMENT ON FUNCTION session_ledger.dashboard_search(text, integer) IS $$The dashboard's search: bookings, packs and clients by id, or by part of a client's or an offer's name; at most p_limit of each kind.$$;

COMMENT ON FUNCTION session_ledger.dashboard_packs({{ app.keys.pack }}[], {{ app.keys.client }}[], integer) IS $$The dashboard: packs by id, or every pack of these clients, with their balance, the ledger's bookings per state and their direct calls.$$;

COMMENT ON FUNCTION session_ledger.dashboard_pack_charges({{ app.keys.pack }}, text, integer) IS $$The dashboard's pack page: the pack's bookings in one ledger state ('paid' or 'unfunded'), newest change first.$$;

COMMENT ON FUNCTION session_ledger.dashboard_pack_calls({{ app.keys.pack }}, integer) IS $$The dashboard's pack page: the pack's direct calls (the app's use_session and release_session, absorbed or not, and manual adjustments), newest first.$$;

COMMENT ON FUNCTION session_ledger.dashboard_bookings({{ app.keys.booking }}[]) IS $$The dashboard: bookings by id, as the app and the ledger each hold them, and whether `listener reconcile` would change each.$$;

COMMENT ON FUNCTION session_ledger.mark_app_deployed(timestamptz) IS $$Record when the new app, which calls nothing after its own booking writes, was deployed (default: now); `listener app-deployed` calls it.
Old calls absorbed after it are old code still running: status(), /metrics and the SessionLedgerOldCodeStillRunning alert count them.$$;

COMMENT ON FUNCTION session_ledger.discard_dead_letters(bigint[], text) IS $$Archive these dead letters without handling them, recording who (caller and login), when and why in the archived message's `discarded`; `listener discard --dead-letter` and the dashboard call it.
For a dead letter no fix will make chargeable. Returns how many were archived; a letter redriven at the same time goes one way only.$$;

COMMENT ON FUNCTION session_ledger.status_details(int) IS $$The oldest p_limit dead letters, with the id `listener replay --dead-letter` and `listener discard --dead-letter` take, their reason, when and the booking each names: what `listener status` lists.$$;

COMMENT ON FUNCTION session_ledger.prune_booking_writes() IS $$Delete the echoes of booking writes (session_ledger.booking_writes) that can absorb no old call any more: older than config.legacy_call_window and not kept live by an absorbed call of the same write. Every heartbeat, drain() and `listener prune` run it.$$;

COMMENT ON FUNCTION session_ledger.record_given_away({{ app.keys.pack }}[]) IS $$Record, for these packs, how many of their bookings adopted as paid the app's old code never charged (a pack adopted with u sessions used and n > u completed bookings records n - u). Cancelling such a booking uses up the count before a session is given back. `listener cutover` calls it.$$;

COMMENT ON FUNCTION session_ledger.packs_in_flight({{ app.keys.pack }}[]) IS $$Of these packs, those with a booking whose ledger row disagrees with its row (an event still in flight, or dead-lettered): `listener audit` leaves them for a later run.$$;
