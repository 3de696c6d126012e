"""What every subcommand shares: how its parser is made, and the argument types that check values."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NoReturn, TypeAlias

from listener.settings import Settings

# What a subcommand runs once its arguments parse: the process exit code.
Handler = Callable[[argparse.Namespace, Settings], int]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the problem and where help is."""
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


Subparsers: TypeAlias = "argparse._SubParsersAction[Parser]"


def command(
    subparsers: Subparsers,
    name: str,
    summary: str,
    handler: Handler,
    *,
    description: str | None = None,
    dsn: bool = True,
) -> argparse.ArgumentParser:
    """Add a subcommand bound to its handler: `summary` in `listener --help`, a one-line description
    atop its own `--help` (the summary as a sentence unless given), and `--dsn` unless told not to."""
    parser = subparsers.add_parser(
        name, help=summary, description=description or f"{summary[0].upper()}{summary[1:]}."
    )
    parser.set_defaults(handler=handler)
    if dsn:
        parser.add_argument(
            "--dsn", help="PostgreSQL connection string (default: $LISTENER_DSN, else $DATABASE_URL)"
        )
    return parser


def from_env(setting: str, *, unset: str = "none") -> str:
    """Where a listener setting comes from when its option is not given, for its help line;
    `unset` says what a setting without a default means."""
    env = f"{Settings.model_config.get('env_prefix', '')}{setting}".upper()
    default = Settings.model_fields[setting].default
    return f"(default: ${env}, else {unset if default is None else default})"


def timestamp(text: str) -> datetime:
    """An ISO 8601 time; without a zone it is taken as UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def uuid_of(noun: str) -> Callable[[str], uuid.UUID]:
    """The argument type of an id that is a UUID; a bad one is a usage error naming `noun` ("a pack id")."""

    def parse(text: str) -> uuid.UUID:
        try:
            return uuid.UUID(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun} (UUID): {text!r}") from None

    return parse


def seconds(text: str) -> float:
    """A length of time in seconds: a finite number, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds (0 or more): {text!r}")
    return value


def message_id(text: str) -> int:
    """A queue message id: a positive bigint."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value < 2**63:
        raise argparse.ArgumentTypeError(f"not a message id (a positive whole number): {text!r}")
    return value
