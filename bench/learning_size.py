"""Is the network data-limited? sigma_MAD against training-set size, for the colour forest and the CNN.

    .venv/bin/python bench/learning_size.py --dir ~/mmz-accuracy/hsc9-6000 [--fractions 0.25,0.5,1] \
        [--cnn 1=converge-mm-w0.125-e30 --cnn 0.5=converge-mm-w0.125-e30-f0.5 ...]

In a study directory of ``bench/accuracy.py`` (simulated), the study's forest (same trees, leaves,
seed, features from the stamps' aperture photometry) is trained on a share F of the training folds,
chosen by the id hash of ``mmz train --train-fraction`` (nested subsets), and judged on the held-out
``--fold``; each ``--cnn F=RUN`` is a fold-``--fold`` run trained with ``--train-fraction F`` whose
out-of-fold predictions are judged on the same objects. For each model a power law
sigma_MAD = a N^-alpha is fitted through the points, and the full-data model is compared with the
smallest-data one by the paired bootstrap. Writes ``learning-size.json`` in the study directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from accuracy import forest_features, tree_pdfs  # noqa: E402
from information import scores  # noqa: E402

from mmzcli import metrics, pdf  # noqa: E402
from mmzcli.bootstrap import bootstrap_metrics  # noqa: E402


def power_law(sizes: list[int], sigmas: list[float]) -> dict | None:
    """sigma_MAD = a N^-alpha through the points (least squares in log-log); None below two points."""
    if len(sizes) < 2:
        return None
    slope, intercept = np.polyfit(np.log(sizes), np.log(sigmas), 1)
    return {"alpha": round(float(-slope), 3), "a": float(np.exp(intercept))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, required=True, help="study directory of bench/accuracy.py")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--fractions", default="0.25,0.5,1", help="shares of the training folds for the forest")
    p.add_argument("--cnn", action="append", default=[], help="F=RUN: a run trained with --train-fraction F")
    p.add_argument("-K", "--resamples", type=int, default=10_000)
    p.add_argument("--json", type=Path, help="where to write the results [DIR/learning-size.json]")
    args = p.parse_args()

    from sklearn.ensemble import RandomForestRegressor

    from mmzcli.cubes import inner_validation, training_subset
    from mmzcli.cubeset import labelled_rows
    from mmzcli.project import project_profile
    from mmzcli.store import cubes_path, open_store

    root = args.dir
    settings = json.loads((root / "study.json").read_text())
    profile = project_profile(root, None)
    group = open_store(cubes_path(root))
    ids, rows = group["id"][:], labelled_rows(group)
    fold, z_spec = group["fold"][:], group["z_spec"][:].astype(np.float64)
    train, test = rows[fold[rows] != args.fold], rows[fold[rows] == args.fold]
    edges, threshold = profile.redshift_grid.edges(), profile.outlier_threshold
    inner = inner_validation(ids[train])
    x = forest_features(dict(np.load(root / "forest" / "photometry.npz")), group, profile)[0]

    results: dict = {"study": str(root), "fold": args.fold, "test": len(test), "simulated": True, "models": {}}
    judged: dict[str, dict[float, tuple[np.ndarray, dict]]] = {"forest": {}, "cnn": {}}
    for fraction in sorted(map(float, args.fractions.split(","))):
        subset = train[training_subset(ids[train], fraction)]
        forest = RandomForestRegressor(
            n_estimators=settings["trees"], min_samples_leaf=settings["min_leaf"], n_jobs=2,
            random_state=settings["seed"] * 100 + args.fold,
        )  # fmt: skip
        forest.fit(x[subset], z_spec[subset])
        pdfs = tree_pdfs(forest, x[test], edges)[0]
        judged["forest"][fraction] = (pdfs, {"trained_on": len(subset)})
    for spec in args.cnn:
        fraction, run = spec.split("=", 1)
        oof = np.load(root / "runs" / run / "oof.npz")
        at = dict(zip(oof["id"], range(len(oof["id"]))))
        pdfs = oof["pdf"][[at[i] for i in ids[test]]]  # every held-out object, in the forest's order
        trained = json.loads((root / "runs" / run / "metrics.json").read_text())["models"][0]
        # runs of before the count was recorded: the same split, recomputed
        count = trained.get("train_objects") or int(np.sum(training_subset(ids[train], float(fraction)) & ~inner))
        judged["cnn"][float(fraction)] = (pdfs, {"run": run, "trained_on": count})

    for model, points in judged.items():
        curve = []
        for fraction, (pdfs, info) in sorted(points.items()):
            row = {"fraction": fraction, **info, **scores(pdfs, edges, z_spec[test], threshold)}
            curve.append(row)
            print(f"{model:6s} F={fraction:<5g} trained on {info['trained_on']}: sigma_MAD {row['sigma_mad']:.4f}"
                  f"  eta {row['eta']:.3f}  CRPS {row['crps']:.4f}", flush=True)  # fmt: skip
        sized = [r for r in curve if r["trained_on"]]
        fit = power_law([r["trained_on"] for r in sized], [r["sigma_mad"] for r in sized])
        results["models"][model] = {"curve": curve, "power_law": fit}
        if len(points) >= 2:  # the smallest against the largest share, on the same objects
            (small, (p_small, _)), (large, (p_large, _)) = min(points.items()), max(points.items())
            dz = [(pdf.median(p, edges) - z_spec[test]) / (1 + z_spec[test]) for p in (p_small, p_large)]
            crps = [metrics.crps(p, edges, z_spec[test]) for p in (p_small, p_large)]
            boot, _ = bootstrap_metrics(*dz, *crps, threshold, resamples=args.resamples, seed=settings["seed"])
            results["models"][model]["more_data"] = {"from": small, "to": large, **boot["sigma_mad"]}
            print(f"{model}: F={small:g} -> {large:g}: sigma_MAD gain {boot['sigma_mad']['gain']:+.1%}, "
                  f"p = {boot['sigma_mad']['p_value']:.4f}; power law {fit}", flush=True)  # fmt: skip
    out = args.json or root / "learning-size.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
