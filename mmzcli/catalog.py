"""Catalogue I/O: source and spectroscopic tables in (FITS or CSV), photo-z catalogues out (FITS).

Every complaint names the file, the column or row, and what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmzcli.errors import InputError

# The option that renames each column role, for messages.
COLUMN_OPTIONS = {"id": "--id-col", "ra": "--ra-col", "dec": "--dec-col", "z_spec": "--z-col",
                  "ebv": "--ebv-col", "mag_ref": "--mag-col"}


def read_table(path: Path, columns: dict[str, str], optional: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    """Read the ``columns`` (role -> column name) of a FITS table or CSV file, and those of ``optional`` present.

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
    for role, name in {**(optional or {}), **columns}.items():
        actual = name if name in table.colnames else present.get(name.upper())
        if actual is None and role not in columns:
            continue
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


# ----------------------------------------------------------------------------- photo-z catalogues (out)

# name, FITS unit, description (TCOMMn); the PDF column and the optional ones are added per catalogue.
PHOTOZ_COLUMNS = (
    ("ID", "", "source identifier"),
    ("RA", "deg", "right ascension (ICRS)"),
    ("DEC", "deg", "declination (ICRS)"),
    ("Z_PHOT", "", "photometric redshift: median of the PDF"),
    ("Z_MODE", "", "centre of the most probable redshift bin"),
    ("Z_MEAN", "", "mean of the PDF"),
    ("Z_L68", "", "16th percentile of the PDF"),
    ("Z_U68", "", "84th percentile of the PDF"),
    ("Z_L95", "", "2.5th percentile of the PDF"),
    ("Z_U95", "", "97.5th percentile of the PDF"),
    ("ODDS", "", "probability within Z_PHOT +- ODDSK*(1+Z_PHOT)"),
    ("Z_REG", "", "redshift from the regression head"),
    ("FLAGS", "", "bit flags: 1 edge, 2 NaN pixels, 4 missing band, 8 outside, 16 resampled, 128 E(B-V) defaulted (see docs/formats.md)"),
    ("EBV", "mag", "Galactic E(B-V) given to the network"),
    ("PDF", "", "probability of each redshift bin of HDU ZGRID (sums to 1)"),
)
OPTIONAL_COLUMNS = {
    "Z_SPEC": ("", "spectroscopic redshift"),
    "FOLD": ("", "cross-validation fold; predicted by the models that did not train on it"),
    "X": ("pix", "detection x in the tile's reference-band image (FITS, 1-based)"),
    "Y": ("pix", "detection y in the tile's reference-band image (FITS, 1-based)"),
    "TILE": ("", "file of the reference-band image the source was detected on"),
}
ODDS_K = 0.06  # half-width of the ODDS window in (1+z): BPZ's convention (Benitez 2000; DES Y1 used 0.06 too)


def photoz_dtype(n_bins: int, extra: dict[str, np.dtype]) -> np.dtype:
    """The row layout of HDU PHOTOZ: the standard columns, then ``extra`` (name -> dtype)."""
    kinds = {"ID": "i8", "RA": "f8", "DEC": "f8", "FLAGS": "i4"}
    fields = [(name, kinds.get(name, "f4")) for name, *_ in PHOTOZ_COLUMNS if name != "PDF"]
    return np.dtype(fields + [(k, v) for k, v in extra.items()] + [("PDF", "f4", (n_bins,))])


def summarise_pdfs(pdfs: np.ndarray, edges: np.ndarray) -> dict[str, np.ndarray]:
    """The point estimates and intervals of the catalogue, from PDFs [n, N_b] (rows of NaN stay NaN)."""
    from mmzcli import pdf

    empty = ~(pdfs.sum(axis=1) > 0)  # sources without image data have no PDF
    pdfs = np.where(empty[:, None], 1.0, pdfs)
    out = {"Z_PHOT": pdf.median(pdfs, edges), "Z_MODE": pdf.mode(pdfs, edges), "Z_MEAN": pdf.mean(pdfs, edges)}
    for name, q in (("Z_L68", 0.16), ("Z_U68", 0.84), ("Z_L95", 0.025), ("Z_U95", 0.975)):
        out[name] = pdf.quantile(pdfs, edges, q)
    half = ODDS_K * (1 + out["Z_PHOT"])
    out["ODDS"] = pdf.cdf_at(pdfs, edges, out["Z_PHOT"] + half) - pdf.cdf_at(pdfs, edges, out["Z_PHOT"] - half)
    return {k: np.where(empty, np.nan, v).astype(np.float32) for k, v in out.items()}


class PhotozWriter:
    """Writes a photo-z catalogue row block by row block (memory independent of its length).

    The file is written under ``<path>.partial`` and renamed by ``finish`` once
    complete, with FITS CHECKSUM/DATASUM in every HDU.
    """

    def __init__(self, path: Path, edges: np.ndarray, header: dict, extra: dict[str, np.dtype] | None = None):
        import fitsio

        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.dtype = photoz_dtype(len(edges) - 1, extra or {})
        self.rows = 0
        self.fits = fitsio.FITS(str(self.partial), "rw", clobber=True)
        descriptions = {name: (unit, text) for name, unit, text in PHOTOZ_COLUMNS} | OPTIONAL_COLUMNS
        names = list(self.dtype.names)
        self.fits.create_table_hdu(dtype=self.dtype, extname="PHOTOZ",
                                   units=[descriptions.get(n, ("", ""))[0] for n in names])
        hdu = self.fits["PHOTOZ"]
        for i, name in enumerate(names, 1):
            if name in descriptions:
                hdu.write_key(f"TCOMM{i}", descriptions[name][1])
        hdu.write_key("ODDSK", ODDS_K, "ODDS window half-width in (1+z)")
        for key, value in header.items():
            value, comment = value if isinstance(value, tuple) else (value, "")
            hdu.write_key(key, value, comment)
        self.edges = np.asarray(edges, dtype=np.float64)

    def append(self, columns: dict[str, np.ndarray]) -> None:
        n = len(columns["ID"])
        block = np.zeros(n, dtype=self.dtype)
        for name in self.dtype.names:
            if name in columns:
                block[name] = columns[name]
            elif block[name].dtype.kind == "f":
                block[name] = np.nan
        self.fits["PHOTOZ"].append(block)
        self.rows += n

    def finish(self) -> Path:
        import os

        edges = self.edges
        grid = np.zeros(len(edges) - 1, dtype=[("Z_LO", "f8"), ("Z_MID", "f8"), ("Z_HI", "f8")])
        grid["Z_LO"], grid["Z_HI"], grid["Z_MID"] = edges[:-1], edges[1:], 0.5 * (edges[1:] + edges[:-1])
        self.fits.write(grid, extname="ZGRID")
        zgrid = self.fits["ZGRID"]
        for i, text in enumerate(("lower edge of the redshift bin", "centre of the bin", "upper edge"), 1):
            zgrid.write_key(f"TCOMM{i}", text)
        for hdu in self.fits[1:]:
            hdu.write_checksum()
        self.fits.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        self.fits.close()
        self.partial.unlink(missing_ok=True)


def write_photoz(path: Path, columns: dict[str, np.ndarray], edges: np.ndarray, header: dict) -> Path:
    """A whole catalogue at once (columns beyond the standard ones are kept as extra columns)."""
    standard = {name for name, *_ in PHOTOZ_COLUMNS}
    extra = {k: np.asarray(v).dtype for k, v in columns.items() if k not in standard}
    writer = PhotozWriter(path, edges, header, extra)
    writer.append(columns)
    return writer.finish()


# ----------------------------------------------------------------------------- photo-z catalogues (in)

@dataclass
class PhotozCatalog:
    path: Path
    columns: dict[str, np.ndarray]  # upper-case column names
    edges: np.ndarray  # redshift bin edges, N_b + 1
    header: dict[str, Any]  # keywords of HDU PHOTOZ

    def __len__(self) -> int:
        return len(self.columns["ID"])


def read_photoz(path: Path, require: tuple[str, ...] = ("ID", "Z_PHOT", "PDF")) -> PhotozCatalog:
    """Read an mmz photo-z catalogue, checking its HDUs and the ``require``d columns."""
    import fitsio

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such catalogue file")
    try:
        with fitsio.FITS(str(path)) as fits:
            names = [hdu.get_extname() for hdu in fits]
            for extname in ("PHOTOZ", "ZGRID"):
                if extname not in names:
                    raise InputError(f"{path}: no HDU '{extname}' (HDUs: {', '.join(n or '-' for n in names)}); "
                                     f"is this a catalogue written by mmz predict?")
            data = fits["PHOTOZ"].read()
            keywords = fits["PHOTOZ"].read_header()
            header = {k: keywords[k] for k in keywords}
            grid = fits["ZGRID"].read()
    except OSError as exc:
        raise InputError(f"{path}: not a readable FITS file ({exc})") from None
    columns = {name.upper(): data[name] for name in data.dtype.names}
    for name in require:
        if name not in columns:
            raise InputError(f"{path}: no column '{name}' (columns: {', '.join(columns)})")
    edges = np.append(grid["Z_LO"], grid["Z_HI"][-1]).astype(np.float64)
    if "PDF" in columns and columns["PDF"].shape[1:] != (len(edges) - 1,):
        raise InputError(f"{path}: PDF has {columns['PDF'].shape[1:]} bins but ZGRID {len(edges) - 1}")
    return PhotozCatalog(path, columns, edges, header)
