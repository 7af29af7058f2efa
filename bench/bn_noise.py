"""How much of a network's epoch-to-epoch wander is its batch-norm statistics? One fixed network, scored again.

    .venv/bin/python bench/bn_noise.py --project ~/mmz-accuracy/hsc9-6000 --run converge-mm-w0.125-e30 \
        [--draws 4] [--json docs/results/bn-noise-hsc9-6000.json]

The finished fold-0 model of a run trained with ``--norm batch`` keeps its weights; only the statistics of
its batch-norm layers change, and the inner validation set of ``mmz train`` is scored each time:

- ``saved``: the statistics as training left them (running averages, momentum 0.1);
- ``running``: those statistics carried on over 20 more training batches at momentum 0.1, as training's
  next batches would move them (``--draws`` draws of the batches);
- ``precise``: ``mmz train --precise-bn`` (``train.precise_batch_norm``): a plain average over N training
  objects with the weights fixed, for N = 1,024 and 2,048, two draws each.

If ``running`` spreads as widely as the last epochs of the run wandered, that wander is the statistics',
not learning. Simulated surveys only (``bench/accuracy.py`` study directories).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmzcli import metrics, pdf  # noqa: E402
from mmzcli.cubes import inner_validation  # noqa: E402
from mmzcli.cubeset import CubeSet, labelled_rows  # noqa: E402
from mmzcli.profiles import load_profile  # noqa: E402
from mmzcli.runs import RunDir, build_model, load_checkpoint  # noqa: E402
from mmzcli.store import cubes_path, open_store  # noqa: E402
from mmzcli.train import TrainConfig, evaluate_rows, precise_batch_norm, training_split  # noqa: E402

RUNNING_BATCHES = 20  # ~ the memory of a running average at momentum 0.1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--project", type=Path, required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--draws", type=int, default=4, help="draws of the 20 batches of 'running' [4]")
    p.add_argument("--json", type=Path, help="write the figures here too")
    args = p.parse_args()

    import torch

    run = RunDir(args.project / "runs" / args.run)
    group = open_store(cubes_path(args.project))
    rows = labelled_rows(group)
    train_rows, val_rows = training_split(rows, group["fold"][:], inner_validation(group["id"][:]), 0)
    profile = load_profile(run.profile_path)
    grid, device = profile.redshift_grid, torch.device("cpu")
    source = CubeSet(group, rows, device, channels_last=True)
    checkpoint = load_checkpoint(run.model_path(0, 0))
    saved = build_model(checkpoint, device).to(memory_format=torch.channels_last)
    config = TrainConfig(amp=False)

    def score(kind: str, model, **what) -> dict:
        pdfs, _, loss = evaluate_rows(model, source, val_rows, grid, device, config)
        s = metrics.summary(pdf.median(pdfs, grid.edges()), source.z[val_rows], profile.outlier_threshold)
        row = {"kind": kind, **what, "sigma_mad": s["sigma_mad"], "eta": s["eta"], "val_loss": loss}
        print(f"{kind:8s} {what}  sigma_MAD {s['sigma_mad']:.4f}  eta {s['eta']:.3f}  loss {loss:.4f}", flush=True)
        return row

    def running(draw: int):
        model = copy.deepcopy(saved).train()
        with torch.no_grad():
            torch.manual_seed(draw)
            for i, (x, ok, ebv, _) in enumerate(source.batches(train_rows, 32, np.random.default_rng(draw))):
                if i == RUNNING_BATCHES:
                    break
                model(x, ebv, ok)
        return model

    def precise(objects: int, draw: int):
        model = copy.deepcopy(saved)
        precise_batch_norm(model, source, train_rows, replace(config, precise_bn=objects), seed=1000 + draw)
        return model

    print(f"{args.run}: fold 0, best epoch {checkpoint['metrics']['best_epoch'] + 1}, {len(val_rows)} inner validation")
    rows_out = [score("saved", saved)]
    rows_out += [score("running", running(d), draw=d, batches=RUNNING_BATCHES) for d in range(args.draws)]
    rows_out += [score("precise", precise(n, d), draw=d, objects=n) for n in (1024, 2048) for d in range(2)]
    history = checkpoint["metrics"]["history"]
    last = [h["val_sigma_mad"] for h in history[int(0.8 * len(history)) :]]
    report = {
        "simulated": True,
        "project": str(args.project),
        "run": args.run,
        "validation_objects": len(val_rows),
        "last_20pct_epochs_val_sigma_mad": [round(v, 5) for v in last],
        "rows": rows_out,
    }
    for kind in ("running", "precise"):
        values = [r["sigma_mad"] for r in rows_out if r["kind"] == kind]
        print(f"{kind}: sigma_MAD {min(values):.4f}-{max(values):.4f}")
    print(f"the run's last 20% of epochs: {min(last):.4f}-{max(last):.4f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
