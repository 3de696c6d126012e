-- The bookings trigger function as released in 0.2.0 (sql/functions/40_trigger.sql at
-- 63adb82), for the benchmark's throwaway databases only: the baseline the writer's
-- cost of provenance and echo records is measured against.
--
-- Its body is 0.2.0's, search path included, with one change so it runs against
-- today's schema: booking_event() now takes the event's source and cause, passed
-- here as NULL, so each event is 0.2.0's payload; and may_write_booking() now also
-- takes each side's start and end times, passed here from the rows, and each side's
-- amount, the coaching app's constant 1. No provenance,
-- no echo records, and an UPDATE pairs old and new rows with an inner join.
CREATE OR REPLACE FUNCTION session_ledger.enqueue_booking_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
DECLARE
    v_consuming text[];
    v_trusted boolean;
    v_refused uuid;
    v_sent bigint;
BEGIN
    SELECT c.consuming_statuses INTO v_consuming FROM session_ledger.config c;
    v_trusted := session_ledger.caller_is_trusted();

    IF NOT v_trusted THEN
        IF TG_OP = 'INSERT' THEN
            SELECT n.id INTO v_refused FROM new_rows n
            WHERE NOT session_ledger.may_write_booking(NULL, NULL, NULL, NULL, NULL, NULL, NULL,
                                                       n.status, n.purchase_id, n.client_id, n.org_id,
                                                       n.start_time, n.end_time, 1, v_consuming, v_trusted)
            LIMIT 1;
        ELSIF TG_OP = 'UPDATE' THEN
            SELECT n.id INTO v_refused FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE (n.status, n.purchase_id, n.client_id, n.org_id) IS DISTINCT FROM
                  (o.status, o.purchase_id, o.client_id, o.org_id)
              AND NOT session_ledger.may_write_booking(o.status, o.purchase_id, o.client_id, o.org_id,
                                                       o.start_time, o.end_time, 1,
                                                       n.status, n.purchase_id, n.client_id, n.org_id,
                                                       n.start_time, n.end_time, 1, v_consuming, v_trusted)
            LIMIT 1;
        ELSE
            SELECT o.id INTO v_refused FROM old_rows o
            WHERE NOT session_ledger.may_write_booking(o.status, o.purchase_id, o.client_id, o.org_id,
                                                       o.start_time, o.end_time, 1,
                                                       NULL, NULL, NULL, NULL, NULL, NULL, NULL, v_consuming, v_trusted)
            LIMIT 1;
        END IF;
        IF v_refused IS NOT NULL THEN
            RAISE EXCEPTION 'booking %: role % may not change which session pack it charges',
                            v_refused, session_ledger.caller()
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'only members of the pack''s organisation, service_role and the ledger''s owner may';
        END IF;
    END IF;

    -- A static INSERT into the queue table (what pgmq.send_batch does, minus its
    -- dynamic SQL, which is planned anew on every call).
    IF TG_OP = 'INSERT' THEN
        INSERT INTO pgmq.q_booking_events (vt, message)
        SELECT pg_catalog.clock_timestamp(), session_ledger.booking_event(n.id, NULL, NULL)
        FROM new_rows n
        WHERE session_ledger.consumed_pack(n.status, n.purchase_id, v_consuming) IS NOT NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO pgmq.q_booking_events (vt, message)
        SELECT pg_catalog.clock_timestamp(), session_ledger.booking_event(n.id, NULL, NULL)
        FROM new_rows n
        JOIN old_rows o ON o.id = n.id
        -- OFFSET 0 keeps each consumed_pack() to one call per row
        CROSS JOIN LATERAL (
            SELECT session_ledger.consumed_pack(n.status, n.purchase_id, v_consuming) AS now_pack,
                   session_ledger.consumed_pack(o.status, o.purchase_id, v_consuming) AS was_pack
            OFFSET 0
        ) AS k
        WHERE (n.status, n.purchase_id, n.client_id, n.org_id) IS DISTINCT FROM
              (o.status, o.purchase_id, o.client_id, o.org_id)
          AND (k.now_pack IS DISTINCT FROM k.was_pack
               OR (k.now_pack IS NOT NULL AND (n.client_id, n.org_id) IS DISTINCT FROM (o.client_id, o.org_id)));
    ELSE
        INSERT INTO pgmq.q_booking_events (vt, message)
        SELECT pg_catalog.clock_timestamp(), session_ledger.booking_event(o.id, NULL, NULL)
        FROM old_rows o
        WHERE session_ledger.consumed_pack(o.status, o.purchase_id, v_consuming) IS NOT NULL;
    END IF;
    GET DIAGNOSTICS v_sent = ROW_COUNT;

    -- A wake-up only when some listener sleeps: NOTIFY serialises commits
    -- cluster-wide, and a listener that is not asleep is looking anyway.
    IF v_sent > 0 AND EXISTS (SELECT 1 FROM session_ledger.live_listeners l WHERE l.waiting) THEN
        PERFORM pg_catalog.pg_notify('booking_events', '');
    END IF;
    RETURN NULL;
END
$$;
