-- A rollout the app's old code cannot break, and who caused every charge.
--
-- Runs inside one transaction, holding the migration lock, before the repeatable
-- files (sql/functions/*.sql) are re-applied.

-- Signatures the repeatable files no longer define: dropped so a call is never
-- ambiguous and nothing stale stays callable.
DROP FUNCTION IF EXISTS session_ledger.is_member(name, name);
DROP FUNCTION IF EXISTS session_ledger.may_move_sessions(uuid);
DROP FUNCTION IF EXISTS session_ledger.may_move_pack(uuid);
DROP FUNCTION IF EXISTS session_ledger.may_write_booking(text, uuid, uuid, uuid, text, uuid, uuid, uuid, text[]);
DROP FUNCTION IF EXISTS session_ledger.assert_may_touch_pack(uuid);
DROP FUNCTION IF EXISTS session_ledger.plan_bookings(uuid[]);
-- now with the event's cause, and a cause column in their results
DROP FUNCTION IF EXISTS session_ledger.booking_event(uuid, text);
DROP FUNCTION IF EXISTS session_ledger.apply_bookings(uuid[], timestamptz[]);
-- now in chunks, with the chunk size and time budget as optional arguments
DROP FUNCTION IF EXISTS session_ledger.complete_past_bookings();
-- the dashboard's recent changes are paged now (dashboard_recent_changes)
DROP FUNCTION IF EXISTS session_ledger.dashboard_recent_charges(int);

-- Absorbing the app's old use_session / release_session calls that echo a booking
-- write the ledger already charges or releases (session_ledger.absorb_legacy_call).
ALTER TABLE session_ledger.config
    ADD COLUMN absorb_legacy_calls boolean NOT NULL DEFAULT true,
    ADD COLUMN legacy_call_window interval NOT NULL DEFAULT interval '10 minutes'
        CHECK (legacy_call_window > interval '0');

-- How every consumer claims events: drain() reads these, and so do listeners not told
-- otherwise (--max-reads, --visibility-timeout); a message read more often is dead-lettered.
ALTER TABLE session_ledger.config
    ADD COLUMN max_reads int NOT NULL DEFAULT 10 CHECK (max_reads >= 2),
    ADD COLUMN visibility_timeout_s int NOT NULL DEFAULT 30 CHECK (visibility_timeout_s >= 1);

-- Charging paused by an operator (`listener pause`): listeners and drain() claim no
-- event while it is set; the trigger keeps queuing.
ALTER TABLE session_ledger.config
    ADD COLUMN paused_at timestamptz,
    ADD COLUMN paused_by text,
    ADD COLUMN pause_reason text,
    ADD CONSTRAINT config_pause_check CHECK ((paused_at IS NULL) = (paused_by IS NULL));

-- Who caused a ledger row's last change: {"role", "uid", "trace"} (current_cause()).
ALTER TABLE session_ledger.charges ADD COLUMN caused_by jsonb;
-- The dashboard's recent changes, newest first, a page at a time.
CREATE INDEX charges_updated_idx ON session_ledger.charges (updated_at DESC, booking_id DESC);

-- The bookings trigger's record of each write that leaves bookings consuming a pack
-- ('use') or stops them consuming one ('release'), per statement and pack, with
-- its writer; absorbed counts the legacy calls that consumed it, booking by booking.
CREATE TABLE session_ledger.booking_writes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind text NOT NULL CHECK (kind IN ('use', 'release')),
    purchase_id uuid NOT NULL,
    caused_by jsonb NOT NULL,
    booking_ids uuid[] NOT NULL,
    absorbed int NOT NULL DEFAULT 0 CHECK (absorbed BETWEEN 0 AND cardinality(booking_ids))
);
CREATE INDEX booking_writes_pack_idx ON session_ledger.booking_writes (purchase_id, kind);
CREATE INDEX booking_writes_written_idx ON session_ledger.booking_writes (written_at);
ALTER TABLE session_ledger.booking_writes ENABLE ROW LEVEL SECURITY;

-- Every direct move of a pack: the app's use_session / release_session (legacy,
-- absorbed or not) and the manual adjustments with a reason.
CREATE TABLE session_ledger.pack_calls (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    called_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind text NOT NULL CHECK (kind IN ('use', 'release')),
    purchase_id uuid NOT NULL,
    reason text,
    legacy boolean NOT NULL,
    outcome text NOT NULL CHECK (outcome IN ('charged', 'not charged', 'released', 'nothing to give back', 'absorbed')),
    booking_id uuid,
    caused_by jsonb NOT NULL,
    CHECK ((outcome = 'absorbed') = (booking_id IS NOT NULL))
);
CREATE INDEX pack_calls_called_idx ON session_ledger.pack_calls (called_at);
CREATE INDEX pack_calls_purchase_idx ON session_ledger.pack_calls (purchase_id);
CREATE INDEX pack_calls_booking_idx ON session_ledger.pack_calls (booking_id) WHERE booking_id IS NOT NULL;
ALTER TABLE session_ledger.pack_calls ENABLE ROW LEVEL SECURITY;

-- Install and start charging in one step: the cut-over happens now, on a ledger
-- that has never charged (a fresh install, or one installed and waiting for
-- `listener cutover`). Events already queued were charged by the app's old code
-- and are adopted; from here on the old code's calls are absorbed instead. A
-- ledger that has charged keeps the cut-over it has.
UPDATE session_ledger.config c
   SET adopt_until = clock_timestamp()
 WHERE c.adopt_until IS NULL
   AND NOT EXISTS (SELECT 1 FROM session_ledger.charges l WHERE l.source = 'listener')
   AND NOT EXISTS (SELECT 1 FROM session_ledger.listeners)
   AND NOT EXISTS (SELECT 1 FROM session_ledger.drain_runs);
