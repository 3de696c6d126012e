-- What a Supabase project's database holds before the app's own migrations, for
-- plain PostgreSQL: the API roles, auth (users and the JWT claim readers),
-- extensions, storage, and the grants and default privileges Supabase sets.
--
-- Run by a superuser on the database the app's schema goes into. Idempotent,
-- and safe on a cluster whose roles already exist: roles are cluster-wide and
-- other databases (and other tests) share them, so a role is only created when
-- missing and an existing role's attributes are never changed. Settings are
-- per database (ALTER ROLE ... IN DATABASE), never cluster-wide.

-- The API roles, the role PostgREST logs in as, and the two roles a Supabase
-- dump's grants and default privileges name. Two databases prepared at once
-- may race to create a role, hence the exception handlers.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT * FROM (VALUES
            ('anon', 'NOLOGIN NOINHERIT'),
            ('authenticated', 'NOLOGIN NOINHERIT'),
            ('service_role', 'NOLOGIN NOINHERIT BYPASSRLS'),
            ('authenticator', 'LOGIN NOINHERIT'),
            -- only grant targets when missing; a Supabase cluster has them as real logins
            ('postgres', 'NOLOGIN'),
            ('supabase_admin', 'NOLOGIN')
        ) AS v(name, attributes)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r.name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I %s', r.name, r.attributes);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
END
$$;

DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
        IF NOT pg_catalog.pg_has_role('authenticator', r, 'MEMBER') THEN
            BEGIN
                EXECUTE format('GRANT %I TO authenticator', r);
            EXCEPTION WHEN unique_violation OR duplicate_object THEN
                NULL;
            END;
        END IF;
    END LOOP;
END
$$;

------------------------------------------------------------------------------
-- extensions
------------------------------------------------------------------------------

CREATE SCHEMA IF NOT EXISTS extensions;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'uuid-ossp') THEN
        CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA extensions;
    ELSIF pg_catalog.to_regprocedure('extensions.uuid_generate_v4()') IS NULL THEN
        -- A server built without uuid-ossp (the embedded wheel of `listener dev`): the
        -- same random version-4 uuid from core, so the app's column defaults work.
        CREATE FUNCTION extensions.uuid_generate_v4() RETURNS uuid
        LANGUAGE sql VOLATILE PARALLEL SAFE SET search_path = ''
        AS 'SELECT pg_catalog.gen_random_uuid()';
    END IF;
    -- Without pgcrypto, gen_random_uuid() still comes from core (PostgreSQL 13+).
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'pgcrypto') THEN
        CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA extensions;
    END IF;
END
$$;
GRANT USAGE ON SCHEMA extensions TO postgres, anon, authenticated, service_role;

------------------------------------------------------------------------------
-- auth: users and the readers of the request's JWT claims
------------------------------------------------------------------------------

CREATE SCHEMA IF NOT EXISTS auth;

CREATE TABLE IF NOT EXISTS auth.users (
    instance_id uuid,
    id uuid PRIMARY KEY,
    aud varchar(255),
    role varchar(255),
    email varchar(255),
    encrypted_password varchar(255),
    email_confirmed_at timestamptz,
    last_sign_in_at timestamptz,
    raw_app_meta_data jsonb,
    raw_user_meta_data jsonb,
    is_super_admin boolean,
    is_anonymous boolean NOT NULL DEFAULT false,
    created_at timestamptz DEFAULT pg_catalog.now(),
    updated_at timestamptz DEFAULT pg_catalog.now()
);

-- As Supabase defines them: the claims PostgREST sets per request, newest
-- form (request.jwt.claims, one JSON object) and the older one setting per claim.
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(
        nullif(pg_catalog.current_setting('request.jwt.claim.sub', true), ''),
        (nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$$;

CREATE OR REPLACE FUNCTION auth.role() RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(
        nullif(pg_catalog.current_setting('request.jwt.claim.role', true), ''),
        (nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )::text
$$;

CREATE OR REPLACE FUNCTION auth.email() RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(
        nullif(pg_catalog.current_setting('request.jwt.claim.email', true), ''),
        (nullif(pg_catalog.current_setting('request.jwt.claims', true), '')::jsonb ->> 'email')
    )::text
$$;

CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(
        nullif(pg_catalog.current_setting('request.jwt.claim', true), ''),
        nullif(pg_catalog.current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
GRANT EXECUTE ON FUNCTION auth.uid(), auth.role(), auth.email(), auth.jwt()
    TO anon, authenticated, service_role;

------------------------------------------------------------------------------
-- storage: the schema and its two main tables, so a dump's references resolve
------------------------------------------------------------------------------

CREATE SCHEMA IF NOT EXISTS storage;

CREATE TABLE IF NOT EXISTS storage.buckets (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    owner uuid,
    public boolean DEFAULT false,
    created_at timestamptz DEFAULT pg_catalog.now(),
    updated_at timestamptz DEFAULT pg_catalog.now()
);

CREATE TABLE IF NOT EXISTS storage.objects (
    id uuid PRIMARY KEY DEFAULT extensions.uuid_generate_v4(),
    bucket_id text REFERENCES storage.buckets (id),
    name text,
    owner uuid,
    metadata jsonb,
    created_at timestamptz DEFAULT pg_catalog.now(),
    updated_at timestamptz DEFAULT pg_catalog.now()
);

GRANT USAGE ON SCHEMA storage TO anon, authenticated, service_role;
ALTER TABLE storage.buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;
GRANT ALL ON storage.buckets, storage.objects TO anon, authenticated, service_role;

------------------------------------------------------------------------------
-- public: the API roles may use everything created there, as RLS decides
------------------------------------------------------------------------------

GRANT USAGE ON SCHEMA public TO postgres, anon, authenticated, service_role;

-- For whoever runs this (the app's objects on a plain server), and for the two
-- roles that create objects on Supabase.
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
    GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public
    GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
    GRANT ALL ON TABLES TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
    GRANT ALL ON FUNCTIONS TO postgres, anon, authenticated, service_role;
ALTER DEFAULT PRIVILEGES FOR ROLE supabase_admin IN SCHEMA public
    GRANT ALL ON SEQUENCES TO postgres, anon, authenticated, service_role;

------------------------------------------------------------------------------
-- postgres: what Supabase grants it before demoting it from superuser
------------------------------------------------------------------------------

DO $$
BEGIN
    EXECUTE format('GRANT ALL ON DATABASE %I TO postgres', pg_catalog.current_database());
END
$$;
GRANT ALL ON SCHEMA auth, storage, extensions TO postgres;
GRANT ALL ON ALL TABLES IN SCHEMA auth, storage, extensions TO postgres;
GRANT ALL ON ALL SEQUENCES IN SCHEMA auth, storage, extensions TO postgres;
GRANT ALL ON ALL ROUTINES IN SCHEMA auth, storage, extensions TO postgres;

-- Supabase's search paths, for this database only: unqualified
-- uuid_generate_v4() and gen_random_uuid() resolve in extensions.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['postgres', 'supabase_admin', 'authenticator', 'anon', 'authenticated', 'service_role'] LOOP
        EXECUTE format('ALTER ROLE %I IN DATABASE %I SET search_path = "$user", public, extensions',
                       r, pg_catalog.current_database());
    END LOOP;
END
$$;
