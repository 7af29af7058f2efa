"""Bad input: one clear line, exit code 2, no traceback, nothing left that looks complete."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from helpers import tan_wcs, write_catalog, write_tile

from mmzcli.errors import ConfigError
from mmzcli.profiles import load_profile

RA0, DEC0 = 150.0, 2.0


@pytest.fixture
def field(tmp_path):
    wcs = tan_wcs(RA0, DEC0, 0.2, (64, 64))
    tile = write_tile(tmp_path / "good-g.fits", "g", wcs, np.random.default_rng(0).normal(0, 1, (64, 64)))
    catalog = write_catalog(tmp_path / "cat.fits", ID=[1, 2], RA=[RA0, RA0], DEC=[DEC0, DEC0 + 1e-4])
    return tmp_path, tile, catalog


def cutout(run_mmz, tmp_path, *args):
    code, out, err = run_mmz("cutout", *args, "--profile", "tiny", "-o", tmp_path / "out.zarr")
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out.zarr").exists()
    return err


def test_missing_tile(run_mmz, field):
    tmp_path, _, catalog = field
    assert "nope.fits: no such tile file" in cutout(run_mmz, tmp_path, tmp_path / "nope.fits", "--catalog", catalog)


def test_tile_that_is_not_fits(run_mmz, field):
    tmp_path, _, catalog = field
    (tmp_path / "notes-g.fits").write_text("hello, this is not FITS\n")
    err = cutout(run_mmz, tmp_path, tmp_path / "notes-g.fits", "--catalog", catalog)
    assert "notes-g.fits: not a readable FITS file" in err


def test_tile_without_celestial_wcs(run_mmz, field):
    tmp_path, _, catalog = field
    fits.PrimaryHDU(np.zeros((8, 8), np.float32), header=fits.Header({"FILTER": "g"})).writeto(tmp_path / "p.fits")
    err = cutout(run_mmz, tmp_path, tmp_path / "p.fits", "--catalog", catalog)
    assert "p.fits[0]: no celestial WCS" in err


def test_unknown_band(run_mmz, field):
    tmp_path, _, catalog = field
    write_tile(tmp_path / "q.fits", "HSC-Q", tan_wcs(RA0, DEC0, 0.2, (8, 8)), np.zeros((8, 8)))
    err = cutout(run_mmz, tmp_path, tmp_path / "q.fits", "--catalog", catalog)
    assert "q.fits[0]: FILTER = 'HSC-Q' is not a band of profile tiny (g, r, i)" in err


def test_catalogue_lacking_a_column(run_mmz, field):
    tmp_path, tile, _ = field
    catalog = write_catalog(tmp_path / "c.csv", ID=[1], RA=[RA0], DECL=[DEC0])
    err = cutout(run_mmz, tmp_path, tile, "--catalog", catalog)
    assert "c.csv: no column 'DEC' (columns: ID, RA, DECL); name the right one with --dec-col" in err


def test_duplicate_ids(run_mmz, field):
    tmp_path, tile, _ = field
    catalog = write_catalog(tmp_path / "d.fits", ID=[7, 8, 7], RA=[RA0] * 3, DEC=[DEC0] * 3)
    err = cutout(run_mmz, tmp_path, tile, "--catalog", catalog)
    assert "d.fits: duplicate id 7 in column 'ID' (rows 0, 2)" in err


def test_empty_catalogue(run_mmz, field):
    tmp_path, tile, _ = field
    (tmp_path / "e.csv").write_text("ID,RA,DEC\n")
    assert "e.csv: the catalogue is empty" in cutout(run_mmz, tmp_path, tile, "--catalog", tmp_path / "e.csv")


def test_bad_coordinates_name_the_row(run_mmz, field):
    tmp_path, tile, _ = field
    catalog = write_catalog(tmp_path / "b.csv", ID=[1, 2], RA=[RA0, 400.0], DEC=[DEC0, DEC0])
    err = cutout(run_mmz, tmp_path, tile, "--catalog", catalog)
    assert "b.csv: row 1: RA = 400.0 is not a RA in degrees" in err


def test_unknown_and_malformed_profiles(run_mmz, field):
    tmp_path, tile, catalog = field
    code, _, err = run_mmz("cutout", tile, "--catalog", catalog, "--profile", "lsst", "-o", tmp_path / "o.zarr")
    assert code == 2 and "unknown profile 'lsst'" in err
    (tmp_path / "broken.yaml").write_text("name: [unclosed\n")
    code, _, err = run_mmz("cutout", tile, "--catalog", catalog, "--profile", tmp_path / "broken.yaml")
    assert code == 2 and "broken.yaml: malformed YAML" in err and "Traceback" not in err


def test_a_complete_store_is_not_overwritten_silently(run_mmz, field):
    tmp_path, tile, catalog = field
    args = ("-q", "cutout", tile, "--catalog", catalog, "--profile", "tiny", "-o", tmp_path / "s.zarr")
    assert run_mmz(*args)[0] == 0
    code, _, err = run_mmz(*args)
    assert code == 2 and "use --overwrite" in err
    assert run_mmz(*args, "--overwrite")[0] == 0


def test_debug_shows_the_traceback(run_mmz):
    """Under --debug the error is raised on, not turned into exit 2: Python then prints its traceback."""
    with pytest.raises(ConfigError, match="unknown profile 'lsst'"):
        run_mmz("--debug", "profiles", "show", "lsst")
    code, _, err = run_mmz("profiles", "show", "lsst")  # and the next command is back to one line
    assert code == 2 and "unknown profile 'lsst'" in err and len(err.strip().splitlines()) == 1


def test_science_plane_of_files_with_mask_and_variance(tmp_path):
    wcs = tan_wcs(RA0, DEC0, 0.2, (16, 16))
    primary = fits.PrimaryHDU(header=fits.Header({"FILTER": "HSC-I"}))
    planes = [
        fits.ImageHDU(np.zeros((16, 16), np.float32), header=wcs.to_header(), name=name)
        for name in ("IMAGE", "MASK", "VARIANCE")
    ]
    fits.HDUList([primary, *planes]).writeto(tmp_path / "calexp-HSC-I-9813-4,4.fits")
    from mmzcli.tiles import index_tiles

    (image,) = index_tiles([tmp_path / "calexp-HSC-I-9813-4,4.fits"], load_profile("hsc6"))
    assert (image.hdu, image.band) == (1, "i")
