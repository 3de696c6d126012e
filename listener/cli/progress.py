"""Progress bars on stderr for operator commands; silent when stderr is not a terminal."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from listener.ops.walk import Progress as ProgressReport


def progress_bar(*, quiet: bool = False) -> Progress:
    """A progress bar for counted work."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=quiet,
        transient=True,
    )


@contextmanager
def progress_callback(*, quiet: bool = False) -> Iterator[ProgressReport]:
    """A progress bar for the block, fed by the (what, done, total) reports an operator command makes."""
    with progress_bar(quiet=quiet) as bar:
        tasks: dict[str, TaskID] = {}

        def report(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        yield report
