-- The bookings trigger: guard the write, then enqueue, in the writer's own transaction.
--
-- A template over the app's mapping (listener/mapping/render.py): the transition tables
-- are read as canonical bookings (`app.booking_rows`), so the body below speaks of id,
-- status, purchase_id, client_id, org_id, start_time, end_time, amount and consumes
-- whatever the app calls them. Without a pack.amount_column the amount is the constant
-- 1 and never changes, so the comparisons of it below are not rendered at all: under
-- the FULL JOIN the constant reads as a nullable placeholder, which the planner keeps
-- (an unpaired row's side is NULL), so it would not fold away.
{%- set k = app.keys %}
{%- set roles = app.mapping.access.trusted_roles | join(', ') %}
{%- set members = app.mapping.access.mode == 'supabase' and app.membership_function %}
{%- set who_may = ("signed-in users (members of authenticated) whom " ~ app.membership_function ~ " admits for the pack''s organisation, " if members else "") ~ (roles ~ " and " if roles else "") ~ "the ledger''s owner" %}
{%- set amounts = app.mapping.pack.amount_column %}
{## Only a mapped consuming condition or amount is read from the rows: a constant read
    through the nullable side of the FULL JOIN below becomes a placeholder the planner
    cannot fold away, which a bulk UPDATE pays for on every row. ##}
{%- set cons = app.mapping.booking.consumes_when %}
{## The pack a booking names, for the guard: none while it does not consume at all (a
    booking paid another way is not the pack's business). ##}
{%- macro named(b) -%}
{%- if app.mapping.booking.consumes_when -%}
CASE WHEN {{ b }}.consumes THEN {{ b }}.purchase_id END
{%- else -%}
{{ b }}.purchase_id
{%- endif -%}
{%- endmacro %}

-- Statement-level with transition tables: a bulk UPDATE of thousands of rows is
-- guarded and enqueued in one pass. SECURITY DEFINER because the writer may be a
-- signed-in user with no rights on the queue or the packs.
--
-- Rows are paired by id. An UPDATE that changes a booking's id is, for the guard
-- and for the events, the old booking deleted and a new one inserted: the ledger
-- is keyed by booking id, so both ids are judged and both get an event.
--
-- The guard: a writer who is not trusted (session_ledger.caller_is_trusted(), one
-- check per statement) may not change what the ledger judges a booking by (its
-- status, pack, client, organisation, times and amount) where that moves a session, unless
-- they may move that pack's sessions (session_ledger.may_write_booking has the rule).
-- The whole statement fails with insufficient_privilege, naming the booking.
--
-- The event: one per booking whose charge key changed (session_ledger.charge_key_changed),
-- or that consumes the same pack at another amount (the listener converges what the
-- ledger row paid to what the booking costs now), carrying who caused it
-- (session_ledger.current_cause()). An UPDATE that changes nothing relevant inserts no
-- event, so it cannot fail.
--
-- The per-row rules the events come from, consumed_pack and charge_key_changed, are
-- written out here rather than called: a SQL function with a SET clause is never
-- inlined, and PostgreSQL before 18 plans its body again in every statement that calls
-- it, about 70 µs of every signed-in completion on 15 (docs/performance.md). Their
-- definitions in 10_rules.sql stay the rule; tests/db/test_trigger_rules.py holds the
-- two equal over every transition. The canonical rows cost nothing either: they are
-- plain subqueries, which the planner pulls up into each statement (no SubqueryScan in
-- its plan; tests/db/test_mapped_guard.py checks the coaching app's).
--
-- The echoes: while config.absorb_legacy_calls is on, every write that makes a
-- booking start or stop consuming a pack is recorded per pack in
-- session_ledger.booking_writes with its writer, so the app's old code calling
-- use_session / release_session right after its own booking write is absorbed
-- instead of moving the balance a second time (session_ledger.absorb_legacy_call).
-- A write that repeats such a transition within the legacy-call window (a second
-- browser tab's page load completing a booking the first tab just completed) is
-- recorded too; any other write (a notes edit, an id change, a write long after)
-- records nothing, so a genuine press after it is charged. Only an app with old
-- deduction functions to absorb (the mapping's [legacy]) records them.
CREATE OR REPLACE FUNCTION session_ledger.enqueue_booking_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_consuming text[];
    v_echo boolean;
    v_window interval;
    v_trusted boolean;
    v_refused {{ k.booking }};
    v_cause jsonb;
    v_sent bigint;
    -- one time for every echo of this write: absorbing keeps a write's echoes live together
    v_now timestamptz := pg_catalog.clock_timestamp();
BEGIN
    SELECT c.consuming_statuses, c.absorb_legacy_calls, c.legacy_call_window INTO v_consuming, v_echo, v_window
    FROM session_ledger.config c;
    v_trusted := session_ledger.caller_is_trusted();

    IF NOT v_trusted THEN
        IF TG_OP = 'INSERT' THEN
            SELECT n.id INTO v_refused FROM {{ app.booking_rows('new_rows') }} n
            WHERE NOT session_ledger.may_write_booking(NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                                       n.status, {{ named('n') }}, n.client_id, n.org_id,
                                                       n.start_time, n.end_time, {{ 'n.amount' if amounts else '1' }}, v_consuming, v_trusted)
            LIMIT 1;
        ELSIF TG_OP = 'UPDATE' THEN
            SELECT coalesce(o.id, n.id) INTO v_refused
            FROM {{ app.booking_rows('new_rows') }} n FULL JOIN {{ app.booking_rows('old_rows') }} o ON o.id = n.id
            WHERE (o.id IS NULL OR n.id IS NULL
                   OR (n.status, n.purchase_id, {{ 'n.consumes, ' if cons }}n.client_id, n.org_id, n.start_time, n.end_time
                       {{- ', n.amount' if amounts }}) IS DISTINCT FROM
                      (o.status, o.purchase_id, {{ 'o.consumes, ' if cons }}o.client_id, o.org_id, o.start_time, o.end_time
                       {{- ', o.amount' if amounts }}))
              AND NOT session_ledger.may_write_booking(o.status, {{ named('o') }}, o.client_id, o.org_id,
                                                       o.start_time, o.end_time, {{ 'o.amount' if amounts else '1' }},
                                                       n.status, {{ named('n') }}, n.client_id, n.org_id,
                                                       n.start_time, n.end_time, {{ 'n.amount' if amounts else '1' }}, v_consuming, v_trusted)
            LIMIT 1;
        ELSE
            SELECT o.id INTO v_refused FROM {{ app.booking_rows('old_rows') }} o
            WHERE NOT session_ledger.may_write_booking(o.status, {{ named('o') }}, o.client_id, o.org_id,
                                                       o.start_time, o.end_time, {{ 'o.amount' if amounts else '1' }},
                                                       NULL, NULL, NULL, NULL, NULL, NULL, NULL, v_consuming, v_trusted)
            LIMIT 1;
        END IF;
        IF v_refused IS NOT NULL THEN
            RAISE EXCEPTION 'booking %: role % may not change which session pack it charges, nor when, nor how much',
                            v_refused, session_ledger.caller()
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'Only {{ who_may }} may.';
        END IF;
    END IF;

    v_cause := session_ledger.current_cause();

    -- Static INSERTs into the queue table (what pgmq.send_batch does, minus its
    -- dynamic SQL, which is planned anew on every call). One statement per
    -- operation: the events and the echoes come from one pass over the rows.
    IF TG_OP = 'INSERT' THEN
        WITH k AS (
            SELECT n.id, n.start_time, CASE WHEN n.status = ANY (v_consuming){{ ' AND n.consumes' if cons }} THEN n.purchase_id END AS now_pack
            FROM {{ app.booking_rows('new_rows') }} n
        ){% if app.legacy_use %}, echoes AS (
            INSERT INTO session_ledger.booking_writes (written_at, kind, purchase_id, caused_by, booking_ids)
            SELECT v_now, 'use', k.now_pack, v_cause, array_agg(k.id ORDER BY k.start_time, k.id)
            FROM k WHERE v_echo AND k.now_pack IS NOT NULL
            GROUP BY k.now_pack
        ){% endif %}
        INSERT INTO pgmq.q_booking_events (vt, message)
        SELECT pg_catalog.clock_timestamp(), session_ledger.booking_event(k.id, NULL, v_cause)
        FROM k WHERE k.now_pack IS NOT NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        WITH k AS (
            SELECT coalesce(n.id, o.id) AS id, coalesce(n.start_time, o.start_time) AS start_time,
                   -- an UPDATE creates no booking: an unpaired row is an id change, which moves no money
                   o.id IS NOT NULL AND n.id IS NOT NULL AS paired,
                   o.id IS NULL OR n.id IS NULL
                       OR (n.status, n.purchase_id, {{ 'n.consumes, ' if cons }}n.client_id, n.org_id{{ ', n.amount' if amounts }})
                          IS DISTINCT FROM
                          (o.status, o.purchase_id, {{ 'o.consumes, ' if cons }}o.client_id, o.org_id{{ ', o.amount' if amounts }})
                          AS touched,
                   {{ named('o') }} AS was_named,
                   o.client_id AS was_client, o.org_id AS was_org, n.client_id AS now_client, n.org_id AS now_org,
{%- if amounts %}
                   o.amount AS was_amount, n.amount AS now_amount,
{%- endif %}
                   CASE WHEN o.status = ANY (v_consuming){{ ' AND o.consumes' if cons }} THEN o.purchase_id END AS was_pack,
                   CASE WHEN n.status = ANY (v_consuming){{ ' AND n.consumes' if cons }} THEN n.purchase_id END AS now_pack
            FROM {{ app.booking_rows('new_rows') }} n FULL JOIN {{ app.booking_rows('old_rows') }} o ON o.id = n.id
        ){% if app.legacy_use %}, echoes AS (
            INSERT INTO session_ledger.booking_writes (written_at, kind, purchase_id, caused_by, booking_ids)
            SELECT v_now, e.kind, e.pack, v_cause, array_agg(e.id ORDER BY e.start_time, e.id)
            FROM (-- started consuming, or a repeat of a recent start (a second tab)
                  SELECT 'use' AS kind, k.now_pack AS pack, k.id, k.start_time
                  FROM k
                  WHERE k.paired AND k.now_pack IS NOT NULL
                    AND (k.was_pack IS NULL
                         OR (k.was_pack = k.now_pack
                             AND EXISTS (SELECT 1 FROM session_ledger.booking_writes w
                                         WHERE w.purchase_id = k.now_pack AND w.kind = 'use'
                                           AND k.id = ANY (w.booking_ids)
                                           AND w.written_at > v_now - v_window)))
                  UNION ALL
                  -- stopped consuming, or a repeat of a recent stop
                  SELECT 'release', coalesce(k.was_pack, k.was_named), k.id, k.start_time
                  FROM k
                  WHERE k.paired AND k.now_pack IS NULL
                    AND (k.was_pack IS NOT NULL
                         OR (k.was_named IS NOT NULL
                             AND EXISTS (SELECT 1 FROM session_ledger.booking_writes w
                                         WHERE w.purchase_id = k.was_named AND w.kind = 'release'
                                           AND k.id = ANY (w.booking_ids)
                                           AND w.written_at > v_now - v_window)))) AS e
            WHERE v_echo
            GROUP BY e.kind, e.pack
        ){% endif %}
        INSERT INTO pgmq.q_booking_events (vt, message)
        SELECT pg_catalog.clock_timestamp(), session_ledger.booking_event(k.id, NULL, v_cause)
        FROM k
        WHERE k.touched
          AND (k.was_pack IS DISTINCT FROM k.now_pack
               OR (k.now_pack IS NOT NULL
                   AND (k.was_client IS DISTINCT FROM k.now_client OR k.was_org IS DISTINCT FROM k.now_org
{%- if amounts %}
                        -- the same pack at another amount: the ledger row converges to it
                        OR k.was_amount IS DISTINCT FROM k.now_amount
{%- endif %})));
    ELSE
        WITH k AS (
            SELECT o.id, o.start_time, CASE WHEN o.status = ANY (v_consuming){{ ' AND o.consumes' if cons }} THEN o.purchase_id END AS was_pack
            FROM {{ app.booking_rows('old_rows') }} o
        ){% if app.legacy_use %}, echoes AS (
            INSERT INTO session_ledger.booking_writes (written_at, kind, purchase_id, caused_by, booking_ids)
            SELECT v_now, 'release', k.was_pack, v_cause, array_agg(k.id ORDER BY k.start_time, k.id)
            FROM k WHERE v_echo AND k.was_pack IS NOT NULL
            GROUP BY k.was_pack
        ){% endif %}
        INSERT INTO pgmq.q_booking_events (vt, message)
        SELECT pg_catalog.clock_timestamp(), session_ledger.booking_event(k.id, NULL, v_cause)
        FROM k WHERE k.was_pack IS NOT NULL;
    END IF;
    GET DIAGNOSTICS v_sent = ROW_COUNT;

    -- A wake-up only when some listener sleeps: NOTIFY serialises commits
    -- cluster-wide, and a listener that is not asleep is looking anyway.
    IF v_sent > 0 AND EXISTS (SELECT 1 FROM session_ledger.live_listeners l WHERE l.waiting) THEN
        PERFORM session_ledger.wake_listeners();
    END IF;
    RETURN NULL;
END
$$;

-- The triggers themselves, re-created so a changed definition always takes effect.
DROP TRIGGER IF EXISTS session_ledger_enqueue_insert ON {{ app.bookings_table }};
DROP TRIGGER IF EXISTS session_ledger_enqueue_update ON {{ app.bookings_table }};
DROP TRIGGER IF EXISTS session_ledger_enqueue_delete ON {{ app.bookings_table }};
CREATE TRIGGER session_ledger_enqueue_insert
    AFTER INSERT ON {{ app.bookings_table }}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION session_ledger.enqueue_booking_changes();
CREATE TRIGGER session_ledger_enqueue_update
    AFTER UPDATE ON {{ app.bookings_table }}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION session_ledger.enqueue_booking_changes();
CREATE TRIGGER session_ledger_enqueue_delete
    AFTER DELETE ON {{ app.bookings_table }}
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION session_ledger.enqueue_booking_changes();

-- TRUNCATE goes around the statement triggers above: refused unless trusted.
DROP TRIGGER IF EXISTS session_ledger_refuse_truncate ON {{ app.bookings_table }};
DROP TRIGGER IF EXISTS session_ledger_refuse_truncate ON {{ app.packs_table }};
CREATE TRIGGER session_ledger_refuse_truncate
    BEFORE TRUNCATE ON {{ app.bookings_table }}
    FOR EACH STATEMENT EXECUTE FUNCTION session_ledger.refuse_untrusted_truncate();
CREATE TRIGGER session_ledger_refuse_truncate
    BEFORE TRUNCATE ON {{ app.packs_table }}
    FOR EACH STATEMENT EXECUTE FUNCTION session_ledger.refuse_untrusted_truncate();
