"""Hostile tiles: celestial frames other than ICRS, and frames nobody knows."""

from __future__ import annotations

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS
from helpers import render, write_tile

from mmzcli.cutout import cut_image
from mmzcli.profiles import load_profile
from mmzcli.tiles import index_tiles, pixel_to_sky, sky_to_pixel

SCALE = 0.2  # arcsec per pixel, the tiny profile's
SHAPE = (128, 128)


def galactic_wcs(lon: float, lat: float) -> WCS:
    """A TAN WCS in Galactic coordinates: north (Galactic) up, east left."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["GLON-TAN", "GLAT-TAN"]
    w.wcs.crval = [lon, lat]
    w.wcs.crpix = [(SHAPE[1] + 1) / 2, (SHAPE[0] + 1) / 2]
    w.wcs.cdelt = [-SCALE / 3600, SCALE / 3600]
    return w


def test_a_galactic_tile_is_read_in_icrs(tmp_path):
    """The source's ICRS position lands on its pixel; the old code read GLON/GLAT as RA/Dec (tens of degrees off)."""
    centre = SkyCoord(150.0 * u.deg, 2.0 * u.deg, frame="icrs")
    galactic = centre.galactic
    wcs = galactic_wcs(galactic.l.deg, galactic.b.deg)
    x0, y0 = 70.3, 51.8  # the source, off the tile centre
    source = SkyCoord(*wcs.all_pix2world([[x0, y0]], 0)[0], unit="deg", frame="galactic").icrs
    data = np.zeros(SHAPE)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    data += 100 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 2.0**2))
    path = write_tile(tmp_path / "gal-i.fits", "i", wcs, data)
    (image,) = index_tiles([path], load_profile("tiny"))

    x, y = sky_to_pixel(image, np.array([source.ra.deg]), np.array([source.dec.deg]))
    assert abs(x[0] - x0) < 1e-3 and abs(y[0] - y0) < 1e-3
    ra, dec = pixel_to_sky(image, np.array([x0]), np.array([y0]))
    assert SkyCoord(ra[0], dec[0], unit="deg").separation(source).arcsec < 1e-3

    stamps, ok, _ = cut_image(image, np.array([source.ra.deg]), np.array([source.dec.deg]), 31, SCALE)
    assert ok[0]
    peak = np.unravel_index(np.argmax(stamps[0]), stamps[0].shape)
    assert peak == (15, 15)  # the source sits at the stamp centre, north up in ICRS


def test_an_icrs_tile_is_unchanged(tmp_path):
    """ICRS tiles take no conversion: positions equal astropy's own world->pixel to the last bit."""
    from helpers import tan_wcs

    wcs = tan_wcs(150.0, 2.0, SCALE, SHAPE)
    path = write_tile(tmp_path / "t-i.fits", "i", wcs, render(wcs, SHAPE, [], SCALE))
    (image,) = index_tiles([path], load_profile("tiny"))
    ra, dec = np.array([150.001, 149.999]), np.array([2.002, 1.998])
    x, y = sky_to_pixel(image, ra, dec)
    ex, ey = WCS(fits.getheader(path)).all_world2pix(ra, dec, 0)
    assert np.array_equal(x, ex) and np.array_equal(y, ey)


@pytest.mark.parametrize("ctype", [["XLON-TAN", "XLAT-TAN"], ["RA---TAN", "DEC--TAN"]])
def test_an_unknown_celestial_frame_is_refused_in_one_line(tmp_path, run_mmz, ctype):
    header = fits.Header()
    header.update(
        {
            "CTYPE1": ctype[0],
            "CTYPE2": ctype[1],
            "CRVAL1": 150.0,
            "CRVAL2": 2.0,
            "CRPIX1": 64.0,
            "CRPIX2": 64.0,
            "CDELT1": -SCALE / 3600,
            "CDELT2": SCALE / 3600,
            "FILTER": "i",
        }
    )
    if ctype[0] == "RA---TAN":
        header["RADESYS"] = "NONSENSE"
    path = tmp_path / "odd-i.fits"
    fits.PrimaryHDU(np.zeros(SHAPE, np.float32), header=header).writeto(path)
    catalog = tmp_path / "s.csv"
    catalog.write_text("ID,RA,DEC\n1,150.0,2.0\n")
    code, _, err = run_mmz("cutout", path, "--catalog", catalog, "--profile", "tiny", "-o", tmp_path / "s.zarr")
    assert code == 2 and "Traceback" not in err
    assert str(path) in err and ("frame" in err or "celestial" in err)
    assert not (tmp_path / "s.zarr").exists()


def test_cutout_takes_the_projects_profile_and_refuses_to_guess(tmp_path, run_mmz):
    """Without --profile, cutout used hsc9 whatever the tiles: 9-band stamps from 3-band tiles, all MISSING_BAND."""
    import zarr
    from helpers import survey_field

    from mmzcli.project import write_config

    tiles, catalog = survey_field(tmp_path, n=6)
    code, _, err = run_mmz(
        "-q",
        "cutout",
        *sorted(tiles.glob("*.fits")),
        "--catalog",
        catalog,
        "--project",
        tmp_path,
        "-o",
        tmp_path / "guess.zarr",
    )
    assert code == 2 and "--profile" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "guess.zarr").exists()

    write_config(tmp_path, load_profile("tiny"))
    code, _, err = run_mmz(
        "-q",
        "cutout",
        *sorted(tiles.glob("*.fits")),
        "--catalog",
        catalog,
        "--project",
        tmp_path,
        "-o",
        tmp_path / "s.zarr",
    )
    assert code == 0, err
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert list(group.attrs["bands"]) == load_profile("tiny").band_names
    assert group["band_ok"][:].all()
