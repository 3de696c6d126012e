-- What a fresh install does besides creating the schema: the listener's role, the
-- app's own functions kept for `listener uninstall`, the cut-over, and the bookings
-- the app's old code already charged, adopted.
--
-- `listener migrate` runs it on a database with no ledger, after sql/schema.sql and
-- before the repeatable files (sql/functions/*.sql, which replace the app's
-- functions), in one transaction holding the migration lock. An installed ledger
-- got here through the numbered migrations instead; tests/db/test_routes.py checks
-- that both routes end with the same schema and adopt the same bookings alike.

-- Writers must not slip a completion between the adoption below and the trigger
-- the repeatable files create, which covers everything after it.
LOCK TABLE {{ app.bookings_table }} IN SHARE ROW EXCLUSIVE MODE;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'session_ledger_listener') THEN
        BEGIN
            CREATE ROLE session_ledger_listener NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;  -- another database of this cluster created it a moment ago
        END;
    END IF;
END
$$;

{%- set keyed = [
    ('adjustments', 'booking_id', app.keys.booking), ('adjustments', 'purchase_id', app.keys.pack),
    ('booking_writes', 'purchase_id', app.keys.pack), ('booking_writes', 'booking_ids', app.keys.booking ~ '[]'),
    ('charges', 'booking_id', app.keys.booking), ('charges', 'purchase_id', app.keys.pack),
    ('charges', 'client_id', app.keys.client), ('charges', 'org_id', app.keys.org),
    ('given_away', 'purchase_id', app.keys.pack),
    ('pack_calls', 'purchase_id', app.keys.pack), ('pack_calls', 'booking_id', app.keys.booking),
] %}
{%- set retyped = keyed | rejectattr(2, 'in', ['uuid', 'uuid[]']) | list %}
{%- if retyped %}

-- sql/schema.sql keys the ledger's tables by uuid, as the coaching app does; this
-- app's keys are of other types. The tables were created a moment ago, so they are
-- empty and no value is converted.
{%- for table, column, type in retyped %}
ALTER TABLE session_ledger.{{ table }} ALTER COLUMN {{ column }} TYPE {{ type }} USING {{ column }}::text{{ '[]' if type.endswith('[]') else '' }}::{{ type }};
{%- endfor %}
{%- endif %}

-- The statuses in which a booking consumes its pack, as the mapping names them: the
-- adoption below and every judgement after it read them here.
UPDATE session_ledger.config SET consuming_statuses = {{ app.consuming_statuses }};
{%- if app.legacy_use %}

INSERT INTO session_ledger.replaced_functions (signature, definition)
SELECT s, CASE WHEN pg_catalog.to_regprocedure(s) IS NOT NULL
               THEN pg_catalog.pg_get_functiondef(pg_catalog.to_regprocedure(s)) END
FROM unnest(ARRAY[{{ app.lit(app.legacy_use ~ '(' ~ app.keys.pack ~ ')') }},
                  {{ app.lit(app.legacy_release ~ '(' ~ app.keys.pack ~ ')') }}]) AS s;
{%- endif %}

-- Install and start charging in one step: events from here on are the ledger's to
-- charge, and the old code's calls that echo them are absorbed.
UPDATE session_ledger.config SET adopt_until = clock_timestamp();

-- Adoption: bookings already consuming were paid by the app's old code. Each is
-- recorded as paid, at what it costs, without touching any balance, so a later
-- cancel gives back; or as unfunded, with the listener's reason, where its pack
-- could never have paid for it (the app's old use_session refused those too). The
-- rule is settle_packs' (sql/functions/20_charge.sql), written out: the repeatable
-- files that state it run after this file.
INSERT INTO session_ledger.charges (booking_id, purchase_id, state, source, reason, client_id, org_id, amount)
SELECT b.id, b.purchase_id, CASE WHEN w.why IS NULL THEN 'paid' ELSE 'unfunded' END, 'adoption', w.why,
       b.client_id, b.org_id, CASE WHEN p.unlimited THEN 0 ELSE b.amount END
FROM {{ app.bookings }} b
CROSS JOIN session_ledger.config c
LEFT JOIN {{ app.packs }} p ON p.id = b.purchase_id
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN p.id IS NULL THEN 'pack does not exist'
{%- if app.mapping.pack.org and app.mapping.booking.org %}
        WHEN p.org_id IS DISTINCT FROM b.org_id THEN 'pack belongs to another organisation'
{%- endif %}
{%- if app.mapping.pack.client and app.mapping.booking.client %}
        WHEN NOT c.allow_shared_packs AND p.client_id IS DISTINCT FROM b.client_id
            THEN 'pack belongs to another client'
{%- endif %}
        WHEN p.sessions_total IS NULL AND NOT p.unlimited THEN 'purchase is not a session pack'
        WHEN p.unusable IS NOT NULL THEN p.unusable
        WHEN p.expires_at IS NOT NULL AND p.expires_at <= b.start_time THEN 'pack expired before the session'
    END AS why) AS w
WHERE b.status = ANY (c.consuming_statuses) AND b.consumes AND b.purchase_id IS NOT NULL;
{%- if not app.mapping.pack.remaining and not app.mapping.pack.amount_column %}

-- Per pack, the bookings adopted as paid that its balance does not cover: sessions
-- the app's old code gave away, which stay given away (session_ledger.record_given_away()
-- states the rule; on a fresh install it comes to n - u for a pack with n adopted
-- bookings and u sessions used).
INSERT INTO session_ledger.given_away (purchase_id, sessions, recorded)
SELECT x.pack, x.n, x.n
FROM (SELECT p.id AS pack, greatest(count(*) - p.sessions_used, 0)::int AS n
      FROM session_ledger.charges l
      JOIN {{ app.packs }} p ON p.id = l.purchase_id
      WHERE l.state = 'paid'
      GROUP BY p.id, p.sessions_used) AS x
WHERE x.n > 0;
{%- elif app.mapping.pack.remaining %}

-- No given-away count: a pack counted down keeps only what remains, not what it
-- used, so how many of its adopted bookings the old code never charged cannot be
-- told from its balance. A cancel of an adopted booking gives back what it cost.
{%- else %}

-- No given-away count: the count is of bookings (session_ledger.use_given_away()),
-- and bookings of differing amounts beyond the balance do not come to a number of
-- whole bookings. A cancel of an adopted booking gives back what it cost.
{%- endif %}
