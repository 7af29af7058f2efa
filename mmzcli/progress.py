"""The one progress bar of every long command (rich), silent under ``--quiet`` or without a console."""

from __future__ import annotations

from typing import Any


def progress_bar(console: Any, *fields: str) -> Any:
    """A ``rich.progress.Progress``: description, bar, done/total, ``fields`` (rich text columns), time left.

    Use it as a context manager; with ``console`` None or quiet it draws nothing.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *(TextColumn(text) for text in fields),
        TimeRemainingColumn(),
    ]
    return Progress(*columns, console=console, disable=console is None or console.quiet, transient=False)
