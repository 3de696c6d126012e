"""Event payloads: what the trigger writes, and the verdict on anything else found in the queue."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

# Exactly what jsonb_build_object writes for a uuid: lowercase, hyphenated.
# Braced, uppercase or URN forms are not ours, so they are not guessed at.
# sql/functions/10_rules.sql (session_ledger.is_canonical_uuid) holds the same pattern; a test keeps them equal.
CANONICAL_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
CanonicalUuid = Annotated[str, StringConstraints(pattern=CANONICAL_UUID)]


class BookingChanged(BaseModel):
    """The only event: this booking may now consume a different pack, or none."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    type: Literal["booking.changed"]
    v: Literal[1]
    booking_id: CanonicalUuid


@dataclass(frozen=True)
class RawMessage:
    """A message as read from the queue, its payload still unparsed text."""

    msg_id: int
    read_ct: int
    enqueued_at: datetime
    message: str | None


@dataclass(frozen=True)
class Accepted:
    """A message that names a booking."""

    msg_id: int
    booking_id: str  # canonical: lowercase, hyphenated
    enqueued_at: datetime


@dataclass(frozen=True)
class Rejected:
    """A message that goes to the dead-letter queue, and why."""

    msg_id: int
    reason: str


def judge(raw: RawMessage, *, max_payload_bytes: int, max_reads: int) -> Accepted | Rejected:
    """Accept a well-formed event or reject it with a one-line reason."""
    if raw.read_ct > max_reads:
        return Rejected(raw.msg_id, f"read {raw.read_ct} times without being handled")
    text = raw.message
    if text is None:
        return Rejected(raw.msg_id, "message is SQL NULL")
    if len(text) > max_payload_bytes:
        return Rejected(raw.msg_id, f"payload of {len(text)} bytes exceeds {max_payload_bytes}")
    try:
        # The common case, validated by pydantic's Rust JSON parser in one step.
        event = BookingChanged.model_validate_json(text)
        return Accepted(raw.msg_id, event.booking_id, raw.enqueued_at)
    except ValidationError:
        pass  # find the precise reason below
    try:
        payload = json.loads(text)
    except RecursionError:
        return Rejected(raw.msg_id, "payload is nested too deeply")
    except ValueError:
        return Rejected(raw.msg_id, "payload is not parseable JSON")
    if not isinstance(payload, dict):
        return Rejected(raw.msg_id, f"payload is a JSON {_json_kind(payload)}, not an object")
    kind, version = payload.get("type"), payload.get("v")
    if kind != "booking.changed" or version != 1:
        return Rejected(raw.msg_id, f"unsupported event type {_short(kind)} version {_short(version)}")
    try:
        event = BookingChanged.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "payload"
        return Rejected(raw.msg_id, f"invalid {where}: {first['msg']}")
    return Accepted(raw.msg_id, event.booking_id, raw.enqueued_at)


def _json_kind(value: object) -> str:
    return {type(None): "null", str: "string", list: "array", bool: "boolean"}.get(type(value), "number")


def _short(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
