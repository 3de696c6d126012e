"""`listener map`: a mapping proposed from the catalog, as TOML for the user to confirm.

It reads the tables, their columns, CHECK constraints and foreign keys, the functions of one
argument and the roles, and guesses: the packs are a table with an integer balance (used and
total, or what remains), the bookings a table with a status and a start time (its own, or
its session's) that points at the packs or shares their client. Each guessed value is
followed by a `# guess: ...` comment saying why. Nothing is written to the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from listener.core.db import Conn
from listener.core.sql_files import query
from listener.mapping import model

KEY_TYPES = ("uuid", "integer", "bigint", "text")
INTEGERS = ("smallint", "integer", "bigint")
TIMESTAMPTZ = "timestamp with time zone"

# starts_at, start_time, and a thing's own start: lesson_start, class_starts_at, session_start_time
_START = re.compile(
    r"^(start|starts|begin|begins|scheduled)(_at|_time|s_at|_on)?$|^(start|begin)s?_(at|time)$"
    r"|^[a-z0-9]+_(start|begin)s?(_at|_time)?$"
)
_END = re.compile(
    r"^(end|ends|finish|finishes)(_at|_time|s_at|_on)?$|^(end|finish)s?_(at|time)$"
    r"|^[a-z0-9]+_(end|finish)(s|es)?(_at|_time)?$"
)
_EXPIRES = re.compile(r"^(expires|expiry|expiration|expire|valid_until|valid_to)(_at|_on|_date)?$")
_REMAINING = re.compile(r"(^|_)(remaining|balance|left)$|^credits?(_balance|_remaining|_left)?$")
_USED = re.compile(r"^(?P<stem>[a-z0-9_]*?)_?(used|taken|consumed|spent)$")
# what a pack holds, beside its used count with the same stem: sessions_total, lessons_bought
_TOTAL_WORDS = ("total", "bought", "purchased", "granted", "included", "sold")
# the status column: status, else state or a column named for one, text or an enum
_STATUS = re.compile(r"^(status|state)$|_(status|state)$")
_AMOUNT = re.compile(r"credits?_(used|cost|spent|charged)|^(cost|price)_credits?$|^sessions_cost$")
_ORG = re.compile(
    r"^(org|organisation|organization|tenant|team|workspace|company|studio|business"
    r"|branch|school|location|site|venue|clinic|academy)_id$"
)
_CLIENT = re.compile(r"^(client|user|member|customer|account|student|person|profile|owner)_id$")
_CONSUMING_FIRST = (
    "completed",
    "attended",
    "taught",
    "delivered",
    "held",
    "used",
    "done",
    "fulfilled",
    "checked_in",
)
# statuses that cost a session in many apps though nobody came: proposed beside the first
_CHARGED_ABSENCE = re.compile(r"no_?show|missed|late_cancel")
_UNUSABLE_WORDS = r"(expired|cancelled|canceled|revoked|disabled|voided|refunded|frozen)"
_UNUSABLE_FLAGS = re.compile(rf"^(is_)?{_UNUSABLE_WORDS}$")
_UNUSABLE_TIMES = re.compile(rf"^{_UNUSABLE_WORDS}_(at|on)$")
_UNLIMITED = re.compile(r"^(is_|has_)?unlimited$")
_CHECK_VALUE = re.compile(r"'((?:[^']|'')*)'::")
_SYSTEM_ROLES = frozenset({"anon", "authenticated", "service_role", "authenticator", "postgres"})


@dataclass
class Table:
    """One table of the app, as `listener map` reads it."""

    name: str
    columns: dict[str, str]
    unique: set[str]
    generated: set[str]
    checks: list[str]
    enums: dict[str, list[str]]

    def values(self, column: str) -> list[str]:
        """The values a column may hold, from its enum or a CHECK constraint naming it."""
        if column in self.enums:
            return self.enums[column]
        for check in self.checks:
            if re.search(rf"\b{re.escape(column)}\b", check):
                return [v.replace("''", "'") for v in _CHECK_VALUE.findall(check)]
        return []

    def of(self, pattern: re.Pattern[str], types: tuple[str, ...]) -> str | None:
        """The first column whose name matches and whose type is one of these."""
        return next(
            (
                c
                for c, t in self.columns.items()
                if pattern.search(c) and t in types and c not in self.generated
            ),
            None,
        )

    @property
    def singular(self) -> str:
        rel = self.name.partition(".")[2]
        return rel[:-1] if rel.endswith("s") else rel


@dataclass
class Catalog:
    tables: dict[str, Table]
    # (from table, from column) -> (to table, to column)
    fks: dict[tuple[str, str], tuple[str, str]]
    functions: list[dict[str, str]]
    roles: list[str]
    supabase: bool
    # the roles that may update both the chosen bookings and packs (read once they are chosen)
    writers: list[str] = field(default_factory=list)


def read_catalog(conn: Conn) -> Catalog:
    """What `listener map` guesses from."""
    tables = {}
    for r in conn.execute(query("mapping_tables")):
        name = f"{r['schema']}.{r['name']}"
        enums: dict[str, list[str]] = {}
        for item in r["enum_labels"]:
            col, _, label = item.partition(":")
            enums.setdefault(col, []).append(label)
        types = [t.removesuffix(" enum") for t in r["types"]]
        tables[name] = Table(
            name,
            dict(zip(r["columns"], types, strict=True)),
            set(r["unique_columns"]),
            set(r["generated"]),
            list(r["checks"]),
            enums,
        )
    fks = {
        (r["from_table"], r["from_column"]): (r["to_table"], r["to_column"])
        for r in conn.execute(query("mapping_foreign_keys"))
    }
    functions = [dict(r) for r in conn.execute(query("mapping_functions_of_one_argument"))]
    row = conn.execute(query("mapping_roles")).fetchone()
    assert row is not None
    roles = list(row["roles"])
    supabase = bool(row["has_auth_uid"]) and {"anon", "authenticated", "service_role"} <= set(roles)
    return Catalog(tables, fks, functions, roles, supabase)


@dataclass
class _Out:
    """The TOML being written: sections of `key = value  # guess: why` lines."""

    lines: list[str] = field(default_factory=list)

    def section(self, name: str) -> None:
        if self.lines:
            self.lines.append("")
        self.lines.append(f"[{name}]")

    def put(self, key: str, value: object, why: str | None = None) -> None:
        line = f"{key} = {_toml(value)}"
        self.lines.append(f"{line}  # guess: {why}" if why else line)

    def note(self, text: str) -> None:
        self.lines.append(f"# {text}")


def _toml(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _key_column(table: Table) -> str:
    if "id" in table.columns:
        return "id"
    return next(iter(sorted(table.unique)), "id")


def _balance(table: Table) -> tuple[dict[str, str], str] | None:
    """The pack's balance columns and why: used and total with one stem, or what remains."""
    for col, typ in table.columns.items():
        m = _USED.match(col)
        if m and typ in INTEGERS and col not in table.generated:
            stem = m["stem"]
            names = [f"{stem}_{w}" for w in _TOTAL_WORDS] + [f"total_{stem}", "total"]
            total = next((c for c in names if table.columns.get(c) in INTEGERS), None)
            if total:
                return {"used": col, "total": total}, f"integer {col} and {total}: a balance counted up"
    remaining = table.of(_REMAINING, INTEGERS)
    if remaining:
        return {"remaining": remaining}, f"integer {remaining}: a balance counted down"
    return None


def _status(table: Table) -> str | None:
    """The status column: `status`, else one named for a state, text or an enum."""
    candidates = [
        c
        for c, t in table.columns.items()
        if _STATUS.search(c) and (c in table.enums or t in ("text", "character varying"))
    ]
    return "status" if "status" in candidates else next(iter(candidates), None)


def _start(table: Table, catalog: Catalog) -> tuple[dict[str, str] | None, str | None]:
    """The booking's own start and end, or None and the column naming a session row that has them."""
    start = table.of(_START, (TIMESTAMPTZ, "timestamp without time zone"))
    if start:
        return {"start": start, **({"end": e} if (e := table.of(_END, (TIMESTAMPTZ,))) else {})}, None
    for col in table.columns:
        target = catalog.fks.get((table.name, col))
        if target and target[0] in catalog.tables and catalog.tables[target[0]].of(_START, (TIMESTAMPTZ,)):
            return None, col
    return None, None


@dataclass
class _Pair:
    booking: Table
    pack: Table
    find: str
    link: str
    score: int


def _pairs(catalog: Catalog) -> list[_Pair]:
    found = []
    packs = [t for t in catalog.tables.values() if _balance(t)]
    for b in catalog.tables.values():
        if _status(b) is None:
            continue
        own, session = _start(b, catalog)
        if own is None and session is None:
            continue
        for p in packs:
            if p is b:
                continue
            link = next((c for c in b.columns if catalog.fks.get((b.name, c), ("", ""))[0] == p.name), None)
            if link:
                found.append(_Pair(b, p, "column", link, 2))
                continue
            shared = [
                c for c in sorted(p.unique) if c != _key_column(p) and c in b.columns and _CLIENT.match(c)
            ]
            if shared:
                found.append(_Pair(b, p, "by_client", shared[0], 1))
    return sorted(found, key=lambda x: -x.score)


def _consuming(values: list[str]) -> tuple[list[str], str]:
    if "completed" in values:
        return ["completed"], "'completed' is one of the status values; a booking completed uses its session"
    absences = [v for v in values if _CHARGED_ABSENCE.search(v)]
    if "attended" in values:
        return (
            ["attended", *absences],
            "attendance is recorded: an attended booking (and a no-show, if they cost) uses its session",
        )
    for v in _CONSUMING_FIRST:
        if v in values:
            also = f" (and {', '.join(absences)}, if those cost a session)" if absences else ""
            return [v, *absences], f"'{v}' is one of the status values{also}"
    if values:
        return ["completed"], "no status value reads as a session used: name the ones that use a session"
    return ["completed"], "no status values found: name the statuses that use a session"


NOTHING_FOUND = (
    "No bookings table found (a status column and a start time) pointing at a packs table "
    "(an integer balance): write the mapping by hand from docs/mapping.md."
)


def propose(conn: Conn) -> str:
    """A mapping for the connected database, as TOML with a `# guess:` comment on each guess."""
    catalog = read_catalog(conn)
    pairs = _pairs(catalog)
    if pairs:
        row = conn.execute(
            query("mapping_writer_roles"), {"bookings": pairs[0].booking.name, "packs": pairs[0].pack.name}
        ).fetchone()
        assert row is not None
        catalog.writers = list(row["roles"])
    return render(catalog)


def render(catalog: Catalog) -> str:
    """The proposed mapping's TOML for what the catalog holds."""
    pairs = _pairs(catalog)
    out = _Out()
    out.note("Proposed by `listener map`: check each guess, then `listener migrate --mapping FILE`.")
    out.note("Every key is explained in docs/mapping.md.")
    if not pairs:
        out.note(NOTHING_FOUND)
        out.note(
            "A packs table is one with an integer balance named *_used (or *_taken) beside *_total "
            "(or *_bought), *_remaining, *_balance or credits*; a bookings table one with a status "
            "(status, state or *_status: text or an enum) and a timestamptz start (starts_at, "
            "start_time, *_start, or its session's) that references the packs or shares their unique "
            "client column."
        )
        return "\n".join(out.lines) + "\n"
    pair = pairs[0]
    b, p = pair.booking, pair.pack
    own, session_key = _start(b, catalog)
    status = _status(b)
    assert status is not None
    statuses = b.values(status)

    out.section("booking")
    link = (
        f"{pair.link} references {p.name}"
        if pair.find == "column"
        else f"its {pair.link} is unique in {p.name}"
    )
    out.put("table", b.name, f"a status column and a start time, and {link}")
    out.put("id", _key_column(b))
    out.put("status", status, None if status == "status" else f"{status} names the booking's state")
    consuming, why = _consuming(statuses)
    out.put("consuming_statuses", consuming, why + (f" (values: {', '.join(statuses)})" if statuses else ""))
    method = next((c for c in b.columns if c.endswith("payment_method") and "credits" in b.values(c)), None)
    if method:
        out.put(
            "consumes_when",
            f"{{row}}.{method} = 'credits'",
            f"{method} may be 'credits': only those use the balance",
        )
    if own is not None:
        out.put("start", own["start"], "a timestamptz named as a start")
        if "end" in own:
            out.put("end", own["end"], "a timestamptz named as an end")
    client = _client(b, p, pair)
    if client:
        out.put("client", client, "a client's key on both tables")
    org = next((c for c in b.columns if _ORG.match(c) and c in p.columns), None)
    if org:
        out.put("org", org, "an organisation's key on both tables")
    if session_key is not None:
        s_table, s_id = catalog.fks[(b.name, session_key)]
        s = catalog.tables[s_table]
        out.section("booking.session")
        out.put("table", s_table, f"{b.name}.{session_key} references it, and it has the session's times")
        out.put("key", session_key)
        out.put("id", s_id)
        s_start = s.of(_START, (TIMESTAMPTZ,))
        out.put("start", s_start, "a timestamptz named as a start")
        s_end = s.of(_END, (TIMESTAMPTZ,))
        if s_end:
            out.put("end", s_end, "a timestamptz named as an end")

    out.section("pack")
    balance = _balance(p)
    assert balance is not None
    out.put("table", p.name, balance[1])
    out.put("id", _key_column(p))
    out.put(
        "find",
        pair.find,
        "a foreign key from the bookings"
        if pair.find == "column"
        else f"no foreign key, but {pair.link} is unique: one pack per client",
    )
    if pair.find == "column":
        out.put("column", pair.link, f"{b.name}.{pair.link} references {p.name}")
    for key, col in balance[0].items():
        out.put(key, col, balance[1])
    amount = b.of(_AMOUNT, INTEGERS)
    if amount:
        out.put("amount_column", amount, f"integer {b.name}.{amount}: what a booking costs")
    expires = p.of(_EXPIRES, (TIMESTAMPTZ,))
    if expires:
        out.put("expires", expires, "a timestamptz named as an expiry")
    _unlimited(out, p)
    _unusable(out, p)
    if client and client in p.columns:
        out.put("client", client, "a client's key on both tables")
    if org:
        out.put("org", org, "an organisation's key on both tables")

    _access(out, catalog, b, org, p)
    _legacy(out, catalog, p, pair, amount)
    if "completed" in consuming and "confirmed" in statuses and (own is None or "end" in own):
        out.section("completion")
        out.put("from_status", "confirmed", "past confirmed bookings become completed (a cron)")
        out.put("to_status", "completed", "past confirmed bookings become completed (a cron)")
    return "\n".join(out.lines) + "\n"


def _client(b: Table, p: Table, pair: _Pair) -> str | None:
    if pair.find == "by_client":
        return pair.link
    shared = [c for c in b.columns if c in p.columns and _CLIENT.match(c)]
    return shared[0] if shared else None


def _unlimited(out: _Out, p: Table) -> None:
    flag = next((c for c, t in p.columns.items() if t == "boolean" and _UNLIMITED.match(c)), None)
    if flag:
        out.put("unlimited_when", f"{{row}}.{flag}", f"boolean {flag}: its bookings cost nothing")
        return
    plan = next((c for c in p.columns if "unlimited" in p.values(c)), None)
    if plan:
        out.put(
            "unlimited_when",
            f"{{row}}.{plan} = 'unlimited'",
            f"{plan} may be 'unlimited': its bookings cost nothing",
        )


def _unusable(out: _Out, p: Table) -> None:
    status = next((c for c in p.columns if c == "payment_status"), None)
    if status:
        bad = [v for v in ("refunded", "failed") if v in p.values(status)] or ["refunded", "failed"]
        listed = ", ".join(f"'{v}'" for v in bad)
        out.put(
            "unusable_when",
            f"{{row}}.{status} IN ({listed})",
            f"a pack whose payment is {' or '.join(bad)} cannot pay",
        )
        out.put(
            "unusable_reason", f"'pack payment ' || {{row}}.{status}", "the reason a refused booking records"
        )
        return
    noun = p.singular.replace("_", " ")
    flag = next((c for c, t in p.columns.items() if t == "boolean" and _UNUSABLE_FLAGS.match(c)), None)
    if flag:
        word = flag.removeprefix("is_")
        out.put("unusable_when", f"{{row}}.{flag}", f"boolean {flag}: such a pack cannot pay")
        out.put("unusable_reason", f"'{noun} {word}'", "the reason a refused booking records")
        return
    stamp = next((c for c, t in p.columns.items() if t == TIMESTAMPTZ and _UNUSABLE_TIMES.match(c)), None)
    if stamp:
        word = stamp.rpartition("_")[0]
        out.put("unusable_when", f"{{row}}.{stamp} IS NOT NULL", f"{stamp} set: such a pack cannot pay")
        out.put("unusable_reason", f"'{noun} {word}'", "the reason a refused booking records")


def _access(out: _Out, catalog: Catalog, b: Table, org: str | None, p: Table) -> None:
    out.section("access")
    if catalog.supabase:
        out.put("mode", "supabase", "Supabase's roles and auth.uid() are here")
        out.put("api_roles", ["anon", "authenticated"], "Supabase's API roles")
        out.put("trusted_roles", ["service_role"], "Supabase's server-side role")
        member = _membership(catalog, b, org, p)
        if member:
            out.put(
                "membership_function", member, "(the organisation's key) -> boolean, named for membership"
            )
        return
    out.put("mode", "trusted_writers", "no Supabase here: the app's server is the one writer")
    out.put("api_roles", [])
    writers = [r for r in catalog.writers if r not in _SYSTEM_ROLES and not r.startswith("session_ledger")]
    if writers:
        out.put("trusted_roles", writers, f"the roles that may update both {b.name} and {p.name}")
    else:
        _trusted_by_name(out, catalog, b)
    member = _membership(catalog, b, org, p)
    if member:
        out.note(
            f"{member} looks like a membership check: for signed-in users (members of role "
            'authenticated) to move their organisation\'s sessions, use mode = "supabase", '
            f'membership_function = "{member}" and their role in api_roles.'
        )


def _membership(catalog: Catalog, b: Table, org: str | None, p: Table) -> str | None:
    """A function (org key) -> boolean named for membership or management, if there is one."""
    org_type = b.columns.get(org or "") or p.columns.get(org or "")
    return next(
        (
            f"{f['schema']}.{f['name']}"
            for f in catalog.functions
            if org_type
            and f["argument"] == org_type
            and f["returns"] == "boolean"
            and re.search(r"member|manage|^can_|^may_", f["name"])
        ),
        None,
    )


def _trusted_by_name(out: _Out, catalog: Catalog, b: Table) -> None:
    schema = b.name.partition(".")[0]
    candidates = [
        r
        for r in catalog.roles
        if r not in _SYSTEM_ROLES
        and not r.startswith("session_ledger")
        and (
            (schema != "public" and r.startswith(f"{schema}_")) or re.search(r"(server|backend|app|api)$", r)
        )
    ]
    out.put(
        "trusted_roles",
        candidates or ["app_server"],
        "roles named for the app's server"
        if candidates
        else "no role found: name the role the app's server writes as",
    )


def _legacy(out: _Out, catalog: Catalog, p: Table, pair: _Pair, amount: str | None) -> None:
    if pair.find != "column" or amount is not None:
        return
    key_type = p.columns.get(_key_column(p))

    def named(returns: str, words: tuple[str, ...]) -> str | None:
        return next(
            (
                f"{f['schema']}.{f['name']}"
                for f in catalog.functions
                if f["argument"] == key_type
                and f["returns"] == returns
                and any(w in f["name"] for w in words)
            ),
            None,
        )

    use = named("boolean", ("use_", "deduct", "consume"))
    release = named("integer", ("release", "reinstate", "refund"))
    if use and release:
        out.section("legacy")
        out.put(
            "use", use, f"({key_type}) -> boolean: the app's own deduction, absorbed while old code calls it"
        )
        out.put("release", release, f"({key_type}) -> integer: the app's own give-back")


def check_parses(text: str) -> model.Mapping:
    """The proposal parsed, as `listener migrate --mapping` would (MappingError if a guess is invalid)."""
    return model.parse(text, source="proposed mapping")
