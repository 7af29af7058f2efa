"""Catalogue I/O: source and spectroscopic tables in (FITS or CSV), photo-z catalogues out (FITS).

Every complaint names the file, the column or row, and what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmzcli.errors import InputError
from mmzcli.flags import describe_catalog_flags

# The option that renames each column role, for messages.
COLUMN_OPTIONS = {
    "id": "--id-col",
    "ra": "--ra-col",
    "dec": "--dec-col",
    "z_spec": "--z-col",
    "ebv": "--ebv-col",
    "mag_ref": "--mag-col",
}


def read_table(
    path: Path,
    columns: dict[str, str],
    optional: dict[str, str] | None = None,
    *,
    options: dict[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """Read the ``columns`` (role -> column name) of a FITS table or CSV file, and those of ``optional`` present.

    Returns a dict role -> numpy array.  Raises ``InputError`` for a missing or
    unreadable file, an empty table or a missing column (listing those present).
    ``id`` must be integer and unique; every other role is a number per row
    (float64, empty cells NaN); ``ra``/``dec`` finite degrees.  Names match
    case-insensitively, and a CSV may start with a UTF-8 byte-order mark (Excel
    writes one).  ``options`` (role -> option) names the option that renames a
    missing column in the message: COLUMN_OPTIONS unless the command spells it otherwise.
    """
    from astropy.table import Table

    path = Path(path)
    csv = path.suffix.lower() in (".csv", ".txt")
    kind = "CSV" if csv else "FITS table"
    if not path.exists():
        raise InputError(f"{path}: no such catalogue file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a catalogue; give a FITS binary table or a CSV file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the catalogue is empty (0 bytes); give a FITS binary table or a CSV file")
    how = {"format": "ascii.csv", "encoding": "utf-8-sig"} if csv else {"format": "fits"}  # utf-8-sig: BOM or not
    try:
        table = Table.read(path, **how)
    except Exception as exc:  # astropy raises many kinds for a file that is not what it says
        raise InputError(
            f"{path}: cannot read as a {kind} ({_one_line(exc)}); give a FITS binary table or a CSV file"
        ) from None
    if len(table) == 0:
        raise InputError(f"{path}: the catalogue is empty")
    present = {name.strip().upper(): name for name in table.colnames}
    options = COLUMN_OPTIONS if options is None else options
    out = {}
    for role, name in {**(optional or {}), **columns}.items():
        actual = name if name in table.colnames else present.get(name.strip().upper())
        if actual is None and role not in columns:
            continue
        if actual is None:
            option = options.get(role, "")
            hint = f"; name the right one with {option}" if option else ""
            raise InputError(f"{path}: no column {name!r} (columns: {_names(table.colnames)}){hint}")
        column = table[actual]
        if np.ndim(column) != 1:
            raise InputError(
                f"{path}: column {actual!r} holds arrays of shape {column.shape[1:]} per row; "
                f"give a column of one value per row"
            )
        if role == "id":
            out[role] = _check_ids(path, actual, column)
        else:
            out[role] = _numbers(path, actual, column, kind)
    for role in ("ra", "dec"):
        if role in out:
            out[role] = _check_coordinates(path, columns[role], role, out[role])
    return out


def _one_line(exc: Exception) -> str:
    """An exception's text on one line (FITS readers report over several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _names(names: list[str]) -> str:
    """Column names for a message: bare where plain, quoted (repr) where blanks or invisible characters hide in them."""

    def plain(name: str) -> bool:
        return bool(name) and name.isprintable() and not any(c.isspace() or c in ",'\"" for c in name)

    return ", ".join(name if plain(name) else repr(name) for name in names)


def _cell(value) -> str:
    return repr(value.decode(errors="replace") if isinstance(value, bytes) else str(value))


def _numbers(path: Path, name: str, column, kind: str) -> np.ndarray:
    """A column as float64, empty (masked) cells NaN; the first cell that is not a number is named by its row."""
    empty = np.ma.getmaskarray(column) if getattr(column, "mask", None) is not None else np.zeros(len(column), bool)
    values = np.asarray(column)
    if values.dtype.kind not in "biufSUO":
        raise InputError(f"{path}: column {name!r} must hold numbers, found {values.dtype}; give a numeric column")
    try:
        numbers = values.astype(np.float64)
    except (TypeError, ValueError):  # text: convert cell by cell to find the culprit (and skip empty cells)
        numbers = np.full(len(values), np.nan)
        for row in np.flatnonzero(~empty):
            try:
                numbers[row] = float(values[row])
            except (TypeError, ValueError):
                raise InputError(
                    f"{path}: row {row}: column {name!r} must hold numbers, found "
                    f"{_cell(values[row])}; fix that cell in the {kind} "
                    f"(leave it empty where the value is unknown)"
                ) from None
    return np.where(empty, np.nan, numbers)


def _check_ids(path: Path, name: str, column) -> np.ndarray:
    """Integer ids (integral floats and digits stored as text accepted), none empty, none repeated."""
    from contextlib import suppress

    empty = np.ma.getmaskarray(column) if getattr(column, "mask", None) is not None else None
    if empty is not None and empty.any():
        raise InputError(
            f"{path}: row {int(np.flatnonzero(empty)[0])}: column {name!r} is empty; every object needs an integer id"
        )
    ids = np.asarray(column)
    if ids.dtype.kind in "SU":  # digits stored as text
        with suppress(ValueError, OverflowError):
            ids = ids.astype(np.int64)
    if ids.dtype.kind == "f" and np.isfinite(ids).all() and (ids == np.round(ids)).all():
        ids = ids.astype(np.int64)
    if ids.dtype.kind not in "iu":
        bad = [i for i, v in enumerate(ids) if not _is_integer(v)] or [0]
        raise InputError(
            f"{path}: row {bad[0]}: column {name!r} must hold integer ids, found "
            f"{_cell(ids[bad[0]])} ({ids.dtype}); give integer ids (objects are matched by them)"
        )
    ids = ids.astype(np.int64)
    order = np.argsort(ids, kind="stable")
    same = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if same.size:
        first = ids[order][same[0]]
        rows = np.flatnonzero(ids == first)[:5]
        raise InputError(
            f"{path}: duplicate id {first} in column '{name}' (rows {', '.join(map(str, rows))}); ids must be unique"
        )
    return ids


def _is_integer(value) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return np.isfinite(number) and number == round(number)


def _check_coordinates(path: Path, name: str, role: str, values: np.ndarray) -> np.ndarray:
    """Finite degrees in range (``values`` already float64, empty cells NaN)."""
    limit = (0.0, 360.0) if role == "ra" else (-90.0, 90.0)
    bad = ~np.isfinite(values) | (values < limit[0]) | (values > limit[1])
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{path}: row {row}: {name} = {values[row]} is not a {role.upper()} in degrees "
            f"({limit[0]:g}..{limit[1]:g}); {int(bad.sum())} such rows"
        )
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
    ("Z_BEST", "", "redshift of least expected loss 1-1/(1+(dz/0.15)^2) (HSC photoz_best)"),
    ("Z_RISK", "", "expected loss at Z_BEST (0 sure ... 1 hopeless)"),
    ("Z_STD", "", "standard deviation of the PDF"),
    ("Z_CONF", "", "probability within Z_BEST +- 0.03*(1+Z_BEST)"),
    ("Z_MC", "", "one random draw from the PDF, seeded by ID (for n(z))"),
    ("Z_REG", "", "redshift from the regression head"),
    ("FLAGS", "", describe_catalog_flags()),
    ("EBV", "mag", "Galactic E(B-V) given to the network"),
    ("PDF", "", "probability of each redshift bin of HDU ZGRID (sums to 1)"),
)
OPTIONAL_COLUMNS = {
    "PDF_SCALE": ("", "PDF = PDF * PDF_SCALE (int16 PDFs; sums to 1 within 8e-4)"),
    "Z_SPEC": ("", "spectroscopic redshift"),
    "FOLD": ("", "cross-validation fold; predicted by the models that did not train on it"),
    "X": ("pix", "detection x in the tile's reference-band image (FITS, 1-based)"),
    "Y": ("pix", "detection y in the tile's reference-band image (FITS, 1-based)"),
    "TILE": ("", "file of the reference-band image the source was detected on"),
}
ODDS_K = 0.06  # half-width of the ODDS window in (1+z): BPZ's convention (Benitez 2000; DES Y1 used 0.06 too)
CONF_K = 0.03  # half-width of the Z_CONF window in (1+z): HSC's photoz_conf_best (Tanaka et al. 2018)
RISK_GAMMA = 0.15  # width of the loss of Z_BEST: HSC's (Tanaka et al. 2018)


PDF_DTYPES = ("float32", "int16")
PDF_L1 = 8e-4  # int16 PDFs: the largest L1 error a row's codes may carry (the bound is 1e-3)


def photoz_dtype(n_bins: int, extra: dict[str, np.dtype], pdf_dtype: str = "float32") -> np.dtype:
    """The row layout of HDU PHOTOZ: the standard columns, then ``extra`` (name -> dtype), then the PDF
    (float32, or int16 times the row's PDF_SCALE)."""
    kinds = {"ID": "i8", "RA": "f8", "DEC": "f8", "FLAGS": "i4"}
    fields = [(name, kinds.get(name, "f4")) for name, *_ in PHOTOZ_COLUMNS if name != "PDF"]
    pdf = [("PDF", "f4", (n_bins,))] if pdf_dtype == "float32" else [("PDF_SCALE", "f4"), ("PDF", "i2", (n_bins,))]
    return np.dtype(fields + list(extra.items()) + pdf)


def encode_pdfs(pdfs: np.ndarray, l1: float = PDF_L1) -> tuple[np.ndarray, np.ndarray]:
    """(int16 codes, PDF_SCALE) with PDF ~ codes * PDF_SCALE: each row gets the coarsest step whose
    rounding errors sum to at most ``l1``, since few, small codes are what gzip packs best (a broad PDF
    spends its error budget over many bins, a peaked one over few). The step is found by bisection in
    log between the finest that int16 holds (the largest probability -> 32766) and twice the largest
    probability; a PDF of zeros stays zeros."""
    p = np.asarray(pdfs, dtype=np.float64)
    top = p.max(axis=1)
    top = np.where(top > 0, top, 1.0)
    fine, coarse = np.log(top / 32766), np.log(2 * top)  # 32766: float32 rounding of the step stays in int16

    def error(log_step):
        step = np.exp(log_step).astype(np.float32).astype(np.float64)[:, None]  # as stored
        return np.abs(np.round(p / step) * step - p).sum(axis=1)

    for _ in range(12):  # the step to 0.3%
        mid = 0.5 * (fine + coarse)
        ok = error(mid) <= l1
        fine, coarse = np.where(ok, mid, fine), np.where(ok, coarse, mid)
    scale = np.exp(fine).astype(np.float32)
    codes = np.round(p / scale.astype(np.float64)[:, None])
    return codes.astype(np.int16), np.where(p.max(axis=1) > 0, scale, 0).astype(np.float32)


def decode_pdfs(rows) -> np.ndarray:
    """The float32 PDFs of catalogue rows (a record array or a column dict), whatever their storage:
    int16 PDFs are ``PDF * PDF_SCALE`` in float32, the same floats astropy and fitsio users get."""
    names = rows.dtype.names if hasattr(rows, "dtype") else rows.keys()
    if "PDF_SCALE" not in names:
        return np.asarray(rows["PDF"], dtype=np.float32)
    return np.asarray(rows["PDF"]) * np.asarray(rows["PDF_SCALE"], dtype=np.float32)[:, None]


def summarise_pdfs(pdfs: np.ndarray, edges: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    """The point estimates and intervals of the catalogue, from PDFs [n, N_b] of the sources ``ids``
    (rows of NaN stay NaN)."""
    from mmzcli import pdf

    empty = ~(pdfs.sum(axis=1) > 0)  # sources without image data have no PDF
    pdfs = np.where(empty[:, None], 1.0, pdfs)
    out = {"Z_PHOT": pdf.median(pdfs, edges), "Z_MODE": pdf.mode(pdfs, edges), "Z_MEAN": pdf.mean(pdfs, edges)}
    for name, q in (("Z_L68", 0.16), ("Z_U68", 0.84), ("Z_L95", 0.025), ("Z_U95", 0.975)):
        out[name] = pdf.quantile(pdfs, edges, q)

    def mass_within(z, k):
        return pdf.cdf_at(pdfs, edges, z + k * (1 + z)) - pdf.cdf_at(pdfs, edges, z - k * (1 + z))

    out["ODDS"] = mass_within(out["Z_PHOT"], ODDS_K)
    out["Z_BEST"], out["Z_RISK"] = pdf.risk_best(pdfs, edges, RISK_GAMMA)
    out["Z_STD"] = pdf.std(pdfs, edges)
    out["Z_CONF"] = mass_within(out["Z_BEST"], CONF_K)
    out["Z_MC"] = pdf.quantile(pdfs, edges, pdf.uniform_from_ids(ids))
    return {k: np.where(empty, np.nan, v).astype(np.float32) for k, v in out.items()}


class PhotozWriter:
    """Writes a photo-z catalogue row block by row block (memory independent of its length).

    The file is written under ``<path>.partial`` and renamed by ``finish`` once
    complete, with FITS CHECKSUM/DATASUM in every HDU.
    """

    def __init__(
        self,
        path: Path,
        edges: np.ndarray,
        header: dict,
        extra: dict[str, np.dtype] | None = None,
        pdf_dtype: str = "float32",
    ):
        import fitsio

        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.dtype = photoz_dtype(len(edges) - 1, extra or {}, pdf_dtype)
        self.rows = 0
        self.fits = fitsio.FITS(str(self.partial), "rw", clobber=True)
        descriptions = {name: (unit, text) for name, unit, text in PHOTOZ_COLUMNS} | OPTIONAL_COLUMNS
        names = list(self.dtype.names or ())  # a structured dtype: names is never None
        self.fits.create_table_hdu(
            dtype=self.dtype, extname="PHOTOZ", units=[descriptions.get(n, ("", ""))[0] for n in names]
        )
        hdu = self.fits["PHOTOZ"]
        for i, name in enumerate(names, 1):
            if name in descriptions:
                hdu.write_key(f"TCOMM{i}", descriptions[name][1])
        if pdf_dtype == "int16":
            hdu.write_key("PDFENC", "int16", "PDF = PDF * PDF_SCALE (float32)")
        hdu.write_key("ODDSK", ODDS_K, "ODDS window half-width in (1+z)")
        hdu.write_key("CONFK", CONF_K, "Z_CONF window half-width in (1+z)")
        hdu.write_key("RISKGAM", RISK_GAMMA, "gamma of the Z_BEST loss")
        for key, value in header.items():
            value, comment = value if isinstance(value, tuple) else (value, "")
            hdu.write_key(key, value, comment)
        self.edges = np.asarray(edges, dtype=np.float64)

    def append(self, columns: dict[str, np.ndarray]) -> None:
        n = len(columns["ID"])
        block = np.zeros(n, dtype=self.dtype)
        if "PDF_SCALE" in (self.dtype.names or ()) and "PDF_SCALE" not in columns:
            codes, scale = encode_pdfs(columns["PDF"])
            columns = {**columns, "PDF": codes, "PDF_SCALE": scale}
        for name in self.dtype.names or ():
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
        if self.path.suffix == ".gz":  # astropy and fitsio read gzip-compressed FITS as it is
            import gzip
            import shutil

            from mmzcli.atomic import atomic_path

            with atomic_path(self.path) as tmp, open(self.partial, "rb") as src, gzip.open(tmp, "wb", 9) as dst:
                shutil.copyfileobj(src, dst, 1 << 24)
            self.partial.unlink()
        else:
            os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        self.fits.close()
        self.partial.unlink(missing_ok=True)


def write_photoz(
    path: Path, columns: dict[str, np.ndarray], edges: np.ndarray, header: dict, pdf_dtype: str = "float32"
) -> Path:
    """A whole catalogue at once (columns beyond the standard ones are kept as extra columns)."""
    standard = {name for name, *_ in PHOTOZ_COLUMNS}
    extra = {k: np.asarray(v).dtype for k, v in columns.items() if k not in standard}
    writer = PhotozWriter(path, edges, header, extra, pdf_dtype)
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
    _, edges, _ = photoz_layout(path, require)
    with fitsio.FITS(str(path)) as fits:
        data = fits["PHOTOZ"].read()
        keywords = fits["PHOTOZ"].read_header()
    header = {k: keywords[k] for k in keywords}
    columns = {name.upper(): data[name] for name in data.dtype.names}
    if "PDF" in columns:
        columns["PDF"] = decode_pdfs(columns)
        columns.pop("PDF_SCALE", None)
    return PhotozCatalog(path, columns, edges, header)


def photoz_layout(path: Path, require: tuple[str, ...] = ()) -> tuple[list[str], np.ndarray, int]:
    """(column names, bin edges, rows) of an mmz photo-z catalogue, checked, without reading its rows."""
    import fitsio

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such catalogue file")
    try:
        with fitsio.FITS(str(path)) as fits:
            names = [hdu.get_extname() for hdu in fits]
            for extname in ("PHOTOZ", "ZGRID"):
                if extname not in names:
                    raise InputError(
                        f"{path}: no HDU '{extname}' (HDUs: {', '.join(n or '-' for n in names)}); "
                        f"is this a catalogue written by mmz predict?"
                    )
            columns = [name.upper() for name in fits["PHOTOZ"].get_colnames()]
            n_rows = fits["PHOTOZ"].get_nrows()
            pdf_shape = fits["PHOTOZ"].get_rec_dtype()[0]["PDF"].shape if "PDF" in columns else None
            grid = fits["ZGRID"].read()
    except OSError as exc:
        raise InputError(f"{path}: not a readable FITS file ({exc})") from None
    for name in require:
        if name not in columns:
            raise InputError(f"{path}: no column '{name}' (columns: {', '.join(columns)})")
    edges = np.append(grid["Z_LO"], grid["Z_HI"][-1]).astype(np.float64)
    if pdf_shape is not None and pdf_shape != (len(edges) - 1,):
        raise InputError(f"{path}: PDF has {pdf_shape} bins but ZGRID {len(edges) - 1}")
    return columns, edges, n_rows
