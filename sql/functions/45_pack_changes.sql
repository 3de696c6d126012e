-- Packs: an unfunded booking judged again when its pack can newly pay, and the
-- sessions the app's old code gave away kept given away.
--
-- Repeatable: `listener migrate` re-applies every file in sql/functions/ whenever one changes.
--
-- A template over the app's mapping (listener/mapping/render.py): packs are read as
-- canonical rows (`app.packs`, `app.pack_rows`), where what a pack has left is
-- sessions_total - sessions_used (a pack counted down has sessions_used 0).
{%- set k = app.keys %}

-- pack_may_pay_more took a payment status before, and no unlimited: the old signature goes.
DROP FUNCTION IF EXISTS session_ledger.pack_may_pay_more(uuid, uuid, uuid, int, int, timestamptz, text,
                                                         uuid, uuid, int, int, timestamptz, text);

-- Whether a pack changed from (o_*) to (n_*) in a way that may let it pay for a
-- booking it refused: more sessions (or, counted down, more remaining), fewer used, a
-- later expiry or none, no longer unusable (the mapping's pack.unusable_when: for the
-- coaching app a payment no longer refunded or failed), newly unlimited, another
-- owner, or a pack that was not there (o_id NULL: a new id). A change the other way
-- never takes back a session already paid.
CREATE OR REPLACE FUNCTION session_ledger.pack_may_pay_more(
    o_id {{ k.pack }}, o_org {{ k.org }}, o_client {{ k.client }}, o_total int, o_used int, o_expires timestamptz,
    o_unusable text, o_unlimited boolean,
    n_org {{ k.org }}, n_client {{ k.client }}, n_total int, n_used int, n_expires timestamptz,
    n_unusable text, n_unlimited boolean
) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o_id IS NULL
        OR (n_total IS NOT NULL AND (o_total IS NULL OR n_total OPERATOR(pg_catalog.>) o_total))
        OR n_used OPERATOR(pg_catalog.<) o_used
        OR (o_expires IS NOT NULL AND (n_expires IS NULL OR n_expires OPERATOR(pg_catalog.>) o_expires))
        OR (o_unusable IS NOT NULL AND n_unusable IS NULL)
        OR (n_unlimited AND NOT o_unlimited)
        OR o_org IS DISTINCT FROM n_org
        OR o_client IS DISTINCT FROM n_client
$$;

-- Level-triggered on packs too: when an UPDATE of the packs table may let a pack pay
-- for a booking it refused, every booking the ledger holds as unfunded on it gets an
-- event, earliest session first, carrying who changed the pack; the listener then
-- judges them by the same rules as any event. Statement-level with transition tables,
-- like the bookings trigger. The ledger's own charges (settle_packs raising
-- sessions_used, or lowering what remains) can pay for nothing more: one pass over the
-- changed rows, no lookup.
CREATE OR REPLACE FUNCTION session_ledger.enqueue_pack_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- The transition tables are small and the unfunded rows few: key lookups, never a scan of charges.
SET enable_seqscan = 'off'
SET jit = 'off'
AS $$
DECLARE
    v_packs {{ k.pack }}[];
    v_cause jsonb;
    v_sent bigint;
BEGIN
    SELECT array_agg(n.id) INTO v_packs
    FROM {{ app.pack_rows('new_rows') }} n LEFT JOIN {{ app.pack_rows('old_rows') }} o ON o.id = n.id
    WHERE session_ledger.pack_may_pay_more(o.id, o.org_id, o.client_id, o.sessions_total, o.sessions_used,
                                           o.expires_at, o.unusable, o.unlimited,
                                           n.org_id, n.client_id, n.sessions_total, n.sessions_used,
                                           n.expires_at, n.unusable, n.unlimited);
    IF v_packs IS NULL THEN
        RETURN NULL;
    END IF;
    v_cause := session_ledger.current_cause();

    INSERT INTO pgmq.q_booking_events (vt, message)
    SELECT pg_catalog.clock_timestamp(), session_ledger.booking_event(x.id, 'pack', v_cause)
    FROM (SELECT l.booking_id AS id
          FROM session_ledger.charges l
          JOIN {{ app.bookings }} b ON b.id = l.booking_id
          WHERE l.purchase_id = ANY (v_packs) AND l.state = 'unfunded'
          ORDER BY b.start_time, b.id) AS x;
    GET DIAGNOSTICS v_sent = ROW_COUNT;

    IF v_sent > 0 AND EXISTS (SELECT 1 FROM session_ledger.live_listeners l WHERE l.waiting) THEN
        PERFORM session_ledger.wake_listeners();
    END IF;
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS session_ledger_pack_changes ON {{ app.packs_table }};
CREATE TRIGGER session_ledger_pack_changes
    AFTER UPDATE ON {{ app.packs_table }}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION session_ledger.enqueue_pack_changes();

-- Record, for these packs, how many of their bookings adopted as paid (source
-- 'adoption' or 'cut-over') the app's old code never charged: of those that still
-- consume the pack, the ones its balance does not cover once the sessions the ledger
-- itself charged (source 'listener' or 'audit') are counted. A pack adopted with u
-- sessions used and n > u completed bookings records n - u. Migration 0006 recorded
-- it this way for every pack; `listener cutover` records it for the packs it settled.
CREATE OR REPLACE FUNCTION session_ledger.record_given_away(p_packs {{ k.pack }}[]) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO session_ledger.given_away AS g (purchase_id, sessions, recorded)
    SELECT p.id, x.n, x.n
    FROM {{ app.packs }} p
    CROSS JOIN LATERAL (
        SELECT greatest(count(*) FILTER (WHERE l.source IN ('adoption', 'cut-over'))
                        - greatest(p.sessions_used - count(*) FILTER (WHERE l.source IN ('listener', 'audit')), 0),
                        0)::int AS n
        FROM session_ledger.charges l
        CROSS JOIN session_ledger.config c
        JOIN {{ app.bookings }} b ON b.id = l.booking_id
        WHERE l.purchase_id = p.id AND l.state = 'paid'
          AND b.purchase_id = l.purchase_id AND b.status = ANY (c.consuming_statuses) AND b.consumes) AS x
    WHERE p.id = ANY (p_packs)
    ON CONFLICT (purchase_id) DO UPDATE
       SET sessions = excluded.sessions, recorded = excluded.recorded,
           recorded_at = pg_catalog.now(), updated_at = pg_catalog.now()
$$;

-- Sessions given away stay given away. Of these releases (booking i gives back the
-- session it holds on p_pack[i], held since p_at[i]; p_adopted[i]: its ledger row
-- says it was adopted as paid), the adopted ones first use up their pack's
-- given-away count, earliest session first, and move no balance. Returns the
-- bookings whose release the count absorbed. The packs are locked first, in id order
-- (p_lock: every pack the caller's batch may touch, so the caller's later locks keep
-- that order), then the counts: the same order as audit_charge.
CREATE OR REPLACE FUNCTION session_ledger.use_given_away(
    p_booking {{ k.booking }}[], p_pack {{ k.pack }}[], p_at timestamptz[], p_adopted boolean[], p_lock {{ k.pack }}[]
) RETURNS {{ k.booking }}[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_seqscan = 'off'
SET jit = 'off'
AS $$
DECLARE
    v_absorbed {{ k.booking }}[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM unnest(p_pack, p_adopted) AS r(pack, adopted) WHERE r.adopted AND r.pack IS NOT NULL)
       OR NOT EXISTS (SELECT 1 FROM session_ledger.given_away g
                      WHERE g.purchase_id = ANY (p_pack) AND g.sessions > 0) THEN
        RETURN '{}';
    END IF;
    PERFORM 1 FROM {{ app.packs_table }} p WHERE p.{{ app.pack_id }} = ANY (p_lock) ORDER BY p.{{ app.pack_id }} FOR NO KEY UPDATE;
    PERFORM 1 FROM session_ledger.given_away g WHERE g.purchase_id = ANY (p_pack) ORDER BY g.purchase_id FOR UPDATE;

    WITH asked AS (
        SELECT r.booking, r.pack,
               row_number() OVER (PARTITION BY r.pack ORDER BY r.at, r.booking) AS rn
        FROM unnest(p_booking, p_pack, p_at, p_adopted) AS r(booking, pack, at, adopted)
        WHERE r.adopted AND r.pack IS NOT NULL
    ), took AS (
        SELECT a.booking, a.pack FROM asked a
        JOIN session_ledger.given_away g ON g.purchase_id = a.pack
        WHERE a.rn <= g.sessions
    ), counted AS (
        UPDATE session_ledger.given_away g
           SET sessions = g.sessions - t.n, updated_at = pg_catalog.now()
          FROM (SELECT t0.pack, count(*)::int AS n FROM took t0 GROUP BY t0.pack) AS t
         WHERE g.purchase_id = t.pack
        RETURNING g.purchase_id
    )
    -- counted runs whether or not it is read: every data-modifying WITH does
    SELECT coalesce(array_agg(t.booking), '{}') INTO v_absorbed FROM took t;
    RETURN v_absorbed;
END
$$;
