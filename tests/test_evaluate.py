"""mmz evaluate: metrics against an independent computation, PDF calibration, matching, plots, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import EDGES, HEADER, as_written, gaussian_pdfs, is_png, simulated, write_photoz_catalog
from scipy import stats

from mmzcli import metrics


def crps_by_integration(pdf: np.ndarray, edges: np.ndarray, z: float, points: int = 40001) -> float:
    """(F - H)^2 integrated numerically with a fine trapezoid over a range that covers the grid and z."""
    lo, hi = min(edges[0], z) - 0.01, max(edges[-1], z) + 0.01
    grid = np.linspace(lo, hi, points)
    cdf = np.interp(grid, edges, np.concatenate([[0.0], np.cumsum(pdf / pdf.sum())]))
    return float(np.trapezoid((cdf - (grid >= z)) ** 2, grid))


def reference_metrics(dz: np.ndarray, threshold: float) -> dict:
    med = np.percentile(dz, 50)
    return {
        "sigma_mad": 1.4826 * np.percentile(np.abs(dz - med), 50),
        "eta": np.count_nonzero(np.abs(dz) >= threshold) / len(dz),
        "bias": np.sum(dz) / len(dz),
    }


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    columns = simulated(400, 0.04, 0.06, seed=3)
    return write_photoz_catalog(tmp_path_factory.mktemp("eval") / "oof.fits", columns), columns


def test_metrics_equal_an_independent_computation(catalog, run_mmz, tmp_path):
    path, columns = catalog
    code, out, err = run_mmz("evaluate", path, "-o", tmp_path, "--json")
    assert code == 0, err
    got = json.loads(out)[str(path)]
    ref = as_written(columns)
    dz = (ref["z_phot"] - ref["z_spec"]) / (1 + ref["z_spec"])
    expect = reference_metrics(dz, 0.15)
    crps = np.mean([crps_by_integration(p, EDGES, z) for p, z in zip(ref["pdf"], ref["z_spec"])])
    assert got["n"] == 400 and got["outlier_threshold"] == 0.15
    for key in ("sigma_mad", "eta", "bias"):
        assert got[key] == pytest.approx(expect[key], rel=1e-9, abs=1e-12), key
    assert got["crps"] == pytest.approx(crps, rel=1e-4)

    # 8 equal-count magnitude bins, error bars = std over the 5 folds of the metric in the bin
    report = json.loads((tmp_path / "metrics.json").read_text())["catalogs"][0]
    by_mag = report["by_mag"]
    assert by_mag["column"] == "MAG_I" and by_mag["n"] == [50] * 8
    order = np.argsort(ref["mag"], kind="stable")
    for b, rows in enumerate(np.array_split(order, 8)):
        assert by_mag["x_mid"][b] == pytest.approx(np.median(ref["mag"][rows]))
        assert by_mag["sigma_mad"][b] == pytest.approx(reference_metrics(dz[rows], 0.15)["sigma_mad"], rel=1e-9)
        per_fold = [reference_metrics(dz[rows][ref["fold"][rows] == f], 0.15) for f in range(5)]
        for key in ("sigma_mad", "eta", "bias"):
            assert by_mag[f"{key}_err"][b] == pytest.approx(np.std([m[key] for m in per_fold], ddof=1), rel=1e-9)
    assert report["by_z_spec"]["x_lo"][0] == pytest.approx(ref["z_spec"].min())
    assert report["overall"]["sigma_mad_err"] > 0

    for name in ("zphot_vs_zspec.png", "metrics_vs_mag.png", "metrics_vs_z.png", "pit.png"):
        assert is_png(tmp_path / name), name
    assert "σ_MAD" in err and "wrote" in err  # the table on the terminal (stderr)


def test_eta_uses_the_threshold_of_the_catalogue_header(tmp_path, run_mmz):
    columns = simulated(300, 0.04, 0.05, seed=4)
    sdss = write_photoz_catalog(tmp_path / "sdss.fits", columns, header={**HEADER, "OUTLTHR": 0.05})
    none = write_photoz_catalog(
        tmp_path / "none.fits", columns, header={k: v for k, v in HEADER.items() if k != "OUTLTHR"}
    )
    ref = as_written(columns)
    dz = (ref["z_phot"] - ref["z_spec"]) / (1 + ref["z_spec"])

    code, out, err = run_mmz("evaluate", sdss, "-o", tmp_path / "a", "--json", "--no-plots")
    got = json.loads(out)[str(sdss)]
    assert code == 0 and got["outlier_threshold"] == 0.05
    assert got["eta"] == pytest.approx(np.mean(np.abs(dz) >= 0.05)) and got["eta"] > np.mean(np.abs(dz) >= 0.15)
    code, out, err = run_mmz("evaluate", none, "-o", tmp_path / "b", "--json", "--no-plots")
    assert code == 0 and json.loads(out)[str(none)]["outlier_threshold"] == 0.15
    assert "no OUTLTHR keyword" in err


def test_pit_of_calibrated_pdfs_is_flat_and_of_overconfident_ones_is_not():
    rng = np.random.default_rng(7)
    n = 4000
    pdfs = gaussian_pdfs(rng.uniform(0.3, 1.7, n), rng.uniform(0.03, 0.15, n))
    # the truth drawn from each PDF as the catalogue reads it: a bin by its probability, uniform within
    bins = (pdfs.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1)
    z_true = EDGES[bins] + rng.random(n) * np.diff(EDGES)[bins]
    pit = metrics.pit(pdfs, EDGES, z_true)
    assert stats.kstest(pit, "uniform").pvalue > 0.01
    hist = metrics.pit_histogram(pit)
    assert max(abs(d - 1) for d in hist["density"]) < 0.3

    narrow = gaussian_pdfs(EDGES[bins] + 0.5 * np.diff(EDGES)[bins], np.full(n, 0.01))  # right centre, too narrow
    pit_narrow = metrics.pit(narrow, EDGES, z_true + rng.normal(0, 0.05, n))
    assert stats.kstest(pit_narrow, "uniform").pvalue < 0.01
    density = metrics.pit_histogram(pit_narrow)["density"]
    assert density[0] > 2 and density[-1] > 2  # the U shape of over-confident PDFs


def test_crps_and_pit_of_binned_pdfs_are_exact():
    rng = np.random.default_rng(1)
    edges = np.linspace(0.0, 1.0, 21)
    pdfs = rng.random((6, 20)) ** 3
    z = np.array([0.5, 0.0, 1.0, -0.3, 1.4, 0.731])  # inside, on both edges, below and above the grid
    expect = [crps_by_integration(p, edges, zz, points=400001) for p, zz in zip(pdfs, z)]
    np.testing.assert_allclose(metrics.crps(pdfs, edges, z), expect, atol=2e-6)
    cdf = np.concatenate([np.zeros((6, 1)), np.cumsum(pdfs / pdfs.sum(1, keepdims=True), axis=1)], axis=1)
    np.testing.assert_allclose(metrics.pit(pdfs, edges, z), [np.interp(zz, edges, c) for zz, c in zip(z, cdf)])
    # a PDF in one bin is uniform there: CRPS = E|X - y| - E|X - X'|/2 = w/4 - w/6 = w/12 at its centre
    one = np.zeros((1, 20))
    one[0, 10] = 1.0
    assert metrics.crps(one, edges, np.array([0.525]))[0] == pytest.approx(0.05 / 12)


def test_several_catalogues_are_matched_by_id_and_compared_on_common_objects(tmp_path, run_mmz):
    a = simulated(300, 0.04, 0.05, seed=5)
    b = simulated(300, 0.02, 0.02, seed=5)  # the same objects (seed), half the scatter
    # b lacks the first 40 objects of a, has 25 others, and is in another order
    keep = np.arange(40, 300)
    shuffled = np.random.default_rng(0).permutation(len(keep) + 25)
    b_cols = {k: np.concatenate([v[keep], v[:25]])[shuffled] for k, v in b.items()}
    b_cols["ID"] = np.concatenate([a["ID"][keep], np.arange(9000, 9025)])[shuffled]
    path_a = write_photoz_catalog(tmp_path / "a.fits", a)
    path_b = write_photoz_catalog(tmp_path / "b.fits", b_cols)

    code, out, err = run_mmz("evaluate", path_a, path_b, "-o", tmp_path / "out", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got[str(path_a)]["n"] == got[str(path_b)]["n"] == 260
    assert "65 objects are not in every catalogue" in err  # 40 only in a, 25 only in b
    ref = as_written(a)
    common = np.arange(40, 300)
    dz = (ref["z_phot"] - ref["z_spec"]) / (1 + ref["z_spec"])
    assert got[str(path_a)]["sigma_mad"] == pytest.approx(reference_metrics(dz[common], 0.15)["sigma_mad"])
    assert got[str(path_b)]["sigma_mad"] < 0.7 * got[str(path_a)]["sigma_mad"]
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert [c["label"] for c in report["catalogs"]] == ["a", "b"] and report["n_common"] == 260


def test_truth_table_supplies_z_spec_and_magnitudes(tmp_path, run_mmz):
    from astropy.table import Table

    columns = simulated(200, 0.04, 0.05, seed=8)
    with_truth = write_photoz_catalog(tmp_path / "with.fits", columns)
    without = write_photoz_catalog(tmp_path / "without.fits", columns, drop=("Z_SPEC", "MAG_I", "FOLD"))
    truth = tmp_path / "specz.fits"
    Table(
        {
            "ID": columns["ID"][::-1],
            "Z_SPEC": columns["Z_SPEC"][::-1].astype(np.float32),
            "MAG_i": columns["MAG_I"][::-1].astype(np.float32),
        }
    ).write(truth)

    code, out, err = run_mmz("evaluate", with_truth, "-o", tmp_path / "a", "--json", "--no-plots")
    expect = json.loads(out)[str(with_truth)]
    code, out, err = run_mmz("evaluate", without, "--truth", truth, "-o", tmp_path / "b", "--json", "--no-plots")
    assert code == 0, err
    got = json.loads(out)[str(without)]
    for key in ("n", "sigma_mad", "eta", "bias", "crps"):
        assert got[key] == pytest.approx(expect[key]), key
    by_mag = json.loads((tmp_path / "b" / "metrics.json").read_text())["catalogs"][0]["by_mag"]
    assert by_mag["column"] == "MAG_I" and "sigma_mad_err" not in by_mag  # no FOLD: no error bars


@pytest.fixture
def bad_inputs(tmp_path, catalog):
    good, columns = catalog
    other = dict(columns, ID=columns["ID"] + 100_000)
    coarse = np.linspace(0.0, 2.0, 51)
    return {
        "good": good,
        "disjoint": write_photoz_catalog(tmp_path / "disjoint.fits", other),
        "no_zspec": write_photoz_catalog(tmp_path / "no_zspec.fits", columns, drop=("Z_SPEC",)),
        "coarse": write_photoz_catalog(
            tmp_path / "coarse.fits", dict(columns, PDF=columns["PDF"].reshape(-1, 50, 2).sum(2)), edges=coarse
        ),
        "sdss": write_photoz_catalog(tmp_path / "sdss.fits", columns, header={**HEADER, "OUTLTHR": 0.05}),
        "not_photoz": write_catalog_plain(tmp_path / "plain.fits"),
    }


def write_catalog_plain(path):
    from astropy.table import Table

    Table({"ID": np.arange(3), "Z": np.zeros(3)}).write(path)
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["good", "disjoint"], "no common ID"),
        (["no_zspec"], "no column 'Z_SPEC'; give the spectroscopic redshifts with --truth"),
        (["good", "coarse"], "different redshift grids (100 bins on 0-2 vs 50 bins on 0-2)"),
        (["good", "sdss"], "different outlier thresholds"),
        (["good", "--mag-col", "MAG_Q"], "no column 'MAG_Q' for --mag-col"),
        (["not_photoz"], "no HDU 'PHOTOZ'"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(bad_inputs, run_mmz, tmp_path, args, message):
    argv = [str(bad_inputs.get(a, a)) for a in args]
    code, out, err = run_mmz("evaluate", *argv, "-o", tmp_path / "out")
    assert code == 2 and message in err and out == "", err
    assert len(err.strip().splitlines()) == 1, err
    if len(args) > 1 and args[1] in bad_inputs:  # both files are named
        assert str(bad_inputs[args[0]]) in err and str(bad_inputs[args[1]]) in err
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_magnitude_axis_names_the_band_as_the_header_spells_it():
    from mmzcli.plots import mag_label

    assert mag_label("MAG_I", "i") == "i magnitude [AB mag]"  # SDSS/HSC i, not Johnson-Cousins I
    assert mag_label("MAG_KS", "Ks") == "Ks magnitude [AB mag]"
    assert mag_label("MAG_R") == "R magnitude [AB mag]"
