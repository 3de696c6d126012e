-- The session ledger's schema as it stands: what a fresh install runs, after the bootstrap
-- (queries.sql: bootstrap) and before sql/install.sql and the repeatable files (sql/functions/).
-- Generated from the catalog by listener/devtools/schema_dump.py; do not edit by hand.
-- Regenerate: LISTENER_WRITE_SCHEMA=1 pytest tests/db/test_routes.py -k schema_file
-- How an installed database gets here: sql/migrations/.

CREATE TABLE "session_ledger"."adjustments" (
    "id" bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    "booking_id" uuid NOT NULL,
    "purchase_id" uuid NOT NULL,
    "delta" integer NOT NULL,
    "outcome" text NOT NULL,
    "reason" text,
    "made_by" name NOT NULL,
    "made_at" timestamp with time zone DEFAULT now() NOT NULL,
    "amount" integer DEFAULT 1 NOT NULL,
    CONSTRAINT "adjustments_amount_check" CHECK ((amount >= 0)),
    CONSTRAINT "adjustments_check" CHECK (((outcome = 'charged'::text) = (delta = 1))),
    CONSTRAINT "adjustments_delta_check" CHECK ((delta = ANY (ARRAY[0, 1]))),
    CONSTRAINT "adjustments_outcome_check" CHECK ((outcome = ANY (ARRAY['charged'::text, 'unfunded'::text]))),
    CONSTRAINT "adjustments_pkey" PRIMARY KEY (id)
);
CREATE INDEX adjustments_booking_idx ON session_ledger.adjustments USING btree (booking_id);
CREATE INDEX adjustments_purchase_idx ON session_ledger.adjustments USING btree (purchase_id);
ALTER TABLE "session_ledger"."adjustments" ENABLE ROW LEVEL SECURITY;
CREATE POLICY "owner_only" ON "session_ledger"."adjustments" AS RESTRICTIVE FOR ALL TO PUBLIC USING (false);

CREATE TABLE "session_ledger"."booking_writes" (
    "id" bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    "written_at" timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    "kind" text NOT NULL,
    "purchase_id" uuid NOT NULL,
    "caused_by" jsonb NOT NULL,
    "booking_ids" uuid[] NOT NULL,
    "absorbed" integer DEFAULT 0 NOT NULL,
    "last_absorbed_at" timestamp with time zone,
    CONSTRAINT "booking_writes_check" CHECK (((absorbed >= 0) AND (absorbed <= cardinality(booking_ids)))),
    CONSTRAINT "booking_writes_kind_check" CHECK ((kind = ANY (ARRAY['use'::text, 'release'::text]))),
    CONSTRAINT "booking_writes_pkey" PRIMARY KEY (id)
);
CREATE INDEX booking_writes_pack_idx ON session_ledger.booking_writes USING btree (purchase_id, kind);
CREATE INDEX booking_writes_written_idx ON session_ledger.booking_writes USING btree (written_at);
ALTER TABLE "session_ledger"."booking_writes" ENABLE ROW LEVEL SECURITY;
CREATE POLICY "owner_only" ON "session_ledger"."booking_writes" AS RESTRICTIVE FOR ALL TO PUBLIC USING (false);

CREATE TABLE "session_ledger"."charges" (
    "booking_id" uuid NOT NULL,
    "purchase_id" uuid,
    "state" text NOT NULL,
    "reason" text,
    "source" text DEFAULT 'listener'::text NOT NULL,
    "updated_at" timestamp with time zone DEFAULT now() NOT NULL,
    "client_id" uuid,
    "org_id" uuid,
    "caused_by" jsonb,
    "amount" integer DEFAULT 1 NOT NULL,
    CONSTRAINT "charges_amount_check" CHECK ((amount >= 0)),
    CONSTRAINT "charges_source_check" CHECK ((source = ANY (ARRAY['listener'::text, 'adoption'::text, 'cut-over'::text, 'audit'::text]))),
    CONSTRAINT "charges_state_check" CHECK ((state = ANY (ARRAY['paid'::text, 'unfunded'::text, 'released'::text]))),
    CONSTRAINT "charges_pkey" PRIMARY KEY (booking_id)
);
CREATE INDEX charges_purchase_paid_idx ON session_ledger.charges USING btree (purchase_id) WHERE (state = 'paid'::text);
CREATE INDEX charges_purchase_unfunded_idx ON session_ledger.charges USING btree (purchase_id) WHERE (state = 'unfunded'::text);
CREATE INDEX charges_unfunded_idx ON session_ledger.charges USING btree (booking_id) WHERE (state = 'unfunded'::text);
CREATE INDEX charges_updated_idx ON session_ledger.charges USING btree (updated_at DESC, booking_id DESC);
ALTER TABLE "session_ledger"."charges" ENABLE ROW LEVEL SECURITY;
CREATE POLICY "owner_only" ON "session_ledger"."charges" AS RESTRICTIVE FOR ALL TO PUBLIC USING (false);

CREATE TABLE "session_ledger"."config" (
    "singleton" boolean DEFAULT true NOT NULL,
    "consuming_statuses" text[] DEFAULT '{completed}'::text[] NOT NULL,
    "adopt_until" timestamp with time zone,
    "allow_shared_packs" boolean DEFAULT false NOT NULL,
    "listener_live_window" interval DEFAULT '00:00:30'::interval NOT NULL,
    "absorb_legacy_calls" boolean DEFAULT true NOT NULL,
    "legacy_call_window" interval DEFAULT '00:00:15'::interval NOT NULL,
    "max_reads" integer DEFAULT 10 NOT NULL,
    "visibility_timeout_s" integer DEFAULT 30 NOT NULL,
    "paused_at" timestamp with time zone,
    "paused_by" text,
    "pause_reason" text,
    "app_deployed_at" timestamp with time zone,
    CONSTRAINT "config_legacy_call_window_check" CHECK ((legacy_call_window > '00:00:00'::interval)),
    CONSTRAINT "config_max_reads_check" CHECK ((max_reads >= 2)),
    CONSTRAINT "config_pause_check" CHECK (((paused_at IS NULL) = (paused_by IS NULL))),
    CONSTRAINT "config_singleton_check" CHECK (singleton),
    CONSTRAINT "config_visibility_timeout_s_check" CHECK ((visibility_timeout_s >= 1)),
    CONSTRAINT "config_pkey" PRIMARY KEY (singleton)
);
ALTER TABLE "session_ledger"."config" ENABLE ROW LEVEL SECURITY;
CREATE POLICY "owner_only" ON "session_ledger"."config" AS RESTRICTIVE FOR ALL TO PUBLIC USING (false);
INSERT INTO "session_ledger"."config" DEFAULT VALUES;

CREATE TABLE "session_ledger"."drain_runs" (
    "id" bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    "started_at" timestamp with time zone NOT NULL,
    "finished_at" timestamp with time zone NOT NULL,
    "handled" bigint NOT NULL,
    "run_by" text NOT NULL,
    CONSTRAINT "drain_runs_pkey" PRIMARY KEY (id)
);
CREATE INDEX drain_runs_finished_idx ON session_ledger.drain_runs USING btree (finished_at);
ALTER TABLE "session_ledger"."drain_runs" ENABLE ROW LEVEL SECURITY;
CREATE POLICY "owner_only" ON "session_ledger"."drain_runs" AS RESTRICTIVE FOR ALL TO PUBLIC USING (false);

CREATE TABLE "session_ledger"."given_away" (
    "purchase_id" uuid NOT NULL,
    "sessions" integer NOT NULL,
    "recorded" integer NOT NULL,
    "recorded_at" timestamp with time zone DEFAULT now() NOT NULL,
    "updated_at" timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT "given_away_recorded_check" CHECK ((recorded >= 0)),
    CONSTRAINT "given_away_sessions_check" CHECK ((sessions >= 0)),
    CONSTRAINT "given_away_pkey" PRIMARY KEY (purchase_id)
);
ALTER TABLE "session_ledger"."given_away" ENABLE ROW LEVEL SECURITY;
CREATE POLICY "owner_only" ON "session_ledger"."given_away" AS RESTRICTIVE FOR ALL TO PUBLIC USING (false);

CREATE TABLE "session_ledger"."listeners" (
    "id" uuid NOT NULL,
    "host" text NOT NULL,
    "pid" integer NOT NULL,
    "started_at" timestamp with time zone DEFAULT now() NOT NULL,
    "heartbeat_at" timestamp with time zone DEFAULT now() NOT NULL,
    "last_batch_at" timestamp with time zone,
    "stopped_at" timestamp with time zone,
    "waiting" boolean DEFAULT false NOT NULL,
    "paid" bigint DEFAULT 0 NOT NULL,
    "released" bigint DEFAULT 0 NOT NULL,
    "moved" bigint DEFAULT 0 NOT NULL,
    "unfunded" bigint DEFAULT 0 NOT NULL,
    "noop" bigint DEFAULT 0 NOT NULL,
    "dead_lettered" bigint DEFAULT 0 NOT NULL,
    CONSTRAINT "listeners_pkey" PRIMARY KEY (id)
);
ALTER TABLE "session_ledger"."listeners" ENABLE ROW LEVEL SECURITY;
CREATE POLICY "owner_only" ON "session_ledger"."listeners" AS RESTRICTIVE FOR ALL TO PUBLIC USING (false);

CREATE TABLE "session_ledger"."mapping" (
    "singleton" boolean DEFAULT true NOT NULL,
    "mapping" jsonb NOT NULL,
    "sha256" text NOT NULL,
    "keys" jsonb NOT NULL,
    "applied_at" timestamp with time zone DEFAULT now() NOT NULL,
    "applied_by" text DEFAULT SESSION_USER NOT NULL,
    CONSTRAINT "mapping_singleton_check" CHECK (singleton),
    CONSTRAINT "mapping_pkey" PRIMARY KEY (singleton)
);
ALTER TABLE "session_ledger"."mapping" ENABLE ROW LEVEL SECURITY;
CREATE POLICY "owner_only" ON "session_ledger"."mapping" AS RESTRICTIVE FOR ALL TO PUBLIC USING (false);

CREATE TABLE "session_ledger"."pack_calls" (
    "id" bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    "called_at" timestamp with time zone DEFAULT clock_timestamp() NOT NULL,
    "kind" text NOT NULL,
    "purchase_id" uuid NOT NULL,
    "reason" text,
    "legacy" boolean NOT NULL,
    "outcome" text NOT NULL,
    "booking_id" uuid,
    "caused_by" jsonb NOT NULL,
    "amount" integer DEFAULT 1 NOT NULL,
    CONSTRAINT "pack_calls_amount_check" CHECK ((amount >= 0)),
    CONSTRAINT "pack_calls_check" CHECK (((outcome = 'absorbed'::text) = (booking_id IS NOT NULL))),
    CONSTRAINT "pack_calls_kind_check" CHECK ((kind = ANY (ARRAY['use'::text, 'release'::text]))),
    CONSTRAINT "pack_calls_outcome_check" CHECK ((outcome = ANY (ARRAY['charged'::text, 'not charged'::text, 'released'::text, 'nothing to give back'::text, 'absorbed'::text]))),
    CONSTRAINT "pack_calls_pkey" PRIMARY KEY (id)
);
CREATE INDEX pack_calls_booking_idx ON session_ledger.pack_calls USING btree (booking_id) WHERE (booking_id IS NOT NULL);
CREATE INDEX pack_calls_called_idx ON session_ledger.pack_calls USING btree (called_at);
CREATE INDEX pack_calls_purchase_idx ON session_ledger.pack_calls USING btree (purchase_id);
ALTER TABLE "session_ledger"."pack_calls" ENABLE ROW LEVEL SECURITY;
CREATE POLICY "owner_only" ON "session_ledger"."pack_calls" AS RESTRICTIVE FOR ALL TO PUBLIC USING (false);

CREATE TABLE "session_ledger"."repeatables" (
    "name" text NOT NULL,
    "checksum" text NOT NULL,
    "applied_at" timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT "repeatables_pkey" PRIMARY KEY (name)
);
ALTER TABLE "session_ledger"."repeatables" ENABLE ROW LEVEL SECURITY;
CREATE POLICY "owner_only" ON "session_ledger"."repeatables" AS RESTRICTIVE FOR ALL TO PUBLIC USING (false);

CREATE TABLE "session_ledger"."replaced_functions" (
    "signature" text NOT NULL,
    "definition" text,
    "replaced_at" timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT "replaced_functions_pkey" PRIMARY KEY (signature)
);
ALTER TABLE "session_ledger"."replaced_functions" ENABLE ROW LEVEL SECURITY;
CREATE POLICY "owner_only" ON "session_ledger"."replaced_functions" AS RESTRICTIVE FOR ALL TO PUBLIC USING (false);

CREATE TABLE "session_ledger"."revoked_app_grants" (
    "table_name" text NOT NULL,
    "grantee" text NOT NULL,
    "privilege" text NOT NULL,
    "revoked_at" timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT "revoked_app_grants_pkey" PRIMARY KEY (table_name, grantee, privilege)
);
ALTER TABLE "session_ledger"."revoked_app_grants" ENABLE ROW LEVEL SECURITY;
CREATE POLICY "owner_only" ON "session_ledger"."revoked_app_grants" AS RESTRICTIVE FOR ALL TO PUBLIC USING (false);

CREATE TABLE "session_ledger"."schema_info" (
    "singleton" boolean DEFAULT true NOT NULL,
    "version" integer NOT NULL,
    "package_version" text NOT NULL,
    "migrated_at" timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT "schema_info_singleton_check" CHECK (singleton),
    CONSTRAINT "schema_info_pkey" PRIMARY KEY (singleton)
);
ALTER TABLE "session_ledger"."schema_info" ENABLE ROW LEVEL SECURITY;
CREATE POLICY "owner_only" ON "session_ledger"."schema_info" AS RESTRICTIVE FOR ALL TO PUBLIC USING (false);

SELECT pgmq.create('booking_events');
DROP INDEX "pgmq"."q_booking_events_vt_idx";
ALTER TABLE "pgmq"."q_booking_events" SET (autovacuum_vacuum_scale_factor=0, autovacuum_vacuum_threshold=10000, autovacuum_vacuum_cost_delay=0, autovacuum_analyze_scale_factor=0, autovacuum_analyze_threshold=10000);
ALTER TABLE "pgmq"."q_booking_events" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "pgmq"."a_booking_events" ENABLE ROW LEVEL SECURITY;

SELECT pgmq.create('booking_events_dlq');
ALTER TABLE "pgmq"."q_booking_events_dlq" ENABLE ROW LEVEL SECURITY;
ALTER TABLE "pgmq"."a_booking_events_dlq" ENABLE ROW LEVEL SECURITY;
