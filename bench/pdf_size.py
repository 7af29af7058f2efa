"""How much smaller are int16 PDFs? The float32 catalogue against ``--pdf-dtype int16 -o CAT.fits.gz``.

    .venv/bin/python bench/pdf_size.py ~/mmz-accuracy/sdss-6000/oof-raw.fits ~/mmz-accuracy/hsc9-6000/oof-raw.fits \
        [--json docs/results/pdf-size.json]

Each float32 catalogue (written by ``mmz predict``) is written again with int16 PDFs through mmz's own
writer, gzipped as ``predict -o CAT.fits.gz`` does; reports the size ratio, the PDF L1 error per row,
whether astropy's and fitsio's ``PDF * PDF_SCALE`` give mmz's floats to the bit, and the size the
former encoding (a fixed 32767 steps of each row's largest probability) gave, for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import fitsio
import numpy as np
from astropy.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmzcli.catalog import PDF_L1, PHOTOZ_COLUMNS, PhotozWriter, read_photoz, write_photoz  # noqa: E402


def measure(path: Path, workdir: Path) -> dict:
    full = read_photoz(path)
    edges, header = full.edges, {"CALIB": full.header.get("CALIB", "none")}
    columns = dict(full.columns)
    compact = write_photoz(workdir / f"{path.stem}-int16.fits.gz", columns, edges, header, "int16")
    mmz = read_photoz(compact).columns["PDF"]
    readers = {"astropy": Table.read(compact, hdu="PHOTOZ"), "fitsio": fitsio.read(str(compact), ext="PHOTOZ")}
    same = {name: bool(np.array_equal(np.asarray(t["PDF"]) * np.asarray(t["PDF_SCALE"])[:, None], mmz))
            for name, t in readers.items()}  # fmt: skip
    error = np.abs(mmz.astype(np.float64) - full.columns["PDF"]).sum(axis=1)

    p = full.columns["PDF"].astype(np.float64)  # the former encoding, through the same writer
    scale = (p.max(axis=1) / 32767).astype(np.float32)
    codes = np.round(p / np.where(scale > 0, scale, 1)[:, None]).astype(np.int16)
    extra = {name: v.dtype for name, v in columns.items() if name not in {c for c, *_ in PHOTOZ_COLUMNS}}
    writer = PhotozWriter(workdir / f"{path.stem}-fixed.fits.gz", edges, header, extra, "int16")
    writer.append(columns | {"PDF": codes, "PDF_SCALE": scale})
    fixed = writer.finish()
    return {
        "catalogue": str(path),
        "rows": len(full),
        "bins": int(p.shape[1]),
        "float32_bytes": path.stat().st_size,
        "int16_gz_bytes": compact.stat().st_size,
        "smaller": round(path.stat().st_size / compact.stat().st_size, 2),
        "l1_max": float(error.max()),
        "l1_median": float(np.median(error)),
        "l1_budget": PDF_L1,
        "same_floats": same,
        "fixed_32767_steps_smaller": round(path.stat().st_size / fixed.stat().st_size, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalogues", nargs="+", type=Path, help="float32 catalogues written by mmz predict")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = [measure(path, Path(tmp)) for path in args.catalogues]
    for r in results:
        print(
            f"{r['catalogue']}: {r['rows']} rows x {r['bins']} bins: {r['float32_bytes']:,} -> {r['int16_gz_bytes']:,}"
            f" bytes ({r['smaller']}x; fixed steps {r['fixed_32767_steps_smaller']}x),"
            f" L1 max {r['l1_max']:.2e} median {r['l1_median']:.2e}, same floats in {r['same_floats']}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
