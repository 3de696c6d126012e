-- Complete a seeded booking as the trainer's browser does (PostgREST: SET LOCAL ROLE
-- authenticated, the JWT's claims), and watch the listener charge its pack. Needs
--   listener dev --schema examples/supabase_app/schema.sql --schema examples/supabase_app/seed.sql
--   psql "$DATABASE_URL" -f examples/supabase_app/complete_a_booking.sql
\set ON_ERROR_STOP on
\pset footer off

\echo before:
SELECT sessions_used, sessions_remaining FROM public.client_purchases
WHERE id = '00000000-0000-4000-8000-0000000000a5';

BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"sub": "00000000-0000-4000-8000-00000000a001", "role": "authenticated"}', true)
    \gset
SELECT set_config('request.headers', '{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}', true)
    \gset
UPDATE public.bookings SET status = 'completed' WHERE id = '00000000-0000-4000-8000-0000000000a7';
COMMIT;

-- Wait (up to 10 s) for the listener to record the charge.
DO $$
BEGIN
    FOR i IN 1..100 LOOP
        EXIT WHEN EXISTS (SELECT 1 FROM session_ledger.charges
                          WHERE booking_id = '00000000-0000-4000-8000-0000000000a7');
        PERFORM pg_sleep(0.1);
    END LOOP;
END
$$;

\echo after:
SELECT p.sessions_used, p.sessions_remaining, l.state AS ledger, l.caused_by
FROM public.client_purchases p
LEFT JOIN session_ledger.charges l ON l.booking_id = '00000000-0000-4000-8000-0000000000a7'
WHERE p.id = '00000000-0000-4000-8000-0000000000a5';
