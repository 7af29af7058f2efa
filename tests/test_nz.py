"""mmz nz: n(z) of tomographic bins from stacked PDFs, bootstrap bands, the bias against Z_SPEC."""

from __future__ import annotations

import json

import numpy as np
import pytest
import qp
from astropy.table import Table

from mmzcli.catalog import PhotozWriter, summarise_pdfs
from mmzcli.nz import stack_catalogue

EDGES = np.linspace(0.0, 2.0, 201)
CENTRES = 0.5 * (EDGES[1:] + EDGES[:-1])
SIGMA = 0.05


def write_catalogue(path, n=4000, shift=0.0, seed=0):
    """Objects at z_true ~ U(0.3, 1.5), observed with Gaussian error SIGMA; each PDF the posterior of a
    flat prior (N(z_obs, SIGMA)) moved by ``shift``: calibrated for shift 0, biased otherwise."""
    rng = np.random.default_rng(seed)
    z_true = rng.uniform(0.3, 1.5, n)
    z_obs = z_true + rng.normal(0, SIGMA, n)
    pdfs = np.exp(-0.5 * ((CENTRES[None, :] - z_obs[:, None] - shift) / SIGMA) ** 2)
    pdfs = (pdfs / pdfs.sum(axis=1, keepdims=True)).astype(np.float32)
    ids = np.arange(n, dtype=np.int64)
    writer = PhotozWriter(path, EDGES, {}, extra={"Z_SPEC": np.dtype("f4"), "W": np.dtype("f4")})
    weights = (ids % 2 == 0).astype(np.float32)  # odd objects weigh nothing
    writer.append({"ID": ids, **summarise_pdfs(pdfs, EDGES, ids), "PDF": pdfs, "Z_SPEC": z_true, "W": weights})
    return writer.finish()


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    return write_catalogue(tmp_path_factory.mktemp("nz") / "cat.fits")


def test_calibrated_pdfs_give_unbiased_bins_and_files_every_reader_opens(run_mmz, calibrated, tmp_path):
    code, _, err = run_mmz("nz", calibrated, "--bins", "0.4,0.7,1.0,1.3", "-o", tmp_path / "nz", "--seed", "3")
    assert code == 0, err
    report = json.loads((tmp_path / "nz" / "nz.json").read_text())
    for row in report["bins"]:
        assert row["objects"] > 500
        assert abs(row["bias"]) < max(3 * row["bias_err"], 0.005), row  # stacking calibrated PDFs recovers n(z)
        assert row["z_min"] - 0.1 < row["mean_z"] < row["z_max"] + 0.1
    curves = Table.read(tmp_path / "nz" / "nz.fits", hdu="NZ")
    for i in (1, 2, 3):
        widths = curves["Z_HI"] - curves["Z_LO"]
        assert abs(np.sum(curves[f"NZ_{i}"] * widths) - 1) < 1e-6  # densities
        assert np.all(curves[f"NZ_{i}_LO"] <= curves[f"NZ_{i}"] + 1e-9)
        assert np.all(curves[f"NZ_{i}"] <= curves[f"NZ_{i}_HI"] + 1e-9)
    assert len(Table.read(tmp_path / "nz" / "nz.fits", hdu="BINS")) == 3
    assert qp.read(str(tmp_path / "nz" / "nz.hdf5")).npdf == 3
    assert (tmp_path / "nz" / "nz.png").stat().st_size > 10_000
    again = tmp_path / "again"
    assert run_mmz("nz", calibrated, "--bins", "0.4,0.7,1.0,1.3", "-o", again, "--seed", "3", "--no-plots")[0] == 0
    assert json.loads((again / "nz.json").read_text())["bins"] == report["bins"]  # same seed, same bands


def test_a_biased_photo_z_shows_as_a_bias_of_every_bin(run_mmz, tmp_path):
    biased = write_catalogue(tmp_path / "biased.fits", shift=0.05)
    code, _, err = run_mmz("nz", biased, "--bins", "0.5,0.9,1.3", "-o", tmp_path / "nz", "--by", "Z_BEST")
    assert code == 0, err
    for row in json.loads((tmp_path / "nz" / "nz.json").read_text())["bins"]:
        assert abs(row["bias"] - 0.05) < 0.01 and row["bias"] > 5 * row["bias_err"], row


def test_weights_and_blocks(calibrated):
    bins = np.array([0.4, 0.8, 1.2])
    weighted, _, _ = stack_catalogue(calibrated, bins, weights="W", resamples=10)
    everyone, _, _ = stack_catalogue(calibrated, bins, resamples=10)
    blocks, _, counts = stack_catalogue(calibrated, bins, resamples=10, block_rows=333)
    for w, e, b in zip(weighted, everyone, blocks):
        assert w.objects == e.objects and 0.4 < w.weight / e.weight < 0.6  # odd objects weigh nothing
        assert not np.allclose(w.pdf / w.weight, e.pdf / e.weight, rtol=1e-3)
        np.testing.assert_allclose(b.pdf, e.pdf, rtol=1e-10)  # streaming changes no sum
    assert counts["outside_bins"] > 0 and counts["rows"] == 4000


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--bins", "0.5"], "at least two"),
        (["--bins", "0.5,x"], "comma-separated redshifts"),
        (["--bins", "0.8,0.5"], "increasing"),
        (["--bins", "0.5,1", "--by", "Z_NOPE"], "no column 'Z_NOPE' (--by)"),
        (["--bins", "0.5,1", "--weights", "LENS_W"], "no column 'LENS_W' (--weights)"),
        (["--bins", "3,4"], "no object with a PDF has Z_PHOT within"),
        (["--bins", "0.5,1", "-K", "1"], "--resamples 1"),
    ],
)
def test_bad_requests_are_refused_in_one_line(run_mmz, calibrated, tmp_path, args, expected):
    code, _, err = run_mmz("nz", calibrated, "-o", tmp_path / "nz", *args)
    assert code == 2 and expected in " ".join(err.split()), err
