-- What `listener audit --charge` did: one row per booking it judged, with who ran
-- it and when. The functions that read and write it live in sql/functions/60_audit.sql;
-- the grants (none: only the owner reaches it) in sql/functions/90_grants.sql.
--
-- Runs inside one transaction, holding the migration lock.

CREATE TABLE session_ledger.adjustments (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    booking_id uuid NOT NULL,
    purchase_id uuid NOT NULL,
    -- sessions taken from the pack: 1 when charged, 0 when the pack could not pay
    delta int NOT NULL CHECK (delta IN (0, 1)),
    outcome text NOT NULL CHECK (outcome IN ('charged', 'unfunded')),
    reason text,
    made_by name NOT NULL,
    made_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((outcome = 'charged') = (delta = 1))
);
CREATE INDEX adjustments_booking_idx ON session_ledger.adjustments (booking_id);
CREATE INDEX adjustments_purchase_idx ON session_ledger.adjustments (purchase_id);
ALTER TABLE session_ledger.adjustments ENABLE ROW LEVEL SECURITY;

-- A ledger row audit settled says so: source 'audit' (paid when it charged the
-- session, unfunded when the pack could not pay), so no later run judges it again.
ALTER TABLE session_ledger.charges
    DROP CONSTRAINT charges_source_check,
    ADD CONSTRAINT charges_source_check CHECK (source IN ('listener', 'adoption', 'cut-over', 'audit'));
