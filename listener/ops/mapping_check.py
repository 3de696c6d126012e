"""Whether the app's schema is what its mapping says: run by `listener migrate` before anything changes.

Each problem is one line naming the mapping's key and what the catalog holds instead, e.g.
`pack.remaining: column gym.packages.sessions_left does not exist (columns: id, member_id, ...)`.
Warnings (a booking's pack column with no foreign key) are said, never refused.

The predicates and expressions are compiled here the way the ledger's functions will run them:
under `search_path = pg_catalog, pg_temp`, as the role that migrates, each planned over its
table and never run, in a read-only transaction with a statement timeout that is rolled back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from listener.core.db import Conn
from listener.core.sql_files import query
from listener.mapping.model import Mapping

KEY_TYPES = ("uuid", "integer", "bigint", "text")
INTEGERS = ("smallint", "integer", "bigint")
TEXTS = ("text", "character varying")
TIMESTAMPTZ = "timestamp with time zone"
# How long one fragment may take to plan: a catalog lookup, nothing more.
FRAGMENT_TIMEOUT = "5s"


@dataclass(frozen=True)
class Problem:
    """One thing the app's schema lacks or holds otherwise than the mapping says."""

    key: str
    text: str
    # What is missing, for migrate's one-line summary ("table public.bookings"); None when
    # the object is there but wrong. `group` gathers a table's missing columns in one phrase.
    missing: str | None = None
    group: str | None = None

    def __str__(self) -> str:
        return f"{self.key}: {self.text}"


@dataclass
class Findings:
    """What the check found: problems refuse the mapping, warnings do not."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def missing(self) -> list[Problem]:
        """The problems that are objects missing (tables, columns, functions, roles)."""
        return [p for p in self.problems if p.missing is not None]

    def summary(self) -> str:
        """What is missing in one phrase, each with its key: today's `missing ...` line."""
        phrases: list[str] = []
        grouped: dict[str, list[str]] = {}
        for p in self.missing:
            item = f"{p.missing} ({p.key})"
            if p.group is None:
                phrases.append(item)
            else:
                if p.group not in grouped:
                    grouped[p.group] = []
                    phrases.append(p.group)
                grouped[p.group].append(item)
        return "; ".join(f"{ph} {', '.join(grouped[ph])}" if ph in grouped else ph for ph in phrases)


@dataclass(frozen=True)
class Column:
    """One column as the checks judge it."""

    name: str
    type: str
    base_type: str
    labels: tuple[str, ...]
    is_enum: bool

    @property
    def shown(self) -> str:
        return self.type if self.type == self.base_type else f"{self.type} (a domain over {self.base_type})"


def problems(conn: Conn, mapping: Mapping) -> list[str]:
    """Every problem with the mapping against the catalog, one line each naming its key."""
    return [str(p) for p in check(conn, mapping).problems]


def check(conn: Conn, mapping: Mapping) -> Findings:
    """The problems and warnings of the mapping against the catalog."""
    return _Checker(conn, mapping).run()


def _split(name: str) -> tuple[str, str]:
    schema, _, rel = name.partition(".")
    return schema, rel


class _Checker:
    def __init__(self, conn: Conn, mapping: Mapping) -> None:
        self.conn = conn
        self.m = mapping
        self.found = Findings()
        self.columns: dict[str, dict[str, Column] | None] = {}

    def problem(self, key: str, text: str, *, missing: str | None = None, group: str | None = None) -> None:
        self.found.problems.append(Problem(key, text, missing, group))

    # --- tables and columns --------------------------------------------------------
    def table(self, key: str, name: str, *, kinds: str = "rp") -> bool:
        """Whether the mapped table exists (its columns read once); a problem if not."""
        schema, rel = _split(name)
        row = self.conn.execute(query("mapping_relation"), {"schema": schema, "name": rel}).fetchone()
        if row is None:
            found = self.conn.execute(query("mapping_schema_tables"), {"schema": schema}).fetchone()
            assert found is not None
            if not found["schema_exists"]:
                where = f"there is no schema {schema}"
            else:
                where = f"tables in {schema}: {', '.join(found['tables']) or 'none'}"
            self.problem(key, f"table {name} does not exist ({where})", missing=f"table {name}")
            self.columns[name] = None
            return False
        if row["kind"] not in kinds:
            what = {"v": "a view", "m": "a materialized view", "f": "a foreign table"}.get(
                row["kind"], "not a table"
            )
            self.problem(
                key, f"{name} is {what}: the ledger needs a table here (it puts triggers on it, updates it)"
            )
            self.columns[name] = None
            return False
        self.columns[name] = {
            r["name"]: Column(r["name"], r["type"], r["base_type"], tuple(r["labels"]), bool(r["is_enum"]))
            for r in self.conn.execute(query("mapping_columns"), {"schema": schema, "name": rel})
        }
        return True

    def column(self, key: str, table: str, name: str | None) -> Column | None:
        """The mapped column, or None (a problem when the table exists and the column does not)."""
        cols = self.columns.get(table)
        if cols is None or name is None:
            return None
        col = cols.get(name)
        if col is None:
            listed = ", ".join(cols) or "none"
            self.problem(
                key,
                f"column {table}.{name} does not exist (columns: {listed})",
                missing=name,
                group=f"{table} columns",
            )
        return col

    def typed(self, key: str, table: str, col: Column | None, allowed: tuple[str, ...], what: str) -> None:
        if col is not None and col.base_type not in allowed:
            self.problem(key, f"column {table}.{col.name} is {col.shown}: {what}")

    def key_column(self, key: str, table: str, name: str | None) -> Column | None:
        col = self.column(key, table, name)
        self.typed(key, table, col, KEY_TYPES, "keys must be uuid, integer, bigint or text")
        return col

    def count_column(self, key: str, table: str, name: str | None) -> None:
        col = self.column(key, table, name)
        if col is None or col.base_type in INTEGERS:
            return
        if col.base_type in ("numeric", "real", "double precision", "money"):
            self.problem(
                key,
                f"column {table}.{col.name} is {col.shown}: decimal amounts are not supported: "
                "charges are whole sessions or credits",
            )
        else:
            self.problem(key, f"column {table}.{col.name} is {col.shown}: it must be an integer")

    def time_column(self, key: str, table: str, name: str | None) -> None:
        col = self.column(key, table, name)
        if col is None or col.base_type == TIMESTAMPTZ:
            return
        if col.base_type == "timestamp without time zone":
            # Refused, not warned: compared with now() and the cut-over, a time without a zone
            # is read in each session's TimeZone, so the same booking would be judged differently.
            self.problem(
                key,
                f"column {table}.{col.name} is timestamp without time zone: times must be timestamptz "
                f"(ALTER TABLE {table} ALTER COLUMN {col.name} TYPE timestamptz "
                f"USING {col.name} AT TIME ZONE 'UTC', if they were written in UTC)",
            )
        elif col.base_type == "date":
            # A date is a day in some zone: the ledger compares the pack's expiry with a
            # booking's start, an instant, so the column must say which instant it lapses at.
            self.problem(
                key,
                f"column {table}.{col.name} is date: times must be timestamptz "
                f"(ALTER TABLE {table} ALTER COLUMN {col.name} TYPE timestamptz "
                f"USING ({col.name} + 1)::timestamp AT TIME ZONE 'UTC', for the end of the last valid day in UTC)",
            )
        else:
            self.problem(key, f"column {table}.{col.name} is {col.shown}: times must be timestamptz")

    def same_type(
        self, key: str, table: str, col: Column | None, than: tuple[str, str, Column | None]
    ) -> None:
        other_key, other, ocol = than
        if col is not None and ocol is not None and col.base_type != ocol.base_type:
            self.problem(
                key,
                f"column {table}.{col.name} is {col.shown}, but {other_key} ({other}.{ocol.name}) is "
                f"{ocol.shown}: they must have the same type",
            )

    # --- the checks ------------------------------------------------------------------
    def run(self) -> Findings:
        b, p = self.m.booking, self.m.pack
        has_bookings = self.table("booking.table", b.table)
        has_packs = self.table("pack.table", p.table)
        if b.session is not None:
            self.table("booking.session.table", b.session.table, kinds="rpvm")
        bt, pt = b.table, p.table

        booking_id = self.key_column("booking.id", bt, b.id)
        status = self.column("booking.status", bt, b.status)
        booking_client = self.key_column("booking.client", bt, b.client)
        booking_org = self.key_column("booking.org", bt, b.org)
        pack_id = self.key_column("pack.id", pt, p.id)
        pack_client = self.key_column("pack.client", pt, p.client)
        pack_org = self.key_column("pack.org", pt, p.org)
        del booking_id
        if b.session is None:
            self.time_column("booking.start", bt, b.start)
            self.time_column("booking.end", bt, b.end)
        else:
            s = b.session
            key_col = self.column("booking.session.key", bt, s.key)
            sid = self.key_column("booking.session.id", s.table, s.id)
            self.same_type("booking.session.key", bt, key_col, ("booking.session.id", s.table, sid))
            self.time_column("booking.session.start", s.table, s.start)
            self.time_column("booking.session.end", s.table, s.end)
        self.status(status)

        if p.find == "column":
            pack_column = self.column("pack.column", bt, p.column)
            self.same_type("pack.column", bt, pack_column, ("pack.id", pt, pack_id))
            if pack_column is not None and pack_id is not None:
                fk = self.conn.execute(
                    query("mapping_foreign_key"),
                    {"table": bt, "column": p.column, "references": pt, "referenced": p.id},
                ).fetchone()
                if fk is not None and not fk["present"]:
                    self.found.warnings.append(
                        f"pack.column: no foreign key from {bt}.{p.column} to {pt}.{p.id}: a booking naming "
                        "a pack that does not exist is recorded unfunded ('pack does not exist')"
                    )
        elif pack_client is not None:
            unique = self.conn.execute(
                query("mapping_unique_column"), {"table": pt, "column": p.client}
            ).fetchone()
            if unique is not None and not unique["present"]:
                self.problem(
                    "pack.client",
                    f"pack.find = 'by_client' needs one pack per client: {pt}.{p.client} has no unique "
                    "constraint or index of its own",
                )
        self.same_type("pack.client", pt, pack_client, ("booking.client", bt, booking_client))
        self.same_type("pack.org", pt, pack_org, ("booking.org", bt, booking_org))

        for key, name in (("pack.used", p.used), ("pack.total", p.total), ("pack.remaining", p.remaining)):
            self.count_column(key, pt, name)
        self.count_column("pack.amount_column", bt, p.amount_column)
        self.time_column("pack.expires", pt, p.expires)

        if has_bookings and b.consumes_when is not None:
            self.fragment("booking.consumes_when", bt, b.consumes_when, boolean=True)
        if has_packs:
            for key, text in (
                ("pack.unusable_when", p.unusable_when),
                ("pack.unlimited_when", p.unlimited_when),
            ):
                if text is not None:
                    self.fragment(key, pt, text, boolean=True)
            if p.unusable_reason is not None:
                self.fragment("pack.unusable_reason", pt, p.unusable_reason, boolean=False)

        self.functions(pack_id, booking_org or pack_org)
        self.roles()
        return self.found

    def status(self, col: Column | None) -> None:
        if col is None:
            return
        bt = self.m.booking.table
        if not col.is_enum:
            self.typed("booking.status", bt, col, TEXTS, "a status must be text, varchar or an enum")
            return
        wanted = [("booking.consuming_statuses", s) for s in self.m.booking.consuming_statuses]
        if self.m.completion is not None:
            wanted += [
                ("completion.from_status", self.m.completion.from_status),
                ("completion.to_status", self.m.completion.to_status),
            ]
        for key, value in wanted:
            if value not in col.labels:
                self.problem(key, f"{value!r} is not a value of {col.type} (values: {', '.join(col.labels)})")

    def fragment(self, key: str, table: str, text: str, *, boolean: bool) -> None:
        """Compile one predicate or expression over its table, as the ledger's functions will."""
        statement = sql.SQL(query("mapping_fragment_type")).format(
            fragment=sql.SQL(text.replace("{row}", "r")), table=sql.Identifier(*_split(table))
        )
        type_name: str | None = None
        columns = 0
        try:
            with self.conn.transaction(force_rollback=True):
                self.conn.execute(query("mapping_fragment_guard"))
                cur = self.conn.execute(statement, {"limit": 0})
                columns = len(cur.description or ())
                if columns == 1:
                    assert cur.description is not None
                    row = self.conn.execute(
                        query("type_name"), {"oid": cur.description[0].type_code}
                    ).fetchone()
                    type_name = row["name"] if row else None
        except psycopg.Error as exc:
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            self.problem(key, f"does not compile over {table} (search_path pg_catalog, pg_temp): {first}")
            return
        if columns != 1:
            self.problem(key, f"is {columns} values, not one")
        elif boolean and type_name != "boolean":
            self.problem(key, f"is {type_name}, not boolean: it must be a condition on the row")
        elif not boolean and type_name not in (*TEXTS, "character", "name", "unknown"):
            self.problem(key, f"is {type_name}, not text: it must be the reason, as text")

    def function(self, key: str, name: str, argument: str, returns: str) -> None:
        signature = f"{name}({argument})"
        row = self.conn.execute(query("mapping_function"), {"signature": signature}).fetchone()
        if row is None:
            schema, fn = _split(name)
            others = [
                r["signature"]
                for r in self.conn.execute(query("mapping_functions_named"), {"schema": schema, "name": fn})
            ]
            there = f"there is {', '.join(others)}" if others else "no function of that name"
            self.problem(
                key, f"function {signature} does not exist ({there})", missing=f"function {signature}"
            )
        elif row["returns"] != returns:
            self.problem(key, f"function {signature} returns {row['returns']}, not {returns}")

    def functions(self, pack_id: Column | None, org: Column | None) -> None:
        a = self.m.access
        if a.membership_function is not None:
            self.function(
                "access.membership_function", a.membership_function, org.type if org else "uuid", "boolean"
            )
        legacy = self.m.legacy
        if legacy is not None and pack_id is not None:
            self.function("legacy.use", legacy.use, pack_id.type, "boolean")
            self.function("legacy.release", legacy.release, pack_id.type, "integer")

    def roles(self) -> None:
        a = self.m.access
        named = [("access.trusted_roles", r) for r in a.trusted_roles] + [
            ("access.api_roles", r) for r in a.api_roles
        ]
        present = {
            r["name"]
            for r in self.conn.execute(query("mapping_roles_present"), {"names": [name for _, name in named]})
        }
        for key, name in named:
            if name not in present:
                self.problem(key, f"role {name} does not exist", missing=f"role {name}")
        if a.mode == "supabase" and a.membership_function is not None:
            self.signed_in(list(a.api_roles))

    def signed_in(self, api_roles: list[str]) -> None:
        # The ledger asks the membership function only of members of authenticated (Supabase's
        # and PostgREST's signed-in role): without that role the function is never asked, and
        # every write but the trusted roles' is refused, however the mapping reads.
        row = self.conn.execute(query("mapping_signed_in_roles"), {"names": api_roles}).fetchone()
        assert row is not None
        if not row["present"]:
            self.problem(
                "access.membership_function",
                "the ledger asks it only of members of role authenticated (the signed-in users), and "
                "there is none: CREATE ROLE authenticated NOLOGIN and GRANT authenticated TO the role "
                "your signed-in users write as",
                missing="role authenticated",
            )
        elif api_roles and not row["members"]:
            self.found.warnings.append(
                f"access.membership_function: none of access.api_roles ({', '.join(api_roles)}) is a "
                "member of role authenticated, the only role the ledger asks it of: their writes that "
                "move a session are refused (GRANT authenticated TO the role your signed-in users write as)"
            )
