"""Man pages for ``mmz`` and each subcommand, generated from the Typer app with click-man.

    python -m mmzcli.manpages man/        (or: make man)

click-man walks a click command tree, but typer >= 0.29 carries its own copy of
click, whose classes click-man's ``isinstance`` checks do not recognise; the
shim below hands click-man typer's Context, Option class and helpers instead.
The pages carry the version where man puts a date, so they change only when
the help texts do (a test fails when ``man/`` is stale).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path


def write_pages(directory: Path) -> list[Path]:
    """Write mmz.1 and mmz-<command>.1 into ``directory``; returns the files."""
    import click_man.core
    from typer.main import get_command

    from mmzcli import __version__
    from mmzcli.cli import app

    try:
        from typer import _click
        from typer import core as typer_core
    except ImportError:  # typer < 0.29 builds on click itself, which click-man knows
        pass
    else:
        click_man.core.click = types.SimpleNamespace(
            Context=_click.core.Context, Option=typer_core.TyperOption, utils=_click.utils
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("mmz*.1"):
        old.unlink()
    click_man.core.write_man_pages("mmz", get_command(app), version="mmz", target_dir=str(directory), date=__version__)
    return sorted(directory.glob("mmz*.1"))


if __name__ == "__main__":
    for path in write_pages(Path(sys.argv[1] if len(sys.argv) > 1 else "man")):
        print(path)
