"""``mmz bootstrap``: is one catalogue significantly better than another? The paired bootstrap of paper Appendix D.

For each metric M (sigma_MAD, eta, |bias|, mean CRPS: lower is better for all)
the observed difference is delta = M(base) - M(other), so that "other is
better" is positive.  K resamples of the matched objects, drawn with
replacement and the same for both catalogues (paired), give delta_b; under the
null hypothesis that other is no better, the distribution of delta_b is
shifted by delta, and

    p = freq(delta_b - delta >= delta)                      (paper eq. D.3)

The relative gain is G(M) = (|M_base| - |M_other|)/|M_base| (paper eq. 2).

Speed: a resample is held as the count of each object in it (a bincount of
the drawn indices), never as a gathered array.  The means (eta, bias, CRPS)
are count-weighted sums; medians are read off the cumulative counts in the
order of each catalogue's sorted residuals, and the median absolute deviation
is found by bisection on the half-width of a window around the median,
counting the objects inside from the same cumulative counts.  Every step is
linear in the number of objects and runs resample by resample in the CPU
caches: K = 10^4 resamples of 5 x 10^4 objects take about 5 s on 2 cores
(bench/bootstrap.py).

Example::

    mmz bootstrap P/catalogs/oof-baseline.fits P/catalogs/oof-early.fits -K 10000 --seed 1
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mmzcli import metrics
from mmzcli.errors import ConfigError, InputError

METRICS = ("sigma_mad", "eta", "abs_bias", "crps")
METRIC_NAMES = {"sigma_mad": "σ_MAD", "eta": "η", "abs_bias": "|bias|", "crps": "CRPS"}
CHUNK_ELEMENTS = 1 << 21  # resamples x objects per chunk: its cumulative counts (16 MB each) share one bisection
BISECTION_STEPS = 40  # halvings of the MAD window: full range x 2^-40, about 1e-12 in dz
# Below MIN_OBJECTS matched objects the test cannot judge: the median of a resample (and so sigma_MAD)
# is one of the order statistics within about sqrt(n) ranks of the middle (a dozen values at n = 30), so
# the bootstrap distribution is a few spikes and p counts ties, not evidence; and at the outlier
# fractions of a few per cent that matter, eta rests on one or two objects.
MIN_OBJECTS = 50
# K: at least 100 resamples, so that p resolves 0.01 and p < 0.05 means something (K = 1 gives p = 0 or 1);
# at most 10^6, far beyond the 10^4 of the paper, whose Monte Carlo error (~0.002 at p = 0.05) already
# matters less than the sample's.  Time grows as K (2 minutes at 10^6 for small samples, about 10 for
# 5 x 10^4 objects), memory as about 250 bytes a resample beyond the fixed chunk buffers (0.25 GB at 10^6).
MIN_RESAMPLES, MAX_RESAMPLES = 100, 1_000_000


class SortedSample:
    """Residuals of one catalogue sorted, with the permutation from the shared object order."""

    def __init__(self, dz: np.ndarray):
        self.order = np.argsort(dz, kind="stable")
        self.x = np.ascontiguousarray(dz[self.order], dtype=np.float64)


def _order_statistic(cum: np.ndarray, k: int) -> np.ndarray:
    """Sorted position of the k-th smallest (1-based) resampled object of each row.

    ``cum`` [rows, n + 1]: counts accumulated in sorted order, after a leading 0.
    """
    return np.array([np.searchsorted(row, k, side="left") - 1 for row in cum])


def _kth_deviation(cum: np.ndarray, rows: np.ndarray, x: np.ndarray, centre: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The k-th smallest |x - centre| of resample ``rows``: the smallest window half-width holding k objects.

    Bisection on the half-width t of [centre - t, centre + t], counting the
    objects inside from ``cum``; ``rows``, ``centre`` and ``k`` go together.
    """
    lo = np.zeros_like(centre)
    hi = np.maximum(centre - x[0], x[-1] - centre) * (1 + 1e-12) + 1e-300  # holds every object
    for _ in range(BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        inside = (
            cum[rows, np.searchsorted(x, centre + mid, side="right")]
            - cum[rows, np.searchsorted(x, centre - mid, side="left")]
        )
        enough = inside >= k
        hi = np.where(enough, mid, hi)
        lo = np.where(enough, lo, mid)
    return hi


def _sigma_mad_of_cum(cum: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """sigma_MAD of each resample from its cumulative counts in sorted order (numpy's median convention)."""
    m = len(cum)
    lower, upper = (n + 1) // 2, n // 2 + 1  # 1-based ranks of the middle (equal when n is odd)
    median = x[_order_statistic(cum, lower)]
    if upper == lower:
        return metrics.MAD_SCALE * _kth_deviation(cum, np.arange(m), x, median, np.full(m, lower))
    median = 0.5 * (median + x[_order_statistic(cum, upper)])
    both = _kth_deviation(cum, np.tile(np.arange(m), 2), x, np.tile(median, 2), np.repeat([lower, upper], m))
    return metrics.MAD_SCALE * 0.5 * (both[:m] + both[m:])


def sigma_mad_of_counts(counts: np.ndarray, s: SortedSample, n: int) -> np.ndarray:
    """sigma_MAD of each resample given as counts over the shared object order (for checks and tests)."""
    cum = np.zeros((counts.shape[0], n + 1), dtype=np.int64)
    np.cumsum(counts[:, s.order], axis=1, out=cum[:, 1:])
    return _sigma_mad_of_cum(cum, s.x, n)


class _Resampler:
    """Draws resamples as counts and scores both catalogues on them, reusing its buffers.

    Objects are held in the order of the base residuals, so the base's counts
    are already sorted; ``other_order`` sorts them for the other catalogue.
    Counting goes resample by resample, so that the arrays of one stay in the CPU caches.
    """

    def __init__(self, n: int, rows: int, x_base, x_other, other_order, means):
        self.n, self.x_base, self.x_other, self.other_order = n, x_base, x_other, other_order
        self.means_t = np.ascontiguousarray(means.T)  # [6, n]
        self.cum_base = np.zeros((rows, n + 1), dtype=np.int64)
        self.cum_other = np.zeros((rows, n + 1), dtype=np.int64)
        self.weights = np.empty((rows, n), dtype=np.float32)

    def __call__(self, seed: np.random.SeedSequence, size: int) -> np.ndarray:
        """Metrics [size, 2, 4] (base/other x sigma_MAD, eta, bias, CRPS) of ``size`` resamples."""
        n = self.n
        rng = np.random.default_rng(seed)
        for r in range(size):
            index = rng.integers(0, n, size=n)
            counts = np.bincount(index, minlength=n)
            np.cumsum(counts, out=self.cum_base[r, 1:])
            self.weights[r] = counts
            np.cumsum(counts.take(self.other_order), out=self.cum_other[r, 1:])
        out = np.empty((size, 2, 4))
        # eta, bias, CRPS: count-weighted sums.  einsum, not matmul: BLAS threads starve on a busy machine
        sums = np.einsum("rj,mj->rm", self.weights[:size], self.means_t)
        out[:, :, 1:] = (sums / n).reshape(size, 2, 3)
        out[:, 0, 0] = _sigma_mad_of_cum(self.cum_base[:size], self.x_base, n)
        out[:, 1, 0] = _sigma_mad_of_cum(self.cum_other[:size], self.x_other, n)
        return out


def bootstrap_metrics(
    dz_base,
    dz_other,
    crps_base,
    crps_other,
    threshold: float,
    *,
    resamples: int = 10_000,
    seed: int = 0,
    threads: int = 2,
) -> tuple[dict, dict[str, np.ndarray]]:
    """The paired bootstrap of two catalogues' per-object residuals (and CRPS) on the same objects.

    Returns (result, samples): ``result[metric]`` holds base, other, delta
    (base - other: positive when other is better), gain, p_value and the 95 %
    bootstrap interval of delta; ``samples[metric]`` the K bootstrapped deltas.
    The same seed gives the same answer whatever ``threads`` is.  Memory: the
    chunk buffers (about 40 MB a thread) and about 250 bytes a resample.
    """
    dz_base, dz_other = np.asarray(dz_base, np.float64), np.asarray(dz_other, np.float64)
    n = len(dz_base)
    if n == 0 or not 1 <= resamples <= MAX_RESAMPLES:
        raise ValueError(
            f"bootstrap of {n} objects x {resamples} resamples: need n >= 1 and 1 <= resamples <= {MAX_RESAMPLES}"
        )
    order = np.argsort(dz_base, kind="stable")  # objects in the order of the base residuals
    other = SortedSample(dz_other[order])
    means = np.stack(
        [np.abs(dz_base) >= threshold, dz_base, crps_base, np.abs(dz_other) >= threshold, dz_other, crps_other], axis=1
    )[order].astype(np.float32)
    chunk = max(1, min(resamples, CHUNK_ELEMENTS // max(n, 1)))
    sizes = [min(chunk, resamples - start) for start in range(0, resamples, chunk)]
    seeds = np.random.SeedSequence(seed).spawn(len(sizes))
    threads = max(1, min(threads, len(sizes)))
    workers = [_Resampler(n, chunk, dz_base[order], other.x, other.order, means) for _ in range(threads)]
    # each thread works through its own share of the chunks with its own buffers;
    # chunk i always uses seed i, so the result does not depend on the number of threads
    shares = [list(range(t, len(sizes), threads)) for t in range(threads)]
    parts: list = [None] * len(sizes)

    def work(t: int) -> None:
        for i in shares[t]:
            parts[i] = workers[t](seeds[i], sizes[i])

    with ThreadPoolExecutor(max_workers=threads) as pool:  # numpy releases the GIL in its heavy loops
        list(pool.map(work, range(threads)))
    boot = np.concatenate(parts)  # [K, 2, 4]
    boot[:, :, 2] = np.abs(boot[:, :, 2])  # |bias|

    observed = {}
    for name, dz, crps in (("base", dz_base, crps_base), ("other", dz_other, crps_other)):
        m = metrics.point_metrics(dz, threshold, crps)
        observed[name] = {
            "sigma_mad": m["sigma_mad"],
            "eta": m["eta"],
            "abs_bias": abs(m["bias"]),
            "crps": m["crps"],
            "bias": m["bias"],
        }
    result: dict = {"n": n, "resamples": resamples, "seed": seed, "outlier_threshold": threshold}
    samples = {}
    for j, key in enumerate(METRICS):
        b, o = observed["base"][key], observed["other"][key]
        delta = b - o
        deltas = boot[:, 0, j] - boot[:, 1, j]
        samples[key] = deltas
        result[key] = {
            "base": b,
            "other": o,
            "delta": delta,
            "gain": (abs(b) - abs(o)) / abs(b) if b != 0 else None,
            "p_value": float(np.mean(deltas - delta >= delta)),
            "delta_ci95": [float(v) for v in np.percentile(deltas, [2.5, 97.5])],
        }
    result["bias"] = {"base": observed["base"]["bias"], "other": observed["other"]["bias"]}  # signed, for reference
    return result, samples


def print_table(result: dict, labels: tuple[str, str], console) -> None:
    from rich.table import Table

    table = Table(
        "metric",
        f"base: {labels[0]}",
        f"other: {labels[1]}",
        "gain G",
        "δ (base − other)",
        "p-value",
        title=f"Paired bootstrap, {result['n']} objects, K = {result['resamples']}",
        caption="δ > 0: other is better; green: p < 0.05, significantly better",
    )
    for key in METRICS:
        r = result[key]
        scale, digits = (100.0, 2) if key == "eta" else (1.0, 5)
        unit = " %" if key == "eta" else ""
        # no resample at or beyond delta: p is below the resolution 1/K, not zero
        p = f"< {1 / result['resamples']:.2g}" if r["p_value"] == 0 else f"{r['p_value']:.4f}"
        table.add_row(
            METRIC_NAMES[key],
            f"{r['base'] * scale:.{digits}f}{unit}",
            f"{r['other'] * scale:.{digits}f}{unit}",
            "-" if r["gain"] is None else f"{100 * r['gain']:+.1f} %",
            f"{r['delta'] * scale:+.{digits}f}",
            f"[green]{p}[/]" if r["p_value"] < 0.05 else p,
        )
    console.print(table)


def run_bootstrap(
    base: Path,
    other: Path,
    *,
    resamples: int = 10_000,
    seed: int = 0,
    truth: Path | None = None,
    id_col: str = "ID",
    z_col: str = "Z_SPEC",
    output: Path | None = None,
    as_json: bool = False,
    plots: bool = True,
    console=None,
) -> dict:
    """``mmz bootstrap``: bootstrap.json, bootstrap.png, a table on the terminal (and JSON on stdout).

    Refuses K outside MIN_RESAMPLES..MAX_RESAMPLES and fewer than MIN_OBJECTS matched objects.
    """
    from mmzcli import __version__
    from mmzcli.atomic import atomic_write_text
    from mmzcli.evaluate import check_output_dir, load_matched, make_output_dir

    if not MIN_RESAMPLES <= resamples <= MAX_RESAMPLES:
        raise ConfigError(
            f"-K/--resamples {resamples}: give {MIN_RESAMPLES} to {MAX_RESAMPLES} resamples (the paper uses 10000)"
        )
    out_dir = check_output_dir(Path(output) if output is not None else Path(base).parent / "bootstrap")
    b, o = load_matched([base, other], truth=truth, id_col=id_col, z_col=z_col, console=console)
    if len(b.id) < MIN_OBJECTS:
        raise InputError(
            f"{base} and {other}: {len(b.id)} matched objects with a z_phot and a z_spec, fewer than "
            f"the {MIN_OBJECTS} the bootstrap needs to judge significance; compare larger catalogues "
            f"(mmz evaluate gives the metrics of small ones)"
        )
    crps_b = metrics.crps(b.pdf, b.edges, b.z_spec)
    crps_o = metrics.crps(o.pdf, o.edges, o.z_spec)
    result, samples = bootstrap_metrics(b.dz, o.dz, crps_b, crps_o, b.threshold, resamples=resamples, seed=seed)
    report = {
        "mmz_version": __version__,
        "base": str(base),
        "other": str(other),
        "truth": None if truth is None else str(truth),
        **result,
    }
    make_output_dir(out_dir)
    atomic_write_text(out_dir / "bootstrap.json", json.dumps(report, indent=1))
    if plots:
        from mmzcli.plots import bootstrap_deltas

        bootstrap_deltas(result, samples, out_dir / "bootstrap.png")
    if console is not None:
        print_table(result, (b.label, o.label), console)
        figure = f" and {out_dir / 'bootstrap.png'}" if plots else ""
        console.print(f"wrote {out_dir / 'bootstrap.json'}{figure}", highlight=False, soft_wrap=True)
    if as_json:
        print(
            json.dumps(
                {key: {k: result[key][k] for k in ("base", "other", "gain", "p_value")} for key in METRICS}, indent=1
            )
        )
    return report
