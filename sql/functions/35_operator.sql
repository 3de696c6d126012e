-- The operator's ways out of the dead-letter queue besides a redrive, and what
-- `listener status` shows of it.
--
-- A discard is recorded in the archived dead letter itself, under the key
-- `discarded` ({at, by, login, reason}): the record stays beside the payload and
-- the reason it was dead-lettered, one row holds the whole story, a redriven
-- letter (archived without the key) is told apart by a glance, and `listener
-- prune` keeps or drops the two together. No table of its own, so nothing to
-- migrate, protect or keep in step with the archive.

-- Archive these dead letters without handling them, and record who (the role in
-- effect, session_ledger.caller(), and the login, session_user), when and why.
-- A reason is required. Locked as redrive_dead_letters locks: a letter redriven
-- and discarded at once goes one way only, and the second finds it gone. Returns
-- how many were discarded; ids that are not dead letters (any more) are skipped.
CREATE OR REPLACE FUNCTION session_ledger.discard_dead_letters(p_msg_ids bigint[], p_reason text) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_reason text := pg_catalog.btrim(p_reason);
    v_ids bigint[];
    v_record jsonb;
    v_n bigint;
BEGIN
    IF v_reason IS NULL OR v_reason OPERATOR(pg_catalog.=) '' THEN
        RAISE EXCEPTION 'a discard needs a reason: say why these dead letters are dropped'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.length(v_reason) OPERATOR(pg_catalog.>) 1000 THEN
        RAISE EXCEPTION 'a discard reason is at most 1000 characters' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(d.msg_id ORDER BY d.msg_id) INTO v_ids
    FROM (SELECT q.msg_id FROM pgmq.q_booking_events_dlq q
          WHERE q.msg_id OPERATOR(pg_catalog.=) ANY (p_msg_ids) ORDER BY q.msg_id FOR UPDATE) AS d;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    v_record := pg_catalog.jsonb_build_object(
        'at', pg_catalog.clock_timestamp(),
        'by', session_ledger.caller(),
        'login', session_user,
        'reason', v_reason);
    WITH gone AS (
        DELETE FROM pgmq.q_booking_events_dlq q WHERE q.msg_id OPERATOR(pg_catalog.=) ANY (v_ids)
        RETURNING q.msg_id, q.read_ct, q.enqueued_at, q.vt, q.message
    )
    INSERT INTO pgmq.a_booking_events_dlq (msg_id, read_ct, enqueued_at, vt, message)
    SELECT g.msg_id, g.read_ct, g.enqueued_at, g.vt,
           CASE WHEN pg_catalog.jsonb_typeof(g.message) OPERATOR(pg_catalog.=) 'object'
                THEN g.message OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('discarded', v_record)
                -- a letter some other producer put here as it was: kept whole beside the record
                ELSE pg_catalog.jsonb_build_object('message', g.message, 'discarded', v_record) END
    FROM gone g;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END
$$;

-- What `listener status` adds to status(): the oldest p_limit dead letters with the
-- id that `listener replay --dead-letter --id` and `listener discard --dead-letter
-- --id` take, and the package that last migrated the schema. One call the
-- listener's role may make, like status().
CREATE OR REPLACE FUNCTION session_ledger.status_details(p_limit int) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_build_object(
        'dead_letters', coalesce((
            SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                       'id', d.msg_id,
                       'dead_lettered_at', d.enqueued_at,
                       'reason', d.message OPERATOR(pg_catalog.->>) 'reason',
                       'source_msg_id', d.message OPERATOR(pg_catalog.->) 'source_msg_id',
                       -- whatever the letter names, shortened: a poison payload can be anything
                       'booking_id', pg_catalog.left(
                           d.message OPERATOR(pg_catalog.->) 'message' OPERATOR(pg_catalog.->>) 'booking_id', 64)
                   ) ORDER BY d.msg_id)
            FROM (SELECT q.msg_id, q.enqueued_at, q.message FROM pgmq.q_booking_events_dlq q
                  ORDER BY q.msg_id
                  LIMIT pg_catalog.int4larger(pg_catalog.int4smaller(p_limit, 1000), 0)) AS d), '[]'::jsonb),
        'migrated_by', (SELECT s.package_version FROM session_ledger.schema_info s))
$$;

-- EXECUTE on both goes to session_ledger_listener (the dashboard's discard and
-- `listener status` under the listener's login) in 90_grants.sql, which revokes
-- everything from PUBLIC and the API roles first and runs after this file.
