"""Every statement the dashboard runs: reads and its actions, through session_ledger.dashboard_* functions."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from listener.core.events import CANONICAL_UUID, key_text
from listener.core.sql_files import query
from listener.http.snapshot import Snapshot

# Rows per table on the page: enough to act on, bounded so a flood of dead letters cannot make it huge.
ROWS = 50
LAG_MINUTES = 60
# The most dead letters one redrive confirm step shows (dashboard_dead_letters_by_id's own bound).
MAX_REDRIVE = 1000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_CURSOR = re.compile(r"^(?P<micros>-?\d{1,18})_(?P<booking>\S{1,1000})$")

# An id of the app's as psycopg reads the key's type (uuid, integer or bigint, text). Ids go to SQL as
# text, which PostgreSQL reads as the type of the function's parameter: exact, and served by the key's index.
Key = uuid.UUID | int | str
_V = TypeVar("_V")
_CANONICAL_UUID = re.compile(CANONICAL_UUID)


class ById(dict[str, _V]):
    """A dict keyed by an id's text, so a uuid, an integer or a text id finds its entry however it is held."""

    def __getitem__(self, key: object) -> _V:
        return super().__getitem__(str(key))

    def __setitem__(self, key: object, value: _V) -> None:
        super().__setitem__(str(key), value)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(str(key))

    def get(self, key: object, default: _V | None = None) -> _V | None:  # type: ignore[override]
        return super().get(str(key), default)


def key_types(snapshot: Snapshot) -> dict[str, str]:
    """The SQL types of the app's keys: {"booking", "pack", "client", "org"}."""
    row = snapshot.call(lambda c: c.execute(query("app_keys")).fetchone())
    return dict(row["keys"]) if row else {}


def typed_key(text: str, key_type: str) -> Key | None:
    """An id as the key prints it (what SQL returns as text, what a cursor carries), in the key's Python
    type; None when the text is not exactly that. Case does not matter to a uuid."""
    if key_type == "uuid":
        text = text.lower()
        return uuid.UUID(text) if _CANONICAL_UUID.match(text) else None
    if key_type in ("integer", "bigint"):
        key = key_text(text, key_type)
        return int(key) if key == text else None
    return text


def key_of(snapshot: Snapshot, kind: str, text: str) -> str | None:
    """An id typed in, as the app's key of this kind prints; None when it cannot be one."""
    return key_text(text, key_types(snapshot).get(kind, "uuid"))


@dataclass(frozen=True)
class Cursor:
    """Where a page of recent ledger changes ended: its last row's updated_at and booking."""

    updated_at: datetime
    booking_id: Key

    def token(self) -> str:
        """The cursor as a URL-safe `?before=` value; exact to the microsecond, as timestamptz is."""
        return f"{(self.updated_at - _EPOCH) // _MICROSECOND}_{self.booking_id}"


def parse_cursor(text: str, key_type: str = "uuid") -> Cursor | None:
    """The cursor an "older" link carries; None when `text` is not one."""
    match = _CURSOR.match(text.strip())
    if match is None:
        return None
    try:
        at = _EPOCH + timedelta(microseconds=int(match["micros"]))
    except OverflowError:
        return None
    booking = typed_key(match["booking"], key_type)
    return None if booking is None else Cursor(at, booking)


@dataclass(frozen=True)
class PackName:
    """What the app knows of a pack: whose it is, when it was bought, and its offer's name if the app has one."""

    client_id: Key | None
    offer: str | None
    purchased_at: datetime | None


@dataclass
class Names:
    """The app's names for the ids on a page; an id it has no name for is shown as itself."""

    clients: ById[str] = field(default_factory=ById)
    packs: ById[PackName] = field(default_factory=ById)
    # A booking's client, where the app still has the booking.
    booking_clients: ById[Key] = field(default_factory=ById)

    def client_of(self, booking: Key | None, pack: Key | None = None) -> Key | None:
        """The client of a booking, else of its pack; None when the app knows neither."""
        if booking is not None and booking in self.booking_clients:
            return self.booking_clients[booking]
        if pack is not None and pack in self.packs:
            return self.packs[pack].client_id
        return None


@dataclass
class DashboardData:
    """What the page shows, read in one go."""

    status: dict[str, Any] | None
    lag: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    unfunded: list[dict[str, Any]] = field(default_factory=list)
    out_of_sync: list[dict[str, Any]] = field(default_factory=list)
    recent: list[dict[str, Any]] = field(default_factory=list)
    absorbed: list[dict[str, Any]] = field(default_factory=list)
    names: Names = field(default_factory=Names)
    # Paging of `recent`: the cursor this page starts after (None: the newest page), and
    # the one its "older" link carries (None: this is the oldest page).
    before: Cursor | None = None
    older: Cursor | None = None


def read_dashboard(snapshot: Snapshot, *, before: Cursor | None = None) -> DashboardData:
    """Read the page's data on the shared connection, recent changes from `before` on; raises DatabaseUnreachable when it cannot."""
    # Read now, so the cards agree with the tables read just after them.
    status = snapshot.status_now()

    def rows(sql: str, **params: Any) -> list[dict[str, Any]]:
        return snapshot.call(lambda c: c.execute(sql, params).fetchall())

    # One row more than a page says whether an older page exists.
    recent = rows(
        query("dashboard_recent_changes"),
        limit=ROWS + 1,
        before_at=before.updated_at if before else None,
        before_booking=str(before.booking_id) if before else None,
    )
    older = None
    if len(recent) > ROWS:
        recent = recent[:ROWS]
        older = Cursor(recent[-1]["updated_at"], recent[-1]["booking_id"])
    data = DashboardData(
        status=status,
        lag=rows(query("dashboard_lag"), minutes=LAG_MINUTES),
        dead_letters=rows(query("dashboard_dead_letters"), limit=ROWS),
        unfunded=rows(query("dashboard_unfunded"), limit=ROWS),
        out_of_sync=rows(query("dashboard_out_of_sync"), limit=ROWS),
        recent=recent,
        absorbed=rows(query("dashboard_absorbed_calls"), limit=ROWS),
        before=before,
        older=older,
    )
    data.names = read_names(
        snapshot,
        _ids(
            data.unfunded + data.recent + data.absorbed,
            ("booking_id", "purchase_id"),
        )
        + _ids(data.out_of_sync, ("booking_id", "booking_purchase_id", "ledger_purchase_id")),
    )
    return data


def read_names(snapshot: Snapshot, ids: Iterable[Key | None]) -> Names:
    """The app's names for these bookings, packs and clients, in one read."""
    wanted = sorted({str(i) for i in ids if i is not None})
    names = Names()
    if not wanted:
        return names
    for r in snapshot.call(lambda c: c.execute(query("dashboard_names"), {"ids": wanted}).fetchall()):
        if r["kind"] == "client" and r["name"]:
            names.clients[r["id"]] = r["name"]
        elif r["kind"] == "pack":
            names.packs[r["id"]] = PackName(r["client_id"], r["name"], r["at"])
        elif r["kind"] == "booking" and r["client_id"] is not None:
            names.booking_clients[r["id"]] = r["client_id"]
    return names


@dataclass
class PackView:
    """One pack: its balance, the bookings charged to it and those it could not pay, and its direct calls."""

    pack: dict[str, Any] | None
    charged: list[dict[str, Any]] = field(default_factory=list)
    unfunded: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    names: Names = field(default_factory=Names)


# Rows per table on a pack's page: a pack of a few dozen sessions shows whole.
PACK_ROWS = 200


def read_pack(snapshot: Snapshot, pack: Key) -> PackView:
    """The pack's page; `pack` is None in it when the app has no such pack."""

    def rows(sql: str, **params: Any) -> list[dict[str, Any]]:
        return snapshot.call(lambda c: c.execute(sql, params).fetchall())

    found = rows(query("dashboard_packs"), pack_ids=[str(pack)], client_ids=[], limit=1)
    if not found:
        return PackView(pack=None)
    view = PackView(
        pack=found[0],
        charged=rows(query("dashboard_pack_charges"), purchase_id=str(pack), state="paid", limit=PACK_ROWS),
        unfunded=rows(
            query("dashboard_pack_charges"), purchase_id=str(pack), state="unfunded", limit=PACK_ROWS
        ),
        calls=rows(query("dashboard_pack_calls"), purchase_id=str(pack), limit=PACK_ROWS),
    )
    view.names = read_names(
        snapshot,
        [pack, found[0]["client_id"], *_ids(view.charged + view.unfunded + view.calls, ("booking_id",))],
    )
    return view


@dataclass
class SearchResult:
    """What a search found: bookings, packs (those named, and every pack of a client found) and clients."""

    query: str
    bookings: list[dict[str, Any]] = field(default_factory=list)
    packs: list[dict[str, Any]] = field(default_factory=list)
    clients: list[Key] = field(default_factory=list)
    names: Names = field(default_factory=Names)


# Matches per kind a search shows.
SEARCH_ROWS = 50


def search(snapshot: Snapshot, text: str) -> SearchResult:
    """Find bookings, packs and clients by id, and clients and packs by name."""
    result = SearchResult(query=text)
    found = snapshot.call(
        lambda c: c.execute(query("dashboard_search"), {"query": text, "limit": SEARCH_ROWS}).fetchall()
    )
    bookings = [r["id"] for r in found if r["kind"] == "booking"]
    packs = [r["id"] for r in found if r["kind"] == "pack"]
    client_key = key_types(snapshot).get("client", "uuid") if found else "uuid"
    clients = (typed_key(r["id"], client_key) for r in found if r["kind"] == "client")
    result.clients = list(dict.fromkeys(c for c in clients if c is not None))
    if bookings:
        result.bookings = snapshot.call(
            lambda c: c.execute(query("dashboard_bookings"), {"booking_ids": bookings}).fetchall()
        )
    if packs or result.clients:
        result.packs = snapshot.call(
            lambda c: c.execute(
                query("dashboard_packs"),
                {"pack_ids": packs, "client_ids": [str(c) for c in result.clients], "limit": SEARCH_ROWS},
            ).fetchall()
        )
    result.names = read_names(
        snapshot,
        [
            *result.clients,
            *_ids(result.bookings, ("booking_id", "purchase_id", "ledger_purchase_id", "client_id")),
            *_ids(result.packs, ("id", "client_id")),
        ],
    )
    return result


def find_booking(snapshot: Snapshot, booking_id: Key) -> dict[str, Any] | None:
    """The booking as the app and the ledger hold it; None when neither has it."""
    rows = snapshot.call(
        lambda c: c.execute(query("dashboard_bookings"), {"booking_ids": [str(booking_id)]}).fetchall()
    )
    return rows[0] if rows else None


def dead_letters_by_id(snapshot: Snapshot, ids: list[int]) -> list[dict[str, Any]]:
    """The dead letters among `ids` that are still in the dead-letter queue, however old."""
    wanted = _msg_ids(ids)[:MAX_REDRIVE]
    if not wanted:
        return []
    return snapshot.call(
        lambda c: c.execute(query("dashboard_dead_letters_by_id"), {"msg_ids": wanted}).fetchall()
    )


def redrive(snapshot: Snapshot, ids: list[int]) -> int:
    """Move these dead letters back onto the queue; how many moved."""
    wanted = _msg_ids(ids)
    if not wanted:
        return 0
    row = snapshot.call(lambda c: c.execute(query("dashboard_redrive"), {"msg_ids": wanted}).fetchone())
    return int(row["moved"]) if row else 0


def discard(snapshot: Snapshot, ids: list[int], reason: str) -> int:
    """Archive these dead letters for good, with the reason; how many were archived."""
    wanted = _msg_ids(ids)
    if not wanted:
        return 0
    row = snapshot.call(
        lambda c: c.execute(query("dashboard_discard"), {"msg_ids": wanted, "reason": reason}).fetchone()
    )
    return int(row["discarded"]) if row else 0


def replay(snapshot: Snapshot, booking: Key) -> int:
    """Enqueue one booking again; how many events were sent."""
    row = snapshot.call(
        lambda c: c.execute(query("dashboard_replay"), {"booking_id": str(booking)}).fetchone()
    )
    return int(row["enqueued"]) if row else 0


def _msg_ids(ids: list[int]) -> list[int]:
    """The distinct ids a queue message can have (a positive bigint), in order; others name no dead letter."""
    return sorted({i for i in ids if 0 < i < 2**63})


def _ids(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> list[Key | None]:
    return [r.get(k) for r in rows for k in keys]
