"""mmz bootstrap: significance of a clearly better catalogue, none between equals, agreement with a direct bootstrap."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import EDGES, as_written, is_png, simulated, write_photoz_catalog
from scipy import stats

from mmzcli import bootstrap, metrics

PAIRED = ("sigma_mad", "eta", "abs_bias", "crps")


@pytest.fixture(scope="module")
def catalogs(tmp_path_factory):
    """The same 600 objects predicted by a poor model and by a clearly better one."""
    tmp = tmp_path_factory.mktemp("boot")
    base = write_photoz_catalog(tmp / "base.fits", simulated(600, 0.06, 0.12, seed=11))
    better = write_photoz_catalog(tmp / "better.fits", simulated(600, 0.03, 0.03, seed=11))
    return base, better


def run_json(run_mmz, *args) -> dict:
    code, out, err = run_mmz("bootstrap", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def test_clearly_better_catalogue_is_significant(catalogs, run_mmz, tmp_path):
    base, better = catalogs
    got = run_json(run_mmz, base, better, "-K", 2000, "--seed", 3, "-o", tmp_path)
    assert set(got) == set(PAIRED) and all(set(v) == {"base", "other", "gain", "p_value"} for v in got.values())
    for key in ("sigma_mad", "eta", "crps"):
        assert got[key]["p_value"] < 0.01, key
        assert got[key]["gain"] > 0.2, key
    for key in PAIRED:  # G(M) = (|M_B| - |M_M|)/|M_B|
        r = got[key]
        assert r["gain"] == pytest.approx((abs(r["base"]) - abs(r["other"])) / abs(r["base"]))
    # the values are the metrics of each catalogue
    cols = as_written(simulated(600, 0.06, 0.12, seed=11))
    dz = metrics.delta_z(cols["z_phot"], cols["z_spec"])
    assert got["sigma_mad"]["base"] == pytest.approx(metrics.sigma_mad(dz))
    assert got["abs_bias"]["base"] == pytest.approx(abs(np.mean(dz)))
    report = json.loads((tmp_path / "bootstrap.json").read_text())
    assert report["resamples"] == 2000 and report["n"] == 600 and report["seed"] == 3
    assert is_png(tmp_path / "bootstrap.png")

    # the other way round: the gain is negative and nothing is significant
    swapped = run_json(run_mmz, better, base, "-K", 2000, "-o", tmp_path / "swapped", "--no-plots")
    for key in ("sigma_mad", "eta", "crps"):
        assert swapped[key]["gain"] < 0 and swapped[key]["p_value"] > 0.95, key


def test_equally_good_catalogues_are_not_significant(catalogs, run_mmz, tmp_path):
    """The same objects and the same scatter, with independent errors: no metric differs significantly."""
    base, _ = catalogs
    twin = write_photoz_catalog(tmp_path / "twin.fits", simulated(600, 0.06, 0.12, seed=11, error_seed=12))
    got = run_json(run_mmz, base, twin, "-K", 2000, "--seed", 3, "-o", tmp_path, "--no-plots")
    for key in PAIRED:
        assert 0.05 < got[key]["p_value"] < 0.95, key
    for key in ("sigma_mad", "crps"):  # eta and |bias| are small numbers: their relative gains swing widely
        assert abs(got[key]["gain"]) < 0.1, key
    report = json.loads((tmp_path / "bootstrap.json").read_text())
    for key in PAIRED:  # the 95 % interval of base - other straddles 0
        low, high = report[key]["delta_ci95"]
        assert low < 0 < high, key


def test_spread_of_the_bootstrap_matches_the_standard_errors():
    """Independent Gaussian errors: std of the sigma_MAD difference = sqrt(2) x 1.166 sigma / sqrt(n)
    (the asymptotic standard error of the MAD of a normal sample); for a mean such as the CRPS it is
    the standard deviation of the paired differences over sqrt(n)."""
    n, sigma = 2000, 0.04
    rng = np.random.default_rng(3)
    dz_b, dz_o = rng.normal(0, sigma, n), rng.normal(0, sigma, n)
    crps_b, crps_o = np.abs(dz_b), np.abs(dz_o)
    result, samples = bootstrap.bootstrap_metrics(dz_b, dz_o, crps_b, crps_o, 0.15, resamples=2000, seed=1)
    se_sigma_mad = 1.4826 * sigma / (4 * stats.norm.pdf(stats.norm.ppf(0.75)) * np.sqrt(n))  # 1.166 sigma/sqrt(n)
    assert np.std(samples["sigma_mad"]) == pytest.approx(np.sqrt(2) * se_sigma_mad, rel=0.15)
    assert np.std(samples["crps"]) == pytest.approx(np.std(crps_b - crps_o) / np.sqrt(n), rel=0.1)
    assert 0.05 < result["sigma_mad"]["p_value"] < 0.95 and 0.05 < result["crps"]["p_value"] < 0.95


def _direct_bootstrap(dz_b, dz_o, crps_b, crps_o, threshold, resamples, seed):
    """Appendix D written plainly: resample, recompute every metric, p = freq(delta_b - delta >= delta)."""

    def scores(dz, crps):
        return np.array([metrics.sigma_mad(dz), np.mean(np.abs(dz) >= threshold), abs(np.mean(dz)), np.mean(crps)])

    delta = scores(dz_b, crps_b) - scores(dz_o, crps_o)
    rng = np.random.default_rng(seed)
    deltas = []
    for _ in range(resamples):
        i = rng.integers(0, len(dz_b), len(dz_b))
        deltas.append(scores(dz_b[i], crps_b[i]) - scores(dz_o[i], crps_o[i]))
    return np.mean(np.array(deltas) - delta >= delta, axis=0)


def test_p_values_agree_with_a_direct_bootstrap():
    rng = np.random.default_rng(5)
    n = 300
    z = rng.uniform(0.1, 1.5, n)
    noise = rng.standard_t(3, n)
    dz_b = 0.040 * noise + 0.004
    dz_o = 0.037 * noise + 0.008 * rng.normal(size=n) + 0.003  # slightly better: p of a few per cent to tens
    crps_b = np.abs(dz_b) * (1 + z) + 0.01
    crps_o = np.abs(dz_o) * (1 + z) + 0.01 + 0.002 * rng.normal(size=n)
    result, samples = bootstrap.bootstrap_metrics(dz_b, dz_o, crps_b, crps_o, 0.1, resamples=4000, seed=1)
    slow = _direct_bootstrap(dz_b, dz_o, crps_b, crps_o, 0.1, 4000, seed=2)
    fast = np.array([result[k]["p_value"] for k in PAIRED])
    assert fast.max() > 0.02 and fast.min() < 0.9  # informative p-values, not all 0 or 1
    np.testing.assert_allclose(fast, slow, atol=0.04)  # Monte Carlo error of two K = 4000 estimates: ~0.01
    # for mean metrics the bootstrap distribution is centred on the observed difference (H0 shifts it to 0)
    for key in ("eta", "crps"):
        assert np.mean(samples[key]) == pytest.approx(result[key]["delta"], abs=3 * np.std(samples[key]) / 20)


@pytest.mark.parametrize("n", [7, 200, 201])
def test_sigma_mad_from_counts_equals_numpy_on_the_resampled_arrays(n):
    rng = np.random.default_rng(n)
    dz = np.round(rng.standard_t(3, n) * 0.03, 3)  # rounded: many ties
    index = rng.integers(0, n, size=(30, n))
    counts = np.stack([np.bincount(i, minlength=n) for i in index])
    fast = bootstrap.sigma_mad_of_counts(counts, bootstrap.SortedSample(dz), n)
    slow = [metrics.sigma_mad(dz[i]) for i in index]
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-11)


def test_same_seed_same_answer_whatever_the_threads():
    rng = np.random.default_rng(0)
    dz_b, dz_o = rng.normal(0, 0.05, 3000), rng.normal(0, 0.048, 3000)
    crps = np.abs(dz_b)
    bootstrap.CHUNK_ELEMENTS, saved = 3000 * 64, bootstrap.CHUNK_ELEMENTS  # several chunks
    try:
        one, s1 = bootstrap.bootstrap_metrics(dz_b, dz_o, crps, crps, 0.15, resamples=300, seed=9, threads=1)
        two, s2 = bootstrap.bootstrap_metrics(dz_b, dz_o, crps, crps, 0.15, resamples=300, seed=9, threads=2)
        _, s3 = bootstrap.bootstrap_metrics(dz_b, dz_o, crps, crps, 0.15, resamples=300, seed=10, threads=2)
    finally:
        bootstrap.CHUNK_ELEMENTS = saved
    assert one == two and all(np.array_equal(s1[k], s2[k]) for k in PAIRED)
    assert not np.array_equal(s1["sigma_mad"], s3["sigma_mad"])  # another seed, other resamples


def test_catalogues_without_common_objects_or_grid_exit_2(catalogs, run_mmz, tmp_path):
    base, _ = catalogs
    cols = simulated(100, 0.03, 0.03, seed=1, first_id=50_000)
    elsewhere = write_photoz_catalog(tmp_path / "elsewhere.fits", cols)
    code, _, err = run_mmz("bootstrap", base, elsewhere, "-o", tmp_path / "out")
    assert code == 2 and "no common ID" in err and str(base) in err and str(elsewhere) in err
    assert len(err.strip().splitlines()) == 1
    flat = dict(simulated(600, 0.03, 0.03, seed=11), PDF=np.ones((600, 20)) / 20)
    coarse = write_photoz_catalog(tmp_path / "coarse.fits", flat, edges=EDGES[::5])
    code, _, err = run_mmz("bootstrap", base, coarse, "-o", tmp_path / "out")
    assert code == 2 and "different redshift grids" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
