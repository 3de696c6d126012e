"""The subcommands, a module per command or small group: each holds its parsers, their handlers
and what they print; listener/cli/render.py holds only what several commands print alike.

Handlers import the operations they call, and printing imports rich, only when they run, so
`listener --help` and a usage error stay quick.
"""

from __future__ import annotations

from listener.cli.args import Subparsers

from . import audit, dev, discard, doctor, install, map, operate, repair, run, status

# In the order `listener --help` lists them: install, run, watch, operate, repair, try out.
GROUPS = (install, map, run, status, doctor, operate, repair, discard, audit, dev)


def register(subparsers: Subparsers) -> None:
    """Add every subcommand."""
    for group in GROUPS:
        group.register(subparsers)
