"""mmz calibrate's PIT remapping: it makes the PIT uniform on objects it was not fitted on."""

from __future__ import annotations

import numpy as np
import pytest

from mmzcli import metrics, pdf
from mmzcli.calibrate import fit_pit_map, halves, remap
from mmzcli.errors import InputError

EDGES = np.linspace(0.0, 2.0, 201)
CENTRES = 0.5 * (EDGES[1:] + EDGES[:-1])


def miscalibrated(n=2400, shift=0.03, width=0.025, seed=0):
    """Objects observed with error 0.05 whose PDFs are offset by ``shift`` and too narrow (``width``)."""
    rng = np.random.default_rng(seed)
    z_spec = rng.uniform(0.2, 1.8, n)
    z_obs = z_spec + rng.normal(0, 0.05, n)
    p = np.exp(-0.5 * ((CENTRES[None, :] - z_obs[:, None] - shift) / width) ** 2)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32), z_spec, np.arange(n, dtype=np.int64)


def scores(p, z_spec):
    return {
        "ks": metrics.pit_histogram(metrics.pit(p, EDGES, z_spec))["ks_stat"],
        "crps": float(np.mean(metrics.crps(p, EDGES, z_spec))),
        "sigma_mad": metrics.summary(pdf.median(p, EDGES), z_spec, 0.15)["sigma_mad"],
    }


def test_the_identity_map_changes_nothing_and_empty_rows_stay_empty():
    p, _, _ = miscalibrated(n=20)
    p[3] = 0
    out = remap(p, [[0.0, 1.0], [0.0, 1.0]])
    np.testing.assert_allclose(out, p, atol=1e-7)
    assert np.all(out[3] == 0)
    np.testing.assert_allclose(np.delete(out, 3, axis=0).sum(axis=1), 1.0, atol=1e-6)


def test_a_biased_overconfident_model_is_calibrated_on_objects_the_map_never_saw():
    p, z_spec, ids = miscalibrated()
    fit, judge = halves(ids) == 0, halves(ids) == 1
    assert 0.4 < fit.mean() < 0.6  # the ID hash splits evenly
    before = scores(p[judge], z_spec[judge])
    after = scores(remap(p[judge], fit_pit_map(p[fit], EDGES, z_spec[fit])), z_spec[judge])
    assert before["ks"] > 0.2 and after["ks"] < before["ks"] / 4
    assert after["crps"] < before["crps"]
    assert abs(after["sigma_mad"] / before["sigma_mad"] - 1) < 0.05


def test_too_few_objects_are_refused():
    p, z_spec, _ = miscalibrated(n=50)
    with pytest.raises(InputError, match="too few to calibrate"):
        fit_pit_map(p, EDGES, z_spec)
