-- The bookings trigger: guard the write, then enqueue, in the writer's own transaction.

-- Statement-level with transition tables: a bulk UPDATE of thousands of rows is
-- guarded and enqueued in one pass. SECURITY DEFINER because the writer may be a
-- signed-in user with no rights on the queue or the packs.
--
-- The guard: a writer who is not trusted (session_ledger.caller_is_trusted(), one
-- check per statement) may not change what a booking charges unless they may move
-- that pack's sessions (session_ledger.may_write_booking). The whole statement
-- fails with insufficient_privilege, naming the booking.
--
-- The event: one per booking whose charge key changed, the key being the pack it
-- consumes and, while it consumes, its client and organisation. An UPDATE that
-- changes nothing relevant inserts nothing, so it cannot fail.
CREATE OR REPLACE FUNCTION session_ledger.enqueue_booking_changes() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
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
            WHERE NOT session_ledger.may_write_booking(NULL, NULL, NULL, NULL,
                                                       n.status, n.purchase_id, n.client_id, n.org_id, v_consuming, v_trusted)
            LIMIT 1;
        ELSIF TG_OP = 'UPDATE' THEN
            SELECT n.id INTO v_refused FROM new_rows n JOIN old_rows o ON o.id = n.id
            WHERE (n.status, n.purchase_id, n.client_id, n.org_id) IS DISTINCT FROM
                  (o.status, o.purchase_id, o.client_id, o.org_id)
              AND NOT session_ledger.may_write_booking(o.status, o.purchase_id, o.client_id, o.org_id,
                                                       n.status, n.purchase_id, n.client_id, n.org_id, v_consuming, v_trusted)
            LIMIT 1;
        ELSE
            SELECT o.id INTO v_refused FROM old_rows o
            WHERE NOT session_ledger.may_write_booking(o.status, o.purchase_id, o.client_id, o.org_id,
                                                       NULL, NULL, NULL, NULL, v_consuming, v_trusted)
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
        SELECT pg_catalog.clock_timestamp(), session_ledger.booking_event(n.id)
        FROM new_rows n
        WHERE session_ledger.consumed_pack(n.status, n.purchase_id, v_consuming) IS NOT NULL;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO pgmq.q_booking_events (vt, message)
        SELECT pg_catalog.clock_timestamp(), session_ledger.booking_event(n.id)
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
        SELECT pg_catalog.clock_timestamp(), session_ledger.booking_event(o.id)
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

-- The triggers themselves, re-created so a changed definition always takes effect.
DROP TRIGGER IF EXISTS session_ledger_enqueue_insert ON public.bookings;
DROP TRIGGER IF EXISTS session_ledger_enqueue_update ON public.bookings;
DROP TRIGGER IF EXISTS session_ledger_enqueue_delete ON public.bookings;
CREATE TRIGGER session_ledger_enqueue_insert
    AFTER INSERT ON public.bookings
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION session_ledger.enqueue_booking_changes();
CREATE TRIGGER session_ledger_enqueue_update
    AFTER UPDATE ON public.bookings
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION session_ledger.enqueue_booking_changes();
CREATE TRIGGER session_ledger_enqueue_delete
    AFTER DELETE ON public.bookings
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION session_ledger.enqueue_booking_changes();
