-- Privileges, re-stated on every migrate: revoke everything from PUBLIC and the
-- API roles, then grant exactly what each role needs. Defaults are never trusted
-- to be closed (Supabase grants the API roles ALL on new objects in public, and a
-- project may have granted more elsewhere).

DO $$
DECLARE
    r text;
    q text;
    rel regclass;
BEGIN
    REVOKE ALL ON SCHEMA session_ledger FROM PUBLIC;
    REVOKE ALL ON ALL TABLES IN SCHEMA session_ledger FROM PUBLIC;
    REVOKE ALL ON ALL SEQUENCES IN SCHEMA session_ledger FROM PUBLIC;
    REVOKE ALL ON ALL FUNCTIONS IN SCHEMA session_ledger FROM PUBLIC;
    REVOKE ALL ON FUNCTION public.use_session(uuid), public.use_session(uuid, timestamptz),
                           public.use_session(uuid, text), public.release_session(uuid),
                           public.release_session(uuid, text) FROM PUBLIC;

    -- Our queues' tables and their msg_id sequences, and PGMQ's own catalog tables.
    FOREACH q IN ARRAY ARRAY['q_booking_events', 'a_booking_events', 'q_booking_events_dlq', 'a_booking_events_dlq',
                             'q_booking_events_msg_id_seq', 'q_booking_events_dlq_msg_id_seq',
                             'meta', 'notify_insert_throttle', 'topic_bindings'] LOOP
        rel := pg_catalog.to_regclass('pgmq.' || q);
        CONTINUE WHEN rel IS NULL;
        EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC', rel);
        FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role', 'session_ledger_listener'] LOOP
            CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r);
            -- service_role keeps whatever PGMQ's own catalog grants it: other queues may rely on it
            CONTINUE WHEN r = 'service_role' AND q IN ('meta', 'notify_insert_throttle', 'topic_bindings');
            EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM %I', rel, r);
        END LOOP;
    END LOOP;
    -- Row-level security on our queue tables: nobody but their owner (our functions) reads them.
    FOREACH q IN ARRAY ARRAY['q_booking_events', 'a_booking_events', 'q_booking_events_dlq', 'a_booking_events_dlq'] LOOP
        EXECUTE pg_catalog.format('ALTER TABLE pgmq.%I ENABLE ROW LEVEL SECURITY', q);
    END LOOP;
    -- Every ledger table has RLS on, and one policy that says so: no row for anyone but
    -- the owner, whose functions bypass RLS. (Without a policy the effect is the same,
    -- but linters cannot tell a deliberate lock from a forgotten one.)
    FOR rel IN SELECT c.oid::regclass FROM pg_catalog.pg_class c
               WHERE c.relnamespace = 'session_ledger'::regnamespace AND c.relkind = 'r' LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', rel);
        EXECUTE pg_catalog.format('DROP POLICY IF EXISTS owner_only ON %s', rel);
        EXECUTE pg_catalog.format('CREATE POLICY owner_only ON %s AS RESTRICTIVE FOR ALL TO PUBLIC USING (false)', rel);
    END LOOP;

    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role', 'session_ledger_listener'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r);
        EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA session_ledger FROM %I', r);
        EXECUTE pg_catalog.format('REVOKE ALL ON ALL TABLES IN SCHEMA session_ledger FROM %I', r);
        EXECUTE pg_catalog.format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA session_ledger FROM %I', r);
        EXECUTE pg_catalog.format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA session_ledger FROM %I', r);
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION public.use_session(uuid), public.use_session(uuid, timestamptz), '
                                  'public.use_session(uuid, text), public.release_session(uuid), '
                                  'public.release_session(uuid, text) FROM %I', r);
    END LOOP;

    -- The app's tables the ledger reads and writes: no API role needs TRIGGER (a
    -- trigger of its own would run as the owner whenever the ledger writes the
    -- table), TRUNCATE (it fires no row trigger, so it goes around the guard) or
    -- REFERENCES. Supabase's default privileges grant all three to anon and
    -- authenticated. What is revoked is recorded, for `listener uninstall --keep-grants`.
    WITH held AS (
        SELECT 'public.' || c.relname AS table_name,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                    ELSE (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = a.grantee) END AS grantee,
               a.privilege_type AS privilege
        FROM pg_catalog.pg_class c
        CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS a
        WHERE c.oid IN ('public.bookings'::regclass, 'public.client_purchases'::regclass)
          AND a.privilege_type IN ('TRIGGER', 'TRUNCATE', 'REFERENCES')
          AND (a.grantee = 0 OR a.grantee IN (SELECT r.oid FROM pg_catalog.pg_roles r
                                              WHERE r.rolname IN ('anon', 'authenticated')))
    )
    INSERT INTO session_ledger.revoked_app_grants (table_name, grantee, privilege)
    SELECT h.table_name, h.grantee, h.privilege FROM held h
    ON CONFLICT DO NOTHING;
    REVOKE TRIGGER, TRUNCATE, REFERENCES ON public.bookings, public.client_purchases FROM PUBLIC;
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r);
        EXECUTE pg_catalog.format('REVOKE TRIGGER, TRUNCATE, REFERENCES ON public.bookings, public.client_purchases FROM %I', r);
    END LOOP;

    -- The listener's role: its own entry points, and the tables check_schema reads.
    GRANT USAGE ON SCHEMA session_ledger TO session_ledger_listener;
    GRANT EXECUTE ON FUNCTION
        session_ledger.read_events(int, int),
        session_ledger.handle_batch_v3(uuid, bigint[], bigint[], text[]),
        session_ledger.handle_batch_v2(uuid, bigint[], bigint[], text[]),
        session_ledger.handle_batch(uuid, bigint[], uuid[], timestamptz[], bigint[], text[], boolean),
        session_ledger.heartbeat(uuid, text, int, boolean),
        session_ledger.stop_listener(uuid),
        session_ledger.status(),
        session_ledger.queue_depths(),
        session_ledger.pause_state(),
        session_ledger.drain(int),
        session_ledger.installed_schema(),
        session_ledger.app_keys(),
        session_ledger.complete_past_bookings(int, interval),
        -- the dashboard's reads and its actions (70_dashboard.sql)
        session_ledger.dashboard_lag(int),
        session_ledger.dashboard_dead_letters(int),
        session_ledger.dashboard_unfunded(int),
        session_ledger.dashboard_out_of_sync(int),
        session_ledger.dashboard_recent_changes(int, timestamptz, uuid),
        session_ledger.dashboard_dead_letters_by_id(bigint[]),
        session_ledger.dashboard_absorbed_calls(int),
        session_ledger.dashboard_redrive(bigint[]),
        session_ledger.dashboard_replay(uuid),
        session_ledger.dashboard_discard(bigint[], text),
        session_ledger.dashboard_names(text[]),
        session_ledger.dashboard_search(text, int),
        session_ledger.dashboard_packs(uuid[], uuid[], int),
        session_ledger.dashboard_pack_charges(uuid, text, int),
        session_ledger.dashboard_pack_calls(uuid, int),
        session_ledger.dashboard_bookings(uuid[]),
        -- the operator's functions (35_operator.sql): the dashboard's discard, status' dead-letter ids
        session_ledger.discard_dead_letters(bigint[], text),
        session_ledger.status_details(int)
    TO session_ledger_listener;

    -- The app: the trainer's buttons (judged at now(), by the one allow-list), old and
    -- new, and the cron path.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        GRANT EXECUTE ON FUNCTION public.use_session(uuid), public.release_session(uuid),
                                  public.use_session(uuid, text), public.release_session(uuid, text) TO authenticated;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
        GRANT EXECUTE ON FUNCTION public.use_session(uuid), public.release_session(uuid),
                                  public.use_session(uuid, text), public.release_session(uuid, text) TO service_role;
        GRANT USAGE ON SCHEMA session_ledger TO service_role;
        GRANT EXECUTE ON FUNCTION session_ledger.complete_past_bookings(int, interval) TO service_role;
    END IF;
END
$$;
