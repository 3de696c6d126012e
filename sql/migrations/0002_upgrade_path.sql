-- Tables for the upgrade path and the trust boundary. Functions, triggers, views
-- and grants are not here: they live in sql/functions/*.sql, which `listener
-- migrate` re-applies whenever one of them changes.
--
-- Runs inside one transaction, holding the migration lock.

-- Which repeatable file is installed, by checksum.
CREATE TABLE session_ledger.repeatables (
    name text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- The schema version this database holds: listeners refuse a newer one.
CREATE TABLE session_ledger.schema_info (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version int NOT NULL,
    package_version text NOT NULL,
    migrated_at timestamptz NOT NULL DEFAULT now()
);

-- A pack pays only for its own client's bookings, unless the app sells shared
-- (family) packs and says so here.
ALTER TABLE session_ledger.config
    ADD COLUMN allow_shared_packs boolean NOT NULL DEFAULT false,
    -- a listener whose heartbeat is older than this is not live
    ADD COLUMN listener_live_window interval NOT NULL DEFAULT interval '30 seconds';

-- Each run of session_ledger.drain(), the in-database consumer pg_cron can schedule.
CREATE TABLE session_ledger.drain_runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    handled bigint NOT NULL,
    run_by text NOT NULL
);
CREATE INDEX drain_runs_finished_idx ON session_ledger.drain_runs (finished_at);

ALTER TABLE session_ledger.repeatables ENABLE ROW LEVEL SECURITY;
ALTER TABLE session_ledger.schema_info ENABLE ROW LEVEL SECURITY;
ALTER TABLE session_ledger.drain_runs ENABLE ROW LEVEL SECURITY;

-- The booking's client and organisation a ledger row was judged for: a consuming
-- booking that moves to another client or organisation is judged again.
ALTER TABLE session_ledger.charges
    ADD COLUMN client_id uuid,
    ADD COLUMN org_id uuid;
UPDATE session_ledger.charges l
   SET client_id = b.client_id, org_id = b.org_id
  FROM public.bookings b
 WHERE b.id = l.booking_id;
