"""The survey-standard point estimates of the catalogue (Z_BEST, Z_RISK, Z_STD, Z_CONF, Z_MC)."""

from __future__ import annotations

import numpy as np
from scipy import stats

from mmzcli import pdf
from mmzcli.catalog import CONF_K, RISK_GAMMA, summarise_pdfs

EDGES = np.linspace(0.0, 4.0, 401)
CENTRES = 0.5 * (EDGES[1:] + EDGES[:-1])


def gaussians(*components: tuple[float, float, float]) -> np.ndarray:
    """A binned PDF: the sum of weight x N(mean, sigma) components, normalised."""
    p = sum(w * np.exp(-0.5 * ((CENTRES - m) / s) ** 2) for w, m, s in components)
    return p / p.sum()


def risk_at(p: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The expected loss of the HSC papers at each z, by brute force over the bins."""
    dz = (z[:, None] - CENTRES[None, :]) / (1 + CENTRES[None, :])
    return (1 - 1 / (1 + (dz / RISK_GAMMA) ** 2)) @ p


def test_z_best_minimises_the_expected_loss_and_follows_the_main_peak():
    bimodal = gaussians((0.7, 0.5, 0.03), (0.3, 2.5, 0.05))
    narrow = gaussians((1.0, 1.234, 0.04))
    z_best, risk = pdf.risk_best(np.stack([bimodal, narrow]), EDGES, RISK_GAMMA)
    fine = np.linspace(0.0, 4.0, 40001)
    for p, best, r in zip((bimodal, narrow), z_best, risk):
        losses = risk_at(p, fine)
        assert abs(best - fine[np.argmin(losses)]) < 0.003  # within a third of a bin of the true minimum
        assert abs(r - losses.min()) < 1e-4
    assert abs(z_best[0] - 0.5) < 0.01 and pdf.mean(bimodal, EDGES) > 1.0  # the mean falls between the peaks
    assert risk[0] > 5 * risk[1]  # a bimodal PDF is riskier


def test_std_conf_and_mc_describe_the_pdf():
    sigma = 0.05
    p = np.tile(gaussians((1.0, 1.0, sigma)), (4000, 1))
    ids = np.arange(10_000, 14_000)
    out = summarise_pdfs(p, EDGES, ids)
    np.testing.assert_allclose(out["Z_STD"], sigma, rtol=0.02)
    window = CONF_K * (1 + out["Z_BEST"][0])
    expected = stats.norm.cdf(window / sigma) - stats.norm.cdf(-window / sigma)
    np.testing.assert_allclose(out["Z_CONF"], expected, atol=0.01)
    # Z_MC: draws of the PDF (a KS test against it), each fixed by its ID whatever the row order
    assert stats.kstest(out["Z_MC"], stats.norm(1.0, sigma).cdf).pvalue > 0.01
    shuffled = np.random.default_rng(0).permutation(len(ids))
    again = summarise_pdfs(p[shuffled], EDGES, ids[shuffled])
    np.testing.assert_array_equal(again["Z_MC"], out["Z_MC"][shuffled])
    assert len(np.unique(out["Z_MC"])) > 3000  # different IDs, different draws


def test_a_source_without_a_pdf_has_no_estimates():
    p = np.stack([gaussians((1.0, 1.0, 0.05)), np.zeros(len(CENTRES))])
    out = summarise_pdfs(p, EDGES, np.array([1, 2]))
    for name in ("Z_BEST", "Z_RISK", "Z_STD", "Z_CONF", "Z_MC"):
        assert np.isfinite(out[name][0]) and np.isnan(out[name][1]), name
