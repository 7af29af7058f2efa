"""The Zarr v3 stores of a project (``stamps.zarr``, ``cubes.zarr``) and how they are written.

A store is built under ``<name>.partial`` and renamed to ``<name>`` only when
complete, so nothing that looks complete is ever half-written.  Image rows are
written in blocks aligned with the chunks by one writer process; each finished
block is recorded in the group's attributes (zarr writes them atomically), so
a killed build resumes with the blocks still missing and never duplicates rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mmzcli.errors import InputError

SCHEMA_VERSION = 1
CHUNK_ROWS = 32  # whole cubes per chunk: a training batch reads few chunks
TABLE_CHUNK = 65536  # rows per chunk of the 1-d columns


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def inputs_key(kind: str, images, catalog: Path, *settings: Any) -> str:
    """A short hash of everything that determines a store's content, to refuse resuming a different build.

    Tiles and catalogue count by path and modification time, so an edited input starts afresh.
    """
    files = [(i.path, i.hdu, os.path.getmtime(i.path)) for i in images]
    parts = [kind, files, str(catalog), os.path.getmtime(catalog), *settings]
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


def open_for_writing(path: Path, *, key: str, n: int, bands: list[str], size: int, image_name: str,
                     columns: dict[str, np.ndarray], attrs: dict[str, Any], overwrite: bool):
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
            raise InputError(f"{partial}: an unfinished build from different inputs is in the way; "
                             f"rerun with --overwrite to start afresh")
        # else: leftovers of a crash during creation, started again below
    if partial.exists():
        shutil.rmtree(partial)
    group = zarr.open_group(str(partial), mode="w", zarr_format=3)
    nb = len(bands)
    group.create_array(image_name, shape=(n, nb, size, size), dtype="float32",
                       chunks=(CHUNK_ROWS, nb, size, size), compressors=_compressor(), fill_value=0.0)
    group.create_array("band_ok", shape=(n, nb), dtype="bool", chunks=(TABLE_CHUNK, nb), fill_value=False)
    group.create_array("flags", shape=(n,), dtype="int32", chunks=(TABLE_CHUNK,), fill_value=0)
    for name, values in columns.items():
        array = group.create_array(name, shape=(n,), dtype=values.dtype, chunks=(TABLE_CHUNK,),
                                   compressors=_compressor())
        array[:] = values
    # update_attributes writes zarr.json once; attrs.update would write it once per key, and a kill
    # between two of those writes leaves a partial store that contradicts itself
    group.update_attributes({**attrs, "bands": list(bands), "cutout_size": size,
                             "schema_version": SCHEMA_VERSION, "inputs_key": key, "blocks_done": [],
                             "complete": False})
    return group


def _safe_attr(path: Path, name: str):
    try:
        return json.loads((path / "zarr.json").read_text()).get("attributes", {}).get(name)
    except (OSError, ValueError):
        return None


def write_block(group, image_name: str, start: int, stamps: np.ndarray, band_ok: np.ndarray,
                flags: np.ndarray, progress: dict[str, Any]) -> None:
    """Write one block of rows, then record it (and the caller's running sums) as done."""
    stop = start + len(stamps)
    group[image_name][start:stop] = stamps
    group["band_ok"][start:stop] = band_ok
    group["flags"][start:stop] = flags
    done = list(group.attrs["blocks_done"]) + [start]
    group.update_attributes({"blocks_done": done, **progress})  # one atomic write: see open_for_writing


def finish(group, path: Path, final_arrays: dict[str, np.ndarray] | None = None,
           attrs: dict[str, Any] | None = None) -> None:
    """Write the last arrays, mark complete and move the partial store into place."""
    for name, values in (final_arrays or {}).items():
        parent, _, leaf = name.rpartition("/")
        where = group.require_group(parent) if parent else group
        where.create_array(leaf, shape=values.shape, dtype=values.dtype, overwrite=True)[...] = values
    group.update_attributes({**(attrs or {}), "complete": True})
    partial = partial_path(path)
    if path.exists():
        shutil.rmtree(path)
    partial.rename(path)


def open_store(path: Path):
    """Open a complete store for reading, with a clear error for anything else."""
    import zarr

    path = Path(path)
    if not path.exists():
        hint = " (an unfinished build exists: run the same command again to resume)" \
            if partial_path(path).exists() else ""
        raise InputError(f"{path}: no such store{hint}")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as exc:
        raise InputError(f"{path}: not a readable Zarr store ({exc})") from None
    if not group.attrs.get("complete", False):
        raise InputError(f"{path}: the store is incomplete; rebuild it")
    return group
