"""The mapping file's model: one TOML file, validated before anything is rendered.

Every name is a plain SQL identifier, or schema.name for a table or a function; the
renderer quotes them. Predicates and expressions are SQL over one row of the table they
belong to, written with `{row}.` before each column (`{row}.payment_method = 'credits'`):
the renderer puts the row's alias there. They are compiled at migrate, under
`search_path = pg_catalog, pg_temp`, before anything changes.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from functools import cache, cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

_IDENT = r"[a-z_][a-z0-9_$]{0,62}"
Identifier = Annotated[str, StringConstraints(pattern=rf"^{_IDENT}$")]
QualifiedName = Annotated[str, StringConstraints(pattern=rf"^{_IDENT}\.{_IDENT}$")]


def _one_expression(text: str) -> str:
    """Refuse a fragment that could end the expression it is put into: outside its quoted
    strings and names, no `;`, no comment, no dollar quoting, and its parentheses balanced.
    The renderer writes it inside parentheses, so it stays one value of one row."""
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"":
            if (
                c == "'"
                and i > 0
                and text[i - 1] in "eE"
                and (i < 2 or not (text[i - 2].isalnum() or text[i - 2] == "_"))
            ):
                raise ValueError(
                    "escape strings (E'...') are not supported in a fragment: write the text plainly"
                )
            end = text.find(c, i + 1)
            while end != -1 and text[end + 1 : end + 2] == c:
                end = text.find(c, end + 2)
            if end == -1:
                what = "string" if c == "'" else "quoted name"
                raise ValueError(f"unterminated {what} in the fragment")
            i = end + 1
            continue
        if c == ";":
            raise ValueError("a fragment is one expression: no `;`")
        if text.startswith("--", i) or text.startswith("/*", i):
            raise ValueError("no comments in a fragment")
        if c == "$":
            raise ValueError("no `$` in a fragment (dollar quoting or parameters)")
        if c == "\\":
            raise ValueError("no backslash in a fragment outside its strings")
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced parentheses in the fragment: a `)` closes nothing")
        i += 1
    if depth:
        raise ValueError("unbalanced parentheses in the fragment: a `(` is never closed")
    return text


# An SQL fragment over one row; `{row}` stands for the row's alias.
Fragment = Annotated[str, StringConstraints(min_length=1, max_length=2000), AfterValidator(_one_expression)]
Status = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SessionJoin(_Strict):
    """The session's times live on another table the booking points at (a class instance)."""

    table: QualifiedName
    key: Identifier = Field(description="the booking's column naming the session row")
    id: Identifier = "id"
    start: Identifier
    end: Identifier | None = None


class Booking(_Strict):
    """The app's bookings: one row per booked session."""

    table: QualifiedName
    id: Identifier = "id"
    status: Identifier = "status"
    consuming_statuses: tuple[Status, ...]
    consumes_when: Fragment | None = Field(
        default=None, description="an extra condition on the booking for it to consume (SQL over {row})"
    )
    start: Identifier | None = None
    end: Identifier | None = None
    session: SessionJoin | None = None
    client: Identifier | None = None
    org: Identifier | None = None

    @model_validator(mode="after")
    def _times(self) -> Booking:
        if self.session is not None and self.start is not None:
            raise ValueError("booking.start and booking.session are exclusive: the times come from one place")
        if self.session is None and self.start is None:
            raise ValueError(
                "booking.start is required (or booking.session, when the times live on another table)"
            )
        if not self.consuming_statuses:
            raise ValueError("booking.consuming_statuses needs at least one status")
        return self


class Pack(_Strict):
    """The app's packs (passes, wallets): what a consuming booking is charged to."""

    table: QualifiedName
    id: Identifier = "id"
    # How a booking finds its pack: a column of the booking, or the one pack of its client.
    find: Literal["column", "by_client"] = "column"
    column: Identifier | None = Field(default=None, description="the booking's column naming the pack")
    # The balance: used and total, or remaining.
    used: Identifier | None = None
    total: Identifier | None = None
    remaining: Identifier | None = None
    # What one booking costs: a column of the booking, or 1 session when unset.
    amount_column: Identifier | None = None
    unlimited_when: Fragment | None = Field(
        default=None,
        description="a condition on the pack under which a booking costs nothing (SQL over {row})",
    )
    expires: Identifier | None = None
    unusable_when: Fragment | None = None
    unusable_reason: Fragment | None = None
    client: Identifier | None = None
    org: Identifier | None = None

    @model_validator(mode="after")
    def _shape(self) -> Pack:
        if self.find == "column" and self.column is None:
            raise ValueError("pack.column is required when pack.find = 'column'")
        if self.find == "by_client" and self.column is not None:
            raise ValueError(
                "pack.column names the booking's pack column: leave it out when pack.find = 'by_client'"
            )
        if self.find == "by_client" and self.client is None:
            raise ValueError("pack.client is required when pack.find = 'by_client'")
        if self.remaining is not None and (self.used is not None or self.total is not None):
            raise ValueError(
                "pack.remaining and pack.used/pack.total are exclusive: the balance is one or the other"
            )
        if self.remaining is None and (self.used is None or self.total is None):
            raise ValueError("the balance needs pack.used and pack.total, or pack.remaining")
        if (self.unusable_when is None) != (self.unusable_reason is None):
            raise ValueError("pack.unusable_when and pack.unusable_reason go together")
        return self


class Access(_Strict):
    """Who may move a session with a booking write."""

    # supabase: signed-in users through the API roles, members of the pack's organisation;
    # trusted_writers: the app's server is the only writer, and only the listed roles may.
    mode: Literal["supabase", "trusted_writers"] = "supabase"
    api_roles: tuple[Identifier, ...] = ("anon", "authenticated")
    trusted_roles: tuple[Identifier, ...] = ("service_role",)
    # may(org) -> boolean: whether the signed-in user may move the sessions of the
    # organisation's packs. Without one, only the trusted roles may.
    membership_function: QualifiedName | None = None

    @model_validator(mode="after")
    def _mode(self) -> Access:
        if self.mode == "trusted_writers" and self.membership_function is not None:
            raise ValueError(
                "access.membership_function is for mode = 'supabase'; trusted_writers checks roles only"
            )
        if self.mode == "trusted_writers" and not self.trusted_roles:
            raise ValueError("access.trusted_roles: trusted_writers needs at least one role")
        return self


class Legacy(_Strict):
    """The app's old deduction functions, absorbed while the old code still calls them."""

    use: QualifiedName
    release: QualifiedName


class Completion(_Strict):
    """The completion cron: bookings past their end move from one status to another."""

    from_status: Status = "confirmed"
    to_status: Status = "completed"


class Mapping(_Strict):
    """One app's schema, mapped."""

    booking: Booking
    pack: Pack
    access: Access = Field(default_factory=Access)
    legacy: Legacy | None = None
    completion: Completion | None = None

    @model_validator(mode="after")
    def _across(self) -> Mapping:
        if self.pack.find == "by_client" and self.booking.client is None:
            raise ValueError("pack.find = 'by_client' needs booking.client")
        if self.completion is not None and self.completion.to_status not in self.booking.consuming_statuses:
            raise ValueError("completion.to_status must be one of booking.consuming_statuses")
        if (
            self.completion is not None
            and self.booking.end is None
            and (self.booking.session is None or self.booking.session.end is None)
        ):
            raise ValueError("completion needs the session's end: booking.end or booking.session.end")
        if self.legacy is not None and (self.pack.find != "column" or self.pack.amount_column is not None):
            raise ValueError(
                "legacy functions take a pack id and move one session: "
                "they need pack.find = 'column' and no pack.amount_column"
            )
        return self

    @cached_property
    def text(self) -> str:
        """The mapping as canonical JSON: what is stored and hashed."""
        return self.model_dump_json(indent=2)

    @cached_property
    def sha256(self) -> str:
        """The canonical text's hash: a changed mapping re-renders the SQL."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def default() -> Mapping:
    """The coaching app's mapping (coaching.toml): what an install given no mapping file uses."""
    return _default()


@cache
def _default() -> Mapping:
    return parse(
        (Path(__file__).parent / "coaching.toml").read_text(encoding="utf-8"), source="coaching.toml"
    )


class MappingError(ValueError):
    """A mapping file that cannot be used, with one line per problem naming its key."""


def _key(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-after")))


def parse(text: str, *, source: str = "mapping") -> Mapping:
    """A mapping from TOML text, or MappingError naming each bad key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MappingError(f"{source}: not valid TOML: {e}") from None
    try:
        return Mapping.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors(include_url=False):
            key = _key(err["loc"]) or "(top level)"
            msg = re.sub(r"^Value error, ", "", err["msg"])
            lines.append(f"{source}: {key}: {msg}")
        raise MappingError("\n".join(lines)) from None


def load(path: Path) -> Mapping:
    """A mapping from a TOML file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise MappingError(f"{path}: cannot read the mapping: {e.strerror}") from None
    return parse(text, source=str(path))


def from_stored(text: str) -> Mapping:
    """The mapping an install recorded (its canonical JSON)."""
    return Mapping.model_validate_json(text)
