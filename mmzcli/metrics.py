"""Photo-z quality metrics of the paper (§5.1) on normalised residuals dz = (z_phot - z_spec)/(1 + z_spec).

Point-estimate metrics (the paper's): the robust scatter sigma_MAD, the outlier
fraction eta (|dz| >= the profile's threshold: 0.05 for SDSS, 0.15 otherwise)
and the bias <dz>; also per equal-count bin of any variable (magnitude,
redshift) with error bars from the spread over the cross-validation folds
(paper Fig. 2).

PDF metrics (beyond the paper): the probability integral transform
PIT = CDF(z_spec), flat for calibrated PDFs, and the continuous ranked
probability score CRPS = integral of (CDF(z) - H(z - z_spec))^2 dz, lower is
better.  A binned PDF is read as piecewise constant inside its bins (the
convention of :mod:`mmzcli.pdf`), so its CDF is piecewise linear and both are
computed exactly.
"""

from __future__ import annotations

import numpy as np

MAD_SCALE = 1.4826  # sigma of a Gaussian = 1.4826 x its median absolute deviation
CHUNK_ROWS = 2048  # PDFs processed together: bounds the memory of the [rows, N_b] temporaries


def delta_z(z_phot: np.ndarray, z_spec: np.ndarray) -> np.ndarray:
    return (np.asarray(z_phot) - np.asarray(z_spec)) / (1.0 + np.asarray(z_spec))


def sigma_mad(dz: np.ndarray) -> float:
    """1.4826 x median(|dz - median(dz)|): the robust scatter."""
    dz = np.asarray(dz)
    return float(MAD_SCALE * np.median(np.abs(dz - np.median(dz))))


def outlier_fraction(dz: np.ndarray, threshold: float) -> float:
    """eta: the fraction of |dz| >= threshold (0.05 for SDSS, 0.15 otherwise)."""
    return float(np.mean(np.abs(np.asarray(dz)) >= threshold))


def bias(dz: np.ndarray) -> float:
    return float(np.mean(dz))


def summary(z_phot: np.ndarray, z_spec: np.ndarray, threshold: float) -> dict[str, float]:
    dz = delta_z(z_phot, z_spec)
    return {"n": int(dz.size), "sigma_mad": sigma_mad(dz), "eta": outlier_fraction(dz, threshold), "bias": bias(dz)}


# ----------------------------------------------------------------------------- PDF calibration


def _normalised(pdf: np.ndarray) -> np.ndarray:
    p = np.asarray(pdf, dtype=np.float64)
    total = p.sum(axis=-1, keepdims=True)
    return p / np.where(total > 0, total, np.nan)


def _locate(edges: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bin of each z (-1 below the grid, N_b at or above its top) and its clipped index."""
    n_bins = len(edges) - 1
    k = np.searchsorted(edges, z, side="right") - 1
    k = np.where(z >= edges[-1], n_bins, k)
    return k, np.clip(k, 0, n_bins - 1)


def pit(pdf: np.ndarray, edges: np.ndarray, z_spec: np.ndarray) -> np.ndarray:
    """Probability integral transform: each PDF's CDF at its z_spec, linear inside the bin.

    0 below the grid, 1 above it; NaN for a PDF that sums to zero.
    """
    edges = np.asarray(edges, dtype=np.float64)
    z_spec = np.asarray(z_spec, dtype=np.float64)
    width = np.diff(edges)
    out = np.empty(len(z_spec))
    for s in range(0, len(z_spec), CHUNK_ROWS):
        p = _normalised(pdf[s : s + CHUNK_ROWS])
        z = z_spec[s : s + CHUNK_ROWS]
        k, kc = _locate(edges, z)
        rows = np.arange(len(z))
        before = np.cumsum(p, axis=1)[rows, kc] - p[rows, kc]
        inside = before + p[rows, kc] * (z - edges[kc]) / width[kc]
        out[s : s + CHUNK_ROWS] = np.where(k < 0, 0.0, np.where(k >= len(width), 1.0, inside))
        out[s : s + CHUNK_ROWS][np.isnan(p[:, 0])] = np.nan
    return np.clip(out, 0.0, 1.0)


def _square_integral(width, a, b):
    """Integral over a width of the square of a linear function going from a to b."""
    return width * (a * a + a * b + b * b) / 3.0


def crps(pdf: np.ndarray, edges: np.ndarray, z_spec: np.ndarray) -> np.ndarray:
    """Continuous ranked probability score of each PDF against its z_spec (same units as z).

    Exact for the piecewise-linear CDF of a binned PDF: bin by bin, the integral
    of (F - H)^2 is that of a squared linear function; the bin holding z_spec
    is split there.  A z_spec outside the grid adds its distance to the grid.
    """
    edges = np.asarray(edges, dtype=np.float64)
    z_spec = np.asarray(z_spec, dtype=np.float64)
    width = np.diff(edges)
    n_bins = len(width)
    bins = np.arange(n_bins)
    out = np.empty(len(z_spec))
    for s in range(0, len(z_spec), CHUNK_ROWS):
        p = _normalised(pdf[s : s + CHUNK_ROWS])
        z = z_spec[s : s + CHUNK_ROWS]
        right = np.cumsum(p, axis=1)  # CDF at the upper edge of each bin
        left = right - p
        k, kc = _locate(edges, z)
        below = bins[None, :] < k[:, None]  # bins wholly below z_spec: H = 0
        above = bins[None, :] > k[:, None]  # wholly above: H = 1
        total = np.where(below, _square_integral(width, left, right), 0.0).sum(axis=1) + np.where(
            above, _square_integral(width, 1.0 - left, 1.0 - right), 0.0
        ).sum(axis=1)
        rows = np.arange(len(z))
        a, b, lo = left[rows, kc], right[rows, kc], edges[kc]
        c = a + (b - a) * (z - lo) / width[kc]  # the CDF at z_spec
        split = _square_integral(z - lo, a, c) + _square_integral(lo + width[kc] - z, 1.0 - c, 1.0 - b)
        total += np.where((k >= 0) & (k < n_bins), split, 0.0)
        total += np.clip(edges[0] - z, 0.0, None) + np.clip(z - edges[-1], 0.0, None)
        out[s : s + CHUNK_ROWS] = total
    return out


def pit_histogram(values: np.ndarray, n_bins: int = 20) -> dict:
    """Density of PIT values in ``n_bins`` equal bins of [0, 1] (1 everywhere when calibrated) and the KS test."""
    from scipy import stats

    values = np.asarray(values)
    values = values[np.isfinite(values)]
    counts, edges = np.histogram(values, bins=n_bins, range=(0.0, 1.0))
    density = counts / max(len(values), 1) * n_bins
    ks = stats.kstest(values, "uniform") if len(values) else None
    return {
        "edges": edges.tolist(),
        "density": density.tolist(),
        "ks_stat": float(ks.statistic) if ks else None,
        "ks_p": float(ks.pvalue) if ks else None,
        # mass of the PIT outside [0.01, 0.99]: z_spec in the far tails of its PDF (catastrophic PDFs)
        "tails": float(np.mean((values < 0.01) | (values > 0.99))) if len(values) else None,
    }


# ----------------------------------------------------------------------------- binned metrics


def point_metrics(dz: np.ndarray, threshold: float, crps_values: np.ndarray | None = None) -> dict[str, float]:
    """sigma_MAD, eta, bias (and the mean CRPS) of a set of residuals."""
    if len(dz) == 0:
        return {
            "n": 0,
            "sigma_mad": float("nan"),
            "eta": float("nan"),
            "bias": float("nan"),
            **({"crps": float("nan")} if crps_values is not None else {}),
        }
    out = {"n": len(dz), "sigma_mad": sigma_mad(dz), "eta": outlier_fraction(dz, threshold), "bias": bias(dz)}
    if crps_values is not None:
        out["crps"] = float(np.mean(crps_values))
    return out


def equal_count_bins(x: np.ndarray, n_bins: int = 8) -> np.ndarray:
    """Bin label (0..n_bins-1) of each value: bins of equal counts (±1) in order of x (ties by position)."""
    x = np.asarray(x)
    labels = np.empty(len(x), dtype=np.int64)
    labels[np.argsort(x, kind="stable")] = np.arange(len(x)) * n_bins // max(len(x), 1)
    return labels


def fold_spread(
    dz: np.ndarray, folds: np.ndarray | None, threshold: float, crps_values: np.ndarray | None = None
) -> dict[str, float] | None:
    """Sample standard deviation (ddof=1) of each metric over the folds; None with fewer than 2 folds."""
    if folds is None:
        return None
    values = [
        point_metrics(dz[folds == f], threshold, None if crps_values is None else crps_values[folds == f])
        for f in np.unique(folds)
    ]
    values = [v for v in values if v["n"] > 0]
    if len(values) < 2:
        return None
    return {key: float(np.std([v[key] for v in values], ddof=1)) for key in values[0] if key != "n"}


def binned_metrics(
    dz: np.ndarray, x: np.ndarray, threshold: float, n_bins: int = 8, folds: np.ndarray | None = None
) -> dict[str, list]:
    """The metrics in ``n_bins`` equal-count bins of ``x`` (paper Fig. 2).

    Returns lists over the bins: ``x_lo``, ``x_hi`` (range of x), ``x_mid``
    (median of x, where the point is drawn), ``n``, ``sigma_mad``, ``eta``,
    ``bias`` and, with ``folds`` of at least two values, ``<metric>_err``: the
    standard deviation over folds of the metric computed per fold in the bin.
    """
    dz, x = np.asarray(dz), np.asarray(x)
    labels = equal_count_bins(x, n_bins)
    out: dict[str, list] = {key: [] for key in ("x_lo", "x_hi", "x_mid", "n", "sigma_mad", "eta", "bias")}
    errors: dict[str, list] = {"sigma_mad_err": [], "eta_err": [], "bias_err": []}
    for b in range(n_bins):
        inside = labels == b
        if not inside.any():
            continue
        xs = x[inside]
        out["x_lo"].append(float(xs.min()))
        out["x_hi"].append(float(xs.max()))
        out["x_mid"].append(float(np.median(xs)))
        for key, value in point_metrics(dz[inside], threshold).items():
            out[key].append(value)
        spread = fold_spread(dz[inside], None if folds is None else folds[inside], threshold)
        for key in ("sigma_mad", "eta", "bias"):
            errors[f"{key}_err"].append(None if spread is None else spread[key])
    if folds is not None and any(v is not None for v in errors["sigma_mad_err"]):
        out.update(errors)
    return out
