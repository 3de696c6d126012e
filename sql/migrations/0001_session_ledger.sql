-- The session ledger: one deduction path from a booking's status to its pack.
--
-- bookings (statement triggers) -> pgmq queue booking_events -> listener ->
-- session_ledger.handle_batch -> apply_bookings -> use_session / release_session.
--
-- Runs inside one transaction, after PGMQ is installed, holding the migration lock.

-- Writers must not slip a completion between the adoption snapshot below and
-- the trigger that covers everything after it.
LOCK TABLE public.bookings IN SHARE ROW EXCLUSIVE MODE;

CREATE SCHEMA IF NOT EXISTS session_ledger;
REVOKE ALL ON SCHEMA session_ledger FROM PUBLIC;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'session_ledger_listener') THEN
        BEGIN
            CREATE ROLE session_ledger_listener NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database of this cluster created it a moment ago
        END;
    END IF;
END
$$;

CREATE TABLE session_ledger.config (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- a booking in one of these statuses with a purchase consumes one session
    consuming_statuses text[] NOT NULL DEFAULT '{completed}',
    -- events enqueued before this instant were already charged by the app's old code
    adopt_until timestamptz
);
INSERT INTO session_ledger.config DEFAULT VALUES;

CREATE TABLE session_ledger.charges (
    booking_id uuid PRIMARY KEY,
    purchase_id uuid,
    state text NOT NULL CHECK (state IN ('paid', 'unfunded', 'released')),
    reason text,
    source text NOT NULL DEFAULT 'listener' CHECK (source IN ('listener', 'adoption', 'cut-over')),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX charges_purchase_paid_idx ON session_ledger.charges (purchase_id) WHERE state = 'paid';
CREATE INDEX charges_unfunded_idx ON session_ledger.charges (booking_id) WHERE state = 'unfunded';

-- Heartbeats and outcome counters of listeners. Logged, so the counts in
-- `listener status` survive a crash; the per-batch update rides the batch's commit.
CREATE TABLE session_ledger.listeners (
    id uuid PRIMARY KEY,
    host text NOT NULL,
    pid int NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    last_batch_at timestamptz,
    stopped_at timestamptz,
    waiting boolean NOT NULL DEFAULT false,
    paid bigint NOT NULL DEFAULT 0,
    released bigint NOT NULL DEFAULT 0,
    moved bigint NOT NULL DEFAULT 0,
    unfunded bigint NOT NULL DEFAULT 0,
    noop bigint NOT NULL DEFAULT 0,
    dead_lettered bigint NOT NULL DEFAULT 0
);

-- The app's functions as they were, so `listener uninstall` can put them back.
CREATE TABLE session_ledger.replaced_functions (
    signature text PRIMARY KEY,
    definition text,
    replaced_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE session_ledger.config ENABLE ROW LEVEL SECURITY;
ALTER TABLE session_ledger.charges ENABLE ROW LEVEL SECURITY;
ALTER TABLE session_ledger.listeners ENABLE ROW LEVEL SECURITY;
ALTER TABLE session_ledger.replaced_functions ENABLE ROW LEVEL SECURITY;

SELECT pgmq.create('booking_events');
SELECT pgmq.create('booking_events_dlq');
-- read_events() walks the primary key, never the vt index that pgmq.create adds.
-- Without that index the claim's vt update may be HOT and every enqueue maintains
-- one index fewer: a backlog drains about a fifth faster.
DROP INDEX pgmq.q_booking_events_vt_idx;

-- A queue table churns: every message is inserted, updated when read, and deleted.
-- Vacuum it after a fixed number of dead rows rather than a fraction of its size,
-- so a large backlog does not leave readers walking dead index entries.
ALTER TABLE pgmq.q_booking_events SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_cost_delay = 0,
    autovacuum_analyze_scale_factor = 0,
    autovacuum_analyze_threshold = 10000
);

INSERT INTO session_ledger.replaced_functions (signature, definition)
SELECT s, CASE WHEN pg_catalog.to_regprocedure(s) IS NOT NULL
               THEN pg_catalog.pg_get_functiondef(pg_catalog.to_regprocedure(s)) END
FROM unnest(ARRAY['public.use_session(uuid)', 'public.release_session(uuid)']) AS s
ON CONFLICT DO NOTHING;

------------------------------------------------------------------------------
-- Who may touch a pack
------------------------------------------------------------------------------

-- Inside a SECURITY DEFINER function current_user is the owner, so the caller
-- is read from the `role` setting (SET ROLE, as Supabase's API does), falling
-- back to the login role. anon may never spend; a signed-in user only within
-- their organisations; every other role reached EXECUTE through an explicit grant.
CREATE FUNCTION session_ledger.assert_may_touch_pack(p_purchase_id uuid) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
    v_role text := coalesce(nullif(pg_catalog.current_setting('role', true), 'none'), session_user::text);
BEGIN
    IF v_role = 'anon' THEN
        RAISE EXCEPTION 'anonymous callers may not change session packs'
            USING ERRCODE = 'insufficient_privilege';
    ELSIF v_role = 'authenticated' THEN
        IF NOT EXISTS (
            SELECT 1 FROM public.client_purchases p
            WHERE p.id = p_purchase_id AND public.is_org_member(p.org_id)
        ) THEN
            RAISE EXCEPTION 'pack % is not in an organisation of the signed-in user', p_purchase_id
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
END
$$;

------------------------------------------------------------------------------
-- use_session / release_session, hardened in place
------------------------------------------------------------------------------

-- The one rule for "may this pack pay for a session held at p_at", capacity
-- aside: NULL when it may, else why not. use_session and the listener's batch
-- path both judge by it.
CREATE FUNCTION session_ledger.unfundable_reason(
    p_sessions_total int, p_expires_at timestamptz, p_payment_status text, p_at timestamptz
) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = ''
AS $$
    SELECT CASE
        WHEN p_sessions_total IS NULL THEN 'purchase is not a session pack'
        WHEN p_payment_status IN ('refunded', 'failed') THEN 'pack payment ' || p_payment_status
        WHEN p_expires_at IS NOT NULL AND p_expires_at <= p_at THEN 'pack expired before the session'
    END
$$;

-- Charge one session, judging the pack's validity at p_session_at. One
-- conditional UPDATE: the row lock and the re-checked WHERE make overdraw
-- impossible under any concurrency.
CREATE FUNCTION public.use_session(p_purchase_id uuid, p_session_at timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
    PERFORM session_ledger.assert_may_touch_pack(p_purchase_id);
    UPDATE public.client_purchases p
       SET sessions_used = p.sessions_used + 1
     WHERE p.id = p_purchase_id
       AND p.sessions_used < p.sessions_total
       AND session_ledger.unfundable_reason(p.sessions_total, p.expires_at, p.payment_status, p_session_at) IS NULL;
    RETURN FOUND;
END
$$;

-- The app's signature, unchanged for existing callers: judged at now().
CREATE OR REPLACE FUNCTION public.use_session(p_purchase_id uuid) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = ''
AS $$
    SELECT public.use_session(p_purchase_id, pg_catalog.now())
$$;

-- Give one session back. Returns the new sessions_used, or -1 when there was
-- nothing to give back (already 0, or no such pack).
CREATE OR REPLACE FUNCTION public.release_session(p_purchase_id uuid) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
    v_used int;
BEGIN
    PERFORM session_ledger.assert_may_touch_pack(p_purchase_id);
    UPDATE public.client_purchases p
       SET sessions_used = p.sessions_used - 1
     WHERE p.id = p_purchase_id AND p.sessions_used > 0
    RETURNING p.sessions_used INTO v_used;
    RETURN coalesce(v_used, -1);
END
$$;

------------------------------------------------------------------------------
-- Converge bookings to their ledger
------------------------------------------------------------------------------

-- Bring each named booking's ledger row in line with the booking's current row.
-- Level-triggered: the event only names the booking, so duplicate, late,
-- replayed or reordered events find nothing left to do.
--
-- Set-based: one UPDATE per pack per batch, by the same rule as use_session
-- (unfundable_reason, and sessions_used < sessions_total), with the packs'
-- rows locked first. When a pack has fewer sessions left than bookings asking,
-- the earliest sessions are paid for.
CREATE FUNCTION session_ledger.apply_bookings(p_booking_ids uuid[], p_enqueued_at timestamptz[])
RETURNS TABLE (booking_id uuid, outcome text, purchase_id uuid, previous_purchase_id uuid, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
-- Every table access below is a key lookup for one batch, but a small table or a
-- generic plan (which cannot see the batch's size) tempts the planner into
-- scanning tables whole, turning O(batch) work into O(table) as they grow.
SET enable_seqscan = 'off'
AS $$
DECLARE
    v_cfg session_ledger.config;
    d_id uuid[]; d_outcome text[]; d_state text[]; d_pack uuid[]; d_prev uuid[]; d_reason text[]; d_adopt boolean[];
    u_pack uuid[]; u_expected int[]; u_new int[];
    v_updated int;
BEGIN
    SELECT * INTO v_cfg FROM session_ledger.config;

    -- Serialise per booking across listeners, without touching booking rows
    -- (the cron's multi-row UPDATE locks those in physical order). Locks are
    -- taken in key order, so listeners never deadlock on each other.
    PERFORM pg_catalog.pg_advisory_xact_lock(7391, k.key)
    FROM (SELECT DISTINCT pg_catalog.hashtext(u.id::text) AS key
          FROM unnest(p_booking_ids) AS u(id) ORDER BY 1) AS k;

    -- Lock the packs this batch may touch, in id order. NO KEY UPDATE: it does
    -- not conflict with the key-share locks that foreign-key checks take.
    PERFORM 1 FROM public.client_purchases p
    WHERE p.id IN (SELECT b.purchase_id FROM public.bookings b WHERE b.id = ANY (p_booking_ids)
                   UNION
                   -- every ledger row's pack, paid or not: filtering on state would steer the
                   -- planner to the partial index over all paid rows instead of the primary key
                   SELECT l.purchase_id FROM session_ledger.charges l
                   WHERE l.booking_id = ANY (p_booking_ids))
    ORDER BY p.id
    FOR NO KEY UPDATE;

    -- Decide everything from one snapshot, taken after the locks.
    WITH ids AS (
        SELECT u.id, min(u.at) AS first_at
        FROM unnest(p_booking_ids, p_enqueued_at) AS u(id, at)
        WHERE u.id IS NOT NULL
        GROUP BY u.id
    ), cur AS (
        SELECT i.id,
               coalesce(i.first_at < v_cfg.adopt_until, false) AS adopt,
               b.start_time,
               b.org_id AS booking_org,
               CASE WHEN b.status = ANY (v_cfg.consuming_statuses) THEN b.purchase_id END AS want,
               CASE WHEN l.state = 'paid' THEN l.purchase_id END AS held,
               l.state AS l_state,
               l.purchase_id AS l_pack
        FROM ids i
        LEFT JOIN public.bookings b ON b.id = i.id
        LEFT JOIN session_ledger.charges l ON l.booking_id = i.id
    ), ops AS (
        SELECT c.*,
               c.held IS NOT NULL AND c.held IS DISTINCT FROM c.want AS do_release,
               c.want IS NOT NULL AND c.want IS DISTINCT FROM c.held
                   AND (c.l_state IS DISTINCT FROM 'unfunded' OR c.l_pack IS DISTINCT FROM c.want) AS do_charge
        FROM cur c
    ), packs AS (
        SELECT p.id, p.org_id, p.sessions_total, p.sessions_used, p.expires_at, p.payment_status
        FROM public.client_purchases p
        WHERE p.id IN (SELECT o.want FROM ops o WHERE o.do_charge AND NOT o.adopt
                       UNION SELECT o.held FROM ops o WHERE o.do_release AND NOT o.adopt)
    ), releases AS (
        SELECT o.id, o.held AS pack,
               row_number() OVER (PARTITION BY o.held ORDER BY o.start_time, o.id) AS rn
        FROM ops o WHERE o.do_release AND NOT o.adopt
    ), released AS (
        -- a pack at 0 has nothing to give back (a trainer may have reinstated by hand)
        SELECT r.id, r.pack, r.rn <= coalesce(p.sessions_used, 0) AS ok
        FROM releases r LEFT JOIN packs p ON p.id = r.pack
    ), after_release AS (
        SELECT p.*, p.sessions_used - coalesce(x.n, 0) AS used_after,
               session_ledger.unfundable_reason(p.sessions_total, NULL, p.payment_status, NULL) AS static_bad
        FROM packs p
        LEFT JOIN (SELECT r.pack, count(*) FILTER (WHERE r.ok)::int AS n FROM released r GROUP BY r.pack) x
               ON x.pack = p.id
    ), candidates AS (
        SELECT o.id, o.want, o.start_time,
               CASE
                   WHEN p.id IS NULL THEN 'pack does not exist'
                   WHEN p.org_id IS DISTINCT FROM o.booking_org THEN 'pack belongs to another organisation'
                   -- unfundable_reason() per pack where the session's time does not matter,
                   -- and its expiry test inline, rather than a function call per booking
                   WHEN p.static_bad IS NOT NULL THEN p.static_bad
                   WHEN p.expires_at IS NOT NULL AND p.expires_at <= o.start_time THEN 'pack expired before the session'
               END AS bad
        FROM ops o LEFT JOIN after_release p ON p.id = o.want
        WHERE o.do_charge AND NOT o.adopt
    ), charged AS (
        SELECT c.id, c.want,
               c.bad IS NULL AND rank_in_pack <= p.sessions_total - p.used_after AS ok,
               coalesce(c.bad, 'pack exhausted') AS why_not
        FROM (SELECT c0.*, row_number() OVER (PARTITION BY c0.want, c0.bad IS NULL
                                              ORDER BY c0.start_time, c0.id) AS rank_in_pack
              FROM candidates c0) AS c
        LEFT JOIN after_release p ON p.id = c.want
    ), pack_balances AS (
        SELECT p.id, p.sessions_used AS expected, p.used_after + coalesce(f.n, 0) AS new_used
        FROM after_release p
        LEFT JOIN (SELECT c.want, count(*)::int AS n FROM charged c WHERE c.ok GROUP BY c.want) f ON f.want = p.id
    ), decided AS (
        SELECT o.id, o.adopt, o.want, o.held, o.l_state, o.l_pack,
               o.do_charge, o.do_release, r.ok AS release_ok, ch.ok AS charge_ok, ch.why_not
        FROM ops o
        LEFT JOIN released r ON r.id = o.id
        LEFT JOIN charged ch ON ch.id = o.id
    )
    SELECT array_agg(d.id),
           array_agg(CASE
               WHEN d.adopt AND (d.do_charge OR d.do_release) THEN 'no-op'
               WHEN d.do_charge AND d.charge_ok AND d.do_release THEN 'moved'
               WHEN d.do_charge AND d.charge_ok THEN 'paid'
               WHEN d.do_charge THEN 'unfunded'
               WHEN d.do_release THEN 'released'
               ELSE 'no-op' END),
           array_agg(CASE
               WHEN d.do_charge THEN CASE WHEN d.adopt OR d.charge_ok THEN 'paid' ELSE 'unfunded' END
               WHEN d.do_release THEN 'released'
               WHEN d.want IS NULL AND d.l_state = 'unfunded' THEN 'released'
               END),
           array_agg(CASE WHEN d.do_charge THEN d.want ELSE coalesce(d.held, d.want, d.l_pack) END),
           array_agg(CASE WHEN d.do_release THEN d.held END),
           array_agg(CASE
               WHEN d.adopt AND (d.do_charge OR d.do_release) THEN 'before the cut-over: the app''s old code moved this session'
               WHEN d.do_charge AND NOT d.charge_ok THEN d.why_not
               WHEN d.do_release AND NOT d.release_ok THEN 'pack had nothing to give back'
               WHEN NOT (d.do_charge OR d.do_release) THEN
                   CASE
                       WHEN d.want IS NULL AND d.l_state = 'unfunded' THEN 'no longer consuming; nothing was charged'
                       WHEN d.want IS NULL THEN 'nothing charged and nothing to charge'
                       WHEN d.l_state = 'unfunded' THEN 'already recorded as unfunded'
                       ELSE 'already paid by this pack'
                   END
               END),
           array_agg(d.adopt),
           (SELECT array_agg(b.id ORDER BY b.id) FROM pack_balances b WHERE b.new_used <> b.expected),
           (SELECT array_agg(b.expected ORDER BY b.id) FROM pack_balances b WHERE b.new_used <> b.expected),
           (SELECT array_agg(b.new_used ORDER BY b.id) FROM pack_balances b WHERE b.new_used <> b.expected)
      INTO d_id, d_outcome, d_state, d_pack, d_prev, d_reason, d_adopt, u_pack, u_expected, u_new
    FROM decided d;

    IF d_id IS NULL THEN
        RETURN;
    END IF;

    IF u_pack IS NOT NULL THEN
        UPDATE public.client_purchases p
           SET sessions_used = u.new_used
          FROM unnest(u_pack, u_expected, u_new) AS u(pack, expected, new_used)
         WHERE p.id = u.pack AND p.sessions_used = u.expected;
        GET DIAGNOSTICS v_updated = ROW_COUNT;
        -- A pack changed after it was read (its booking moved to it after the lock
        -- was taken): retry the batch rather than write a balance from a stale row.
        IF v_updated <> array_length(u_pack, 1) THEN
            RAISE EXCEPTION 'a pack changed while its batch was applied; retrying'
                USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;

    INSERT INTO session_ledger.charges AS l (booking_id, purchase_id, state, reason, source, updated_at)
    SELECT s.id, s.pack, s.state, CASE WHEN s.state = 'unfunded' THEN s.reason END,
           CASE WHEN s.adopt THEN 'cut-over' ELSE 'listener' END, pg_catalog.now()
    FROM unnest(d_id, d_state, d_pack, d_reason, d_adopt) AS s(id, state, pack, reason, adopt)
    WHERE s.state IS NOT NULL
    ON CONFLICT ON CONSTRAINT charges_pkey DO UPDATE
       SET purchase_id = excluded.purchase_id, state = excluded.state, reason = excluded.reason,
           source = excluded.source, updated_at = excluded.updated_at;

    RETURN QUERY
    SELECT * FROM unnest(d_id, d_outcome, d_pack, d_prev, d_reason);
END
$$;

------------------------------------------------------------------------------
-- The listener's entry points
------------------------------------------------------------------------------

-- Read a batch: pgmq.read's claim (vt, read_ct, last_read_at), committed with
-- this statement so read_ct survives a crash. Written out rather than calling
-- pgmq.read, whose dynamic SQL joins the claimed ids back to the whole queue
-- table: every read then costs O(queue) instead of O(batch).
CREATE FUNCTION session_ledger.read_events(p_qty int, p_vt_seconds int)
RETURNS TABLE (msg_id bigint, read_ct int, enqueued_at timestamptz, message text)
LANGUAGE sql SECURITY DEFINER SET search_path = ''
AS $$
    UPDATE pgmq.q_booking_events m
       SET vt = pg_catalog.clock_timestamp() + pg_catalog.make_interval(secs => p_vt_seconds),
           read_ct = m.read_ct + 1,
           last_read_at = pg_catalog.clock_timestamp()
     WHERE m.msg_id = ANY (ARRAY(
               SELECT q.msg_id FROM pgmq.q_booking_events q
               WHERE q.vt <= pg_catalog.clock_timestamp()
               ORDER BY q.msg_id
               LIMIT p_qty
               FOR UPDATE SKIP LOCKED))
    RETURNING m.msg_id, m.read_ct, m.enqueued_at, m.message::text
$$;

-- Apply a batch and ack it in one transaction: the charges, the ledger rows,
-- the archive of handled messages, the dead letters and the heartbeat commit together.
CREATE FUNCTION session_ledger.handle_batch(
    p_listener uuid,
    p_msg_ids bigint[],
    p_booking_ids uuid[],
    p_enqueued_at timestamptz[],
    p_dead_msg_ids bigint[],
    p_dead_reasons text[],
    p_waiting boolean
)
RETURNS TABLE (booking_id uuid, outcome text, purchase_id uuid, previous_purchase_id uuid, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
    o_booking uuid[]; o_outcome text[]; o_pack uuid[]; o_prev uuid[]; o_reason text[];
    v_dead jsonb[];
    v_dead_reasons text[];
BEGIN
    -- Delete first, so two listeners holding the same expired message cannot
    -- both dead-letter it.
    WITH gone AS (
        DELETE FROM pgmq.q_booking_events q
        USING unnest(p_dead_msg_ids, p_dead_reasons) AS d(msg_id, reason)
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
           array_agg(g.reason ORDER BY g.msg_id)
      INTO v_dead, v_dead_reasons
    FROM gone g;
    IF v_dead IS NOT NULL THEN
        PERFORM pgmq.send_batch('booking_events_dlq', v_dead);
    END IF;

    SELECT array_agg(a.booking_id), array_agg(a.outcome), array_agg(a.purchase_id),
           array_agg(a.previous_purchase_id), array_agg(a.reason)
      INTO o_booking, o_outcome, o_pack, o_prev, o_reason
    FROM session_ledger.apply_bookings(p_booking_ids, p_enqueued_at) AS a;

    IF coalesce(array_length(p_msg_ids, 1), 0) > 0 THEN
        PERFORM pgmq.archive('booking_events', p_msg_ids);
    END IF;

    UPDATE session_ledger.listeners l
       SET heartbeat_at = pg_catalog.now(),
           last_batch_at = pg_catalog.now(),
           waiting = p_waiting,
           paid = l.paid + (SELECT count(*) FROM unnest(o_outcome) x WHERE x = 'paid'),
           released = l.released + (SELECT count(*) FROM unnest(o_outcome) x WHERE x = 'released'),
           moved = l.moved + (SELECT count(*) FROM unnest(o_outcome) x WHERE x = 'moved'),
           unfunded = l.unfunded + (SELECT count(*) FROM unnest(o_outcome) x WHERE x = 'unfunded'),
           noop = l.noop + (SELECT count(*) FROM unnest(o_outcome) x WHERE x = 'no-op')
                  + coalesce(array_length(p_msg_ids, 1), 0) - coalesce(array_length(o_outcome, 1), 0),
           dead_lettered = l.dead_lettered + coalesce(array_length(v_dead, 1), 0)
     WHERE l.id = p_listener;

    RETURN QUERY
    SELECT * FROM unnest(o_booking, o_outcome, o_pack, o_prev, o_reason)
    UNION ALL
    SELECT NULL::uuid, 'dead-lettered', NULL::uuid, NULL::uuid, r FROM unnest(v_dead_reasons) AS r;
END
$$;

-- Register a running listener, or refresh its heartbeat.
CREATE FUNCTION session_ledger.heartbeat(p_listener uuid, p_host text, p_pid int, p_waiting boolean)
RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = ''
AS $$
    INSERT INTO session_ledger.listeners AS l (id, host, pid, waiting)
    VALUES (p_listener, p_host, p_pid, p_waiting)
    ON CONFLICT (id) DO UPDATE
       SET heartbeat_at = pg_catalog.now(), waiting = excluded.waiting, stopped_at = NULL
$$;

-- Mark a listener as stopped cleanly.
CREATE FUNCTION session_ledger.stop_listener(p_listener uuid) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = ''
AS $$
    UPDATE session_ledger.listeners
       SET stopped_at = pg_catalog.now(), waiting = false, heartbeat_at = pg_catalog.now()
     WHERE id = p_listener
$$;

-- The cron path: complete every confirmed booking that has ended, and nothing else.
CREATE FUNCTION session_ledger.complete_past_bookings() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
    v_n bigint;
BEGIN
    UPDATE public.bookings b SET status = 'completed'
     WHERE b.status = 'confirmed' AND b.end_time < pg_catalog.now();
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END
$$;

-- Queue and dead-letter depth, cheap enough for every metrics scrape.
CREATE FUNCTION session_ledger.queue_depths()
RETURNS TABLE (queue_depth bigint, queue_visible bigint, oldest_event_age_s double precision, dead_letter_depth bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
    SELECT (SELECT count(*) FROM pgmq.q_booking_events),
           (SELECT count(*) FROM pgmq.q_booking_events WHERE vt <= pg_catalog.clock_timestamp()),
           (SELECT extract(epoch FROM pg_catalog.clock_timestamp() - min(enqueued_at))::double precision
              FROM pgmq.q_booking_events),
           (SELECT count(*) FROM pgmq.q_booking_events_dlq)
$$;

-- Everything `listener status` reports, in one call the listener's role may make.
CREATE FUNCTION session_ledger.status() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
    WITH cfg AS (SELECT c.consuming_statuses FROM session_ledger.config c),
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
        SELECT count(*) AS n
        FROM public.bookings b
        FULL JOIN session_ledger.charges l ON l.booking_id = b.id
        CROSS JOIN cfg
        WHERE (CASE WHEN b.status = ANY (cfg.consuming_statuses) THEN b.purchase_id END)
              IS DISTINCT FROM (CASE WHEN l.state IN ('paid', 'unfunded') THEN l.purchase_id END)
    ),
    live AS (
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'id', x.id, 'host', x.host, 'pid', x.pid, 'started_at', x.started_at,
                   'heartbeat_at', x.heartbeat_at, 'last_batch_at', x.last_batch_at,
                   'heartbeat_age_s', round(extract(epoch FROM pg_catalog.now() - x.heartbeat_at)::numeric, 1),
                   'waiting', x.waiting,
                   'events_handled', x.paid + x.released + x.moved + x.unfunded + x.noop + x.dead_lettered
               ) ORDER BY x.started_at), '[]') AS listeners
        FROM session_ledger.listeners x
        WHERE x.stopped_at IS NULL AND x.heartbeat_at > pg_catalog.now() - interval '10 minutes'
    ),
    outcomes AS (
        SELECT jsonb_build_object(
                   'paid', coalesce(sum(x.paid), 0), 'released', coalesce(sum(x.released), 0),
                   'moved', coalesce(sum(x.moved), 0), 'unfunded', coalesce(sum(x.unfunded), 0),
                   'no-op', coalesce(sum(x.noop), 0), 'dead-lettered', coalesce(sum(x.dead_lettered), 0)
               ) AS counts
        FROM session_ledger.listeners x
    ),
    migs AS (
        SELECT coalesce(jsonb_agg(jsonb_build_object('version', m.version, 'name', m.name, 'applied_at', m.applied_at)
                        ORDER BY m.version), '[]') AS applied
        FROM session_ledger.migrations m
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
        'outcomes', outcomes.counts,
        'migrations', migs.applied
    )
    FROM q, dlq, dlq_reasons, ledger, unfunded_reasons, out_of_sync, live, outcomes, migs, cfg
$$;

------------------------------------------------------------------------------
-- Operators: replay, reconcile, prune
------------------------------------------------------------------------------

-- What converging each booking would do now, without doing it: for --dry-run.
CREATE FUNCTION session_ledger.plan_bookings(p_booking_ids uuid[])
RETURNS TABLE (booking_id uuid, action text, purchase_id uuid, previous_purchase_id uuid, detail text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
    SELECT s.id,
           CASE
               WHEN s.want IS NOT NULL AND s.held IS NOT NULL AND s.want <> s.held THEN 'move'
               WHEN s.want IS NOT NULL AND s.held IS NULL
                    AND (s.l_state IS DISTINCT FROM 'unfunded' OR s.l_pack IS DISTINCT FROM s.want) THEN 'charge'
               WHEN s.want IS NULL AND s.held IS NOT NULL THEN 'release'
               ELSE 'none'
           END,
           coalesce(s.want, s.held),
           CASE WHEN s.held IS DISTINCT FROM s.want THEN s.held END,
           CASE
               WHEN NOT s.booking_exists AND s.held IS NULL THEN 'booking no longer exists; nothing held'
               WHEN NOT s.booking_exists THEN 'booking no longer exists; its session is held'
               WHEN s.want IS NOT NULL AND s.held = s.want THEN 'already paid by this pack'
               WHEN s.want IS NOT NULL AND s.l_state = 'unfunded' AND s.l_pack = s.want THEN 'recorded as unfunded'
               WHEN s.want IS NULL AND s.held IS NULL THEN 'not consuming and nothing held'
           END
    FROM (
        SELECT i.id,
               b.id IS NOT NULL AS booking_exists,
               CASE WHEN b.status = ANY (c.consuming_statuses) THEN b.purchase_id END AS want,
               CASE WHEN l.state = 'paid' THEN l.purchase_id END AS held,
               l.state AS l_state,
               l.purchase_id AS l_pack
        FROM (SELECT DISTINCT u.id FROM unnest(p_booking_ids) AS u(id) WHERE u.id IS NOT NULL) AS i
        CROSS JOIN session_ledger.config c
        LEFT JOIN public.bookings b ON b.id = i.id
        LEFT JOIN session_ledger.charges l ON l.booking_id = i.id
    ) AS s
$$;

-- Put events for these bookings on the queue, as the trigger would.
CREATE FUNCTION session_ledger.enqueue_bookings(p_booking_ids uuid[], p_source text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
    v_msgs jsonb[];
BEGIN
    SELECT array_agg(pg_catalog.jsonb_build_object(
               'type', 'booking.changed', 'v', 1, 'booking_id', u.id, 'source', p_source) ORDER BY u.id)
      INTO v_msgs
    FROM (SELECT DISTINCT x AS id FROM unnest(p_booking_ids) AS x WHERE x IS NOT NULL) AS u;
    IF v_msgs IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM pgmq.send_batch('booking_events', v_msgs);
    PERFORM pg_catalog.pg_notify('booking_events', '');
    RETURN array_length(v_msgs, 1);
END
$$;

-- Move dead letters back onto the queue, original payload unwrapped; the dead
-- letters themselves are archived, so their reasons stay on record.
CREATE FUNCTION session_ledger.redrive_dead_letters(p_msg_ids bigint[]) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
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
    PERFORM pgmq.send_batch('booking_events', v_msgs);
    PERFORM pgmq.archive('booking_events_dlq', v_ids);
    PERFORM pg_catalog.pg_notify('booking_events', '');
    RETURN array_length(v_ids, 1);
END
$$;

------------------------------------------------------------------------------
-- The trigger: enqueue in the writer's own transaction
------------------------------------------------------------------------------

-- Statement-level with transition tables: a bulk UPDATE of thousands of rows
-- enqueues one batch. SECURITY DEFINER because the writer may be a signed-in
-- user with no rights on the queue. Only changes of "which pack this booking
-- consumes" matter; an UPDATE that changes none of them enqueues nothing.
CREATE FUNCTION session_ledger.enqueue_booking_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
    v_consuming text[];
    v_sent bigint;
BEGIN
    SELECT c.consuming_statuses INTO v_consuming FROM session_ledger.config c;

    -- A static INSERT into the queue table (what pgmq.send_batch does, minus its
    -- dynamic SQL, which is planned anew on every call). Nothing to send, nothing
    -- inserted: an UPDATE that changes nothing relevant cannot fail.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pgmq.q_booking_events (vt, message)
        SELECT pg_catalog.clock_timestamp(),
               pg_catalog.jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', n.id)
        FROM new_rows n
        WHERE n.status = ANY (v_consuming) AND n.purchase_id IS NOT NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO pgmq.q_booking_events (vt, message)
        SELECT pg_catalog.clock_timestamp(),
               pg_catalog.jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', coalesce(n.id, o.id))
        FROM new_rows n
        FULL JOIN old_rows o ON o.id = n.id
        WHERE (CASE WHEN n.status = ANY (v_consuming) THEN n.purchase_id END)
              IS DISTINCT FROM (CASE WHEN o.status = ANY (v_consuming) THEN o.purchase_id END);
    ELSE
        INSERT INTO pgmq.q_booking_events (vt, message)
        SELECT pg_catalog.clock_timestamp(),
               pg_catalog.jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', o.id)
        FROM old_rows o
        WHERE o.status = ANY (v_consuming) AND o.purchase_id IS NOT NULL;
    END IF;
    GET DIAGNOSTICS v_sent = ROW_COUNT;

    -- A wake-up only when some listener sleeps: NOTIFY serialises commits
    -- cluster-wide, and a listener that is not asleep is looking anyway.
    IF v_sent > 0 AND EXISTS (
        SELECT 1 FROM session_ledger.listeners l
        WHERE l.waiting AND l.stopped_at IS NULL
          AND l.heartbeat_at > pg_catalog.now() - interval '2 minutes'
    ) THEN
        PERFORM pg_catalog.pg_notify('booking_events', '');
    END IF;
    RETURN NULL;
END
$$;

-- Adoption: bookings already consuming were paid by the app's old code. Record
-- them as paid without touching any balance, so a later cancel gives back.
INSERT INTO session_ledger.charges (booking_id, purchase_id, state, source, reason)
SELECT b.id, b.purchase_id, 'paid', 'adoption', NULL
FROM public.bookings b
WHERE b.status = 'completed' AND b.purchase_id IS NOT NULL
ON CONFLICT DO NOTHING;

CREATE TRIGGER session_ledger_enqueue_insert
    AFTER INSERT ON public.bookings
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION session_ledger.enqueue_booking_changes();
CREATE TRIGGER session_ledger_enqueue_update
    AFTER UPDATE ON public.bookings
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION session_ledger.enqueue_booking_changes();
CREATE TRIGGER session_ledger_enqueue_delete
    AFTER DELETE ON public.bookings
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION session_ledger.enqueue_booking_changes();

------------------------------------------------------------------------------
-- Privileges
------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA session_ledger FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA session_ledger FROM PUBLIC;
REVOKE ALL ON pgmq.q_booking_events, pgmq.a_booking_events,
              pgmq.q_booking_events_dlq, pgmq.a_booking_events_dlq FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.use_session(uuid), public.use_session(uuid, timestamptz),
                           public.release_session(uuid) FROM PUBLIC;

GRANT USAGE ON SCHEMA session_ledger TO session_ledger_listener;
GRANT EXECUTE ON FUNCTION
    session_ledger.read_events(int, int),
    session_ledger.handle_batch(uuid, bigint[], uuid[], timestamptz[], bigint[], text[], boolean),
    session_ledger.heartbeat(uuid, text, int, boolean),
    session_ledger.stop_listener(uuid),
    session_ledger.status(),
    session_ledger.queue_depths(),
    session_ledger.complete_past_bookings()
TO session_ledger_listener;
GRANT SELECT ON session_ledger.migrations TO session_ledger_listener;

-- Supabase's API roles, where they exist: the browser keeps use_session and
-- release_session (judged at now(), within its organisations); nobody on the
-- API side reaches the queues, the ledger, or the listener's functions.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r);
        EXECUTE format('REVOKE ALL ON SCHEMA session_ledger FROM %I', r);
        EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA session_ledger FROM %I', r);
        EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA session_ledger FROM %I', r);
        EXECUTE format('REVOKE ALL ON pgmq.q_booking_events, pgmq.a_booking_events, '
                       'pgmq.q_booking_events_dlq, pgmq.a_booking_events_dlq FROM %I', r);
        EXECUTE format('REVOKE ALL ON FUNCTION public.use_session(uuid), public.use_session(uuid, timestamptz), '
                       'public.release_session(uuid) FROM %I', r);
    END LOOP;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        GRANT EXECUTE ON FUNCTION public.use_session(uuid), public.release_session(uuid) TO authenticated;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION public.use_session(uuid), public.release_session(uuid) TO service_role;
        GRANT USAGE ON SCHEMA session_ledger TO service_role;
        GRANT EXECUTE ON FUNCTION session_ledger.complete_past_bookings() TO service_role;
    END IF;
END
$$;
