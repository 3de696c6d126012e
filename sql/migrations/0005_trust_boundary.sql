-- Trust boundary, round 3: the guard reads the session's times, absorbing takes only
-- the old code's echoes, and the table privileges the platform hands out are on record.
--
-- Runs inside one transaction, holding the migration lock, before the repeatable
-- files (sql/functions/*.sql) are re-applied.

-- The guard now judges a booking's times as well (they decide when the cron
-- completes it and against which expiry its charge is judged).
DROP FUNCTION IF EXISTS session_ledger.may_write_booking(
    text, uuid, uuid, uuid, text, uuid, uuid, uuid, text[], boolean);

-- An echo of the app's old code lives for one window after its booking write, or
-- after the last call that absorbed an echo of the same write (the old cron calls
-- booking after booking). The old page calls within a round trip of its write: a
-- window of seconds, so a trainer's genuine press a little later is never taken
-- for an echo. An install still on the old 10-minute default moves to the new one.
ALTER TABLE session_ledger.booking_writes ADD COLUMN last_absorbed_at timestamptz;
ALTER TABLE session_ledger.config ALTER COLUMN legacy_call_window SET DEFAULT interval '15 seconds';
UPDATE session_ledger.config SET legacy_call_window = interval '15 seconds'
 WHERE legacy_call_window = interval '10 minutes';

-- When the new app (which calls nothing after its own booking writes) was deployed:
-- absorbed calls that keep arriving after it mean old code is still running.
ALTER TABLE session_ledger.config ADD COLUMN app_deployed_at timestamptz;

-- Privileges on the app's tables that no app flow needs and that let a caller run
-- code as the owner (TRIGGER), go around the trigger (TRUNCATE) or pin rows
-- (REFERENCES). `listener migrate` revokes them from PUBLIC and the API roles
-- (sql/functions/90_grants.sql) and records here what it revoked, so that
-- `listener uninstall --keep-grants` can give back exactly that.
CREATE TABLE session_ledger.revoked_app_grants (
    table_name text NOT NULL,
    grantee text NOT NULL,
    privilege text NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, grantee, privilege)
);
ALTER TABLE session_ledger.revoked_app_grants ENABLE ROW LEVEL SECURITY;
