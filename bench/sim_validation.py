"""Validation of ``mmz simulate`` against what real surveys show (docs/simulation.md).

    .venv/bin/python bench/sim_validation.py            # everything, plots into docs/img/
    .venv/bin/python bench/sim_validation.py --quick    # smaller samples, no plots
    .venv/bin/python bench/sim_validation.py --real --json docs/results/sim-vs-real-sdss.json
    .venv/bin/python bench/sim_validation.py --sed-variety 0,0.3 [--real-rows odd]   # with kcorrect basis light

Prints, for each check, the figure and its target:

- against real galaxies: the kcorrect wheel's 10,000 real SDSS galaxies with spectroscopic
  redshifts, cut to the main galaxy sample (r_petro <= 17.77); the same colour forest on their
  photometry and on the simulated sdss sample (also cut to the real sample's 2MASS Ks limit),
  the forest fitted to the simulated galaxies and judged on the real ones, and their dereddened
  colours by redshift (``--real``: this check alone);
- realism of the colour-redshift scatter: a random forest (200 trees, min_samples_leaf=3,
  5-fold CV) on the sdss spectroscopic sample's noisy adjacent colours, r and E(B-V)
  gives σ_MAD ≈ 0.013 and η(0.05) ≈ 1-2% on real SDSS MGS photometry; the same for hsc9 at i <= 24;
- colour tracks: the 4000 Å break of red galaxies moves from g-r into r-i across z ≈ 0.35-0.45;
  the issue asks that most z ≈ 3 galaxies in the HSC profiles be u-band dropouts (u-g > 1.5):
  the fraction at 2.7 < z < 3.3, from true (noiseless) and catalogue (noisy) colours, and
  why (the u filter's share redward of the Lyman limit, the IGM, the escape fraction, the
  same galaxies through the older, redder MegaCam u* and through SDSS u);
- images: forced aperture photometry of bright isolated objects recovers the catalogue
  magnitudes within 0.05 mag; the measured 5σ depth is within 0.2 mag of the profile and the
  measured PSF FWHM (stars of every tile, hsc9's NIR grid included) within 10%.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from itertools import pairwise
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmzcli.profiles import load_profile  # noqa: E402  (after the sys.path line: the bench runs from a checkout)
from mmzcli.sim.population import Kind  # noqa: E402
from mmzcli.sim.survey import simulate_survey, spectroscopic_catalog  # noqa: E402

IMG = ROOT / "docs" / "img"


def photoz_metrics(z_true, z_pred, threshold=0.05):
    dz = (z_pred - z_true) / (1 + z_true)
    sigma = 1.4826 * np.median(np.abs(dz - np.median(dz)))
    return sigma, float(np.mean(np.abs(dz) >= threshold)), float(np.mean(np.abs(dz) >= 0.15))


def random_forest(profile: str, n: int, seed: int = 1, mag_cut: float | None = None):
    """5-fold CV random-forest photo-z on the catalogue colours; returns (z, z_pred, metrics)."""
    prof = load_profile(profile)
    cat = spectroscopic_catalog(prof, n, seed=seed)
    mags = np.column_stack([cat[f"MAG_{b}"] for b in prof.band_names]).astype(float)
    ref = mags[:, prof.band_index(prof.reference_band)]
    keep = np.ones(len(ref), bool) if mag_cut is None else ref <= mag_cut
    z = cat["Z_SPEC"][keep].astype(float)
    pred = forest_cv(mags[keep], ref[keep], cat["EBV"][keep], z)
    return z, pred, photoz_metrics(z, pred), cat, keep


# Real SDSS galaxies shipped in the kcorrect wheel (a [sim] dependency): its test sample of 10,000
# SDSS main-sample galaxies with spectroscopic redshifts, each matched to a 2MASS detection
# (Blanton & Roweis 2007), so biased to galaxies bright in Ks: the simulated side is cut alike.
KCORRECT_SAMPLE = Path("data") / "test" / "gst_tests_small.fits"
SDSS_R_EXTINCTION = 2.751  # A_r / E(B-V)_SFD of the sample's EXTINCTION column (Schlegel et al. 1998)
MGS_LIMIT = 17.77  # SDSS main galaxy sample: dereddened Petrosian r
KS_VEGA_TO_AB = 1.85  # 2MASS Ks (Blanton et al. 2005)
# a 2MASS Ks band for the sdss profile, only to select the simulated galaxies by (their noise-free Ks)
TWOMASS_KS = {
    "name": "Ks",
    "filter": "twomass_Ks",
    "wavelength": 21590,
    "depth": 20.0,
    "psf_fwhm": 1.3,
    "zeropoint": 22.5,
    "extinction": 0.306,
}
COLOUR_Z_EDGES = np.array([0.0, 0.05, 0.08, 0.11, 0.14, 0.18, 0.25])
LIKE_2MASS = "simulated, 2MASS-like"  # the simulated sample cut at the real sample's 95th percentile in Ks


def real_sdss() -> dict[str, np.ndarray]:
    """The kcorrect test sample cut to the SDSS main galaxy sample: z, observed model magnitudes [N, 5]
    (ugriz), their Galactic extinction [N, 5], E(B-V) and the 2MASS Ks magnitude (AB)."""
    from astropy.io import fits

    from mmzcli.sim.sed import package_dir

    table = fits.getdata(package_dir("kcorrect") / KCORRECT_SAMPLE)
    model = np.asarray(table["MODELFLUX"], float)  # nanomaggies
    petro_r = np.asarray(table["PETROFLUX"][:, 2], float)
    extinction = np.asarray(table["EXTINCTION"], float)
    ks = np.asarray(table["K_M_EXT"], float)
    ok = (model > 0).all(axis=1) & (petro_r > 0) & (ks > 0)
    ok &= 22.5 - 2.5 * np.log10(np.where(ok, petro_r, 1.0)) - extinction[:, 2] <= MGS_LIMIT
    return {
        "z": np.asarray(table["Z"], float)[ok],
        "mags": 22.5 - 2.5 * np.log10(model[ok]),
        "extinction": extinction[ok],
        "ebv": extinction[ok, 2] / SDSS_R_EXTINCTION,
        "ks_ab": ks[ok] + KS_VEGA_TO_AB,
    }


def colour_forest():
    """The study's colour forest (docs/design.md §9)."""
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=200, min_samples_leaf=3, n_jobs=2, random_state=0)


def colour_features(mags: np.ndarray, ref: np.ndarray, ebv: np.ndarray) -> np.ndarray:
    """Adjacent colours, the reference magnitude and E(B-V)."""
    return np.column_stack([mags[:, :-1] - mags[:, 1:], ref, ebv])


def forest_cv(mags: np.ndarray, ref: np.ndarray, ebv: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The colour forest's 5-fold cross-validated redshifts."""
    from sklearn.model_selection import KFold, cross_val_predict

    cv = KFold(5, shuffle=True, random_state=0)
    return cross_val_predict(colour_forest(), colour_features(mags, ref, ebv), z, cv=cv)


def colour_quantiles(z: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """16th, 50th and 84th percentiles of each colour in the bins of COLOUR_Z_EDGES: [bins, colours, 3]."""
    out = np.full((len(COLOUR_Z_EDGES) - 1, colours.shape[1], 3), np.nan)
    for i, (lo, hi) in enumerate(pairwise(COLOUR_Z_EDGES)):
        inside = (z >= lo) & (z < hi)
        if inside.sum() >= 20:
            out[i] = np.percentile(colours[inside], [16, 50, 84], axis=0).T
    return out


def against_real_sdss(n_sim: int, plot: bool, varieties=(0.0,), rows: str = "all") -> tuple[dict, dict, float]:
    """The simulated sdss sample against real SDSS galaxies: the colour forest on each, and the
    dereddened colours by redshift. Returns {sample: (N, σ_MAD, η(0.05), η(0.15), colour quantiles,
    (z, dereddened magnitudes))}; {simulated sample: (σ_MAD, η(0.05), η(0.15), median Δz/(1+z), the
    same per bin)} of a forest trained on it and judged on the real galaxies; and the Ks limit (AB)
    that makes the simulated sample 2MASS-like.  One simulated sample (all, and 2MASS-like) per SED
    variety; ``rows`` (all, even, odd) keeps half of the real galaxies, so that a setting chosen on
    one half is judged on the other."""
    real = real_sdss()
    ks_limit = float(np.percentile(real["ks_ab"], 95))
    if rows != "all":
        keep = np.arange(real["z"].size) % 2 == (rows == "odd")
        real = {k: v[keep] for k, v in real.items()}
    samples = {"real": (real["z"], real["mags"], real["ebv"], real["mags"] - real["extinction"])}
    for variety in varieties:
        samples.update(simulated_sdss(n_sim, variety, ks_limit))
    table = {}
    for name, (zs, m, e, d) in samples.items():
        metrics = photoz_metrics(zs, forest_cv(m, m[:, 2], e, zs))
        table[name] = (len(zs), *metrics, colour_quantiles(zs, d[:, :-1] - d[:, 1:]), (zs, d))
    # trained on simulated galaxies, judged on the real ones: does the simulation's colour-redshift relation hold?
    real_features = colour_features(real["mags"], real["mags"][:, 2], real["ebv"])
    transfer = {}
    for name, (zs, m, e, _) in samples.items():
        if name == "real":
            continue
        pred = colour_forest().fit(colour_features(m, m[:, 2], e), zs).predict(real_features)
        dz = (pred - real["z"]) / (1 + real["z"])
        bias = [float(np.median(dz[(real["z"] >= lo) & (real["z"] < hi)])) for lo, hi in pairwise(COLOUR_Z_EDGES)]
        transfer[name] = (*photoz_metrics(real["z"], pred), float(np.median(dz)), bias)
    if plot:
        plain = tuple(varieties) == (0.0,) and rows == "all"
        plot_real_colours(table, list("ugriz"), "sim_vs_real_sdss.png" if plain else f"sim_vs_real_sdss_{rows}.png")
    return table, transfer, ks_limit


def simulated_sdss(n: int, variety: float, ks_limit: float) -> dict[str, tuple]:
    """The simulated sdss spectroscopic sample (seed 1) at an SED variety, all and 2MASS-like:
    {name: (z, magnitudes [N, 5], E(B-V), dereddened magnitudes)}."""
    import yaml

    from mmzcli.profiles import profile_from_dict, shipped_profiles_dir

    raw = yaml.safe_load((shipped_profiles_dir() / "sdss.yaml").read_text())
    raw["bands"].append(TWOMASS_KS)
    raw.setdefault("simulation", {}).setdefault("sed", {})["variety"] = variety
    prof = profile_from_dict(raw, source="sdss + 2MASS Ks")
    cat = spectroscopic_catalog(prof, n, seed=1)
    mags = np.column_stack([cat[f"MAG_{b}"] for b in "ugriz"]).astype(float)
    z, ebv = cat["Z_SPEC"].astype(float), cat["EBV"].astype(float)
    dered = mags - ebv[:, None] * np.array([band.extinction for band in prof.bands][:5])
    like_2mass = cat["TRUE_MAG_Ks"] <= ks_limit
    suffix = f", variety {variety:g}" if variety else ""
    return {
        f"simulated{suffix}": (z, mags, ebv, dered),
        f"{LIKE_2MASS}{suffix}": (z[like_2mass], mags[like_2mass], ebv[like_2mass], dered[like_2mass]),
    }


def real_comparison_json(rows: dict, transfer: dict, ks_limit: float, real_rows: str = "all") -> str:
    import json

    colours = ("u-g", "g-r", "r-i", "i-z")
    out = {
        "note": "simulated: the sdss profile, seed 1, at each SED variety (simulation.sed.variety, 0 where "
        "unnamed); real: kcorrect's test sample of SDSS galaxies",
        "real_rows": real_rows,
        "ks_limit_ab": ks_limit,
        "z_edges": COLOUR_Z_EDGES.tolist(),
        "samples": {
            name: {
                "n": count,
                "sigma_mad": sig,
                "eta_0.05": eta5,
                "eta_0.15": eta15,
                "colours_p16_p50_p84": {c: quantiles[:, k].round(4).tolist() for k, c in enumerate(colours)},
            }
            for name, (count, sig, eta5, eta15, quantiles, _) in rows.items()
        },
        "trained_on_simulated_judged_on_real": {
            name: {"sigma_mad": sig, "eta_0.05": eta5, "eta_0.15": eta15, "median_dz": bias, "median_dz_per_bin": bins}
            for name, (sig, eta5, eta15, bias, bins) in transfer.items()
        },
    }
    return json.dumps(out, indent=1)


def plot_real_colours(rows: dict, bands: list[str], filename: str) -> None:
    """Dereddened colours against z_spec: the real galaxies and every 2MASS-like simulated sample
    (points for the first), the median of the first simulated sample uncut."""
    import matplotlib.pyplot as plt

    centres = (COLOUR_Z_EDGES[1:] + COLOUR_Z_EDGES[:-1]) / 2
    like_2mass = [name for name in rows if name.startswith(LIKE_2MASS)]
    uncut = next(name for name in rows if name.startswith("simulated") and name not in like_2mass)
    fig, axes = plt.subplots(1, len(bands) - 1, figsize=(15, 3.8))
    for c, ax in enumerate(axes):
        for i, name in enumerate(["real", *like_2mass]):
            colour = "k" if i == 0 else f"C{i + 2}"
            quantiles, (z, dered) = rows[name][4], rows[name][5]
            if i < 2:
                ax.scatter(z, dered[:, c] - dered[:, c + 1], s=1, alpha=0.06, c=colour)
            q = quantiles[:, c]
            ax.plot(centres, q[:, 1], "-", color=colour, label=f"{name}: median, 16-84%")
            ax.plot(centres, q[:, 0], ":", centres, q[:, 2], ":", color=colour)
        q = rows[uncut][4][:, c]
        ax.plot(centres, q[:, 1], "--", color="C0", label=f"{uncut}, all: median")
        lo, hi = np.nanpercentile(rows["real"][4][:, c], [0, 100])
        ax.set(xlim=(0, 0.25), ylim=(lo - 0.6, hi + 0.6), xlabel="z_spec", ylabel=f"{bands[c]}-{bands[c + 1]}")
    axes[0].legend(loc="lower right", fontsize=7)
    fig.suptitle(
        "dereddened colours: real SDSS main-sample galaxies with 2MASS (kcorrect's test sample), simulated sdss"
    )
    fig.tight_layout()
    fig.savefig(IMG / filename, dpi=90)
    plt.close(fig)


def colour_tracks():
    """Median colours of red galaxies against z: where the 4000 Å break leaves g-r for r-i."""
    cat = spectroscopic_catalog("cfhtls", 6000, seed=2)
    z, kind = cat["Z_TRUE"], cat["KIND"]
    gr, ri = cat["MAG_g"] - cat["MAG_r"], cat["MAG_r"] - cat["MAG_i"]
    bins = np.arange(0.05, 0.85, 0.05)
    red = kind == Kind.RED
    med_gr = [np.median(gr[red & (z >= a) & (z < a + 0.05)]) for a in bins]
    med_ri = [np.median(ri[red & (z >= a) & (z < a + 0.05)]) for a in bins]
    slope_gr = np.gradient(med_gr, bins)
    slope_ri = np.gradient(med_ri, bins)
    cross = bins[np.argmax(np.array(slope_ri) > np.array(slope_gr))]  # where r-i starts rising faster
    return cross, (z, gr, ri, red, bins, med_gr, med_ri)


DROPOUT_BINS = ((2.7, 3.3), (2.9, 3.1), (3.1, 3.3), (3.0, 3.5))


def with_variety(name: str, variety: float, directory: Path) -> str:
    """A shipped profile, or where ``variety`` > 0 a child of it with that SED variety, written in ``directory``."""
    if not variety:
        return name
    path = directory / f"{name}-variety{variety:g}.yaml"
    path.write_text(f"extends: {name}\nname: {name}-variety\nsimulation:\n  sed: {{variety: {variety}}}\n")
    return str(path)


def dropouts(profile: str, n: int = 20000, seed: int = 3):
    """u-g > 1.5 around z = 3 in the spectroscopic sample, true and catalogue (noisy) colours.

    Returns the sample (z, true u-g, noisy u-g) and, per z bin of DROPOUT_BINS:
    (N, fraction true > 1.5, median true, fraction noisy > 1.5, median noisy).
    """
    cat = spectroscopic_catalog(profile, n, seed=seed)
    z = cat["Z_TRUE"]
    true = cat["TRUE_MAG_u"] - cat["TRUE_MAG_g"]
    noisy = np.asarray(cat["MAG_u"] - cat["MAG_g"], float)
    rows = {}
    for lo, hi in DROPOUT_BINS:
        s = (z > lo) & (z < hi)
        rows[lo, hi] = (
            int(s.sum()),
            np.mean(true[s] > 1.5),
            np.median(true[s]),
            np.mean(noisy[s] > 1.5),
            np.median(noisy[s]),
        )
    return (z, true, noisy), rows


# The u filters compared: hsc6's (CLAUDS, MegaCam u.MP9302), the older MegaCam u* (u.MP9301,
# CLAUDS in XMM-LSS, CFHTLS) and SDSS u (3560 Å; the U_n of Steidel et al. 2003 is at 3550 Å).
U_FILTERS = {"u (MP9302)": None, "u* (MP9301)": "cfht_megacam_us_9301", "SDSS u": "sdss_u0"}


def dropout_physics(n: int = 20000, seed: int = 4):
    """Why the u dropout happens where it does: filter, IGM, escape fraction.

    - the share of each MegaCam u's photon count (flat f_nu) redward of the Lyman limit 912(1+z);
    - the mean IGM transmission (Inoue+14) in rest-frame windows at z = 3;
    - u-g > 1.5 for one i <= 25 population seen through each filter of U_FILTERS (None:
      hsc6's u), with the Lyman-continuum escape fraction at its value and at 1.
    """
    from mmzcli.sim.population import PopulationSampler
    from mmzcli.sim.sed import LYC_ESCAPE, PhotometryGrid, igm_transmission, load_filter

    prof = load_profile("hsc6")
    u_filters = {name: fid or prof.band("u").filter for name, fid in U_FILTERS.items()}
    redward = {}
    for name, fid in list(u_filters.items())[:2]:  # the two MegaCam u
        fw, ft = load_filter(fid)
        counts = np.cumsum(ft / fw * np.gradient(fw))
        counts /= counts[-1]
        redward[name] = {z: 1 - np.interp(912 * (1 + z), fw, counts) for z in (2.8, 3.0, 3.2)}
    igm = {
        window: float(igm_transmission(np.linspace(*window, 200) * 4, 3.0).mean())
        for window in ((1050, 1170), (920, 1015), (700, 911))
    }
    filters = (*u_filters.values(), prof.band("g").filter, prof.band("i").filter)
    g = len(u_filters)
    fractions = {}
    galaxies = curves = None
    for escape in (LYC_ESCAPE, 1.0):
        grid = PhotometryGrid.build(filters, z_max=4.0, lyc_escape=escape)
        if galaxies is None:
            sampler = PopulationSampler(grid, g + 1, z_max=4.0)
            galaxies, _ = sampler.draw(np.random.default_rng(seed), n, 14.0, 25.0)
        mag = -2.5 * np.log10(sum(galaxies.fluxes(grid, None)))
        at3 = (galaxies.z > 2.7) & (galaxies.z < 3.3)
        for k, name in enumerate(u_filters):
            ug = mag[at3, k] - mag[at3, g]
            fractions[name, escape] = (np.mean(ug > 1.5), np.median(ug))
        if escape == LYC_ESCAPE:
            curves = (galaxies.z, {name: mag[:, k] - mag[:, g] for k, name in enumerate(u_filters)})
    return redward, igm, fractions, int(at3.sum()), curves


def _running_median(x, y, edges):
    centres = (edges[1:] + edges[:-1]) / 2
    return centres, [
        np.median(y[(x >= a) & (x < b)]) if np.any((x >= a) & (x < b)) else np.nan for a, b in pairwise(edges)
    ]


def plot_colours(tracks, sample, rows, curves):
    import matplotlib.pyplot as plt

    z, gr, ri, red, bins, med_gr, med_ri = tracks
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].scatter(z[red], gr[red], s=2, c="C3", alpha=0.3, label="g-r (red)")
    ax[0].scatter(z[red], ri[red], s=2, c="C0", alpha=0.3, label="r-i (red)")
    ax[0].plot(bins + 0.025, med_gr, "C3-", bins + 0.025, med_ri, "C0-")
    ax[0].axvspan(0.35, 0.45, color="0.85", zorder=-1)
    ax[0].set(
        xlim=(0, 0.9),
        ylim=(-0.2, 2.4),
        xlabel="z",
        ylabel="colour (cfhtls bands)",
        title="4000 Å break of red galaxies",
    )
    ax[0].legend(markerscale=5)
    zz, true, noisy = sample
    ax[1].scatter(zz, noisy, s=1, alpha=0.2, c="k", label="catalogue (noisy)")
    centres, med = _running_median(zz, true, np.arange(0.0, 4.05, 0.1))
    ax[1].plot(centres, med, "C0-", label="median, true colours")
    z_pop, ug = curves
    for name, style in (("u* (MP9301)", "C1--"), ("SDSS u", "C2--")):
        centres, med = _running_median(z_pop, ug[name], np.arange(0.0, 4.05, 0.1))
        ax[1].plot(centres, med, style, label=f"same galaxies through {name}")
    ax[1].axhline(1.5, color="C3")
    ax[1].axvspan(2.7, 3.3, color="0.9", zorder=-1)
    _, f_true, _, f_noisy, _ = rows[2.7, 3.3]
    ax[1].set(
        xlim=(0, 4.2),
        ylim=(-1, 5),
        xlabel="z",
        ylabel="u - g (hsc6: MegaCam u.MP9302, HSC g)",
        title=f"2.7<z<3.3: u-g>1.5 for {f_true:.0%} (true), {f_noisy:.0%} (noisy)",
    )
    ax[1].legend(loc="upper left", markerscale=5)
    fig.tight_layout()
    fig.savefig(IMG / "sim_colours.png", dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------- images


def _psf(fwhm, scale, beta=3.5, n=25, offset=(0.0, 0.0)):
    import galsim

    return galsim.Moffat(beta=beta, fwhm=fwhm).drawImage(nx=n, ny=n, scale=scale, offset=offset).array


def star_fwhms(project: Path, band, truth, half: int = 12) -> list[float]:
    """PSF FWHM [arcsec] of bright stars on all tiles: Moffat fits, beta free, neighbours masked.

    A star qualifies at S/N > 50 (2.5 mag above the depth) when nothing brighter than 2 mag
    fainter than itself lies in its (2 half + 1)^2 px cutout and nothing at all within 2 FWHM
    (plus twice a galaxy's size) of its centre; the pixels of the remaining faint neighbours
    are left out of the fit.  On one 2048 px tile the NIR mosaics (70% coverage, 2.5 mag
    shallower than i) have no star isolated from every object; with all tiles and masking
    they have a few.
    """
    from astropy.io import fits
    from astropy.wcs import WCS
    from scipy.optimize import least_squares
    from scipy.spatial import cKDTree

    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    out = []
    for tile in np.unique(np.asarray(truth["TILE"])):
        path = project / "tiles" / f"tile-{tile:04d}-{band.name}.fits"
        data = fits.getdata(path).astype(float)
        wcs = WCS(fits.getheader(path))
        scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600
        on = np.asarray(truth["TILE"]) == tile
        x, y = wcs.all_world2pix(truth["RA"][on], truth["DEC"][on], 0)
        mags = np.asarray(truth[f"MAG_{band.name}"][on], float)
        size = np.maximum(truth["R_DISK"][on], truth["R_BULGE"][on] * 3) / scale
        fwhm = band.psf_fwhm / scale
        tree = cKDTree(np.column_stack([x, y]))
        inside = (x > half + 2) & (x < data.shape[1] - half - 2) & (y > half + 2) & (y < data.shape[0] - half - 2)
        covered = np.asarray(truth[f"IN_{band.name}"][on], bool)
        stars = np.flatnonzero((truth["KIND"][on] == Kind.STAR) & inside & covered & (mags < band.depth - 2.5))
        for s in stars:
            near = [j for j in tree.query_ball_point([x[s], y[s]], 2 * half) if j != s]
            if any(mags[j] < mags[s] + 2 or np.hypot(x[j] - x[s], y[j] - y[s]) < 2 * fwhm + 2 * size[j] for j in near):
                continue
            ix, iy = round(x[s]), round(y[s])
            cut = data[iy - half : iy + half + 1, ix - half : ix + half + 1]
            fit_px = np.ones(cut.shape, bool)
            for j in near:
                fit_px &= np.hypot(xx - (x[j] - ix), yy - (y[j] - iy)) > 1.5 * fwhm + 3 * size[j]

            def resid(p, cut=cut, fit_px=fit_px):
                amp, x0, y0, fw, beta = p
                alpha = fw / (2 * np.sqrt(2 ** (1 / beta) - 1))
                return (amp * (1 + ((xx - x0) ** 2 + (yy - y0) ** 2) / alpha**2) ** -beta - cut)[fit_px]

            fit = least_squares(
                resid,
                [cut.max(), x[s] - ix, y[s] - iy, fwhm, 3.0],
                bounds=([0, -3, -3, 0.5, 1.2], [np.inf, 3, 3, 30, 20]),
            )
            out.append(fit.x[3] * scale)
    return out


def image_checks(project: Path, profile: str):
    """Depth and aperture photometry on tile 0, PSF FWHM on all tiles, per band."""
    from astropy.io import fits
    from astropy.table import Table
    from astropy.wcs import WCS
    from scipy.spatial import cKDTree

    prof = load_profile(profile)
    truth = Table.read(project / "truth.fits")
    rng = np.random.default_rng(0)
    rows = []
    for band in prof.bands:
        hdr = fits.getheader(project / "tiles" / f"tile-0000-{band.name}.fits")
        data = fits.getdata(project / "tiles" / f"tile-0000-{band.name}.fits").astype(float)
        wcs = WCS(hdr)
        scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600
        on = truth["TILE"] == 0
        x, y = wcs.all_world2pix(truth["RA"][on], truth["DEC"][on], 0)
        size = np.maximum(truth["R_DISK"][on], truth["R_BULGE"][on] * 3) / scale
        mags = truth[f"MAG_{band.name}"][on]
        # 1. depth: optimal PSF photometry at empty places
        psf = _psf(band.psf_fwhm, scale)
        h = psf.shape[0] // 2
        tree = cKDTree(np.column_stack([x, y]))
        px = rng.uniform(40, data.shape[1] - 40, 20000).astype(int)
        py = rng.uniform(40, data.shape[0] - 40, 20000).astype(int)
        dist, idx = tree.query(np.column_stack([px, py]))
        empty = dist > 6 * band.psf_fwhm / scale + 5 * size[idx]
        fluxes = np.array(
            [
                np.sum(psf * data[j - h : j + h + 1, i - h : i + h + 1]) / np.sum(psf**2)
                for i, j in zip(px[empty], py[empty])
            ]
        )
        # faint wings of galaxies only add flux: take sigma from the lower half of the distribution
        sigma = np.median(fluxes) - np.percentile(fluxes, 15.87)
        depth = band.zeropoint - 2.5 * np.log10(5 * sigma)
        # 2. PSF FWHM: Moffat fits to bright stars of every tile (below)
        fwhms = star_fwhms(project, band, truth)
        # 3. forced aperture photometry of bright isolated compact galaxies
        ap_r = (np.maximum(8 * truth["R_BULGE"][on], 4 * truth["R_DISK"][on]) + 2 * band.psf_fwhm) / scale
        # isolated: nothing brighter than 4 mag fainter within the aperture + 15 px
        close = tree.query_ball_point(np.column_stack([x, y]), ap_r + 15)
        clean = np.array([all(mags[j] > mags[i] + 4 for j in js if j != i) for i, js in enumerate(close)])
        inside = (x > 20) & (x < data.shape[1] - 20) & (y > 20) & (y < data.shape[0] - 20)
        galaxy = truth["KIND"][on] != Kind.STAR
        bright = np.flatnonzero(galaxy & (mags < band.depth - 3) & (ap_r < 25) & inside & clean)
        deltas = []
        yy2, xx2 = np.mgrid[-40:41, -40:41]
        for g in bright[:200]:
            ix, iy = round(x[g]), round(y[g])
            if not (41 <= ix < data.shape[1] - 41 and 41 <= iy < data.shape[0] - 41):
                continue
            cut = data[iy - 40 : iy + 41, ix - 40 : ix + 41]
            r = np.hypot(xx2 - (x[g] - ix), yy2 - (y[g] - iy))
            flux = cut[r < ap_r[g]].sum()
            deltas.append(band.zeropoint - 2.5 * np.log10(flux) - mags[g])
        rows.append(
            (
                band.name,
                band.depth,
                depth,
                band.psf_fwhm,
                np.median(fwhms) if fwhms else np.nan,
                len(fwhms),
                np.median(deltas) if deltas else np.nan,
                np.percentile(np.abs(deltas), 90) if deltas else np.nan,
                len(deltas),
            )
        )
    return rows


def show_tiles(project: Path, bands):
    """A corner of tile 0 in a few bands, asinh-stretched: what the cutouts see."""
    import matplotlib.pyplot as plt
    from astropy.io import fits

    fig, ax = plt.subplots(1, len(bands), figsize=(4.2 * len(bands), 4.4))
    for a, band in zip(ax, bands):
        data = fits.getdata(project / "tiles" / f"tile-0000-{band}.fits")
        crop = data[:500, :500]
        noise = 1.4826 * np.median(np.abs(crop - np.median(crop)))
        a.imshow(np.arcsinh(crop / (3 * noise)), origin="lower", cmap="gray_r", vmin=-1, vmax=6)
        a.set_title(f"hsc9 tile 0, {band} (own pixel grid)" if band in ("J", "H", "Ks") else f"hsc9 tile 0, {band}")
        a.set_xticks([])
        a.set_yticks([])
    fig.tight_layout()
    fig.savefig(IMG / "sim_tiles.png", dpi=80)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller samples, no plots")
    parser.add_argument("--real", action="store_true", help="only the comparison with real SDSS galaxies")
    parser.add_argument("--json", type=Path, help="write the comparison with real SDSS galaxies here")
    parser.add_argument(
        "--sed-variety",
        default="0",
        help="comma-separated SED varieties (simulation.sed.variety) of the simulated samples: against real "
        "galaxies, the colour-redshift forests and hsc9's u-dropouts [0]",
    )
    parser.add_argument(
        "--real-rows",
        choices=("all", "even", "odd"),
        default="all",
        help="the real galaxies compared: all, or half (choose a setting on one half, judge it on the other)",
    )
    args = parser.parse_args(argv)
    plot = not args.quick
    IMG.mkdir(parents=True, exist_ok=True)
    n = 3000 if args.quick else 10000

    print("## Against real SDSS main-sample galaxies (kcorrect's test sample), the same colour forest")
    varieties = tuple(float(v) for v in args.sed_variety.split(","))
    rows, transfer, ks_limit = against_real_sdss(2 * n, plot, varieties, args.real_rows)
    for name, (count, sig, eta5, eta15, *_) in rows.items():
        print(f"{name:36s} N={count:6d}  sigma_MAD={sig:.4f}  eta(0.05)={eta5:.2%}  eta(0.15)={eta15:.2%}")
    print(f"{LIKE_2MASS}: Ks <= {ks_limit:.2f} (AB), the real sample's 95th percentile")
    real = rows["real"][4]
    for name in [name for name in rows if name.startswith(LIKE_2MASS)]:
        print(f"dereddened colours by z_spec, median [16-84% width]: real | {name}")
        like_2mass = rows[name][4]
        for i, (lo, hi) in enumerate(pairwise(COLOUR_Z_EDGES)):
            cells = [
                f"{c}: {real[i, k, 1]:.2f} [{real[i, k, 2] - real[i, k, 0]:.2f}] | "
                f"{like_2mass[i, k, 1]:.2f} [{like_2mass[i, k, 2] - like_2mass[i, k, 0]:.2f}]"
                for k, c in enumerate(("u-g", "g-r", "r-i", "i-z"))
            ]
            print(f"{lo:.2f}-{hi:.2f}  " + "   ".join(cells))
    print("a forest trained on the simulated galaxies, judged on the real ones:")
    for name, (sig, eta5, _, bias, bins) in transfer.items():
        per_bin = ", ".join(f"{b:+.4f}" for b in bins)
        print(f"  trained on {name:36s} sigma_MAD={sig:.4f}  eta(0.05)={eta5:.2%}  median dz {bias:+.4f} ({per_bin})")
    if args.json:
        args.json.write_text(real_comparison_json(rows, transfer, ks_limit, args.real_rows))
    if args.real:
        return

    print("\n## Colour-redshift realism (random forest, 5-fold CV)")
    results = {}
    tmp = Path(tempfile.mkdtemp())  # the child profiles of --sed-variety
    for name, cut in (("sdss", None), ("hsc9", 24.0), ("cfhtls", None)):
        for variety in varieties:
            z, pred, (sig, eta5, eta15), _, _ = random_forest(with_variety(name, variety, tmp), n, mag_cut=cut)
            results.setdefault(name, (z, pred))  # the plot: the first variety
            label = f"{name}, variety {variety:g}" if variety else name
            print(
                f"{label:20s} N={len(z):6d}  sigma_MAD={sig:.4f}  eta(0.05)={eta5:.2%}  eta(0.15)={eta15:.2%}"
                + ("   [target sdss: 0.013 +-30%, eta ~1-2%]" if name == "sdss" else "")
            )
    if plot:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 3, figsize=(13, 4.3))
        for a, name in zip(ax, results):
            z, pred = results[name]
            sig, e5, _ = photoz_metrics(z, pred)
            a.scatter(z, pred, s=1, alpha=0.3, c="k")
            top = np.percentile(z, 99.5)
            a.plot([0, top], [0, top], "C3-", lw=0.8)
            a.set(
                xlim=(0, top),
                ylim=(0, top),
                xlabel="z_spec",
                ylabel="z_RF",
                title=f"{name}: σ_MAD={sig:.4f}, η(0.05)={e5:.1%}",
            )
        fig.tight_layout()
        fig.savefig(IMG / "sim_rf.png", dpi=90)
        plt.close(fig)

    print("\n## Colour tracks")
    cross, tracks = colour_tracks()
    print(f"red galaxies: r-i starts rising faster than g-r at z = {cross:.2f}   [target 0.35-0.45]")
    print("u-dropouts, u-g > 1.5 (u = MegaCam u.MP9302; true = noiseless, noisy = catalogue MAG_u - MAG_g):")
    samples = {}
    for name in ("hsc6", "hsc9"):
        samples[name], rows = dropouts(name, 20000 if plot else 8000)
        for (lo, hi), (count, f_true, m_true, f_noisy, m_noisy) in rows.items():
            print(
                f"{name}  {lo:.1f} < z < {hi:.1f}  N={count:4d}  true {f_true:4.0%} (median u-g {m_true:.2f})"
                f"  noisy {f_noisy:4.0%} (median {m_noisy:.2f})"
                + ("   [target: most]" if (lo, hi) == (2.7, 3.3) else "")
            )
        if name == "hsc6":
            hsc6_rows = rows
    for variety in [v for v in varieties if v]:
        _, rows = dropouts(with_variety("hsc9", variety, tmp), 20000 if plot else 8000)
        for (lo, hi), (count, f_true, m_true, f_noisy, m_noisy) in rows.items():
            print(
                f"hsc9, variety {variety:g}  {lo:.1f} < z < {hi:.1f}  N={count:4d}  true {f_true:4.0%} "
                f"(median u-g {m_true:.2f})  noisy {f_noisy:4.0%} (median {m_noisy:.2f})"
            )
    redward, igm, fractions, n3, curves = dropout_physics(20000 if plot else 8000)
    for name, shares in redward.items():
        print(
            f"why: share of the {name} photon count redward of 912(1+z): "
            + ", ".join(f"z={z:.1f}: {f:.0%}" for z, f in shares.items())
        )
    print(
        "     mean IGM transmission at z=3 (Inoue+14), rest "
        + ", ".join(f"{a}-{b} Å: {t:.2f}" for (a, b), t in igm.items())
    )
    print(
        f"     i <= 25 population, 2.7 < z < 3.3 (N={n3}), true u-g > 1.5: "
        + ", ".join(f"{u} f_esc={e:g}: {f:.0%} (median {m:.2f})" for (u, e), (f, m) in fractions.items())
    )
    if plot:
        plot_colours(tracks, samples["hsc6"], hsc6_rows, curves)

    print("\n## Images: depth and aperture photometry on tile 0, PSF FWHM from the stars of all tiles")
    print("band  depth  measured   fwhm  measured (n)  within 10%   aperture dm median  |dm| 90%  (n)")
    for profile, count in (("sdss", 600), ("hsc9", 600)):
        with tempfile.TemporaryDirectory() as tmp:
            simulate_survey(profile, count, Path(tmp) / "p", seed=7, tile_size=2048, jobs=2)
            print(f"-- {profile}")
            if plot and profile == "hsc9":
                show_tiles(Path(tmp) / "p", ("g", "i", "Ks"))
            for row in image_checks(Path(tmp) / "p", profile):
                ok = "yes" if abs(row[4] / row[3] - 1) <= 0.10 else "NO"  # NaN (no star): NO
                line = "{:5s} {:5.2f}  {:6.2f}    {:5.2f}  {:5.2f} ({:2d})  {:3s}        {:+.3f}        {:.3f}   ({})"
                print(line.format(*row[:6], ok, *row[6:]))


if __name__ == "__main__":
    main()
