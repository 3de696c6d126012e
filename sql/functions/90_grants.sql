-- Privileges, re-stated on every migrate: revoke everything from PUBLIC and the
-- API roles, then grant exactly what each role needs. Defaults are never trusted
-- to be closed (Supabase grants the API roles ALL on new objects in public, and a
-- project may have granted more elsewhere).
--
-- A template over the app's mapping (listener/mapping/render.py): the app's tables, its
-- API roles (access.api_roles: none for an app whose server is the only writer), its
-- trusted roles, and its old deduction functions where it has them ([legacy]).
{%- set k = app.keys %}
{%- set access = app.mapping.access %}
{##- Every role the ledger revokes from: the API roles, the trusted roles, the listener's. ##}
{%- set ns = namespace(roles=[]) %}
{%- for r in (access.api_roles | list) + (access.trusted_roles | list) + ['session_ledger_listener'] %}
{%- if r not in ns.roles %}{% set ns.roles = ns.roles + [r] %}{% endif %}
{%- endfor %}
{%- set all_roles = app.lit(ns.roles) ~ '::text[]' %}
{%- set api_roles = app.lit(access.api_roles | list) ~ '::text[]' %}
{##- The app's old functions and the ledger's versions of them: the buttons (old and new)
    go to the signed-in and the trusted; use_session(pack, at), which judges at a chosen
    time, to nobody but the owner. ##}
{%- set legacy = [] %}
{%- set buttons = [] %}
{%- if app.legacy_use %}
{%- set buttons = [app.legacy_use ~ '(' ~ k.pack ~ ')', app.legacy_release ~ '(' ~ k.pack ~ ')',
                   app.legacy_use ~ '(' ~ k.pack ~ ', text)', app.legacy_release ~ '(' ~ k.pack ~ ', text)'] %}
{%- set legacy = buttons + [app.legacy_use ~ '(' ~ k.pack ~ ', timestamptz)'] %}
{%- endif %}

DO $$
DECLARE
    r text;
    q text;
    f text;
    rel regclass;
    v_missing text[];
    -- the listener's entry points (30_queue.sql), the dashboard's reads and its actions
    -- (70_dashboard.sql), the operator's functions (35_operator.sql: the dashboard's
    -- discard, status' dead-letter ids)
    v_listener text[] := ARRAY[
        'read_events', 'handle_batch_v3', 'handle_batch_v2', 'handle_batch', 'heartbeat', 'stop_listener',
        'status', 'queue_depths', 'pause_state', 'drain', 'installed_schema', 'complete_past_bookings',
        'dashboard_lag', 'dashboard_dead_letters', 'dashboard_unfunded', 'dashboard_out_of_sync',
        'dashboard_recent_changes', 'dashboard_dead_letters_by_id', 'dashboard_absorbed_calls',
        'dashboard_redrive', 'dashboard_replay', 'dashboard_discard', 'dashboard_names', 'dashboard_search',
        'dashboard_packs', 'dashboard_pack_charges', 'dashboard_pack_calls', 'dashboard_bookings',
        'discard_dead_letters', 'status_details', 'app_keys'];
BEGIN
    REVOKE ALL ON SCHEMA session_ledger FROM PUBLIC;
    REVOKE ALL ON ALL TABLES IN SCHEMA session_ledger FROM PUBLIC;
    REVOKE ALL ON ALL SEQUENCES IN SCHEMA session_ledger FROM PUBLIC;
    REVOKE ALL ON ALL FUNCTIONS IN SCHEMA session_ledger FROM PUBLIC;
{%- if legacy %}
    REVOKE ALL ON FUNCTION {{ legacy | join(', ') }} FROM PUBLIC;
{%- endif %}

    -- Our queues' tables and their msg_id sequences, and PGMQ's own catalog tables.
    FOREACH q IN ARRAY ARRAY['q_booking_events', 'a_booking_events', 'q_booking_events_dlq', 'a_booking_events_dlq',
                             'q_booking_events_msg_id_seq', 'q_booking_events_dlq_msg_id_seq',
                             'meta', 'notify_insert_throttle', 'topic_bindings'] LOOP
        rel := pg_catalog.to_regclass('pgmq.' || q);
        CONTINUE WHEN rel IS NULL;
        EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC', rel);
        FOREACH r IN ARRAY {{ all_roles }} LOOP
            CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r);
            -- a trusted role (Supabase's service_role) keeps whatever PGMQ's own catalog grants it:
            -- other queues may rely on it
            CONTINUE WHEN r = ANY ({{ app.trusted_roles }}) AND q IN ('meta', 'notify_insert_throttle', 'topic_bindings');
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

    FOREACH r IN ARRAY {{ all_roles }} LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r);
        EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA session_ledger FROM %I', r);
        EXECUTE pg_catalog.format('REVOKE ALL ON ALL TABLES IN SCHEMA session_ledger FROM %I', r);
        EXECUTE pg_catalog.format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA session_ledger FROM %I', r);
        EXECUTE pg_catalog.format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA session_ledger FROM %I', r);
{%- if legacy %}
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION {{ legacy | join(', ') }} FROM %I', r);
{%- endif %}
    END LOOP;

    -- The app's tables the ledger reads and writes: no API role needs TRIGGER (a
    -- trigger of its own would run as the owner whenever the ledger writes the
    -- table), TRUNCATE (it fires no row trigger, so it goes around the guard) or
    -- REFERENCES. Supabase's default privileges grant all three to anon and
    -- authenticated. What is revoked is recorded, for `listener uninstall --keep-grants`.
    WITH held AS (
        SELECT n.nspname || '.' || c.relname AS table_name,
               CASE WHEN a.grantee = 0 THEN 'PUBLIC'
                    ELSE (SELECT r.rolname FROM pg_catalog.pg_roles r WHERE r.oid = a.grantee) END AS grantee,
               a.privilege_type AS privilege
        FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) AS a
        WHERE c.oid IN ({{ app.lit(app.bookings_table) }}::regclass, {{ app.lit(app.packs_table) }}::regclass)
          AND a.privilege_type IN ('TRIGGER', 'TRUNCATE', 'REFERENCES')
          AND (a.grantee = 0 OR a.grantee IN (SELECT r.oid FROM pg_catalog.pg_roles r
                                              WHERE r.rolname = ANY ({{ api_roles }})))
    )
    INSERT INTO session_ledger.revoked_app_grants (table_name, grantee, privilege)
    SELECT h.table_name, h.grantee, h.privilege FROM held h
    ON CONFLICT DO NOTHING;
    REVOKE TRIGGER, TRUNCATE, REFERENCES ON {{ app.bookings_table }}, {{ app.packs_table }} FROM PUBLIC;
    FOREACH r IN ARRAY {{ api_roles }} LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r);
        EXECUTE pg_catalog.format('REVOKE TRIGGER, TRUNCATE, REFERENCES ON {{ app.bookings_table }}, {{ app.packs_table }} FROM %I', r);
    END LOOP;

    -- The listener's role: its own entry points, and no table of the app's. It reaches
    -- the bookings, the packs (and a pack found by its client) and the sessions they are
    -- held at only through these functions, which run as the ledger's owner. Granted by
    -- name: the key types of their parameters are the app's.
    GRANT USAGE ON SCHEMA session_ledger TO session_ledger_listener;
    SELECT array_agg(w.name ORDER BY w.name) INTO v_missing
    FROM unnest(v_listener) AS w(name)
    WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc p
                      WHERE p.pronamespace = 'session_ledger'::regnamespace AND p.proname = w.name);
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'the listener''s functions % are missing', v_missing;
    END IF;
    FOR f IN SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'session_ledger'::regnamespace AND p.proname = ANY (v_listener) LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO session_ledger_listener', f);
    END LOOP;

    -- The app: the trusted roles (the cron path), and for the app's old code the
    -- trainer's buttons (judged at now(), by the one allow-list), old and new.
{%- if legacy and access.mode == 'supabase' %}
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'authenticated') THEN
        GRANT EXECUTE ON FUNCTION {{ buttons | join(', ') }} TO authenticated;
    END IF;
{%- endif %}
    FOREACH r IN ARRAY {{ app.trusted_roles }} LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r);
{%- if legacy %}
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION {{ buttons | join(', ') }} TO %I', r);
{%- endif %}
        EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA session_ledger TO %I', r);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION session_ledger.complete_past_bookings(int, interval) TO %I', r);
    END LOOP;
END
$$;
