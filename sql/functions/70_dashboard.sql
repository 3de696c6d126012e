-- The operator dashboard's reads and its two actions (`listener run --http-port`, page `/`).
--
-- The listener logs in as a member of session_ledger_listener, which reads no table
-- directly; these SECURITY DEFINER functions are its only window on the archive, the
-- dead letters and the ledger, and each returns a bounded number of rows. Repeatable:
-- `listener migrate` re-applies it with CREATE OR REPLACE whenever a repeatable file changes.

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
RETURNS TABLE (booking_id uuid, purchase_id uuid, reason text, updated_at timestamptz)
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
RETURNS TABLE (booking_id uuid, booking_status text, booking_purchase_id uuid,
               ledger_state text, ledger_purchase_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT o.booking_id, b.status, b.purchase_id, l.state, l.purchase_id
    FROM session_ledger.out_of_sync o
    LEFT JOIN public.bookings b ON b.id = o.booking_id
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
DROP FUNCTION IF EXISTS session_ledger.dashboard_recent_changes(int, timestamptz, uuid);
DROP FUNCTION IF EXISTS session_ledger.dashboard_absorbed_calls(int);
DROP FUNCTION IF EXISTS session_ledger.dashboard_pack_charges(uuid, text, int);
DROP FUNCTION IF EXISTS session_ledger.dashboard_pack_calls(uuid, int);

-- One page of the ledger's changes, newest first, with who caused each row's last
-- change (charges.caused_by). Keyset-paged: a page starts after the row
-- (p_before_at, p_before_booking) that ended the previous one, so rows written
-- meanwhile never shift a page; NULL p_before_at is the newest page.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_recent_changes(
    p_limit int, p_before_at timestamptz, p_before_booking uuid
)
RETURNS TABLE (booking_id uuid, purchase_id uuid, state text, reason text, source text,
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
RETURNS TABLE (id bigint, called_at timestamptz, kind text, purchase_id uuid, booking_id uuid,
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
CREATE OR REPLACE FUNCTION session_ledger.dashboard_replay(p_booking_id uuid)
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

-- The app's names for the bookings, packs and clients among p_ids, so the page shows
-- what an operator thinks in. One row per id found: a booking with its client and
-- start, a pack with its client, purchase and offer name (where the app has
-- public.offers(name) and client_purchases.offer_id), and a client with its
-- full_name (where the app has public.clients(full_name)). An app without those
-- columns gets no name, and the page shows the uuid; the branches that read them run
-- only when they exist, which PL/pgSQL allows because it plans a statement when it
-- first runs.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_names(p_ids uuid[])
RETURNS TABLE (id uuid, kind text, client_id uuid, name text, at timestamptz)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_ids uuid[] := p_ids[1:3000];
    v_clients uuid[];
BEGIN
    IF session_ledger.app_has_columns('public.client_purchases', ARRAY['offer_id'])
       AND session_ledger.app_has_columns('public.offers', ARRAY['id', 'name']) THEN
        RETURN QUERY
            SELECT p.id, 'pack'::text, p.client_id, o.name::text, p.purchased_at
            FROM public.client_purchases p
            LEFT JOIN public.offers o ON o.id OPERATOR(pg_catalog.=) p.offer_id
            WHERE p.id OPERATOR(pg_catalog.=) ANY (v_ids);
    ELSE
        RETURN QUERY
            SELECT p.id, 'pack'::text, p.client_id, NULL::text, p.purchased_at
            FROM public.client_purchases p
            WHERE p.id OPERATOR(pg_catalog.=) ANY (v_ids);
    END IF;
    RETURN QUERY
        SELECT b.id, 'booking'::text, b.client_id, NULL::text, b.start_time
        FROM public.bookings b
        WHERE b.id OPERATOR(pg_catalog.=) ANY (v_ids);
    IF session_ledger.app_has_columns('public.clients', ARRAY['id', 'full_name']) THEN
        SELECT pg_catalog.array_agg(DISTINCT x) INTO v_clients FROM (
            SELECT pg_catalog.unnest(v_ids) AS x
            UNION ALL SELECT p.client_id FROM public.client_purchases p WHERE p.id OPERATOR(pg_catalog.=) ANY (v_ids)
            UNION ALL SELECT b.client_id FROM public.bookings b WHERE b.id OPERATOR(pg_catalog.=) ANY (v_ids)
        ) ids;
        RETURN QUERY
            SELECT c.id, 'client'::text, c.id, c.full_name::text, NULL::timestamptz
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
CREATE OR REPLACE FUNCTION session_ledger.dashboard_search(p_query text, p_limit int)
RETURNS TABLE (kind text, id uuid)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_text text := pg_catalog.btrim(coalesce(p_query, ''));
    v_limit int := pg_catalog.int4larger(pg_catalog.int4smaller(p_limit, 200), 0);
    v_id uuid;
BEGIN
    IF v_text OPERATOR(pg_catalog.~*) '^\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?$' THEN
        v_id := v_text::uuid;
        RETURN QUERY
            SELECT 'booking'::text, v_id
            WHERE EXISTS (SELECT 1 FROM public.bookings b WHERE b.id OPERATOR(pg_catalog.=) v_id)
               OR EXISTS (SELECT 1 FROM session_ledger.charges l WHERE l.booking_id OPERATOR(pg_catalog.=) v_id);
        RETURN QUERY
            SELECT 'pack'::text, v_id
            WHERE EXISTS (SELECT 1 FROM public.client_purchases p WHERE p.id OPERATOR(pg_catalog.=) v_id);
        RETURN QUERY
            SELECT 'client'::text, v_id
            WHERE EXISTS (SELECT 1 FROM public.client_purchases p WHERE p.client_id OPERATOR(pg_catalog.=) v_id)
               OR EXISTS (SELECT 1 FROM public.bookings b WHERE b.client_id OPERATOR(pg_catalog.=) v_id);
        IF session_ledger.app_has_columns('public.clients', ARRAY['id']) THEN
            RETURN QUERY
                SELECT 'client'::text, v_id
                WHERE EXISTS (SELECT 1 FROM public.clients c WHERE c.id OPERATOR(pg_catalog.=) v_id)
                  AND NOT EXISTS (SELECT 1 FROM public.client_purchases p WHERE p.client_id OPERATOR(pg_catalog.=) v_id)
                  AND NOT EXISTS (SELECT 1 FROM public.bookings b WHERE b.client_id OPERATOR(pg_catalog.=) v_id);
        END IF;
        RETURN;
    END IF;
    IF v_text OPERATOR(pg_catalog.=) '' THEN
        RETURN;
    END IF;
    IF session_ledger.app_has_columns('public.clients', ARRAY['id', 'full_name']) THEN
        RETURN QUERY
            SELECT 'client'::text, c.id
            FROM public.clients c
            WHERE pg_catalog.strpos(pg_catalog.lower(c.full_name::text), pg_catalog.lower(v_text)) OPERATOR(pg_catalog.>) 0
            ORDER BY c.full_name, c.id
            LIMIT v_limit;
    END IF;
    IF session_ledger.app_has_columns('public.client_purchases', ARRAY['offer_id'])
       AND session_ledger.app_has_columns('public.offers', ARRAY['id', 'name']) THEN
        RETURN QUERY
            SELECT 'pack'::text, p.id
            FROM public.client_purchases p
            JOIN public.offers o ON o.id OPERATOR(pg_catalog.=) p.offer_id
            WHERE pg_catalog.strpos(pg_catalog.lower(o.name::text), pg_catalog.lower(v_text)) OPERATOR(pg_catalog.>) 0
            ORDER BY p.purchased_at DESC, p.id
            LIMIT v_limit;
    END IF;
END
$$;

-- Packs by id, or every pack of the given clients, newest first: the balance and how
-- many of the pack's bookings the ledger holds in each state, and its direct calls.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_packs(p_pack_ids uuid[], p_client_ids uuid[], p_limit int)
RETURNS TABLE (id uuid, client_id uuid, sessions_total int, sessions_used int, expires_at timestamptz,
               payment_status text, purchased_at timestamptz, paid bigint, unfunded bigint,
               released bigint, calls bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p.id, p.client_id, p.sessions_total, p.sessions_used, p.expires_at, p.payment_status::text,
           p.purchased_at,
           (SELECT pg_catalog.count(*) FROM session_ledger.charges l
            WHERE l.purchase_id OPERATOR(pg_catalog.=) p.id AND l.state OPERATOR(pg_catalog.=) 'paid'),
           (SELECT pg_catalog.count(*) FROM session_ledger.charges l
            WHERE l.purchase_id OPERATOR(pg_catalog.=) p.id AND l.state OPERATOR(pg_catalog.=) 'unfunded'),
           (SELECT pg_catalog.count(*) FROM session_ledger.charges l
            WHERE l.purchase_id OPERATOR(pg_catalog.=) p.id AND l.state OPERATOR(pg_catalog.=) 'released'),
           (SELECT pg_catalog.count(*) FROM session_ledger.pack_calls c WHERE c.purchase_id OPERATOR(pg_catalog.=) p.id)
    FROM public.client_purchases p
    WHERE p.id OPERATOR(pg_catalog.=) ANY (p_pack_ids) OR p.client_id OPERATOR(pg_catalog.=) ANY (p_client_ids)
    ORDER BY p.purchased_at DESC, p.id
    LIMIT pg_catalog.int4larger(pg_catalog.int4smaller(p_limit, 1000), 0)
$$;

-- A pack's bookings in one ledger state ('paid': charged to it; 'unfunded': it could
-- not pay), newest change first, with the booking's own row beside the ledger's.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_pack_charges(p_purchase_id uuid, p_state text, p_limit int)
RETURNS TABLE (booking_id uuid, state text, reason text, source text, updated_at timestamptz,
               start_time timestamptz, booking_status text, by_role text, by_uid text, trace text, by_login text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.booking_id, l.state, l.reason, l.source, l.updated_at, b.start_time, b.status::text,
           l.caused_by OPERATOR(pg_catalog.->>) 'role', l.caused_by OPERATOR(pg_catalog.->>) 'uid',
           l.caused_by OPERATOR(pg_catalog.->>) 'trace', l.caused_by OPERATOR(pg_catalog.->>) 'login'
    FROM session_ledger.charges l
    LEFT JOIN public.bookings b ON b.id OPERATOR(pg_catalog.=) l.booking_id
    WHERE l.purchase_id OPERATOR(pg_catalog.=) p_purchase_id AND l.state OPERATOR(pg_catalog.=) p_state
    ORDER BY l.updated_at DESC, l.booking_id DESC
    LIMIT pg_catalog.int4larger(pg_catalog.int4smaller(p_limit, 1000), 0)
$$;

-- A pack's direct calls (session_ledger.pack_calls): the app's use_session and
-- release_session, absorbed or not, and manual adjustments, newest first.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_pack_calls(p_purchase_id uuid, p_limit int)
RETURNS TABLE (id bigint, called_at timestamptz, kind text, legacy boolean, outcome text, reason text,
               booking_id uuid, by_role text, by_uid text, trace text, by_login text)
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
CREATE OR REPLACE FUNCTION session_ledger.dashboard_bookings(p_booking_ids uuid[])
RETURNS TABLE (booking_id uuid, in_app boolean, booking_status text, purchase_id uuid, client_id uuid,
               start_time timestamptz, ledger_state text, ledger_purchase_id uuid, ledger_reason text,
               updated_at timestamptz, out_of_sync boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(b.id, l.booking_id), b.id IS NOT NULL, b.status::text, b.purchase_id,
           coalesce(b.client_id, l.client_id), b.start_time, l.state, l.purchase_id, l.reason, l.updated_at,
           -- session_ledger.out_of_sync's test, for these bookings only
           session_ledger.consumed_pack(b.status, b.purchase_id, c.consuming_statuses)
               IS DISTINCT FROM session_ledger.judged_pack(l.state, l.purchase_id)
    FROM (SELECT b.* FROM public.bookings b WHERE b.id OPERATOR(pg_catalog.=) ANY (p_booking_ids)) b
    FULL JOIN (SELECT l.* FROM session_ledger.charges l WHERE l.booking_id OPERATOR(pg_catalog.=) ANY (p_booking_ids)) l
           ON l.booking_id OPERATOR(pg_catalog.=) b.id
    CROSS JOIN session_ledger.config c
    ORDER BY 1
    LIMIT 1000
$$;

-- EXECUTE on these goes to session_ledger_listener only, in 90_grants.sql, which revokes
-- everything from PUBLIC and the API roles first and runs after this file on every migrate.
