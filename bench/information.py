"""Where does the redshift information go? A colour forest on four kinds of photometry of the same objects.

    .venv/bin/python bench/information.py --dir ~/mmz-accuracy/hsc9-6000 [--fold 0] [--cnn oof-converge.fits]

In a study directory of ``bench/accuracy.py`` (simulated: the truth is known), the forest of the
study (same trees, leaves, seed, features: reference magnitude, adjacent colours, E(B-V)) is trained
on the folds other than ``--fold`` and judged on it, from:

1. ``truth``: the noise-free total magnitudes of the simulation (truth.fits): the ceiling that the
   templates, dust and the band set allow;
2. ``catalogue``: the simulated survey catalogue's total-flux photometry (specz.fits: noise of the
   survey depth, blends, 1-sigma floors), what a catalogue-level method is given;
3. ``stamps``: forced aperture photometry of the cube stamps (cut and resampled, as the CNN's input
   is), the study's forest;
4. ``inputs``: the same aperture photometry of the pixels the network receives (compressed, stored
   in float16 and expanded by ``CubeSet``): does our preprocessing lose faint flux?

and, on the same objects, the CNN's out-of-fold catalogue (``--cnn``) and the forest's by reference
magnitude, redshift and near-infrared coverage. Writes ``information.json`` in the study directory
(``--json`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from accuracy import aperture_photometry, forest_features, tree_pdfs  # noqa: E402

from mmzcli import metrics, pdf  # noqa: E402


def scores(pdfs: np.ndarray, edges: np.ndarray, z_spec: np.ndarray, threshold: float) -> dict:
    out = metrics.summary(pdf.median(pdfs, edges), z_spec, threshold)
    out["crps"] = float(np.mean(metrics.crps(pdfs, edges, z_spec)))
    return {k: round(float(v), 5) for k, v in out.items()}


def magnitude_features(mags: np.ndarray, ebv: np.ndarray, profile) -> np.ndarray:
    """Dereddened reference magnitude, adjacent colours and E(B-V), from magnitudes [N, B] (NaN: no band)."""
    r_ext = np.array([b.extinction for b in profile.bands])
    m = mags - r_ext * ebv[:, None]
    ref = profile.band_index(profile.reference_band)
    return np.column_stack([m[:, ref], m[:, :-1] - m[:, 1:], ebv]).astype(np.float32)


def input_photometry(group, profile, diameter: float) -> dict:
    """Aperture photometry of the pixels CubeSet serves the network (float16 storage, compressed)."""
    import torch

    from mmzcli.cubeset import CubeSet

    rows = np.arange(group["cubes"].shape[0])
    cubes = CubeSet(group, rows, torch.device("cpu"), channels_last=False)
    served = np.concatenate([x.numpy() for x, *_ in cubes.batches(rows, 512)])
    return aperture_photometry(served, group["band_ok"][:], profile, diameter)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, required=True, help="study directory of bench/accuracy.py")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--cnn", default="oof-converge.fits", help="the CNN's out-of-fold catalogue in the study")
    p.add_argument("--json", type=Path, help="where to write the results [DIR/information.json]")
    args = p.parse_args()

    from astropy.table import Table
    from sklearn.ensemble import RandomForestRegressor

    from mmzcli.catalog import read_photoz
    from mmzcli.cubeset import labelled_rows
    from mmzcli.project import project_profile
    from mmzcli.store import cubes_path, open_store

    root = args.dir
    settings = json.loads((root / "study.json").read_text())
    profile = project_profile(root, None)  # the study's (mmz.yaml): hsc9 with its i <= 24 sample
    group = open_store(cubes_path(root))
    ids, ebv = group["id"][:], group["ebv"][:].astype(np.float64)
    rows = labelled_rows(group)
    fold, z_spec = group["fold"][:], group["z_spec"][:].astype(np.float64)
    train, test = rows[fold[rows] != args.fold], rows[fold[rows] == args.fold]
    edges, threshold = profile.redshift_grid.edges(), profile.outlier_threshold

    def by_id(table: Table, column: str) -> np.ndarray:
        where = dict(zip(np.asarray(table["ID"]), range(len(table))))
        values = np.asarray(table[column], dtype=np.float64)
        return np.array([values[where[i]] if i in where else np.nan for i in ids])

    truth, catalogue = Table.read(root / "truth.fits"), Table.read(root / "specz.fits")
    band_ok = group["band_ok"][:]
    truth_mags = np.column_stack([by_id(truth, f"MAG_{b}") for b in profile.band_names])
    truth_mags[~band_ok] = np.nan
    stamps = (
        dict(np.load(root / "forest" / "photometry.npz")) if (root / "forest" / "photometry.npz").exists() else None
    )
    stamps = stamps or aperture_photometry(group["cubes"], group["band_ok"][:], profile, settings["aperture"])
    features = {
        "truth": magnitude_features(truth_mags, ebv, profile),
        "catalogue": magnitude_features(
            np.column_stack([by_id(catalogue, f"MAG_{b}") for b in profile.band_names]), ebv, profile
        ),
        "stamps": forest_features(stamps, group, profile)[0],
        "inputs": forest_features(input_photometry(group, profile, settings["aperture"]), group, profile)[0],
    }
    results: dict = {"study": str(root), "fold": args.fold, "train": len(train), "test": len(test), "forest": {}}
    forest_pdfs = {}
    for name, x in features.items():
        forest = RandomForestRegressor(
            n_estimators=settings["trees"], min_samples_leaf=settings["min_leaf"], n_jobs=2,
            random_state=settings["seed"] * 100 + args.fold,
        )  # fmt: skip
        forest.fit(x[train], z_spec[train])  # NaN (a missing band) as the study's forest has it
        forest_pdfs[name] = tree_pdfs(forest, x[test], edges)[0]
        results["forest"][name] = scores(forest_pdfs[name], edges, z_spec[test], threshold)
        print(f"forest on {name:9s}: {results['forest'][name]}", flush=True)

    cnn_path = root / args.cnn
    if cnn_path.exists():  # the CNN and the forest on stamps, on the same objects, by subsets
        cnn = read_photoz(cnn_path)
        at = dict(zip(cnn.columns["ID"], range(len(cnn.columns["ID"]))))
        keep = np.array([i in at for i in ids[test]])
        cnn_pdfs = cnn.columns["PDF"][[at[i] for i in ids[test][keep]]]
        mag = group["mag_ref"][:][test][keep]
        nir = band_ok[test][keep][:, [profile.band_index(b) for b in profile.band_names if b in ("J", "H", "Ks")]]
        subsets = {"all": np.ones(keep.sum(), bool), "with J, H and Ks": nir.all(axis=1) if nir.size else None,
                   "without some NIR band": ~nir.all(axis=1) if nir.size else None}  # fmt: skip
        for label, edges_of in (("magnitude", mag), ("z_spec", z_spec[test][keep])):
            cuts = np.quantile(edges_of, [0, 0.25, 0.5, 0.75, 1])
            for lo, hi in zip(cuts[:-1], cuts[1:]):
                subsets[f"{lo:.2f} <= {label} <= {hi:.2f}"] = (edges_of >= lo) & (edges_of <= hi)
        results["cnn_vs_forest"] = {"cnn": str(cnn_path.name), "subsets": {}}
        for label, sel in subsets.items():
            if sel is None or sel.sum() < 20:
                continue
            zs = z_spec[test][keep][sel]
            results["cnn_vs_forest"]["subsets"][label] = {
                "n": int(sel.sum()),
                "cnn": scores(cnn_pdfs[sel], edges, zs, threshold),
                "forest_stamps": scores(forest_pdfs["stamps"][keep][sel], edges, zs, threshold),
            }
            r = results["cnn_vs_forest"]["subsets"][label]
            print(f"{label:28s} n={r['n']:5d}  sigma_MAD CNN {r['cnn']['sigma_mad']:.4f}  "
                  f"forest {r['forest_stamps']['sigma_mad']:.4f}", flush=True)  # fmt: skip
    out = args.json or root / "information.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
