"""The Zarr v3 stores of a project (``stamps.zarr``, ``cubes.zarr``) and how they are written.

A store is built under ``<name>.partial`` and renamed to ``<name>`` only when
complete, so nothing that looks complete is ever half-written.  Image rows are
written in blocks aligned with the chunks by one writer process; each finished
block is recorded in the group's attributes (zarr writes them atomically), so
a killed build resumes with the blocks still missing and never duplicates rows.

Every chunk of every array is written, even one equal to the fill value (zarr
would skip it), and the array names are recorded when the store is finished;
so ``open_store`` can tell a damaged store (a chunk or an array missing) by a
listing, without reading it, and refuse it instead of reading zeros.  Float
arrays are filled with NaN, so that whatever escapes that check is not data.
``verify_store`` reads every chunk, for ``mmz build-cubes --verify``.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from mmzcli.errors import InputError

if TYPE_CHECKING:
    from zarr.core.array_spec import ArrayConfigParams

SCHEMA_VERSION = 2  # 2: every chunk stored and the array names recorded (1: zarr skipped fill-valued chunks)
# zarr's default skips, and deletes, fill-valued chunks.  The ignore: zarr (Python >= 3.11) imports NotRequired from
# typing, which mypy's Python 3.10 lacks, so every key of ArrayConfigParams reads as required.
WRITE_EVERY_CHUNK: ArrayConfigParams = {"write_empty_chunks": True}  # type: ignore[typeddict-item]
DECODE_ERRORS = (RuntimeError, ValueError, TypeError, OSError, EOFError)  # what codecs raise on damaged bytes
CHUNK_ROWS = 32  # whole cubes per chunk: a training batch reads few chunks
TABLE_CHUNK = 65536  # rows per chunk of the 1-d columns
CUBES_NAME = "cubes.zarr"  # PROJECT/cubes.zarr: the labelled training set (mmz build-cubes)
STAMPS_NAME = "stamps.zarr"  # PROJECT/stamps.zarr: mmz cutout's default output
FINGERPRINT_BYTES = 1 << 20  # bytes read from each end of a tile for its fingerprint


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def cubes_path(project: Path) -> Path:
    """The project's cube store."""
    return Path(project) / CUBES_NAME


@lru_cache(maxsize=4096)
def _fingerprint(resolved: str, size: int, mtime_ns: int, whole: bool) -> str:
    digest = hashlib.sha256(str(size).encode())
    with open(resolved, "rb") as f:
        if whole or size <= 2 * FINGERPRINT_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        else:
            digest.update(f.read(FINGERPRINT_BYTES))
            f.seek(size - FINGERPRINT_BYTES)
            digest.update(f.read(FINGERPRINT_BYTES))
    return digest.hexdigest()


def file_fingerprint(path: Path, *, whole: bool = False) -> str:
    """A hash of a file's content, whatever the path's spelling: all of it, or its size, first and last MiB.

    Tiles get the cheap form (a survey's tiles are too large to read twice); catalogues are hashed whole.
    """
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return _fingerprint(str(resolved), stat.st_size, stat.st_mtime_ns, whole)


def inputs_key(kind: str, images: Iterable, catalog: Path | None, *settings: Any) -> str:
    """A short hash of everything that determines an output, to refuse resuming a different build.

    Tiles and catalogue count by content (``file_fingerprint``), never by how their paths are spelled,
    so a command resumed from another directory resumes, and an edited input starts afresh.
    """
    files = sorted({(file_fingerprint(Path(i.path)), i.hdu) for i in images})
    parts = [kind, files, file_fingerprint(catalog, whole=True) if catalog is not None else None, *settings]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_complete(path: Path) -> bool:
    import zarr

    if not (Path(path) / "zarr.json").exists():
        return False
    try:
        return bool(zarr.open_group(str(path), mode="r").attrs.get("complete", False))
    except Exception:
        return False


def _compressor():
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle")


def open_for_writing(
    path: Path,
    *,
    key: str,
    n: int,
    bands: list[str],
    size: int,
    image_name: str,
    columns: dict[str, np.ndarray],
    attrs: dict[str, Any],
    overwrite: bool,
):
    """Open (resume) or create the partial store of ``path``.

    ``columns`` are the 1-d per-object arrays known before any image is cut
    (id, ra, dec, ...); they are written at creation.  Returns the zarr group.
    """
    import zarr

    partial = partial_path(path)
    if partial.exists() and not overwrite:
        existing = _safe_attr(partial, "inputs_key")
        if existing == key:
            return zarr.open_group(str(partial), mode="r+")
        if existing is not None:
            raise InputError(
                f"{partial}: an unfinished build from different inputs is in the way; "
                f"rerun with --overwrite to start afresh"
            )
        # else: leftovers of a crash during creation, started again below
    with writing(partial):
        if partial.exists():
            shutil.rmtree(partial)
        group = zarr.open_group(str(partial), mode="w", zarr_format=3)
        nb = len(bands)
        group.create_array(
            image_name,
            shape=(n, nb, size, size),
            dtype="float32",
            chunks=(CHUNK_ROWS, nb, size, size),
            compressors=_compressor(),
            fill_value=np.nan,
            config=WRITE_EVERY_CHUNK,
        )
        group.create_array(
            "band_ok", shape=(n, nb), dtype="bool", chunks=(TABLE_CHUNK, nb), fill_value=False, config=WRITE_EVERY_CHUNK
        )
        group.create_array(
            "flags", shape=(n,), dtype="int32", chunks=(TABLE_CHUNK,), fill_value=0, config=WRITE_EVERY_CHUNK
        )
        for name, values in columns.items():
            array = group.create_array(
                name,
                shape=(n,),
                dtype=values.dtype,
                chunks=(TABLE_CHUNK,),
                compressors=_compressor(),
                fill_value=_fill(values.dtype),
                config=WRITE_EVERY_CHUNK,
            )
            array[:] = values
        # update_attributes writes zarr.json once; attrs.update would write it once per key, and a kill
        # between two of those writes leaves a partial store that contradicts itself
        group.update_attributes(
            {
                **attrs,
                "bands": list(bands),
                "cutout_size": size,
                "schema_version": SCHEMA_VERSION,
                "inputs_key": key,
                "blocks_done": [],
                "complete": False,
            }
        )
    return group


def _fill(dtype) -> Any:
    """NaN for floats (a chunk that is not there cannot pass for data), zarr's default otherwise."""
    return np.nan if np.dtype(dtype).kind == "f" else None


@contextmanager
def writing(where: Path) -> Iterator[None]:
    """Turn a failed write into the store being built at ``where`` (disk full, read-only directory) into one line.

    What was written stays: a partial store records only finished blocks, so the same command resumes.
    """
    try:
        yield
    except OSError as exc:
        parent = Path(where).parent
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            advice = f"free disk space on {parent}"
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            advice = f"make {parent} writable (or write the project elsewhere)"
        else:
            advice = "fix the cause"
        raise InputError(
            f"{where}: cannot write this output store ({exc.strerror or exc}); {advice}, then run "
            f"the same command again: it resumes from the finished blocks"
        ) from None


def write_array(group, name: str, values: np.ndarray, selection: Any = slice(None)) -> None:
    """Write ``values`` into an array of a store being built, storing every chunk (see the module docstring)."""
    group[name].with_config(WRITE_EVERY_CHUNK)[selection] = values


def _safe_attr(path: Path, name: str):
    try:
        return json.loads((path / "zarr.json").read_text()).get("attributes", {}).get(name)
    except (OSError, ValueError):
        return None


def write_block(
    group,
    image_name: str,
    start: int,
    stamps: np.ndarray,
    band_ok: np.ndarray,
    flags: np.ndarray,
    progress: dict[str, Any],
) -> None:
    """Write one block of rows, then record it (and the caller's running sums) as done."""
    stop = start + len(stamps)
    with writing(_store_path(group)):
        write_array(group, image_name, stamps, slice(start, stop))
        write_array(group, "band_ok", band_ok, slice(start, stop))
        write_array(group, "flags", flags, slice(start, stop))
        done = list(group.attrs["blocks_done"]) + [start]
        group.update_attributes({"blocks_done": done, **progress})  # one atomic write: see open_for_writing


def finish(
    group, path: Path, final_arrays: dict[str, np.ndarray] | None = None, attrs: dict[str, Any] | None = None
) -> None:
    """Write the last arrays, mark complete and move the partial store into place."""
    partial = partial_path(path)
    with writing(partial):
        for name, values in (final_arrays or {}).items():
            parent, _, leaf = name.rpartition("/")
            where = group.require_group(parent) if parent else group
            where.create_array(
                leaf,
                shape=values.shape,
                dtype=values.dtype,
                overwrite=True,
                fill_value=_fill(values.dtype),
                config=WRITE_EVERY_CHUNK,
            )[...] = values
        arrays = sorted(name for name, node in group.members(max_depth=None) if hasattr(node, "shape"))
        group.update_attributes({**(attrs or {}), "arrays": arrays, "complete": True})
        if path.exists():
            shutil.rmtree(path)
        partial.rename(path)


def open_store(path: Path):
    """Open a complete store for reading, with a clear error for anything else."""
    import zarr

    path = Path(path)
    if not path.exists():
        hint = (
            " (an unfinished build exists: run the same command again to resume)" if partial_path(path).exists() else ""
        )
        raise InputError(f"{path}: no such store{hint}")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise InputError(f"{path}: not a readable Zarr store ({exc}); {rebuild_hint(path)}") from None
    if not group.attrs.get("complete", False):
        raise InputError(f"{path}: the store is incomplete; {rebuild_hint(path)}")
    every_chunk_stored = cast(int, group.attrs.get("schema_version", 1)) >= 2
    for name in array_names(path, group):
        array = checked_array(group, name)  # reads its zarr.json: a damaged one is named here
        if every_chunk_stored:
            for key in map(array.array.metadata.encode_chunk_key, array.chunk_coords()):
                problem = _chunk_file_problem(path / name / key)
                if problem:
                    raise InputError(
                        f"{path}: array '{name}', chunk {name}/{key} {problem}: "
                        f"the store is damaged; {rebuild_hint(path)}"
                    )
    return StoreReader(group)


class StoreReader:
    """A complete store opened for reading: ``reader[name]`` is a CheckedArray, so every read names a damaged chunk."""

    def __init__(self, group):
        self.group, self.attrs = group, group.attrs

    def __getitem__(self, name: str) -> CheckedArray:
        return checked_array(self.group, name)


def rebuild_hint(path: Path) -> str:
    """What to run to rebuild the store at ``path``."""
    if Path(path).name == CUBES_NAME:
        return "rebuild it with `mmz build-cubes --overwrite`"
    return "rebuild it by running the command that wrote it again with --overwrite"


def array_names(path: Path, group) -> list[str]:
    """The arrays of a complete store: as recorded when it was finished, else (older stores) as found on disk."""
    recorded = group.attrs.get("arrays")
    if recorded is not None:
        return list(recorded)
    names = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        if root != str(path) and ("zarr.json" in files or "c" in dirs):
            if "c" in dirs:  # an array: its chunks are not nodes
                names.append(os.path.relpath(root, path).replace(os.sep, "/"))
                dirs.remove("c")
            elif _node_type(Path(root, "zarr.json")) != "group":  # an array without chunks, or damaged
                names.append(os.path.relpath(root, path).replace(os.sep, "/"))
    return names


def _node_type(metadata: Path) -> str | None:
    try:
        return json.loads(metadata.read_text()).get("node_type")
    except (OSError, ValueError, AttributeError):
        return None


def _chunk_file_problem(path: Path) -> str | None:
    try:
        return None if os.stat(path).st_size > 0 else "is empty"
    except FileNotFoundError:
        return "is missing"


def _store_path(group) -> Path:
    return Path(getattr(group.store, "root", str(group.store)))


class CheckedArray:
    """An array of a store whose reads turn a corrupt chunk into one line naming the store, array and chunk.

    Reads like a zarr array (``shape``, ``chunks``, ``dtype``, ``[selection]``), so code that slices
    zarr arrays can take one instead.
    """

    def __init__(self, array, store: Path, name: str):
        self.array, self.store, self.name = array, store, name
        self.shape, self.chunks, self.dtype = array.shape, array.chunks, array.dtype

    def __getattr__(self, name: str) -> Any:  # anything else (fill_value, nchunks, ...) as the zarr array has it
        return getattr(self.array, name)

    def __getitem__(self, selection):
        try:
            return self.array[selection]
        except DECODE_ERRORS:
            for coords in self._chunks_of(selection):
                self.read_chunk(coords)  # raises the one line that names the damaged chunk
            raise  # no chunk is damaged: not the store's fault

    def read_chunk(self, coords: tuple[int, ...]) -> np.ndarray:
        """The chunk at ``coords`` (chunk indices), decoded; InputError naming it where it cannot be."""
        try:
            return self.array.get_block_selection(coords)
        except DECODE_ERRORS as exc:
            key = self.array.metadata.encode_chunk_key(coords)
            raise InputError(
                f"{self.store}: array '{self.name}', chunk {self.name}/{key} cannot be read ({exc}): "
                f"the store is damaged; {rebuild_hint(self.store)}"
            ) from None

    def chunk_coords(self) -> Iterator[tuple[int, ...]]:
        return itertools.product(*(range(n) for n in self.array.cdata_shape))

    def _chunks_of(self, selection) -> Iterator[tuple[int, ...]]:
        """The chunks a selection reads: those of its rows (first axis), across the other axes."""
        if not self.shape:
            return iter([()])
        first = selection[0] if isinstance(selection, tuple) and selection else selection
        rows = np.atleast_1d(np.arange(self.shape[0])[first])
        return itertools.product(
            *([int(c) for c in np.unique(rows // self.chunks[0])], *(range(n) for n in self.array.cdata_shape[1:]))
        )


def checked_array(group, name: str) -> CheckedArray:
    """The array ``name`` of an open store, read through ``CheckedArray``; a damaged zarr.json is named too."""
    if isinstance(group, StoreReader):
        group = group.group
    store = _store_path(group)
    try:
        array = group[name]
    except (KeyError, ValueError, TypeError, OSError) as exc:
        problem = "is missing" if isinstance(exc, KeyError) else f"cannot be read ({exc})"
        raise InputError(
            f"{store}: array '{name}', metadata {name}/zarr.json {problem}: the store is damaged; {rebuild_hint(store)}"
        ) from None
    return CheckedArray(array, store, name)


def read_array(group, name: str, selection: Any = slice(None)) -> np.ndarray:
    """``group[name][selection]``, with a damaged chunk or zarr.json reported in one line (see CheckedArray)."""
    return checked_array(group, name)[selection]


def verify_store(path: Path, console=None) -> tuple[Any, dict[str, Any]]:
    """Read every chunk of the complete store at ``path`` and check that every block was recorded done.

    Raises InputError at the first problem; returns (group, counts for a report).
    """
    from mmzcli.cutout import BLOCK_ROWS
    from mmzcli.progress import progress_bar

    path = Path(path)
    group = open_store(path)  # the listing and every zarr.json
    names = array_names(path, group)
    arrays = [checked_array(group, name) for name in names]
    report = {
        "arrays": len(arrays),
        "chunks": 0,
        "bytes": 0,
        "not_stored": 0,
        "schema_version": group.attrs.get("schema_version", 1),
    }
    with progress_bar(console) as bar:
        task = bar.add_task(f"verifying {path}", total=sum(a.array.nchunks for a in arrays))
        for array in arrays:
            for coords in array.chunk_coords():
                file = path / array.name / array.array.metadata.encode_chunk_key(coords)
                if _chunk_file_problem(file):  # only schema 1 gets here: open_store refused the others
                    report["not_stored"] += 1
                else:
                    array.read_chunk(coords)
                    report["chunks"] += 1
                    report["bytes"] += file.stat().st_size
                bar.advance(task)
    if "blocks_done" in group.attrs:
        n = checked_array(group, "flags").shape[0]
        missing = sorted(set(range(0, n, BLOCK_ROWS)) - set(group.attrs["blocks_done"]))
        if missing:
            raise InputError(
                f"{path}: rows {missing[0]}..{min(missing[0] + BLOCK_ROWS, n) - 1} were never "
                f"recorded as written ({len(missing)} such blocks): {rebuild_hint(path)}"
            )
        report["blocks"] = len(set(group.attrs["blocks_done"]))
    return group, report
