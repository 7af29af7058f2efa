"""Stamps: geometry (centring, orientation), flux, the slicing path, flags, parallel = serial."""

from __future__ import annotations

import math

import numpy as np
import pytest
import zarr
from astropy.io import fits
from helpers import render, survey_field, tan_wcs, write_catalog, write_tile

from mmzcli.cutout import cut_image
from mmzcli.flags import Flag
from mmzcli.profiles import load_profile
from mmzcli.tiles import background, index_tiles

RA0, DEC0 = 150.0, 2.0


def centroid(stamp: np.ndarray):
    y, x = np.mgrid[0 : stamp.shape[0], 0 : stamp.shape[1]]
    w = np.clip(stamp, 0, None)
    return (w * x).sum() / w.sum(), (w * y).sum() / w.sum()


def one_image(path, profile):
    (image,) = index_tiles([path], profile)
    return image


@pytest.mark.parametrize("rotation, scale", [(30.0, 0.3), (-65.0, 0.13), (180.0, 0.2)])
def test_resampled_stamp_is_centred_north_up_and_conserves_flux(tmp_path, rotation, scale):
    profile = load_profile("tiny")  # 0.2"/px, 32 px stamps
    shape = (200, 220)
    wcs = tan_wcs(RA0 + 0.001, DEC0 - 0.001, scale, shape, rotation_deg=rotation)
    north = (RA0, DEC0 + 2.0 / 3600)  # a companion 2" north and one 1.6" east
    east = (RA0 + 1.6 / 3600 / math.cos(math.radians(DEC0)), DEC0)
    data = render(wcs, shape, [(RA0, DEC0, 1000.0, 0.35), (*north, 300.0, 0.3), (*east, 300.0, 0.3)], scale)
    path = write_tile(tmp_path / "t-r.fits", "r", wcs, data)
    alone = write_tile(tmp_path / "u-r.fits", "r", wcs, render(wcs, shape, [(RA0, DEC0, 1000.0, 0.35)], scale))

    stamps, ok, flags = cut_image(one_image(alone, profile), np.array([RA0]), np.array([DEC0]), 32, 0.2)
    assert ok[0] and flags[0] == Flag.RESAMPLED
    x, y = centroid(stamps[0])
    assert abs(x - 15.5) <= 0.25 and abs(y - 15.5) <= 0.25
    assert stamps[0].sum() == pytest.approx(1000.0, rel=0.01)

    stamps, _, _ = cut_image(one_image(path, profile), np.array([RA0]), np.array([DEC0]), 32, 0.2)
    s = stamps[0]
    # the north companion is 10 px above the centre (rows grow northwards), the east one 8 px left
    assert np.unravel_index(np.argmax(s[22:, :]), s[22:, :].shape)[0] + 22 == pytest.approx(25.5, abs=0.6)
    assert s[25:27, 15:17].sum() > 10 * abs(s[5:7, 15:17].sum())
    assert s[15:17, 7:9].sum() > 10 * abs(s[15:17, 23:25].sum())


def test_aligned_tile_is_sliced_exactly(tmp_path):
    profile = load_profile("tiny")
    shape = (128, 128)
    wcs = tan_wcs(RA0, DEC0, 0.2, shape)
    data = np.random.default_rng(3).normal(5.0, 1.0, shape)
    image = one_image(write_tile(tmp_path / "a-g.fits", "g", wcs, data), profile)
    ra, dec = wcs.all_pix2world([[40.3, 70.8], [64.0, 64.0]], 0).T
    stamps, ok, flags = cut_image(image, ra, dec, 32, 0.2)
    assert ok.all() and not flags.any()
    sky = background(image)
    assert sky == pytest.approx(5.0, abs=0.05)
    # stamp origin = floor(position - 15.5 + 0.5): the source lands within half a pixel of the centre
    expected0 = data.astype(np.float32)[55:87, 25:57] - sky
    expected1 = data.astype(np.float32)[49:81, 49:81] - sky
    np.testing.assert_array_equal(stamps[0], expected0)
    np.testing.assert_array_equal(stamps[1], expected1)


def test_edge_nan_missing_and_outside_flags(tmp_path, run_mmz):
    shape = (100, 100)
    wcs = tan_wcs(RA0, DEC0, 0.2, shape)
    data = np.random.default_rng(0).normal(1.0, 0.1, shape)
    data[60:70, 60:70] = np.nan  # inside the stamp of the source at (55, 55), not under it
    for band in ("g", "r"):  # no i-band tile
        write_tile(tmp_path / f"f-{band}.fits", band, wcs, data)
    (ra_edge, dec_edge), (ra_nan, dec_nan), (ra_in, dec_in) = wcs.all_pix2world([[3, 50], [55, 55], [30, 30]], 0)
    cat = write_catalog(
        tmp_path / "src.csv",
        ID=[1, 2, 3, 4],
        RA=[ra_edge, ra_nan, ra_in, RA0 + 1],
        DEC=[dec_edge, dec_nan, dec_in, DEC0],
    )
    code, _, err = run_mmz(
        "--quiet",
        "cutout",
        tmp_path / "f-g.fits",
        tmp_path / "f-r.fits",
        "--catalog",
        cat,
        "--profile",
        "tiny",
        "-o",
        tmp_path / "s.zarr",
    )
    assert code == 0, err
    g = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    flags = g["flags"][:]
    assert flags[0] & Flag.EDGE and not flags[2] & Flag.EDGE
    assert flags[1] & Flag.NAN_PIXELS and not flags[0] & Flag.NAN_PIXELS
    assert all(f & Flag.MISSING_BAND for f in flags)
    assert flags[3] & Flag.OUTSIDE and not flags[2] & Flag.OUTSIDE
    assert not g["band_ok"][3].any() and not np.any(g["stamps"][3])
    assert g["band_ok"][2].tolist() == [True, True, False]
    stamp = g["stamps"][0, 0]
    assert np.all(stamp[:, :12] == 0) and np.all(stamp[:, 14:] != 0)  # x0 = 3 - 16 = -13: 13 padded columns
    assert np.isfinite(g["stamps"][:]).all()
    assert list(g["id"][:]) == [1, 2, 3, 4] and g.attrs["bands"] == ["g", "r", "i"]


def test_multi_extension_tiles_and_file_name_bands(tmp_path):
    profile = load_profile("tiny")
    wcs = tan_wcs(RA0, DEC0, 0.2, (64, 64))
    header = wcs.to_header()
    hdus = [fits.PrimaryHDU()] + [
        fits.ImageHDU(np.full((64, 64), k, np.float32), header=header, name=band) for k, band in enumerate(["r", "g"])
    ]
    fits.HDUList(hdus).writeto(tmp_path / "mef.fits")
    write_tile(tmp_path / "x_i.fits", "i", wcs, np.ones((64, 64)), filter_keyword=False)
    images = index_tiles([tmp_path / "mef.fits", tmp_path / "x_i.fits"], profile)
    assert [(im.hdu, im.band) for im in images] == [(1, "r"), (2, "g"), (0, "i")]


def test_parallel_equals_serial_and_catalog_order_is_kept(tmp_path, run_mmz):
    tiles, catalog = survey_field(tmp_path, n=600, shape=(300, 300))
    outs = []
    for jobs in (1, 2):
        out = tmp_path / f"j{jobs}.zarr"
        code, _, err = run_mmz(
            "-q",
            "cutout",
            *sorted(tiles.glob("*.fits")),
            "--catalog",
            catalog,
            "--profile",
            "tiny",
            "-o",
            out,
            "-j",
            jobs,
        )
        assert code == 0, err
        outs.append(zarr.open_group(str(out), mode="r"))
    np.testing.assert_array_equal(outs[0]["stamps"][:], outs[1]["stamps"][:])
    np.testing.assert_array_equal(outs[0]["id"][:], np.arange(1000, 1600))
    assert outs[0]["stamps"].shape == (600, 3, 32, 32)
