"""Catalogue I/O: source and spectroscopic tables in (FITS or CSV).

Every complaint names the file, the column or row, and what to do about it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmzcli.errors import InputError

# The option that renames each column role, for messages.
COLUMN_OPTIONS = {"id": "--id-col", "ra": "--ra-col", "dec": "--dec-col", "z_spec": "--z-col",
                  "ebv": "--ebv-col", "mag_ref": "--mag-col"}


def read_table(path: Path, columns: dict[str, str]) -> dict[str, np.ndarray]:
    """Read the ``columns`` (role -> column name) of a FITS table or CSV file.

    Returns a dict role -> numpy array.  Raises ``InputError`` for a missing or
    unreadable file, an empty table or a missing column (listing those present).
    ``id`` must be integer and unique; ``ra``/``dec`` finite degrees.
    """
    from astropy.table import Table

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such catalogue file")
    try:
        if path.suffix.lower() in (".csv", ".txt"):
            table = Table.read(path, format="ascii.csv")
        else:
            table = Table.read(path, format="fits")
    except Exception as exc:  # astropy raises many kinds for a file that is not what it says
        kind = "CSV" if path.suffix.lower() in (".csv", ".txt") else "FITS table"
        raise InputError(f"{path}: cannot read as a {kind} ({exc}); give a FITS binary table or a CSV file") from None
    if len(table) == 0:
        raise InputError(f"{path}: the catalogue is empty")
    present = {name.upper(): name for name in table.colnames}
    out = {}
    for role, name in columns.items():
        actual = name if name in table.colnames else present.get(name.upper())
        if actual is None:
            option = COLUMN_OPTIONS.get(role, "")
            hint = f"; name the right one with {option}" if option else ""
            raise InputError(f"{path}: no column '{name}' (columns: {', '.join(table.colnames)}){hint}")
        column = table[actual]
        values = column.filled(np.nan) if getattr(column, "mask", None) is not None and role != "id" else column
        out[role] = np.asarray(values)
    if "id" in out:
        out["id"] = _check_ids(path, columns["id"], out["id"])
    for role in ("ra", "dec"):
        if role in out:
            out[role] = _check_coordinates(path, columns[role], role, out[role])
    return out


def _check_ids(path: Path, name: str, ids: np.ndarray) -> np.ndarray:
    if ids.dtype.kind not in "iu":
        raise InputError(f"{path}: column '{name}' must hold integer ids, found {ids.dtype}")
    ids = ids.astype(np.int64)
    order = np.argsort(ids, kind="stable")
    same = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if same.size:
        first = ids[order][same[0]]
        rows = np.flatnonzero(ids == first)[:5]
        raise InputError(f"{path}: duplicate id {first} in column '{name}' (rows {', '.join(map(str, rows))}); "
                         f"ids must be unique")
    return ids


def _check_coordinates(path: Path, name: str, role: str, values: np.ndarray) -> np.ndarray:
    try:
        values = values.astype(np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{path}: column '{name}' must hold numbers (degrees)") from None
    limit = (0.0, 360.0) if role == "ra" else (-90.0, 90.0)
    bad = ~np.isfinite(values) | (values < limit[0]) | (values > limit[1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path}: row {row}: {name} = {values[row]} is not a {role.upper()} in degrees "
                         f"({limit[0]:g}..{limit[1]:g}); {int(bad.sum())} such rows")
    return values
