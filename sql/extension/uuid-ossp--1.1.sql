-- A SQL-only stand-in for contrib's uuid-ossp, for the embedded server of `listener dev`.
-- Version 1 UUIDs need the host's MAC address and clock sequence and are left out:
-- calling uuid_generate_v1() fails with "function does not exist" rather than faking one.
\echo Use "CREATE EXTENSION ""uuid-ossp""" to load this file. \quit

CREATE FUNCTION uuid_nil() RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT '00000000-0000-0000-0000-000000000000'::pg_catalog.uuid $$;

CREATE FUNCTION uuid_ns_dns() RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT '6ba7b810-9dad-11d1-80b4-00c04fd430c8'::pg_catalog.uuid $$;

CREATE FUNCTION uuid_ns_url() RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT '6ba7b811-9dad-11d1-80b4-00c04fd430c8'::pg_catalog.uuid $$;

CREATE FUNCTION uuid_ns_oid() RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT '6ba7b812-9dad-11d1-80b4-00c04fd430c8'::pg_catalog.uuid $$;

CREATE FUNCTION uuid_ns_x500() RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT '6ba7b814-9dad-11d1-80b4-00c04fd430c8'::pg_catalog.uuid $$;

CREATE FUNCTION uuid_generate_v4() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.gen_random_uuid() $$;

-- RFC 4122 version 3: MD5 of the namespace's bytes and the name, version and variant bits set.
CREATE FUNCTION uuid_generate_v3(namespace uuid, name text) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT SET search_path = pg_catalog, pg_temp
AS $$
    SELECT pg_catalog.encode(
               pg_catalog.set_byte(
                   pg_catalog.set_byte(h, 6, (pg_catalog.get_byte(h, 6) OPERATOR(pg_catalog.&) 15)
                                             OPERATOR(pg_catalog.|) 48),
                   8, (pg_catalog.get_byte(h, 8) OPERATOR(pg_catalog.&) 63) OPERATOR(pg_catalog.|) 128),
               'hex')::pg_catalog.uuid
    FROM (SELECT pg_catalog.decode(pg_catalog.md5(
                     pg_catalog.decode(pg_catalog.replace(namespace::pg_catalog.text, '-', ''), 'hex')
                     OPERATOR(pg_catalog.||) pg_catalog.convert_to(name, 'UTF8')), 'hex') AS h) AS x
$$;
