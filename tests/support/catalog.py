"""Everything a ledger install is made of, read from the catalog, to compare two installs.

Tables, columns (types, defaults, identity, grants), constraints, indexes, storage
options, row-level security and policies, sequences, views, functions (their whole
definition: body, volatility, SECURITY DEFINER, SET options), triggers (and whether
enabled), comments, grants and owners; in the app's schema public, the ledger's
session_ledger, and the ledger's own queues in pgmq (PGMQ's own objects are PGMQ's).
"""

from __future__ import annotations

from listener.core.db import Conn

# (kind, name, definition) rows; names are stable across databases (no oids).
_SNAPSHOT = """
WITH ns AS (SELECT oid, nspname FROM pg_namespace WHERE nspname IN ('public', 'session_ledger', 'pgmq')),
rel AS (
    SELECT c.* FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
    WHERE ns.nspname <> 'pgmq' OR c.relname ~ '^(q|a)_booking_events(_dlq)?($|_)'
       OR c.relname ~ '^archived_at_idx_booking_events(_dlq)?$'
)
SELECT 'schema' AS kind, n.nspname::text AS name,
       pg_get_userbyid(n.nspowner) || ' ' || coalesce(n.nspacl::text, '') AS def
FROM pg_namespace n WHERE n.oid IN (SELECT oid FROM ns)
UNION ALL
SELECT 'relation', r.oid::regclass::text,
       concat_ws(' ', r.relkind::text, r.relpersistence::text, pg_get_userbyid(r.relowner), r.relacl::text,
                 'rls=' || r.relrowsecurity, 'force=' || r.relforcerowsecurity, r.reloptions::text,
                 'replica=' || r.relreplident::text)
FROM rel r WHERE r.relkind IN ('r', 'p', 'v', 'm', 'S', 'i')
UNION ALL
SELECT 'column', a.attrelid::regclass::text || '.' || a.attname,
       concat_ws(' ', format_type(a.atttypid, a.atttypmod), 'notnull=' || a.attnotnull,
                 'default=' || pg_get_expr(d.adbin, d.adrelid), 'identity=' || a.attidentity::text,
                 'generated=' || a.attgenerated::text, 'collation=' || a.attcollation::regcollation::text,
                 'acl=' || a.attacl::text, 'position=' || (SELECT count(*) FROM pg_attribute b
                     WHERE b.attrelid = a.attrelid AND b.attnum > 0 AND NOT b.attisdropped AND b.attnum <= a.attnum))
FROM pg_attribute a JOIN rel r ON r.oid = a.attrelid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND r.relkind IN ('r', 'p', 'v', 'm')
UNION ALL
SELECT 'constraint', coalesce(k.conrelid::regclass::text, k.contypid::regtype::text) || '.' || k.conname,
       pg_get_constraintdef(k.oid)
FROM pg_constraint k
WHERE k.conrelid IN (SELECT oid FROM rel) OR (k.contypid <> 0 AND k.connamespace IN (SELECT oid FROM ns))
UNION ALL
SELECT 'index', i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
FROM pg_index i WHERE i.indrelid IN (SELECT oid FROM rel)
UNION ALL
SELECT 'sequence', s.seqrelid::regclass::text,
       concat_ws(' ', s.seqtypid::regtype::text, s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle)
FROM pg_sequence s WHERE s.seqrelid IN (SELECT oid FROM rel)
UNION ALL
SELECT 'view', v.oid::regclass::text, pg_get_viewdef(v.oid)
FROM rel v WHERE v.relkind IN ('v', 'm')
UNION ALL
SELECT 'policy', p.polrelid::regclass::text || '.' || p.polname,
       concat_ws(' ', p.polcmd::text, p.polpermissive,
                 (SELECT array_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE r::regrole::text END ORDER BY 1)
                  FROM unnest(p.polroles) AS r)::text,
                 pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
FROM pg_policy p WHERE p.polrelid IN (SELECT oid FROM rel)
UNION ALL
SELECT 'function', p.oid::regprocedure::text,
       concat_ws(' ', pg_get_functiondef(p.oid), 'owner=' || pg_get_userbyid(p.proowner), 'acl=' || p.proacl::text)
FROM pg_proc p
WHERE p.pronamespace IN (SELECT oid FROM ns WHERE nspname <> 'pgmq') AND p.prokind IN ('f', 'p', 'w')
UNION ALL
SELECT 'trigger', t.tgrelid::regclass::text || '.' || t.tgname, pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
FROM pg_trigger t WHERE NOT t.tgisinternal AND t.tgrelid IN (SELECT oid FROM rel)
UNION ALL
SELECT 'type', t.oid::regtype::text, concat_ws(' ', t.typtype::text, pg_get_userbyid(t.typowner), t.typacl::text,
       (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid))
FROM pg_type t WHERE t.typnamespace IN (SELECT oid FROM ns WHERE nspname <> 'pgmq') AND t.typtype IN ('e', 'd', 'c')
  AND (t.typrelid = 0 OR t.typrelid IN (SELECT oid FROM rel WHERE relkind = 'c'))
UNION ALL
SELECT 'comment', d.classoid::regclass::text || ' ' || CASE d.classoid
           WHEN 'pg_proc'::regclass THEN d.objoid::regprocedure::text
           WHEN 'pg_class'::regclass THEN d.objoid::regclass::text || '.' || d.objsubid
           WHEN 'pg_namespace'::regclass THEN (SELECT nspname FROM pg_namespace WHERE oid = d.objoid)::text
           ELSE d.objoid::text END,
       d.description
FROM pg_description d
WHERE (d.classoid = 'pg_proc'::regclass AND d.objoid IN
           (SELECT oid FROM pg_proc WHERE pronamespace IN (SELECT oid FROM ns WHERE nspname <> 'pgmq')))
   OR (d.classoid = 'pg_class'::regclass AND d.objoid IN (SELECT oid FROM rel))
   OR (d.classoid = 'pg_namespace'::regclass AND d.objoid IN (SELECT oid FROM ns))
UNION ALL
SELECT 'queue', m.queue_name::text, concat_ws(' ', m.is_partitioned, m.is_unlogged)
FROM pgmq.meta m WHERE m.queue_name IN ('booking_events', 'booking_events_dlq')
ORDER BY 1, 2, 3
"""


def snapshot(conn: Conn) -> list[tuple[str, str, str]]:
    """The install's catalog as sorted (kind, name, definition) rows."""
    return [(r["kind"], r["name"], r["def"] or "") for r in conn.execute(_SNAPSHOT).fetchall()]


def differences(a: list[tuple[str, str, str]], b: list[tuple[str, str, str]]) -> list[str]:
    """Each object one install has and the other lacks, or defines otherwise: one line each."""
    left = {(k, n): d for k, n, d in a}
    right = {(k, n): d for k, n, d in b}
    out = []
    for key in sorted(left.keys() | right.keys()):
        if key not in right:
            out.append(f"only in the first: {key[0]} {key[1]}")
        elif key not in left:
            out.append(f"only in the second: {key[0]} {key[1]}")
        elif left[key] != right[key]:
            out.append(f"{key[0]} {key[1]} differs:\n  {left[key]!r}\n  {right[key]!r}")
    return out


def assert_same(a: list[tuple[str, str, str]], b: list[tuple[str, str, str]], *, what: str) -> None:
    """Fail, naming every difference, unless both installs are made of the same objects."""
    found = differences(a, b)
    assert not found, f"{what}: {len(found)} differences\n" + "\n".join(found)
