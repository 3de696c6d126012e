-- Named queries, loaded once by listener/sql_files.py. Parameters are psycopg
-- named placeholders; every name is fixed, so no SQL is ever built from strings.

-- name: read_events
SELECT msg_id, read_ct, enqueued_at, message
FROM session_ledger.read_events(%(qty)s, %(vt)s);

-- name: handle_batch
-- Ids travel as one comma-separated text: dumping a Python list element by
-- element would cost the listener more than the database spends on the batch.
SELECT booking_id::text, outcome, purchase_id::text, previous_purchase_id::text, reason
FROM session_ledger.handle_batch_v2(
    %(listener)s,
    string_to_array(%(msg_ids)s, ',')::bigint[],
    %(dead_msg_ids)s, %(dead_reasons)s
);

-- name: ledger_installed
SELECT to_regclass('session_ledger.migrations') IS NOT NULL AS installed,
       to_regprocedure('session_ledger.installed_schema()') IS NOT NULL AS versioned;

-- name: installed_schema
SELECT session_ledger.installed_schema() AS version;

-- name: heartbeat
SELECT session_ledger.heartbeat(%(listener)s, %(host)s, %(pid)s, %(waiting)s);

-- name: stop_listener
SELECT session_ledger.stop_listener(%(listener)s);

-- name: complete_past
SELECT session_ledger.complete_past_bookings() AS completed;

-- name: applied_migrations
SELECT version, name, checksum, applied_at
FROM session_ledger.migrations
ORDER BY version;

-- name: migrations_table_exists
SELECT to_regclass('session_ledger.migrations') IS NOT NULL AS present;

-- name: pgmq_installed
SELECT to_regclass('pgmq.meta') IS NOT NULL AS present;

-- name: pgmq_extension_available
SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgmq') AS available;

-- name: host_tables
SELECT c.table_name, c.column_name
FROM information_schema.columns c
WHERE c.table_schema = 'public'
  AND c.table_name IN ('bookings', 'client_purchases');

-- name: host_function
SELECT to_regprocedure(%(signature)s) IS NOT NULL AS present;

-- name: status
SELECT session_ledger.status() AS status;

-- name: queue_depths
SELECT queue_depth, queue_visible, oldest_event_age_s, dead_letter_depth
FROM session_ledger.queue_depths();

-- name: ping
SELECT 1 AS ok;

-- name: apply_bookings
SELECT booking_id, outcome, purchase_id, previous_purchase_id, reason
FROM session_ledger.apply_bookings(%(booking_ids)s, %(enqueued_at)s);

-- name: enqueue_bookings
SELECT session_ledger.enqueue_bookings(%(booking_ids)s, %(source)s) AS enqueued;

-- name: out_of_sync_count
SELECT count(*) AS n FROM session_ledger.out_of_sync;

-- name: out_of_sync_bookings
SELECT booking_id FROM session_ledger.out_of_sync;

-- name: archived_bookings_count
SELECT count(DISTINCT a.message ->> 'booking_id') AS n
FROM pgmq.a_booking_events a
WHERE (%(since)s::timestamptz IS NULL OR a.enqueued_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR a.enqueued_at < %(until)s)
  AND (%(bookings)s::text[] IS NULL OR a.message ->> 'booking_id' = ANY (%(bookings)s::text[]));

-- name: archived_bookings
SELECT DISTINCT session_ledger.event_booking_id(a.message) AS booking_id
FROM pgmq.a_booking_events a
WHERE (%(since)s::timestamptz IS NULL OR a.enqueued_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR a.enqueued_at < %(until)s)
  AND (%(bookings)s::text[] IS NULL OR a.message ->> 'booking_id' = ANY (%(bookings)s::text[]))
  AND session_ledger.event_booking_id(a.message) IS NOT NULL;

-- name: dead_letters
SELECT d.msg_id, d.enqueued_at,
       d.message ->> 'reason' AS reason,
       (d.message ->> 'source_msg_id')::bigint AS source_msg_id,
       left(d.message ->> 'message', 120) AS preview,
       length(d.message ->> 'message') AS size
FROM pgmq.q_booking_events_dlq d
WHERE %(ids)s::bigint[] IS NULL OR d.msg_id = ANY (%(ids)s::bigint[])
ORDER BY d.msg_id;

-- name: redrive_dead_letters
SELECT session_ledger.redrive_dead_letters(%(ids)s) AS moved;

-- name: prune_archive
WITH doomed AS (
    SELECT a.msg_id FROM pgmq.a_booking_events a
    WHERE a.archived_at < now() - %(older_than)s::interval
    ORDER BY a.msg_id
    LIMIT %(limit)s
)
DELETE FROM pgmq.a_booking_events a USING doomed WHERE a.msg_id = doomed.msg_id;

-- name: prune_dead_letter_archive
WITH doomed AS (
    SELECT a.msg_id FROM pgmq.a_booking_events_dlq a
    WHERE a.archived_at < now() - %(older_than)s::interval
    ORDER BY a.msg_id
    LIMIT %(limit)s
)
DELETE FROM pgmq.a_booking_events_dlq a USING doomed WHERE a.msg_id = doomed.msg_id;

-- name: prune_listeners
DELETE FROM session_ledger.listeners
WHERE coalesce(stopped_at, heartbeat_at) < now() - %(older_than)s::interval;

-- name: set_cutover
UPDATE session_ledger.config SET adopt_until = coalesce(%(at)s, clock_timestamp()) RETURNING adopt_until;

-- name: queued_bookings
-- Messages that are not exactly our event are left to the listener, which dead-letters them with a reason.
SELECT b.booking_id,
       bool_and(q.enqueued_at < %(until)s) AS all_before,
       bool_or(q.enqueued_at < %(until)s) AS any_before,
       array_agg(q.msg_id ORDER BY q.msg_id) AS msg_ids
FROM pgmq.q_booking_events q
CROSS JOIN LATERAL (SELECT session_ledger.event_booking_id(q.message) AS booking_id) AS b
WHERE b.booking_id IS NOT NULL
GROUP BY 1
ORDER BY 1;

-- name: settle_before_cutover
SELECT count(*) AS n
FROM session_ledger.apply_bookings(
    %(booking_ids)s::uuid[],
    array_fill('-infinity'::timestamptz, ARRAY[cardinality(%(booking_ids)s::uuid[])])
);

-- name: archive_events
SELECT pgmq.archive('booking_events', %(msg_ids)s::bigint[]);

-- name: live_listeners
SELECT host, pid FROM session_ledger.live_listeners ORDER BY started_at;
