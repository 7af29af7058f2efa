"""``mmz calibrate``: recalibrate a run's PDFs by the PIT of its own out-of-fold predictions.

A calibrated PDF puts its z_spec at a uniformly distributed quantile: the probability integral
transform (PIT, the CDF at z_spec) is uniform over the objects. When it is not (a slope: biased
PDFs; a hump: too broad; a U: too narrow), the PIT's own distribution function G says by how much,
and G(F(z)) is a corrected CDF for every object (Bordoloi, Lilly & Amara 2010, MNRAS 406, 881).
G is fitted on the run's out-of-fold objects (each predicted by models that never trained on it)
as a monotone piecewise-linear curve through PIT_KNOTS quantiles of their PIT. A temperature on the
softmax was tried first and left the PIT of the converged simulated-sdss run unchanged (T = 1.02:
its PDFs are about as wide as they should be, but offset), so mmz remaps the PIT.

Judged without self-deception by cross-fitting: the objects fall in two halves by a hash of their
ID; the map fitted on one half is judged on the other, and the out-of-fold catalogue
(``mmz predict --cubes``) calibrates each object with the map of the half it is not in. The map
fitted on all of them is the one ``mmz predict`` applies to new sources.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmzcli.errors import InputError
from mmzcli.runs import RunDir

SALT = 0xCA11B  # of the ID hash that splits the objects into two halves (not Z_MC's)
PIT_KNOTS = 21  # quantiles of the PIT through which G passes: every 5%, ~30 objects apart per half of 1,200


def fit_pit_map(pdfs: np.ndarray, edges: np.ndarray, z_spec: np.ndarray) -> list[list[float]]:
    """[[PIT quantiles], [levels]]: G, the distribution function of the PIT, through PIT_KNOTS points."""
    from mmzcli import metrics

    on_grid = (z_spec >= edges[0]) & (z_spec < edges[-1]) & (pdfs.sum(axis=1) > 0)
    if on_grid.sum() < 5 * PIT_KNOTS:
        raise InputError(
            f"only {int(on_grid.sum())} out-of-fold objects with a z_spec on the grid: too few to calibrate "
            f"(at least {5 * PIT_KNOTS})"
        )
    levels = np.linspace(0.0, 1.0, PIT_KNOTS)
    x = np.quantile(metrics.pit(pdfs[on_grid], edges, z_spec[on_grid]), levels)
    x[0], x[-1] = 0.0, 1.0
    x = np.maximum.accumulate(x + np.arange(PIT_KNOTS) * 1e-9)  # strictly increasing, for interpolation
    return [x.tolist(), levels.tolist()]


def remap(pdfs: np.ndarray, pit_map) -> np.ndarray:
    """PDFs whose CDF is G(F): F at the bin edges mapped through ``pit_map``, differenced back."""
    p = np.asarray(pdfs, dtype=np.float64)
    total = p.sum(axis=-1, keepdims=True)
    cdf = np.concatenate([np.zeros(p.shape[:-1] + (1,)), np.cumsum(p, axis=-1)], axis=-1)
    cdf /= np.where(total > 0, total, 1.0)
    out = np.diff(np.interp(cdf, *pit_map), axis=-1)
    return np.where(total > 0, np.clip(out, 0.0, None), 0.0).astype(np.float32)


def halves(ids: np.ndarray) -> np.ndarray:
    """0 or 1 per object, fixed by its ID: the two sets that judge each other's map."""
    from mmzcli.pdf import uniform_from_ids

    return (uniform_from_ids(ids, SALT) >= 0.5).astype(np.int64)


def remap_cross_fitted(pdfs: np.ndarray, ids: np.ndarray, calibration: dict) -> np.ndarray:
    """Out-of-fold PDFs, each remapped by the map fitted on the half it is not in."""
    out = np.empty_like(pdfs, dtype=np.float32)
    half = halves(ids)
    for h in (0, 1):
        out[half == h] = remap(pdfs[half == h], calibration["halves"][1 - h])
    return out


def oof_digest(run: RunDir) -> str:
    """Of the run's out-of-fold PDFs: a calibration fitted on others (training went on) is stale."""
    import hashlib

    return hashlib.sha256(np.load(run.oof_path)["pdf"].tobytes()).hexdigest()[:16]


def load_calibration(run: RunDir) -> dict | None:
    """The run's calibration, checked against its out-of-fold predictions; None if it has none."""
    path = run.calibration_path
    if not path.exists():
        return None
    try:
        calibration = json.loads(path.read_text())
        for pit_map in (calibration["pit_map"], *calibration["halves"]):
            x, y = np.asarray(pit_map, dtype=np.float64)
            if len(x) != len(y) or len(x) < 2 or np.any(np.diff(x) <= 0):
                raise ValueError
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{path}: not a calibration written by mmz calibrate; run mmz calibrate again") from None
    if not run.oof_path.exists() or calibration.get("oof_digest") != oof_digest(run):
        raise InputError(
            f"{path}: fitted on out-of-fold predictions the run no longer has (trained further since?); "
            f"run mmz calibrate again, or predict with --raw"
        )
    return calibration


def calibrate_run(project: Path, run: str | None, console=None) -> dict:
    """Fit, judge (cross-fitted) and store the run's PIT map; returns what calibration.json holds."""
    from mmzcli import metrics, pdf
    from mmzcli.atomic import atomic_write_text
    from mmzcli.runs import resolve_run

    run_dir = resolve_run(Path(project), run)
    oof = run_dir.read_oof()
    profile = run_dir.profile(Path(project))
    edges = profile.redshift_grid.edges()
    ids, pdfs, z_spec = oof["id"], oof["pdf"], oof["z_spec"].astype(np.float64)
    half = halves(ids)
    calibration = {
        "method": "pit-remap",
        "pit_map": fit_pit_map(pdfs, edges, z_spec),
        "halves": [fit_pit_map(pdfs[half == h], edges, z_spec[half == h]) for h in (0, 1)],
        "objects": len(ids),
        "split": "uniform_from_ids(ID, 0xCA11B) >= 0.5",
        "oof_digest": oof_digest(run_dir),
    }
    judged = {}
    for name, p in (("raw", pdfs), ("calibrated", remap_cross_fitted(pdfs, ids, calibration))):
        score = metrics.summary(pdf.median(p, edges), z_spec, profile.outlier_threshold)
        histogram = metrics.pit_histogram(metrics.pit(p, edges, z_spec))
        score |= {"crps": float(np.mean(metrics.crps(p, edges, z_spec))), "pit_ks": histogram["ks_stat"],
                  "pit_tails": histogram["tails"]}  # fmt: skip
        judged[name] = score
    calibration["judged"] = judged
    atomic_write_text(run_dir.calibration_path, json.dumps(calibration, indent=1))
    if console is not None:
        _print(calibration, run_dir, console)
    return calibration


def _print(calibration: dict, run_dir: RunDir, console) -> None:
    from rich.table import Table

    raw, cal = calibration["judged"]["raw"], calibration["judged"]["calibrated"]
    table = Table(title=f"run {run_dir.name}: PIT remapping, {calibration['objects']} out-of-fold objects")
    for name in ("each half judged by the other's map", "raw", "calibrated"):
        table.add_column(name, justify="right")
    for key, label in (("pit_ks", "PIT KS statistic"), ("pit_tails", "PIT outside [0.01, 0.99]"), ("crps", "CRPS"),
                       ("sigma_mad", "sigma_MAD"), ("eta", "outlier fraction")):  # fmt: skip
        table.add_row(label, f"{raw[key]:.4f}", f"{cal[key]:.4f}")
    console.print(table)
    console.print(f"wrote {run_dir.calibration_path}; mmz predict applies it (--raw does not)", highlight=False)
