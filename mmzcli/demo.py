"""``mmz demo``: the longest end-to-end path mmz has, on a small simulated HSC-like survey.

Each step is skipped when its output is already complete, so an interrupted
demo continues where it stopped.  Today: simulate -> cutout -> build-cubes -> train (one fold).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

DEMO_PROFILE = "hsc6"
DEMO_GALAXIES = 2000
DEMO_WIDTH = 0.25  # a CPU-sized network: 2-band early fusion, batch-norm for a fast start
DEMO_EPOCHS = 4


def run_demo(directory: Path, *, jobs: int = 2, console=None) -> dict:
    from mmzcli import store
    from mmzcli.cubes import build_cubes
    from mmzcli.cutout import run_cutout
    from mmzcli.project import project_profile, read_config
    from mmzcli.simulate import simulate_survey
    from mmzcli.train import RunSpec, TrainConfig, train_run

    directory = Path(directory)
    timings = {}

    def step(name, done, action):
        if done:
            _say(console, f"[dim]{name}: already done[/]")
            return
        _say(console, f"[bold]{name}[/]")
        start = time.perf_counter()
        action()
        timings[name] = time.perf_counter() - start

    step("simulate", read_config(directory) is not None,
         lambda: simulate_survey(DEMO_PROFILE, DEMO_GALAXIES, directory, seed=0, jobs=jobs, console=console))
    config = read_config(directory)
    tiles = sorted(directory.glob(config["inputs"]["tiles"]))
    catalog = directory / config["inputs"]["catalog"]
    stamps = directory / "stamps.zarr"
    step("cutout", store.is_complete(stamps),
         lambda: run_cutout(tiles, catalog, DEMO_PROFILE, stamps, size=None,
                            columns={"id": "ID", "ra": "RA", "dec": "DEC"}, jobs=jobs, console=console))
    step("build-cubes", store.is_complete(directory / "cubes.zarr"),
         lambda: build_cubes(directory, jobs=jobs, console=console))
    profile = project_profile(directory, None)
    spec = RunSpec(fusion="early", modality_size=2, orders=(1,), width=DEMO_WIDTH, norm="batch",
                   train=TrainConfig(epochs=DEMO_EPOCHS, folds=(0,)))
    run_dir = directory / "runs" / spec.default_name()
    step("train", (run_dir / "metrics.json").exists(),
         lambda: train_run(directory, profile, spec, console=console))
    oof = json.loads((run_dir / "metrics.json").read_text())["oof"]
    _say(console, f"\n[green]demo complete[/] in {sum(timings.values()):.0f} s: tiles in {directory / 'tiles'}, "
                  f"cubes in {directory / 'cubes.zarr'}, run in {run_dir}\n"
                  f"out-of-fold (fold 0, {oof['n']} objects): sigma_MAD {oof['sigma_mad']:.4f}, "
                  f"eta {oof['eta']:.3f}, bias {oof['bias']:+.4f}")
    return timings


def _say(console, text: str) -> None:
    if console is not None:
        console.print(text)
