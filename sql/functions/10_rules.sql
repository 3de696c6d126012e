-- The rules, each stated once. Everything else (the trigger, the charge, status,
-- reconcile, cut-over, drain) calls these.
--
-- Repeatable: `listener migrate` re-applies every file in sql/functions/, in name
-- order, whenever one of them changes.
--
-- A template over the app's mapping (listener/mapping/render.py): the ids are the app's
-- key types, the bookings and packs are read as canonical rows (`app.bookings`,
-- `app.packs`), and who is trusted, and who else may move a session, is the mapping's
-- [access]. The key types render as the coaching app's (uuid) for it, so its signatures
-- stay as they were.
{## Who may move a session, for the hints: the one allow-list, in words. ##}
{%- set k = app.keys %}
{%- set roles = app.mapping.access.trusted_roles | join(', ') %}
{%- set members = app.mapping.access.mode == 'supabase' and app.membership_function %}
{%- set who_may = ("signed-in users (members of authenticated) whom " ~ app.membership_function ~ " admits for the pack''s organisation, " if members else "") ~ (roles ~ " and " if roles else "") ~ "the ledger''s owner" %}

-- consumed_pack took no p_consumes before: the old signature goes, with the view that calls it.
DROP VIEW IF EXISTS session_ledger.out_of_sync;
DROP FUNCTION IF EXISTS session_ledger.consumed_pack(text, uuid, text[]);
-- unfundable_reason's third parameter was the payment status; a parameter is renamed only by
-- dropping the function (nothing depends on it: its callers' bodies are text).
DROP FUNCTION IF EXISTS session_ledger.unfundable_reason(int, timestamptz, text, timestamptz);
-- may_write_booking took no amounts before: the old signature goes (its callers' bodies are text).
DROP FUNCTION IF EXISTS session_ledger.may_write_booking(
    text, {{ k.pack }}, {{ k.client }}, {{ k.org }}, timestamptz, timestamptz,
    text, {{ k.pack }}, {{ k.client }}, {{ k.org }}, timestamptz, timestamptz, text[], boolean);

-- The pack a booking consumes now: its purchase while its status is a consuming
-- status (session_ledger.config.consuming_statuses) and the booking consumes at all
-- (p_consumes: the canonical row's `consumes`, the mapping's booking.consumes_when;
-- a booking paid another way never consumes), else none.
CREATE OR REPLACE FUNCTION session_ledger.consumed_pack(
    p_status text, p_purchase_id {{ k.pack }}, p_consuming text[], p_consumes boolean DEFAULT true
) RETURNS {{ k.pack }}
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_status OPERATOR(pg_catalog.=) ANY (p_consuming) AND p_consumes THEN p_purchase_id END
$$;

-- The charge key: what a booking asks of the ledger. It is the pack the booking
-- consumes and, while it consumes one, the client and organisation it is consumed
-- for. Whether two states of a booking differ in it is asked here and nowhere
-- else: by the trigger (is there anything to charge?), by the guard (may this
-- writer change it?) and by the charge (does the ledger row still match?).
CREATE OR REPLACE FUNCTION session_ledger.charge_key_changed(
    p_was_pack {{ k.pack }}, p_was_client {{ k.client }}, p_was_org {{ k.org }},
    p_now_pack {{ k.pack }}, p_now_client {{ k.client }}, p_now_org {{ k.org }}
) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_was_pack IS DISTINCT FROM p_now_pack
        OR (p_now_pack IS NOT NULL
            AND (p_was_client IS DISTINCT FROM p_now_client OR p_was_org IS DISTINCT FROM p_now_org))
$$;

-- The pack whose session the ledger holds for a booking: only a paid row holds one.
CREATE OR REPLACE FUNCTION session_ledger.held_pack(p_state text, p_purchase_id {{ k.pack }}) RETURNS {{ k.pack }}
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_state OPERATOR(pg_catalog.=) 'paid' THEN p_purchase_id END
$$;

-- The pack the ledger has judged a booking against (paid by it, or refused by it).
CREATE OR REPLACE FUNCTION session_ledger.judged_pack(p_state text, p_purchase_id {{ k.pack }}) RETURNS {{ k.pack }}
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN p_state OPERATOR(pg_catalog.=) ANY ('{paid,unfunded}'::text[]) THEN p_purchase_id END
$$;

-- The one rule for "may this pack pay for a session held at p_at", capacity
-- aside: NULL when it may, else why not. p_unusable is the canonical pack's
-- `unusable`: the mapping's reason (pack.unusable_reason) while its pack.unusable_when
-- holds, else NULL.
CREATE OR REPLACE FUNCTION session_ledger.unfundable_reason(
    p_sessions_total int, p_expires_at timestamptz, p_unusable text, p_at timestamptz
) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN p_sessions_total IS NULL THEN 'purchase is not a session pack'
        WHEN p_unusable IS NOT NULL THEN p_unusable
        WHEN p_expires_at IS NOT NULL AND p_expires_at OPERATOR(pg_catalog.<=) p_at THEN 'pack expired before the session'
    END
$$;

-- Whether text is a uuid exactly as jsonb_build_object writes one: lowercase, hyphenated.
-- listener/core/events.py holds the same pattern for the listener; a test keeps them equal.
CREATE OR REPLACE FUNCTION session_ledger.is_canonical_uuid(p_text text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(p_text OPERATOR(pg_catalog.~) '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$', false)
$$;

-- The event: it names a booking, and says who caused it (p_cause, from
-- current_cause()) for the ledger row's provenance. p_source marks who put it
-- there when it is not the trigger (replay, ...). Listeners ignore keys they do
-- not know, so an older listener reads it too.
CREATE OR REPLACE FUNCTION session_ledger.booking_event(p_booking_id {{ k.booking }}, p_source text DEFAULT NULL,
                                                        p_cause jsonb DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'type', 'booking.changed', 'v', 1, 'booking_id', p_booking_id, 'source', p_source, 'cause', p_cause))
$$;

-- Who is writing, for provenance and for matching the app's old calls to its own
-- booking writes: the role the statement runs for, the login (session user) it
-- came through, the signed-in user (the JWT's `sub`, as auth.uid() reads it) and
-- the request's W3C `traceparent` header, which PostgREST puts in request.headers.
-- Any session may set the claims, so the uid is what the login claims: through
-- PostgREST's login (authenticator) a JWT was checked for it, through any other
-- login it is only a claim, and the login beside it says so. Values that are not
-- what they claim to be are left out rather than trusted.
CREATE OR REPLACE FUNCTION session_ledger.current_cause() RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_uid text := nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), '');
    v_claims text := nullif(pg_catalog.current_setting('request.jwt.claims', true), '');
    v_headers text := nullif(pg_catalog.current_setting('request.headers', true), '');
    v_trace text := nullif(pg_catalog.current_setting('request.header.traceparent', true), '');
BEGIN
    IF v_uid IS NULL AND v_claims IS NOT NULL THEN
        v_uid := v_claims::jsonb OPERATOR(pg_catalog.->>) 'sub';
    END IF;
    IF v_trace IS NULL AND v_headers IS NOT NULL THEN
        v_trace := v_headers::jsonb OPERATOR(pg_catalog.->>) 'traceparent';
    END IF;
    RETURN pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'role', session_ledger.caller(),
        -- the login the claims came through: only PostgREST's (authenticator) checked a JWT for them
        'login', session_user,
        -- the canonical-uuid pattern, written out: this runs in every signed-in booking write
        'uid', CASE WHEN pg_catalog.lower(v_uid)
                         OPERATOR(pg_catalog.~) '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                    THEN pg_catalog.lower(v_uid) END,
        'trace', CASE WHEN v_trace OPERATOR(pg_catalog.~) '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
                      THEN v_trace END));
END
$$;

-- The booking an event names, or NULL when the message is not exactly our event.
-- booking_id is written as jsonb_build_object writes the app's key: a canonical uuid
-- string, a number for an integer key (in the type's range), a string for a text key.
CREATE OR REPLACE FUNCTION session_ledger.event_booking_id(p_message jsonb) RETURNS {{ k.booking }}
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN pg_catalog.jsonb_typeof(p_message) OPERATOR(pg_catalog.=) 'object'
             AND p_message OPERATOR(pg_catalog.->>) 'type' OPERATOR(pg_catalog.=) 'booking.changed'
             AND pg_catalog.jsonb_typeof(p_message OPERATOR(pg_catalog.->) 'v') OPERATOR(pg_catalog.=) 'number'
             AND p_message OPERATOR(pg_catalog.->>) 'v' OPERATOR(pg_catalog.=) '1'
{%- if k.booking == 'uuid' %}
             AND pg_catalog.jsonb_typeof(p_message OPERATOR(pg_catalog.->) 'booking_id') OPERATOR(pg_catalog.=) 'string'
             AND session_ledger.is_canonical_uuid(p_message OPERATOR(pg_catalog.->>) 'booking_id')
        THEN (p_message OPERATOR(pg_catalog.->>) 'booking_id')::uuid
{%- elif k.booking in ('integer', 'bigint', 'smallint') %}
             AND pg_catalog.jsonb_typeof(p_message OPERATOR(pg_catalog.->) 'booking_id') OPERATOR(pg_catalog.=) 'number'
             AND p_message OPERATOR(pg_catalog.->>) 'booking_id' OPERATOR(pg_catalog.~) '^-?[0-9]{1,19}$'
        -- the range test only once the text is known to be a whole number: a CASE orders its tests
        THEN CASE WHEN (p_message OPERATOR(pg_catalog.->>) 'booking_id')::numeric
                       BETWEEN {{ {'smallint': '-32768', 'integer': '-2147483648', 'bigint': '-9223372036854775808'}[k.booking] }}
                           AND {{ {'smallint': '32767', 'integer': '2147483647', 'bigint': '9223372036854775807'}[k.booking] }}
                  THEN (p_message OPERATOR(pg_catalog.->>) 'booking_id')::{{ k.booking }} END
{%- else %}
             AND pg_catalog.jsonb_typeof(p_message OPERATOR(pg_catalog.->) 'booking_id') OPERATOR(pg_catalog.=) 'string'
        THEN (p_message OPERATOR(pg_catalog.->>) 'booking_id')::{{ k.booking }}
{%- endif %}
    END
$$;

-- Listeners that are alive: not stopped, and heard from within the configured window.
CREATE OR REPLACE VIEW session_ledger.live_listeners WITH (security_invoker = true) AS
SELECT l.*
FROM session_ledger.listeners l
CROSS JOIN session_ledger.config c
WHERE l.stopped_at IS NULL
  AND l.heartbeat_at > pg_catalog.now() - c.listener_live_window;

-- Bookings whose ledger disagrees with their current row (and ledger rows of
-- bookings that are gone): what `listener reconcile` repairs.
CREATE OR REPLACE VIEW session_ledger.out_of_sync WITH (security_invoker = true) AS
SELECT coalesce(b.id, l.booking_id) AS booking_id
FROM {{ app.bookings }} b
FULL JOIN session_ledger.charges l ON l.booking_id = b.id
CROSS JOIN session_ledger.config c
WHERE session_ledger.consumed_pack(b.status, b.purchase_id, c.consuming_statuses, b.consumes)
      IS DISTINCT FROM session_ledger.judged_pack(l.state, l.purchase_id);

------------------------------------------------------------------------------
-- Who may move a session: the allow-list, stated once
------------------------------------------------------------------------------

-- The guard runs inside every signed-in writer's booking statement, so its helpers
-- below are PL/pgSQL: PostgreSQL before 18 parses and plans a SQL function's body
-- afresh in every transaction (and a nested one on every call), while PL/pgSQL keeps
-- its plans for the session. They call one another as little as the rule allows.

-- The role a statement runs for. Inside a SECURITY DEFINER function current_user
-- is the owner, so the caller is the `role` setting (SET ROLE, as Supabase's API
-- does per request), falling back to the login role.
CREATE OR REPLACE FUNCTION session_ledger.caller() RETURNS name
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN coalesce(nullif(pg_catalog.current_setting('role', true), 'none'), session_user::text)::name;
END
$$;

-- Callers who may move any session: superusers and the owner of the ledger
-- (migrations, the SQL console), the mapping's trusted roles (access.trusted_roles:
-- service_role for a Supabase app, whose cron uses it) and the roles that are members
-- of them, and the listener's role (which reaches bookings and packs only through the
-- ledger's own functions). A superuser is a member of every role, and a role that
-- does not exist has no members.
CREATE OR REPLACE FUNCTION session_ledger.caller_is_trusted() RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_who name := session_ledger.caller();
    v_owner oid;
BEGIN
    SELECT n.nspowner INTO v_owner FROM pg_catalog.pg_namespace n WHERE n.nspname OPERATOR(pg_catalog.=) 'session_ledger';
    RETURN coalesce(pg_catalog.pg_has_role(v_who, v_owner, 'MEMBER'), false)
{%- for role in app.mapping.access.trusted_roles %}
        OR coalesce(pg_catalog.pg_has_role(v_who, pg_catalog.to_regrole({{ app.lit(role) }}), 'MEMBER'), false)
{%- endfor %}
        OR coalesce(pg_catalog.pg_has_role(v_who, pg_catalog.to_regrole('session_ledger_listener'), 'MEMBER'), false);
END
$$;

-- The one rule for who may move a session of a pack in organisation p_org: a
-- trusted caller, or (access.mode = 'supabase' with an access.membership_function)
-- a signed-in user (a member of `authenticated`) whom that function calls a member
-- of the organisation. Everyone else is refused: anon, a client user, a member of
-- another organisation, any other role; with no membership function, and in
-- access.mode = 'trusted_writers', everyone but the trusted. p_trusted, when given,
-- is caller_is_trusted() already computed for this statement (the trigger's, once).
CREATE OR REPLACE FUNCTION session_ledger.may_move_sessions(p_org {{ k.org }}, p_trusted boolean DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(p_trusted, session_ledger.caller_is_trusted()) THEN
        RETURN true;
    END IF;
{%- if members %}
    -- coalesce: an unknown is a refusal, never a pass
    RETURN coalesce(p_org IS NOT NULL
                    AND pg_catalog.pg_has_role(session_ledger.caller(), pg_catalog.to_regrole('authenticated'), 'MEMBER')
                    AND {{ app.membership_function }}(p_org),
                    false);
{%- else %}
    -- no membership rule: only the trusted may
    RETURN false;
{%- endif %}
END
$$;

-- The same rule for a pack, by id. Of a pack that does not exist, only a trusted
-- caller hears so (the charge then says 'pack does not exist'); anyone else is refused.
CREATE OR REPLACE FUNCTION session_ledger.may_move_pack(p_purchase_id {{ k.pack }}, p_trusted boolean DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_org {{ k.org }};
BEGIN
    SELECT p.org_id INTO v_org FROM {{ app.packs }} p WHERE p.id OPERATOR(pg_catalog.=) p_purchase_id;
    IF NOT FOUND THEN
        RETURN coalesce(p_trusted, session_ledger.caller_is_trusted());
    END IF;
    RETURN session_ledger.may_move_sessions(v_org, p_trusted);
END
$$;

-- Refuse, with insufficient_privilege, a caller who may not move this pack's sessions.
CREATE OR REPLACE FUNCTION session_ledger.assert_may_move_pack(p_purchase_id {{ k.pack }}) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF session_ledger.may_move_pack(p_purchase_id) IS NOT TRUE THEN
        RAISE EXCEPTION 'role % may not move sessions of pack %', session_ledger.caller(), p_purchase_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'only {{ who_may }} may';
    END IF;
END
$$;

-- Whether a writer may change a booking from (o_*) to (n_*); NULLs for the side
-- an INSERT or DELETE lacks (an UPDATE that changes a booking's id is the old
-- booking deleted and a new one inserted). Applied by the bookings trigger to
-- writers who are not trusted, on every booking whose judged columns (status,
-- purchase_id, client_id, org_id, start_time, end_time, amount) the write changes. A
-- write may not, unless its writer may move the sessions of the pack concerned:
--   1. change the booking's charge key (session_ledger.charge_key_changed) for a
--      pack it consumed or consumes;
--   2. detach or switch the pack it names, or name it for another client or organisation;
--   3. change anything judged (its status, times, amount, client, organisation or pack) of a
--      booking that names a pack once its session has started, or delete a booking
--      that names a pack: what happened is the pack's business, not the client's (a
--      cancel after the fact is a free session);
--   4. move the times, or change the amount, of a booking that names a pack (or attach
--      a pack while doing so): the cron completes by end_time, the charge is judged at
--      start_time, and the amount (the mapping's pack.amount_column) is what the pack
--      pays. Whoever may set a booking's amount sets its price.
-- A client may attach their own live pack to their own booking that has none, does
-- not consume, and has not started, without moving its times or changing its amount
-- (booking a future session), and cancel or re-confirm their own future booking.
-- The amount is what the canonical booking says (1 without an amount_column: a
-- constant that never changes).
CREATE OR REPLACE FUNCTION session_ledger.may_write_booking(
    o_status text, o_pack {{ k.pack }}, o_client {{ k.client }}, o_org {{ k.org }}, o_start timestamptz, o_end timestamptz,
    o_amount int,
    n_status text, n_pack {{ k.pack }}, n_client {{ k.client }}, n_org {{ k.org }}, n_start timestamptz, n_end timestamptz,
    n_amount int,
    p_consuming text[], p_trusted boolean DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    o_c {{ k.pack }} := session_ledger.consumed_pack(o_status, o_pack, p_consuming);
    n_c {{ k.pack }} := session_ledger.consumed_pack(n_status, n_pack, p_consuming);
    -- an INSERT has no old side to have started; a DELETE (or an id change's old side) moves its times away
    v_started boolean := o_start IS NOT NULL AND o_start OPERATOR(pg_catalog.<=) pg_catalog.now();
    -- a changed amount is judged as a move: both change what the pack pays for
    v_moved boolean := o_status IS NOT NULL AND n_status IS NOT NULL
                       AND (o_start, o_end, o_amount) IS DISTINCT FROM (n_start, n_end, n_amount);
BEGIN
    -- IS NOT TRUE: an unknown is a refusal, never a pass.
    -- 1. A pack it stops consuming (or consumes for another client or organisation).
    IF o_c IS NOT NULL AND session_ledger.charge_key_changed(o_c, o_client, o_org, n_c, n_client, n_org)
       AND session_ledger.may_move_pack(o_c, p_trusted) IS NOT TRUE THEN
        RETURN false;
    END IF;
    -- 1. A pack it starts consuming (or consumes for another client or organisation).
    IF n_c IS NOT NULL AND session_ledger.charge_key_changed(o_c, o_client, o_org, n_c, n_client, n_org)
       AND session_ledger.may_move_pack(n_c, p_trusted) IS NOT TRUE THEN
        RETURN false;
    END IF;
    -- 2. A pack it names no longer, or names for another client or organisation: a
    -- detached pack is one the cron can no longer charge.
    IF o_pack IS NOT NULL AND session_ledger.charge_key_changed(o_pack, o_client, o_org, n_pack, n_client, n_org)
       AND session_ledger.may_move_pack(o_pack, p_trusted) IS NOT TRUE THEN
        RETURN false;
    END IF;
    -- 3. A booking that names a pack: its session has started, or it is deleted.
    IF o_pack IS NOT NULL AND (v_started OR n_status IS NULL)
       AND session_ledger.may_move_pack(o_pack, p_trusted) IS NOT TRUE THEN
        RETURN false;
    END IF;
    -- 4. Times moved, or the amount changed, on a booking that names a pack (one it no
    -- longer names is rule 2's).
    IF v_moved AND n_pack IS NOT NULL AND session_ledger.may_move_pack(n_pack, p_trusted) IS NOT TRUE THEN
        RETURN false;
    END IF;
    -- A pack it attaches without consuming: allowed too when it is the client's own
    -- and live, on a future booking that had no pack.
    IF n_c IS NULL AND n_pack IS NOT NULL
       AND session_ledger.charge_key_changed(o_pack, o_client, o_org, n_pack, n_client, n_org) THEN
        RETURN coalesce(session_ledger.may_move_pack(n_pack, p_trusted)
                        OR (o_pack IS NULL AND NOT v_started
                            AND (o_client IS NULL
                                 OR (o_client IS NOT DISTINCT FROM n_client AND o_org IS NOT DISTINCT FROM n_org))
                            AND EXISTS (SELECT 1 FROM {{ app.packs }} p
                                        WHERE p.id OPERATOR(pg_catalog.=) n_pack
{%- if app.mapping.pack.client %}
                                          AND p.client_id OPERATOR(pg_catalog.=) n_client
{%- endif %}
{%- if app.mapping.pack.org %}
                                          AND p.org_id OPERATOR(pg_catalog.=) n_org
{%- endif %}
                                          AND session_ledger.unfundable_reason(p.sessions_total, p.expires_at,
                                                                               p.unusable, pg_catalog.now())
                                              IS NULL)),
                        false);
    END IF;
    RETURN true;
END
$$;

------------------------------------------------------------------------------
-- Code the ledger runs as the owner on the app's tables
------------------------------------------------------------------------------

-- The ledger writes the app's tables as their owner (settle_packs on the packs,
-- complete_past_bookings on the bookings), and every trigger on them fires with
-- the owner's rights. A trigger whose function belongs to a role that could not
-- already act as the ledger's owner would run that role's code as the owner: the
-- write is refused instead, naming the trigger, until the app drops it
-- (`listener doctor` says how). Supabase hands out TRIGGER on public tables to
-- its API roles; `listener migrate` revokes it, and this catches what was
-- attached before.
CREATE OR REPLACE FUNCTION session_ledger.assert_no_foreign_triggers(p_table regclass) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_found text;
BEGIN
    SELECT pg_catalog.format('trigger %I runs %s, owned by %s', t.tgname, p.oid::regprocedure, p.proowner::regrole)
      INTO v_found
    FROM pg_catalog.pg_trigger t
    JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) t.tgfoid
    WHERE t.tgrelid OPERATOR(pg_catalog.=) p_table
      AND t.tgenabled OPERATOR(pg_catalog.<>) 'D'
      AND NOT pg_catalog.pg_has_role(p.proowner, current_user, 'MEMBER')
    ORDER BY t.tgname
    LIMIT 1;
    IF v_found IS NOT NULL THEN
        RAISE EXCEPTION 'refusing to write % as its owner: %', p_table, v_found
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Drop that trigger, or have the table''s owner own its function; `listener doctor` lists them.';
    END IF;
END
$$;

-- A TRUNCATE fires no UPDATE or DELETE trigger, so it would go around the guard:
-- only a trusted caller may truncate the app's bookings or packs.
CREATE OR REPLACE FUNCTION session_ledger.refuse_untrusted_truncate() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT session_ledger.caller_is_trusted() THEN
        RAISE EXCEPTION 'role % may not truncate %.%', session_ledger.caller(), TG_TABLE_SCHEMA, TG_TABLE_NAME
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Only {{ (roles ~ ' and ') if roles else '' }}the ledger''s owner may: every booking and pack is money.';
    END IF;
    RETURN NULL;
END
$$;

------------------------------------------------------------------------------
-- The app's old code: which calls are echoes of a booking write
------------------------------------------------------------------------------

-- Whether an echo recorded by the bookings trigger (session_ledger.booking_writes)
-- may still absorb one of the old code's calls: within p_window of its booking
-- write, or of the last call that absorbed an echo of the same write (same
-- written_at and writer: the old cron's edge function calls booking after
-- booking, so a long run stays live while its calls keep coming). absorb_legacy_call
-- asks this of each echo it may take; prune_booking_writes applies the same rule to the
-- whole table in one pass (tests/db/test_legacy_calls.py holds the two together), so
-- nothing still live is ever pruned.
CREATE OR REPLACE FUNCTION session_ledger.booking_write_live(
    p_written_at timestamptz, p_caused_by jsonb, p_window interval
) RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT p_written_at OPERATOR(pg_catalog.>) (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) p_window)
        OR EXISTS (SELECT 1 FROM session_ledger.booking_writes s
                   WHERE s.written_at OPERATOR(pg_catalog.=) p_written_at
                     AND s.caused_by OPERATOR(pg_catalog.=) p_caused_by
                     AND s.last_absorbed_at OPERATOR(pg_catalog.>)
                         (pg_catalog.clock_timestamp() OPERATOR(pg_catalog.-) p_window))
$$;
