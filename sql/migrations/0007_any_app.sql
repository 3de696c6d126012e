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
