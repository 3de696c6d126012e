"""The `listener` command line: one subcommand per job, one line per error."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import psycopg
from pydantic import ValidationError

from listener import __version__, logs
from listener.cli import commands
from listener.cli.args import Handler, Parser
from listener.core.sql_files import SCHEMA_VERSION
from listener.errors import ConfigError, ListenerError, first_line
from listener.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser, for tools and tests that check command lines."""
    parser = Parser(prog="listener", description=__doc__)
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {__version__} (schema version {SCHEMA_VERSION})",
        help="print the package's version and the schema version it installs, then exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    commands.register(sub)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    """The settings, with each option named after a setting (its dest) overriding the environment."""
    given = {name: getattr(args, name, None) for name in Settings.model_fields}
    try:
        return Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][-1]) if first["loc"] else "setting"
        raise ConfigError(f"invalid {name}: {first['msg']}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; return the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
        logs.configure(fmt=settings.log_format)
        handler: Handler = args.handler
        return handler(args, settings)
    except ListenerError as exc:
        return _failed(args.command, str(exc), exc.exit_code)
    except psycopg.Error as exc:
        return _failed(args.command, f"database error {first_line(exc)}", 1)
    except KeyboardInterrupt:
        return _failed(args.command, "interrupted", 130)


def _failed(command: str, message: str, exit_code: int) -> int:
    """Say in one line why the command failed; return its exit code."""
    from listener.cli.render import render_error

    render_error(f"listener {command}: {message}")
    return exit_code
