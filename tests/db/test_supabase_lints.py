"""Supabase's database linter (splinter) finds nothing new once the ledger is installed.

Each check below is one of splinter's current lints (its lints/00NN_*.sql and docs), restated
here as our own catalog query over the same objects, with splinter's schema exclusions and its
list of exposed schemas. A Supabase project exposes `public` and `graphql_public` through the
API unless told otherwise, and has pg_graphql installed, so the checks gated on those take them
as given (this cluster has no pg_graphql).

Left out, because they judge a running project rather than a schema: unused_index (0005, index
scan counts), table_bloat (0020), extension_versions_outdated (0022, the installed binaries),
public_bucket_allows_listing (0025, Storage buckets; the ledger has none) and
auth_allow_anonymous_sign_ins (0012, an Auth setting).

Since splinter #99 (September 2024), function_search_path_mutable asks only that a function
sets search_path, to anything; the ledger's `pg_catalog, pg_temp` satisfies it.

The checks run on the real app's schema before and after `listener migrate`; whatever the app
already had is its own.
"""

from __future__ import annotations

from typing import Any

import pytest

from listener.core.db import connect
from listener.testing import supabase
from listener.testing.supabase import SupabaseCluster

from support.supabase_fixtures import APP_SCHEMA

# The slow tier: its own Supabase-shaped PostgreSQL 15 cluster.
pytestmark = pytest.mark.slow

# Schemas every lint leaves alone: the platform's own and other extensions' (pgmq among them).
SKIPPED = [
    "_timescaledb_cache", "_timescaledb_catalog", "_timescaledb_config", "_timescaledb_internal", "auth",
    "cron", "extensions", "graphql", "graphql_public", "information_schema", "net", "pgmq", "pgroonga",
    "pgsodium", "pgsodium_masks", "pgtle", "pgbouncer", "pg_catalog", "realtime", "repack", "storage",
    "supabase_functions", "supabase_migrations", "tiger", "topology", "vault",
]  # fmt: skip

# What the API serves on a new Supabase project (PostgREST's db-schemas).
EXPOSED = ["public", "graphql_public"]

API_ROLES = "ARRAY['anon', 'authenticated']"

# Relations and functions of the schemas the lints look at, minus what an extension owns.
_RELS = """
    SELECT c.oid, c.relname, c.relkind, c.relrowsecurity, c.reloptions, n.nspname,
           n.nspname || '.' || c.relname AS name, n.nspname = ANY(%(exposed)s) AS exposed
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname <> ALL(%(skipped)s) AND n.nspname NOT LIKE 'pg\\_%%'
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
"""
_FUNCS = """
    SELECT p.oid, p.prosecdef, p.proconfig, n.nspname = ANY(%(exposed)s) AS exposed,
           n.nspname || '.' || p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')' AS name
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname <> ALL(%(skipped)s) AND n.nspname NOT LIKE 'pg\\_%%'
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
"""
_POLICIES = """
    SELECT p.polname, p.polpermissive, p.polroles, p.polcmd, c.oid AS rel, c.relrowsecurity,
           n.nspname || '.' || c.relname || ' ' || p.polname AS name,
           lower(coalesce(pg_catalog.pg_get_expr(p.polqual, p.polrelid), '')) AS qual,
           lower(coalesce(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid), '')) AS with_check,
           p.polqual IS NULL AS no_qual, p.polwithcheck IS NULL AS no_check
    FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND n.nspname <> ALL(%(skipped)s)
"""


def _invoker(rel: str) -> str:
    """The view runs with its caller's rights (security_invoker, in any spelling PostgreSQL takes)."""
    return (
        f"lower(coalesce({rel}.reloptions::text, '{{}}'))::text[] && ARRAY['security_invoker=1',"
        " 'security_invoker=true', 'security_invoker=yes', 'security_invoker=on']"
    )


def _api_reads(rel: str) -> str:
    """anon or authenticated may SELECT the relation."""
    return f"(SELECT bool_or(pg_catalog.has_table_privilege(api, {rel}.oid, 'SELECT')) FROM unnest({API_ROLES}) api)"


# lint name -> a query returning the objects it reports, one `name` each
LINTS: dict[str, str] = {
    # -- security --------------------------------------------------------------
    "auth_users_exposed": f"""
        SELECT DISTINCT v.name FROM ({_RELS}) v
        JOIN pg_catalog.pg_rewrite w ON w.ev_class = v.oid
        JOIN pg_catalog.pg_depend d ON d.objid = w.oid AND d.refobjid = to_regclass('auth.users') AND d.deptype = 'n'
        WHERE v.exposed AND v.relkind IN ('v', 'm') AND {_api_reads("v")}
          AND (v.relkind = 'm' OR NOT ({_invoker("v")})
               OR NOT (SELECT relrowsecurity FROM pg_catalog.pg_class WHERE oid = to_regclass('auth.users')))""",
    "policy_exists_rls_disabled": f"""
        SELECT name FROM ({_RELS}) r WHERE relkind = 'r' AND NOT relrowsecurity
          AND EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = r.oid)""",
    "rls_enabled_no_policy": f"""
        SELECT name FROM ({_RELS}) r WHERE relkind = 'r' AND relrowsecurity
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p WHERE p.polrelid = r.oid)""",
    "security_definer_view": f"""
        SELECT name FROM ({_RELS}) r WHERE relkind = 'v' AND exposed AND {_api_reads("r")} AND NOT ({_invoker("r")})""",
    "function_search_path_mutable": f"""
        SELECT name FROM ({_FUNCS}) f
        WHERE NOT EXISTS (SELECT 1 FROM unnest(coalesce(f.proconfig, '{{}}')) s WHERE s LIKE 'search\\_path=%%')""",
    "rls_disabled_in_public": f"""
        SELECT name FROM ({_RELS}) r WHERE relkind = 'r' AND exposed AND NOT relrowsecurity AND {_api_reads("r")}""",
    "extension_in_public": """
        SELECT extname AS name FROM pg_catalog.pg_extension
        WHERE extnamespace = 'public'::regnamespace AND extname <> 'plpgsql'""",
    "rls_references_user_metadata": f"""
        SELECT name FROM ({_POLICIES}) p
        WHERE (qual || ' ' || with_check) ~ '(auth\\.jwt\\(\\)|request\\.jwt\\.claims).*user_metadata'""",
    "materialized_view_in_api": f"SELECT name FROM ({_RELS}) r WHERE relkind = 'm' AND exposed AND {_api_reads('r')}",
    "foreign_table_in_api": f"SELECT name FROM ({_RELS}) r WHERE relkind = 'f' AND exposed AND {_api_reads('r')}",
    "unsupported_reg_types": """
        SELECT c.oid::regclass::text || '.' || a.attname AS name
        FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE a.attnum > 0 AND NOT a.attisdropped AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgsodium')
          AND a.atttypid = ANY(ARRAY['regcollation', 'regconfig', 'regdictionary', 'regnamespace', 'regoper',
                                     'regoperator', 'regproc', 'regprocedure']::regtype[])""",
    "insecure_queue_exposed_in_api": f"""
        SELECT 'pgmq.' || c.relname AS name FROM pg_catalog.pg_class c
        WHERE c.relnamespace = to_regnamespace('pgmq') AND c.relkind IN ('r', 'p') AND c.relname LIKE 'q\\_%%'
          AND NOT c.relrowsecurity AND 'pgmq_public' = ANY(%(exposed)s) AND {_api_reads("c")}""",
    "fkey_to_auth_unique": """
        SELECT k.conrelid::regclass::text || ' ' || k.conname AS name
        FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_index i ON i.indexrelid = k.conindid
        JOIN pg_catalog.pg_class t ON t.oid = k.confrelid
        WHERE k.contype = 'f' AND t.relnamespace = to_regnamespace('auth') AND i.indisunique AND NOT i.indisprimary""",
    "sensitive_columns_exposed": f"""
        SELECT DISTINCT r.name FROM ({_RELS}) r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid
        WHERE r.relkind = 'r' AND r.exposed AND NOT r.relrowsecurity AND {_api_reads("r")}
          AND a.attnum > 0 AND NOT a.attisdropped
          AND replace(lower(a.attname), '-', '_') = ANY(%(sensitive)s)""",
    "rls_policy_always_true": f"""
        SELECT name FROM ({_POLICIES}) p
        WHERE relrowsecurity AND polpermissive
          AND (polroles = '{{0}}' OR EXISTS (SELECT 1 FROM unnest(polroles) o
                                             WHERE o::regrole::text IN ('anon', 'authenticated')))
          AND ((polcmd IN ('w', 'd', '*') AND (replace(qual, ' ', '') IN ('true', '(true)', '1=1', '(1=1)') OR no_qual))
            OR replace(with_check, ' ', '') IN ('true', '(true)', '1=1', '(1=1)')
            OR (no_check AND polcmd = 'a')
            OR (no_check AND polcmd IN ('w', '*') AND replace(qual, ' ', '') IN ('true', '(true)', '1=1', '(1=1)')))""",
    "pg_graphql_anon_table_exposed": f"""
        SELECT name FROM ({_RELS}) r WHERE relkind IN ('r', 'v', 'm', 'f') AND %(graphql)s
          AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = r.oid AND a.attnum > 0
                      AND NOT a.attisdropped AND pg_catalog.has_column_privilege('anon', r.oid, a.attnum, 'SELECT'))""",
    "pg_graphql_authenticated_table_exposed": f"""
        SELECT name FROM ({_RELS}) r WHERE relkind IN ('r', 'v', 'm', 'f') AND %(graphql)s
          AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = r.oid AND a.attnum > 0
                      AND NOT a.attisdropped
                      AND pg_catalog.has_column_privilege('authenticated', r.oid, a.attnum, 'SELECT'))""",
    "anon_security_definer_function_executable": f"""
        SELECT name FROM ({_FUNCS}) f
        WHERE prosecdef AND exposed AND pg_catalog.has_function_privilege('anon', f.oid, 'EXECUTE')""",
    "authenticated_security_definer_function_executable": f"""
        SELECT name FROM ({_FUNCS}) f
        WHERE prosecdef AND exposed AND pg_catalog.has_function_privilege('authenticated', f.oid, 'EXECUTE')""",
    # -- performance (of the schema, not of its statistics) -----------------------
    "unindexed_foreign_keys": f"""
        SELECT r.name || ' ' || k.conname AS name FROM ({_RELS}) r
        JOIN pg_catalog.pg_constraint k ON k.conrelid = r.oid AND k.contype = 'f'
        WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = r.oid AND i.indisvalid
                          AND (string_to_array(i.indkey::text, ' ')::smallint[])[1:cardinality(k.conkey)] = k.conkey)""",
    "auth_rls_initplan": f"""
        SELECT name FROM ({_POLICIES}) p,
             LATERAL unnest(ARRAY['auth.uid()', 'auth.jwt()', 'auth.role()', 'auth.email()']) call
        WHERE relrowsecurity
          AND ((position(call IN qual) > 0 AND position('select ' || call IN qual) = 0)
            OR (position(call IN with_check) > 0 AND position('select ' || call IN with_check) = 0))
        UNION
        SELECT name FROM ({_POLICIES}) p
        WHERE relrowsecurity AND ((qual LIKE '%%current\\_setting(%%)%%' AND qual NOT LIKE '%%select current\\_setting(%%')
            OR (with_check LIKE '%%current\\_setting(%%)%%' AND with_check NOT LIKE '%%select current\\_setting(%%'))""",
    "no_primary_key": f"""
        SELECT name FROM ({_RELS}) r WHERE relkind = 'r'
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = r.oid AND i.indisprimary)""",
    "multiple_permissive_policies": f"""
        SELECT p.rel::regclass::text || ' ' || o.rolname || ' ' || a.cmd AS name
        FROM ({_POLICIES}) p
        JOIN pg_catalog.pg_roles o ON p.polroles @> ARRAY[o.oid] OR p.polroles = '{{0}}'
        CROSS JOIN LATERAL unnest(CASE p.polcmd WHEN 'r' THEN ARRAY['SELECT'] WHEN 'a' THEN ARRAY['INSERT']
                                   WHEN 'w' THEN ARRAY['UPDATE'] WHEN 'd' THEN ARRAY['DELETE']
                                   ELSE ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'] END) a(cmd)
        WHERE p.polpermissive AND o.rolname NOT LIKE 'pg\\_%%' AND o.rolname NOT LIKE 'supabase%%admin'
          AND NOT o.rolbypassrls
        GROUP BY 1 HAVING count(*) > 1""",
    "duplicate_index": f"""
        SELECT r.name || ' ' || string_agg(x.relname, ',' ORDER BY x.relname) AS name
        FROM ({_RELS}) r JOIN pg_catalog.pg_index i ON i.indrelid = r.oid
        JOIN pg_catalog.pg_class x ON x.oid = i.indexrelid
        WHERE r.relkind IN ('r', 'm')
        GROUP BY r.name, replace(pg_catalog.pg_get_indexdef(i.indexrelid), x.relname, '')
        HAVING count(*) > 1""",
}

# Column names splinter's sensitive_columns_exposed looks for.
SENSITIVE = [
    "password", "passwd", "pwd", "passphrase", "secret", "secret_key", "private_key", "api_key", "apikey",
    "auth_key", "token", "jwt", "access_token", "refresh_token", "oauth_token", "session_token",
    "bearer_token", "auth_code", "session_id", "session_key", "session_secret", "recovery_code",
    "backup_code", "verification_code", "otp", "two_factor", "2fa_secret", "2fa_code", "ssn",
    "social_security", "social_security_number", "driver_license", "drivers_license", "license_number",
    "passport_number", "passport_id", "national_id", "tax_id", "credit_card", "card_number", "cvv", "cvc",
    "cvn", "bank_account", "account_number", "routing_number", "iban", "swift_code", "bic", "health_record",
    "medical_record", "patient_id", "insurance_number", "health_insurance", "medical_insurance",
    "treatment", "mac_address", "macaddr", "imei", "device_uuid", "pgp_key", "gpg_key", "ssh_key",
    "certificate", "license_key", "activation_key", "facial_recognition",
]  # fmt: skip


def _lints(dsn: str, *, exposed: list[str] = EXPOSED) -> set[tuple[str, str]]:
    params: dict[str, Any] = {"skipped": SKIPPED, "exposed": exposed, "graphql": True, "sensitive": SENSITIVE}
    found = set()
    with connect(dsn, purpose="tests") as conn:
        for lint, query in LINTS.items():
            found |= {(lint, r["name"]) for r in conn.execute(query, params).fetchall()}
    return found


def test_the_ledger_adds_no_supabase_lint(supabase_cluster: SupabaseCluster) -> None:
    name = supabase.create_app_database(supabase_cluster, schema=[APP_SCHEMA], ledger=False)
    try:
        dsn = supabase_cluster.admin_dsn(name)
        before = _lints(dsn)
        # The app's own findings, as FACTS describe its schema: the lints can fail.
        assert ("function_search_path_mutable", "public.use_session(p_purchase_id uuid)") in before
        assert ("security_definer_view", "public.upcoming_bookings") in before
        assert (
            "authenticated_security_definer_function_executable",
            "public.use_session(p_purchase_id uuid)",
        ) in before
        supabase.migrate_as_postgres(supabase_cluster, name)
        after = _lints(dsn)
        new = after - before
        # multiple_permissive_policies counts the app's policies TO PUBLIC once per role, so the
        # listener's role repeats the app's own findings; nothing new on any table or action. (The
        # role is cluster-wide: when an earlier database of this cluster created it, the repeats are
        # in `before` already.)
        repeated = {
            (lint, f) for lint, f in new
            if lint == "multiple_permissive_policies" and f.split(" ")[1] == "session_ledger_listener"
        }  # fmt: skip
        listener_repeats = {
            (lint, f) for lint, f in after
            if lint == "multiple_permissive_policies" and f.split(" ")[1] == "session_ledger_listener"
        }  # fmt: skip
        assert listener_repeats, "the lint sees the listener's role"
        app_findings = {
            (f.split(" ")[0], f.split(" ")[2]) for lint, f in before if lint == "multiple_permissive_policies"
        }
        assert {(f.split(" ")[0], f.split(" ")[2]) for _, f in repeated} <= app_findings
        # Otherwise the ledger's only new findings are the trainer's new manual buttons, executable
        # by authenticated as the app's own use_session(uuid) / release_session(uuid) already
        # were, behind the same allow-list (docs/security.md).
        assert sorted(new - repeated) == [
            ("authenticated_security_definer_function_executable",
             "public.release_session(p_purchase_id uuid, p_reason text)"),
            ("authenticated_security_definer_function_executable",
             "public.use_session(p_purchase_id uuid, p_reason text)"),
        ]  # fmt: skip
        # Hardened in place: the app's buttons set a search path now and anon may no longer call them.
        assert not {
            f
            for f in before - after
            if not f[1].startswith(("public.use_session(", "public.release_session("))
        }
        assert ("function_search_path_mutable", "public.use_session(p_purchase_id uuid)") not in after
        assert (
            "anon_security_definer_function_executable",
            "public.use_session(p_purchase_id uuid)",
        ) not in after
        # Were a project to expose the ledger's schema or pgmq_public through the API, nothing of
        # the ledger's would be readable or callable there either.
        assert _lints(dsn, exposed=[*EXPOSED, "session_ledger", "pgmq_public"]) == after
        # And the checks see the ledger's objects: what a careless change would add is reported.
        with connect(dsn, purpose="tests") as conn:
            conn.execute("CREATE FUNCTION session_ledger.careless() RETURNS int LANGUAGE sql AS 'SELECT 1'")
            conn.execute("GRANT SELECT ON session_ledger.charges TO authenticated")
            conn.execute("ALTER TABLE pgmq.q_booking_events DISABLE ROW LEVEL SECURITY")
            conn.execute("GRANT USAGE ON SCHEMA pgmq TO anon")
            conn.execute("GRANT SELECT ON pgmq.q_booking_events TO anon")
        assert _lints(dsn, exposed=[*EXPOSED, "pgmq_public"]) - after == {
            ("function_search_path_mutable", "session_ledger.careless()"),
            ("pg_graphql_authenticated_table_exposed", "session_ledger.charges"),
            ("insecure_queue_exposed_in_api", "pgmq.q_booking_events"),
        }
    finally:
        supabase.drop_app_database(supabase_cluster, name)
