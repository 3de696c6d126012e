-- Named queries, loaded once by listener/core/sql_files.py. Parameters are psycopg
-- named placeholders; every name is fixed, so no SQL is ever built from strings.

------------------------------------------------------------------------------
-- the listener: claiming and handling a batch, heartbeats, status
------------------------------------------------------------------------------

-- name: read_events
SELECT msg_id, read_ct, enqueued_at, message
FROM session_ledger.read_events(%(qty)s, %(vt)s);

-- name: handle_batch
-- Ids travel as one comma-separated text: dumping a Python list element by
-- element would cost the listener more than the database spends on the batch.
SELECT booking_id::text, outcome, purchase_id::text, previous_purchase_id::text, reason,
       caused_by ->> 'role' AS by_role, caused_by ->> 'uid' AS by_uid, caused_by ->> 'trace' AS trace,
       msg_id, dead_letter_id
FROM session_ledger.handle_batch_v3(
    %(listener)s,
    string_to_array(%(msg_ids)s, ',')::bigint[],
    %(dead_msg_ids)s, %(dead_reasons)s
);

-- name: installed_schema
SELECT session_ledger.installed_schema() AS version;

-- name: app_keys
SELECT session_ledger.app_keys() AS keys;

-- name: heartbeat
SELECT session_ledger.heartbeat(%(listener)s, %(host)s, %(pid)s, %(waiting)s);

-- name: stop_listener
SELECT session_ledger.stop_listener(%(listener)s);

-- name: status
SELECT session_ledger.status() AS status;

-- name: queue_depths
SELECT queue_depth, queue_visible, oldest_event_age_s, dead_letter_depth
FROM session_ledger.queue_depths();

-- name: ping
SELECT 1 AS ok;

-- name: live_listeners
SELECT host, pid FROM session_ledger.live_listeners ORDER BY started_at;

-- doctor: read-only catalog queries behind `listener doctor`. None takes a
-- parameter; objects are found by name in the catalogs (never by a regclass
-- cast), so each query works before `listener migrate` and without USAGE on
-- the schemas it inspects.

-- name: status_details
SELECT session_ledger.status_details(%(limit)s) AS details;

-- name: listen
LISTEN {};

------------------------------------------------------------------------------
-- who may do what: the ledger's presence and owner, the app's tables and the rights on them
------------------------------------------------------------------------------

-- name: pgmq_installed
SELECT to_regclass('pgmq.meta') IS NOT NULL AS present;

-- name: pgmq_extension_available
SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pgmq') AS available;

-- name: ledger_state
-- Whether the ledger is installed, who owns it, and what the connected role may do
-- with it. From the catalogs, which every role may read (to_regclass() fails on a
-- schema the role has no USAGE on).
SELECT current_user::text AS role,
       s.oid IS NOT NULL AND EXISTS (
           SELECT 1 FROM pg_catalog.pg_class c WHERE c.relnamespace = s.oid AND c.relname = 'migrations'
       ) AS installed,
       pg_catalog.pg_get_userbyid(s.nspowner)::text AS owner,
       coalesce(pg_catalog.pg_has_role(s.nspowner, 'USAGE'), false) AS acts_as_owner,
       f.oid IS NOT NULL AS versioned,
       coalesce(pg_catalog.has_schema_privilege(s.oid, 'USAGE')
                AND pg_catalog.has_function_privilege(f.oid, 'EXECUTE'), false) AS may_read_version
FROM (SELECT 1) AS one
LEFT JOIN pg_catalog.pg_namespace s ON s.nspname = 'session_ledger'
LEFT JOIN pg_catalog.pg_proc f ON f.pronamespace = s.oid AND f.proname = 'installed_schema' AND f.pronargs = 0;

-- name: stored_mapping
-- The mapping an install was rendered from (schema version 7 on; ask ledger_tables_present first).
SELECT m.mapping::text AS mapping, m.keys
FROM session_ledger.mapping m;

-- name: store_mapping
INSERT INTO session_ledger.mapping (singleton, mapping, sha256, keys)
VALUES (true, %(mapping)s::jsonb, %(sha256)s, %(keys)s::jsonb)
ON CONFLICT (singleton) DO UPDATE
SET mapping = EXCLUDED.mapping, sha256 = EXCLUDED.sha256, keys = EXCLUDED.keys,
    applied_at = now(), applied_by = session_user
WHERE session_ledger.mapping.sha256 IS DISTINCT FROM EXCLUDED.sha256
   OR session_ledger.mapping.keys IS DISTINCT FROM EXCLUDED.keys;

-- name: set_consuming_statuses
-- The statuses in which a booking consumes its pack, from the mapping.
UPDATE session_ledger.config SET consuming_statuses = %(statuses)s::text[];

-- name: column_types
-- Each column of one table with its SQL type (integer, bigint, uuid, ...); none for a table that is missing.
SELECT a.attname::text AS name, pg_catalog.format_type(a.atttypid, NULL) AS type
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = pg_catalog.to_regclass(%(table)s) AND a.attnum > 0 AND NOT a.attisdropped;

-- name: may_create_schema
SELECT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE') AS allowed,
       pg_catalog.current_database()::text AS database;

-- name: relation_exists
-- The catalogs, not to_regclass(): that fails on a schema the role has no USAGE on.
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %(schema)s AND c.relname = %(name)s) AS present;

------------------------------------------------------------------------------
-- the mapping's check (listener/mapping/check.py) and `listener map`: what the catalog holds
-- of the tables, columns, functions and roles a mapping names, read before anything changes
------------------------------------------------------------------------------

-- name: mapping_relation
-- One relation by schema and name: its kind (r, p, v, m, ...), or no row. From the catalogs,
-- which every role may read, where to_regclass() fails on a schema without USAGE.
SELECT c.relkind::text AS kind
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(name)s;

-- name: mapping_schema_tables
-- Whether a schema exists, and its tables: named in a problem about a table that is not there.
SELECT s.oid IS NOT NULL AS schema_exists,
       ARRAY(SELECT c.relname::text FROM pg_catalog.pg_class c
             WHERE c.relnamespace = s.oid AND c.relkind IN ('r', 'p') ORDER BY c.relname) AS tables
FROM (SELECT 1) AS one
LEFT JOIN pg_catalog.pg_namespace s ON s.nspname = %(schema)s;

-- name: mapping_columns
-- The columns of one table in order: the type as written (format_type), the type a domain
-- stands for (what the checks judge), and an enum's values.
SELECT a.attname::text AS name,
       pg_catalog.format_type(a.atttypid, NULL) AS type,
       pg_catalog.format_type(coalesce(nullif(t.typbasetype, 0), a.atttypid), NULL) AS base_type,
       ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e
             WHERE e.enumtypid = a.atttypid ORDER BY e.enumsortorder) AS labels,
       t.typtype = 'e' AS is_enum
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
WHERE n.nspname = %(schema)s AND c.relname = %(name)s
ORDER BY a.attnum;

-- name: mapping_foreign_key
-- Whether a foreign key of one column references exactly another table's column.
SELECT EXISTS (
    SELECT 1
    FROM pg_catalog.pg_constraint k
    JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
    JOIN pg_catalog.pg_attribute f ON f.attrelid = k.confrelid AND f.attnum = k.confkey[1]
    WHERE k.contype = 'f' AND k.conrelid = pg_catalog.to_regclass(%(table)s)
      AND k.confrelid = pg_catalog.to_regclass(%(references)s)
      AND pg_catalog.cardinality(k.conkey) = 1 AND a.attname = %(column)s AND f.attname = %(referenced)s
) AS present;

-- name: mapping_unique_column
-- Whether one column alone is unique: a primary key, unique constraint or unique index on just
-- it, not partial (a partial index leaves rows outside its predicate free to repeat).
SELECT EXISTS (
    SELECT 1
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
    WHERE i.indrelid = pg_catalog.to_regclass(%(table)s) AND i.indisunique AND i.indnkeyatts = 1
      AND i.indpred IS NULL AND a.attname = %(column)s
) AS present;

-- name: mapping_function
-- The function with exactly this signature (schema.name(type)): its return type, or no row;
-- and every function of that name, for the problem that names what there is instead.
SELECT pg_catalog.format_type(p.prorettype, NULL) AS returns
FROM pg_catalog.pg_proc p
WHERE p.oid = pg_catalog.to_regprocedure(%(signature)s);

-- name: mapping_functions_named
SELECT p.oid::pg_catalog.regprocedure::text AS signature
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s AND p.proname = %(name)s
ORDER BY 1;

-- name: mapping_roles_present
SELECT r.rolname::text AS name FROM pg_catalog.pg_roles r WHERE r.rolname = ANY (%(names)s::text[]);

-- name: mapping_signed_in_roles
-- Whether the role the ledger asks its membership function of (authenticated) exists, and which
-- of these roles are members of it.
SELECT pg_catalog.to_regrole('authenticated') IS NOT NULL AS present,
       ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_roles r
             WHERE r.rolname = ANY (%(names)s::text[])
               AND pg_catalog.to_regrole('authenticated') IS NOT NULL
               AND pg_catalog.pg_has_role(r.oid, pg_catalog.to_regrole('authenticated'), 'MEMBER')
             ORDER BY 1) AS members;

-- name: mapping_table_rights
-- For one of the app's tables: its owner, and which of these privileges the connected role lacks
-- (USAGE standing for its schema's, without which nothing in it can be reached).
SELECT pg_catalog.pg_get_userbyid(c.relowner)::text AS owner,
       ARRAY(
           SELECT w.privilege FROM unnest(%(privileges)s::text[]) WITH ORDINALITY AS w(privilege, i)
           WHERE NOT pg_catalog.has_table_privilege(c.oid, w.privilege)
           ORDER BY w.i
       ) || CASE WHEN pg_catalog.has_schema_privilege(n.oid, 'USAGE') THEN '{}'::text[]
                 ELSE ARRAY['USAGE'] END AS lacking
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = %(name)s AND c.relkind IN ('r', 'p', 'v', 'm');

-- name: mapping_fragment_guard
-- Before a mapping's predicate or expression is compiled: it runs as the owner, so it may not
-- write, take long, or find anything outside pg_catalog and pg_temp (as in the ledger's functions).
-- The transaction is rolled back after.
SET TRANSACTION READ ONLY;
SET LOCAL statement_timeout = '5s';
SET LOCAL lock_timeout = '5s';
SET LOCAL search_path = pg_catalog, pg_temp

-- name: mapping_fragment_type
-- A predicate or expression of the mapping over one row of its table, planned, never run (LIMIT
-- 0): its one column's type. The fragment is the operator's own file; the LIMIT's parameter sends
-- the statement by the extended protocol, which takes a single statement only.
SELECT ({fragment}) AS value FROM {table} AS r LIMIT %(limit)s;

-- name: type_name
SELECT pg_catalog.format_type(%(oid)s::pg_catalog.oid, NULL) AS name;

-- name: mapping_tables
-- `listener map`: every table outside the system schemas and the ledger's, with its columns
-- (name, type as the checks judge it) in order.
SELECT n.nspname::text AS schema, c.relname::text AS name,
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) AS columns,
       ARRAY(SELECT pg_catalog.format_type(coalesce(nullif(t.typbasetype, 0), a.atttypid), NULL)
             || CASE WHEN t.typtype = 'e' THEN ' enum' ELSE '' END
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum) AS types,
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_index i
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
             WHERE i.indrelid = c.oid AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL
             ORDER BY 1) AS unique_columns,
       ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND a.attgenerated <> '' ORDER BY a.attnum) AS generated,
       ARRAY(SELECT pg_catalog.pg_get_constraintdef(k.oid) FROM pg_catalog.pg_constraint k
             WHERE k.conrelid = c.oid AND k.contype = 'c' ORDER BY k.conname) AS checks,
       ARRAY(SELECT a.attname::text || ':' || e.enumlabel::text
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_enum e ON e.enumtypid = a.atttypid
             WHERE a.attrelid = c.oid AND a.attnum > 0 ORDER BY a.attnum, e.enumsortorder) AS enum_labels
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'session_ledger', 'pgmq', 'cron', 'auth',
                        'storage', 'extensions', 'realtime', 'supabase_functions', 'vault', 'graphql')
  AND n.nspname NOT LIKE 'pg\_%%'
ORDER BY 1, 2;

-- name: mapping_foreign_keys
-- `listener map`: the single-column foreign keys between those tables.
SELECT sn.nspname || '.' || s.relname AS from_table, a.attname::text AS from_column,
       tn.nspname || '.' || t.relname AS to_table, f.attname::text AS to_column
FROM pg_catalog.pg_constraint k
JOIN pg_catalog.pg_class s ON s.oid = k.conrelid
JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_catalog.pg_class t ON t.oid = k.confrelid
JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
JOIN pg_catalog.pg_attribute f ON f.attrelid = k.confrelid AND f.attnum = k.confkey[1]
WHERE k.contype = 'f' AND pg_catalog.cardinality(k.conkey) = 1
ORDER BY 1, 2;

-- name: mapping_functions_of_one_argument
-- `listener map`: the app's functions of one argument, where a membership function (returning
-- boolean) and the old deduction functions are found.
SELECT p.oid::pg_catalog.regprocedure::text AS signature, n.nspname::text AS schema, p.proname::text AS name,
       pg_catalog.format_type(p.proargtypes[0], NULL) AS argument,
       pg_catalog.format_type(p.prorettype, NULL) AS returns
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.pronargs = 1 AND p.prokind = 'f'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'session_ledger', 'pgmq', 'cron', 'auth',
                        'storage', 'extensions', 'realtime', 'supabase_functions', 'vault', 'graphql')
  AND n.nspname NOT LIKE 'pg\_%%'
ORDER BY 1;

-- name: mapping_roles
-- `listener map`: the roles that are not the system's, for access.trusted_roles; and whether the
-- database is Supabase's (its API roles, and the schema auth with auth.uid()).
SELECT ARRAY(SELECT r.rolname::text FROM pg_catalog.pg_roles r
             WHERE r.rolname NOT LIKE 'pg\_%%' AND NOT r.rolsuper ORDER BY 1) AS roles,
       pg_catalog.to_regprocedure('auth.uid()') IS NOT NULL AS has_auth_uid;

-- name: mapping_writer_roles
-- `listener map`: the roles that may update both the bookings and the packs (the app's server or
-- its staff, where a signed-in user's role may update bookings alone), leaving out superusers, the
-- tables' owner and a role that is a member of another one listed (its group is named instead).
WITH w AS (
    SELECT r.oid, r.rolname
    FROM pg_catalog.pg_roles r
    WHERE r.rolname NOT LIKE 'pg\_%%' AND NOT r.rolsuper
      AND r.oid <> (SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = %(bookings)s::regclass)
      AND pg_catalog.has_table_privilege(r.oid, %(bookings)s::regclass, 'UPDATE')
      AND pg_catalog.has_table_privilege(r.oid, %(packs)s::regclass, 'UPDATE')
)
SELECT ARRAY(SELECT w.rolname::text FROM w
             WHERE NOT EXISTS (SELECT 1 FROM w g WHERE g.oid <> w.oid
                               AND pg_catalog.pg_has_role(w.oid, g.oid, 'MEMBER'))
             ORDER BY 1) AS roles;

------------------------------------------------------------------------------
-- `listener migrate`: its lock, the bootstrap, the recorded migrations and repeatables, recovery
------------------------------------------------------------------------------

-- name: applied_migrations
SELECT version, name, checksum, applied_at
FROM session_ledger.migrations
ORDER BY version;

-- name: migration_lock
SELECT pg_advisory_lock(%(key)s);

-- name: migration_unlock
SELECT pg_advisory_unlock(%(key)s);

-- name: bootstrap
-- The ledger's schema and its record of migrations: what every migrate run, and every
-- exported migration file, makes sure of before it reads what is applied.
CREATE SCHEMA IF NOT EXISTS session_ledger;
REVOKE ALL ON SCHEMA session_ledger FROM PUBLIC;
CREATE TABLE IF NOT EXISTS session_ledger.migrations (
    version int PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON session_ledger.migrations FROM PUBLIC;

-- name: ledger_install_broken
-- Why the recorded migrations cannot be what this database holds, or NULL: an install
-- that created ledger objects but never recorded its first migration, or a migration
-- missing while a later one is recorded (files applied on past an error).
SELECT CASE
    WHEN NOT EXISTS (SELECT 1 FROM session_ledger.migrations m WHERE m.version = %(first)s)
         AND (EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = 'session_ledger' AND c.relname NOT IN ('migrations', 'migrations_pkey'))
              OR EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                         WHERE n.nspname = 'session_ledger'))
        THEN 'an install created ledger objects but never recorded migration ' || lpad(%(first)s::text, 4, '0')
    ELSE (SELECT 'migration ' || lpad(min(v)::text, 4, '0') || ' is not recorded, though a later one is'
          FROM unnest(%(versions)s::int[]) AS v
          WHERE NOT EXISTS (SELECT 1 FROM session_ledger.migrations m WHERE m.version = v)
            AND EXISTS (SELECT 1 FROM session_ledger.migrations m WHERE m.version > v)
          HAVING min(v) IS NOT NULL)
END AS why;

-- name: ledger_moved_charges
-- Whether the ledger has done anything a reinstall could not redo (one query per table, run only
-- where an incomplete install has that table): charged or given back a session ...
SELECT EXISTS (SELECT 1 FROM session_ledger.charges WHERE source IN ('listener', 'audit')) AS moved;

-- name: ledger_moved_adjustments
-- ... recorded an audit's adjustment ...
SELECT EXISTS (SELECT 1 FROM session_ledger.adjustments) AS moved;

-- name: ledger_moved_absorbed_calls
-- ... or absorbed an old call whose booking it then owes a charge.
SELECT EXISTS (SELECT 1 FROM session_ledger.pack_calls WHERE outcome = 'absorbed') AS moved;

-- name: ledger_tables_present
-- Which of these tables (schema-qualified names) exist.
SELECT t.name FROM unnest(%(names)s::text[]) AS t(name) WHERE to_regclass(t.name) IS NOT NULL;

-- name: record_schema_version
INSERT INTO session_ledger.schema_info (version, package_version) VALUES (%(version)s, %(package)s)
ON CONFLICT (singleton) DO UPDATE SET version = excluded.version,
    package_version = excluded.package_version, migrated_at = now();

-- name: record_migration
INSERT INTO session_ledger.migrations (version, name, checksum) VALUES (%(version)s, %(name)s, %(checksum)s);

-- name: recorded_schema_version
SELECT version FROM session_ledger.schema_info;

-- name: recorded_repeatables
SELECT name, checksum FROM session_ledger.repeatables;

-- name: record_repeatables
-- Exactly these files, with these checksums: rows of files no longer shipped go.
INSERT INTO session_ledger.repeatables AS r (name, checksum)
SELECT u.name, u.checksum FROM unnest(%(names)s::text[], %(checksums)s::text[]) AS u(name, checksum)
ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now();

-- name: forget_repeatables
DELETE FROM session_ledger.repeatables WHERE name <> ALL (%(names)s::text[]);

-- name: create_pgmq_extension
CREATE EXTENSION IF NOT EXISTS pgmq;

-- name: app_grants_revoked_now
-- The privileges on the app's tables this migrate run revoked from PUBLIC and the API roles
-- (sql/functions/90_grants.sql records them with the transaction's time).
SELECT r.grantee, r.table_name, pg_catalog.array_agg(r.privilege ORDER BY r.privilege) AS privileges
FROM session_ledger.revoked_app_grants r
WHERE r.revoked_at = pg_catalog.now()
GROUP BY r.grantee, r.table_name
ORDER BY r.table_name, r.grantee;

------------------------------------------------------------------------------
-- `listener export-migrations`: each file it writes is one DO block, so it applies
-- whole or not at all however it is applied (psql -f, psql -1, supabase db push).
-- Their slots, written as named placeholders, are where export writes in SQL: literals, and dollar-quoted text the
-- block EXECUTEs (the named queries migrate runs, with their values written in).
-- 
------------------------------------------------------------------------------

-- name: export_pgmq_script
-- PGMQ's SQL-only script, where the schema pgmq does not exist yet.
DO $session_ledger_export$
BEGIN
    IF pg_catalog.to_regnamespace('pgmq') IS NOT NULL THEN
        RAISE NOTICE 'PGMQ is installed already: nothing to do';
        RETURN;
    END IF;
    EXECUTE %(script)s;
END
$session_ledger_export$;

-- name: export_requires
-- Refuse unless every migration before the file's own is recorded, then unless PGMQ is installed.
    IF pg_catalog.to_regclass('session_ledger.migrations') IS NULL THEN
        missing := (%(before)s::int[])[1];
    ELSE
        SELECT min(v) INTO missing FROM unnest(%(before)s::int[]) AS v
         WHERE NOT EXISTS (SELECT 1 FROM session_ledger.migrations m WHERE m.version = v);
    END IF;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'session ledger migration % is not applied: apply the files before this one first, or run `listener migrate`',
            pg_catalog.lpad(missing::text, 4, '0');
    END IF;
    IF pg_catalog.to_regnamespace('pgmq') IS NULL THEN
        RAISE EXCEPTION 'PGMQ is not installed: apply the *_session_ledger_pgmq.sql file first';
    END IF;

-- name: export_migration
-- One migration: nothing when it is recorded already, a refusal when one before it is not.
DO $session_ledger_export$
DECLARE
    missing int;
    recorded text;
BEGIN
%(requires)s
    EXECUTE %(bootstrap)s;
    SELECT m.checksum INTO recorded FROM session_ledger.migrations m WHERE m.version = %(version)s;
    IF recorded = %(checksum)s THEN
        RAISE NOTICE 'session ledger migration % is applied already: nothing to do', %(label)s;
        RETURN;
    ELSIF recorded IS NOT NULL THEN
        RAISE EXCEPTION 'session ledger migration % was changed after it was applied', %(label)s;
    END IF;
    EXECUTE %(migration)s;
    EXECUTE %(record)s;
END
$session_ledger_export$;

-- name: export_functions
-- Every repeatable file, once every migration is applied.
DO $session_ledger_export$
DECLARE
    missing int;
BEGIN
%(requires)s
    EXECUTE %(functions)s;
    EXECUTE %(record)s;
END
$session_ledger_export$;

------------------------------------------------------------------------------
-- the operator's commands: converge, reconcile, replay, dead letters, cut-over, the cron path, pause
------------------------------------------------------------------------------

-- name: complete_past
SELECT session_ledger.complete_past_bookings() AS completed;

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
-- The same rows archived_bookings streams, counted.
SELECT count(DISTINCT session_ledger.event_booking_id(a.message)) AS n
FROM pgmq.a_booking_events a
WHERE (%(since)s::timestamptz IS NULL OR a.enqueued_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR a.enqueued_at < %(until)s)
  AND (%(bookings)s::text[] IS NULL OR a.message ->> 'booking_id' = ANY (%(bookings)s::text[]))
  AND session_ledger.event_booking_id(a.message) IS NOT NULL;

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

-- name: record_given_away_after_cutover
-- The given-away count of every pack the settled bookings' ledger rows name.
SELECT session_ledger.record_given_away(array_agg(DISTINCT l.purchase_id))
FROM session_ledger.charges l
WHERE l.booking_id = ANY (%(booking_ids)s::uuid[]) AND l.purchase_id IS NOT NULL;

-- name: archive_events
SELECT pgmq.archive('booking_events', %(msg_ids)s::bigint[]);

-- name: pause_charging
SELECT session_ledger.pause_charging(%(reason)s) AS paused;

-- name: resume_charging
SELECT session_ledger.resume_charging() AS ended;

-- name: pause_state
SELECT session_ledger.pause_state() AS paused;

-- name: archived_causes
-- Who caused each booking's latest archived event.
SELECT DISTINCT ON (a.message ->> 'booking_id') (a.message ->> 'booking_id')::uuid AS booking_id,
       a.message -> 'cause' AS caused_by
FROM pgmq.a_booking_events a
WHERE a.message ->> 'booking_id' = ANY (%(bookings)s::text[])
ORDER BY a.message ->> 'booking_id', a.msg_id DESC;

-- name: mark_app_deployed
SELECT session_ledger.mark_app_deployed(%(at)s) AS app_deployed_at;

-- name: discard_dead_letters
SELECT session_ledger.discard_dead_letters(%(ids)s, %(reason)s) AS discarded;

------------------------------------------------------------------------------
-- `listener prune`: retention
------------------------------------------------------------------------------

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
-- Never a live listener's row (the definition of session_ledger.live_listeners, written
-- on the row itself so a heartbeat committed meanwhile is re-checked): its counters and
-- start time belong to a running process, whatever the retention.
DELETE FROM session_ledger.listeners l
USING session_ledger.config c
WHERE coalesce(l.stopped_at, l.heartbeat_at) < now() - %(older_than)s::interval
  AND NOT (l.stopped_at IS NULL AND l.heartbeat_at > now() - c.listener_live_window);

-- name: prune_archive_count
-- What prune_archive removes, counted: `listener prune --dry-run`.
SELECT count(*) AS n FROM pgmq.a_booking_events a WHERE a.archived_at < now() - %(older_than)s::interval;

-- name: prune_dead_letter_archive_count
SELECT count(*) AS n FROM pgmq.a_booking_events_dlq a WHERE a.archived_at < now() - %(older_than)s::interval;

-- name: prune_pack_calls
-- Direct calls on the packs past retention. An absorbed call whose booking still has an
-- event waiting (queued or dead-lettered) stays: apply_bookings reads it when it judges
-- an event from before the cut-over. NOT IN over the waiting ids is one hashed set.
WITH doomed AS (
    SELECT c.id FROM session_ledger.pack_calls c
    WHERE c.called_at < now() - %(older_than)s::interval
      AND (c.outcome <> 'absorbed' OR c.booking_id::text NOT IN (
              SELECT w.id FROM (SELECT q.message ->> 'booking_id' AS id FROM pgmq.q_booking_events q
                                UNION
                                SELECT d.message -> 'message' ->> 'booking_id' FROM pgmq.q_booking_events_dlq d) AS w
              WHERE w.id IS NOT NULL))
    ORDER BY c.id
    LIMIT %(limit)s
)
DELETE FROM session_ledger.pack_calls c USING doomed WHERE c.id = doomed.id;

-- name: prune_pack_calls_count
SELECT count(*) AS n FROM session_ledger.pack_calls c
WHERE c.called_at < now() - %(older_than)s::interval
  AND (c.outcome <> 'absorbed' OR c.booking_id::text NOT IN (
          SELECT w.id FROM (SELECT q.message ->> 'booking_id' AS id FROM pgmq.q_booking_events q
                            UNION
                            SELECT d.message -> 'message' ->> 'booking_id' FROM pgmq.q_booking_events_dlq d) AS w
          WHERE w.id IS NOT NULL));

-- name: prune_listeners_count
SELECT count(*) AS n FROM session_ledger.listeners l, session_ledger.config c
WHERE coalesce(l.stopped_at, l.heartbeat_at) < now() - %(older_than)s::interval
  AND NOT (l.stopped_at IS NULL AND l.heartbeat_at > now() - c.listener_live_window);

-- name: prune_booking_writes
-- The ledger's own rule for which echoes of booking writes can still absorb a call;
-- the count is what this transaction deleted, so no second copy of that rule lives here.
SELECT session_ledger.prune_booking_writes();

-- name: booking_writes_deleted
SELECT pg_catalog.pg_stat_get_xact_tuples_deleted('session_ledger.booking_writes'::regclass) AS n;

------------------------------------------------------------------------------
-- `listener uninstall`
------------------------------------------------------------------------------

-- name: uninstall_function_executors
-- Who, besides its owner, may execute a function: PUBLIC or a role, by name.
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee)::text END AS grantee
FROM pg_catalog.pg_proc p
CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) AS a
WHERE p.oid = pg_catalog.to_regprocedure(%(signature)s) AND a.privilege_type = 'EXECUTE'
  AND a.grantee <> p.proowner
ORDER BY 1;

-- name: replaced_functions
SELECT signature FROM session_ledger.replaced_functions WHERE definition IS NOT NULL ORDER BY signature;

-- name: lock_bookings
-- No booking write may slip in while the ledger is cut over or removed.
LOCK TABLE public.bookings IN SHARE ROW EXCLUSIVE MODE;

-- name: uninstall_keep_grants
SELECT set_config('session_ledger.uninstall_keep_grants', %(keep)s, true);

------------------------------------------------------------------------------
-- `listener doctor`: each check's catalog query
------------------------------------------------------------------------------

-- name: doctor_installed
-- What of the app and of PGMQ is there to check (whether the ledger is: ledger_state).
SELECT
    EXISTS (
        SELECT 1 FROM pg_catalog.pg_class c
        WHERE c.oid = pg_catalog.to_regclass(%(bookings)s) AND c.relkind IN ('r', 'p')
    ) AS bookings,
    EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'pgmq') AS pgmq;

-- name: doctor_bookings_table
-- Whether RLS is on, and which API roles may write the columns that decide a charge.
SELECT c.relrowsecurity AS rls, c.oid::pg_catalog.regclass::text AS table_name,
       ARRAY(
           SELECT DISTINCT r.rolname::text
           FROM pg_catalog.pg_roles r
           CROSS JOIN pg_catalog.pg_attribute a
           WHERE r.rolname IN ('anon', 'authenticated')
             AND a.attrelid = c.oid AND NOT a.attisdropped
             AND a.attname = ANY (%(charge_columns)s::text[])
             AND (pg_catalog.has_column_privilege(r.oid, c.oid, a.attnum, 'INSERT')
                  OR pg_catalog.has_column_privilege(r.oid, c.oid, a.attnum, 'UPDATE'))
           ORDER BY 1
       ) AS writers
FROM pg_catalog.pg_class c
WHERE c.oid = pg_catalog.to_regclass(%(bookings)s) AND c.relkind IN ('r', 'p');

-- name: doctor_bookings_policies
-- Expressions are deparsed under search_path '' by the caller, so function
-- names come out schema-qualified. writable_columns: the charge-deciding
-- columns (the mapping's status, pack, organisation and client columns) some role of the policy may write with the policy's command
-- (a policy role of PUBLIC stands for PUBLIC and the API roles).
SELECT p.polname::text AS name, p.polrelid::pg_catalog.regclass::text AS table_name,
       CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                     WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS cmd,
       p.polpermissive AS permissive,
       ARRAY(
           SELECT CASE WHEN r.oid = 0 THEN 'public' ELSE pg_catalog.pg_get_userbyid(r.oid)::text END
           FROM unnest(p.polroles) AS r(oid) ORDER BY 1
       ) AS roles,
       pg_catalog.pg_get_expr(p.polqual, p.polrelid) AS qual,
       pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) AS with_check,
       ARRAY(
           SELECT DISTINCT a.attname::text
           FROM pg_catalog.pg_attribute a
           CROSS JOIN LATERAL (
               SELECT x.oid FROM unnest(p.polroles) AS x(oid) WHERE x.oid <> 0
               UNION
               SELECT r.oid FROM pg_catalog.pg_roles r
               WHERE 0 = ANY (p.polroles) AND r.rolname IN ('anon', 'authenticated')
           ) AS who
           WHERE a.attrelid = p.polrelid AND NOT a.attisdropped
             AND a.attname = ANY (%(charge_columns)s::text[])
             AND ((p.polcmd IN ('a', '*')
                   AND pg_catalog.has_column_privilege(who.oid, p.polrelid, a.attnum, 'INSERT'))
                  OR (p.polcmd IN ('w', '*')
                   AND pg_catalog.has_column_privilege(who.oid, p.polrelid, a.attnum, 'UPDATE')))
           ORDER BY 1
       ) AS writable_columns
FROM pg_catalog.pg_policy p
WHERE p.polrelid = pg_catalog.to_regclass(%(bookings)s)
ORDER BY p.polname;

-- name: doctor_views_over_money
-- Views (and materialized views) that read the app's bookings or packs (the mapping's
-- tables), directly or through other views, with the API roles that may select them.
WITH RECURSIVE money AS (
    SELECT c.oid
    FROM pg_catalog.pg_class c
    WHERE c.oid IN (pg_catalog.to_regclass(%(bookings)s), pg_catalog.to_regclass(%(packs)s))
), over (oid) AS (
    SELECT r.ev_class
    FROM pg_catalog.pg_depend d
    JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
    WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass
      AND d.refclassid = 'pg_catalog.pg_class'::regclass
      AND d.refobjid IN (SELECT oid FROM money)
    UNION
    SELECT r.ev_class
    FROM over o
    JOIN pg_catalog.pg_depend d ON d.refobjid = o.oid
        AND d.refclassid = 'pg_catalog.pg_class'::regclass
        AND d.classid = 'pg_catalog.pg_rewrite'::regclass
    JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
    WHERE r.ev_class <> o.oid
)
SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname) AS name,
       c.relkind::text AS kind,
       coalesce(c.reloptions, '{}')::text[] AS options,
       ARRAY(
           SELECT r.rolname::text FROM pg_catalog.pg_roles r
           WHERE r.rolname IN ('anon', 'authenticated')
             AND pg_catalog.has_table_privilege(r.oid, c.oid, 'SELECT')
           ORDER BY 1
       ) AS readers
FROM (SELECT DISTINCT oid FROM over) v
JOIN pg_catalog.pg_class c ON c.oid = v.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm')
ORDER BY 1;

-- name: doctor_api_grants
-- Every privilege PUBLIC or an API role holds on the ledger's objects and on
-- PGMQ's, one row per object and grantee. A NULL ACL means the built-in
-- default, which for functions is EXECUTE to PUBLIC.
WITH objects (kind, name, acl) AS (
    SELECT 'schema', pg_catalog.quote_ident(n.nspname),
           coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))
    FROM pg_catalog.pg_namespace n
    WHERE n.nspname IN ('session_ledger', 'pgmq')
    UNION ALL
    SELECT CASE WHEN c.relkind = 'S' THEN 'sequence' ELSE 'table' END,
           pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname),
           coalesce(c.relacl, pg_catalog.acldefault(
               (CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char", c.relowner))
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname IN ('session_ledger', 'pgmq') AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    UNION ALL
    SELECT 'function',
           pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname)
               || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')',
           coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))
    FROM pg_catalog.pg_proc p
    JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = 'session_ledger'
       OR (n.nspname = 'public' AND p.proname IN ('use_session', 'release_session'))
), grants AS (
    SELECT o.kind, o.name, a.grantee, a.privilege_type
    FROM objects o
    CROSS JOIN LATERAL pg_catalog.aclexplode(o.acl) AS a
)
SELECT g.kind, g.name,
       CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE r.rolname::text END AS grantee,
       array_agg(DISTINCT g.privilege_type ORDER BY g.privilege_type) AS privileges
FROM grants g
LEFT JOIN pg_catalog.pg_roles r ON r.oid = g.grantee
WHERE g.grantee = 0 OR r.rolname IN ('anon', 'authenticated', 'service_role')
GROUP BY g.kind, g.name, 3
ORDER BY g.name, 3;

-- name: doctor_pgmq_public
SELECT ARRAY(
           SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE r.rolname::text END
           FROM pg_catalog.aclexplode(coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) a
           LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
           WHERE a.privilege_type = 'USAGE'
             AND (a.grantee = 0 OR r.rolname IN ('anon', 'authenticated', 'service_role'))
           ORDER BY 1
       ) AS users
FROM pg_catalog.pg_namespace n
WHERE n.nspname = 'pgmq_public';

-- name: doctor_connected_role
-- The role this connection runs as, and whether it is, or may become, the
-- owner of the ledger's schema or of the bookings table.
SELECT current_user::text AS name,
       r.rolsuper AS superuser,
       s.owner AS schema_owner,
       s.owner IS NOT NULL AND (s.owner = current_user OR (NOT r.rolsuper
           AND pg_catalog.pg_has_role(current_user, s.owner_oid, 'MEMBER'))) AS acts_as_schema_owner,
       b.owner AS bookings_owner, coalesce(b.table_name, %(bookings)s) AS bookings_table,
       b.owner IS NOT NULL AND (b.owner = current_user OR (NOT r.rolsuper
           AND pg_catalog.pg_has_role(current_user, b.owner_oid, 'MEMBER'))) AS acts_as_bookings_owner
FROM pg_catalog.pg_roles r
LEFT JOIN (
    SELECT n.nspowner AS owner_oid, pg_catalog.pg_get_userbyid(n.nspowner)::text AS owner
    FROM pg_catalog.pg_namespace n WHERE n.nspname = 'session_ledger'
) s ON true
LEFT JOIN (
    SELECT c.relowner AS owner_oid, pg_catalog.pg_get_userbyid(c.relowner)::text AS owner,
           c.oid::pg_catalog.regclass::text AS table_name
    FROM pg_catalog.pg_class c
    WHERE c.oid = pg_catalog.to_regclass(%(bookings)s) AND c.relkind IN ('r', 'p')
) b ON true
WHERE r.rolname = current_user;

-- name: doctor_definer_search_path
-- The app's SECURITY DEFINER functions: not the ledger's, PGMQ's, the system's or an
-- extension's. search_path is the function's own setting as stored (NULL when it sets
-- none); touches_money whether its body names the app's bookings or packs table
-- (%(money)s: their names, as a regular expression's alternatives).
SELECT pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(p.proname)
           || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')' AS name,
       n.nspname::text AS schema,
       p.proname::text AS function,
       (SELECT pg_catalog.substr(s.setting, 13)
        FROM unnest(p.proconfig) AS s(setting)
        WHERE pg_catalog.starts_with(s.setting, 'search_path=')) AS search_path,
       (p.prosrc ~* ('\m(' || %(money)s || ')\M')
        OR (p.prosqlbody IS NOT NULL
            AND pg_catalog.pg_get_functiondef(p.oid) ~* ('\m(' || %(money)s || ')\M'))) AS touches_money,
       -- a row security policy of the bookings or the packs calls it
       (SELECT pg_catalog.string_agg(DISTINCT pc.relname::text, ', ')
        FROM pg_catalog.pg_depend d
        JOIN pg_catalog.pg_policy pol ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND pol.oid = d.objid
        JOIN pg_catalog.pg_class pc ON pc.oid = pol.polrelid
        WHERE d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.refobjid = p.oid
          AND pol.polrelid IN (pg_catalog.to_regclass(%(bookings)s), pg_catalog.to_regclass(%(packs)s)))
           AS policy_of
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.prosecdef
  AND n.nspname NOT IN ('session_ledger', 'pgmq', 'pg_catalog', 'information_schema')
  AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_depend d
      WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = p.oid AND d.deptype = 'e'
  )
ORDER BY 1;

-- name: doctor_app_table_triggers
-- Triggers on the app's bookings and packs whose function's owner could not already act
-- as the table's owner: the ledger's writes as the owner would run that role's code.
SELECT t.tgname::text AS trigger, c.oid::pg_catalog.regclass::text AS table_name,
       pg_catalog.quote_ident(fn.nspname) || '.' || pg_catalog.quote_ident(p.proname)
           || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')' AS function,
       p.proowner::pg_catalog.regrole::text AS function_owner,
       c.relowner::pg_catalog.regrole::text AS table_owner
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
JOIN pg_catalog.pg_namespace fn ON fn.oid = p.pronamespace
WHERE t.tgrelid IN (pg_catalog.to_regclass(%(bookings)s), pg_catalog.to_regclass(%(packs)s))
  AND t.tgenabled <> 'D'
  AND NOT pg_catalog.pg_has_role(p.proowner, c.relowner, 'MEMBER')
ORDER BY 2, 1;

-- name: doctor_app_table_grants
-- TRIGGER, TRUNCATE and REFERENCES that PUBLIC, anon or authenticated hold on the app's
-- bookings and packs: no app flow needs them (Supabase's default privileges hand them out).
SELECT c.oid::pg_catalog.regclass::text AS table_name,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE r.rolname::text END AS grantee,
       pg_catalog.array_agg(a.privilege_type::text ORDER BY a.privilege_type) AS privileges
FROM pg_catalog.pg_class c
CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner))) AS a
LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
WHERE c.oid IN (pg_catalog.to_regclass(%(bookings)s), pg_catalog.to_regclass(%(packs)s))
  AND a.privilege_type IN ('TRIGGER', 'TRUNCATE', 'REFERENCES')
  AND (a.grantee = 0 OR r.rolname IN ('anon', 'authenticated'))
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: doctor_guard_trigger_events
-- The ledger's bookings triggers that carry the guard, with
-- the writes each fires on (pg_trigger.tgtype bits: 4 INSERT, 8 DELETE, 16 UPDATE).
SELECT t.tgname::text AS name, t.tgenabled <> 'D' AS enabled,
       pg_catalog.array_remove(ARRAY[
           CASE WHEN t.tgtype::int & 4 <> 0 THEN 'INSERT' END,
           CASE WHEN t.tgtype::int & 16 <> 0 THEN 'UPDATE' END,
           CASE WHEN t.tgtype::int & 8 <> 0 THEN 'DELETE' END
       ], NULL)::text[] AS events
FROM pg_catalog.pg_trigger t
JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid
JOIN pg_catalog.pg_namespace fn ON fn.oid = f.pronamespace
WHERE t.tgrelid = pg_catalog.to_regclass(%(bookings)s) AND NOT t.tgisinternal
  AND fn.nspname = 'session_ledger' AND f.proname = 'enqueue_booking_changes'
  AND EXISTS (SELECT 1 FROM pg_catalog.pg_proc g
              JOIN pg_catalog.pg_namespace gn ON gn.oid = g.pronamespace
              WHERE gn.nspname = 'session_ledger' AND g.proname = 'may_write_booking')
ORDER BY 1;

-- name: pool_mode
SHOW pool_mode;

-- name: doctor_read_only
SET TRANSACTION READ ONLY;
SET LOCAL search_path = '';

------------------------------------------------------------------------------
-- `listener audit`: the sessions the old code gave away
------------------------------------------------------------------------------

-- name: audit_packs
-- Per pack: consuming bookings, sessions_used and the ledger's view, side by side.
SELECT * FROM session_ledger.audit_packs(%(org)s);

-- name: audit_packs_to_charge
-- The packs holding given-away sessions not yet judged, in id order.
SELECT DISTINCT purchase_id FROM session_ledger.audit_uncharged(%(org)s, NULL) ORDER BY purchase_id;

-- name: audit_org_known
-- Whether any pack or booking belongs to this organisation (the ledger knows
-- organisations only through them).
SELECT EXISTS (SELECT 1 FROM session_ledger.app_packs WHERE org_id = %(org)s)
    OR EXISTS (SELECT 1 FROM session_ledger.app_bookings WHERE org_id = %(org)s) AS known;

-- name: audit_existing_packs
-- Which of these purchase ids exist.
SELECT id FROM session_ledger.app_packs WHERE id = ANY (%(packs)s);

-- name: audit_charge
-- Take the given-away sessions of these packs (one transaction; the caller commits or rolls back).
SELECT booking_id, purchase_id, start_time, charged, reason, sessions_used
FROM session_ledger.audit_charge(%(packs)s);

-- name: audit_packs_in_flight
-- Of these packs, those a charge run leaves for later: a booking's event is still in flight.
SELECT purchase_id FROM session_ledger.packs_in_flight(%(packs)s) ORDER BY purchase_id;

-- dashboard

-- name: audit_pack_calls
-- Per pack, the direct calls that moved it or were absorbed: the app's old calls and manual adjustments.
SELECT c.purchase_id,
       count(*) FILTER (WHERE c.outcome = 'absorbed')::int AS absorbed,
       count(*) FILTER (WHERE c.legacy AND c.outcome IN ('charged', 'released'))::int AS legacy_moved,
       count(*) FILTER (WHERE NOT c.legacy AND c.outcome IN ('charged', 'released'))::int AS manual_moved,
       max(c.called_at) AS last_call_at
FROM session_ledger.pack_calls c
JOIN session_ledger.app_packs p ON p.id = c.purchase_id
-- the comparison first: it gives the parameter the type of the app's organisation key
WHERE p.org_id = %(org)s OR %(org)s IS NULL
GROUP BY c.purchase_id
ORDER BY c.purchase_id;

------------------------------------------------------------------------------
-- the dashboard's reads and actions
------------------------------------------------------------------------------

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

-- name: dashboard_redrive
SELECT session_ledger.dashboard_redrive(%(msg_ids)s) AS moved;

-- name: dashboard_replay
SELECT session_ledger.dashboard_replay(%(booking_id)s) AS enqueued;

-- name: dashboard_discard
SELECT session_ledger.dashboard_discard(%(msg_ids)s, %(reason)s) AS discarded;

-- name: dashboard_names
SELECT id, kind, client_id, name, at
FROM session_ledger.dashboard_names(%(ids)s::text[]);

-- name: dashboard_search
SELECT kind, id
FROM session_ledger.dashboard_search(%(query)s, %(limit)s);

-- name: dashboard_packs
SELECT id, client_id, sessions_total, sessions_used, expires_at, payment_status, purchased_at,
       paid, unfunded, released, calls
FROM session_ledger.dashboard_packs(%(pack_ids)s, %(client_ids)s, %(limit)s);

-- name: dashboard_pack_charges
SELECT booking_id, state, reason, source, updated_at, start_time, booking_status, by_role, by_uid, trace, by_login
FROM session_ledger.dashboard_pack_charges(%(purchase_id)s, %(state)s, %(limit)s);

-- name: dashboard_pack_calls
SELECT id, called_at, kind, legacy, outcome, reason, booking_id, by_role, by_uid, trace, by_login
FROM session_ledger.dashboard_pack_calls(%(purchase_id)s, %(limit)s);

-- name: dashboard_bookings
SELECT booking_id, in_app, booking_status, purchase_id, client_id, start_time, ledger_state,
       ledger_purchase_id, ledger_reason, updated_at, out_of_sync
FROM session_ledger.dashboard_bookings(%(booking_ids)s);

-- name: dashboard_recent_changes
SELECT booking_id, purchase_id, state, reason, source, updated_at, by_role, by_uid, trace, by_login
FROM session_ledger.dashboard_recent_changes(%(limit)s, %(before_at)s, %(before_booking)s);

-- name: dashboard_absorbed_calls
SELECT id, called_at, kind, purchase_id, booking_id, by_role, by_uid, trace, by_login
FROM session_ledger.dashboard_absorbed_calls(%(limit)s);

-- name: dashboard_dead_letters_by_id
SELECT msg_id, enqueued_at, reason, payload
FROM session_ledger.dashboard_dead_letters_by_id(%(msg_ids)s);

------------------------------------------------------------------------------
-- generated files: sql/schema.sql (listener/devtools/schema_dump.py) and the SQL API page
------------------------------------------------------------------------------

-- name: sql_api_objects
-- The ledger's functions (session_ledger's, and its use_session / release_session
-- forms in public) and views, with who besides the owner may call or read each and
-- its COMMENT: what listener/devtools/sql_api.py renders as docs/sql-api.md.
SELECT 'function' AS kind, n.nspname AS schema, p.proname AS name,
       n.nspname || '.' || p.proname || '(' || coalesce((
           SELECT string_agg(pg_catalog.format_type(u.t, NULL), ', ' ORDER BY u.i)
           FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS u(t, i)), '') || ')' AS signature,
       pg_catalog.pg_get_function_arguments(p.oid) AS arguments,
       pg_catalog.pg_get_function_result(p.oid) AS result,
       p.prosecdef AS security_definer,
       ARRAY(SELECT DISTINCT a.grantee::regrole::text FROM pg_catalog.aclexplode(p.proacl) AS a
             WHERE a.privilege_type = 'EXECUTE' AND a.grantee NOT IN (0, p.proowner) ORDER BY 1) AS grantees,
       pg_catalog.obj_description(p.oid, 'pg_proc') AS comment
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'session_ledger'
   OR (n.nspname = 'public' AND p.proname IN ('use_session', 'release_session'))
UNION ALL
SELECT 'view', n.nspname, c.relname, n.nspname || '.' || c.relname, NULL, NULL, false,
       ARRAY(SELECT DISTINCT a.grantee::regrole::text FROM pg_catalog.aclexplode(c.relacl) AS a
             WHERE a.privilege_type = 'SELECT' AND a.grantee NOT IN (0, c.relowner) ORDER BY 1),
       pg_catalog.obj_description(c.oid, 'pg_class')
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'session_ledger' AND c.relkind = 'v'
ORDER BY kind, schema, name, signature;

-- name: schema_dump_tables
-- The ledger's tables, but for the migrations table the bootstrap creates.
SELECT c.oid, n.nspname, c.relname, c.reloptions, c.relrowsecurity
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname = 'session_ledger' AND c.relname <> 'migrations'
ORDER BY c.relname;

-- name: schema_dump_queues
-- The ledger's queues.
SELECT m.queue_name::text AS queue FROM pgmq.meta m
WHERE m.queue_name IN ('booking_events', 'booking_events_dlq')
ORDER BY m.queue_name;

-- name: schema_dump_queue_tables
-- A queue's two tables (pgmq names them q_<queue> and a_<queue>), the queue's first.
SELECT c.oid FROM pg_catalog.pg_class c
WHERE c.relnamespace = 'pgmq'::regnamespace AND c.relkind = 'r'
  AND c.relname IN ('q_' || %(queue)s, 'a_' || %(queue)s)
ORDER BY c.relname DESC;

-- name: schema_dump_probe_queue
-- A queue as pgmq.create makes it, to render what the ledger changed on its own
-- queues; created inside a transaction the dump rolls back.
SELECT pgmq.create(%(queue)s);

-- name: schema_dump_table
SELECT c.oid, n.nspname, c.relname, c.reloptions, c.relrowsecurity
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = %(oid)s;

-- name: schema_dump_columns
SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS default, a.attidentity, a.attgenerated
FROM pg_catalog.pg_attribute a
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;

-- name: schema_dump_constraints
SELECT conname, pg_catalog.pg_get_constraintdef(oid) AS def FROM pg_catalog.pg_constraint
WHERE conrelid = %(oid)s AND contype <> 'n' ORDER BY contype, conname;

-- name: schema_dump_indexes
-- The indexes no constraint made, by name.
SELECT c.relname AS name, pg_catalog.pg_get_indexdef(i.indexrelid) AS def
FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = %(oid)s
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid)
ORDER BY 2;

-- name: schema_dump_policies
SELECT p.polname, p.polpermissive, p.polcmd::text AS cmd,
       array(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_catalog.quote_ident(r::regrole::text) END
             FROM unnest(p.polroles) AS r ORDER BY 1) AS roles,
       pg_catalog.pg_get_expr(p.polqual, p.polrelid) AS qual,
       pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
FROM pg_catalog.pg_policy p WHERE p.polrelid = %(oid)s ORDER BY p.polname;

-- name: schema_dump_singleton
-- Whether a table is a singleton (a true `singleton` key) whose one row its defaults fill.
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
               WHERE a.attrelid = %(oid)s AND a.attname = 'singleton' AND NOT a.attisdropped)
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                       WHERE a.attrelid = %(oid)s AND a.attnum > 0 AND NOT a.attisdropped
                         AND a.attnotnull AND a.attidentity = '' AND NOT a.atthasdef) AS singleton;

------------------------------------------------------------------------------
-- devtools and testing: the demo, the dev server, throwaway databases, the test
-- driver and checker, the Supabase-shaped cluster and the app rows it is seeded with
------------------------------------------------------------------------------

-- name: app_schema_public
CREATE SCHEMA IF NOT EXISTS public;

-- name: demo_cancel_booking
UPDATE public.bookings SET status = 'cancelled' WHERE id = %s;

-- name: demo_booking_row
SELECT to_char(bk.start_time, 'DD Mon HH24:MI') AS at, bk.status, l.state, l.reason
               FROM public.bookings bk LEFT JOIN session_ledger.charges l ON l.booking_id = bk.id
               WHERE bk.id = %s;

-- name: demo_pack_balance
SELECT sessions_used, sessions_total FROM public.client_purchases WHERE id = %s;

-- name: insert_org
INSERT INTO public.orgs (id, name, slug) VALUES (%s, %s, %s);

-- name: insert_org_member
INSERT INTO public.org_members (org_id, user_id, role) VALUES (%s, %s, 'staff');

-- name: demo_data_insert_client
INSERT INTO public.clients (id, org_id, full_name) VALUES (%s, %s, %s);

-- name: demo_data_insert_pack
INSERT INTO public.client_purchases
               (id, org_id, client_id, amount_paid_cents, sessions_total, sessions_used, expires_at, payment_status)
           VALUES (%s, %s, %s, 10000, %s, %s, %s, %s);

-- name: demo_data_create_bookings
INSERT INTO public.bookings (org_id, client_id, start_time, end_time, duration_mins, purchase_id, status)
           SELECT %(org)s, %(client)s, t, t + interval '1 hour', 60, %(pack)s, %(status)s
           FROM generate_series(%(first)s::timestamptz, %(first)s::timestamptz + (%(n)s - 1) * interval '1 day',
                                interval '1 day') AS t
           RETURNING id;

-- name: pack_sessions_used
SELECT sessions_used FROM public.client_purchases WHERE id = %s;

-- name: database_exists
SELECT 1 AS x FROM pg_database WHERE datname = %s;

-- name: create_database
CREATE DATABASE {};

-- name: driver_role_authenticated
SET LOCAL ROLE authenticated;

-- name: set_jwt_sub
SELECT set_config('request.jwt.claim.sub', %s, true);

-- name: set_booking_status
UPDATE public.bookings SET status = %s WHERE id = %s;

-- name: driver_role_service
SET LOCAL ROLE service_role;

-- name: driver_live_listener
SELECT EXISTS (SELECT 1 FROM session_ledger.live_listeners) AS live;

-- name: driver_queue_depth
SELECT queue_depth AS n FROM session_ledger.queue_depths();

-- name: ledger_row
SELECT * FROM session_ledger.charges WHERE booking_id = %s;

-- name: embedded_reload_conf
SELECT pg_reload_conf();

-- name: embedded_extension_path_settable
SELECT current_setting('server_version_num')::int >= 180000 AS settable, EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'uuid-ossp') AS present;

-- name: embedded_set_extension_path
ALTER SYSTEM SET extension_control_path = {};

-- name: create_database_from_template
CREATE DATABASE {} TEMPLATE {};

-- name: drop_database
DROP DATABASE IF EXISTS {} WITH (FORCE);

-- name: app_data_insert_user
INSERT INTO auth.users (id, aud, role, email) VALUES (%s, 'authenticated', 'authenticated', %s);

-- name: app_data_insert_client
INSERT INTO public.clients (org_id, full_name, email, auth_user_id) VALUES (%s, %s, %s, %s) RETURNING id;

-- name: app_data_insert_offer
INSERT INTO public.offers (org_id, name, offer_type, price_cents, sessions_count, validity_days) VALUES (%s, '10 sessions', 'session_pack', 50000, 10, 180) RETURNING id;

-- name: app_data_insert_pack
INSERT INTO public.client_purchases
               (org_id, client_id, offer_id, amount_paid_cents, payment_method, payment_status,
                sessions_total, sessions_used, expires_at)
           VALUES (%s, %s, %s, 50000, %s, %s, %s, %s, %s) RETURNING id;

-- name: app_data_insert_bookings
INSERT INTO public.bookings
               (org_id, client_id, start_time, end_time, duration_mins, purchase_id, status, booked_by,
                booking_source)
           SELECT %(org)s, %(client)s, t, t + interval '1 hour', 60, %(pack)s, %(status)s, %(trainer)s, 'trainer'
           FROM generate_series(%(first)s::timestamptz, %(first)s::timestamptz + (%(n)s - 1) * interval '1 day',
                                interval '1 day') AS t
           RETURNING id;

-- name: checker_consuming_statuses
SELECT consuming_statuses FROM session_ledger.config;

-- name: checker_bookings_and_ledger
SELECT b.id, b.purchase_id, b.status = ANY (%s) AS consumes, l.state, l.purchase_id AS l_pack
           FROM public.bookings b LEFT JOIN session_ledger.charges l ON l.booking_id = b.id;

-- name: checker_paid_rows_of_deleted_bookings
SELECT count(*) AS n FROM session_ledger.charges l
           WHERE l.state = 'paid' AND NOT EXISTS (SELECT 1 FROM public.bookings b WHERE b.id = l.booking_id);

-- name: checker_packs
SELECT id, sessions_used, sessions_total FROM public.client_purchases;

-- name: checker_queue_left
SELECT count(*) AS n FROM pgmq.q_booking_events;

-- name: checker_dead_letters
SELECT count(*) AS n FROM pgmq.q_booking_events_dlq;

-- name: checker_ledger_rows_of
SELECT count(*) AS n FROM session_ledger.charges WHERE booking_id = ANY(%s);

-- name: checker_sessions_used
SELECT id, sessions_used FROM public.client_purchases;

-- name: checker_archived_msg_ids
SELECT msg_id FROM pgmq.a_booking_events;

-- name: checker_queued_msg_ids
SELECT msg_id FROM pgmq.q_booking_events;

-- name: checker_ledger_made_msg_ids
-- Events the ledger queued itself, not a booking write: a pack that may now pay judges its
-- unfunded bookings again (sql/functions/45_pack_changes.sql, source 'pack').
SELECT q.msg_id FROM pgmq.q_booking_events q WHERE q.message ->> 'source' = 'pack'
UNION ALL
SELECT a.msg_id FROM pgmq.a_booking_events a WHERE a.message ->> 'source' = 'pack'
UNION ALL
SELECT (d.message ->> 'source_msg_id')::bigint FROM pgmq.q_booking_events_dlq d
WHERE d.message -> 'message' ->> 'source' = 'pack'
UNION ALL
SELECT (d.message ->> 'source_msg_id')::bigint FROM pgmq.a_booking_events_dlq d
WHERE d.message -> 'message' ->> 'source' = 'pack';

-- name: checker_dead_letter_sources
SELECT (message ->> 'source_msg_id') AS src FROM pgmq.q_booking_events_dlq
               UNION ALL
               SELECT (message ->> 'source_msg_id') FROM pgmq.a_booking_events_dlq;

-- name: set_jwt_claims
SELECT set_config('request.jwt.claims', %s, true);

-- name: set_jwt_role
SELECT set_config('request.jwt.claim.role', %s, true);

-- name: set_request_headers
SELECT set_config('request.headers', %s, true);

-- name: set_local_role
SET LOCAL ROLE {};

-- name: supabase_postgres_role
CREATE ROLE postgres SUPERUSER LOGIN;

-- name: supabase_create_app_database
CREATE DATABASE {} OWNER postgres;

-- name: supabase_create_app_database_from_template
CREATE DATABASE {} OWNER postgres TEMPLATE {};

-- name: mark_template
ALTER DATABASE {} IS_TEMPLATE true;

-- name: supabase_role_settings
ALTER ROLE supabase_admin SET search_path = public, extensions;
ALTER ROLE postgres SET search_path = "$user", public, extensions;
ALTER ROLE postgres NOSUPERUSER CREATEDB CREATEROLE LOGIN REPLICATION BYPASSRLS;

-- name: supabase_pg_cron
-- What Supabase's grant_pg_cron_access event trigger grants, minus writes on cron.job
-- (revoked since 2023): jobs are scheduled through cron.schedule().
CREATE EXTENSION IF NOT EXISTS pg_cron;
GRANT USAGE ON SCHEMA cron TO postgres WITH GRANT OPTION;
GRANT ALL ON ALL TABLES IN SCHEMA cron TO postgres WITH GRANT OPTION;
GRANT ALL ON ALL SEQUENCES IN SCHEMA cron TO postgres WITH GRANT OPTION;
GRANT ALL ON ALL FUNCTIONS IN SCHEMA cron TO postgres WITH GRANT OPTION;
REVOKE ALL ON TABLE cron.job FROM postgres;
GRANT SELECT ON TABLE cron.job TO postgres WITH GRANT OPTION;
