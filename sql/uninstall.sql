-- `listener uninstall`: remove the session ledger and leave the app as it was.
--
-- Runs inside one transaction. Drops the bookings triggers, puts back the app's
-- own use_session / release_session (saved by migration 0001 in
-- session_ledger.replaced_functions), drops the listener's form
-- use_session(uuid, timestamptz), both queues, and the session_ledger schema.
-- The app's tables and every pack's balance are left untouched. The pgmq schema
-- stays (other queues may live in it), and so does the cluster-wide role
-- session_ledger_listener (other databases of the cluster may use it).

-- No completion may slip in while the triggers are being dropped.
LOCK TABLE public.bookings IN SHARE ROW EXCLUSIVE MODE;

DROP TRIGGER IF EXISTS session_ledger_enqueue_insert ON public.bookings;
DROP TRIGGER IF EXISTS session_ledger_enqueue_update ON public.bookings;
DROP TRIGGER IF EXISTS session_ledger_enqueue_delete ON public.bookings;

DO $$
DECLARE
    f record;
BEGIN
    IF pg_catalog.to_regclass('session_ledger.replaced_functions') IS NOT NULL THEN
        FOR f IN SELECT r.signature, r.definition FROM session_ledger.replaced_functions r ORDER BY r.signature LOOP
            IF f.definition IS NOT NULL THEN
                -- pg_get_functiondef() wrote CREATE OR REPLACE with the same signature,
                -- so existing grants on the function are kept (anon stays revoked).
                EXECUTE f.definition;
                -- The app's bodies name its tables unqualified: pin the path they were
                -- written for, with pg_temp last, so a temporary table cannot shadow a pack.
                EXECUTE 'ALTER FUNCTION ' || pg_catalog.to_regprocedure(f.signature)::text
                        || ' SET search_path = public, extensions, pg_temp';
            ELSIF pg_catalog.to_regprocedure(f.signature) IS NOT NULL THEN
                -- The app had no such function: the migration created it.
                EXECUTE 'DROP FUNCTION ' || pg_catalog.to_regprocedure(f.signature)::text;
            END IF;
        END LOOP;
    END IF;
END
$$;

DROP FUNCTION IF EXISTS public.use_session(uuid, timestamptz);

DO $$
BEGIN
    IF pg_catalog.to_regclass('pgmq.meta') IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = 'booking_events') THEN
            PERFORM pgmq.drop_queue('booking_events');
        END IF;
        IF EXISTS (SELECT 1 FROM pgmq.meta WHERE queue_name = 'booking_events_dlq') THEN
            PERFORM pgmq.drop_queue('booking_events_dlq');
        END IF;
    END IF;
END
$$;

-- CASCADE takes the schema's tables, functions and grants, and anything the app
-- built on them (a view over session_ledger.charges, say): nothing may point into
-- a schema that is gone.
DROP SCHEMA IF EXISTS session_ledger CASCADE;
