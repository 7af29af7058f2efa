"""``mmz dropout-scan``: which band pairs matter, and at which redshift? The modality-dropout test of paper §7.4.

A run trained with ``--modality-dropout`` (two-band modalities plus every
single-band one; 0-5 modalities zeroed per training batch) is evaluated on its
out-of-fold objects, each fold by the models that did not train on it (PDFs
averaged over seeds), once with nothing dropped and once per modality with that
modality's features zeroed.  The outcome is sigma_MAD (and eta, bias) over all
objects and in 8 equal-count bins of z_spec, ranked by the mean of the binned
sigma_MAD, as in paper Fig. 10; the out-of-fold PDFs of other runs (``oof.npz``,
e.g. the baseline and the reference multimodal model) are drawn beside.

Example::

    mmz dropout-scan --run early-concat-s2o1-mdrop-w1 --project P --baseline baseline-w1
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmzcli import metrics
from mmzcli.errors import ConfigError, InputError
from mmzcli.runs import RunDir, build_model, known_runs, load_checkpoint, runs_dir

N_BINS = 8  # equal-count redshift bins of the curves (paper Fig. 10)
BATCH = 64  # objects per forward pass: at full width, 256 needs ~7 GB on a CPU (docs/benchmarks.md)


def _run_settings(project: Path, run: str) -> tuple[RunDir, dict]:
    run_dir = RunDir(runs_dir(project) / run)
    if not run_dir.config_path.exists():
        runs = known_runs(project)
        known = f" (runs: {', '.join(runs)})" if runs else ""
        raise ConfigError(f"{run_dir.config_path}: no run '{run}' in {runs_dir(project)}{known}")
    return run_dir, run_dir.settings()


def _edges(model: dict) -> np.ndarray:
    return np.linspace(model["z_min"], model["z_max"], model["n_bins"] + 1)


def _threshold(project: Path, settings: dict) -> float:
    """eta's threshold: the project's profile snapshot, else the shipped profile the run names."""
    from mmzcli.profiles import load_profile
    from mmzcli.project import read_config

    config = read_config(project) or {}
    if "outlier_threshold" in config.get("profile", {}):
        return float(config["profile"]["outlier_threshold"])
    return float(load_profile(settings["profile"]).outlier_threshold)


def _modality_name(modality) -> str:
    return "_".join(modality)


def predict_dropped(project: Path, run: str, *, device_name: str = "auto", console=None) -> dict:
    """Out-of-fold median redshifts of a run with nothing dropped and with each modality dropped in turn.

    Returns id, fold, z_spec and ``z_phot`` [1 + M, n] (row 0: nothing dropped;
    row 1 + i: modality i dropped), plus the modality names, the folds used and the grid.
    """
    import torch

    from mmzcli import pdf
    from mmzcli.cubeset import labelled_rows
    from mmzcli.device import autocast, fast_bf16, resolve_device
    from mmzcli.model import ModelConfig
    from mmzcli.progress import progress_bar
    from mmzcli.store import cubes_path, open_store
    from mmzcli.train import TrainConfig, cube_set

    run_dir, settings = _run_settings(project, run)
    config = ModelConfig.from_dict(settings["model"])
    if not config.modality_dropout:
        raise ConfigError(
            f"{run_dir.path}: run '{run}' was not trained with modality dropout; the scan needs a model "
            f"that learnt to predict with modalities missing (mmz train --modality-dropout)"
        )
    train = settings.get("train", {})
    seeds = int(train.get("seeds", 1))
    group = open_store(cubes_path(project))
    folds = group["fold"][:]
    done = run_dir.finished_folds(int(group.attrs["n_folds"]), seeds)
    if not done:
        raise InputError(
            f"{run_dir.path}: no fold has its {seeds} finished model(s) (fold<k>_seed<r>.pt); "
            f"finish training first (mmz train ... --name {run})"
        )
    rows = labelled_rows(group)
    rows = rows[np.isin(folds[rows], done)]
    device = resolve_device(device_name)
    infer = TrainConfig(
        amp=bool(train.get("amp", False)) and fast_bf16(device.type),  # bf16 where it is slow: hours, same result
        channels_last=bool(train.get("channels_last", True)),
        cube_dtype=train.get("cube_dtype", "float32"),  # as the run trained (float32 before mmz 0.2)
    )
    source = cube_set(group, rows, device, infer)
    edges = _edges(settings["model"])
    names = [_modality_name(m) for m in config.modalities]
    m = len(names)
    drops = torch.cat([torch.zeros(1, m, dtype=torch.bool), torch.eye(m, dtype=torch.bool)])  # none, then each

    z_phot = np.empty((m + 1, len(rows)))
    with progress_bar(console) as progress:
        task = progress.add_task(f"dropout scan of {run}", total=len(rows) * seeds * (m + 1))
        for fold in done:
            at = np.flatnonzero(folds[rows] == fold)
            models = [build_model(load_checkpoint(run_dir.model_path(fold, seed)), device) for seed in range(seeds)]
            for j, drop in enumerate(drops):
                mean_pdf = np.zeros((len(at), len(edges) - 1))
                for model in models:
                    start = 0
                    with torch.no_grad():
                        for x, ok, ebv, _ in source.batches(rows[at], BATCH):
                            with autocast(device, bool(infer.amp)):
                                logits, _ = model(x, ebv, ok, drop=drop.expand(len(x), m))
                            p = torch.softmax(logits.float(), -1).cpu().numpy()
                            mean_pdf[start : start + len(p)] += p / seeds
                            start += len(p)
                            progress.advance(task, len(p))
                z_phot[j, at] = pdf.median(mean_pdf, edges)
    return {
        "id": group["id"][:][rows],
        "fold": folds[rows].astype(np.int64),
        "z_spec": source.z[rows].astype(np.float64),
        "z_phot": z_phot,
        "names": names,
        "modalities": [list(mod) for mod in config.modalities],
        "folds": done,
        "edges": edges,
        "run_dir": run_dir,
        "settings": settings,
    }


def _reference_run(project: Path, run: str) -> dict:
    """A run's out-of-fold predictions (oof.npz) as id, fold, z_spec and z_phot (PDF median)."""
    from mmzcli import pdf

    run_dir, settings = _run_settings(project, run)
    path = run_dir.oof_path
    if not path.exists():
        raise InputError(f"{path}: run '{run}' has no out-of-fold predictions; finish its training first")
    oof = np.load(path)
    edges = _edges(settings["model"])
    if oof["pdf"].shape[1] != len(edges) - 1:
        raise InputError(
            f"{path}: PDFs of {oof['pdf'].shape[1]} bins, but {run_dir.config_path} has "
            f"{len(edges) - 1}; the run directory is inconsistent"
        )
    return {
        "id": oof["id"].astype(np.int64),
        "fold": oof["fold"].astype(np.int64),
        "z_spec": oof["z_spec"].astype(np.float64),
        "z_phot": pdf.median(oof["pdf"], edges),
    }


def _curve(
    label: str,
    kind: str,
    dz: np.ndarray,
    z_spec: np.ndarray,
    fold: np.ndarray,
    threshold: float,
    modality: list[str] | None = None,
) -> dict:
    binned = metrics.binned_metrics(dz, z_spec, threshold, N_BINS, fold)
    return {
        "label": label,
        "kind": kind,
        "modality": modality,
        "mean": float(np.mean(binned["sigma_mad"])),
        "overall": metrics.point_metrics(dz, threshold),
        "binned": binned,
    }


def dropout_scan(
    project: Path,
    run: str,
    *,
    baselines: list[str] | tuple = (),
    output: Path | None = None,
    device: str = "auto",
    console=None,
) -> dict:
    """``mmz dropout-scan``: dropout.json, dropout_vs_z.png and a ranked table on the terminal."""
    from mmzcli import __version__, plots
    from mmzcli.atomic import atomic_write_text

    project = Path(project)
    if output is not None:  # before the long part: an -o that cannot be a directory is refused at once
        from mmzcli.evaluate import check_output_dir

        check_output_dir(Path(output))
    references = {name: _reference_run(project, name) for name in baselines}  # their errors before the long part
    scan = predict_dropped(project, run, device_name=device, console=console)
    threshold = _threshold(project, scan["settings"])
    keep = np.isfinite(scan["z_spec"])
    ids = scan["id"]
    for name, ref in references.items():
        common = np.isin(ids, ref["id"])
        if not common.any():
            raise InputError(
                f"runs '{run}' and '{name}': no common out-of-fold object; compare runs trained on the same store"
            )
        keep &= common
    if console is not None and not keep.all():
        console.print(
            f"[yellow]note:[/] {int((~keep).sum())} of {len(ids)} objects are not in every run; "
            f"comparing the {int(keep.sum())} common ones",
            highlight=False,
            soft_wrap=True,
        )
    ids, z_spec, fold = ids[keep], scan["z_spec"][keep], scan["fold"][keep]

    curves = []
    kinds = ["none"] + ["single" if len(mod) == 1 else "multi" for mod in scan["modalities"]]
    labels = ["nothing dropped"] + scan["names"]
    mods = [None] + scan["modalities"]
    for j, (label, kind, mod) in enumerate(zip(labels, kinds, mods)):
        dz = metrics.delta_z(scan["z_phot"][j][keep], z_spec)
        curves.append(_curve(label, kind, dz, z_spec, fold, threshold, mod))
    for name, ref in references.items():
        order = np.argsort(ref["id"])
        at = order[np.searchsorted(ref["id"][order], ids)]
        dz = metrics.delta_z(ref["z_phot"][at], ref["z_spec"][at])
        curves.append(_curve(f"run {name}", "reference", dz, ref["z_spec"][at], ref["fold"][at], threshold))
    curves.sort(key=lambda c: c["mean"])
    none = next(c for c in curves if c["kind"] == "none")
    for c in curves:
        c["mean_change"] = c["mean"] / none["mean"] - 1.0

    out_dir = Path(output) if output is not None else scan["run_dir"].path / "dropout"
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "mmz_version": __version__,
        "run": run,
        "project": str(project),
        "n": int(keep.sum()),
        "folds": scan["folds"],
        "outlier_threshold": threshold,
        "baselines": list(baselines),
        "ranking": "mean over 8 equal-count z_spec bins of sigma_MAD, lowest first",
        "curves": curves,
    }
    atomic_write_text(out_dir / "dropout.json", json.dumps(report, indent=1))
    plots.dropout_vs_z(
        curves,
        z_spec,
        out_dir / "dropout_vs_z.png",
        f"Modality dropout scan of run {run} ({report['n']} out-of-fold objects)",
    )
    if console is not None:
        print_table(report, console)
        console.print(f"wrote {out_dir / 'dropout.json'} and {out_dir / 'dropout_vs_z.png'}", highlight=False)
    return report


def print_table(report: dict, console) -> None:
    from rich.table import Table

    table = Table(
        "rank",
        "dropped",
        "mean σ_MAD (z bins)",
        "change",
        "σ_MAD (all)",
        f"η(|Δz|≥{report['outlier_threshold']:g}) %",
        "bias",
        title=f"Modality dropout: run {report['run']}, {report['n']} objects, ranked by mean σ_MAD",
    )
    for i, c in enumerate(report["curves"], 1):
        o = c["overall"]
        style = "dim" if c["kind"] == "single" else ("bold" if c["kind"] in ("none", "reference") else "")
        table.add_row(
            str(i),
            c["label"],
            f"{c['mean']:.4f}",
            f"{100 * c['mean_change']:+.1f} %",
            f"{o['sigma_mad']:.4f}",
            f"{100 * o['eta']:.2f}",
            f"{o['bias']:+.4f}",
            style=style,
        )
    console.print(table)
