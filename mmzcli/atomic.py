"""Atomic file writes: write beside the target, then rename, so readers never see half a file.

A crash (or SIGKILL) leaves either the old file or the new one, plus at most a
hidden ``.NAME.PID.tmpSUFFIX`` that the next write replaces.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix, so writers that go by it still work).

    Write the file there inside the ``with`` block; it is renamed onto ``path``
    when the block ends without error and removed when it raises.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
