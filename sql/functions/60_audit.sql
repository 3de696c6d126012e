-- `listener audit`: the sessions the app's old code gave away, and taking them.
--
-- Before the ledger, bookings the app's cron completed were never charged. Adoption
-- (migration 0001) records every booking completed by then as paid (source
-- 'adoption', or 'cut-over' for those the cut-over settled) without touching a
-- balance, so those sessions stay free and nothing else ever sees them.
--
-- Which bookings were given away (the rule, stated once, in audit_uncharged):
-- per pack, its consuming bookings whose ledger row says "paid by this pack"
-- come in two kinds. Those paid by source 'listener' or 'audit' certainly took a
-- session. Those paid by source 'adoption' or 'cut-over' may or may not have: the
-- balance left over once the certain ones are counted (sessions_used minus them)
-- covers the earliest of them by (start_time, id), and the rest were given away.
-- A booking audit could not charge is recorded as unfunded (source 'audit'), as
-- the listener records one, and is not judged again. An unfunded booking, whoever
-- judged it, is a refusal by its pack and never counts as given away.
--
-- The app's rows are read through the canonical bookings and packs (app.bookings,
-- app.packs: listener/mapping/render.py), so the rule is the same for every app. Where
-- a booking costs an amount (pack.amount_column), the balance covers amounts, earliest
-- first by running sum, as a charge does: a booking it cannot cover whole was given away.
-- A booking on an unlimited pack costs nothing, so it is never given away.
-- A pack counted down (pack.remaining) keeps no count of what it used: its balance
-- cannot say which adopted bookings the old code charged, so the balances of such packs
-- are not audited. audit_uncharged() finds nothing on them, and audit_packs() shows
-- their bookings and ledger rows with given_away, manual and to_charge NULL.
--
-- Repeatable: `listener migrate` re-applies every file in sql/functions/ whenever one changes.

-- The bookings of these packs (NULL: every pack, of organisation p_org when given)
-- whose session was never taken from the pack.
CREATE OR REPLACE FUNCTION session_ledger.audit_uncharged(p_org {{ app.keys.org }}, p_packs {{ app.keys.pack }}[])
RETURNS TABLE (booking_id {{ app.keys.booking }}, purchase_id {{ app.keys.pack }}, start_time timestamptz,
               client_id {{ app.keys.client }}, org_id {{ app.keys.org }})
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH consuming AS (
        SELECT b.id, b.start_time, b.client_id, b.org_id, b.amount,
               session_ledger.consumed_pack(b.status, CASE WHEN b.consumes THEN b.purchase_id END,
                                            c.consuming_statuses) AS pack,
               l.source AS paid_by
        FROM {{ app.bookings }} b
        CROSS JOIN session_ledger.config c
        JOIN session_ledger.charges l ON l.booking_id = b.id
        WHERE (p_packs IS NULL OR b.purchase_id = ANY (p_packs))
          AND session_ledger.consumed_pack(b.status, CASE WHEN b.consumes THEN b.purchase_id END,
                                           c.consuming_statuses)
              = session_ledger.held_pack(l.state, l.purchase_id)
    ), certain AS (
        SELECT x.pack, sum(x.amount)::int AS n
        FROM consuming x WHERE x.paid_by IN ('listener', 'audit')
        GROUP BY x.pack
    ), adopted AS (
        -- rn: what the pack's earliest adopted bookings up to this one cost together
        SELECT x.*, sum(x.amount) OVER (PARTITION BY x.pack ORDER BY x.start_time, x.id) AS rn
        FROM consuming x WHERE x.paid_by IN ('adoption', 'cut-over')
    )
    SELECT a.id, a.pack, a.start_time, a.client_id, a.org_id
    FROM adopted a
    JOIN {{ app.packs }} p ON p.id = a.pack
    LEFT JOIN certain k ON k.pack = a.pack
    WHERE (p_org IS NULL OR p.org_id = p_org)
      AND NOT p.unlimited
{%- if app.mapping.pack.remaining %}
      -- a pack counted down keeps no count of what it used: not audited (see above)
      AND false
{%- else %}
      AND a.rn > greatest(p.sessions_used - coalesce(k.n, 0), 0)
{%- endif %}
$$;

-- Per pack (of organisation p_org, or all): its consuming bookings, its
-- sessions_used, and what the ledger says, side by side. A consuming booking the
-- ledger judged unfunded by this pack (the listener or audit found it could not pay)
-- owes the pack nothing: it is neither given away nor the sign of a manual deduction.
-- given_away: the other consuming bookings beyond sessions_used; manual:
-- sessions_used beyond them (the trainer's "use 1 session"); to_charge: what
-- audit_charge would still try.
CREATE OR REPLACE FUNCTION session_ledger.audit_packs(p_org {{ app.keys.org }})
RETURNS TABLE (
    purchase_id {{ app.keys.pack }}, org_id {{ app.keys.org }}, client_id {{ app.keys.client }},
    sessions_total int, sessions_used int, expires_at timestamptz,
    consuming int, paid_adoption int, paid_cutover int, paid_listener int, paid_audit int,
    unfunded int, adjusted_charged int, adjusted_unfunded int,
    given_away int, manual int, to_charge int
)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- A few joins over every pack: JIT would compile them for 30-60 ms on every call.
SET jit = 'off'
AS $$
    WITH bk AS (
        -- owed: what the consuming bookings the pack did not refuse cost (their count
        -- where a booking costs one session)
        SELECT x.pack, count(*)::int AS n,
               coalesce(sum(x.amount) FILTER (WHERE session_ledger.judged_pack(l.state, l.purchase_id) IS DISTINCT FROM x.pack
                                                 OR session_ledger.held_pack(l.state, l.purchase_id) IS NOT NULL), 0)::int
                   AS owed
        FROM (SELECT b.id, b.amount,
                     session_ledger.consumed_pack(b.status, CASE WHEN b.consumes THEN b.purchase_id END,
                                                  c.consuming_statuses) AS pack
              FROM {{ app.bookings }} b CROSS JOIN session_ledger.config c) AS x
        LEFT JOIN session_ledger.charges l ON l.booking_id = x.id
        WHERE x.pack IS NOT NULL
        GROUP BY 1
    ), lg AS (
        SELECT l.purchase_id AS pack,
               count(*) FILTER (WHERE l.held AND l.source = 'adoption')::int AS paid_adoption,
               count(*) FILTER (WHERE l.held AND l.source = 'cut-over')::int AS paid_cutover,
               count(*) FILTER (WHERE l.held AND l.source = 'listener')::int AS paid_listener,
               count(*) FILTER (WHERE l.held AND l.source = 'audit')::int AS paid_audit,
               count(*) FILTER (WHERE l.judged AND NOT l.held)::int AS unfunded
        FROM (SELECT c.purchase_id, c.source,
                     session_ledger.held_pack(c.state, c.purchase_id) IS NOT NULL AS held,
                     session_ledger.judged_pack(c.state, c.purchase_id) IS NOT NULL AS judged
              FROM session_ledger.charges c
              WHERE c.purchase_id IS NOT NULL) AS l
        GROUP BY 1
    ), adj AS (
        SELECT a.purchase_id AS pack,
               count(*) FILTER (WHERE a.outcome = 'charged')::int AS charged,
               count(*) FILTER (WHERE a.outcome = 'unfunded')::int AS unfunded
        FROM session_ledger.adjustments a
        GROUP BY 1
    ), un AS (
        SELECT u.purchase_id AS pack, count(*)::int AS n
        FROM session_ledger.audit_uncharged(p_org, NULL) u
        GROUP BY 1
    )
    SELECT p.id, p.org_id, p.client_id, p.sessions_total, p.sessions_used, p.expires_at,
           coalesce(bk.n, 0), coalesce(lg.paid_adoption, 0), coalesce(lg.paid_cutover, 0),
           coalesce(lg.paid_listener, 0), coalesce(lg.paid_audit, 0), coalesce(lg.unfunded, 0),
           coalesce(adj.charged, 0), coalesce(adj.unfunded, 0),
{%- if app.mapping.pack.remaining %}
           -- a pack counted down keeps no count of what it used: not audited
           NULL::int, NULL::int, NULL::int
{%- else %}
           CASE WHEN p.unlimited THEN 0 ELSE greatest(coalesce(bk.owed, 0) - p.sessions_used, 0) END,
           CASE WHEN p.unlimited THEN 0 ELSE greatest(p.sessions_used - coalesce(bk.owed, 0), 0) END,
           coalesce(un.n, 0)
{%- endif %}
    FROM {{ app.packs }} p
    LEFT JOIN bk ON bk.pack = p.id
    LEFT JOIN lg ON lg.pack = p.id
    LEFT JOIN adj ON adj.pack = p.id
    LEFT JOIN un ON un.pack = p.id
    WHERE (p_org IS NULL OR p.org_id = p_org)
      AND (bk.pack IS NOT NULL OR lg.pack IS NOT NULL OR adj.pack IS NOT NULL OR p.sessions_used <> 0)
    ORDER BY p.org_id, p.id
$$;

-- Of these packs, those with a booking whose ledger row disagrees with its row: an
-- event for it is still in flight (or was dead-lettered, until replayed or reconciled).
CREATE OR REPLACE FUNCTION session_ledger.packs_in_flight(p_packs {{ app.keys.pack }}[])
RETURNS TABLE (purchase_id {{ app.keys.pack }})
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- A few packs' bookings and ledger rows: neither JIT nor parallel workers pay for
-- their start-up here (hundreds of milliseconds, and ten, a call).
SET jit = 'off'
SET max_parallel_workers_per_gather = 0
AS $$
    SELECT DISTINCT x.pack
    FROM (SELECT session_ledger.consumed_pack(b.status, CASE WHEN b.consumes THEN b.purchase_id END,
                                              c.consuming_statuses) AS now_pack,
                 session_ledger.judged_pack(l.state, l.purchase_id) AS was_pack
          FROM {{ app.bookings }} b
          CROSS JOIN session_ledger.config c
          LEFT JOIN session_ledger.charges l ON l.booking_id = b.id
          WHERE b.purchase_id = ANY (p_packs)
          UNION ALL
          SELECT session_ledger.consumed_pack(b.status, CASE WHEN b.consumes THEN b.purchase_id END,
                                              c.consuming_statuses),
                 session_ledger.judged_pack(l.state, l.purchase_id)
          FROM session_ledger.charges l
          CROSS JOIN session_ledger.config c
          LEFT JOIN {{ app.bookings }} b ON b.id = l.booking_id
          WHERE l.purchase_id = ANY (p_packs) AND l.state IN ('paid', 'unfunded')) AS s
    CROSS JOIN LATERAL (VALUES (s.now_pack), (s.was_pack)) AS x(pack)
    WHERE s.now_pack IS DISTINCT FROM s.was_pack AND x.pack = ANY (p_packs)
$$;

-- Take the given-away sessions of these packs through settle_packs, the one
-- balance change: one +1 request per uncharged booking, at its start_time, for its
-- client and organisation, so exhaustion and expiry are judged as for any session,
-- earliest first. Each booking's ledger row then says what audit did (source
-- 'audit': paid, or unfunded with the reason), and an adjustment row records it
-- with who ran it. Returns one row per booking judged.
CREATE OR REPLACE FUNCTION session_ledger.audit_charge(p_packs {{ app.keys.pack }}[])
RETURNS TABLE (
    booking_id {{ app.keys.booking }}, purchase_id {{ app.keys.pack }}, start_time timestamptz, charged boolean,
    reason text, sessions_used int
)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_seen {{ app.keys.booking }}[];
    q_booking {{ app.keys.booking }}[]; q_pack {{ app.keys.pack }}[]; q_amount int[]; q_at timestamptz[];
    q_client {{ app.keys.client }}[]; q_org {{ app.keys.org }}[];
    s_ok boolean[]; s_reason text[]; s_used int[];
BEGIN
    SELECT array_agg(u.booking_id) INTO v_seen FROM session_ledger.audit_uncharged(NULL, p_packs) u;
    IF v_seen IS NULL THEN
        RETURN;
    END IF;

    -- The listener's per-booking lock (as apply_bookings takes it, in key order),
    -- then the packs: no event moves these bookings, and no charge these packs,
    -- until this commits. Same order as apply_bookings, so the two never deadlock.
    PERFORM pg_catalog.pg_advisory_xact_lock(7391, k.key)
    FROM (SELECT DISTINCT pg_catalog.hashtext(u.id::text) AS key FROM unnest(v_seen) AS u(id) ORDER BY 1) AS k;
    PERFORM 1 FROM {{ app.packs_table }} p WHERE p.{{ app.pack_id }} = ANY (p_packs)
     ORDER BY p.{{ app.pack_id }} FOR NO KEY UPDATE;

    -- Judged again under the locks; a booking that turned up in between waits for the next run.
    -- So does every pack with a booking whose event is still in flight (its ledger row
    -- disagrees with its row): the balance a pending release will give back is not yet
    -- the balance the rule reads, and counting it would give a session back twice.
    -- One statement, so the two judgements read one snapshot.
    -- Each booking is charged what it costs (one session, or its amount).
    SELECT array_agg(u.booking_id ORDER BY u.purchase_id, u.start_time, u.booking_id),
           array_agg(u.purchase_id ORDER BY u.purchase_id, u.start_time, u.booking_id),
           array_agg(b.amount ORDER BY u.purchase_id, u.start_time, u.booking_id),
           array_agg(u.start_time ORDER BY u.purchase_id, u.start_time, u.booking_id),
           array_agg(u.client_id ORDER BY u.purchase_id, u.start_time, u.booking_id),
           array_agg(u.org_id ORDER BY u.purchase_id, u.start_time, u.booking_id)
      INTO q_booking, q_pack, q_amount, q_at, q_client, q_org
    FROM session_ledger.audit_uncharged(NULL, p_packs) u
    JOIN {{ app.bookings }} b ON b.id = u.booking_id
    WHERE u.booking_id = ANY (v_seen)
      AND NOT EXISTS (SELECT 1 FROM session_ledger.packs_in_flight(p_packs) f WHERE f.purchase_id = u.purchase_id);
    IF q_booking IS NULL THEN
        RETURN;
    END IF;

    SELECT array_agg(s.ok ORDER BY s.ord), array_agg(s.reason ORDER BY s.ord), array_agg(s.sessions_used ORDER BY s.ord)
      INTO s_ok, s_reason, s_used
    FROM session_ledger.settle_packs(q_pack, q_amount, q_at, q_client, q_org) AS s;

    UPDATE session_ledger.charges l
       SET state = CASE WHEN s.ok THEN 'paid' ELSE 'unfunded' END,
           reason = CASE WHEN s.ok THEN NULL ELSE s.reason END,
           source = 'audit', updated_at = pg_catalog.now(), client_id = s.client, org_id = s.org,
           caused_by = session_ledger.current_cause()
      FROM unnest(q_booking, s_ok, s_reason, q_client, q_org) AS s(booking, ok, reason, client, org)
     WHERE l.booking_id = s.booking;

    -- Every given-away session of these packs is now taken or recorded unfunded.
    UPDATE session_ledger.given_away g SET sessions = 0, updated_at = pg_catalog.now()
     WHERE g.purchase_id = ANY (q_pack) AND g.sessions <> 0;

    INSERT INTO session_ledger.adjustments (booking_id, purchase_id, delta, outcome, reason, made_by)
    SELECT s.booking, s.pack, CASE WHEN s.ok THEN s.amount ELSE 0 END,
           CASE WHEN s.ok THEN 'charged' ELSE 'unfunded' END,
           CASE WHEN s.ok THEN NULL ELSE s.reason END, session_ledger.caller()
    FROM unnest(q_booking, q_pack, q_amount, s_ok, s_reason) AS s(booking, pack, amount, ok, reason);

    -- sessions_used: the pack's balance once every request of this run is settled.
    RETURN QUERY
    SELECT s.booking, s.pack, s.at, s.ok, CASE WHEN s.ok THEN NULL ELSE s.reason END, s.used
    FROM unnest(q_booking, q_pack, q_at, s_ok, s_reason, s_used) WITH ORDINALITY AS s(booking, pack, at, ok, reason, used, n)
    ORDER BY s.n;
END
$$;
