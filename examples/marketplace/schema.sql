-- A class marketplace on Supabase: users buy credits into one wallet each and book
-- classes with credits or by card. Its mobile app talks to PostgREST as the signed-in
-- user (role authenticated); its payment webhook and cron use the service-role key.
-- uuid keys; the booking carries its own times and what it costs (credits_used).
--
-- Written for a database set up as Supabase sets one up (sql/supabase_base.sql, or
-- `listener dev --schema`): the API roles, auth.uid(), and default privileges that
-- give anon, authenticated and service_role ALL on new tables in public. Loaded as
-- the platform restores a project's dump: by a superuser, every object then owned by
-- postgres, which runs the migrations.

CREATE TABLE public.credit_wallets (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL UNIQUE, credits_balance integer NOT NULL DEFAULT 0 CHECK (credits_balance >= 0));

CREATE TABLE public.bookings (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid NOT NULL,
    class_name text NOT NULL, starts_at timestamptz NOT NULL, ends_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'confirmed' CHECK (status IN ('confirmed', 'completed', 'cancelled')),
    payment_method text NOT NULL CHECK (payment_method IN ('credits', 'card')),
    credits_used integer NOT NULL DEFAULT 1 CHECK (credits_used >= 0));

CREATE INDEX bookings_user_idx ON public.bookings (user_id);
CREATE INDEX bookings_confirmed_end_idx ON public.bookings (ends_at) WHERE status = 'confirmed';

ALTER TABLE public.credit_wallets OWNER TO postgres;
ALTER TABLE public.bookings OWNER TO postgres;

-- Users see and write their own rows; service_role bypasses RLS. A wallet's balance
-- is the platform's to write (the payment webhook, the ledger): users only read it.
ALTER TABLE public.credit_wallets ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.bookings ENABLE ROW LEVEL SECURITY;

CREATE POLICY "wallets read by their user" ON public.credit_wallets
    FOR SELECT TO authenticated USING (auth.uid() = user_id);

CREATE POLICY "bookings read by their user" ON public.bookings
    FOR SELECT TO authenticated USING (auth.uid() = user_id);
CREATE POLICY "bookings made by their user" ON public.bookings
    FOR INSERT TO authenticated WITH CHECK (auth.uid() = user_id);
CREATE POLICY "bookings changed by their user" ON public.bookings
    FOR UPDATE TO authenticated USING (auth.uid() = user_id) WITH CHECK (auth.uid() = user_id);
