"""``mmz export``: a photo-z catalogue as a qp ensemble, the PDF format of LSST DESC's RAIL.

The PDFs become a qp ``hist`` ensemble on the catalogue's own bin edges (ZGRID), as densities
(probability / bin width, float32, so that they integrate to 1), with the point estimates, ID,
position and flags as ancillary columns under RAIL's names (``zmode``, ``zmean``, ``zmedian``).
HDF5 output streams block by block through qp's chunked writer, so memory stays flat in the
number of rows; FITS and Parquet are built whole by qp. Rows without a PDF (no image data:
FLAGS OUTSIDE) are not PDFs and are left out, counted; their IDs stay in the FITS catalogue.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import numpy as np

from mmzcli.atomic import atomic_path
from mmzcli.errors import ConfigError, InputError

BLOCK_ROWS = 50_000  # rows per block: 80 MB of 400-bin PDFs
# catalogue column -> ancillary name (RAIL's for the mode, mean and median; the mmz name otherwise)
ANCILLARY = {
    "ID": "id",
    "RA": "ra",
    "DEC": "dec",
    "Z_PHOT": "zmedian",
    "Z_MODE": "zmode",
    "Z_MEAN": "zmean",
    "Z_BEST": "zbest",
    "Z_RISK": "zrisk",
    "Z_STD": "zstd",
    "Z_CONF": "zconf",
    "Z_MC": "zmc",
    "Z_L68": "zl68",
    "Z_U68": "zu68",
    "Z_L95": "zl95",
    "Z_U95": "zu95",
    "ODDS": "odds",
    "Z_REG": "zreg",
    "FLAGS": "flags",
    "Z_SPEC": "redshift",  # RAIL's default redshift_col, in out-of-fold catalogues
}
STREAMED = (".hdf5", ".h5", ".hd5", ".hf5")
WHOLE = (".fits", ".fit", ".pq", ".parquet")


def import_qp():
    try:
        import qp
    except ImportError:
        raise ConfigError("qp export needs the qp package: pip install 'mmz[rail]' (or pip install qp-prob)") from None
    return qp


def hist_ensemble(pdfs: np.ndarray, edges: np.ndarray, ancil: dict):
    """A qp ``hist`` ensemble of binned PDFs (probability per bin): densities in float32, stored as given."""
    qp = import_qp()
    densities = (np.asarray(pdfs, dtype=np.float64) / np.diff(edges)).astype(np.float32)
    return qp.Ensemble(qp.hist, data={"bins": edges, "pdfs": densities, "norm": False}, ancil=ancil)


def check_qp_output(output: Path, overwrite: bool):
    """qp itself, once ``output`` is known to be a new file of a format it writes here."""
    suffix = output.suffix.lower()
    if suffix not in STREAMED + WHOLE:
        raise ConfigError(f"{output}: qp writes {', '.join(STREAMED + WHOLE)}; name the output with one of these")
    if output.exists() and not overwrite:
        raise ConfigError(f"{output} exists; use --overwrite to replace it")
    qp = import_qp()
    if suffix in (".pq", ".parquet") and importlib.util.find_spec("pyarrow") is None:
        raise ConfigError(f"{output}: qp writes Parquet through pyarrow: pip install pyarrow, or name a .hdf5 output")
    return qp


def export_qp(catalogue: Path, output: Path, *, overwrite: bool = False, block_rows: int = BLOCK_ROWS) -> dict:
    """Write the PDFs of ``catalogue`` (an mmz PHOTOZ FITS file) to ``output`` as a qp ensemble.

    Returns {"rows": written, "left_out": rows without a PDF, "output": path}.
    """
    import fitsio

    from mmzcli.catalog import decode_pdfs, photoz_layout

    output = Path(output)
    qp = check_qp_output(output, overwrite)
    suffix = output.suffix.lower()
    names, edges, n_rows = photoz_layout(catalogue, require=("ID", "Z_PHOT", "PDF"))
    ancillary = {c: a for c, a in ANCILLARY.items() if c in names}
    pdf_columns = [c for c in ("PDF", "PDF_SCALE") if c in names]
    with fitsio.FITS(str(catalogue)) as fits:
        has_pdf = np.isfinite(fits["PHOTOZ"].read_column("Z_PHOT"))  # NaN estimates: no PDF
        n_pdf = int(has_pdf.sum())
        if n_pdf == 0:
            raise InputError(f"{catalogue}: none of its {n_rows} rows has a PDF (all OUTSIDE the images)")

        def blocks():
            for start in range(0, n_rows, block_rows):
                stop = min(start + block_rows, n_rows)
                keep = has_pdf[start:stop]
                if not keep.any():  # a block of sources outside the images: nothing to write
                    continue
                rows = fits["PHOTOZ"].read(columns=[*pdf_columns, *ancillary], rows=np.arange(start, stop)[keep])
                native = {a: rows[c].astype(rows[c].dtype.newbyteorder("=")) for c, a in ancillary.items()}
                yield hist_ensemble(decode_pdfs(rows), edges, native)

        if suffix in STREAMED:
            _write_streamed(blocks(), output, n_pdf)
        else:
            _write_whole(qp, list(blocks()), output)
    return {"rows": n_pdf, "left_out": n_rows - n_pdf, "output": output}


def _write_streamed(ensembles, output: Path, n_pdf: int) -> None:
    with atomic_path(output) as tmp:
        done, groups, handle, first = 0, None, None, None
        for ensemble in ensembles:
            if first is None:
                first = ensemble
                groups, handle = ensemble.initializeHdf5Write(str(tmp), n_pdf)
            ensemble.writeHdf5Chunk(groups, done, done + ensemble.npdf)
            done += ensemble.npdf
        assert first is not None and done == n_pdf
        first.finalizeHdf5Write(handle)


def _write_whole(qp, ensembles: list, output: Path) -> None:
    """qp writes FITS as one file and Parquet as one file per table (``<name>_meta.pq``, ...)."""
    ensemble = qp.concatenate(ensembles) if len(ensembles) > 1 else ensembles[0]
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as tmp:
        ensemble.write_to(str(Path(tmp) / output.name))
        for written in Path(tmp).iterdir():  # renamed only once all are written
            os.replace(written, output.parent / written.name)
