"""The example apps' mappings as text (examples/*/mapping.toml), and the bare tables of the gym and
the marketplace that the ledger's own tests install them on (no flows, prices or policies: those
belong to the example apps' suites, tests/examples)."""

from __future__ import annotations

from support import ROOT

GYM_MAPPING = (ROOT / "examples" / "gym" / "mapping.toml").read_text(encoding="utf-8")
MARKET_MAPPING = (ROOT / "examples" / "marketplace" / "mapping.toml").read_text(encoding="utf-8")

GYM_TABLES = """
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
DO $$
BEGIN
    CREATE ROLE gym_server NOLOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL;  -- a role is the cluster's: another test database made it
END
$$;
"""

MARKET_TABLES = """
CREATE TABLE public.credit_wallets (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL UNIQUE, credits_balance integer NOT NULL DEFAULT 0 CHECK (credits_balance >= 0));
CREATE TABLE public.bookings (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), user_id uuid NOT NULL,
    class_name text NOT NULL, starts_at timestamptz NOT NULL, ends_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'confirmed' CHECK (status IN ('confirmed', 'completed', 'cancelled')),
    payment_method text NOT NULL CHECK (payment_method IN ('credits', 'card')),
    credits_used integer NOT NULL DEFAULT 1 CHECK (credits_used >= 0));
"""
