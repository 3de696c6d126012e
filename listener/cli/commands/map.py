"""`listener map`: propose the app's mapping from its database, for the user to confirm."""

from __future__ import annotations

import argparse
import sys

from listener.cli.args import Subparsers, command
from listener.settings import Settings


def register(subparsers: Subparsers) -> None:
    """Add `map`."""
    command(
        subparsers,
        "map",
        "propose the app's mapping (TOML) from its tables, for `listener migrate --mapping`",
        _map,
        description="Print a mapping proposed from the app's tables, foreign keys, functions and roles, "
        "as TOML with a `# guess:` comment on each guess, for you to check and pass to "
        "`listener migrate --mapping FILE` (nothing is written to the database).",
    )


def _map(args: argparse.Namespace, settings: Settings) -> int:
    """Print the proposal; say on stderr if it does not parse as it stands."""
    from listener.core.db import connect
    from listener.mapping.model import MappingError
    from listener.ops.mapping_propose import NOTHING_FOUND, check_parses, propose

    with connect(settings.require_dsn(), purpose="map") as conn:
        text = propose(conn)
    print(text, end="")
    if NOTHING_FOUND in text:
        # nothing to edit: say so once, not as the model's missing sections
        print(f"listener map: {NOTHING_FOUND}", file=sys.stderr)
        return 1
    try:
        check_parses(text)
    except MappingError as exc:
        print(f"listener map: the proposal needs editing before it is used:\n{exc}", file=sys.stderr)
    return 0
