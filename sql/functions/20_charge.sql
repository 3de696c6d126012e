-- The charge: one implementation of a balance change, which the batch path and
-- the app's old deduction functions (where the mapping names them) all go through.
--
-- Written in canonical terms (listener/mapping/render.py): bookings and packs are
-- read through app.bookings / app.packs, whatever the app calls their columns, and
-- a balance is moved by app.pack_balance_moved, whether the pack counts what it
-- used or what remains. A pack counted down reads as total = what remains, used = 0.
{%- set bk = app.keys.booking %}
{%- set pk = app.keys.pack %}
{%- set ck = app.keys.client %}
{%- set gk = app.keys.org %}

-- Settle requests against packs, set-based. Request i asks pack p_pack[i] to give
-- back p_amount[i] (p_delta[i] = -1: what a booking's ledger row recorded it paid)
-- or to pay p_amount[i] (+1) for a session held at p_at[i], for a booking of client
-- p_client[i] in organisation p_org[i] (NULL: the pack's own, as for the trainer's
-- manual buttons); p_amount NULL is 1 each. The packs are locked in id order;
-- releases are applied first, then charges, earliest session first: a charge is
-- paid whole, while the running sum of what the pack pays stays within what it has
-- left, or not at all, and by unfundable_reason(). An unlimited pack pays, and
-- gives back, 0; so is a booking that costs 0 paid whatever the pack has left. One
-- UPDATE per pack. Returns, per request (by position), whether it was done, why
-- not, the pack's sessions_used afterwards (of a pack counted down: what remains),
-- and the amount it moved.
CREATE OR REPLACE FUNCTION session_ledger.settle_packs(
    p_pack {{ pk }}[], p_delta int[], p_at timestamptz[], p_client {{ ck }}[], p_org {{ gk }}[],
    p_amount int[] DEFAULT NULL
)
RETURNS TABLE (ord int, ok boolean, reason text, sessions_used int, amount int)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Every access below is a key lookup for one batch; a generic plan cannot see the
-- batch's size and would otherwise be tempted into scanning whole tables. With seq
-- scans off even a one-row read is costed far above jit_above_cost: without jit off,
-- a server built with LLVM compiles every statement here, about 70 ms a call.
SET enable_seqscan = 'off'
SET jit = 'off'
AS $$
DECLARE
    v_shared boolean;
    r_ord int[]; r_ok boolean[]; r_reason text[]; r_used int[]; r_amount int[];
    u_pack {{ pk }}[]; u_used int[]; u_total int[]; u_delta int[];
    v_updated int;
BEGIN
    SELECT c.allow_shared_packs INTO v_shared FROM session_ledger.config c;
    -- The UPDATE below runs as the owner and fires every trigger on the packs.
    PERFORM session_ledger.assert_no_foreign_triggers({{ app.lit(app.packs_table) }}::regclass);

    -- NO KEY UPDATE: it does not conflict with the key-share locks of foreign-key checks.
    PERFORM 1 FROM {{ app.packs_table }} p
    WHERE p.{{ app.pack_id }} = ANY (p_pack)
    ORDER BY p.{{ app.pack_id }}
    FOR NO KEY UPDATE;

    WITH req AS (
        SELECT u.ord::int AS ord, u.pack, u.delta, u.at, u.client, u.org, coalesce(u.amount, 1) AS amount
        FROM unnest(p_pack, p_delta, p_at, p_client, p_org, p_amount)
             WITH ORDINALITY AS u(pack, delta, at, client, org, amount, ord)
    ), packs AS (
        SELECT p.id, p.org_id, p.client_id, p.sessions_total, p.sessions_used, p.expires_at, p.unusable, p.unlimited
        FROM {{ app.packs }} p
        WHERE p.id IN (SELECT r.pack FROM req r)
    ), releases AS (
        SELECT r.ord, r.pack, x.give,
               sum(x.give) OVER (PARTITION BY r.pack ORDER BY r.at, r.ord ROWS UNBOUNDED PRECEDING) AS give_upto
        FROM req r
        LEFT JOIN packs p ON p.id = r.pack
        CROSS JOIN LATERAL (SELECT CASE WHEN p.unlimited THEN 0 ELSE r.amount END AS give) AS x
        WHERE r.delta < 0
    ), released AS (
{%- if app.mapping.pack.remaining %}
        -- a pack counted down keeps no count of what it used, so nothing bounds what
        -- comes back: each release gives back what its booking's ledger row paid
        SELECT r.ord, r.pack, r.give, p.id IS NOT NULL AS ok
{%- else %}
        -- a pack at 0 has nothing to give back (a trainer may have reinstated by hand)
        SELECT r.ord, r.pack, r.give, p.id IS NOT NULL AND r.give_upto <= p.sessions_used AS ok
{%- endif %}
        FROM releases r LEFT JOIN packs p ON p.id = r.pack
    ), after_release AS (
        SELECT p.*, p.sessions_used - coalesce(x.n, 0) AS used_after
        FROM packs p
        LEFT JOIN (SELECT r.pack, sum(r.give) FILTER (WHERE r.ok)::int AS n FROM released r GROUP BY r.pack) x
               ON x.pack = p.id
    ), candidates AS (
        SELECT r.ord, r.pack, r.at, CASE WHEN p.unlimited THEN 0 ELSE r.amount END AS cost,
               CASE
                   WHEN p.id IS NULL THEN 'pack does not exist'
{%- if app.mapping.pack.org %}
                   WHEN r.org IS NOT NULL AND p.org_id IS DISTINCT FROM r.org THEN 'pack belongs to another organisation'
{%- endif %}
{%- if app.mapping.pack.client %}
                   WHEN r.client IS NOT NULL AND NOT v_shared AND p.client_id IS DISTINCT FROM r.client
                       THEN 'pack belongs to another client'
{%- endif %}
                   -- an unlimited pack needs no count of sessions to pay
                   ELSE session_ledger.unfundable_reason(
                       coalesce(p.sessions_total, CASE WHEN p.unlimited THEN 0 END), p.expires_at, p.unusable, r.at)
               END AS bad
        FROM req r LEFT JOIN after_release p ON p.id = r.pack
        WHERE r.delta > 0
    ), charged AS (
        SELECT c.ord, c.pack, c.cost,
               c.bad IS NULL AND (c.cost = 0 OR c.cost_upto <= p.sessions_total - p.used_after) AS ok,
               coalesce(c.bad, 'pack exhausted') AS why_not
        FROM (SELECT c0.*,
                     sum(c0.cost) OVER (PARTITION BY c0.pack, c0.bad IS NULL ORDER BY c0.at, c0.ord ROWS UNBOUNDED PRECEDING)
                         AS cost_upto
              FROM candidates c0) AS c
        LEFT JOIN after_release p ON p.id = c.pack
    ), balances AS (
        SELECT p.id, p.sessions_used AS expected_used, p.sessions_total AS expected_total,
               p.used_after + coalesce(f.n, 0) AS new_used
        FROM after_release p
        LEFT JOIN (SELECT c.pack, sum(c.cost)::int AS n FROM charged c WHERE c.ok GROUP BY c.pack) f ON f.pack = p.id
    ), results AS (
        SELECT r.ord, r.ok, CASE WHEN NOT r.ok THEN 'pack had nothing to give back' END AS reason, r.pack,
               CASE WHEN r.ok THEN r.give ELSE 0 END AS moved
        FROM released r
        UNION ALL
        SELECT c.ord, c.ok, CASE WHEN NOT c.ok THEN c.why_not END, c.pack, CASE WHEN c.ok THEN c.cost ELSE 0 END
        FROM charged c
    )
    SELECT array_agg(x.ord ORDER BY x.ord), array_agg(x.ok ORDER BY x.ord), array_agg(x.reason ORDER BY x.ord),
{%- if app.mapping.pack.remaining %}
           array_agg(b.expected_total - b.new_used ORDER BY x.ord),
{%- else %}
           array_agg(b.new_used ORDER BY x.ord),
{%- endif %}
           array_agg(x.moved ORDER BY x.ord),
           (SELECT array_agg(b2.id ORDER BY b2.id) FROM balances b2 WHERE b2.new_used <> b2.expected_used),
           (SELECT array_agg(b2.expected_used ORDER BY b2.id) FROM balances b2 WHERE b2.new_used <> b2.expected_used),
           (SELECT array_agg(b2.expected_total ORDER BY b2.id) FROM balances b2 WHERE b2.new_used <> b2.expected_used),
           (SELECT array_agg(b2.new_used - b2.expected_used ORDER BY b2.id)
            FROM balances b2 WHERE b2.new_used <> b2.expected_used)
      INTO r_ord, r_ok, r_reason, r_used, r_amount, u_pack, u_used, u_total, u_delta
    FROM results x LEFT JOIN balances b ON b.id = x.pack;

    IF u_pack IS NOT NULL THEN
        UPDATE {{ app.packs_table }} p
           SET {{ app.pack_balance_moved('p', 'u.delta') }}
          FROM unnest(u_pack, u_used, u_total, u_delta) AS u(pack, used, total, delta)
         WHERE p.{{ app.pack_id }} = u.pack
           AND {{ app.pack_field('p', 'sessions_used') }} = u.used
           AND {{ app.pack_field('p', 'sessions_total') }} IS NOT DISTINCT FROM u.total;
        GET DIAGNOSTICS v_updated = ROW_COUNT;
        -- The rows are locked, so this means a balance was read before a concurrent
        -- change committed: retry rather than write a balance from a stale row.
        IF v_updated <> array_length(u_pack, 1) THEN
            RAISE EXCEPTION 'a pack changed while its batch was applied; retrying'
                USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;

    RETURN QUERY SELECT * FROM unnest(r_ord, r_ok, r_reason, r_used, r_amount);
END
$$;

-- Bring each named booking's ledger row in line with the booking's current row.
-- Level-triggered: the event only names the booking, so duplicate, late, replayed
-- or reordered events find nothing left to do. A booking whose first queued event
-- came before the cut-over (config.adopt_until) is recorded as the app's old code
-- left it, without touching a balance. p_causes[i] says who caused event i (the
-- event's `cause`); a booking's row records the cause of its latest event, or,
-- where none is given, the caller's own (an operator's reconcile or audit). A charge
-- asks for the booking's amount; a release gives back the amount its row recorded.
--
-- The amount converges too: a paid booking that consumes the same pack at another
-- amount than its row recorded (its pack.amount_column changed) gives back what it
-- paid and is charged what it costs now, both in one settle_packs call (releases
-- first). Whole or not at all, as any charge: a pack that cannot pay the new amount
-- leaves the booking unfunded, its old amount given back, and a later top-up judges it
-- again. It is reported as moved. A pack that is unlimited now pays 0 whatever the
-- amount, so its bookings are left as paid; a booking paid 0 by a pack that has since
-- stopped being unlimited reads as one whose amount changed, and is charged it when
-- next judged. An unfunded booking is judged again on every event, at its amount now.
CREATE OR REPLACE FUNCTION session_ledger.apply_bookings(
    p_booking_ids {{ bk }}[], p_enqueued_at timestamptz[], p_causes jsonb[] DEFAULT NULL
)
RETURNS TABLE (booking_id {{ bk }}, outcome text, purchase_id {{ pk }}, previous_purchase_id {{ pk }}, reason text,
               caused_by jsonb)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_seqscan = 'off'
SET jit = 'off'
AS $$
DECLARE
    v_cfg session_ledger.config;
    d_id {{ bk }}[]; d_adopt boolean[]; d_at timestamptz[]; d_client {{ ck }}[]; d_org {{ gk }}[]; d_want {{ pk }}[];
    d_held {{ pk }}[]; d_state text[]; d_pack {{ pk }}[]; d_release boolean[]; d_charge boolean[]; d_cause jsonb[];
    d_retry boolean[]; d_adopted boolean[]; d_cost int[]; d_paid int[]; v_given {{ bk }}[];
    v_own_cause jsonb := session_ledger.current_cause();
    q_pack {{ pk }}[]; q_delta int[]; q_at timestamptz[]; q_client {{ ck }}[]; q_org {{ gk }}[]; q_booking {{ bk }}[];
    q_amount int[];
    s_ok boolean[]; s_reason text[]; s_amount int[];
    o_id {{ bk }}[]; o_outcome text[]; o_state text[]; o_pack {{ pk }}[]; o_prev {{ pk }}[]; o_reason text[];
    o_adopt boolean[]; o_client {{ ck }}[]; o_org {{ gk }}[]; o_cause jsonb[]; o_still text[]; o_amount int[];
BEGIN
    SELECT * INTO v_cfg FROM session_ledger.config;

    -- Serialise per booking across listeners, without touching booking rows (the
    -- cron's multi-row UPDATE locks those in physical order). Key order: listeners
    -- never deadlock on each other.
    PERFORM pg_catalog.pg_advisory_xact_lock(7391, k.key)
    FROM (SELECT DISTINCT pg_catalog.hashtext(u.id::text) AS key
          FROM unnest(p_booking_ids) AS u(id) ORDER BY 1) AS k;

    -- What each booking should hold now, and what its ledger row says it holds.
    SELECT array_agg(c.id), array_agg(c.adopt), array_agg(c.start_time), array_agg(c.client), array_agg(c.org),
           array_agg(c.want), array_agg(c.held), array_agg(c.l_state), array_agg(c.l_pack),
           -- judged against another charge key than the booking's now: give back what it holds,
           -- and judge what it asks for
           array_agg(c.held IS NOT NULL AND (c.changed OR c.repriced)),
           array_agg(c.want IS NOT NULL AND (c.changed OR c.retry OR c.repriced)),
           array_agg(c.cause),
           -- unfunded on the same charge key: judged again (its pack may pay now), except
           -- for an event from before the cut-over, which records what the old code did
           array_agg(c.retry),
           -- adopted as paid: its release first uses up the pack's given-away count
           array_agg(c.l_source IN ('adoption', 'cut-over')),
           array_agg(c.cost), array_agg(c.l_amount)
      INTO d_id, d_adopt, d_at, d_client, d_org, d_want, d_held, d_state, d_pack, d_release, d_charge, d_cause,
           d_retry, d_adopted, d_cost, d_paid
    FROM (
        SELECT c1.*, c1.want IS NOT NULL AND NOT c1.changed AND c1.l_state = 'unfunded' AND NOT c1.adopt AS retry,
               -- paid by the same pack at another amount than it costs now: given back and
               -- charged again (before the cut-over, left as the old code did, like retry)
               c1.want IS NOT NULL AND NOT c1.changed AND c1.l_state = 'paid' AND NOT c1.adopt
                   AND c1.l_amount IS DISTINCT FROM c1.cost AND NOT c1.l_unlimited AS repriced
        FROM (
        SELECT c0.*,
               session_ledger.charge_key_changed(
                   session_ledger.judged_pack(c0.l_state, c0.l_pack), c0.l_client, c0.l_org,
                   c0.want, c0.client, c0.org) AS changed
        FROM (
        SELECT i.id, i.cause,
               -- before the cut-over the app's old code moved the balance itself, unless
               -- its call was absorbed as the echo of this booking's write
               coalesce(i.first_at < v_cfg.adopt_until, false)
                   AND NOT EXISTS (SELECT 1 FROM session_ledger.pack_calls pc
                                   WHERE pc.booking_id = i.id AND pc.outcome = 'absorbed') AS adopt,
               b.start_time, b.client_id AS client, b.org_id AS org, b.amount AS cost,
               -- a booking that does not consume (booking.consumes_when) asks for no pack
               session_ledger.consumed_pack(b.status, CASE WHEN b.consumes THEN b.purchase_id END,
                                            v_cfg.consuming_statuses) AS want,
               session_ledger.held_pack(l.state, l.purchase_id) AS held,
               l.state AS l_state, l.purchase_id AS l_pack, l.source AS l_source, l.amount AS l_amount,
{%- if app.mapping.pack.unlimited_when %}
               -- the pack pays 0 whatever the amount: nothing to converge
               coalesce(p.unlimited, false) AS l_unlimited,
{%- else %}
               false AS l_unlimited,
{%- endif %}
               -- a row written before the ledger kept these columns was judged for this booking as it was
               coalesce(l.client_id, b.client_id) AS l_client, coalesce(l.org_id, b.org_id) AS l_org
        FROM (SELECT u.id, min(u.at) AS first_at,
                     coalesce((array_agg(u.cause ORDER BY u.at DESC, u.n DESC))[1], v_own_cause) AS cause
              FROM unnest(p_booking_ids, p_enqueued_at, p_causes) WITH ORDINALITY AS u(id, at, cause, n)
              WHERE u.id IS NOT NULL
              GROUP BY u.id) AS i
        LEFT JOIN {{ app.bookings }} b ON b.id = i.id
        LEFT JOIN session_ledger.charges l ON l.booking_id = i.id
{%- if app.mapping.pack.unlimited_when %}
        LEFT JOIN {{ app.packs }} p ON p.id = l.purchase_id
{%- endif %}
        ) AS c0
        ) AS c1
    ) AS c;

    IF d_id IS NULL THEN
        RETURN;
    END IF;

    -- ---- sessions given away stay given away (sql/functions/45_pack_changes.sql) ----
    -- A release of a booking adopted as paid first uses up its pack's given-away count.
    IF true = ANY (d_adopted) THEN
        SELECT session_ledger.use_given_away(
                   array_agg(r.id), array_agg(r.held), array_agg(r.at), array_agg(coalesce(r.adopted, false)),
                   (SELECT array_agg(DISTINCT p.pack) FROM unnest(d_held || d_want) AS p(pack) WHERE p.pack IS NOT NULL))
          INTO v_given
        FROM unnest(d_id, d_held, d_at, d_adopted, d_release, d_adopt) AS r(id, held, at, adopted, rel, adopt)
        WHERE r.rel AND NOT r.adopt;
    END IF;
    -- ---- end of given away ----

    -- The releases and charges this asks of the packs; a booking before the cut-over asks for none.
    SELECT array_agg(r.pack ORDER BY r.n), array_agg(r.delta ORDER BY r.n), array_agg(r.at ORDER BY r.n),
           array_agg(r.client ORDER BY r.n), array_agg(r.org ORDER BY r.n), array_agg(r.id ORDER BY r.n),
           array_agg(r.amount ORDER BY r.n)
      INTO q_pack, q_delta, q_at, q_client, q_org, q_booking, q_amount
    FROM (SELECT row_number() OVER () AS n, x.*
          FROM (SELECT d.id, d.held AS pack, -1 AS delta, d.at, NULL::{{ ck }} AS client, NULL::{{ gk }} AS org,
                       d.paid AS amount
                FROM unnest(d_id, d_held, d_at, d_release, d_adopt, d_paid) AS d(id, held, at, rel, adopt, paid)
                WHERE d.rel AND NOT d.adopt AND NOT d.id = ANY (coalesce(v_given, '{}'))
                UNION ALL
                SELECT d.id, d.want, 1, d.at, d.client, d.org, d.cost
                FROM unnest(d_id, d_want, d_at, d_client, d_org, d_charge, d_adopt, d_cost)
                     AS d(id, want, at, client, org, chg, adopt, cost)
                WHERE d.chg AND NOT d.adopt) AS x) AS r;

    IF q_pack IS NOT NULL THEN
        SELECT array_agg(s.ok ORDER BY s.ord), array_agg(s.reason ORDER BY s.ord), array_agg(s.amount ORDER BY s.ord)
          INTO s_ok, s_reason, s_amount
        FROM session_ledger.settle_packs(q_pack, q_delta, q_at, q_client, q_org, q_amount) AS s;
    END IF;

    WITH settled AS (
        SELECT s.booking, s.delta, s.ok, s.reason, s.amount
        FROM unnest(q_booking, q_delta, s_ok, s_reason, s_amount) AS s(booking, delta, ok, reason, amount)
        UNION ALL
        SELECT g.booking, -1, false, 'the app''s old code never charged it: nothing to give back', 0
        FROM unnest(v_given) AS g(booking)
    ), d AS (
        SELECT x.*, rel.ok AS release_ok, rel.reason AS release_why_not, rel.amount AS given_back,
               ch.ok AS charge_ok, ch.reason AS why_not, ch.amount AS charged
        FROM unnest(d_id, d_adopt, d_client, d_org, d_want, d_held, d_state, d_pack, d_release, d_charge, d_cause,
                    d_retry, d_cost, d_paid)
             AS x(id, adopt, client, org, want, held, l_state, l_pack, do_release, do_charge, cause, retry, cost, paid)
        LEFT JOIN settled rel ON rel.booking = x.id AND rel.delta < 0
        LEFT JOIN settled ch ON ch.booking = x.id AND ch.delta > 0
    )
    SELECT array_agg(d.id),
           array_agg(CASE
               WHEN d.adopt AND (d.do_charge OR d.do_release) THEN 'no-op'
               WHEN d.do_charge AND d.charge_ok AND d.do_release THEN 'moved'
               WHEN d.do_charge AND d.charge_ok THEN 'paid'
               WHEN d.retry THEN 'no-op'
               WHEN d.do_charge THEN 'unfunded'
               WHEN d.do_release THEN 'released'
               ELSE 'no-op' END),
           array_agg(CASE
               -- judged again and still unfunded: the row stays as it is, its reason refreshed below
               WHEN d.retry AND NOT d.charge_ok THEN NULL
               WHEN d.do_charge THEN CASE WHEN d.adopt OR d.charge_ok THEN 'paid' ELSE 'unfunded' END
               WHEN d.do_release THEN 'released'
               WHEN d.want IS NULL AND d.l_state = 'unfunded' THEN 'released'
               END),
           array_agg(CASE WHEN d.do_charge THEN d.want ELSE coalesce(d.held, d.want, d.l_pack) END),
           array_agg(CASE WHEN d.do_release THEN d.held END),
           array_agg(CASE
               WHEN d.adopt AND (d.do_charge OR d.do_release)
                   THEN 'before the cut-over: the app''s old code moved this session'
               WHEN d.retry AND NOT d.charge_ok THEN 'still unfunded: ' || d.why_not
               WHEN d.do_charge AND NOT d.charge_ok THEN d.why_not
               WHEN d.do_release AND NOT d.release_ok THEN d.release_why_not
               WHEN NOT (d.do_charge OR d.do_release) THEN
                   CASE
                       WHEN d.want IS NULL AND d.l_state = 'unfunded' THEN 'no longer consuming; nothing was charged'
                       WHEN d.want IS NULL THEN 'nothing charged and nothing to charge'
                       WHEN d.l_state = 'unfunded' THEN 'already recorded as unfunded'
                       ELSE 'already paid by this pack'
                   END
               END),
           array_agg(d.adopt), array_agg(d.client), array_agg(d.org), array_agg(d.cause),
           array_agg(CASE WHEN d.retry AND NOT d.charge_ok THEN d.why_not END),
           -- the amount the row records: what the pack paid (what a release gives back; adopted:
           -- what the booking costs, as the old code charged it), what an unfunded booking asks,
           -- what a release gave back
           array_agg(CASE
               WHEN d.do_charge AND d.charge_ok THEN d.charged
               WHEN d.do_charge THEN d.cost
               WHEN d.do_release THEN d.given_back
               ELSE coalesce(d.paid, d.cost) END)
      INTO o_id, o_outcome, o_state, o_pack, o_prev, o_reason, o_adopt, o_client, o_org, o_cause, o_still, o_amount
    FROM d;

    -- still unfunded: the reason, and the amount it asks (its amount may have changed)
    UPDATE session_ledger.charges l
       SET reason = s.why, amount = s.amount, updated_at = pg_catalog.now()
      FROM unnest(o_id, o_still, o_amount) AS s(id, why, amount)
     WHERE l.booking_id = s.id AND s.why IS NOT NULL
       AND (l.reason IS DISTINCT FROM s.why OR l.amount IS DISTINCT FROM s.amount);

    INSERT INTO session_ledger.charges AS l
        (booking_id, purchase_id, state, reason, source, updated_at, client_id, org_id, caused_by, amount)
    SELECT s.id, s.pack, s.state, CASE WHEN s.state = 'unfunded' THEN s.reason END,
           CASE WHEN s.adopt THEN 'cut-over' ELSE 'listener' END, pg_catalog.now(), s.client, s.org,
           nullif(s.cause, '{}'::jsonb), coalesce(s.amount, 0)
    FROM unnest(o_id, o_state, o_pack, o_reason, o_adopt, o_client, o_org, o_cause, o_amount)
         AS s(id, state, pack, reason, adopt, client, org, cause, amount)
    WHERE s.state IS NOT NULL
    ON CONFLICT ON CONSTRAINT charges_pkey DO UPDATE
       SET purchase_id = excluded.purchase_id, state = excluded.state, reason = excluded.reason,
           source = excluded.source, updated_at = excluded.updated_at,
           client_id = excluded.client_id, org_id = excluded.org_id, caused_by = excluded.caused_by,
           amount = excluded.amount;

    RETURN QUERY
    SELECT * FROM unnest(o_id, o_outcome, o_pack, o_prev, o_reason, o_cause);
END
$$;
{%- if app.legacy_use %}

-- Charge one session, judging the pack's validity at p_session_at. Only the ledger's
-- owner may call it (its grants are revoked from everyone else): a charge for a
-- given session time is the ledger's own business.
CREATE OR REPLACE FUNCTION {{ app.legacy_use }}(p_purchase_id {{ pk }}, p_session_at timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM session_ledger.assert_may_move_pack(p_purchase_id);
    RETURN coalesce((SELECT s.ok FROM session_ledger.settle_packs(
        ARRAY[p_purchase_id], ARRAY[1], ARRAY[p_session_at], ARRAY[NULL::{{ ck }}], ARRAY[NULL::{{ gk }}]) AS s), false);
END
$$;

-- The app's old code calls use_session / release_session right after its own
-- booking write (the calendar page, the cron edge function), or out of habit right
-- after a cancel (the clients page's "Reinstate"). The ledger already charges or
-- releases that booking, so such a call is absorbed: it consumes one live echo
-- (session_ledger.booking_write_live) of a booking write by the same caller (role,
-- login and signed-in user) for the same pack, recorded by the bookings trigger.
-- Returns the booking the call echoed, or NULL when it echoes none and is a real
-- adjustment.
CREATE OR REPLACE FUNCTION session_ledger.absorb_legacy_call(p_kind text, p_purchase_id {{ pk }}, p_cause jsonb)
RETURNS {{ bk }}
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_on boolean;
    v_window interval;
    v_write bigint;
    v_booking {{ bk }};
BEGIN
    SELECT c.absorb_legacy_calls, c.legacy_call_window INTO v_on, v_window FROM session_ledger.config c;
    IF NOT v_on THEN
        RETURN NULL;
    END IF;
    -- FOR UPDATE, not SKIP LOCKED: a racing call waits, then sees what is left of the write.
    SELECT w.id, w.booking_ids[w.absorbed + 1] INTO v_write, v_booking
    FROM session_ledger.booking_writes w
    WHERE w.purchase_id = p_purchase_id
      AND w.kind = p_kind
      AND w.absorbed < pg_catalog.cardinality(w.booking_ids)
      AND (w.caused_by ->> 'role') IS NOT DISTINCT FROM (p_cause ->> 'role')
      AND (w.caused_by ->> 'login') IS NOT DISTINCT FROM (p_cause ->> 'login')
      AND (w.caused_by ->> 'uid') IS NOT DISTINCT FROM (p_cause ->> 'uid')
      AND session_ledger.booking_write_live(w.written_at, w.caused_by, v_window)
    ORDER BY w.id
    LIMIT 1
    FOR UPDATE;
    IF v_write IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE session_ledger.booking_writes w
       SET absorbed = w.absorbed + 1, last_absorbed_at = pg_catalog.clock_timestamp()
     WHERE w.id = v_write;
    RETURN v_booking;
END
$$;

-- One session charged or given back by hand, or a legacy call absorbed: every
-- direct move of a pack, recorded with who made it and what it moved
-- (session_ledger.pack_calls). p_kind 'use' charges one session judged at now(),
-- 'release' gives one back; p_legacy says whether an echo of a booking write may
-- absorb it. Returns the outcome, the booking an absorbed call echoed, and the
-- pack's sessions_used (of a pack counted down: what remains).
CREATE OR REPLACE FUNCTION session_ledger.move_session_directly(
    p_kind text, p_purchase_id {{ pk }}, p_reason text, p_legacy boolean
) RETURNS TABLE (outcome text, booking_id {{ bk }}, sessions_used int)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cause jsonb := session_ledger.current_cause();
    v_booking {{ bk }};
    v_ok boolean;
    v_used int;
    v_moved int := 0;
    v_outcome text;
BEGIN
    PERFORM session_ledger.assert_may_move_pack(p_purchase_id);
    IF p_legacy THEN
        v_booking := session_ledger.absorb_legacy_call(p_kind, p_purchase_id, v_cause);
    END IF;
    IF v_booking IS NOT NULL THEN
        v_outcome := 'absorbed';
{%- if app.mapping.pack.remaining %}
        SELECT p.sessions_total INTO v_used FROM {{ app.packs }} p WHERE p.id = p_purchase_id;
{%- else %}
        SELECT p.sessions_used INTO v_used FROM {{ app.packs }} p WHERE p.id = p_purchase_id;
{%- endif %}
    ELSE
        SELECT s.ok, s.sessions_used, s.amount INTO v_ok, v_used, v_moved
        FROM session_ledger.settle_packs(ARRAY[p_purchase_id], ARRAY[CASE WHEN p_kind = 'use' THEN 1 ELSE -1 END],
                                         ARRAY[pg_catalog.now()], ARRAY[NULL::{{ ck }}], ARRAY[NULL::{{ gk }}]) AS s;
        v_outcome := CASE WHEN p_kind = 'use' THEN CASE WHEN v_ok THEN 'charged' ELSE 'not charged' END
                          ELSE CASE WHEN v_ok THEN 'released' ELSE 'nothing to give back' END END;
    END IF;
    INSERT INTO session_ledger.pack_calls (kind, purchase_id, reason, legacy, outcome, booking_id, caused_by, amount)
    VALUES (p_kind, p_purchase_id, p_reason, p_legacy, v_outcome, v_booking, v_cause, coalesce(v_moved, 0));
    RETURN QUERY SELECT v_outcome, v_booking, v_used;
END
$$;

-- The app's signature, unchanged for its existing callers: "use 1 session", judged
-- at now(). While the app's old code may still run it also absorbs the echo of a
-- booking write the ledger charges (true: that booking's session is the ledger's).
CREATE OR REPLACE FUNCTION {{ app.legacy_use }}(p_purchase_id {{ pk }}) RETURNS boolean
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.outcome IN ('charged', 'absorbed') FROM session_ledger.move_session_directly('use', p_purchase_id, NULL, true) AS m
$$;

-- Give one session back ("reinstate"). Returns the new sessions_used, or -1 when
-- there was nothing to give back (already 0, or no such pack). Absorbs the echo of
-- a cancellation the ledger releases, as use_session(uuid) does.
CREATE OR REPLACE FUNCTION {{ app.legacy_release }}(p_purchase_id {{ pk }}) RETURNS int
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN m.outcome IN ('released', 'absorbed') THEN m.sessions_used ELSE -1 END
    FROM session_ledger.move_session_directly('release', p_purchase_id, NULL, true) AS m
$$;

-- The trainer's manual buttons in the new app: one session charged ("Use 1
-- Session"), judged at now(), or given back, with the reason the trainer gives.
-- Never absorbed: a manual adjustment is never the echo of a booking write.
CREATE OR REPLACE FUNCTION {{ app.legacy_use }}(p_purchase_id {{ pk }}, p_reason text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM session_ledger.require_reason(p_reason);
    RETURN (SELECT m.outcome = 'charged'
            FROM session_ledger.move_session_directly('use', p_purchase_id, pg_catalog.btrim(p_reason), false) AS m);
END
$$;

-- Returns the new sessions_used, or -1 when there was nothing to give back.
CREATE OR REPLACE FUNCTION {{ app.legacy_release }}(p_purchase_id {{ pk }}, p_reason text) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM session_ledger.require_reason(p_reason);
    RETURN (SELECT CASE WHEN m.outcome = 'released' THEN m.sessions_used ELSE -1 END
            FROM session_ledger.move_session_directly('release', p_purchase_id, pg_catalog.btrim(p_reason), false) AS m);
END
$$;
{%- endif %}

-- A manual adjustment says why, in a line.
CREATE OR REPLACE FUNCTION session_ledger.require_reason(p_reason text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_reason IS NULL OR pg_catalog.btrim(p_reason) = '' OR pg_catalog.length(p_reason) > 500 THEN
        RAISE EXCEPTION 'a manual session adjustment needs a reason of 1 to 500 characters'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;
