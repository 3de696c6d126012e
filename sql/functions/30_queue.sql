-- The queue's consumers: the listener's entry points, the in-database drain, and
-- the operators' functions.

-- The ledger's two queues, written to with static SQL on pgmq's tables (what
-- pgmq.send_batch and pgmq.archive do). pgmq's own functions set no search_path:
-- called from a SECURITY DEFINER function they would resolve types in the caller's
-- temporary schema first, so nothing privileged here ever calls them.
-- send_events returns the new messages' ids, in the order given.
CREATE OR REPLACE FUNCTION session_ledger.send_events(p_queue text, p_messages jsonb[]) RETURNS SETOF bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_queue OPERATOR(pg_catalog.=) 'booking_events' THEN
        RETURN QUERY
        INSERT INTO pgmq.q_booking_events (vt, message)
        SELECT pg_catalog.clock_timestamp(), m.msg FROM unnest(p_messages) WITH ORDINALITY AS m(msg, n) ORDER BY m.n
        RETURNING msg_id;
    ELSIF p_queue OPERATOR(pg_catalog.=) 'booking_events_dlq' THEN
        RETURN QUERY
        INSERT INTO pgmq.q_booking_events_dlq (vt, message)
        SELECT pg_catalog.clock_timestamp(), m.msg FROM unnest(p_messages) WITH ORDINALITY AS m(msg, n) ORDER BY m.n
        RETURNING msg_id;
    ELSE
        RAISE EXCEPTION 'no ledger queue named %', p_queue USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION session_ledger.archive_events(p_queue text, p_msg_ids bigint[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_queue OPERATOR(pg_catalog.=) 'booking_events' THEN
        WITH gone AS (
            DELETE FROM pgmq.q_booking_events q WHERE q.msg_id = ANY (p_msg_ids)
            RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.vt, q.message
        )
        INSERT INTO pgmq.a_booking_events (msg_id, read_ct, enqueued_at, vt, message)
        SELECT g.msg_id, g.read_ct, g.enqueued_at, g.vt, g.message FROM gone g;
    ELSIF p_queue OPERATOR(pg_catalog.=) 'booking_events_dlq' THEN
        WITH gone AS (
            DELETE FROM pgmq.q_booking_events_dlq q WHERE q.msg_id = ANY (p_msg_ids)
            RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.vt, q.message
        )
        INSERT INTO pgmq.a_booking_events_dlq (msg_id, read_ct, enqueued_at, vt, message)
        SELECT g.msg_id, g.read_ct, g.enqueued_at, g.vt, g.message FROM gone g;
    ELSE
        RAISE EXCEPTION 'no ledger queue named %', p_queue USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- Wake the sleeping listeners: a NOTIFY on the ledger's channel, named here and
-- nowhere else in SQL (the listener's side is listener.WAKEUP_CHANNEL; a test holds
-- the two together). A hint only: a listener polls anyway.
CREATE OR REPLACE FUNCTION session_ledger.wake_listeners() RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.pg_notify('booking_events', '')
$$;

-- Claim a batch: pgmq.read's claim (vt, read_ct, last_read_at), committed with
-- this statement so read_ct survives a crash. Written out rather than calling
-- pgmq.read, whose dynamic SQL joins the claimed ids back to the whole queue
-- table: every read then costs O(queue) instead of O(batch).
CREATE OR REPLACE FUNCTION session_ledger.read_events(p_qty int, p_vt_seconds int)
RETURNS TABLE (msg_id bigint, read_ct int, enqueued_at timestamptz, message text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE pgmq.q_booking_events m
       SET vt = pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => p_vt_seconds),
           read_ct = m.read_ct + 1,
           last_read_at = pg_catalog.clock_timestamp()
     WHERE m.msg_id = ANY (ARRAY(
               SELECT q.msg_id FROM pgmq.q_booking_events q
               WHERE q.vt <= pg_catalog.clock_timestamp()
                 -- a paused ledger hands out nothing: every listener and drain() stop within one poll
                 AND NOT EXISTS (SELECT 1 FROM session_ledger.config c WHERE c.paused_at IS NOT NULL)
               ORDER BY q.msg_id
               LIMIT p_qty
               FOR UPDATE SKIP LOCKED))
    RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.message::text
$$;

-- Apply a batch and ack it in one transaction: the charges, the ledger rows, the
-- archive of handled messages, the dead letters and the listener's counters
-- commit together. The bookings and their enqueue times come from the queue rows
-- themselves, never from the caller: the caller can only say which queued
-- messages it handles and which it rejects, and why. A message that is not
-- exactly our event is dead-lettered here too. p_listener may be NULL (drain()).
-- Each outcome says who caused it (the latest event's `cause`), for the log line;
-- a dead-lettered one names the queue message and the dead letter it became, the
-- id `listener replay --dead-letter --id` takes.
CREATE OR REPLACE FUNCTION session_ledger.handle_batch_v3(
    p_listener uuid, p_msg_ids bigint[], p_dead_msg_ids bigint[], p_dead_reasons text[]
)
RETURNS TABLE (booking_id {{ app.keys.booking }}, outcome text, purchase_id {{ app.keys.pack }},
               previous_purchase_id {{ app.keys.pack }}, reason text,
               caused_by jsonb, msg_id bigint, dead_letter_id bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids bigint[]; v_bookings {{ app.keys.booking }}[]; v_at timestamptz[]; v_causes jsonb[];
    v_bad_ids bigint[];
    v_dead jsonb[]; v_dead_reasons text[]; v_dead_sources bigint[]; v_dead_ids bigint[];
    o_booking {{ app.keys.booking }}[]; o_outcome text[]; o_pack {{ app.keys.pack }}[]; o_prev {{ app.keys.pack }}[];
    o_reason text[]; o_cause jsonb[];
BEGIN
    -- Paused: nothing is charged, released or dead-lettered, whoever calls and whatever
    -- they claimed before the pause. The messages go back to the queue as they are,
    -- for after resume_charging().
    IF EXISTS (SELECT 1 FROM session_ledger.config c WHERE c.paused_at IS NOT NULL) THEN
        UPDATE pgmq.q_booking_events q SET vt = pg_catalog.clock_timestamp()
         WHERE q.msg_id = ANY (coalesce(p_msg_ids, '{}') || coalesce(p_dead_msg_ids, '{}'));
        RETURN;
    END IF;

    -- The queue rows, locked: two listeners holding the same redelivered message
    -- serialise here, and the second finds it gone.
    SELECT array_agg(q.msg_id ORDER BY q.msg_id) FILTER (WHERE b.id IS NOT NULL),
           array_agg(b.id ORDER BY q.msg_id) FILTER (WHERE b.id IS NOT NULL),
           array_agg(q.enqueued_at ORDER BY q.msg_id) FILTER (WHERE b.id IS NOT NULL),
           -- '{}': an event from before the ledger kept causes; its cause is unknown
           array_agg(coalesce(q.message -> 'cause', '{}'::jsonb) ORDER BY q.msg_id) FILTER (WHERE b.id IS NOT NULL),
           array_agg(q.msg_id ORDER BY q.msg_id) FILTER (WHERE b.id IS NULL)
      INTO v_ids, v_bookings, v_at, v_causes, v_bad_ids
    FROM (SELECT m.msg_id, m.enqueued_at, m.message FROM pgmq.q_booking_events m
          WHERE m.msg_id = ANY (p_msg_ids) AND NOT m.msg_id = ANY (coalesce(p_dead_msg_ids, '{}'))
          ORDER BY m.msg_id FOR UPDATE) AS q
    CROSS JOIN LATERAL (SELECT session_ledger.event_booking_id(q.message) AS id OFFSET 0) AS b;

    -- Delete first, so two listeners holding the same expired message cannot both dead-letter it.
    WITH doomed AS (
        SELECT d.msg_id, d.reason
        FROM unnest(p_dead_msg_ids, p_dead_reasons) AS d(msg_id, reason)
        UNION ALL
        SELECT x, {{ app.lit('not a booking.changed v1 event naming a booking by its '
                             ~ ('canonical uuid' if app.keys.booking == 'uuid' else app.keys.booking ~ ' id')) }}
        FROM unnest(v_bad_ids) AS x
    ), gone AS (
        DELETE FROM pgmq.q_booking_events q
        USING doomed d
        WHERE q.msg_id = d.msg_id
        RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.message, d.reason
    )
    SELECT array_agg(pg_catalog.jsonb_build_object(
               'reason', g.reason,
               'source_msg_id', g.msg_id,
               'read_ct', g.read_ct,
               'enqueued_at', g.enqueued_at,
               'dead_lettered_at', pg_catalog.now(),
               'message', g.message) ORDER BY g.msg_id),
           array_agg(g.reason ORDER BY g.msg_id), array_agg(g.msg_id ORDER BY g.msg_id)
      INTO v_dead, v_dead_reasons, v_dead_sources
    FROM gone g;
    IF v_dead IS NOT NULL THEN
        -- ids are drawn in insertion order, which is v_dead's
        SELECT array_agg(s.id ORDER BY s.id) INTO v_dead_ids
        FROM session_ledger.send_events('booking_events_dlq', v_dead) AS s(id);
    END IF;

    IF v_ids IS NOT NULL THEN
        SELECT array_agg(a.booking_id), array_agg(a.outcome), array_agg(a.purchase_id),
               array_agg(a.previous_purchase_id), array_agg(a.reason), array_agg(a.caused_by)
          INTO o_booking, o_outcome, o_pack, o_prev, o_reason, o_cause
        FROM session_ledger.apply_bookings(v_bookings, v_at, v_causes) AS a;
        PERFORM session_ledger.archive_events('booking_events', v_ids);
    END IF;

    IF p_listener IS NOT NULL THEN
        UPDATE session_ledger.listeners l
           SET heartbeat_at = pg_catalog.now(),
               last_batch_at = pg_catalog.now(),
               waiting = false,
               paid = l.paid + (SELECT count(*) FROM unnest(o_outcome) x WHERE x = 'paid'),
               released = l.released + (SELECT count(*) FROM unnest(o_outcome) x WHERE x = 'released'),
               moved = l.moved + (SELECT count(*) FROM unnest(o_outcome) x WHERE x = 'moved'),
               unfunded = l.unfunded + (SELECT count(*) FROM unnest(o_outcome) x WHERE x = 'unfunded'),
               noop = l.noop + (SELECT count(*) FROM unnest(o_outcome) x WHERE x = 'no-op')
                      + coalesce(array_length(v_ids, 1), 0) - coalesce(array_length(o_outcome, 1), 0),
               dead_lettered = l.dead_lettered + coalesce(array_length(v_dead, 1), 0)
         WHERE l.id = p_listener;
    END IF;

    RETURN QUERY
    SELECT o.*, NULL::bigint, NULL::bigint FROM unnest(o_booking, o_outcome, o_pack, o_prev, o_reason, o_cause) AS o
    UNION ALL
    SELECT NULL::{{ app.keys.booking }}, 'dead-lettered', NULL::{{ app.keys.pack }}, NULL::{{ app.keys.pack }},
           d.reason, NULL::jsonb, d.source, d.id
    FROM unnest(v_dead_reasons, v_dead_sources, v_dead_ids) AS d(reason, source, id);
END
$$;

-- Release 0.2.0's entry point, for a listener of that release still running
-- during an upgrade: handle_batch_v3 without the causes.
CREATE OR REPLACE FUNCTION session_ledger.handle_batch_v2(
    p_listener uuid, p_msg_ids bigint[], p_dead_msg_ids bigint[], p_dead_reasons text[]
)
RETURNS TABLE (booking_id {{ app.keys.booking }}, outcome text, purchase_id {{ app.keys.pack }},
               previous_purchase_id {{ app.keys.pack }}, reason text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT h.booking_id, h.outcome, h.purchase_id, h.previous_purchase_id, h.reason
    FROM session_ledger.handle_batch_v3(p_listener, p_msg_ids, p_dead_msg_ids, p_dead_reasons) AS h
$$;

-- Release 0.1.0's entry point, for a listener of that release still running during
-- an upgrade: the booking ids and enqueue times it passes are ignored, and the
-- batch is handled from the queue rows as handle_batch_v2 does.
CREATE OR REPLACE FUNCTION session_ledger.handle_batch(
    p_listener uuid,
    p_msg_ids bigint[],
    p_booking_ids uuid[],
    p_enqueued_at timestamptz[],
    p_dead_msg_ids bigint[],
    p_dead_reasons text[],
    p_waiting boolean
)
RETURNS TABLE (booking_id {{ app.keys.booking }}, outcome text, purchase_id {{ app.keys.pack }},
               previous_purchase_id {{ app.keys.pack }}, reason text)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT h.booking_id, h.outcome, h.purchase_id, h.previous_purchase_id, h.reason
    FROM session_ledger.handle_batch_v3(p_listener, p_msg_ids, p_dead_msg_ids, p_dead_reasons) AS h
$$;

-- The schema version `listener migrate` recorded, for the listener's start-up check.
CREATE OR REPLACE FUNCTION session_ledger.installed_schema() RETURNS int
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.version FROM session_ledger.schema_info s
$$;

-- Echoes of booking writes that are no longer live can absorb nothing: every
-- listener's heartbeat and every drain() sweeps them away.
CREATE OR REPLACE FUNCTION session_ledger.prune_booking_writes() RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    -- booking_write_live()'s rule for a whole table at once: a row per echo would call it a
    -- million times after a burst of writes, and a listener's first heartbeat must not wait on that.
    WITH cfg AS (
        SELECT pg_catalog.clock_timestamp() - c.legacy_call_window AS since FROM session_ledger.config c
    ), kept_live AS (
        SELECT DISTINCT s.written_at, s.caused_by
        FROM session_ledger.booking_writes s, cfg
        WHERE s.last_absorbed_at > cfg.since
    )
    DELETE FROM session_ledger.booking_writes w
    USING cfg
    WHERE w.written_at <= cfg.since
      AND NOT EXISTS (SELECT 1 FROM kept_live k WHERE k.written_at = w.written_at AND k.caused_by = w.caused_by)
$$;

-- How long one call of drain() or complete_past_bookings() may work before it
-- stops and commits what it did: half the statement_timeout, or a minute without one.
CREATE OR REPLACE FUNCTION session_ledger.statement_budget() RETURNS interval
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN pg_catalog.current_setting('statement_timeout') IN ('0', '')
                THEN interval '60 seconds'
                ELSE pg_catalog.current_setting('statement_timeout')::interval / 2 END
$$;

-- Register a running listener, or refresh its heartbeat; waiting = it sleeps and wants a NOTIFY.
CREATE OR REPLACE FUNCTION session_ledger.heartbeat(p_listener uuid, p_host text, p_pid int, p_waiting boolean)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO session_ledger.listeners AS l (id, host, pid, waiting)
    VALUES (p_listener, p_host, p_pid, p_waiting)
    ON CONFLICT (id) DO UPDATE
       SET heartbeat_at = pg_catalog.now(), waiting = excluded.waiting, stopped_at = NULL;
    SELECT session_ledger.prune_booking_writes();
$$;


-- Mark a listener as stopped cleanly.
CREATE OR REPLACE FUNCTION session_ledger.stop_listener(p_listener uuid) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE session_ledger.listeners
       SET stopped_at = pg_catalog.now(), waiting = false, heartbeat_at = pg_catalog.now()
     WHERE id = p_listener
$$;

-- The in-database consumer, for pg_cron: claims and handles batches through the
-- listener's own functions until the queue is empty, p_max_events were handled,
-- or one more batch would not fit in half the statement_timeout. Everything it does commits with the
-- calling statement. A batch the database rejects is retried one message at a
-- time, and the one that fails is dead-lettered with its error, so one bad message
-- cannot wedge every later run. p_max_events stays in the low thousands: every
-- booking handled holds a transaction-scoped advisory lock until the call commits,
-- and the server's lock table (max_locks_per_transaction x max_connections, 6,400
-- slots by default) is shared by every session.
CREATE OR REPLACE FUNCTION session_ledger.drain(p_max_events int DEFAULT 2000) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- Small batches: each holds its packs' row locks until this statement commits.
    c_batch constant int := 500;
    -- The consumers' policy (config): a message read more often is dead-lettered.
    v_max_reads int;
    v_vt_seconds int;
    v_started timestamptz := pg_catalog.clock_timestamp();
    v_budget interval;
    v_batch_started timestamptz;
    v_slowest interval := interval '0';
    v_handled bigint := 0;
    v_ids bigint[]; v_dead bigint[]; v_reasons text[];
    v_one bigint;
BEGIN
    v_budget := session_ledger.statement_budget();
    SELECT c.max_reads, c.visibility_timeout_s INTO v_max_reads, v_vt_seconds FROM session_ledger.config c;
    PERFORM session_ledger.prune_booking_writes();
    LOOP
        -- Stop while one more batch, as slow as the slowest so far, still fits the budget.
        EXIT WHEN v_handled >= p_max_events
               OR pg_catalog.clock_timestamp() - v_started + 2 * v_slowest > v_budget;
        v_batch_started := pg_catalog.clock_timestamp();
        SELECT array_agg(r.msg_id ORDER BY r.msg_id) FILTER (WHERE r.read_ct <= v_max_reads),
               array_agg(r.msg_id ORDER BY r.msg_id) FILTER (WHERE r.read_ct > v_max_reads),
               array_agg('read ' || r.read_ct || ' times without being handled' ORDER BY r.msg_id)
                   FILTER (WHERE r.read_ct > v_max_reads)
          INTO v_ids, v_dead, v_reasons
        FROM session_ledger.read_events(least(c_batch, p_max_events - v_handled::int), v_vt_seconds) AS r;
        EXIT WHEN v_ids IS NULL AND v_dead IS NULL;
        BEGIN
            PERFORM session_ledger.handle_batch_v3(NULL, v_ids, v_dead, v_reasons);
        EXCEPTION WHEN serialization_failure OR deadlock_detected OR lock_not_available OR query_canceled THEN
            -- Transient. This run holds every lock it took until it commits, so it may
            -- deadlock with a listener: the failed batch's locks went with its
            -- subtransaction; give its messages back now and keep what is done.
            UPDATE pgmq.q_booking_events q SET vt = pg_catalog.clock_timestamp()
             WHERE q.msg_id = ANY (coalesce(v_ids, '{}') || coalesce(v_dead, '{}'));
            EXIT;
        WHEN OTHERS THEN
            FOREACH v_one IN ARRAY coalesce(v_ids, '{}') LOOP
                BEGIN
                    PERFORM session_ledger.handle_batch_v3(NULL, ARRAY[v_one], NULL, NULL);
                EXCEPTION WHEN serialization_failure OR deadlock_detected OR lock_not_available OR query_canceled THEN
                    UPDATE pgmq.q_booking_events q SET vt = pg_catalog.clock_timestamp() WHERE q.msg_id = v_one;
                WHEN OTHERS THEN
                    PERFORM session_ledger.handle_batch_v3(
                        NULL, NULL, ARRAY[v_one], ARRAY['database rejected the event: ' || SQLSTATE || ': ' || SQLERRM]);
                END;
            END LOOP;
            IF v_dead IS NOT NULL THEN
                PERFORM session_ledger.handle_batch_v3(NULL, NULL, v_dead, v_reasons);
            END IF;
        END;
        v_handled := v_handled + coalesce(array_length(v_ids, 1), 0) + coalesce(array_length(v_dead, 1), 0);
        v_slowest := greatest(v_slowest, pg_catalog.clock_timestamp() - v_batch_started);
    END LOOP;
    INSERT INTO session_ledger.drain_runs (started_at, finished_at, handled, run_by)
    VALUES (v_started, pg_catalog.clock_timestamp(), v_handled, session_ledger.caller());
    RETURN v_handled;
END
$$;

-- The cron path: move the bookings that have ended from the mapped status to the
-- completed one ([completion] of the mapping: confirmed to completed for the coaching
-- app), and nothing else; the trigger then queues their charges. In chunks of
-- p_chunk, bookings with a pack first, oldest first, until none is left or one more
-- chunk would not fit p_budget (by default statement_budget(): half the
-- statement_timeout). At least one chunk is done per call. A flood of bookings
-- therefore cannot make a call exceed the statement_timeout and complete nothing:
-- what a call did commits with it, and the next call goes on. Returns how many
-- bookings this call completed.
-- An app with no [completion] completes its own bookings: the function is still
-- there, with the grants and the signature every install has, and refuses with one
-- line saying so, so a cron job scheduled for it fails loudly instead of doing nothing.
CREATE OR REPLACE FUNCTION session_ledger.complete_past_bookings(p_chunk int DEFAULT 1000,
                                                                 p_budget interval DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
{%- if app.mapping.completion is none %}
BEGIN
    RAISE EXCEPTION 'no completion is mapped: this app completes its own bookings'
        USING ERRCODE = 'feature_not_supported',
              HINT = 'add a [completion] section (from_status, to_status) to the mapping and run listener migrate';
END
{%- else %}
{%- set c = app.mapping.completion %}
DECLARE
    v_started timestamptz := pg_catalog.clock_timestamp();
    v_budget interval := coalesce(p_budget, session_ledger.statement_budget());
    v_slowest interval := interval '0';
    v_chunk_started timestamptz;
    v_done int;
    v_n bigint := 0;
BEGIN
    IF p_chunk IS NULL OR p_chunk < 1 THEN
        RAISE EXCEPTION 'chunk size must be at least 1' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The UPDATE below runs as the owner and fires every trigger on the bookings.
    PERFORM session_ledger.assert_no_foreign_triggers({{ app.lit(app.bookings_table) }}::regclass);
    LOOP
        v_chunk_started := pg_catalog.clock_timestamp();
        -- SKIP LOCKED: a booking a writer holds right now is left for the next call.
        UPDATE {{ app.bookings_table }} b SET {{ app.booking_status }} = {{ app.lit(c.to_status) }}
         WHERE b.{{ app.booking_id }} = ANY (ARRAY(
                   SELECT x.{{ app.booking_id }} FROM {{ app.bookings_table }} x
                   WHERE x.{{ app.booking_status }} = {{ app.lit(c.from_status) }}
                     AND {{ app.session_end('x') }} < pg_catalog.now()
                   ORDER BY {{ app.booking_field('x', 'purchase_id') }} IS NULL, {{ app.session_end('x') }}, x.{{ app.booking_id }}
                   LIMIT p_chunk
                   FOR UPDATE OF x SKIP LOCKED))
           AND b.{{ app.booking_status }} = {{ app.lit(c.from_status) }};
        GET DIAGNOSTICS v_done = ROW_COUNT;
        v_n := v_n + v_done;
        v_slowest := greatest(v_slowest, pg_catalog.clock_timestamp() - v_chunk_started);
        -- Stop when nothing is left, or before a chunk as slow as the slowest would overrun.
        EXIT WHEN v_done < p_chunk
               OR pg_catalog.clock_timestamp() - v_started + 2 * v_slowest > v_budget;
    END LOOP;
    RETURN v_n;
END
{%- endif %}
$$;

-- The SQL types of the app's keys (uuid, integer, bigint or text), as this install was
-- rendered for: {"booking": ..., "pack": ..., "client": ..., "org": ...}. The listener
-- checks each event's booking_id against the booking's, exactly as event_booking_id()
-- does, before it hands a batch over; the dashboard reads an id typed in by them.
CREATE OR REPLACE FUNCTION session_ledger.app_keys() RETURNS jsonb
LANGUAGE sql IMMUTABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_build_object('booking', {{ app.lit(app.keys.booking) }}::text,
                                         'pack', {{ app.lit(app.keys.pack) }}::text,
                                         'client', {{ app.lit(app.keys.client) }}::text,
                                         'org', {{ app.lit(app.keys.org) }}::text)
$$;

-- Put events for these bookings on the queue, as the trigger would.
CREATE OR REPLACE FUNCTION session_ledger.enqueue_bookings(p_booking_ids {{ app.keys.booking }}[], p_source text)
RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_msgs jsonb[];
BEGIN
    SELECT array_agg(session_ledger.booking_event(u.id, p_source, session_ledger.current_cause()) ORDER BY u.id)
      INTO v_msgs
    FROM (SELECT DISTINCT x AS id FROM unnest(p_booking_ids) AS x WHERE x IS NOT NULL) AS u;
    IF v_msgs IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM session_ledger.send_events('booking_events', v_msgs);
    PERFORM session_ledger.wake_listeners();
    RETURN array_length(v_msgs, 1);
END
$$;

-- Move dead letters back onto the queue, original payload unwrapped; the dead
-- letters themselves are archived, so their reasons stay on record.
CREATE OR REPLACE FUNCTION session_ledger.redrive_dead_letters(p_msg_ids bigint[]) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids bigint[];
    v_msgs jsonb[];
BEGIN
    -- Locked first: two operators redriving the same letters send each once.
    SELECT array_agg(d.msg_id ORDER BY d.msg_id) INTO v_ids
    FROM (SELECT q.msg_id FROM pgmq.q_booking_events_dlq q
          WHERE q.msg_id = ANY (p_msg_ids) ORDER BY q.msg_id FOR UPDATE) AS d;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    SELECT array_agg(coalesce(q.message -> 'message', 'null'::jsonb) ORDER BY q.msg_id) INTO v_msgs
    FROM pgmq.q_booking_events_dlq q WHERE q.msg_id = ANY (v_ids);
    PERFORM session_ledger.send_events('booking_events', v_msgs);
    PERFORM session_ledger.archive_events('booking_events_dlq', v_ids);
    PERFORM session_ledger.wake_listeners();
    RETURN array_length(v_ids, 1);
END
$$;

-- Pause charging, for an incident or an investigation: nothing is claimed until
-- resume_charging(); the trigger keeps queuing. Pausing again only updates the reason.
CREATE OR REPLACE FUNCTION session_ledger.pause_charging(p_reason text) RETURNS jsonb
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE session_ledger.config c
       SET paused_at = coalesce(c.paused_at, pg_catalog.clock_timestamp()),
           paused_by = session_ledger.caller(),
           pause_reason = nullif(pg_catalog.btrim(p_reason), '')
    RETURNING pg_catalog.jsonb_build_object('paused_at', c.paused_at, 'paused_by', c.paused_by, 'reason', c.pause_reason)
$$;

-- Resume charging; returns the pause it ended (NULL when charging was not paused).
CREATE OR REPLACE FUNCTION session_ledger.resume_charging() RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ended jsonb;
BEGIN
    SELECT CASE WHEN c.paused_at IS NOT NULL THEN pg_catalog.jsonb_build_object(
               'paused_at', c.paused_at, 'paused_by', c.paused_by, 'reason', c.pause_reason,
               'resumed_at', pg_catalog.clock_timestamp()) END
      INTO v_ended
    FROM session_ledger.config c FOR UPDATE;
    UPDATE session_ledger.config SET paused_at = NULL, paused_by = NULL, pause_reason = NULL;
    RETURN v_ended;
END
$$;

-- Record when the new app, which calls nothing after its own booking writes, was
-- deployed (default: now). Absorbed calls that keep coming after it are old code still
-- running (an open tab, an edge function not redeployed): status, /metrics and the
-- SessionLedgerOldCodeStillRunning alert show them. Returns the time recorded.
CREATE OR REPLACE FUNCTION session_ledger.mark_app_deployed(p_at timestamptz DEFAULT NULL) RETURNS timestamptz
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE session_ledger.config SET app_deployed_at = coalesce(p_at, pg_catalog.clock_timestamp())
    RETURNING app_deployed_at
$$;

-- Who paused charging, when and why; NULL while charging runs. Cheap enough for every probe.
CREATE OR REPLACE FUNCTION session_ledger.pause_state() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN c.paused_at IS NOT NULL THEN pg_catalog.jsonb_build_object(
               'paused_at', c.paused_at, 'paused_by', c.paused_by, 'reason', c.pause_reason) END
    FROM session_ledger.config c
$$;

-- Queue and dead-letter depth, cheap enough for every metrics scrape.
CREATE OR REPLACE FUNCTION session_ledger.queue_depths()
RETURNS TABLE (queue_depth bigint, queue_visible bigint, oldest_event_age_s double precision, dead_letter_depth bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (SELECT count(*) FROM pgmq.q_booking_events),
           (SELECT count(*) FROM pgmq.q_booking_events WHERE vt <= pg_catalog.clock_timestamp()),
           (SELECT extract(epoch FROM pg_catalog.clock_timestamp() - min(enqueued_at))::double precision
              FROM pgmq.q_booking_events),
           (SELECT count(*) FROM pgmq.q_booking_events_dlq)
$$;

-- Everything `listener status` reports, in one call the listener's role may make.
CREATE OR REPLACE FUNCTION session_ledger.status() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH cfg AS (SELECT c.consuming_statuses, c.listener_live_window, c.absorb_legacy_calls, c.legacy_call_window
                 FROM session_ledger.config c),
    q AS (
        SELECT count(*) AS depth,
               count(*) FILTER (WHERE m.vt <= pg_catalog.clock_timestamp()) AS visible,
               count(*) FILTER (WHERE m.vt > pg_catalog.clock_timestamp()) AS in_flight,
               count(*) FILTER (WHERE m.read_ct > 1) AS redelivered,
               extract(epoch FROM pg_catalog.clock_timestamp() - min(m.enqueued_at)) AS oldest
        FROM pgmq.q_booking_events m
    ),
    dlq AS (
        SELECT count(*) AS depth FROM pgmq.q_booking_events_dlq
    ),
    dlq_reasons AS (
        SELECT coalesce(jsonb_agg(jsonb_build_object('reason', r.reason, 'count', r.n) ORDER BY r.n DESC, r.reason), '[]')
               AS top
        FROM (SELECT d.message ->> 'reason' AS reason, count(*) AS n
              FROM pgmq.q_booking_events_dlq d GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5) AS r
    ),
    ledger AS (
        SELECT count(*) FILTER (WHERE l.state = 'paid') AS paid,
               count(*) FILTER (WHERE l.state = 'unfunded') AS unfunded
        FROM session_ledger.charges l
    ),
    unfunded_reasons AS (
        SELECT coalesce(jsonb_agg(jsonb_build_object('reason', r.reason, 'count', r.n) ORDER BY r.n DESC, r.reason), '[]')
               AS top
        FROM (SELECT l.reason, count(*) AS n FROM session_ledger.charges l
              WHERE l.state = 'unfunded' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5) AS r
    ),
    out_of_sync AS (
        SELECT count(*) AS n FROM session_ledger.out_of_sync
    ),
    live AS (
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'id', x.id, 'host', x.host, 'pid', x.pid, 'started_at', x.started_at,
                   'heartbeat_at', x.heartbeat_at, 'last_batch_at', x.last_batch_at,
                   'heartbeat_age_s', round(extract(epoch FROM pg_catalog.now() - x.heartbeat_at)::numeric, 1),
                   'waiting', x.waiting,
                   'events_handled', x.paid + x.released + x.moved + x.unfunded + x.noop + x.dead_lettered
               ) ORDER BY x.started_at), '[]') AS listeners
        FROM session_ledger.live_listeners x
    ),
    outcomes AS (
        SELECT jsonb_build_object(
                   'paid', coalesce(sum(x.paid), 0), 'released', coalesce(sum(x.released), 0),
                   'moved', coalesce(sum(x.moved), 0), 'unfunded', coalesce(sum(x.unfunded), 0),
                   'no-op', coalesce(sum(x.noop), 0), 'dead-lettered', coalesce(sum(x.dead_lettered), 0)
               ) AS counts
        FROM session_ledger.listeners x
    ),
    drains AS (
        SELECT jsonb_build_object(
                   'last_at', max(d.finished_at),
                   'last_age_s', round(extract(epoch FROM pg_catalog.now() - max(d.finished_at))::numeric, 1),
                   'last_handled', (SELECT d2.handled FROM session_ledger.drain_runs d2 ORDER BY d2.id DESC LIMIT 1),
                   'runs_last_hour', count(*) FILTER (WHERE d.finished_at > pg_catalog.now() - interval '1 hour'),
                   'handled_last_hour', coalesce(sum(d.handled) FILTER (WHERE d.finished_at > pg_catalog.now() - interval '1 hour'), 0),
                   'live', coalesce(max(d.finished_at) > pg_catalog.now() - (SELECT cfg.listener_live_window FROM cfg), false)
               ) AS summary
        FROM session_ledger.drain_runs d
    ),
    legacy AS (
        -- The app's old code calling use_session / release_session: once no call has
        -- come for a while, the old code is gone and absorbing can be switched off.
        SELECT jsonb_build_object(
                   'absorbing', (SELECT cfg.absorb_legacy_calls FROM cfg),
                   'window_s', (SELECT extract(epoch FROM cfg.legacy_call_window)::int FROM cfg),
                   'legacy_calls', count(*) FILTER (WHERE pc.legacy),
                   'absorbed', count(*) FILTER (WHERE pc.outcome = 'absorbed'),
                   'absorbed_last_hour', count(*) FILTER (WHERE pc.outcome = 'absorbed'
                                                          AND pc.called_at > pg_catalog.now() - interval '1 hour'),
                   'last_absorbed_at', max(pc.called_at) FILTER (WHERE pc.outcome = 'absorbed'),
                   'last_legacy_call_at', max(pc.called_at) FILTER (WHERE pc.legacy),
                   'manual_calls', count(*) FILTER (WHERE NOT pc.legacy),
                   -- per kind: 'use' echoes a completion, 'release' a cancellation
                   'absorbed_by_kind', jsonb_build_object(
                       'use', count(*) FILTER (WHERE pc.outcome = 'absorbed' AND pc.kind = 'use'),
                       'release', count(*) FILTER (WHERE pc.outcome = 'absorbed' AND pc.kind = 'release')),
                   -- old code still running after the new app was deployed (`listener app-deployed`)
                   'app_deployed_at', (SELECT c.app_deployed_at FROM session_ledger.config c),
                   'absorbed_since_app_deployed',
                       count(*) FILTER (WHERE pc.outcome = 'absorbed'
                                          AND pc.called_at > (SELECT c.app_deployed_at FROM session_ledger.config c))
               ) AS summary
        FROM session_ledger.pack_calls pc
    ),
    migs AS (
        SELECT coalesce(jsonb_agg(jsonb_build_object('version', m.version, 'name', m.name, 'applied_at', m.applied_at)
                        ORDER BY m.version), '[]') AS applied
        FROM session_ledger.migrations m
    ),
    schema AS (
        SELECT (SELECT s.version FROM session_ledger.schema_info s) AS version
    )
    SELECT jsonb_build_object(
        'queue_depth', q.depth,
        'queue_visible', q.visible,
        'queue_in_flight', q.in_flight,
        'queue_redelivered', q.redelivered,
        'oldest_event_age_s', round(q.oldest::numeric, 3),
        'dead_letter_depth', dlq.depth,
        'dead_letter_reasons', dlq_reasons.top,
        'paid_bookings', ledger.paid,
        'unfunded_bookings', ledger.unfunded,
        'unfunded_reasons', unfunded_reasons.top,
        'bookings_out_of_sync', out_of_sync.n,
        'consuming_statuses', to_jsonb(cfg.consuming_statuses),
        'listeners', live.listeners,
        'drain', drains.summary,
        'legacy_calls', legacy.summary,
        'paused', (SELECT CASE WHEN c.paused_at IS NOT NULL THEN jsonb_build_object(
                       'paused_at', c.paused_at, 'paused_by', c.paused_by, 'reason', c.pause_reason,
                       'paused_for_s', round(extract(epoch FROM pg_catalog.now() - c.paused_at)::numeric, 1)) END
                   FROM session_ledger.config c),
        'outcomes', outcomes.counts,
        'migrations', migs.applied,
        'schema_version', schema.version
    )
    FROM q, dlq, dlq_reasons, ledger, unfunded_reasons, out_of_sync, live, outcomes, drains, legacy, migs, schema, cfg
$$;
