-- Complete one booking with plain SQL and watch the listener charge its pack.
-- Works on a database with the demo schema (for the real app's schema, see
-- examples/supabase_app/complete_a_booking.sql) and a running listener:
--   listener dev:    psql "$DATABASE_URL" -f examples/complete_a_booking.sql
--   docker compose:  docker compose exec -T db psql -U postgres -d app < examples/complete_a_booking.sql
\set ON_ERROR_STOP on
\pset footer off

-- An organisation, its trainer, a client, a 10-session pack and a session that ended an hour ago.
INSERT INTO public.orgs (name, slug) VALUES ('psql studio', 'psql-' || gen_random_uuid()) RETURNING id AS org \gset
INSERT INTO public.org_members (org_id, user_id, role) VALUES (:'org', gen_random_uuid(), 'staff');
INSERT INTO public.clients (org_id, full_name) VALUES (:'org', 'psql client') RETURNING id AS client \gset
INSERT INTO public.client_purchases (org_id, client_id, sessions_total)
VALUES (:'org', :'client', 10) RETURNING id AS pack \gset
INSERT INTO public.bookings (org_id, client_id, start_time, end_time, duration_mins, purchase_id)
VALUES (:'org', :'client', now() - interval '2 hours', now() - interval '1 hour', 60, :'pack')
RETURNING id AS booking \gset

\echo before:
SELECT sessions_used, sessions_remaining FROM public.client_purchases WHERE id = :'pack';

-- The trainer marks it done. The trigger enqueues an event in this same transaction.
UPDATE public.bookings SET status = 'completed' WHERE id = :'booking';

-- Wait (up to 10 s) for the listener to record the charge.
SELECT set_config('example.booking', :'booking', false) \gset
DO $$
BEGIN
    FOR i IN 1..100 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM session_ledger.charges
                          WHERE booking_id = current_setting('example.booking')::uuid);
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;

\echo after:
SELECT p.sessions_used, p.sessions_remaining, l.state AS ledger, l.source
FROM public.client_purchases p
LEFT JOIN session_ledger.charges l ON l.booking_id = :'booking'
WHERE p.id = :'pack';
