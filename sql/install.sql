-- What a fresh install does besides creating the schema: the listener's role, the
-- app's own functions kept for `listener uninstall`, the cut-over, and the bookings
-- the app's old code already charged, adopted.
--
-- `listener migrate` runs it on a database with no ledger, after sql/schema.sql and
-- before the repeatable files (sql/functions/*.sql, which replace the app's
-- functions), in one transaction holding the migration lock. An installed ledger
-- got here through the numbered migrations instead; tests/db/test_routes.py checks
-- that both routes end with the same schema and adopt the same bookings alike.

-- Writers must not slip a completion between the adoption below and the trigger
-- the repeatable files create, which covers everything after it.
LOCK TABLE public.bookings IN SHARE ROW EXCLUSIVE MODE;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'session_ledger_listener') THEN
        BEGIN
            CREATE ROLE session_ledger_listener NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database of this cluster created it a moment ago
        END;
    END IF;
END
$$;

INSERT INTO session_ledger.replaced_functions (signature, definition)
SELECT s, CASE WHEN pg_catalog.to_regprocedure(s) IS NOT NULL
               THEN pg_catalog.pg_get_functiondef(pg_catalog.to_regprocedure(s)) END
FROM unnest(ARRAY['public.use_session(uuid)', 'public.release_session(uuid)']) AS s;

-- Install and start charging in one step: events from here on are the ledger's to
-- charge, and the old code's calls that echo them are absorbed.
UPDATE session_ledger.config SET adopt_until = clock_timestamp();

-- Adoption: bookings already consuming were paid by the app's old code. Each is
-- recorded as paid without touching any balance, so a later cancel gives back;
-- or as unfunded, with the listener's reason, where its pack could never have paid
-- for it (the app's old use_session refused those too).
INSERT INTO session_ledger.charges (booking_id, purchase_id, state, source, reason, client_id, org_id)
SELECT b.id, b.purchase_id, CASE WHEN w.why IS NULL THEN 'paid' ELSE 'unfunded' END, 'adoption', w.why,
       b.client_id, b.org_id
FROM public.bookings b
CROSS JOIN session_ledger.config c
LEFT JOIN public.client_purchases p ON p.id = b.purchase_id
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN p.id IS NULL THEN 'pack does not exist'
        WHEN p.org_id IS DISTINCT FROM b.org_id THEN 'pack belongs to another organisation'
        WHEN NOT c.allow_shared_packs AND p.client_id IS DISTINCT FROM b.client_id
            THEN 'pack belongs to another client'
        WHEN p.sessions_total IS NULL THEN 'purchase is not a session pack'
        WHEN p.payment_status IN ('refunded', 'failed') THEN 'pack payment ' || p.payment_status
        WHEN p.expires_at IS NOT NULL AND p.expires_at <= b.start_time THEN 'pack expired before the session'
    END AS why) AS w
WHERE b.status = ANY (c.consuming_statuses) AND b.purchase_id IS NOT NULL;

-- Per pack, the bookings adopted as paid that its balance does not cover: sessions
-- the app's old code gave away, which stay given away (session_ledger.record_given_away()
-- states the rule; on a fresh install it comes to n - u for a pack with n adopted
-- bookings and u sessions used).
INSERT INTO session_ledger.given_away (purchase_id, sessions, recorded)
SELECT x.pack, x.n, x.n
FROM (SELECT p.id AS pack, greatest(count(*) - p.sessions_used, 0)::int AS n
      FROM session_ledger.charges l
      JOIN public.client_purchases p ON p.id = l.purchase_id
      WHERE l.state = 'paid'
      GROUP BY p.id, p.sessions_used) AS x
WHERE x.n > 0;
