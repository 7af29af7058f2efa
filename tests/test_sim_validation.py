"""bench/sim_validation.py's comparison with real galaxies: the SDSS sample in the kcorrect wheel is
read as the SDSS main galaxy sample, colours are summarised per redshift bin, and the simulated side can
have SED variety."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import load_bench


def test_the_real_sdss_sample_is_the_main_galaxy_sample():
    pytest.importorskip("kcorrect")
    real = load_bench("sim_validation").real_sdss()
    n = len(real["z"])
    assert 9_000 < n <= 10_000  # of the wheel's 10,000, those with r_petro <= 17.77 and all fluxes
    assert {len(v) for v in real.values()} == {n}
    assert 0.08 < np.median(real["z"]) < 0.12  # the MGS peaks at z ~ 0.1
    dereddened_r = real["mags"][:, 2] - real["extinction"][:, 2]
    assert np.percentile(dereddened_r, 99) < 17.77 + 0.3  # model and Petrosian r differ by ~0.1-0.2 mag
    assert np.all(np.isclose(real["ebv"] * 2.751, real["extinction"][:, 2]))
    assert 0.7 < np.median(real["mags"][:, 1] - real["mags"][:, 2]) < 1.1  # g - r at z ~ 0.1
    assert 14 < np.median(real["ks_ab"]) < 17


def test_colour_quantiles_per_redshift_bin():
    validation = load_bench("sim_validation")
    edges = validation.COLOUR_Z_EDGES
    rng = np.random.default_rng(0)
    z = rng.uniform(edges[0], edges[-2], 20_000)  # nothing in the last bin
    bin_of = np.searchsorted(edges, z, side="right") - 1
    colours = np.column_stack([bin_of + rng.normal(0, 0.1, z.size), -bin_of + rng.normal(0, 0.2, z.size)])
    q = validation.colour_quantiles(z, colours)
    assert q.shape == (len(edges) - 1, 2, 3)
    assert np.allclose(q[:-1, 0, 1], np.arange(len(edges) - 2), atol=0.02)  # medians
    assert np.allclose(q[:-1, 1, 1], -np.arange(len(edges) - 2), atol=0.03)
    assert np.allclose(q[:-1, 0, 2] - q[:-1, 0, 0], 0.2, atol=0.02)  # 16-84%: 2 sigma
    assert np.allclose(q[:-1, 1, 2] - q[:-1, 1, 0], 0.4, atol=0.04)
    assert np.isnan(q[-1]).all()  # an empty bin is no figure


def test_sed_variety_child_profiles_extend_the_shipped_ones(tmp_path):
    from mmzcli.profiles import load_profile
    from mmzcli.sim.settings import SimSettings

    validation = load_bench("sim_validation")
    assert validation.with_variety("hsc9", 0.0, tmp_path) == "hsc9"  # no child: the shipped profile itself
    child = load_profile(validation.with_variety("hsc9", 0.3, tmp_path))
    assert child.band_names == load_profile("hsc9").band_names
    assert SimSettings.from_profile(child).sed.variety == 0.3
