-- The gym's old deduction path, as its server ran it before the ledger: marking a
-- booking attended or no-show takes a session off the package in the same call.
-- Kept here to show what the ledger replaces; the mapping has no [legacy] section,
-- so nothing absorbs these calls. The app deletes this function (and stops calling
-- it) in the release that installs the ledger; while both run, a session is taken
-- twice.
--
-- What goes wrong with it, and why the ledger exists:
--   * marking a booking attended twice (two tablets at the front desk, a retried
--     request) takes two sessions: nothing remembers that this booking already paid;
--   * attended -> no_show takes a second session for the same class;
--   * cancelling after attendance gives nothing back, so staff fix balances by hand;
--   * an expired package is still charged, and an empty one fails the whole request
--     (the CHECK on sessions_remaining), so attendance cannot be recorded at all.

CREATE OR REPLACE FUNCTION gym.mark_attendance(p_booking integer, p_status text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_package integer;
BEGIN
    UPDATE gym.bookings SET status = p_status WHERE id = p_booking
    RETURNING package_id INTO v_package;
    IF p_status IN ('attended', 'no_show') AND v_package IS NOT NULL THEN
        UPDATE gym.packages SET sessions_remaining = sessions_remaining - 1 WHERE id = v_package;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION gym.mark_attendance(integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gym.mark_attendance(integer, text) TO gym_server;
