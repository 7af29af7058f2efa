"""Helpers the test modules share: tiny FITS tiles, catalogues and photo-z catalogues, an in-process CLI.

Plain functions and constants (fixtures live in conftest.py).  pytest puts tests/ on sys.path
(rootdir-relative "prepend" import mode, no __init__.py), so a test module says ``from helpers import ...``.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy.special import ndtr

ROOT = Path(__file__).resolve().parent.parent


def load_bench(name: str):
    """A script of bench/ as a module (bench/ is no package): ``load_bench("accuracy")``."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- the command line in-process


def exit_code(exc: SystemExit) -> int:
    """The status a process would exit with: None is 0, a message is 1 (as sys.exit does)."""
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def run_cli(*args) -> int:
    """Run ``mmz ARGS`` in this interpreter (no new process: no torch import per call) and return its exit code."""
    from mmzcli.cli import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return exit_code(exc)
    return 0


def mmz_ok(*args) -> None:
    """Run ``mmz ARGS`` in-process for a fixture that needs its output files; fail unless it exits 0."""
    code = run_cli(*args)
    assert code == 0, f"mmz {' '.join(map(str, args))} exited {code}"


# ----------------------------------------------------------------------------- images and source catalogues


def tan_wcs(
    ra: float, dec: float, scale: float, shape: tuple[int, int], rotation_deg: float = 0.0, east_left: bool = True
) -> WCS:
    """A TAN WCS centred on (ra, dec); ``scale`` arcsec/px; north rotated by ``rotation_deg``."""
    ny, nx = shape
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(nx + 1) / 2, (ny + 1) / 2]
    s = scale / 3600
    t = math.radians(rotation_deg)
    sx = -s if east_left else s
    w.wcs.cd = [[sx * math.cos(t), -s * math.sin(t)], [sx * math.sin(t), s * math.cos(t)]]
    return w


def render(wcs: WCS, shape, sources, scale: float) -> np.ndarray:
    """Circular Gaussians: sources = [(ra, dec, flux, sigma_arcsec)], sampled at pixel centres.

    Each is drawn within 8 sigma of its centre (beyond, it is below 1e-14 of its peak): thousands of
    sources then take a second, not minutes.
    """
    ny, nx = shape
    image = np.zeros(shape)
    if not len(sources):
        return image
    ra, dec, flux, sigma = (np.asarray(column, np.float64) for column in zip(*sources))
    px, py = wcs.all_world2pix(np.column_stack([ra, dec]), 0).T
    for x0, y0, f, s in zip(px, py, flux, sigma / scale):
        r = int(np.ceil(8 * s))
        xlo, xhi = max(int(np.floor(x0)) - r, 0), min(int(np.ceil(x0)) + r + 1, nx)
        ylo, yhi = max(int(np.floor(y0)) - r, 0), min(int(np.ceil(y0)) + r + 1, ny)
        if xlo >= xhi or ylo >= yhi:
            continue
        y, x = np.mgrid[ylo:yhi, xlo:xhi]
        image[ylo:yhi, xlo:xhi] += f / (2 * np.pi * s**2) * np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * s**2))
    return image


def write_tile(path: Path, band: str, wcs: WCS, data: np.ndarray, filter_keyword: bool = True) -> Path:
    """A float32 image tile with its WCS, and FILTER = band unless the band must come from the file name."""
    header = wcs.to_header()
    if filter_keyword:
        header["FILTER"] = band
    fits.PrimaryHDU(data.astype(np.float32), header=header).writeto(path, overwrite=True)
    return path


def write_catalog(path: Path, **columns) -> Path:
    """A source catalogue (FITS, or CSV when the path ends in .csv) with the given columns."""
    table = Table(columns)
    if path.suffix == ".csv":
        table.write(path, format="ascii.csv", overwrite=True)
    else:
        table.write(path, overwrite=True)
    return path


def survey_field(
    tmp_path: Path,
    n: int = 40,
    bands=("g", "r", "i"),
    seed: int = 1,
    shape=(256, 256),
    scale: float = 0.2,
    noise: float = 0.02,
):
    """A small aligned field in every band of the 'tiny' profile plus a spectroscopic catalogue.

    Colours encode redshift (band k is brighter by (1 + 3z)^k), so a network can learn z.
    """
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.05, 0.95, n)
    ra0, dec0 = 150.0, 2.0
    wcs = tan_wcs(ra0, dec0, scale, shape)
    half = (shape[0] / 2 - 20) * scale / 3600
    ra = ra0 + rng.uniform(-half, half, n) / math.cos(math.radians(dec0))
    dec = dec0 + rng.uniform(-half, half, n)
    flux = rng.uniform(50, 500, n)
    tiles = tmp_path / "tiles"
    tiles.mkdir(exist_ok=True)
    for k, band in enumerate(bands):
        data = render(wcs, shape, [(a, d, f * (1 + 3 * zz) ** k, 0.4) for a, d, f, zz in zip(ra, dec, flux, z)], scale)
        data += rng.normal(0, noise, shape)
        write_tile(tiles / f"tile-0000-{band}.fits", band, wcs, data)
    z[0] = np.nan  # one unusable redshift
    catalog = write_catalog(
        tmp_path / "specz.fits",
        ID=np.arange(1000, 1000 + n),
        RA=ra,
        DEC=dec,
        Z_SPEC=z,
        EBV=rng.uniform(0, 0.1, n),
        MAG_i=rng.uniform(18, 22, n),
    )
    return tiles, catalog


# ----------------------------------------------------------------------------- photo-z catalogues (evaluate, bootstrap)

EDGES = np.linspace(0.0, 2.0, 101)
HEADER = {"PROFILE": "tiny", "RUN": "test", "OUTLTHR": 0.15, "REFBAND": "i", "CATKIND": "oof"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def gaussian_pdfs(mu: np.ndarray, sigma: np.ndarray, edges: np.ndarray = EDGES) -> np.ndarray:
    """Each row: a Gaussian integrated over the bins, renormalised to the grid."""
    cdf = ndtr((edges[None, :] - mu[:, None]) / sigma[:, None])
    p = np.diff(cdf, axis=1) + 1e-12
    return p / p.sum(axis=1, keepdims=True)


def simulated(
    n: int, scatter: float, outliers: float, seed: int, first_id: int = 1000, error_seed: int | None = None
) -> dict:
    """Columns of an out-of-fold catalogue: Gaussian PDFs around z_spec with ``scatter``(1+z), some outliers.

    ``seed`` draws the objects; ``error_seed``, when given, draws the photo-z errors apart from them, so that
    two calls with one ``seed`` and two ``error_seed`` are two catalogues of the same objects with independent errors.
    """
    rng = np.random.default_rng(seed)
    z_spec = rng.uniform(0.1, 1.8, n)
    errors = rng if error_seed is None else np.random.default_rng(error_seed)
    sigma = scatter * (1 + z_spec)
    mu = z_spec + sigma * errors.normal(size=n)
    wrong = errors.random(n) < outliers
    mu[wrong] = errors.uniform(0.1, 1.9, wrong.sum())
    ids = np.arange(first_id, first_id + n)
    return {
        "ID": ids,
        "RA": np.full(n, 150.0),
        "DEC": np.full(n, 2.0),
        "PDF": gaussian_pdfs(mu, sigma),
        "Z_SPEC": z_spec,
        "FOLD": (ids % 5).astype(np.int16),
        "MAG_I": 19.0 + 3.0 * rng.random(n) + z_spec,
        "FLAGS": np.zeros(n, np.int32),
    }


def write_photoz_catalog(path, columns: dict, edges: np.ndarray = EDGES, header: dict | None = None, drop=()):
    """A photo-z catalogue as mmz writes it (PHOTOZ + ZGRID), Z_PHOT the median of each PDF unless given."""
    from mmzcli import pdf
    from mmzcli.catalog import write_photoz

    cols = {k: v for k, v in columns.items() if k not in drop}
    cols["PDF"] = np.asarray(cols["PDF"], np.float32)
    cols.setdefault("Z_PHOT", pdf.median(cols["PDF"], edges))
    for name in ("Z_SPEC", "MAG_I"):
        if name in cols:
            cols[name] = np.asarray(cols[name], np.float32)
    write_photoz(path, cols, edges, HEADER if header is None else header)
    return path


def as_written(columns: dict) -> dict:
    """The values as the FITS catalogue stores them (float32 Z_PHOT, Z_SPEC, MAG_I, PDF)."""
    from mmzcli import pdf

    p = np.asarray(columns["PDF"], np.float32)
    return {
        "z_phot": pdf.median(p, EDGES).astype(np.float32).astype(np.float64),
        "pdf": p.astype(np.float64),
        "z_spec": columns["Z_SPEC"].astype(np.float32).astype(np.float64),
        "mag": columns["MAG_I"].astype(np.float32).astype(np.float64),
        "fold": columns["FOLD"],
    }


def is_png(path) -> bool:
    """A real figure: the PNG signature, and an image that matplotlib reads back at a useful size."""
    from matplotlib.image import imread

    return path.read_bytes()[:8] == PNG_SIGNATURE and min(imread(path).shape[:2]) > 200


def tiny_cubes(root: Path, n: int, shape=(256, 256)) -> Path:
    """``survey_field`` in ``root`` built into ``root/proj/cubes.zarr`` (profile 'tiny'); returns the project."""
    tiles, catalog = survey_field(root, n=n, shape=shape)
    project = root / "proj"
    mmz_ok("-q", "build-cubes", "--survey", "tiny", "--project", project, "--tiles", f"{tiles}/*.fits",
           "--catalog", catalog)  # fmt: skip
    return project
