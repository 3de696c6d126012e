-- The coaching app's own schema, as it stands before this project is installed.
-- `listener migrate --with-demo-schema` applies it to a blank database so the demo,
-- the tests and `listener dev` have something shaped like the real app.
-- use_session below is the app's original, unsafe version on purpose: migration
-- 0001 hardens it exactly as it would on the real database.

-- Supabase's API roles. They are cluster-wide, so create them only when missing;
-- two databases being prepared at once may race, hence the exception handlers.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                IF r = 'service_role' THEN
                    EXECUTE format('CREATE ROLE %I NOLOGIN BYPASSRLS', r);
                ELSE
                    EXECUTE format('CREATE ROLE %I NOLOGIN', r);
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
END
$$;

CREATE SCHEMA IF NOT EXISTS auth;

CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE SET search_path = ''
AS $$
    SELECT coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$$;

GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;

-- Column names and types as in the real app (examples/supabase_app/schema.sql);
-- user ids are plain uuids here, as this schema has no auth.users.
CREATE TYPE public.org_role AS ENUM ('owner', 'staff', 'accountant_readonly');

CREATE TABLE public.orgs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    slug text NOT NULL UNIQUE
);

CREATE TABLE public.org_members (
    org_id uuid NOT NULL REFERENCES public.orgs (id) ON DELETE CASCADE,
    user_id uuid NOT NULL,
    role public.org_role NOT NULL DEFAULT 'staff',
    PRIMARY KEY (org_id, user_id)
);

CREATE TABLE public.clients (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL REFERENCES public.orgs (id) ON DELETE CASCADE,
    full_name text NOT NULL,
    auth_user_id uuid
);

CREATE TABLE public.client_purchases (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL REFERENCES public.orgs (id) ON DELETE CASCADE,
    client_id uuid NOT NULL REFERENCES public.clients (id) ON DELETE CASCADE,
    amount_paid_cents int NOT NULL DEFAULT 0,
    sessions_total int,
    sessions_used int NOT NULL DEFAULT 0,
    sessions_remaining int GENERATED ALWAYS AS (sessions_total - sessions_used) STORED,
    purchased_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    payment_status text NOT NULL DEFAULT 'succeeded'
        CHECK (payment_status IN ('pending', 'succeeded', 'failed', 'refunded'))
);

CREATE TABLE public.bookings (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL REFERENCES public.orgs (id) ON DELETE CASCADE,
    client_id uuid NOT NULL REFERENCES public.clients (id) ON DELETE CASCADE,
    start_time timestamptz NOT NULL,
    end_time timestamptz NOT NULL,
    duration_mins int,
    purchase_id uuid REFERENCES public.client_purchases (id),
    status text NOT NULL DEFAULT 'confirmed'
        CHECK (status IN ('pending', 'confirmed', 'cancelled', 'completed', 'no_show')),
    cancelled_at timestamptz,
    booked_by uuid,
    booking_source text,
    notes text,
    reminder_sent boolean NOT NULL DEFAULT false,
    feedback_sent boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX bookings_purchase_id_idx ON public.bookings (purchase_id);
CREATE INDEX bookings_status_end_time_idx ON public.bookings (status, end_time);

-- The app's own row trigger, kept so the project is tested beside it.
CREATE FUNCTION public.touch_updated_at() RETURNS trigger
LANGUAGE plpgsql SET search_path = ''
AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER bookings_touch_updated_at
    BEFORE UPDATE ON public.bookings
    FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();

CREATE FUNCTION public.is_org_member(_org uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (
        SELECT 1 FROM public.org_members m
        WHERE m.org_id = _org AND m.user_id = auth.uid()
    )
$$;

-- The app's original deduction: read, then update, with no locking and no
-- pinned search_path. Migration 0001 replaces it.
CREATE FUNCTION public.use_session(p_purchase_id uuid) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
AS $$
DECLARE
    v_remaining int;
    v_expires timestamptz;
BEGIN
    SELECT sessions_remaining, expires_at INTO v_remaining, v_expires
    FROM client_purchases WHERE id = p_purchase_id;
    IF v_remaining IS NULL OR v_remaining <= 0 OR (v_expires IS NOT NULL AND v_expires < now()) THEN
        RETURN false;
    END IF;
    UPDATE client_purchases SET sessions_used = sessions_used + 1 WHERE id = p_purchase_id;
    RETURN true;
END
$$;

CREATE FUNCTION public.release_session(p_purchase_id uuid) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER
AS $$
DECLARE
    v_used int;
BEGIN
    SELECT sessions_used INTO v_used FROM client_purchases WHERE id = p_purchase_id;
    IF v_used IS NULL OR v_used <= 0 THEN
        RETURN -1;
    END IF;
    UPDATE client_purchases SET sessions_used = sessions_used - 1 WHERE id = p_purchase_id;
    RETURN v_used - 1;
END
$$;

ALTER TABLE public.orgs ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.org_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.client_purchases ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.bookings ENABLE ROW LEVEL SECURITY;

CREATE POLICY orgs_members ON public.orgs
    FOR SELECT TO authenticated USING (public.is_org_member(id));
CREATE POLICY org_members_self ON public.org_members
    FOR SELECT TO authenticated USING (public.is_org_member(org_id));
CREATE POLICY clients_members ON public.clients
    FOR ALL TO authenticated
    USING (public.is_org_member(org_id)) WITH CHECK (public.is_org_member(org_id));
CREATE POLICY purchases_members ON public.client_purchases
    FOR ALL TO authenticated
    USING (public.is_org_member(org_id)) WITH CHECK (public.is_org_member(org_id));
CREATE POLICY bookings_members ON public.bookings
    FOR ALL TO authenticated
    USING (public.is_org_member(org_id)) WITH CHECK (public.is_org_member(org_id));

-- Supabase's default grants: the API roles may use every table, as RLS decides.
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO anon, authenticated, service_role;
