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

-- What each class costs, in credits: the studios' price list, written by the platform.
CREATE TABLE public.classes (name text PRIMARY KEY, credits integer NOT NULL CHECK (credits >= 0));

CREATE TABLE public.bookings (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid NOT NULL,
    class_name text NOT NULL REFERENCES public.classes (name), starts_at timestamptz NOT NULL, ends_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'confirmed' CHECK (status IN ('confirmed', 'completed', 'cancelled')),
    payment_method text NOT NULL CHECK (payment_method IN ('credits', 'card')),
    credits_used integer NOT NULL DEFAULT 1 CHECK (credits_used >= 0));

CREATE INDEX bookings_user_idx ON public.bookings (user_id);
CREATE INDEX bookings_confirmed_end_idx ON public.bookings (ends_at) WHERE status = 'confirmed';

ALTER TABLE public.classes OWNER TO postgres;
ALTER TABLE public.credit_wallets OWNER TO postgres;
ALTER TABLE public.bookings OWNER TO postgres;

-- A booking costs what its class costs when it is booked, whatever the request says:
-- credits_used is what the ledger takes from the wallet (the mapping's
-- pack.amount_column), so whoever writes it sets the price. Set here for every INSERT;
-- the API roles may not write it at all (the column privileges below), and only the
-- platform (service_role: support, a refund of part of a class) changes it afterwards.
-- The ledger guards a change of it on a booking paid by credits as it guards a moved
-- session; these keep a user from pricing their own booking in the first place.
CREATE FUNCTION public.price_booking() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    SELECT c.credits INTO NEW.credits_used FROM public.classes c WHERE c.name = NEW.class_name;
    RETURN NEW;
END
$$;
ALTER FUNCTION public.price_booking() OWNER TO postgres;
REVOKE ALL ON FUNCTION public.price_booking() FROM PUBLIC, anon, authenticated, service_role;
CREATE TRIGGER price_booking BEFORE INSERT ON public.bookings
    FOR EACH ROW EXECUTE FUNCTION public.price_booking();

-- Supabase's default privileges give the API roles ALL on every new table, and a
-- column privilege cannot take back part of a table-wide one: the table-wide INSERT and
-- UPDATE go, and the columns a user writes come back one by one. credits_used is not
-- among them, nor is user_id after the booking is made.
REVOKE INSERT, UPDATE ON public.bookings FROM anon, authenticated;
GRANT INSERT (id, user_id, class_name, starts_at, ends_at, status, payment_method) ON public.bookings TO authenticated;
GRANT UPDATE (class_name, starts_at, ends_at, status, payment_method) ON public.bookings TO authenticated;
-- The price list is the platform's: users read it.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON public.classes FROM anon, authenticated;

-- Users see and write their own rows; service_role bypasses RLS. A wallet's balance
-- is the platform's to write (the payment webhook, the ledger): users only read it.
ALTER TABLE public.classes ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.credit_wallets ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.bookings ENABLE ROW LEVEL SECURITY;

CREATE POLICY "classes read by everyone" ON public.classes FOR SELECT TO anon, authenticated USING (true);

CREATE POLICY "wallets read by their user" ON public.credit_wallets
    FOR SELECT TO authenticated USING (auth.uid() = user_id);

CREATE POLICY "bookings read by their user" ON public.bookings
    FOR SELECT TO authenticated USING (auth.uid() = user_id);
CREATE POLICY "bookings made by their user" ON public.bookings
    FOR INSERT TO authenticated WITH CHECK (auth.uid() = user_id);
CREATE POLICY "bookings changed by their user" ON public.bookings
    FOR UPDATE TO authenticated USING (auth.uid() = user_id) WITH CHECK (auth.uid() = user_id);
