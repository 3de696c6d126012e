-- A gym's own PostgreSQL (no Supabase): members buy class packages that count down,
-- book classes, and the front desk marks each booking attended, no-show or cancelled.
-- Integer keys; the class's times live on the class, not on the booking. The gym's
-- one server process is the only writer, through a login that is a member of gym_server.
--
-- Loads on a blank database, or after the Supabase-shaped base (`listener dev --schema`).
-- Roles are cluster-wide: they are created only when missing, so several databases of
-- one server (tests, the demo) can each load this file.

CREATE SCHEMA gym;

CREATE TABLE gym.members (id serial PRIMARY KEY, email text NOT NULL UNIQUE);

CREATE TABLE gym.classes (id serial PRIMARY KEY, name text NOT NULL,
    starts_at timestamptz NOT NULL, ends_at timestamptz NOT NULL);

CREATE TABLE gym.packages (id serial PRIMARY KEY, member_id integer NOT NULL REFERENCES gym.members,
    sessions_remaining integer NOT NULL CHECK (sessions_remaining >= 0),
    expires_on timestamptz, is_expired boolean NOT NULL DEFAULT false);

CREATE TABLE gym.bookings (id serial PRIMARY KEY, member_id integer NOT NULL REFERENCES gym.members,
    class_id integer NOT NULL REFERENCES gym.classes, package_id integer REFERENCES gym.packages,
    status text NOT NULL DEFAULT 'booked' CHECK (status IN ('booked', 'attended', 'no_show', 'cancelled')),
    notes text);

-- gym_server: what the server may do. gym_app: the server's login (its password is set
-- by the deploy, never here). Two databases loading this file at once may race to
-- create a role, hence the handlers.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'gym_server') THEN
        BEGIN
            CREATE ROLE gym_server NOLOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'gym_app') THEN
        BEGIN
            CREATE ROLE gym_app LOGIN;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
    IF NOT pg_catalog.pg_has_role('gym_app', 'gym_server', 'MEMBER') THEN
        BEGIN
            GRANT gym_server TO gym_app;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA gym TO gym_server;
GRANT SELECT, INSERT, UPDATE ON gym.members, gym.classes, gym.packages, gym.bookings TO gym_server;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA gym TO gym_server;
