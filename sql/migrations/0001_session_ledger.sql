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
       AND p.sessions_total IS NOT NULL
       AND p.sessions_used < p.sessions_total
       AND (p.expires_at IS NULL OR p.expires_at > p_session_at)
       AND p.payment_status IS DISTINCT FROM 'refunded'
       AND p.payment_status IS DISTINCT FROM 'failed';
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

-- Why a pack could not pay for a session held at p_at.
CREATE FUNCTION session_ledger.unfunded_reason(p_purchase_id uuid, p_at timestamptz) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
AS $$
    SELECT CASE
        WHEN p.id IS NULL THEN 'pack does not exist'
        WHEN p.sessions_total IS NULL THEN 'purchase is not a session pack'
        WHEN p.payment_status IN ('refunded', 'failed') THEN 'pack payment ' || p.payment_status
        WHEN p.expires_at IS NOT NULL AND p.expires_at <= p_at THEN 'pack expired before the session'
        WHEN p.sessions_used >= p.sessions_total THEN 'pack exhausted'
        ELSE 'pack could not be charged'
    END
    FROM (SELECT 1) AS one
    LEFT JOIN public.client_purchases p ON p.id = p_purchase_id
$$;

------------------------------------------------------------------------------
-- Converge bookings to their ledger
------------------------------------------------------------------------------

-- Bring each named booking's ledger row in line with the booking's current row.
-- Level-triggered: the event only names the booking, so duplicate, late,
-- replayed or reordered events find nothing left to do.
CREATE FUNCTION session_ledger.apply_bookings(p_booking_ids uuid[], p_enqueued_at timestamptz[])
RETURNS TABLE (booking_id uuid, outcome text, purchase_id uuid, previous_purchase_id uuid, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
    v_cfg session_ledger.config;
    b_id uuid[]; b_want uuid[]; b_held uuid[]; b_lstate text[]; b_lpack uuid[];
    b_adopt boolean[]; b_start timestamptz[]; b_bad text[];
    r_id uuid[] := '{}'; r_done boolean[] := '{}';
    c_id uuid[] := '{}'; c_ok boolean[] := '{}'; c_reason text[] := '{}';
    op record;
    v_ok boolean;
    v_reason text;
BEGIN
    SELECT * INTO v_cfg FROM session_ledger.config;

    -- Serialise per booking across listeners, without touching booking rows
    -- (the cron's multi-row UPDATE locks those in physical order). Locks are
    -- taken in key order, so listeners never deadlock on each other.
    PERFORM pg_catalog.pg_advisory_xact_lock(7391, k.key)
    FROM (SELECT DISTINCT pg_catalog.hashtext(u.id::text) AS key
          FROM unnest(p_booking_ids) AS u(id) ORDER BY 1) AS k;

    -- One snapshot, taken after the locks: the state every decision below uses.
    SELECT array_agg(c.id), array_agg(c.want), array_agg(c.held), array_agg(c.l_state),
           array_agg(c.l_pack), array_agg(c.adopt), array_agg(c.start_time), array_agg(c.bad)
      INTO b_id, b_want, b_held, b_lstate, b_lpack, b_adopt, b_start, b_bad
    FROM (
        SELECT i.id,
               CASE WHEN b.status = ANY (v_cfg.consuming_statuses) THEN b.purchase_id END AS want,
               CASE WHEN l.state = 'paid' THEN l.purchase_id END AS held,
               l.state AS l_state,
               l.purchase_id AS l_pack,
               coalesce(i.first_at < v_cfg.adopt_until, false) AS adopt,
               b.start_time,
               CASE
                   WHEN b.purchase_id IS NOT NULL AND p.id IS NULL THEN 'pack does not exist'
                   WHEN p.org_id IS DISTINCT FROM b.org_id THEN 'pack belongs to another organisation'
               END AS bad
        FROM (SELECT u.id, min(u.at) AS first_at
              FROM unnest(p_booking_ids, p_enqueued_at) AS u(id, at)
              WHERE u.id IS NOT NULL
              GROUP BY u.id) AS i
        LEFT JOIN public.bookings b ON b.id = i.id
        LEFT JOIN public.client_purchases p ON p.id = b.purchase_id
        LEFT JOIN session_ledger.charges l ON l.booking_id = i.id
    ) AS c;

    IF b_id IS NULL THEN
        RETURN;
    END IF;

    -- Releases before charges within a pack, so a session freed in this batch
    -- can pay for another; packs in id order, so listeners never deadlock on them.
    FOR op IN
        SELECT s.id, s.start_time, s.adopt, s.bad, o.kind, o.pack
        FROM unnest(b_id, b_want, b_held, b_lstate, b_lpack, b_adopt, b_start, b_bad)
             AS s(id, want, held, l_state, l_pack, adopt, start_time, bad)
        CROSS JOIN LATERAL (VALUES (0, s.held), (1, s.want)) AS o(kind, pack)
        WHERE (o.kind = 0 AND s.held IS NOT NULL AND s.held IS DISTINCT FROM s.want)
           OR (o.kind = 1 AND s.want IS NOT NULL AND s.want IS DISTINCT FROM s.held
               AND (s.l_state IS DISTINCT FROM 'unfunded' OR s.l_pack IS DISTINCT FROM s.want))
        ORDER BY o.pack, o.kind, s.start_time, s.id
    LOOP
        IF op.kind = 0 THEN
            r_id := r_id || op.id;
            r_done := r_done || (op.adopt OR public.release_session(op.pack) >= 0);
        ELSE
            v_reason := NULL;
            IF op.adopt THEN
                v_ok := true;
            ELSIF op.bad IS NOT NULL THEN
                v_ok := false;
                v_reason := op.bad;
            ELSE
                v_ok := public.use_session(op.pack, op.start_time);
                IF NOT v_ok THEN
                    v_reason := session_ledger.unfunded_reason(op.pack, op.start_time);
                END IF;
            END IF;
            c_id := c_id || op.id;
            c_ok := c_ok || v_ok;
            c_reason := c_reason || v_reason;
        END IF;
    END LOOP;

    RETURN QUERY
    WITH base AS (
        SELECT * FROM unnest(b_id, b_want, b_held, b_lstate, b_lpack, b_adopt)
            AS s(id, want, held, l_state, l_pack, adopt)
    ), res AS (
        SELECT s.id, s.want, s.held, s.l_state, s.l_pack, s.adopt,
               r.done AS released, c.ok AS charged, c.reason AS charge_reason,
               r.id IS NOT NULL AS has_release, c.id IS NOT NULL AS has_charge
        FROM base s
        LEFT JOIN unnest(r_id, r_done) AS r(id, done) ON r.id = s.id
        LEFT JOIN unnest(c_id, c_ok, c_reason) AS c(id, ok, reason) ON c.id = s.id
    ), decided AS (
        SELECT res.*,
               CASE
                   WHEN res.adopt AND (res.has_charge OR res.has_release) THEN 'no-op'
                   WHEN res.has_charge AND res.charged AND res.has_release THEN 'moved'
                   WHEN res.has_charge AND res.charged THEN 'paid'
                   WHEN res.has_charge THEN 'unfunded'
                   WHEN res.has_release THEN 'released'
                   ELSE 'no-op'
               END AS outcome,
               CASE
                   WHEN res.has_charge THEN CASE WHEN res.charged THEN 'paid' ELSE 'unfunded' END
                   WHEN res.has_release THEN 'released'
                   WHEN res.want IS NULL AND res.l_state = 'unfunded' THEN 'released'
               END AS new_state,
               CASE
                   WHEN res.adopt AND (res.has_charge OR res.has_release) THEN 'before the cut-over: the app''s old code moved this session'
                   WHEN res.has_charge AND NOT res.charged THEN res.charge_reason
                   WHEN res.has_release AND NOT res.released THEN 'pack had nothing to give back'
                   WHEN NOT (res.has_charge OR res.has_release) THEN
                       CASE
                           WHEN res.want IS NULL AND res.l_state = 'unfunded' THEN 'no longer consuming; nothing was charged'
                           WHEN res.want IS NULL THEN 'nothing charged and nothing to charge'
                           WHEN res.l_state = 'unfunded' THEN 'already recorded as unfunded'
                           ELSE 'already paid by this pack'
                       END
               END AS reason
        FROM res
    ), written AS (
        INSERT INTO session_ledger.charges AS l (booking_id, purchase_id, state, reason, source, updated_at)
        SELECT d.id,
               CASE WHEN d.has_charge THEN d.want ELSE d.l_pack END,
               d.new_state,
               CASE WHEN d.new_state = 'unfunded' THEN d.reason END,
               CASE WHEN d.adopt THEN 'cut-over' ELSE 'listener' END,
               pg_catalog.now()
        FROM decided d
        WHERE d.new_state IS NOT NULL
        ON CONFLICT ON CONSTRAINT charges_pkey DO UPDATE
           SET purchase_id = excluded.purchase_id, state = excluded.state, reason = excluded.reason,
               source = excluded.source, updated_at = excluded.updated_at
    )
    SELECT d.id, d.outcome,
           CASE WHEN d.has_charge THEN d.want ELSE coalesce(d.held, d.want, d.l_pack) END,
           CASE WHEN d.has_release THEN d.held END,
           d.reason
    FROM decided d;
END
$$;

------------------------------------------------------------------------------
-- The listener's entry points
------------------------------------------------------------------------------

-- Read a batch. pgmq.read commits with this statement, so read_ct survives a crash.
CREATE FUNCTION session_ledger.read_events(p_qty int, p_vt_seconds int)
RETURNS TABLE (msg_id bigint, read_ct int, enqueued_at timestamptz, message text)
LANGUAGE sql SECURITY DEFINER SET search_path = ''
AS $$
    SELECT m.msg_id, m.read_ct, m.enqueued_at, m.message::text
    FROM pgmq.read('booking_events', p_vt_seconds, p_qty) AS m
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
    v_msgs jsonb[];
BEGIN
    SELECT c.consuming_statuses INTO v_consuming FROM session_ledger.config c;

    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(pg_catalog.jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', n.id))
          INTO v_msgs
        FROM new_rows n
        WHERE n.status = ANY (v_consuming) AND n.purchase_id IS NOT NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT array_agg(pg_catalog.jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', coalesce(n.id, o.id)))
          INTO v_msgs
        FROM new_rows n
        FULL JOIN old_rows o ON o.id = n.id
        WHERE (CASE WHEN n.status = ANY (v_consuming) THEN n.purchase_id END)
              IS DISTINCT FROM (CASE WHEN o.status = ANY (v_consuming) THEN o.purchase_id END);
    ELSE
        SELECT array_agg(pg_catalog.jsonb_build_object('type', 'booking.changed', 'v', 1, 'booking_id', o.id))
          INTO v_msgs
        FROM old_rows o
        WHERE o.status = ANY (v_consuming) AND o.purchase_id IS NOT NULL;
    END IF;

    IF v_msgs IS NOT NULL THEN
        PERFORM pgmq.send_batch('booking_events', v_msgs);
        -- A wake-up only when some listener is idle: NOTIFY serialises commits
        -- cluster-wide, and a busy listener is draining anyway.
        IF EXISTS (SELECT 1 FROM session_ledger.listeners l
                   WHERE l.waiting AND l.stopped_at IS NULL
                     AND l.heartbeat_at > pg_catalog.now() - interval '2 minutes') THEN
            PERFORM pg_catalog.pg_notify('booking_events', '');
        END IF;
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
