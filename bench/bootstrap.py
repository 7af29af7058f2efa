"""Time of the paired bootstrap (paper Appendix D) at the paper's scale: K = 10^4 resamples of 5 x 10^4 objects.

Run:  .venv/bin/python bench/bootstrap.py [-K 10000] [-n 50000] [--threads 2] [--repeat 1]

Synthetic residuals (a Student-t core with 3 % outliers, the other catalogue 5 %
tighter) and CRPS values stand in for two matched catalogues; the time is that
of ``bootstrap_metrics``: all four metrics (sigma_MAD, eta, |bias|, CRPS) of
both catalogues on every resample.  The target is <= 10 s on a 2-core machine.
It also checks the bootstrap against a direct computation on a few resamples.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from mmzcli import bootstrap, metrics


def synthetic(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.1, 2.0, n)
    core = 0.03 * rng.standard_t(4, n)
    outliers = rng.random(n) < 0.03
    dz_base = np.where(outliers, rng.uniform(-0.5, 0.5, n), core)
    dz_other = np.where(outliers, dz_base, 0.95 * core + 0.003 * rng.normal(size=n))
    crps_base = np.abs(dz_base) * (1 + z) * 0.8 + 0.01
    crps_other = np.abs(dz_other) * (1 + z) * 0.8 + 0.01
    return dz_base, dz_other, crps_base, crps_other


def check(n: int = 2000) -> float:
    """Largest difference between the counts-based sigma_MAD and numpy's on explicitly resampled arrays."""
    dz, _, _, _ = synthetic(n, seed=1)
    rng = np.random.default_rng(2)
    index = rng.integers(0, n, size=(20, n))
    counts = np.stack([np.bincount(i, minlength=n) for i in index])
    fast = bootstrap.sigma_mad_of_counts(counts, bootstrap.SortedSample(dz), n)
    slow = np.array([metrics.sigma_mad(dz[i]) for i in index])
    return float(np.abs(fast - slow).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-K", type=int, default=10_000, help="resamples")
    parser.add_argument("-n", type=int, default=50_000, help="objects")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if not bootstrap.MIN_RESAMPLES <= args.K <= bootstrap.MAX_RESAMPLES:
        parser.error(f"-K {args.K}: give {bootstrap.MIN_RESAMPLES} to {bootstrap.MAX_RESAMPLES} resamples")
    if args.n < bootstrap.MIN_OBJECTS or args.threads < 1 or args.repeat < 1:
        parser.error(f"-n needs at least {bootstrap.MIN_OBJECTS} objects, --threads and --repeat at least 1")

    print(f"check: counts-based sigma_MAD vs numpy on 20 resamples: max |difference| = {check():.2e}")
    data = synthetic(args.n)
    for _ in range(args.repeat):
        start = time.perf_counter()
        result, _ = bootstrap.bootstrap_metrics(*data, threshold=0.15, resamples=args.K, seed=0, threads=args.threads)
        seconds = time.perf_counter() - start
        print(f"K = {args.K}, n = {args.n}, threads = {args.threads} ({os.cpu_count()} CPUs): {seconds:.2f} s")
    for key in bootstrap.METRICS:
        r = result[key]
        print(
            f"  {key:9s} base {r['base']:.5f}  other {r['other']:.5f}  gain {100 * r['gain']:+6.2f} %  "
            f"p = {r['p_value']:.4f}"
        )


if __name__ == "__main__":
    main()
