"""Supabase's database linter (splinter) finds no new security issue once the ledger is installed.

The checks below are splinter's security lints as its documentation defines them,
written here as catalog queries: SECURITY DEFINER functions executable by anon or
authenticated, functions without an empty search_path, views that are not
security_invoker but readable by the API roles, RLS disabled in public, RLS
enabled without a policy, policies on tables without RLS, queue tables readable by
the API roles without RLS, and extensions in public. They run on the real app's
schema before and after `listener migrate`; whatever the app already had is its own.
"""

from __future__ import annotations

import pytest

from listener.core.db import connect
from listener.testing import supabase
from listener.testing.supabase import SupabaseCluster

from support.supabase_fixtures import APP_SCHEMA

# The slow tier: its own Supabase-shaped PostgreSQL 15 cluster.
pytestmark = pytest.mark.slow

# Schemas the linter leaves alone (Supabase's own), and pgmq where it is an extension.
_SKIPPED = (
    "'auth', 'cron', 'extensions', 'graphql', 'graphql_public', 'information_schema', 'net', 'pgsodium',"
    " 'pgsodium_masks', 'pgbouncer', 'pg_catalog', 'pg_toast', 'pgtle', 'realtime', 'storage',"
    " 'supabase_functions', 'supabase_migrations', 'vault'"
)

LINTS = f"""
WITH ext AS (SELECT d.objid FROM pg_depend d WHERE d.deptype = 'e'),
fn AS (
    SELECT p.oid, n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' AS name,
           p.prosecdef, coalesce(p.proconfig, '{{}}') AS config, n.nspname
    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ({_SKIPPED}) AND n.nspname NOT LIKE 'pg_temp%'
      AND p.oid NOT IN (SELECT objid FROM ext)
      -- the SQL-only PGMQ stands in for Supabase's pgmq extension, whose functions the linter skips
      AND n.nspname <> 'pgmq'
),
rel AS (
    SELECT c.oid, n.nspname, n.nspname || '.' || c.relname AS name, c.relkind, c.relrowsecurity, c.reloptions
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ({_SKIPPED}) AND c.oid NOT IN (SELECT objid FROM ext)
)
SELECT 'anon_security_definer_function_executable' AS lint, name FROM fn
WHERE prosecdef AND has_function_privilege('anon', oid, 'EXECUTE')
UNION ALL
SELECT 'authenticated_security_definer_function_executable', name FROM fn
WHERE prosecdef AND has_function_privilege('authenticated', oid, 'EXECUTE')
UNION ALL
SELECT 'function_search_path_mutable', name FROM fn WHERE NOT config && ARRAY['search_path=""']
UNION ALL
SELECT 'security_definer_view', name FROM rel
WHERE relkind = 'v'
  AND (has_table_privilege('anon', oid, 'SELECT') OR has_table_privilege('authenticated', oid, 'SELECT'))
  AND NOT lower(coalesce(reloptions::text, '{{}}'))::text[]
          && ARRAY['security_invoker=1', 'security_invoker=true', 'security_invoker=yes', 'security_invoker=on']
UNION ALL
SELECT 'rls_disabled_in_public', name FROM rel WHERE nspname = 'public' AND relkind = 'r' AND NOT relrowsecurity
UNION ALL
SELECT 'rls_enabled_no_policy', name FROM rel
WHERE relkind = 'r' AND relrowsecurity AND nspname <> 'pgmq'
  AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = rel.oid)
UNION ALL
SELECT 'policy_exists_rls_disabled', name FROM rel
WHERE relkind = 'r' AND NOT relrowsecurity AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = rel.oid)
UNION ALL
SELECT 'insecure_queue_exposed_in_api', n.nspname || '.' || c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'pgmq' AND c.relkind = 'r' AND c.relname LIKE 'q\\_%' AND NOT c.relrowsecurity
  AND (has_table_privilege('anon', c.oid, 'SELECT') OR has_table_privilege('authenticated', c.oid, 'SELECT'))
UNION ALL
SELECT 'extension_in_public', e.extname FROM pg_extension e WHERE e.extnamespace = 'public'::regnamespace
"""


def _lints(dsn: str) -> set[tuple[str, str]]:
    with connect(dsn, purpose="tests") as conn:
        return {(r["lint"], r["name"]) for r in conn.execute(LINTS).fetchall()}


def test_the_ledger_adds_no_supabase_security_lint(supabase_cluster: SupabaseCluster) -> None:
    name = supabase.create_app_database(supabase_cluster, schema=[APP_SCHEMA], ledger=False)
    try:
        before = _lints(supabase_cluster.admin_dsn(name))
        # The app's own, as FACTS describe it: an unpinned SECURITY DEFINER use_session and a
        # view without security_invoker. The lints can fail.
        assert ("function_search_path_mutable", "public.use_session(p_purchase_id uuid)") in before
        assert ("security_definer_view", "public.upcoming_bookings") in before
        supabase.migrate_as_postgres(supabase_cluster, name)
        after = _lints(supabase_cluster.admin_dsn(name))
        new = after - before
        # Two kinds of finding are the ledger's by design, and nothing else is new:
        # - function_search_path_mutable: splinter asks for search_path '' exactly, which
        #   still searches the caller's pg_temp first for types and relations. Every
        #   ledger function pins `pg_catalog, pg_temp` instead, as PostgreSQL's manual
        #   prescribes for SECURITY DEFINER code (tests/db/test_side_doors.py).
        # - the trainer's new manual buttons, executable by authenticated as the app's own
        #   use_session(uuid) / release_session(uuid) already were, behind the same allow-list.
        pinned = {(lint, fn) for lint, fn in new if lint == "function_search_path_mutable"}
        with connect(supabase_cluster.admin_dsn(name), purpose="tests") as conn:
            configs = {
                r["fn"]: r["proconfig"]
                for r in conn.execute(
                    "SELECT n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid)"
                    " || ')' AS fn, p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
                )
            }
        assert pinned and all("search_path=pg_catalog, pg_temp" in configs[fn] for _, fn in pinned)
        assert sorted(new - pinned) == [
            ("authenticated_security_definer_function_executable",
             "public.release_session(p_purchase_id uuid, p_reason text)"),
            ("authenticated_security_definer_function_executable",
             "public.use_session(p_purchase_id uuid, p_reason text)"),
        ]  # fmt: skip
        # Hardened in place: the app's use_session, unpinned before, now pins pg_temp last.
        assert "search_path=pg_catalog, pg_temp" in configs["public.use_session(p_purchase_id uuid)"]
    finally:
        supabase.drop_app_database(supabase_cluster, name)
