"""Learning curves of trained runs, and whether they converged (issue 12: inner validation sigma_MAD
changes by less than 2% over the last 20% of the epochs).

    .venv/bin/python bench/learning_curves.py RUN_DIR [RUN_DIR ...] --label sdss --label hsc9 \\
        -o docs/img/learning-curves.png --json docs/results/learning-curves.json

Each RUN_DIR is ``P/runs/NAME``; its models' per-epoch history (train and inner validation loss,
inner validation sigma_MAD and eta, learning rate, samples/s) is read from the finished models
(``fold<k>_seed<r>.pt``) or, for a model still training, from its state (``.state.pt``).
Convergence of a model: over its last 20% of epochs (the window from epoch ceil(0.8 E) to E), the
change of the inner validation sigma_MAD from the window's first epoch to its last, relative to the
first; also the window's range (max - min) relative to the last value, which epoch-to-epoch noise
dominates on a small validation set (the relative standard error of a sigma_MAD of N objects is
about 1.16 / sqrt(N): 5% for N = 600).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmzcli.runs import MODEL_FILE, STATE_FORMAT, RunDir, load_checkpoint  # noqa: E402

TARGET = 0.02


def histories(run: RunDir) -> dict[str, tuple[list[dict], bool]]:
    """Per model ("fold0_seed0"): its epoch records and whether it finished."""
    found: dict[str, tuple[list[dict], bool]] = {}
    for path in sorted(run.path.glob("fold*_seed*.pt")):
        if MODEL_FILE.fullmatch(path.name):
            found[path.stem] = (load_checkpoint(path)["metrics"]["history"], True)
    for path in sorted(run.path.glob("fold*_seed*.state.pt")):
        name = path.name.removesuffix(".state.pt")
        if name not in found:
            found[name] = (load_checkpoint(path, kind=STATE_FORMAT)["history"], False)
    return found


def convergence(history: list[dict]) -> tuple[float, float]:
    """(change, range) of the inner validation sigma_MAD over the last 20% of the epochs, relative."""
    tail = [h["val_sigma_mad"] for h in history[-(math.ceil(0.2 * len(history)) + 1) :]]
    return abs(tail[-1] - tail[0]) / tail[0], (max(tail) - min(tail)) / tail[-1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--label", action="append", help="one per run [the run's directory]")
    p.add_argument("-o", "--output", type=Path, help="PNG of the curves")
    p.add_argument("--json", type=Path, help="the curves and the convergence figures")
    args = p.parse_args()
    labels = args.label or [str(r) for r in args.runs]
    report = {}
    for label, path in zip(labels, args.runs, strict=True):
        run = RunDir(path)
        for name, (history, finished) in histories(run).items():
            change, spread = convergence(history) if len(history) >= 5 else (math.nan, math.nan)
            key = f"{label}/{name}"
            report[key] = {
                "run": str(path),
                "finished": finished,
                "epochs": len(history),
                "best_epoch": min(range(len(history)), key=lambda i: history[i]["val_loss"]) + 1,
                "final_val_sigma_mad": history[-1]["val_sigma_mad"],
                "change_last_20pct": change,
                "range_last_20pct": spread,
                "converged": bool(change < TARGET),
                "seconds": sum(h.get("seconds", math.nan) for h in history),  # training and inner validation
                "history": history,
            }
            print(
                f"{key}: {len(history)} epochs ({'finished' if finished else 'still training'}), inner validation "
                f"sigma_MAD {history[0]['val_sigma_mad']:.4f} -> {history[-1]['val_sigma_mad']:.4f}; over the last "
                f"20% of epochs: change {change:.1%} ({'<' if change < TARGET else '>='} 2%), range {spread:.1%}"
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    if args.output:
        plot(report, args.output)


def plot(report: dict, output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    colours = itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for (key, r), colour in zip(report.items(), colours, strict=False):
        epochs = [h["epoch"] + 1 for h in r["history"]]  # one colour a model in every panel
        axes[0].plot(epochs, [h["train_loss"] for h in r["history"]], "--", color=colour)
        axes[0].plot(epochs, [h["val_loss"] for h in r["history"]], "-", color=colour, label=key)
        axes[1].plot(epochs, [h["val_sigma_mad"] for h in r["history"]], "-o", ms=3, color=colour, label=key)
        axes[2].plot(epochs, [h["lr"] for h in r["history"]], color=colour, label=key)
    axes[0].set(xlabel="epoch", ylabel="loss (CE + MAE)", title="loss: inner validation —, training – –")
    axes[1].set(xlabel="epoch", ylabel="σ_MAD", title="inner validation σ_MAD", yscale="log")
    axes[2].set(xlabel="epoch", ylabel="learning rate (end of epoch)", title="schedule")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("SIMULATED surveys: learning curves (bench/learning_curves.py)", fontsize=10)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)


if __name__ == "__main__":
    main()
