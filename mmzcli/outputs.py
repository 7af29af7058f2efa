"""Outputs never destroy inputs, never replace what mmz did not write, and have one writer at a time.

Every command that writes a catalogue, a store or a run directory claims its output first
(``claim_catalogue``, ``claim_store``, ``hold_run_lock``), in this order:

1. ``refuse_aliases``: the output, and the siblings written beside it (``X.partial``, ``X.parts``,
   ``X.lock``), must not be, hold or lie inside an input (tile, catalogue, store, run file), compared
   by resolved path (through symlinks) and by inode (hard links);
2. the lock: one writer per output, by ``fcntl.flock`` on ``X.lock`` beside it (which holds the
   writer's PID).  The kernel drops a flock when its process dies, so a lock file left by a killed
   run blocks nothing; only a live holder does.  A lock lasts until the function decorated with
   ``@releases_locks`` that took it returns or raises.  Under torchrun or ``--shard`` jobs several
   processes share one catalogue: only the merging process locks it, a shard job locks its shard;
3. what is already there must be of the kind mmz writes there (a ``PHOTOZ`` catalogue with MMZVERS
   and CATKIND; a Zarr store whose attributes carry mmz's ``schema_version``/``inputs_key``):
   ``--overwrite`` replaces only that, never a stranger.  (Checked under the lock: a live writer's
   half-written files are its own business.)
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TypeVar

from mmzcli.errors import ConfigError, InputError

LOCK_SUFFIX = ".lock"
CATALOGUE_SIBLINGS = (".partial", ".parts", LOCK_SUFFIX)  # what predict writes beside <CAT> (docs/design.md §5)
STORE_SIBLINGS = (".partial", LOCK_SUFFIX)  # a store is built as <name>.partial (store.py)
MMZ_STORE_ATTRS = ("schema_version", "inputs_key")  # attributes only mmz's stores carry (store.py)
MMZ_STORE_ARRAYS = ("band_ok", "flags")  # arrays of every mmz store, beside its image array
STORE_KINDS = {"stamps": "stamp store", "cubes": "cube store"}  # image array -> what the store is (cutout, cubes)

Inputs = dict[str, Iterable[Path | str | None]]  # what the inputs are ("tile", "catalogue", ...) -> their paths
F = TypeVar("F", bound=Callable[..., Any])

_held_locks: ContextVar[ExitStack | None] = ContextVar("mmz_held_locks", default=None)


# ----------------------------------------------------------------------------- outputs that are inputs


def sibling(output: Path, suffix: str) -> Path:
    """``X`` + ``suffix`` beside ``X`` (``X.partial``, ``X.parts``, ``X.lock``)."""
    return output.with_name(output.name + suffix)


def refuse_aliases(output: Path, inputs: Inputs, *, siblings: Iterable[str] = (), label: str = "-o") -> None:
    """Refuse an ``output`` that is, holds or lies inside one of ``inputs``, or whose ``siblings`` are one.

    ``label`` names the output in the message (the option, or what it is where no option names it).
    """
    output = Path(output)
    candidates = [
        (where, suffix, where.resolve(), _inode(where))
        for where, suffix in [(output, None), *((sibling(output, s), s) for s in siblings)]
    ]
    for what, paths in inputs.items():
        for path in paths:
            if path is None:
                continue
            resolved, inode = Path(path).resolve(), _inode(Path(path))
            for where, suffix, mine, my_inode in candidates:
                relation = _relation(mine, my_inode, resolved, inode)
                if relation is None:
                    continue
                if suffix is not None:
                    problem = f"its {where.name} would be written over an input ({what} {path})"
                elif relation == "is":
                    problem = f"that is an input ({what} {path})"
                elif relation == "holds":
                    problem = f"an input lies inside it ({what} {path})"
                else:
                    problem = f"it lies inside an input ({what} {path})"
                raise ConfigError(f"{label} {output}: {problem}; choose another output name")


def _relation(output: Path, output_inode: tuple | None, path: Path, inode: tuple | None) -> str | None:
    """How the resolved ``output`` overlaps the resolved input ``path``: "is", "holds", "inside", or None."""
    if output == path or (inode is not None and inode == output_inode):  # the inode: hard links
        return "is"
    if output in path.parents:
        return "holds"
    if path in output.parents:
        return "inside"
    return None


def _inode(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def run_files(run: Any) -> list[Path]:
    """Every file of a run directory (``runs.RunDir``): models, config, profile, out-of-fold PDFs, log."""
    return sorted(run.path.iterdir()) if run.path.is_dir() else []


# ----------------------------------------------------------------------------- only what mmz wrote is replaced


def claim_catalogue(
    output: Path,
    inputs: Inputs,
    overwrite: bool,
    *,
    lock: bool = True,
    shard: tuple[int, int] | None = None,
    label: str = "-o",
) -> None:
    """Claim the photo-z catalogue ``output`` for the enclosing ``@releases_locks`` call (module docstring).

    ``lock`` False: a process that shares the output with one that locks it (torchrun ranks but 0);
    ``shard`` (I, N): lock only shard I's part (``hold_catalogue_lock``).
    """
    output = Path(output)
    refuse_aliases(output, inputs, siblings=CATALOGUE_SIBLINGS, label=label)
    if lock:
        hold_catalogue_lock(output, shard)
    check_catalogue(output, overwrite, label=label)


def check_catalogue(output: Path, overwrite: bool, *, label: str = "-o") -> None:
    """Refuse to replace anything but an mmz catalogue, and that only with ``overwrite``.

    The ``.partial`` and ``.parts`` siblings, which predict overwrites and empties, must be mmz's too.
    """
    output = Path(output)
    if output.is_dir():
        raise ConfigError(
            f"{label} {output}: a directory is there, and the output is a catalogue (a file); "
            f"choose another output name"
        )
    if os.path.lexists(output):
        if not is_mmz_catalogue(output):
            raise ConfigError(
                f"{label} {output}: this output exists and is not a catalogue mmz wrote; refusing to "
                f"overwrite it; remove it yourself or choose another name"
            )
        if not overwrite:
            raise ConfigError(
                f"{label} {output}: this output catalogue exists; use --overwrite to replace it, or choose another name"
            )
    partial, parts = sibling(output, ".partial"), sibling(output, ".parts")
    if os.path.lexists(partial) and not is_mmz_catalogue(partial):
        raise ConfigError(
            f"{label} {output}: {partial.name} beside it is not an unfinished catalogue of mmz, and "
            f"would be overwritten; remove it yourself or choose another name"
        )
    if os.path.lexists(parts) and not _is_parts_folder(parts):
        raise ConfigError(
            f"{label} {output}: {parts.name} beside it is not mmz's folder of finished tiles, and "
            f"would be emptied; remove it yourself or choose another name"
        )


def _is_parts_folder(parts: Path) -> bool:
    """A folder of what predict keeps in ``<CAT>.parts``: state.json, <tile>.npz, <tile>.skipped, shard locks.

    A file that vanishes while it is looked at (a torchrun rank or shard job at work) counts as one.
    """
    if parts.is_symlink() or not parts.is_dir():
        return False
    try:
        entries = list(parts.iterdir())
    except FileNotFoundError:
        return True
    return all(
        not os.path.lexists(p) or (p.is_file() and p.suffix in (".npz", ".skipped", ".json", LOCK_SUFFIX))
        for p in entries
    )


def is_mmz_catalogue(path: Path) -> bool:
    """A FITS file (or gzip-compressed one) whose ``PHOTOZ`` HDU carries MMZVERS and CATKIND: a catalogue
    mmz predict wrote."""
    import gzip

    from astropy.io import fits

    if not Path(path).is_file():
        return False
    try:
        with open(path, "rb") as f:
            start = f.read(6)
        if start[:2] == b"\x1f\x8b":  # gzip
            with gzip.open(path, "rb") as f:
                start = f.read(6)
        if start != b"SIMPLE":
            return False
        header = fits.getheader(path, extname="PHOTOZ")
    except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError):
        return False
    return "MMZVERS" in header and "CATKIND" in header


def claim_store(output: Path, image_name: str, inputs: Inputs, *, label: str = "-o") -> None:
    """Claim the Zarr store ``output`` for the enclosing ``@releases_locks`` call (module docstring)."""
    output = Path(output)
    refuse_aliases(output, inputs, siblings=STORE_SIBLINGS, label=label)
    hold_lock(output)
    check_store(output, image_name, label=label)


def check_store(output: Path, image_name: str, *, label: str = "-o") -> None:
    """Refuse to replace anything but an mmz store of the kind ``image_name`` names.

    ``image_name`` is the store's image array ("stamps" for mmz cutout, "cubes" for build-cubes).  An
    mmz store of that kind is left to the caller (complete: --overwrite; partial: resumed).
    """
    output = Path(output)
    kind = STORE_KINDS.get(image_name, f"{image_name} store")
    if os.path.lexists(output):
        if not output.is_dir():  # (a link to a store on another disk is a store)
            raise ConfigError(
                f"{label} {output}: a file is there, and the output is a {kind} (a directory); "
                f"choose another output name"
            )
        if not is_mmz_store(output, image_name):
            other = [k for name, k in STORE_KINDS.items() if name != image_name and is_mmz_store(output, name)]
            what = f"is mmz's {other[0]}, not a {kind}" if other else f"is not a {kind} mmz wrote"
            raise ConfigError(
                f"{label} {output}: this output exists and {what}; refusing to overwrite it; remove it "
                f"yourself or choose another name"
            )
    partial = sibling(output, ".partial")
    if os.path.lexists(partial) and not (partial.is_dir() and (partial / "zarr.json").is_file()):
        raise ConfigError(
            f"{label} {output}: {partial.name} beside it is not an unfinished store of mmz, and would "
            f"be replaced; remove it yourself or choose another name"
        )


def is_mmz_store(path: Path, image_name: str) -> bool:
    """A Zarr store mmz wrote, with the image array ``image_name``.

    Its attributes carry mmz's schema_version or inputs_key; a store whose zarr.json is damaged still
    counts when its arrays are mmz's, so that ``--overwrite`` can rebuild it.
    """
    path = Path(path)
    if not (path / image_name).is_dir():
        return False
    try:
        attributes = json.loads((path / "zarr.json").read_text()).get("attributes", {})
    except (OSError, ValueError, AttributeError):
        attributes = None
    if isinstance(attributes, dict) and any(key in attributes for key in MMZ_STORE_ATTRS):
        return True
    return attributes is None and all((path / name).is_dir() for name in MMZ_STORE_ARRAYS)


# ----------------------------------------------------------------------------- one writer per output


def lock_path(output: Path) -> Path:
    """The lock file of ``output``: ``X.lock`` beside it."""
    return sibling(Path(output), LOCK_SUFFIX)


@contextmanager
def output_lock(output: Path, lock: Path | None = None, part: str | None = None) -> Iterator[Path]:
    """Hold the lock of ``output`` (``lock``, by default ``X.lock``) for the ``with`` block.

    Raises InputError at once, naming the holder's PID, when another process holds it (``part``: which
    part of the output the lock is for, e.g. "shard 1/4", for the message).  The lock file holds this
    process's PID and is removed when the block ends.
    """
    output = Path(output)
    lock = Path(lock) if lock is not None else lock_path(output)
    fd = _acquire(output, lock, part)
    try:
        yield lock
    finally:
        try:
            if _same_file(fd, lock):
                lock.unlink()
        finally:
            os.close(fd)  # releases the flock


def _acquire(output: Path, lock: Path, part: str | None) -> int:
    import fcntl

    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"{lock}: cannot create the folder of the output's lock file ({exc.strerror or exc}); "
            f"choose another output name"
        ) from None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise InputError(
                f"{lock}: cannot create the lock file of the output {output} ({exc.strerror or exc}); "
                f"make {lock.parent} writable or choose another output name"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _pid_in(fd)
            os.close(fd)
            raise InputError(
                f"another mmz (PID {holder}) is writing the output {output}"
                f"{f' ({part})' if part else ''}; wait for it to finish or stop it"
            ) from None
        if _same_file(fd, lock):
            break
        os.close(fd)  # the previous holder removed the file between our open and flock: lock the new one
    text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    if text and not text.isdigit():
        os.close(fd)
        raise ConfigError(
            f"{lock}: not a lock file mmz wrote (it would be overwritten) beside the output {output}; "
            f"remove it yourself or choose another output name"
        )
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _pid_in(fd: int) -> str:
    text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"


def _same_file(fd: int, path: Path) -> bool:
    try:
        mine, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino)


def refuse_if_locked(locks: Iterable[Path], output: Path) -> None:
    """Refuse, naming the holder's PID, when a live process holds one of ``locks`` (stale files do not count)."""
    import fcntl

    for lock in locks:
        try:
            fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(
                f"another mmz (PID {_pid_in(fd)}) is writing the output {output} (lock {lock.name}); "
                f"wait for it to finish or stop it"
            ) from None
        finally:
            os.close(fd)


def releases_locks(func: F) -> F:
    """Decorator: the locks that ``hold_lock`` takes during a call are released when the call returns or raises."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with ExitStack() as stack:
            token = _held_locks.set(stack)
            try:
                return func(*args, **kwargs)
            finally:
                _held_locks.reset(token)

    return wrapper  # type: ignore[return-value]


def hold_lock(output: Path, lock: Path | None = None, part: str | None = None) -> Path:
    """Lock ``output`` until the enclosing ``@releases_locks`` function returns (see ``output_lock``)."""
    stack = _held_locks.get()
    if stack is None:
        raise RuntimeError("hold_lock outside a function decorated with @releases_locks")
    return stack.enter_context(output_lock(output, lock, part))


def hold_catalogue_lock(output: Path, shard: tuple[int, int] | None = None) -> Path:
    """Lock the catalogue ``output`` for the enclosing call: all of it, or (``shard`` = I, N) one shard's part.

    The writer of the whole refuses to start while a shard job runs (it would empty ``X.parts`` under
    it), and a shard job refuses while the whole is being written.
    """
    output = Path(output)
    parts = sibling(output, ".parts")
    if shard is None:
        lock = hold_lock(output)
        refuse_if_locked(sorted(parts.glob(f"shard-*-of-*{LOCK_SUFFIX}")), output)
        return lock
    refuse_if_locked([lock_path(output)], output)
    index, count = shard
    return hold_lock(output, parts / f"shard-{index}-of-{count}{LOCK_SUFFIX}", f"shard {index}/{count}")


def hold_run_lock(run_dir: Path, folds: Iterable[int]) -> None:
    """Lock the ``folds`` of a training run directory (``runs/NAME.fold<k>.lock`` beside it).

    One lock per fold, not per run: ``mmz train --fold K`` jobs of one run may run side by side (docs/design.md
    §5), two trainings of one fold may not.  A file in the run directory's place is refused.
    """
    run_dir = Path(run_dir)
    if os.path.lexists(run_dir) and not run_dir.is_dir():
        raise ConfigError(
            f"run directory {run_dir}: a file is there, and the output is a run (a directory); "
            f"choose another --name or remove the file"
        )
    for fold in sorted(set(folds)):
        hold_lock(run_dir, sibling(run_dir, f".fold{fold}{LOCK_SUFFIX}"), f"fold {fold}")
