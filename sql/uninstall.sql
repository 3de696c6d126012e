-- `listener uninstall`: remove the session ledger and leave the app as it was.
--
-- Runs inside one transaction. Drops the bookings triggers and the packs'
-- trigger, puts back the app's own use_session / release_session (saved by
-- migration 0001 in session_ledger.replaced_functions), drops the ledger's own forms
-- use_session(uuid, timestamptz), use_session(uuid, text) and
-- release_session(uuid, text), both queues, and the session_ledger schema.
-- The restored functions check nobody, so EXECUTE on them is revoked from PUBLIC,
-- anon and authenticated, and only service_role (the server side) keeps it. To
-- keep the grants they hold instead, set session_ledger.uninstall_keep_grants to
-- on in the same transaction first (`listener uninstall --keep-grants` does); it
-- also gives back the table privileges migrate revoked from the API roles.
-- The app's tables and every pack's balance are left untouched. The pgmq schema
-- stays (other queues may live in it), and so does the cluster-wide role
-- session_ledger_listener (other databases of the cluster may use it).

-- No completion may slip in while the triggers are being dropped.
LOCK TABLE public.bookings IN SHARE ROW EXCLUSIVE MODE;

DROP TRIGGER IF EXISTS session_ledger_enqueue_insert ON public.bookings;
DROP TRIGGER IF EXISTS session_ledger_enqueue_update ON public.bookings;
DROP TRIGGER IF EXISTS session_ledger_enqueue_delete ON public.bookings;
DROP TRIGGER IF EXISTS session_ledger_pack_changes ON public.client_purchases;
DROP TRIGGER IF EXISTS session_ledger_refuse_truncate ON public.bookings;
DROP TRIGGER IF EXISTS session_ledger_refuse_truncate ON public.client_purchases;

-- The TRIGGER, TRUNCATE and REFERENCES privileges migrate revoked from the API roles
-- stay revoked: no app flow needs them. `--keep-grants` gives back what was held.
DO $$
DECLARE
    g record;
BEGIN
    IF pg_catalog.to_regclass('session_ledger.revoked_app_grants') IS NOT NULL
       AND pg_catalog.current_setting('session_ledger.uninstall_keep_grants', true) IS NOT DISTINCT FROM 'on' THEN
        FOR g IN SELECT r.table_name, r.grantee, r.privilege FROM session_ledger.revoked_app_grants r
                 WHERE pg_catalog.to_regclass(r.table_name) IS NOT NULL
                   AND (r.grantee OPERATOR(pg_catalog.=) 'PUBLIC' OR pg_catalog.to_regrole(r.grantee) IS NOT NULL)
                 ORDER BY 1, 2, 3 LOOP
            EXECUTE pg_catalog.format('GRANT %s ON %s TO %s', g.privilege, pg_catalog.to_regclass(g.table_name),
                                      CASE WHEN g.grantee OPERATOR(pg_catalog.=) 'PUBLIC' THEN 'PUBLIC'
                                           ELSE pg_catalog.quote_ident(g.grantee) END);
        END LOOP;
    END IF;
END
$$;

DO $$
DECLARE
    f record;
    api_role pg_catalog.text;
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
                -- The ledger's description of it (95_comments.sql) no longer holds.
                EXECUTE 'COMMENT ON FUNCTION ' || pg_catalog.to_regprocedure(f.signature)::text || ' IS NULL';
                -- The app's bodies let any caller move any pack's sessions: from the
                -- browser's roles that is a charge on another organisation's pack.
                CONTINUE WHEN pg_catalog.current_setting('session_ledger.uninstall_keep_grants', true)
                              IS NOT DISTINCT FROM 'on';
                EXECUTE 'REVOKE EXECUTE ON FUNCTION ' || pg_catalog.to_regprocedure(f.signature)::text
                        || ' FROM PUBLIC';
                FOREACH api_role IN ARRAY ARRAY['anon', 'authenticated'] LOOP
                    CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) api_role);
                    EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM %I',
                                              pg_catalog.to_regprocedure(f.signature), api_role);
                END LOOP;
                IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) 'service_role') THEN
                    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO service_role',
                                              pg_catalog.to_regprocedure(f.signature));
                END IF;
            ELSIF pg_catalog.to_regprocedure(f.signature) IS NOT NULL THEN
                -- The app had no such function: the migration created it.
                EXECUTE 'DROP FUNCTION ' || pg_catalog.to_regprocedure(f.signature)::text;
            END IF;
        END LOOP;
    END IF;
END
$$;

DROP FUNCTION IF EXISTS public.use_session(uuid, timestamptz);
DROP FUNCTION IF EXISTS public.use_session(uuid, text);
DROP FUNCTION IF EXISTS public.release_session(uuid, text);

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
