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

-- The ledger's most recent changes.
CREATE OR REPLACE FUNCTION session_ledger.dashboard_recent_charges(p_limit int)
RETURNS TABLE (booking_id uuid, purchase_id uuid, state text, reason text, source text,
               updated_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT l.booking_id, l.purchase_id, l.state, l.reason, l.source, l.updated_at
    FROM session_ledger.charges l
    ORDER BY l.updated_at DESC, l.booking_id
    LIMIT least(greatest(p_limit, 0), 1000)
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
