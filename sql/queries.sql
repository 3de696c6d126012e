-- Named queries, loaded once by listener/sql_files.py. Parameters are psycopg
-- named placeholders; every name is fixed, so no SQL is ever built from strings.

-- name: read_events
SELECT msg_id, read_ct, enqueued_at, message
FROM session_ledger.read_events(%(qty)s, %(vt)s);

-- name: handle_batch
-- Ids travel as one comma-separated text each: dumping Python lists element by
-- element would cost the listener more than the database spends on the batch.
SELECT booking_id::text, outcome, purchase_id::text, previous_purchase_id::text, reason
FROM session_ledger.handle_batch(
    %(listener)s,
    string_to_array(%(msg_ids)s, ',')::bigint[],
    string_to_array(%(booking_ids)s, ',')::uuid[],
    string_to_array(%(enqueued_at)s, ',')::timestamptz[],
    %(dead_msg_ids)s, %(dead_reasons)s, %(waiting)s
);

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

-- name: plan_bookings
SELECT booking_id, action, purchase_id, previous_purchase_id, detail
FROM session_ledger.plan_bookings(%(booking_ids)s);

-- name: apply_bookings
SELECT booking_id, outcome, purchase_id, previous_purchase_id, reason
FROM session_ledger.apply_bookings(%(booking_ids)s, %(enqueued_at)s);

-- name: enqueue_bookings
SELECT session_ledger.enqueue_bookings(%(booking_ids)s, %(source)s) AS enqueued;

-- name: out_of_sync_count
SELECT count(*) AS n
FROM public.bookings b
FULL JOIN session_ledger.charges l ON l.booking_id = b.id
CROSS JOIN session_ledger.config c
WHERE (CASE WHEN b.status = ANY (c.consuming_statuses) THEN b.purchase_id END)
      IS DISTINCT FROM (CASE WHEN l.state IN ('paid', 'unfunded') THEN l.purchase_id END);

-- name: out_of_sync_bookings
SELECT coalesce(b.id, l.booking_id) AS booking_id
FROM public.bookings b
FULL JOIN session_ledger.charges l ON l.booking_id = b.id
CROSS JOIN session_ledger.config c
WHERE (CASE WHEN b.status = ANY (c.consuming_statuses) THEN b.purchase_id END)
      IS DISTINCT FROM (CASE WHEN l.state IN ('paid', 'unfunded') THEN l.purchase_id END);

-- name: archived_bookings_count
SELECT count(DISTINCT a.message ->> 'booking_id') AS n
FROM pgmq.a_booking_events a
WHERE (%(since)s::timestamptz IS NULL OR a.enqueued_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR a.enqueued_at < %(until)s)
  AND (%(bookings)s::text[] IS NULL OR a.message ->> 'booking_id' = ANY (%(bookings)s::text[]));

-- name: archived_bookings
SELECT DISTINCT (a.message ->> 'booking_id')::uuid AS booking_id
FROM pgmq.a_booking_events a
WHERE (%(since)s::timestamptz IS NULL OR a.enqueued_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR a.enqueued_at < %(until)s)
  AND (%(bookings)s::text[] IS NULL OR a.message ->> 'booking_id' = ANY (%(bookings)s::text[]))
  AND a.message ->> 'booking_id' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';

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

-- dashboard

-- name: dashboard_lag
SELECT minute, events, lag_p50_s, lag_p99_s, lag_max_s
FROM session_ledger.dashboard_lag(%(minutes)s);

-- name: dashboard_dead_letters
SELECT msg_id, enqueued_at, reason, payload
FROM session_ledger.dashboard_dead_letters(%(limit)s);

-- name: dashboard_unfunded
SELECT booking_id, purchase_id, reason, updated_at
FROM session_ledger.dashboard_unfunded(%(limit)s);

-- name: dashboard_out_of_sync
SELECT booking_id, booking_status, booking_purchase_id, ledger_state, ledger_purchase_id
FROM session_ledger.dashboard_out_of_sync(%(limit)s);

-- name: dashboard_recent_charges
SELECT booking_id, purchase_id, state, reason, source, updated_at
FROM session_ledger.dashboard_recent_charges(%(limit)s);

-- name: dashboard_redrive
SELECT session_ledger.dashboard_redrive(%(msg_ids)s) AS moved;

-- name: dashboard_replay
SELECT session_ledger.dashboard_replay(%(booking_id)s) AS enqueued;
