-- Seed data for the real app's schema (examples/supabase_app/schema.sql), for `listener dev`:
--   listener dev --schema examples/supabase_app/schema.sql --schema examples/supabase_app/seed.sql
-- Two studios, each with a trainer who signs in, a client who signs in, a 10-session pack
-- offer and a pack, and bookings: three past and confirmed (the cron's to complete), one
-- tomorrow. Fixed ids, so examples/supabase_app/complete_a_booking.sql can name them.

INSERT INTO auth.users (id, aud, role, email) VALUES
    ('00000000-0000-4000-8000-00000000a001', 'authenticated', 'authenticated', 'trainer@northside.example'),
    ('00000000-0000-4000-8000-00000000a002', 'authenticated', 'authenticated', 'ana@northside.example'),
    ('00000000-0000-4000-8000-00000000b001', 'authenticated', 'authenticated', 'trainer@harbour.example'),
    ('00000000-0000-4000-8000-00000000b002', 'authenticated', 'authenticated', 'ben@harbour.example');

INSERT INTO public.orgs (id, name, slug) VALUES
    ('00000000-0000-4000-8000-0000000000a0', 'Northside Coaching', 'northside'),
    ('00000000-0000-4000-8000-0000000000b0', 'Harbour Fitness', 'harbour');

INSERT INTO public.org_members (org_id, user_id, role) VALUES
    ('00000000-0000-4000-8000-0000000000a0', '00000000-0000-4000-8000-00000000a001', 'owner'),
    ('00000000-0000-4000-8000-0000000000b0', '00000000-0000-4000-8000-00000000b001', 'owner');

INSERT INTO public.clients (id, org_id, full_name, email, auth_user_id) VALUES
    ('00000000-0000-4000-8000-0000000000a3', '00000000-0000-4000-8000-0000000000a0', 'Ana', 'ana@northside.example',
     '00000000-0000-4000-8000-00000000a002'),
    ('00000000-0000-4000-8000-0000000000b3', '00000000-0000-4000-8000-0000000000b0', 'Ben', 'ben@harbour.example',
     '00000000-0000-4000-8000-00000000b002');

INSERT INTO public.offers (id, org_id, name, offer_type, price_cents, sessions_count, validity_days) VALUES
    ('00000000-0000-4000-8000-0000000000a4', '00000000-0000-4000-8000-0000000000a0', '10 sessions', 'session_pack',
     50000, 10, 180),
    ('00000000-0000-4000-8000-0000000000b4', '00000000-0000-4000-8000-0000000000b0', '10 sessions', 'session_pack',
     45000, 10, 180);

INSERT INTO public.client_purchases
    (id, org_id, client_id, offer_id, amount_paid_cents, payment_method, payment_status, sessions_total, sessions_used,
     expires_at)
VALUES
    ('00000000-0000-4000-8000-0000000000a5', '00000000-0000-4000-8000-0000000000a0',
     '00000000-0000-4000-8000-0000000000a3', '00000000-0000-4000-8000-0000000000a4', 50000, 'card', 'succeeded', 10, 2,
     now() + interval '150 days'),
    ('00000000-0000-4000-8000-0000000000b5', '00000000-0000-4000-8000-0000000000b0',
     '00000000-0000-4000-8000-0000000000b3', '00000000-0000-4000-8000-0000000000b4', 45000, 'cash', 'pending', 10, 0,
     NULL);

INSERT INTO public.bookings
    (id, org_id, client_id, start_time, end_time, duration_mins, purchase_id, status, booked_by, booking_source)
VALUES
    ('00000000-0000-4000-8000-0000000000a6', '00000000-0000-4000-8000-0000000000a0',
     '00000000-0000-4000-8000-0000000000a3', now() - interval '2 days', now() - interval '2 days' + interval '1 hour',
     60, '00000000-0000-4000-8000-0000000000a5', 'confirmed', '00000000-0000-4000-8000-00000000a001', 'trainer'),
    ('00000000-0000-4000-8000-0000000000a7', '00000000-0000-4000-8000-0000000000a0',
     '00000000-0000-4000-8000-0000000000a3', now() - interval '2 hours', now() - interval '1 hour',
     60, '00000000-0000-4000-8000-0000000000a5', 'confirmed', '00000000-0000-4000-8000-00000000a001', 'trainer'),
    ('00000000-0000-4000-8000-0000000000a8', '00000000-0000-4000-8000-0000000000a0',
     '00000000-0000-4000-8000-0000000000a3', now() + interval '1 day', now() + interval '1 day 1 hour',
     60, NULL, 'confirmed', '00000000-0000-4000-8000-00000000a002', 'client'),
    ('00000000-0000-4000-8000-0000000000b6', '00000000-0000-4000-8000-0000000000b0',
     '00000000-0000-4000-8000-0000000000b3', now() - interval '3 hours', now() - interval '2 hours',
     60, '00000000-0000-4000-8000-0000000000b5', 'confirmed', '00000000-0000-4000-8000-00000000b001', 'trainer');
