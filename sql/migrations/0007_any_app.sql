-- Any booking app: the mapping of the app's schema an install was rendered from.
--
-- Runs inside one transaction, holding the migration lock, before the repeatable
-- files (sql/functions/*.sql, rendered from the mapping) are re-applied.

-- One row: the mapping (its canonical JSON), its hash, the SQL types of the app's
-- keys read from the catalog, and who applied it when. `listener migrate --mapping`
-- replaces it; a migrate given no file renders from it.
CREATE TABLE session_ledger.mapping (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    mapping jsonb NOT NULL,
    sha256 text NOT NULL,
    keys jsonb NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text NOT NULL DEFAULT session_user
);
ALTER TABLE session_ledger.mapping ENABLE ROW LEVEL SECURITY;

-- What each booking's ledger row paid, so that a release gives back exactly that: a
-- booking may cost more than one session (pack.amount_column), and one paid by an
-- unlimited pack cost nothing. Every row written before costs one session.
ALTER TABLE session_ledger.charges ADD COLUMN amount integer NOT NULL DEFAULT 1 CHECK (amount >= 0);

-- What a direct call moved: one session when it charged or gave one back, nothing
-- otherwise (an absorbed echo, a refusal) or on an unlimited pack.
ALTER TABLE session_ledger.pack_calls ADD COLUMN amount integer NOT NULL DEFAULT 1 CHECK (amount >= 0);
UPDATE session_ledger.pack_calls SET amount = 0 WHERE outcome NOT IN ('charged', 'released');

-- What an audit charge took: `delta` says whether it charged, this how much.
ALTER TABLE session_ledger.adjustments ADD COLUMN amount integer NOT NULL DEFAULT 1 CHECK (amount >= 0);
UPDATE session_ledger.adjustments SET amount = delta;

-- settle_packs now takes each request's amount and returns what it moved: the
-- repeatable file creates the new one, which would otherwise stand beside this.
DROP FUNCTION IF EXISTS session_ledger.settle_packs(uuid[], integer[], timestamp with time zone[], uuid[], uuid[]);
-- unfundable_reason now takes the pack's canonical `unusable` reason where it took
-- the coaching app's payment_status: a parameter PostgreSQL will not rename in place.
DROP FUNCTION IF EXISTS session_ledger.unfundable_reason(integer, timestamp with time zone, text, timestamp with time zone);
