-- The operator dashboard's reads and its two actions (`listener run --http-port`, page `/`).
--
-- The listener logs in as a member of session_ledger_listener, which reads no table
-- directly; these SECURITY DEFINER functions are its only window on the archive, the
-- dead letters and the ledger, and each returns a bounded number of rows. Repeatable:
-- `listener migrate` re-applies it with CREATE OR REPLACE whenever a repeatable file changes.
-- The app's rows are read as canonical rows (app.bookings, app.packs), and ids are
-- returned in the app's key types; an id that may name a booking, a pack or a client
-- travels as text, as the key prints, and is found through booking_key(), pack_key()
-- and client_key() (05_app.sql).

-- Commit-to-charge lag and throughput per minute over the last p_minutes, from the
-- archive (a handled event is archived in the batch's transaction, so archived_at is
-- when its charge committed). Minutes without events are left out.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_lag(p_minutes int)
RETURNS TABLE (minute timestamptz, events bigint, lag_p50_s double precision,
               lag_p99_s double precision, lag_max_s double precision)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.date_trunc('minute', a.archived_at),
           count(*),
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM a.archived_at - a.enqueued_at)),
           percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM a.archived_at - a.enqueued_at)),
           max(extract(epoch FROM a.archived_at - a.enqueued_at))::double precision
    FROM pgmq.a_booking_events a
    WHERE a.archived_at >= pg_catalog.date_trunc('minute', pg_catalog.now())
                           - pg_catalog.make_interval(mins => least(greatest(p_minutes, 1), 1440) - 1)
    GROUP BY 1
    ORDER BY 1
$$;

-- The newest dead letters: why each was set aside and what it carried.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_dead_letters(p_limit int)
RETURNS TABLE (msg_id bigint, enqueued_at timestamptz, reason text, payload jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.msg_id, d.enqueued_at, d.message ->> 'reason', d.message -> 'message'
    FROM pgmq.q_booking_events_dlq d
    ORDER BY d.msg_id DESC
    LIMIT least(greatest(p_limit, 0), 1000)
$$;

-- The newest bookings that consume a session but found no pack to charge.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_unfunded(p_limit int)
RETURNS TABLE (booking_id {{ app.keys.booking }}, purchase_id {{ app.keys.pack }}, reason text, updated_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.booking_id, l.purchase_id, l.reason, l.updated_at
    FROM session_ledger.charges l
    WHERE l.state = 'unfunded'
    ORDER BY l.updated_at DESC, l.booking_id
    LIMIT least(greatest(p_limit, 0), 1000)
$$;

-- Bookings whose ledger row disagrees with the booking (what `listener reconcile` repairs):
-- the rows of session_ledger.out_of_sync, the view status()'s bookings_out_of_sync counts.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_out_of_sync(p_limit int)
RETURNS TABLE (booking_id {{ app.keys.booking }}, booking_status text, booking_purchase_id {{ app.keys.pack }},
               ledger_state text, ledger_purchase_id {{ app.keys.pack }})
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.booking_id, b.status::text, b.purchase_id, l.state, l.purchase_id
    FROM session_ledger.out_of_sync o
    LEFT JOIN {{ app.bookings }} b ON b.id = o.booking_id
    LEFT JOIN session_ledger.charges l ON l.booking_id = o.booking_id
    ORDER BY o.booking_id
    LIMIT least(greatest(p_limit, 0), 1000)
$$;

-- The dead letters among p_msg_ids, whatever their age: what the redrive confirm
-- step shows, so a letter older than the page's newest ones can still be redriven.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_dead_letters_by_id(p_msg_ids bigint[])
RETURNS TABLE (msg_id bigint, enqueued_at timestamptz, reason text, payload jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT d.msg_id, d.enqueued_at, d.message OPERATOR(pg_catalog.->>) 'reason',
           d.message OPERATOR(pg_catalog.->) 'message'
    FROM pgmq.q_booking_events_dlq d
    WHERE d.msg_id OPERATOR(pg_catalog.=) ANY (p_msg_ids)
    ORDER BY d.msg_id
    LIMIT 1000
$$;

-- The four reads below return the login each change came through (by_login) since 0.3.0:
-- a result's columns cannot change in place, so their earlier forms go first.
DROP FUNCTION IF EXISTS session_ledger.dashboard_recent_changes(int, timestamptz, {{ app.keys.booking }});
DROP FUNCTION IF EXISTS session_ledger.dashboard_absorbed_calls(int);
DROP FUNCTION IF EXISTS session_ledger.dashboard_pack_charges({{ app.keys.pack }}, text, int);
DROP FUNCTION IF EXISTS session_ledger.dashboard_pack_calls({{ app.keys.pack }}, int);
-- Names and search take and give ids of any kind, as text, since schema version 7.
DROP FUNCTION IF EXISTS session_ledger.dashboard_names(uuid[]);
DROP FUNCTION IF EXISTS session_ledger.dashboard_search(text, int);

-- One page of the ledger's changes, newest first, with who caused each row's last
-- change (charges.caused_by). Keyset-paged: a page starts after the row
-- (p_before_at, p_before_booking) that ended the previous one, so rows written
-- meanwhile never shift a page; NULL p_before_at is the newest page.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_recent_changes(
    p_limit int, p_before_at timestamptz, p_before_booking {{ app.keys.booking }}
)
RETURNS TABLE (booking_id {{ app.keys.booking }}, purchase_id {{ app.keys.pack }}, state text, reason text, source text,
               updated_at timestamptz, by_role text, by_uid text, trace text, by_login text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.booking_id, l.purchase_id, l.state, l.reason, l.source, l.updated_at,
           l.caused_by OPERATOR(pg_catalog.->>) 'role', l.caused_by OPERATOR(pg_catalog.->>) 'uid',
           l.caused_by OPERATOR(pg_catalog.->>) 'trace', l.caused_by OPERATOR(pg_catalog.->>) 'login'
    FROM session_ledger.charges l
    WHERE p_before_at IS NULL
       OR l.updated_at OPERATOR(pg_catalog.<) p_before_at
       OR (l.updated_at OPERATOR(pg_catalog.=) p_before_at AND l.booking_id OPERATOR(pg_catalog.<) p_before_booking)
    ORDER BY l.updated_at DESC, l.booking_id DESC
    LIMIT pg_catalog.int4larger(pg_catalog.int4smaller(p_limit, 1000), 0)
$$;

-- The app's old use_session / release_session calls most recently absorbed as the
-- echo of a booking write: who made each, when, on which pack, and the booking it matched.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_absorbed_calls(p_limit int)
RETURNS TABLE (id bigint, called_at timestamptz, kind text, purchase_id {{ app.keys.pack }}, booking_id {{ app.keys.booking }},
               by_role text, by_uid text, trace text, by_login text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pc.id, pc.called_at, pc.kind, pc.purchase_id, pc.booking_id,
           pc.caused_by OPERATOR(pg_catalog.->>) 'role', pc.caused_by OPERATOR(pg_catalog.->>) 'uid',
           pc.caused_by OPERATOR(pg_catalog.->>) 'trace', pc.caused_by OPERATOR(pg_catalog.->>) 'login'
    FROM session_ledger.pack_calls pc
    WHERE pc.outcome OPERATOR(pg_catalog.=) 'absorbed'
    ORDER BY pc.id DESC
    LIMIT pg_catalog.int4larger(pg_catalog.int4smaller(p_limit, 1000), 0)
$$;

-- Action: move these dead letters back onto the queue (`listener replay --dead-letter --id ...`).
CREATE OR REPLACE FUNCTION session_ledger.dashboard_redrive(p_msg_ids bigint[])
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT session_ledger.redrive_dead_letters(p_msg_ids)
$$;

-- Action: enqueue one booking again, as the trigger would; the listener converges it.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_replay(p_booking_id {{ app.keys.booking }})
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT session_ledger.enqueue_bookings(ARRAY[p_booking_id], 'dashboard')
$$;

-- Action: archive these dead letters for good, with who, when and why
-- (`listener discard --dead-letter --id ...`); how many were archived.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_discard(p_msg_ids bigint[], p_reason text)
RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT session_ledger.discard_dead_letters(p_msg_ids, p_reason)
$$;

-- The app's names for the bookings, packs and clients among p_ids (as text: an id of any
-- kind), so the page shows what an operator thinks in. One row per id found: a booking
-- with its client and start, a pack with its client, purchase and offer name (where the
-- app has public.offers(name) and the packs' offer_id and purchased_at), and a client
-- with its full_name (where the app has public.clients(full_name), keyed as the
-- clients are). An app without those columns gets no name, and the page shows the id;
-- the branches that read them run only when they exist, which PL/pgSQL allows because
-- it plans a statement when it first runs.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_names(p_ids text[])
RETURNS TABLE (id text, kind text, client_id {{ app.keys.client }}, name text, at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids text[] := p_ids[1:3000];
    v_bookings {{ app.keys.booking }}[];
    v_packs {{ app.keys.pack }}[];
    v_clients {{ app.keys.client }}[];
BEGIN
    SELECT pg_catalog.array_agg(k) INTO v_bookings
    FROM (SELECT session_ledger.booking_key(x) AS k FROM pg_catalog.unnest(v_ids) AS x) AS u WHERE k IS NOT NULL;
    SELECT pg_catalog.array_agg(k) INTO v_packs
    FROM (SELECT session_ledger.pack_key(x) AS k FROM pg_catalog.unnest(v_ids) AS x) AS u WHERE k IS NOT NULL;
    IF session_ledger.app_has_columns({{ app.lit(app.packs_table) }}, ARRAY['offer_id', 'purchased_at'])
       AND session_ledger.app_has_columns('public.offers', ARRAY['id', 'name']) THEN
        RETURN QUERY
            SELECT p.{{ app.pack_id }}::text, 'pack'::text, {{ app.pack_field('p', 'client_id') }}, o.name::text,
                   p.purchased_at
            FROM {{ app.packs_table }} p
            LEFT JOIN public.offers o ON o.id OPERATOR(pg_catalog.=) p.offer_id
            WHERE p.{{ app.pack_id }} OPERATOR(pg_catalog.=) ANY (v_packs);
    ELSIF session_ledger.app_has_columns({{ app.lit(app.packs_table) }}, ARRAY['purchased_at']) THEN
        RETURN QUERY
            SELECT p.{{ app.pack_id }}::text, 'pack'::text, {{ app.pack_field('p', 'client_id') }}, NULL::text,
                   p.purchased_at
            FROM {{ app.packs_table }} p
            WHERE p.{{ app.pack_id }} OPERATOR(pg_catalog.=) ANY (v_packs);
    ELSE
        RETURN QUERY
            SELECT p.id::text, 'pack'::text, p.client_id, NULL::text, NULL::timestamptz
            FROM {{ app.packs }} p
            WHERE p.id OPERATOR(pg_catalog.=) ANY (v_packs);
    END IF;
    RETURN QUERY
        SELECT b.id::text, 'booking'::text, b.client_id, NULL::text, b.start_time
        FROM {{ app.bookings }} b
        WHERE b.id OPERATOR(pg_catalog.=) ANY (v_bookings);
    IF session_ledger.app_has_columns('public.clients', ARRAY['id', 'full_name'])
       AND (SELECT a.atttypid FROM pg_catalog.pg_attribute a
            WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('public.clients')
              AND a.attname OPERATOR(pg_catalog.=) 'id')
           OPERATOR(pg_catalog.=) {{ app.lit(app.keys.client) }}::regtype THEN
        SELECT pg_catalog.array_agg(DISTINCT x) INTO v_clients FROM (
            SELECT session_ledger.client_key(y) AS x FROM pg_catalog.unnest(v_ids) AS y
            UNION ALL SELECT p.client_id FROM {{ app.packs }} p WHERE p.id OPERATOR(pg_catalog.=) ANY (v_packs)
            UNION ALL SELECT b.client_id FROM {{ app.bookings }} b WHERE b.id OPERATOR(pg_catalog.=) ANY (v_bookings)
        ) ids WHERE x IS NOT NULL;
        RETURN QUERY
            SELECT c.id::text, 'client'::text, c.id, c.full_name::text, NULL::timestamptz
            FROM public.clients c
            WHERE c.id OPERATOR(pg_catalog.=) ANY (v_clients);
    END IF;
END
$$;

-- Whether the app's table p_table has every column in p_columns: the dashboard's
-- names come from columns the ledger does not require.
CREATE OR REPLACE FUNCTION session_ledger.app_has_columns(p_table text, p_columns text[])
RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.to_regclass(p_table) IS NOT NULL
       AND (SELECT pg_catalog.count(*) FROM pg_catalog.pg_attribute a
            WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass(p_table)
              AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped
              AND a.attname::text OPERATOR(pg_catalog.=) ANY (p_columns))
           OPERATOR(pg_catalog.=) pg_catalog.cardinality(p_columns)
$$;

-- Search by booking, pack or client: an id names whichever it is (a client also by
-- the bookings and packs that carry it, so an app without public.clients still
-- finds one); other text is a part of a client's full_name or of a pack's offer
-- name, case-insensitive, where the app has them. At most p_limit rows per kind.
-- Ids come back as text, as the key prints; a uuid may be typed in any of the forms
-- PostgreSQL reads (braces, capitals, no hyphens).
CREATE OR REPLACE FUNCTION session_ledger.dashboard_search(p_query text, p_limit int)
RETURNS TABLE (kind text, id text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_text text := pg_catalog.btrim(coalesce(p_query, ''));
    v_limit int := pg_catalog.int4larger(pg_catalog.int4smaller(p_limit, 200), 0);
    v_booking {{ app.keys.booking }};
    v_pack {{ app.keys.pack }};
    v_client {{ app.keys.client }};
    v_found boolean := false;
BEGIN
    IF v_text OPERATOR(pg_catalog.=) '' THEN
        RETURN;
    END IF;
    IF v_text OPERATOR(pg_catalog.~*) '^\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?$' THEN
        v_text := v_text::uuid::text;
    END IF;
    v_booking := session_ledger.booking_key(v_text);
    v_pack := session_ledger.pack_key(v_text);
    v_client := session_ledger.client_key(v_text);
    IF v_booking IS NOT NULL THEN
        RETURN QUERY
            SELECT 'booking'::text, v_text
            WHERE EXISTS (SELECT 1 FROM {{ app.bookings }} b WHERE b.id OPERATOR(pg_catalog.=) v_booking)
               OR EXISTS (SELECT 1 FROM session_ledger.charges l WHERE l.booking_id OPERATOR(pg_catalog.=) v_booking);
        v_found := v_found OR FOUND;
    END IF;
    IF v_pack IS NOT NULL THEN
        RETURN QUERY
            SELECT 'pack'::text, v_text
            WHERE EXISTS (SELECT 1 FROM {{ app.packs }} p WHERE p.id OPERATOR(pg_catalog.=) v_pack);
        v_found := v_found OR FOUND;
    END IF;
    IF v_client IS NOT NULL THEN
        RETURN QUERY
            SELECT 'client'::text, v_text
            WHERE EXISTS (SELECT 1 FROM {{ app.packs }} p WHERE p.client_id OPERATOR(pg_catalog.=) v_client)
               OR EXISTS (SELECT 1 FROM {{ app.bookings }} b WHERE b.client_id OPERATOR(pg_catalog.=) v_client);
        v_found := v_found OR FOUND;
        IF NOT v_found AND session_ledger.app_has_columns('public.clients', ARRAY['id'])
           AND (SELECT a.atttypid FROM pg_catalog.pg_attribute a
                WHERE a.attrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass('public.clients')
                  AND a.attname OPERATOR(pg_catalog.=) 'id')
               OPERATOR(pg_catalog.=) {{ app.lit(app.keys.client) }}::regtype THEN
            RETURN QUERY
                SELECT 'client'::text, v_text
                WHERE EXISTS (SELECT 1 FROM public.clients c WHERE c.id OPERATOR(pg_catalog.=) v_client);
            v_found := v_found OR FOUND;
        END IF;
    END IF;
    -- An id names what it names; text that names nothing may still be part of a name.
    IF v_found THEN
        RETURN;
    END IF;
    IF session_ledger.app_has_columns('public.clients', ARRAY['id', 'full_name']) THEN
        RETURN QUERY
            SELECT 'client'::text, c.id::text
            FROM public.clients c
            WHERE pg_catalog.strpos(pg_catalog.lower(c.full_name::text), pg_catalog.lower(v_text)) OPERATOR(pg_catalog.>) 0
            ORDER BY c.full_name, c.id
            LIMIT v_limit;
    END IF;
    IF session_ledger.app_has_columns({{ app.lit(app.packs_table) }}, ARRAY['offer_id', 'purchased_at'])
       AND session_ledger.app_has_columns('public.offers', ARRAY['id', 'name']) THEN
        RETURN QUERY
            SELECT 'pack'::text, p.{{ app.pack_id }}::text
            FROM {{ app.packs_table }} p
            JOIN public.offers o ON o.id OPERATOR(pg_catalog.=) p.offer_id
            WHERE pg_catalog.strpos(pg_catalog.lower(o.name::text), pg_catalog.lower(v_text)) OPERATOR(pg_catalog.>) 0
            ORDER BY p.purchased_at DESC, p.{{ app.pack_id }}
            LIMIT v_limit;
    END IF;
END
$$;

-- Packs by id, or every pack of the given clients, newest first: the balance and how
-- many of the pack's bookings the ledger holds in each state, and its direct calls.
-- payment_status and purchased_at where the app's packs have them (NULL otherwise;
-- then the newest pack is the one with the highest id). A pack counted down shows
-- what remains as sessions_total, with sessions_used 0.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_packs(p_pack_ids {{ app.keys.pack }}[], p_client_ids {{ app.keys.client }}[],
                                                          p_limit int)
RETURNS TABLE (id {{ app.keys.pack }}, client_id {{ app.keys.client }}, sessions_total int, sessions_used int,
               expires_at timestamptz, payment_status text, purchased_at timestamptz, paid bigint, unfunded bigint,
               released bigint, calls bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_limit int := pg_catalog.int4larger(pg_catalog.int4smaller(p_limit, 1000), 0);
BEGIN
    IF session_ledger.app_has_columns({{ app.lit(app.packs_table) }}, ARRAY['payment_status', 'purchased_at']) THEN
        RETURN QUERY
        SELECT c.id, c.client_id, c.sessions_total, c.sessions_used, c.expires_at, p.payment_status::text,
               p.purchased_at, s.paid, s.unfunded, s.released, s.calls
        FROM {{ app.packs_table }} p
        CROSS JOIN LATERAL (SELECT {{ app.pack_field('p', 'id') }} AS id, {{ app.pack_field('p', 'client_id') }} AS client_id,
                                   {{ app.pack_field('p', 'sessions_total') }} AS sessions_total,
                                   {{ app.pack_field('p', 'sessions_used') }} AS sessions_used,
                                   {{ app.pack_field('p', 'expires_at') }} AS expires_at) AS c
        CROSS JOIN LATERAL session_ledger.pack_counts(c.id) AS s
        WHERE c.id OPERATOR(pg_catalog.=) ANY (p_pack_ids) OR c.client_id OPERATOR(pg_catalog.=) ANY (p_client_ids)
        ORDER BY p.purchased_at DESC, c.id
        LIMIT v_limit;
    ELSE
        RETURN QUERY
        SELECT c.id, c.client_id, c.sessions_total, c.sessions_used, c.expires_at, NULL::text, NULL::timestamptz,
               s.paid, s.unfunded, s.released, s.calls
        FROM {{ app.packs }} c
        CROSS JOIN LATERAL session_ledger.pack_counts(c.id) AS s
        WHERE c.id OPERATOR(pg_catalog.=) ANY (p_pack_ids) OR c.client_id OPERATOR(pg_catalog.=) ANY (p_client_ids)
        ORDER BY c.id DESC
        LIMIT v_limit;
    END IF;
END
$$;

-- How many of a pack's bookings the ledger holds paid, unfunded and released, and its direct calls.
CREATE OR REPLACE FUNCTION session_ledger.pack_counts(p_pack {{ app.keys.pack }})
RETURNS TABLE (paid bigint, unfunded bigint, released bigint, calls bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (SELECT pg_catalog.count(*) FROM session_ledger.charges l
            WHERE l.purchase_id OPERATOR(pg_catalog.=) p_pack AND l.state OPERATOR(pg_catalog.=) 'paid'),
           (SELECT pg_catalog.count(*) FROM session_ledger.charges l
            WHERE l.purchase_id OPERATOR(pg_catalog.=) p_pack AND l.state OPERATOR(pg_catalog.=) 'unfunded'),
           (SELECT pg_catalog.count(*) FROM session_ledger.charges l
            WHERE l.purchase_id OPERATOR(pg_catalog.=) p_pack AND l.state OPERATOR(pg_catalog.=) 'released'),
           (SELECT pg_catalog.count(*) FROM session_ledger.pack_calls c WHERE c.purchase_id OPERATOR(pg_catalog.=) p_pack)
$$;

-- A pack's bookings in one ledger state ('paid': charged to it; 'unfunded': it could
-- not pay), newest change first, with the booking's own row beside the ledger's.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_pack_charges(p_purchase_id {{ app.keys.pack }}, p_state text, p_limit int)
RETURNS TABLE (booking_id {{ app.keys.booking }}, state text, reason text, source text, updated_at timestamptz,
               start_time timestamptz, booking_status text, by_role text, by_uid text, trace text, by_login text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.booking_id, l.state, l.reason, l.source, l.updated_at, b.start_time, b.status::text,
           l.caused_by OPERATOR(pg_catalog.->>) 'role', l.caused_by OPERATOR(pg_catalog.->>) 'uid',
           l.caused_by OPERATOR(pg_catalog.->>) 'trace', l.caused_by OPERATOR(pg_catalog.->>) 'login'
    FROM session_ledger.charges l
    LEFT JOIN {{ app.bookings }} b ON b.id OPERATOR(pg_catalog.=) l.booking_id
    WHERE l.purchase_id OPERATOR(pg_catalog.=) p_purchase_id AND l.state OPERATOR(pg_catalog.=) p_state
    ORDER BY l.updated_at DESC, l.booking_id DESC
    LIMIT pg_catalog.int4larger(pg_catalog.int4smaller(p_limit, 1000), 0)
$$;

-- A pack's direct calls (session_ledger.pack_calls): the app's use_session and
-- release_session, absorbed or not, and manual adjustments, newest first.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_pack_calls(p_purchase_id {{ app.keys.pack }}, p_limit int)
RETURNS TABLE (id bigint, called_at timestamptz, kind text, legacy boolean, outcome text, reason text,
               booking_id {{ app.keys.booking }}, by_role text, by_uid text, trace text, by_login text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.id, c.called_at, c.kind, c.legacy, c.outcome, c.reason, c.booking_id,
           c.caused_by OPERATOR(pg_catalog.->>) 'role', c.caused_by OPERATOR(pg_catalog.->>) 'uid',
           c.caused_by OPERATOR(pg_catalog.->>) 'trace', c.caused_by OPERATOR(pg_catalog.->>) 'login'
    FROM session_ledger.pack_calls c
    WHERE c.purchase_id OPERATOR(pg_catalog.=) p_purchase_id
    ORDER BY c.id DESC
    LIMIT pg_catalog.int4larger(pg_catalog.int4smaller(p_limit, 1000), 0)
$$;

-- Bookings by id, as the app and the ledger each hold them: in_app is false for a
-- booking the app no longer has, ledger_state is NULL where the ledger has no row, and
-- out_of_sync says whether `listener reconcile` would change it.
-- An id in neither is left out, so the page can say no booking has it.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_bookings(p_booking_ids {{ app.keys.booking }}[])
RETURNS TABLE (booking_id {{ app.keys.booking }}, in_app boolean, booking_status text, purchase_id {{ app.keys.pack }}, client_id {{ app.keys.client }},
               start_time timestamptz, ledger_state text, ledger_purchase_id {{ app.keys.pack }}, ledger_reason text,
               updated_at timestamptz, out_of_sync boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(b.id, l.booking_id), b.id IS NOT NULL, b.status::text, b.purchase_id,
           coalesce(b.client_id, l.client_id), b.start_time, l.state, l.purchase_id, l.reason, l.updated_at,
           -- session_ledger.out_of_sync's test, for these bookings only
           session_ledger.consumed_pack(b.status, CASE WHEN b.consumes THEN b.purchase_id END, c.consuming_statuses)
               IS DISTINCT FROM session_ledger.judged_pack(l.state, l.purchase_id)
    FROM (SELECT b.* FROM {{ app.bookings }} b WHERE b.id OPERATOR(pg_catalog.=) ANY (p_booking_ids)) b
    FULL JOIN (SELECT l.* FROM session_ledger.charges l WHERE l.booking_id OPERATOR(pg_catalog.=) ANY (p_booking_ids)) l
           ON l.booking_id OPERATOR(pg_catalog.=) b.id
    CROSS JOIN session_ledger.config c
    ORDER BY 1
    LIMIT 1000
$$;

-- EXECUTE on these goes to session_ledger_listener only, in 90_grants.sql, which revokes
-- everything from PUBLIC and the API roles first and runs after this file on every migrate.
