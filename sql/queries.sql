-- Named queries, loaded once by listener/sql_files.py. Parameters are psycopg
-- named placeholders; every name is fixed, so no SQL is ever built from strings.

-- name: read_events
SELECT msg_id, read_ct, enqueued_at, message
FROM session_ledger.read_events(%(qty)s, %(vt)s);

-- name: handle_batch
SELECT booking_id, outcome, purchase_id, previous_purchase_id, reason
FROM session_ledger.handle_batch(
    %(listener)s, %(msg_ids)s, %(booking_ids)s, %(enqueued_at)s,
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

-- name: server_facts
SELECT current_setting('server_version') AS server_version,
       current_setting('fsync') AS fsync,
       current_setting('synchronous_commit') AS synchronous_commit;

-- name: status
SELECT session_ledger.status() AS status;

-- name: queue_depths
SELECT queue_depth, queue_visible, oldest_event_age_s, dead_letter_depth
FROM session_ledger.queue_depths();

-- name: ping
SELECT 1 AS ok;
