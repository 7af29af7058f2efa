"""Does holding the training cubes in float16 change anything? Quantisation against pixel noise, and metrics.

    .venv/bin/python bench/cube_precision.py --project P [--run NAME]

1. Per band, over the labelled cubes of the store: the sky noise (1.4826 x MAD of the pixels, in
   the tiles' units) and the rms error that float16 storage adds (compressed, rounded to float16,
   expanded back: exactly what ``CubeSet`` serves), and their ratio.
2. With ``--run``: the run's out-of-fold objects predicted by its models from float16 and from
   float32 cubes (the same models, the same objects): sigma_MAD, eta, bias, CRPS of each and the
   largest change of a photo-z.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmzcli import metrics, pdf  # noqa: E402
from mmzcli.cubeset import CubeSet, labelled_rows  # noqa: E402
from mmzcli.project import project_profile  # noqa: E402
from mmzcli.runs import RunDir, build_model, load_checkpoint, runs_dir  # noqa: E402
from mmzcli.store import cubes_path, open_store  # noqa: E402
from mmzcli.train import TrainConfig, evaluate_rows  # noqa: E402


def quantisation(group, rows: np.ndarray, sample: int = 2000) -> None:
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(rows, min(sample, len(rows)), replace=False))
    raw = group["cubes"][rows]
    ok = group["band_ok"][rows]
    held = CubeSet(group, rows, torch.device("cpu"), dtype="float16")
    back = torch.cat([x for x, *_ in held.batches(rows, 256)]).numpy()  # as training is served them
    print(f"float16 round trip on {len(rows)} labelled cubes (raw pixel units of the tiles):")
    print(f"{'band':>6s} {'sky noise':>10s} {'rms error':>10s} {'error/noise':>12s} {'max |pixel|':>12s}")
    for b, band in enumerate(group.attrs["bands"]):
        pixels, err = raw[ok[:, b], b], (back - raw)[ok[:, b], b]
        noise = 1.4826 * np.median(np.abs(pixels - np.median(pixels)))
        rms = float(np.sqrt(np.mean(err.astype(np.float64) ** 2)))
        print(f"{band:>6s} {noise:10.4g} {rms:10.3g} {rms / noise:12.2e} {np.abs(pixels).max():12.4g}")


def out_of_fold(project: Path, group, rows: np.ndarray, run_name: str) -> None:
    run = RunDir(runs_dir(project) / run_name)
    profile = project_profile(project, None)
    grid, edges = profile.redshift_grid, profile.redshift_grid.edges()
    folds = group["fold"][:]
    device = torch.device("cpu")
    seeds = int(run.settings()["train"].get("seeds", 1))
    done = run.finished_folds(int(group.attrs["n_folds"]), seeds)
    held_out = rows[np.isin(folds[rows], done)]
    z_spec = group["z_spec"][:][held_out]
    results = {}
    for dtype in ("float16", "float32"):
        cubes = CubeSet(group, held_out, device, dtype=dtype)
        mean_pdf = np.zeros((len(held_out), grid.n_bins))
        for fold in done:
            at = folds[held_out] == fold
            for seed in range(seeds):
                model = build_model(load_checkpoint(run.model_path(fold, seed)), device)
                p, _, _ = evaluate_rows(model, cubes, held_out[at], grid, device, TrainConfig(amp=False))
                mean_pdf[at] += p / seeds
        z_phot = pdf.median(mean_pdf, edges)
        scores = metrics.summary(z_phot, z_spec, profile.outlier_threshold)
        scores["crps"] = float(np.mean(metrics.crps(mean_pdf, edges, z_spec)))
        results[dtype] = (z_phot, scores)
        print(
            f"{dtype}: {len(held_out)} out-of-fold objects, sigma_MAD {scores['sigma_mad']:.5f}, "
            f"eta {scores['eta']:.4f}, bias {scores['bias']:+.5f}, CRPS {scores['crps']:.5f}"
        )
    change = np.abs(results["float16"][0] - results["float32"][0])
    print(f"largest change of a photo-z: {change.max():.2e}; objects changed by > 1e-3: {np.sum(change > 1e-3)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", type=Path, required=True)
    p.add_argument("--run", help="a finished run of the project: compare its out-of-fold metrics")
    args = p.parse_args()
    group = open_store(cubes_path(args.project))
    rows = labelled_rows(group)
    quantisation(group, rows)
    if args.run:
        out_of_fold(args.project, group, rows, args.run)


if __name__ == "__main__":
    main()
