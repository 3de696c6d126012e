"""The two example apps beside the coaching app (examples/gym, examples/marketplace): their
files, and their flows played as each app plays them; no pytest here.

Each example directory holds schema.sql (the app's tables), mapping.toml (its schema mapped
for the ledger), legacy.sql (its old deduction code, never loaded with the ledger) and
flows.sql: the statements the app runs, as named queries (``-- name: x`` above each, psycopg
named placeholders). `listener demo --app gym|marketplace` and tests/examples use the
classes below, so the demo shows exactly what the suites assert.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal

from psycopg import sql

from listener.core.db import Conn, connect
from listener.core.sql_files import query
from listener.devtools.app_schema import apply_sql_file, apply_supabase_base
from listener.errors import SchemaFileMissing
from listener.mapping import model as mapping_model
from listener.mapping.model import Mapping
from listener.ops.migrate import MigrateReport, migrate

AppName = Literal["gym", "marketplace"]
APPS: tuple[AppName, ...] = ("gym", "marketplace")

_NAME = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def examples_dir() -> Path:
    """Where the example apps are: inside the installed package, or the checkout's examples/."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "examples", package.parent / "examples"):
        if (candidate / "gym" / "mapping.toml").is_file():
            return candidate
    raise SchemaFileMissing("the example apps (examples/gym, examples/marketplace) are not installed")


@dataclass(frozen=True)
class ExampleApp:
    """One example app's files."""

    name: AppName

    @property
    def dir(self) -> Path:
        """The app's directory."""
        return examples_dir() / self.name

    @property
    def schema(self) -> Path:
        """The app's tables, roles and policies."""
        return self.dir / "schema.sql"

    @property
    def mapping_file(self) -> Path:
        """The app's schema mapped for the ledger."""
        return self.dir / "mapping.toml"

    @property
    def legacy(self) -> Path:
        """The app's old deduction code: what the ledger replaces."""
        return self.dir / "legacy.sql"

    def mapping(self) -> Mapping:
        """The parsed mapping."""
        return mapping_model.load(self.mapping_file)

    # Supabase's roles, auth.uid() and default privileges come first for the marketplace;
    # the gym runs on a plain server.
    @property
    def on_supabase(self) -> bool:
        """Whether the app's schema needs the Supabase-shaped base under it."""
        return self.name == "marketplace"

    def queries(self) -> dict[str, str]:
        """The app's flows (flows.sql), by name."""
        return named_statements(self.dir / "flows.sql")


@cache
def named_statements(path: Path) -> dict[str, str]:
    """A flows.sql file's statements, by the `-- name:` above each."""
    parts = _NAME.split(path.read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = body.strip().splitlines()
        while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith("--")):
            lines.pop()
        found[name] = "\n".join(lines)
    return found


def example(name: str) -> ExampleApp:
    """The example app of that name."""
    if name not in APPS:
        raise SchemaFileMissing(f"no example app {name!r}: one of {', '.join(APPS)}")
    return ExampleApp(name)


def load_schema(app: ExampleApp, dsn: str) -> None:
    """The app's schema on a superuser connection (with the Supabase-shaped base first where it needs it)."""
    if app.on_supabase:
        apply_supabase_base(dsn)
    apply_sql_file(dsn, app.schema)


def install(app: ExampleApp, dsn: str, *, ledger_dsn: str | None = None) -> MigrateReport:
    """The app's schema, then the ledger rendered from its mapping (migrated as ledger_dsn, default dsn)."""
    load_schema(app, dsn)
    return migrate(ledger_dsn or dsn, mapping=app.mapping(), missing_hint="examples/" + app.name)


def ledger_state(conn: Conn, queries: dict[str, str], booking: object) -> tuple[str, str | None] | None:
    """The ledger's (state, reason) for a booking, or None when it holds no row."""
    row = conn.execute(queries["ledger_state"], {"booking": str(booking)}).fetchone()
    return None if row is None else (str(row["state"]), row["reason"])


class Gym:
    """The gym's server: one login (gym_app, a member of gym_server) that schedules classes, sells
    packages, books members and marks attendance. `login` plays another login for the trust
    boundary. `dsn` is an owner (or superuser) connection, which may SET ROLE to the login."""

    def __init__(self, dsn: str, *, login: str = "gym_app") -> None:
        self.dsn = dsn
        self.login = login
        self.q = example("gym").queries()
        self._owner: Conn | None = None
        self._server: Conn | None = None

    @property
    def owner(self) -> Conn:
        """An autocommit owner connection, for reading balances."""
        if self._owner is None or self._owner.closed:
            self._owner = connect(self.dsn, purpose="gym owner")
        return self._owner

    @contextmanager
    def server(self, login: str | None = None) -> Iterator[Conn]:
        """A fresh autocommit connection as the server's login (or another), for one writer of a race."""
        conn = connect(self.dsn, purpose="gym server")
        try:
            conn.execute(sql.SQL(self.q["act_as"]).format(sql.Identifier(login or self.login)))
            yield conn
        finally:
            conn.close()

    @property
    def _desk(self) -> Conn:
        if self._server is None or self._server.closed:
            self._server = connect(self.dsn, purpose="gym server")
            self._server.execute(sql.SQL(self.q["act_as"]).format(sql.Identifier(self.login)))
        return self._server

    def close(self) -> None:
        """Close the helper's connections."""
        for conn in (self._owner, self._server):
            if conn is not None:
                conn.close()

    def _id(self, name: str, params: dict[str, Any]) -> int:
        row = self._desk.execute(self.q[name], params).fetchone()
        assert row is not None
        return int(row["id"])

    def add_member(self, email: str) -> int:
        """A member."""
        return self._id("add_member", {"email": email})

    def add_class(self, name: str, starts_at: datetime, minutes: int = 60) -> int:
        """A class on the schedule."""
        return self._id(
            "add_class",
            {"name": name, "starts_at": starts_at, "ends_at": starts_at + timedelta(minutes=minutes)},
        )

    def sell_package(
        self, member: int, sessions: int, *, expires_on: datetime | None = None, is_expired: bool = False
    ) -> int:
        """A package of sessions for a member."""
        return self._id(
            "sell_package",
            {"member": member, "sessions": sessions, "expires_on": expires_on, "is_expired": is_expired},
        )

    def renew(self, package: int, sessions: int) -> None:
        """More sessions on a package (the member paid for a renewal)."""
        self._desk.execute(self.q["renew_package"], {"package": package, "sessions": sessions})

    def book(self, member: int, class_id: int, package: int | None) -> int:
        """A member's booking of a class, paid from a package (or none: a drop-in)."""
        return self._id("book", {"member": member, "class": class_id, "package": package})

    def mark(self, booking: int, status: str, *, conn: Conn | None = None) -> int:
        """The front desk marks one booking; how many rows it changed."""
        return (conn or self._desk).execute(self.q["mark"], {"status": status, "booking": booking}).rowcount

    def mark_class(self, bookings: Sequence[int], status: str, *, conn: Conn | None = None) -> int:
        """The coach's attendance sheet: every listed booking marked at once."""
        cur = (conn or self._desk).execute(
            self.q["mark_class"], {"status": status, "bookings": list(bookings)}
        )
        return cur.rowcount

    def add_note(self, booking: int, notes: str, *, conn: Conn | None = None) -> int:
        """A note on a booking: changes nothing the ledger charges."""
        return (conn or self._desk).execute(self.q["add_note"], {"notes": notes, "booking": booking}).rowcount

    def remaining(self, package: int) -> int:
        """A package's sessions_remaining."""
        row = self.owner.execute(self.q["remaining"], {"package": package}).fetchone()
        assert row is not None
        return int(row["sessions_remaining"])

    def status(self, booking: int) -> str:
        """A booking's status."""
        row = self.owner.execute(self.q["booking_status"], {"booking": booking}).fetchone()
        assert row is not None
        return str(row["status"])

    def ledger_state(self, booking: int) -> tuple[str, str | None] | None:
        """The ledger's (state, reason) for a booking, or None."""
        return ledger_state(self.owner, self.q, booking)

    def booking_rows(self, bookings: Sequence[int]) -> list[dict[str, Any]]:
        """The bookings with their class, for showing."""
        return self.owner.execute(self.q["booking_rows"], {"bookings": list(bookings)}).fetchall()


Payment = Literal["credits", "card"]


@dataclass(frozen=True)
class Booked:
    """A marketplace booking and who made it."""

    id: uuid.UUID
    user: uuid.UUID
    credits_used: int
    payment_method: Payment


class Marketplace:
    """The credits marketplace on Supabase: users book and cancel through the API as themselves
    (role authenticated, the JWT's claims in request.jwt.claims), its webhooks and cron run as
    service_role. `owner_dsn` owns the app's tables (seeding the clock, reading balances);
    `api_dsn` logs in as a role that may SET ROLE to the API roles (authenticator on
    Supabase; the owner dsn when it is a superuser)."""

    def __init__(self, owner_dsn: str, api_dsn: str | None = None) -> None:
        self.owner_dsn = owner_dsn
        self.api_dsn = api_dsn or owner_dsn
        self.q = example("marketplace").queries()
        self._owner: Conn | None = None

    @property
    def owner(self) -> Conn:
        """An autocommit owner connection."""
        if self._owner is None or self._owner.closed:
            self._owner = connect(self.owner_dsn, purpose="marketplace owner")
        return self._owner

    def close(self) -> None:
        """Close the helper's connection."""
        if self._owner is not None:
            self._owner.close()

    @contextmanager
    def api(self, *, role: str, user: uuid.UUID | None = None) -> Iterator[Conn]:
        """One request's transaction as PostgREST runs it: the role, the JWT's claims; committed
        when the block ends without an error."""
        claims: dict[str, Any] = {"role": role, **({"sub": str(user)} if user else {})}
        with connect(self.api_dsn, autocommit=False, purpose="api") as conn:
            conn.execute(sql.SQL(query("set_local_role")).format(sql.Identifier(role)))
            conn.execute(query("set_jwt_claims"), [json.dumps(claims)])
            conn.execute(query("set_jwt_sub"), [str(user or "")])
            conn.execute(query("set_jwt_role"), [role])
            yield conn
            conn.commit()

    def request(
        self, name: str, params: dict[str, Any], *, role: str, user: uuid.UUID | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """One request running one of the app's statements: its rows and row count."""
        with self.api(role=role, user=user) as conn:
            cur = conn.execute(self.q[name], params)
            return (cur.fetchall() if cur.description else []), cur.rowcount

    # --- the users' side -----------------------------------------------------------
    def add_user(self, email: str, *, credits: int = 0) -> uuid.UUID:
        """A signed-up user with a wallet (the signup webhook opens it as service_role)."""
        user = uuid.uuid4()
        self.owner.execute(self.q["add_user"], {"user": user, "email": email})
        self.request("open_wallet", {"user": user, "credits": credits}, role="service_role")
        return user

    def book(
        self,
        user: uuid.UUID,
        class_name: str,
        starts_at: datetime,
        *,
        payment_method: Payment = "credits",
        credits_used: int = 1,
        minutes: int = 60,
    ) -> Booked:
        """The user books a class through the API; the platform first prices the class at `credits_used`."""
        self.price_class(class_name, credits_used)
        rows, _ = self.request(
            "book",
            {
                "user": user,
                "class_name": class_name,
                "starts_at": starts_at,
                "ends_at": starts_at + timedelta(minutes=minutes),
                "payment_method": payment_method,
            },
            role="authenticated",
            user=user,
        )
        return Booked(uuid.UUID(str(rows[0]["id"])), user, int(rows[0]["credits_used"]), payment_method)

    def cancel(self, booking: Booked, *, as_user: bool = True) -> int:
        """Cancel: as the user through the app, or as service_role (the support desk)."""
        return self._write("cancel", {"booking": booking.id}, booking, as_user)

    def complete(self, booking: Booked, *, as_user: bool = True) -> int:
        """Set a booking completed by hand: as the user (refused), or as service_role."""
        return self._write("complete", {"booking": booking.id}, booking, as_user)

    def reschedule(
        self, booking: Booked, starts_at: datetime, *, as_user: bool = True, minutes: int = 60
    ) -> int:
        """Move a booking's session."""
        params = {
            "booking": booking.id,
            "starts_at": starts_at,
            "ends_at": starts_at + timedelta(minutes=minutes),
        }
        return self._write("reschedule", params, booking, as_user)

    def _write(self, name: str, params: dict[str, Any], booking: Booked, as_user: bool) -> int:
        if as_user:
            return self.request(name, params, role="authenticated", user=booking.user)[1]
        return self.request(name, params, role="service_role")[1]

    # --- the platform's side -------------------------------------------------------
    def price_class(self, class_name: str, credits: int) -> None:
        """The platform sets what a class costs (service_role)."""
        self.request("price_class", {"class_name": class_name, "credits": credits}, role="service_role")

    def reprice(self, booking: Booked, credits_used: int, *, as_user: bool = False) -> int:
        """Change what one booking costs: as service_role (support), or as the user (refused)."""
        return self._write("reprice", {"booking": booking.id, "credits_used": credits_used}, booking, as_user)

    def switch_payment(self, booking: Booked, payment_method: Payment, *, as_user: bool = False) -> int:
        """Switch how a booking is paid: as service_role (support), or as the user."""
        params = {"booking": booking.id, "payment_method": payment_method}
        return self._write("switch_payment", params, booking, as_user)

    def top_up(self, user: uuid.UUID, credits: int) -> None:
        """The payment webhook adds bought credits to the user's wallet."""
        self.request("top_up", {"user": user, "credits": credits}, role="service_role")

    def cron(self) -> int:
        """The cron, as service_role: the ledger's complete_past_bookings(); how many it completed."""
        rows, _ = self.request("cron_complete", {}, role="service_role")
        return int(rows[0]["completed"])

    def app_cron(self) -> int:
        """The app's own cron UPDATE, as service_role; how many it completed."""
        return self.request("app_cron_complete", {}, role="service_role")[1]

    def time_passes(self, bookings: Sequence[Booked], by: timedelta) -> None:
        """Stand-in for the clock: the sessions of these bookings move `by` into the past (as the owner)."""
        self.owner.execute(self.q["time_passes"], {"bookings": [b.id for b in bookings], "by": by})

    # --- reading -------------------------------------------------------------------
    def credits(self, user: uuid.UUID) -> int:
        """A user's credits_balance."""
        row = self.owner.execute(self.q["credits"], {"user": user}).fetchone()
        assert row is not None
        return int(row["credits_balance"])

    def wallets(self) -> dict[uuid.UUID, tuple[uuid.UUID, int]]:
        """Every wallet: its user and credits_balance, by the wallet's id."""
        return {
            uuid.UUID(str(r["id"])): (uuid.UUID(str(r["user_id"])), int(r["credits_balance"]))
            for r in self.owner.execute(self.q["wallets"])
        }

    def status(self, booking: Booked) -> str:
        """A booking's status."""
        row = self.owner.execute(self.q["booking_status"], {"booking": booking.id}).fetchone()
        assert row is not None
        return str(row["status"])

    def ledger_state(self, booking: Booked) -> tuple[str, str | None] | None:
        """The ledger's (state, reason) for a booking, or None."""
        return ledger_state(self.owner, self.q, booking.id)

    def booking_rows(self, bookings: Sequence[Booked]) -> list[dict[str, Any]]:
        """The bookings, for showing."""
        return self.owner.execute(self.q["booking_rows"], {"bookings": [b.id for b in bookings]}).fetchall()
