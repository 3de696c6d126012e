-- STAND-IN, TO BE DELETED AT MERGE: the real session_ledger.discard_dead_letters
-- lives in sql/functions/35_operator.sql. This file only lets the dashboard's
-- discard (70_dashboard.sql, dashboard_discard) be built and tested before that
-- file exists, against the same signature. It creates nothing when the real
-- function is already there, so it never replaces it.
DO $stub$
BEGIN
    IF pg_catalog.to_regprocedure('session_ledger.discard_dead_letters(bigint[], text)') IS NOT NULL THEN
        RETURN;
    END IF;
    CREATE FUNCTION session_ledger.discard_dead_letters(p_msg_ids bigint[], p_reason text) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    DECLARE
        v_n bigint;
    BEGIN
        WITH gone AS (
            DELETE FROM pgmq.q_booking_events_dlq q WHERE q.msg_id OPERATOR(pg_catalog.=) ANY (p_msg_ids)
            RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.vt, q.message
        )
        INSERT INTO pgmq.a_booking_events_dlq (msg_id, read_ct, enqueued_at, vt, message)
        SELECT g.msg_id, g.read_ct, g.enqueued_at, g.vt,
               g.message OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('discarded', pg_catalog.jsonb_build_object(
                   'by', session_ledger.caller(), 'at', pg_catalog.clock_timestamp(), 'reason', p_reason))
        FROM gone g;
        GET DIAGNOSTICS v_n = ROW_COUNT;
        RETURN v_n;
    END
    $$;
END
$stub$;
