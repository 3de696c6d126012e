-- The coaching app's public schema as `pg_dump --schema-only --schema=public` prints it
-- (PostgreSQL 15, connected as postgres): the tables, functions, policies, view and grants
-- the session ledger builds on, out of the app's 61 tables. Objects are owned by postgres;
-- the grants and default privileges are those Supabase's defaults produce.
--
-- Load it with `listener dev --schema examples/supabase_app/schema.sql`, or from a test
-- (the `ledger_app_schema` fixture returning this path). The loader applies the
-- Supabase-shaped base first (roles, auth.users and auth.uid(), extensions, storage),
-- skips pg_dump's \restrict lines and runs `CREATE SCHEMA public;` as
-- `CREATE SCHEMA IF NOT EXISTS public;`, as every database already has that schema.
--
-- public.use_session and public.release_session are the app's own, unsafe on purpose
-- (no search_path; use_session reads, then updates; release_session is its migration
-- 0032's single UPDATE ... RETURNING); `listener migrate` hardens them.
-- upcoming_bookings has no security_invoker, as in production.

--
-- PostgreSQL database dump
--

\restrict aCD40WLdQBdyWAHacgMbUk2Y46jutNSSePf4M6kmo1R8Y9OGcwqbAsGdx5nGNfk

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: public; Type: SCHEMA; Schema: -; Owner: pg_database_owner
--

CREATE SCHEMA public;


ALTER SCHEMA public OWNER TO pg_database_owner;

--
-- Name: SCHEMA public; Type: COMMENT; Schema: -; Owner: pg_database_owner
--

COMMENT ON SCHEMA public IS 'standard public schema';


--
-- Name: org_role; Type: TYPE; Schema: public; Owner: postgres
--

CREATE TYPE public.org_role AS ENUM (
    'owner',
    'staff',
    'accountant_readonly'
);


ALTER TYPE public.org_role OWNER TO postgres;

--
-- Name: is_org_member(uuid); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.is_org_member(_org uuid) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public'
    AS $$
    SELECT EXISTS (
        SELECT 1 FROM public.org_members
        WHERE org_id = _org AND user_id = auth.uid()
    );
$$;


ALTER FUNCTION public.is_org_member(_org uuid) OWNER TO postgres;

--
-- Name: is_platform_admin(); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.is_platform_admin() RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path TO 'public'
    AS $$
    SELECT coalesce((auth.jwt() -> 'app_metadata' ->> 'platform_admin')::boolean, false);
$$;


ALTER FUNCTION public.is_platform_admin() OWNER TO postgres;

--
-- Name: release_session(uuid); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.release_session(p_purchase_id uuid) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
DECLARE
    v_used integer;
BEGIN
    UPDATE client_purchases
       SET sessions_used = sessions_used - 1
     WHERE id = p_purchase_id AND sessions_used > 0
    RETURNING sessions_used INTO v_used;
    RETURN coalesce(v_used, -1);
END;
$$;


ALTER FUNCTION public.release_session(p_purchase_id uuid) OWNER TO postgres;

--
-- Name: update_updated_at_column(); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.update_updated_at_column() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    NEW.updated_at = now();
    RETURN NEW;
END;
$$;


ALTER FUNCTION public.update_updated_at_column() OWNER TO postgres;

--
-- Name: use_session(uuid); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.use_session(p_purchase_id uuid) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER
    AS $$
DECLARE
    v_purchase client_purchases%ROWTYPE;
BEGIN
    SELECT * INTO v_purchase FROM client_purchases WHERE id = p_purchase_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF v_purchase.sessions_remaining IS NULL OR v_purchase.sessions_remaining <= 0 THEN
        RETURN false;
    END IF;
    IF v_purchase.expires_at IS NOT NULL AND v_purchase.expires_at < now() THEN
        RETURN false;
    END IF;
    UPDATE client_purchases SET sessions_used = sessions_used + 1 WHERE id = p_purchase_id;
    RETURN true;
END;
$$;


ALTER FUNCTION public.use_session(p_purchase_id uuid) OWNER TO postgres;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: bookings; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.bookings (
    id uuid DEFAULT extensions.uuid_generate_v4() NOT NULL,
    org_id uuid NOT NULL,
    client_id uuid NOT NULL,
    start_time timestamp with time zone NOT NULL,
    end_time timestamp with time zone NOT NULL,
    duration_mins integer,
    purchase_id uuid,
    status text DEFAULT 'confirmed'::text NOT NULL,
    cancelled_at timestamp with time zone,
    cancelled_by uuid,
    booked_by uuid,
    booking_source text DEFAULT 'trainer'::text,
    notes text,
    reminder_sent boolean DEFAULT false NOT NULL,
    feedback_sent boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT bookings_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'confirmed'::text, 'cancelled'::text, 'completed'::text, 'no_show'::text])))
);


ALTER TABLE public.bookings OWNER TO postgres;

--
-- Name: client_purchases; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.client_purchases (
    id uuid DEFAULT extensions.uuid_generate_v4() NOT NULL,
    org_id uuid NOT NULL,
    client_id uuid NOT NULL,
    offer_id uuid NOT NULL,
    amount_paid_cents integer DEFAULT 0 NOT NULL,
    payment_method text DEFAULT 'card'::text NOT NULL,
    payment_status text DEFAULT 'pending'::text NOT NULL,
    stripe_payment_intent_id text,
    sessions_total integer,
    sessions_used integer DEFAULT 0 NOT NULL,
    sessions_remaining integer GENERATED ALWAYS AS ((sessions_total - sessions_used)) STORED,
    purchased_at timestamp with time zone DEFAULT now() NOT NULL,
    expires_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT client_purchases_payment_method_check CHECK ((payment_method = ANY (ARRAY['cash'::text, 'card'::text, 'bank_transfer'::text, 'stripe'::text]))),
    CONSTRAINT client_purchases_payment_status_check CHECK ((payment_status = ANY (ARRAY['pending'::text, 'succeeded'::text, 'failed'::text, 'refunded'::text])))
);


ALTER TABLE public.client_purchases OWNER TO postgres;

--
-- Name: clients; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.clients (
    id uuid DEFAULT extensions.uuid_generate_v4() NOT NULL,
    org_id uuid NOT NULL,
    full_name text NOT NULL,
    email text,
    phone text,
    auth_user_id uuid,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);


ALTER TABLE public.clients OWNER TO postgres;

--
-- Name: offers; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.offers (
    id uuid DEFAULT extensions.uuid_generate_v4() NOT NULL,
    org_id uuid NOT NULL,
    name text NOT NULL,
    offer_type text NOT NULL,
    price_cents integer DEFAULT 0 NOT NULL,
    sessions_count integer,
    validity_days integer,
    active boolean DEFAULT true NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT offers_offer_type_check CHECK ((offer_type = ANY (ARRAY['session_pack'::text, 'single_session'::text, 'membership'::text])))
);


ALTER TABLE public.offers OWNER TO postgres;

--
-- Name: org_members; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.org_members (
    id uuid DEFAULT extensions.uuid_generate_v4() NOT NULL,
    org_id uuid NOT NULL,
    user_id uuid NOT NULL,
    role public.org_role DEFAULT 'staff'::public.org_role NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


ALTER TABLE public.org_members OWNER TO postgres;

--
-- Name: orgs; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.orgs (
    id uuid DEFAULT extensions.uuid_generate_v4() NOT NULL,
    name text NOT NULL,
    slug text NOT NULL,
    timezone text DEFAULT 'Europe/London'::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL
);


ALTER TABLE public.orgs OWNER TO postgres;

--
-- Name: upcoming_bookings; Type: VIEW; Schema: public; Owner: postgres
--

CREATE VIEW public.upcoming_bookings AS
 SELECT b.id,
    b.org_id,
    b.client_id,
    c.full_name AS client_name,
    b.start_time,
    b.end_time,
    b.status,
    b.purchase_id,
    p.sessions_remaining,
    p.expires_at AS pack_expires_at
   FROM ((public.bookings b
     JOIN public.clients c ON ((c.id = b.client_id)))
     LEFT JOIN public.client_purchases p ON ((p.id = b.purchase_id)))
  WHERE ((b.start_time > now()) AND (b.status = ANY (ARRAY['pending'::text, 'confirmed'::text])));


ALTER TABLE public.upcoming_bookings OWNER TO postgres;

--
-- Name: bookings bookings_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.bookings
    ADD CONSTRAINT bookings_pkey PRIMARY KEY (id);


--
-- Name: client_purchases client_purchases_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.client_purchases
    ADD CONSTRAINT client_purchases_pkey PRIMARY KEY (id);


--
-- Name: clients clients_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.clients
    ADD CONSTRAINT clients_pkey PRIMARY KEY (id);


--
-- Name: offers offers_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.offers
    ADD CONSTRAINT offers_pkey PRIMARY KEY (id);


--
-- Name: org_members org_members_org_id_user_id_key; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.org_members
    ADD CONSTRAINT org_members_org_id_user_id_key UNIQUE (org_id, user_id);


--
-- Name: org_members org_members_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.org_members
    ADD CONSTRAINT org_members_pkey PRIMARY KEY (id);


--
-- Name: orgs orgs_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.orgs
    ADD CONSTRAINT orgs_pkey PRIMARY KEY (id);


--
-- Name: orgs orgs_slug_key; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.orgs
    ADD CONSTRAINT orgs_slug_key UNIQUE (slug);


--
-- Name: bookings_client_id_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX bookings_client_id_idx ON public.bookings USING btree (client_id);


--
-- Name: bookings_org_id_start_time_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX bookings_org_id_start_time_idx ON public.bookings USING btree (org_id, start_time);


--
-- Name: bookings_purchase_id_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX bookings_purchase_id_idx ON public.bookings USING btree (purchase_id);


--
-- Name: bookings_status_end_time_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX bookings_status_end_time_idx ON public.bookings USING btree (status, end_time);


--
-- Name: client_purchases_client_id_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX client_purchases_client_id_idx ON public.client_purchases USING btree (client_id);


--
-- Name: client_purchases_org_id_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX client_purchases_org_id_idx ON public.client_purchases USING btree (org_id);


--
-- Name: clients_auth_user_id_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX clients_auth_user_id_idx ON public.clients USING btree (auth_user_id);


--
-- Name: clients_org_id_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX clients_org_id_idx ON public.clients USING btree (org_id);


--
-- Name: bookings update_bookings_updated_at; Type: TRIGGER; Schema: public; Owner: postgres
--

CREATE TRIGGER update_bookings_updated_at BEFORE UPDATE ON public.bookings FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();


--
-- Name: clients update_clients_updated_at; Type: TRIGGER; Schema: public; Owner: postgres
--

CREATE TRIGGER update_clients_updated_at BEFORE UPDATE ON public.clients FOR EACH ROW EXECUTE FUNCTION public.update_updated_at_column();


--
-- Name: bookings bookings_booked_by_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.bookings
    ADD CONSTRAINT bookings_booked_by_fkey FOREIGN KEY (booked_by) REFERENCES auth.users(id);


--
-- Name: bookings bookings_cancelled_by_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.bookings
    ADD CONSTRAINT bookings_cancelled_by_fkey FOREIGN KEY (cancelled_by) REFERENCES auth.users(id);


--
-- Name: bookings bookings_client_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.bookings
    ADD CONSTRAINT bookings_client_id_fkey FOREIGN KEY (client_id) REFERENCES public.clients(id) ON DELETE CASCADE;


--
-- Name: bookings bookings_org_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.bookings
    ADD CONSTRAINT bookings_org_id_fkey FOREIGN KEY (org_id) REFERENCES public.orgs(id) ON DELETE CASCADE;


--
-- Name: bookings bookings_purchase_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.bookings
    ADD CONSTRAINT bookings_purchase_id_fkey FOREIGN KEY (purchase_id) REFERENCES public.client_purchases(id) ON DELETE SET NULL;


--
-- Name: client_purchases client_purchases_client_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.client_purchases
    ADD CONSTRAINT client_purchases_client_id_fkey FOREIGN KEY (client_id) REFERENCES public.clients(id) ON DELETE CASCADE;


--
-- Name: client_purchases client_purchases_offer_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.client_purchases
    ADD CONSTRAINT client_purchases_offer_id_fkey FOREIGN KEY (offer_id) REFERENCES public.offers(id);


--
-- Name: client_purchases client_purchases_org_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.client_purchases
    ADD CONSTRAINT client_purchases_org_id_fkey FOREIGN KEY (org_id) REFERENCES public.orgs(id) ON DELETE CASCADE;


--
-- Name: clients clients_auth_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.clients
    ADD CONSTRAINT clients_auth_user_id_fkey FOREIGN KEY (auth_user_id) REFERENCES auth.users(id) ON DELETE SET NULL;


--
-- Name: clients clients_org_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.clients
    ADD CONSTRAINT clients_org_id_fkey FOREIGN KEY (org_id) REFERENCES public.orgs(id) ON DELETE CASCADE;


--
-- Name: offers offers_org_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.offers
    ADD CONSTRAINT offers_org_id_fkey FOREIGN KEY (org_id) REFERENCES public.orgs(id) ON DELETE CASCADE;


--
-- Name: org_members org_members_org_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.org_members
    ADD CONSTRAINT org_members_org_id_fkey FOREIGN KEY (org_id) REFERENCES public.orgs(id) ON DELETE CASCADE;


--
-- Name: org_members org_members_user_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.org_members
    ADD CONSTRAINT org_members_user_id_fkey FOREIGN KEY (user_id) REFERENCES auth.users(id) ON DELETE CASCADE;


--
-- Name: bookings; Type: ROW SECURITY; Schema: public; Owner: postgres
--

ALTER TABLE public.bookings ENABLE ROW LEVEL SECURITY;

--
-- Name: bookings bookings insert by client; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY "bookings insert by client" ON public.bookings FOR INSERT WITH CHECK ((client_id IN ( SELECT clients.id
   FROM public.clients
  WHERE (clients.auth_user_id = auth.uid()))));


--
-- Name: bookings bookings managed by org members; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY "bookings managed by org members" ON public.bookings USING (public.is_org_member(org_id));


--
-- Name: bookings bookings read by client; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY "bookings read by client" ON public.bookings FOR SELECT USING ((client_id IN ( SELECT clients.id
   FROM public.clients
  WHERE (clients.auth_user_id = auth.uid()))));


--
-- Name: bookings bookings read by org members; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY "bookings read by org members" ON public.bookings FOR SELECT USING ((public.is_org_member(org_id) OR public.is_platform_admin()));


--
-- Name: bookings bookings update by client; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY "bookings update by client" ON public.bookings FOR UPDATE USING ((client_id IN ( SELECT clients.id
   FROM public.clients
  WHERE (clients.auth_user_id = auth.uid()))));


--
-- Name: client_purchases; Type: ROW SECURITY; Schema: public; Owner: postgres
--

ALTER TABLE public.client_purchases ENABLE ROW LEVEL SECURITY;

--
-- Name: clients; Type: ROW SECURITY; Schema: public; Owner: postgres
--

ALTER TABLE public.clients ENABLE ROW LEVEL SECURITY;

--
-- Name: clients clients managed by org members; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY "clients managed by org members" ON public.clients USING (public.is_org_member(org_id));


--
-- Name: clients clients read own row; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY "clients read own row" ON public.clients FOR SELECT USING ((auth_user_id = auth.uid()));


--
-- Name: offers; Type: ROW SECURITY; Schema: public; Owner: postgres
--

ALTER TABLE public.offers ENABLE ROW LEVEL SECURITY;

--
-- Name: offers offers managed by org members; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY "offers managed by org members" ON public.offers USING (public.is_org_member(org_id));


--
-- Name: org_members org members managed by members; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY "org members managed by members" ON public.org_members USING (public.is_org_member(org_id));


--
-- Name: org_members org members read by members; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY "org members read by members" ON public.org_members FOR SELECT USING ((public.is_org_member(org_id) OR (user_id = auth.uid())));


--
-- Name: org_members; Type: ROW SECURITY; Schema: public; Owner: postgres
--

ALTER TABLE public.org_members ENABLE ROW LEVEL SECURITY;

--
-- Name: orgs; Type: ROW SECURITY; Schema: public; Owner: postgres
--

ALTER TABLE public.orgs ENABLE ROW LEVEL SECURITY;

--
-- Name: orgs orgs read by members; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY "orgs read by members" ON public.orgs FOR SELECT USING ((public.is_org_member(id) OR public.is_platform_admin()));


--
-- Name: orgs orgs updated by members; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY "orgs updated by members" ON public.orgs FOR UPDATE USING (public.is_org_member(id));


--
-- Name: client_purchases purchases managed by org members; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY "purchases managed by org members" ON public.client_purchases USING (public.is_org_member(org_id));


--
-- Name: client_purchases purchases read by client; Type: POLICY; Schema: public; Owner: postgres
--

CREATE POLICY "purchases read by client" ON public.client_purchases FOR SELECT USING ((client_id IN ( SELECT clients.id
   FROM public.clients
  WHERE (clients.auth_user_id = auth.uid()))));


--
-- Name: SCHEMA public; Type: ACL; Schema: -; Owner: pg_database_owner
--

GRANT USAGE ON SCHEMA public TO postgres;
GRANT USAGE ON SCHEMA public TO anon;
GRANT USAGE ON SCHEMA public TO authenticated;
GRANT USAGE ON SCHEMA public TO service_role;


--
-- Name: FUNCTION is_org_member(_org uuid); Type: ACL; Schema: public; Owner: postgres
--

GRANT ALL ON FUNCTION public.is_org_member(_org uuid) TO anon;
GRANT ALL ON FUNCTION public.is_org_member(_org uuid) TO authenticated;
GRANT ALL ON FUNCTION public.is_org_member(_org uuid) TO service_role;


--
-- Name: FUNCTION is_platform_admin(); Type: ACL; Schema: public; Owner: postgres
--

GRANT ALL ON FUNCTION public.is_platform_admin() TO anon;
GRANT ALL ON FUNCTION public.is_platform_admin() TO authenticated;
GRANT ALL ON FUNCTION public.is_platform_admin() TO service_role;


--
-- Name: FUNCTION release_session(p_purchase_id uuid); Type: ACL; Schema: public; Owner: postgres
--

GRANT ALL ON FUNCTION public.release_session(p_purchase_id uuid) TO anon;
GRANT ALL ON FUNCTION public.release_session(p_purchase_id uuid) TO authenticated;
GRANT ALL ON FUNCTION public.release_session(p_purchase_id uuid) TO service_role;


--
-- Name: FUNCTION update_updated_at_column(); Type: ACL; Schema: public; Owner: postgres
--

GRANT ALL ON FUNCTION public.update_updated_at_column() TO anon;
GRANT ALL ON FUNCTION public.update_updated_at_column() TO authenticated;
GRANT ALL ON FUNCTION public.update_updated_at_column() TO service_role;


--
-- Name: FUNCTION use_session(p_purchase_id uuid); Type: ACL; Schema: public; Owner: postgres
--

GRANT ALL ON FUNCTION public.use_session(p_purchase_id uuid) TO anon;
GRANT ALL ON FUNCTION public.use_session(p_purchase_id uuid) TO authenticated;
GRANT ALL ON FUNCTION public.use_session(p_purchase_id uuid) TO service_role;


--
-- Name: TABLE bookings; Type: ACL; Schema: public; Owner: postgres
--

GRANT ALL ON TABLE public.bookings TO anon;
GRANT ALL ON TABLE public.bookings TO authenticated;
GRANT ALL ON TABLE public.bookings TO service_role;


--
-- Name: TABLE client_purchases; Type: ACL; Schema: public; Owner: postgres
--

GRANT ALL ON TABLE public.client_purchases TO anon;
GRANT ALL ON TABLE public.client_purchases TO authenticated;
GRANT ALL ON TABLE public.client_purchases TO service_role;


--
-- Name: TABLE clients; Type: ACL; Schema: public; Owner: postgres
--

GRANT ALL ON TABLE public.clients TO anon;
GRANT ALL ON TABLE public.clients TO authenticated;
GRANT ALL ON TABLE public.clients TO service_role;


--
-- Name: TABLE offers; Type: ACL; Schema: public; Owner: postgres
--

GRANT ALL ON TABLE public.offers TO anon;
GRANT ALL ON TABLE public.offers TO authenticated;
GRANT ALL ON TABLE public.offers TO service_role;


--
-- Name: TABLE org_members; Type: ACL; Schema: public; Owner: postgres
--

GRANT ALL ON TABLE public.org_members TO anon;
GRANT ALL ON TABLE public.org_members TO authenticated;
GRANT ALL ON TABLE public.org_members TO service_role;


--
-- Name: TABLE orgs; Type: ACL; Schema: public; Owner: postgres
--

GRANT ALL ON TABLE public.orgs TO anon;
GRANT ALL ON TABLE public.orgs TO authenticated;
GRANT ALL ON TABLE public.orgs TO service_role;


--
-- Name: TABLE upcoming_bookings; Type: ACL; Schema: public; Owner: postgres
--

GRANT ALL ON TABLE public.upcoming_bookings TO anon;
GRANT ALL ON TABLE public.upcoming_bookings TO authenticated;
GRANT ALL ON TABLE public.upcoming_bookings TO service_role;


--
-- Name: DEFAULT PRIVILEGES FOR SEQUENCES; Type: DEFAULT ACL; Schema: public; Owner: postgres
--

ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON SEQUENCES  TO postgres;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON SEQUENCES  TO anon;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON SEQUENCES  TO authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON SEQUENCES  TO service_role;


--
-- Name: DEFAULT PRIVILEGES FOR SEQUENCES; Type: DEFAULT ACL; Schema: public; Owner: supabase_admin
--

ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON SEQUENCES  TO postgres;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON SEQUENCES  TO anon;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON SEQUENCES  TO authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON SEQUENCES  TO service_role;


--
-- Name: DEFAULT PRIVILEGES FOR FUNCTIONS; Type: DEFAULT ACL; Schema: public; Owner: postgres
--

ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON FUNCTIONS  TO postgres;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON FUNCTIONS  TO anon;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON FUNCTIONS  TO authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON FUNCTIONS  TO service_role;


--
-- Name: DEFAULT PRIVILEGES FOR FUNCTIONS; Type: DEFAULT ACL; Schema: public; Owner: supabase_admin
--

ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON FUNCTIONS  TO postgres;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON FUNCTIONS  TO anon;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON FUNCTIONS  TO authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON FUNCTIONS  TO service_role;


--
-- Name: DEFAULT PRIVILEGES FOR TABLES; Type: DEFAULT ACL; Schema: public; Owner: postgres
--

ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES  TO postgres;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES  TO anon;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES  TO authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT ALL ON TABLES  TO service_role;


--
-- Name: DEFAULT PRIVILEGES FOR TABLES; Type: DEFAULT ACL; Schema: public; Owner: supabase_admin
--

ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON TABLES  TO postgres;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON TABLES  TO anon;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON TABLES  TO authenticated;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public GRANT ALL ON TABLES  TO service_role;


--
-- PostgreSQL database dump complete
--

\unrestrict aCD40WLdQBdyWAHacgMbUk2Y46jutNSSePf4M6kmo1R8Y9OGcwqbAsGdx5nGNfk

