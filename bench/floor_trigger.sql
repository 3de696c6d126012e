-- The floor of a trigger-based outbox, for the benchmark's throwaway databases only:
-- the bookings trigger function reduced to one queue row per changed booking, with
-- the same event (cause included) the ledger's trigger writes. No guard, no charge
-- key, no echo records, no wake-up: what the bare UPDATE plus one queue row costs.
CREATE OR REPLACE FUNCTION session_ledger.enqueue_booking_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO pgmq.q_booking_events (vt, message)
    SELECT pg_catalog.clock_timestamp(), session_ledger.booking_event(n.id, NULL, session_ledger.current_cause())
    FROM new_rows n;
    RETURN NULL;
END
$$;
