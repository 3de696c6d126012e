"""Event payloads: what the trigger writes, and the verdict on anything else found in the queue."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

# Exactly what jsonb_build_object writes for a uuid: lowercase, hyphenated.
# Braced, uppercase or URN forms are not ours, so they are not guessed at.
# sql/functions/10_rules.sql (session_ledger.is_canonical_uuid) holds the same pattern; a test keeps them equal.
CANONICAL_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
_UUID = re.compile(CANONICAL_UUID)

# The types an app's booking key may have (the mapping's key types), and the range of each integer one.
KeyType = Literal["uuid", "integer", "bigint", "text"]
_INT_RANGE = {"integer": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}


def key_problem(value: object, key_type: str) -> str | None:
    """Why a booking_id is not exactly what jsonb_build_object writes for a key of this type; None when it is.

    uuid: a string, canonical; integer and bigint: a JSON integer (no fraction, no exponent) in the
    type's range; text: any string.
    """
    if key_type in _INT_RANGE:
        low, high = _INT_RANGE[key_type]
        if not isinstance(value, int) or isinstance(value, bool):
            return f"not an {key_type}" if key_type == "integer" else f"not a {key_type}"
        return None if low <= value <= high else f"out of range for {key_type}"
    if not isinstance(value, str):
        return "not a string"
    if key_type == "uuid" and not _UUID.match(value):
        return "not a canonical uuid (lowercase, hyphenated)"
    return None


def key_text(text: str, key_type: str) -> str | None:
    """An id typed in (a URL, a form) as its key prints, or None when it cannot be a key of this type.

    A uuid may be typed as PostgreSQL reads one (capitals, braces, no hyphens); an integer in decimal.
    """
    text = text.strip()
    if key_type in _INT_RANGE:
        if not re.fullmatch(r"-?[0-9]{1,19}", text):
            return None
        value = int(text)
        low, high = _INT_RANGE[key_type]
        return str(value) if low <= value <= high else None
    if key_type == "uuid":
        try:
            return str(uuid.UUID(text))
        except ValueError:
            return None
    return text if 0 < len(text) <= 1000 else None


class BookingChanged(BaseModel):
    """The only event: this booking may now consume a different pack, or none."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    type: Literal["booking.changed"]
    v: Literal[1]
    # str or int as the JSON holds it; key_problem() judges it against the app's key type
    booking_id: str | int


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
    booking_id: str  # the key as it prints (a uuid lowercase and hyphenated, an integer in decimal)
    enqueued_at: datetime


@dataclass(frozen=True)
class Rejected:
    """A message that goes to the dead-letter queue, and why."""

    msg_id: int
    reason: str


def judge(
    raw: RawMessage, *, max_payload_bytes: int, max_reads: int, booking_key: str = "uuid"
) -> Accepted | Rejected:
    """Accept a well-formed event naming a booking by a key of type booking_key, or reject it with a one-line reason."""
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
        if key_problem(event.booking_id, booking_key) is None:
            return Accepted(raw.msg_id, str(event.booking_id), raw.enqueued_at)
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
    problem = key_problem(event.booking_id, booking_key)
    if problem is not None:
        return Rejected(raw.msg_id, f"invalid booking_id: {problem}")
    return Accepted(raw.msg_id, str(event.booking_id), raw.enqueued_at)


def _json_kind(value: object) -> str:
    return {type(None): "null", str: "string", list: "array", bool: "boolean"}.get(type(value), "number")


def _short(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
