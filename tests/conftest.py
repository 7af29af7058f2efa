"""Shared helpers: real FITS tiles and catalogues written into tmp_path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from mmzcli.cli import main


def tan_wcs(ra: float, dec: float, scale: float, shape: tuple[int, int], rotation_deg: float = 0.0,
            east_left: bool = True) -> WCS:
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
    """Circular Gaussians: sources = [(ra, dec, flux, sigma_arcsec)], sampled at pixel centres."""
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    image = np.zeros(shape)
    for ra, dec, flux, sigma in sources:
        px, py = wcs.all_world2pix([[ra, dec]], 0)[0]
        s = sigma / scale
        image += flux / (2 * np.pi * s**2) * np.exp(-((x - px) ** 2 + (y - py) ** 2) / (2 * s**2))
    return image


def write_tile(path: Path, band: str, wcs: WCS, data: np.ndarray, filter_keyword: bool = True) -> Path:
    header = wcs.to_header()
    if filter_keyword:
        header["FILTER"] = band
    fits.PrimaryHDU(data.astype(np.float32), header=header).writeto(path, overwrite=True)
    return path


def write_catalog(path: Path, **columns) -> Path:
    table = Table(columns)
    if path.suffix == ".csv":
        table.write(path, format="ascii.csv", overwrite=True)
    else:
        table.write(path, overwrite=True)
    return path


def survey_field(tmp_path: Path, n: int = 40, bands=("g", "r", "i"), seed: int = 1, shape=(256, 256),
                 scale: float = 0.2, noise: float = 0.02):
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
        data = render(wcs, shape, [(a, d, f * (1 + 3 * zz) ** k, 0.4) for a, d, f, zz in zip(ra, dec, flux, z)],
                      scale)
        data += rng.normal(0, noise, shape)
        write_tile(tiles / f"tile-0000-{band}.fits", band, wcs, data)
    z[0] = np.nan  # one unusable redshift
    catalog = write_catalog(tmp_path / "specz.fits", ID=np.arange(1000, 1000 + n), RA=ra, DEC=dec,
                            Z_SPEC=z, EBV=rng.uniform(0, 0.1, n), MAG_i=rng.uniform(18, 22, n))
    return tiles, catalog


@pytest.fixture
def run_mmz(capsys):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""

    def run(*args):
        try:
            main(list(map(str, args)))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return code, out.out, out.err

    return run
