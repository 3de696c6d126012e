-- The real app's security posture as FACTS.md describes it, laid over the demo
-- schema after `listener migrate`, plus the grants a careless project might add.
-- tests/test_doctor.py expects `listener doctor` to report every item below.

ALTER TABLE public.clients ADD COLUMN IF NOT EXISTS auth_user_id uuid;

CREATE OR REPLACE FUNCTION public.is_platform_admin() RETURNS boolean
LANGUAGE sql STABLE SET search_path = ''
AS $$ SELECT false $$;

-- The app's policies on bookings, as they stand: none has a WITH CHECK, none restricts columns.
DROP POLICY IF EXISTS bookings_members ON public.bookings;
CREATE POLICY "bookings read by org members" ON public.bookings
    FOR SELECT USING (is_org_member(org_id) OR is_platform_admin());
CREATE POLICY "bookings managed by org members" ON public.bookings
    FOR ALL USING (is_org_member(org_id));
CREATE POLICY "bookings read by client" ON public.bookings
    FOR SELECT USING (client_id IN (SELECT id FROM clients WHERE auth_user_id = auth.uid()));
CREATE POLICY "bookings insert by client" ON public.bookings
    FOR INSERT WITH CHECK (client_id IN (SELECT id FROM clients WHERE auth_user_id = auth.uid()));
CREATE POLICY "bookings update by client" ON public.bookings
    FOR UPDATE USING (client_id IN (SELECT id FROM clients WHERE auth_user_id = auth.uid()));

-- upcoming_bookings over bookings, clients and packs, without security_invoker,
-- and a view over that view: both run with their owner's rights.
CREATE VIEW public.upcoming_bookings AS
SELECT b.id, b.org_id, b.client_id, c.full_name AS client_name, b.start_time, b.end_time,
       b.status, b.purchase_id, p.sessions_remaining
FROM public.bookings b
JOIN public.clients c ON c.id = b.client_id
LEFT JOIN public.client_purchases p ON p.id = b.purchase_id
WHERE b.start_time > now();
GRANT SELECT ON public.upcoming_bookings TO anon;

CREATE VIEW public.next_bookings AS
SELECT * FROM public.upcoming_bookings ORDER BY start_time LIMIT 10;
GRANT SELECT ON public.next_bookings TO authenticated;

-- SECURITY DEFINER over packs with no search_path: a plpgsql-style body and a SQL-standard one.
-- A setting other than search_path does not count as pinning it.
CREATE FUNCTION public.pack_balance(p_purchase_id uuid) RETURNS int
LANGUAGE sql STABLE SECURITY DEFINER SET statement_timeout = '5s'
AS $$ SELECT sessions_total - sessions_used FROM client_purchases WHERE id = p_purchase_id $$;

CREATE FUNCTION public.pack_used(p_purchase_id uuid) RETURNS int
LANGUAGE sql STABLE SECURITY DEFINER
BEGIN ATOMIC
    SELECT sessions_used FROM public.client_purchases WHERE id = p_purchase_id;
END;

-- API roles on the queue, PGMQ, and the ledger.
-- Supabase's default privileges on public tables, granted again after migrate revoked them.
GRANT TRIGGER, TRUNCATE ON public.bookings TO authenticated;
GRANT SELECT, INSERT ON pgmq.q_booking_events TO authenticated;
GRANT USAGE ON SEQUENCE pgmq.q_booking_events_msg_id_seq TO authenticated;
GRANT USAGE ON SCHEMA pgmq TO anon;
GRANT SELECT ON pgmq.meta TO service_role;
GRANT SELECT ON session_ledger.charges TO anon;
GRANT EXECUTE ON FUNCTION session_ledger.status() TO PUBLIC;
GRANT CREATE ON SCHEMA session_ledger TO service_role;
CREATE SCHEMA pgmq_public;
GRANT USAGE ON SCHEMA pgmq_public TO anon, authenticated;
