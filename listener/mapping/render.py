"""The SQL the mapping renders: the repeatable files are Jinja templates over `app`.

Templates see one object, `app` (AppSQL below). Everything in it is SQL text already
quoted: identifiers through psycopg's quoting, values as literals, predicates with
their row alias put in. The canonical rows (`app.bookings`, `app.packs`, and the same
over a trigger's transition tables) carry the ledger's own column names whatever the
app calls them, so the ledger's judgement is written once:

  bookings: id, status, purchase_id, client_id, org_id, start_time, end_time, amount, consumes
  packs:    id, client_id, org_id, sessions_total, sessions_used, expires_at, unusable, unlimited

For a pack counted down (`remaining`), sessions_total is what remains and sessions_used
is 0, so "available = total - used" holds for both shapes. The projections are plain
subqueries, which the planner pulls up into the statement: reading through them costs
nothing over naming the columns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import jinja2
from psycopg import sql

from .model import Mapping

KeyType = str  # 'uuid' | 'integer' | 'bigint' | 'text', read from the catalog at migrate


@dataclass(frozen=True)
class Keys:
    """The SQL types of the app's keys, as the catalog holds them."""

    booking: KeyType = "uuid"
    pack: KeyType = "uuid"
    client: KeyType = "uuid"
    org: KeyType = "uuid"
    amount: str = "integer"


# PostgreSQL's reserved keywords (and those reserved as function or type names): a column
# named one of these is quoted. `SELECT word FROM pg_get_keywords() WHERE catcode IN ('R', 'T')`.
_RESERVED = frozenset(
    [
        "all",
        "analyse",
        "analyze",
        "and",
        "any",
        "array",
        "as",
        "asc",
        "asymmetric",
        "authorization",
        "binary",
        "both",
        "case",
        "cast",
        "check",
        "collate",
        "collation",
        "column",
        "concurrently",
        "constraint",
        "create",
        "cross",
        "current_catalog",
        "current_date",
        "current_role",
        "current_schema",
        "current_time",
        "current_timestamp",
        "current_user",
        "default",
        "deferrable",
        "desc",
        "distinct",
        "do",
        "else",
        "end",
        "except",
        "false",
        "fetch",
        "for",
        "foreign",
        "freeze",
        "from",
        "full",
        "grant",
        "group",
        "having",
        "ilike",
        "in",
        "initially",
        "inner",
        "intersect",
        "into",
        "is",
        "isnull",
        "join",
        "lateral",
        "leading",
        "left",
        "like",
        "limit",
        "localtime",
        "localtimestamp",
        "natural",
        "not",
        "notnull",
        "null",
        "offset",
        "on",
        "only",
        "or",
        "order",
        "outer",
        "overlaps",
        "placing",
        "primary",
        "references",
        "returning",
        "right",
        "select",
        "session_user",
        "similar",
        "some",
        "symmetric",
        "system_user",
        "table",
        "tablesample",
        "then",
        "to",
        "trailing",
        "true",
        "union",
        "unique",
        "user",
        "using",
        "variadic",
        "verbose",
        "when",
        "where",
        "window",
        "with",
    ]
)
_PLAIN = re.compile(r"^[a-z_][a-z0-9_]*$")


def ident(name: str) -> str:
    """One identifier, quoted only where it must be (`bookings`, `"Bookings"`, `"end"`)."""
    if _PLAIN.match(name) and name not in _RESERVED:
        return name
    return sql.Identifier(name).as_string(None)


def qualified(name: str) -> str:
    """schema.name, each part quoted where it must be."""
    schema, _, rel = name.partition(".")
    return f"{ident(schema)}.{ident(rel)}"


def literal(value: object) -> str:
    """A value as an SQL literal."""
    return sql.Literal(value).as_string(None)


def text_array(values: tuple[str, ...]) -> str:
    """ARRAY['a', 'b']::text[]."""
    return "ARRAY[" + ", ".join(literal(v) for v in values) + "]::text[]"


def fragment(text: str, alias: str) -> str:
    """A mapping's predicate or expression with its row alias put in, parenthesised."""
    return "(" + text.replace("{row}", alias) + ")"


@dataclass(frozen=True)
class AppSQL:
    """What the templates render from: the mapping, as SQL."""

    mapping: Mapping
    keys: Keys

    # --- the tables themselves ---------------------------------------------------------
    @cached_property
    def bookings_table(self) -> str:
        """The app's bookings table, qualified."""
        return qualified(self.mapping.booking.table)

    @cached_property
    def packs_table(self) -> str:
        """The app's packs table, qualified."""
        return qualified(self.mapping.pack.table)

    @cached_property
    def booking_id(self) -> str:
        """The bookings table's key column."""
        return ident(self.mapping.booking.id)

    @cached_property
    def booking_status(self) -> str:
        """The bookings table's status column."""
        return ident(self.mapping.booking.status)

    @cached_property
    def pack_id(self) -> str:
        """The packs table's key column."""
        return ident(self.mapping.pack.id)

    # --- canonical rows ----------------------------------------------------------------
    def booking_field(self, alias: str, field: str) -> str:
        """One canonical booking field as an expression over an app booking row `alias`."""
        b, p = self.mapping.booking, self.mapping.pack
        r = alias
        match field:
            case "id":
                return f"{r}.{ident(b.id)}"
            case "status":
                # text whatever the app's type: the ledger compares it with text[] (consuming
                # statuses), which an enum has no operator for; a no-op on text.
                return f"{r}.{ident(b.status)}::text"
            case "purchase_id":
                if p.find == "column":
                    assert p.column is not None
                    return f"{r}.{ident(p.column)}"
                assert p.client is not None
                assert b.client is not None
                return (
                    f"(SELECT w.{ident(p.id)} FROM {self.packs_table} w "
                    f"WHERE w.{ident(p.client)} = {r}.{ident(b.client)})"
                )
            case "client_id":
                return f"{r}.{ident(b.client)}" if b.client else f"NULL::{self.keys.client}"
            case "org_id":
                return f"{r}.{ident(b.org)}" if b.org else f"NULL::{self.keys.org}"
            case "start_time" | "end_time":
                column = b.start if field == "start_time" else b.end
                if b.session is None:
                    return f"{r}.{ident(column)}" if column else "NULL::timestamptz"
                s = b.session
                column = s.start if field == "start_time" else s.end
                if column is None:
                    return "NULL::timestamptz"
                return (
                    f"(SELECT s.{ident(column)} FROM {qualified(s.table)} s "
                    f"WHERE s.{ident(s.id)} = {r}.{ident(s.key)})"
                )
            case "amount":
                return f"{r}.{ident(p.amount_column)}::integer" if p.amount_column else "1"
            case "consumes":
                return fragment(b.consumes_when, r) if b.consumes_when else "true"
        raise KeyError(field)

    BOOKING_FIELDS = (
        "id",
        "status",
        "purchase_id",
        "client_id",
        "org_id",
        "start_time",
        "end_time",
        "amount",
        "consumes",
    )

    def booking_rows(self, source: str) -> str:
        """A FROM item of canonical bookings over `source` (a table, or a trigger's transition table)."""
        cols = ", ".join(f"{self.booking_field('r', f)} AS {f}" for f in self.BOOKING_FIELDS)
        return f"(SELECT {cols} FROM {source} r)"

    @cached_property
    def bookings(self) -> str:
        """A FROM item of canonical bookings over the app's table."""
        return self.booking_rows(self.bookings_table)

    def pack_field(self, alias: str, field: str) -> str:
        """One canonical pack field as an expression over an app pack row `alias`."""
        p, r = self.mapping.pack, alias
        match field:
            case "id":
                return f"{r}.{ident(p.id)}"
            case "client_id":
                return f"{r}.{ident(p.client)}" if p.client else f"NULL::{self.keys.client}"
            case "org_id":
                return f"{r}.{ident(p.org)}" if p.org else f"NULL::{self.keys.org}"
            case "sessions_total":
                col = p.remaining if p.remaining else p.total
                assert col is not None
                # integer whatever the app's integer type (as the amount): the ledger's functions
                # take integer balances, and a bigint or smallint column would match none of them
                return f"{r}.{ident(col)}::integer"
            case "sessions_used":
                return "0" if p.remaining else f"{r}.{ident(p.used or '')}::integer"
            case "expires_at":
                return f"{r}.{ident(p.expires)}" if p.expires else "NULL::timestamptz"
            case "unusable":
                if p.unusable_when is None or p.unusable_reason is None:
                    return "NULL::text"
                return (
                    f"CASE WHEN {fragment(p.unusable_when, r)} "
                    f"THEN {fragment(p.unusable_reason, r)}::text END"
                )
            case "unlimited":
                return f"coalesce({fragment(p.unlimited_when, r)}, false)" if p.unlimited_when else "false"
        raise KeyError(field)

    PACK_FIELDS = (
        "id",
        "client_id",
        "org_id",
        "sessions_total",
        "sessions_used",
        "expires_at",
        "unusable",
        "unlimited",
    )

    def pack_rows(self, source: str) -> str:
        """A FROM item of canonical packs over `source` (a table, or a trigger's transition table)."""
        cols = ", ".join(f"{self.pack_field('r', f)} AS {f}" for f in self.PACK_FIELDS)
        return f"(SELECT {cols} FROM {source} r)"

    @cached_property
    def packs(self) -> str:
        """A FROM item of canonical packs over the app's table."""
        return self.pack_rows(self.packs_table)

    # --- writes ------------------------------------------------------------------------
    def pack_balance_moved(self, alias: str, delta: str) -> str:
        """The SET item of an UPDATE of the packs table `alias` that uses `delta` more sessions
        (a negative delta gives them back)."""
        p = self.mapping.pack
        if p.remaining:
            col = ident(p.remaining)
            return f"{col} = {alias}.{col} - ({delta})"
        col = ident(p.used or "")
        return f"{col} = {alias}.{col} + ({delta})"

    def pack_balance_column(self) -> str:
        """The packs table's balance column (what the UPDATE's SET names)."""
        p = self.mapping.pack
        return ident(p.remaining or p.used or "")

    def session_end(self, alias: str) -> str:
        """When the session of the app booking row `alias` ends (the completion cron's test)."""
        return self.booking_field(alias, "end_time")

    # --- values --------------------------------------------------------------------------
    @cached_property
    def consuming_statuses(self) -> str:
        """The mapped consuming statuses, as a text[] literal."""
        return text_array(self.mapping.booking.consuming_statuses)

    @cached_property
    def trusted_roles(self) -> str:
        """The roles trusted to move any session, as a text[] literal."""
        return text_array(self.mapping.access.trusted_roles)

    @cached_property
    def api_roles(self) -> tuple[str, ...]:
        """The API roles, each quoted (for GRANT and REVOKE)."""
        return tuple(ident(r) for r in self.mapping.access.api_roles)

    @cached_property
    def membership_function(self) -> str | None:
        """The membership function, qualified, or None."""
        f = self.mapping.access.membership_function
        return qualified(f) if f else None

    @cached_property
    def legacy_use(self) -> str | None:
        """The app's old deduction function, qualified, or None."""
        return qualified(self.mapping.legacy.use) if self.mapping.legacy else None

    @cached_property
    def legacy_release(self) -> str | None:
        """The app's old give-back function, qualified, or None."""
        return qualified(self.mapping.legacy.release) if self.mapping.legacy else None

    def lit(self, value: object) -> str:
        """Any value as an SQL literal."""
        return literal(value)


_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # noqa: S701 - renders SQL, never HTML; values go through literal()
    keep_trailing_newline=True,
    # SQL has no {{ or {%; a `{#` could start a Postgres array literal's text, so comments are off
    comment_start_string="{##",
    comment_end_string="##}",
)


def render(template: str, app: AppSQL, *, name: str = "<sql>") -> str:
    """One SQL template rendered for an app."""
    try:
        return _ENV.from_string(template).render(app=app)
    except jinja2.TemplateError as e:
        raise ValueError(f"{name}: cannot render: {e}") from e
