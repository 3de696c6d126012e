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

-- One page of the ledger's changes, newest first, with who caused each row's last
-- change (charges.caused_by). Keyset-paged: a page starts after the row
-- (p_before_at, p_before_booking) that ended the previous one, so rows written
-- meanwhile never shift a page; NULL p_before_at is the newest page.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_recent_changes(
    p_limit int, p_before_at timestamptz, p_before_booking uuid
)
RETURNS TABLE (booking_id uuid, purchase_id uuid, state text, reason text, source text,
               updated_at timestamptz, by_role text, by_uid text, trace text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.booking_id, l.purchase_id, l.state, l.reason, l.source, l.updated_at,
           l.caused_by OPERATOR(pg_catalog.->>) 'role', l.caused_by OPERATOR(pg_catalog.->>) 'uid',
           l.caused_by OPERATOR(pg_catalog.->>) 'trace'
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
               by_role text, by_uid text, trace text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pc.id, pc.called_at, pc.kind, pc.purchase_id, pc.booking_id,
           pc.caused_by OPERATOR(pg_catalog.->>) 'role', pc.caused_by OPERATOR(pg_catalog.->>) 'uid',
           pc.caused_by OPERATOR(pg_catalog.->>) 'trace'
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

-- EXECUTE on these goes to session_ledger_listener only, in 90_grants.sql, which revokes
-- everything from PUBLIC and the API roles first and runs after this file on every migrate.
