-- The app's bookings and packs as the ledger names them, whatever the app calls them.
--
-- The SQL files are rendered from the mapping, but the named queries (sql/queries.sql)
-- and the Python that runs them are static: they read these two views, never the
-- app's tables, so one query text serves every app. Their columns are the canonical
-- ones (listener/mapping/render.py):
--   app_bookings: id, status, purchase_id, client_id, org_id, start_time, end_time, amount, consumes
--   app_packs:    id, client_id, org_id, sessions_total, sessions_used, expires_at, unusable, unlimited
-- with the keys in the app's own types (uuid, integer, bigint or text). For a pack
-- counted down, sessions_total is what remains and sessions_used is 0.
--
-- Cost: none. Each is a simple view over a subquery, which the planner inlines and
-- pulls up into the statement that reads it; a filter on id reaches the app's index.
--
-- Owned by the ledger's owner and read with its rights, so the app's row security does
-- not hide rows from the ledger's checks. No API role may read them (90_grants.sql
-- revokes every table of the schema from them); a role that needs one for a named query
-- it runs is granted SELECT there.
--
-- Dropped and created again on every migrate rather than replaced: a key whose type the
-- app changed changes a column's type, which CREATE OR REPLACE VIEW refuses. Nothing
-- is built on them but functions, which hold no dependency on a view.

DROP VIEW IF EXISTS session_ledger.app_bookings;
DROP VIEW IF EXISTS session_ledger.app_packs;

CREATE VIEW session_ledger.app_bookings AS
SELECT b.* FROM {{ app.bookings }} b;

CREATE VIEW session_ledger.app_packs AS
SELECT p.* FROM {{ app.packs }} p;

-- A key written as text (a URL's id, a search), as the key it names, or NULL when the
-- text is not exactly how the key prints (`id::text`): an index on the key can serve
-- `id = session_ledger.booking_key(t)`, where `id::text = t` would read every row. The
-- dashboard's functions, which take an id of any kind, find bookings, packs and clients
-- through them.
{%- for kind, type in [('booking', app.keys.booking), ('pack', app.keys.pack), ('client', app.keys.client)] %}
CREATE OR REPLACE FUNCTION session_ledger.{{ kind }}_key(p_text text) RETURNS {{ type }}
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
{%- if type == 'uuid' %}
    -- lowercase hex, hyphenated, as uuid prints (the pattern of is_canonical_uuid(), which is not there yet)
    SELECT CASE WHEN pg_catalog.translate(p_text, '0123456789abcdef', '0000000000000000')
                     OPERATOR(pg_catalog.=) '00000000-0000-0000-0000-000000000000' THEN p_text::uuid END
{%- elif type == 'integer' %}
    SELECT CASE WHEN p_text OPERATOR(pg_catalog.~) '^(0|-?[1-9][0-9]{0,9})$'
                THEN CASE WHEN p_text::bigint OPERATOR(pg_catalog.>=) -2147483648
                           AND p_text::bigint OPERATOR(pg_catalog.<=) 2147483647 THEN p_text::integer END END
{%- elif type == 'bigint' %}
    SELECT CASE WHEN p_text OPERATOR(pg_catalog.~) '^(0|-?[1-9][0-9]{0,18})$'
                THEN CASE WHEN p_text::numeric OPERATOR(pg_catalog.>=) -9223372036854775808
                           AND p_text::numeric OPERATOR(pg_catalog.<=) 9223372036854775807 THEN p_text::bigint END END
{%- else %}
    SELECT p_text::{{ type }}
{%- endif %}
$$;
{% endfor %}
