"""``mmz demo``: mmz end to end on a small simulated HSC-like survey, in a few minutes on a laptop CPU.

simulate -> build-cubes -> train (2-band early fusion, and the all-band baseline) ->
predict (the survey catalogue from the tiles; the out-of-fold catalogues of both runs) ->
evaluate -> bootstrap.  Each step is skipped when its output is complete, so an
interrupted demo continues where it stopped.  The networks are CPU-sized (a width
multiplier, one fold, a few epochs): the demo shows the tool working, not the
accuracy of the method (that is bench/accuracy.py).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

DEMO_PROFILE = "hsc6"
DEMO_GALAXIES = 3000
DEMO_TILE_SIZE = 2048
DEMO_WIDTH = 0.125  # channel-width multiplier: a CPU-sized network
DEMO_EPOCHS = 4
DEMO_FOLD = 0


def run_demo(directory: Path, *, jobs: int = 2, console=None) -> dict:
    from mmzcli import store
    from mmzcli.bootstrap import run_bootstrap
    from mmzcli.cubes import build_cubes
    from mmzcli.evaluate import evaluate_catalogs
    from mmzcli.predict import PredictOptions, predict_cubes, predict_tiles
    from mmzcli.project import project_profile, read_config
    from mmzcli.sim.survey import simulate_survey
    from mmzcli.train import RunSpec, TrainConfig, train_run

    directory = Path(directory)
    timings = {}

    def step(name, output: Path | bool, action):
        done = output if isinstance(output, bool) else output.exists()
        if done:
            _say(console, f"[dim]{name}: already done[/]")
            return
        _say(console, f"[bold]{name}[/]")
        start = time.perf_counter()
        action()
        timings[name] = time.perf_counter() - start

    step(
        "simulate",
        read_config(directory) is not None,
        lambda: simulate_survey(
            DEMO_PROFILE, DEMO_GALAXIES, directory, seed=0, jobs=jobs, tile_size=DEMO_TILE_SIZE, console=console
        ),
    )
    step(
        "build-cubes",
        store.is_complete(store.cubes_path(directory)),
        lambda: build_cubes(directory, jobs=jobs, console=console),
    )
    profile = project_profile(directory, None)
    settings: dict[str, Any] = {
        "width": DEMO_WIDTH,
        "norm": "batch",
        "train": TrainConfig(epochs=DEMO_EPOCHS, folds=(DEMO_FOLD,), amp=False),
    }
    runs = {
        "early": RunSpec(fusion="early", modality_size=2, orders=(1,), **settings),
        "baseline": RunSpec(baseline=True, **settings),
    }
    catalogs = directory / "catalogs"
    catalogs.mkdir(parents=True, exist_ok=True)
    for label, spec in runs.items():
        name = spec.default_name()
        step(
            f"train {label} ({name})",
            directory / "runs" / name / "metrics.json",
            lambda spec=spec: train_run(directory, profile, spec, console=console),
        )
        step(
            f"predict --cubes {label}",
            catalogs / f"oof-{label}.fits",
            lambda name=name, label=label: predict_cubes(
                directory, catalogs / f"oof-{label}.fits", run=name, console=console
            ),
        )
    survey = directory / "photoz_cat.fits"
    step(
        "predict (tiles -> catalogue)",
        survey,
        lambda: predict_tiles(
            sorted((directory / "tiles").glob("*.fits")),
            survey,
            PredictOptions(project=directory, run=runs["early"].default_name(), catalog=directory / "specz.fits"),
            console=console,
        ),
    )
    oof = [catalogs / "oof-early.fits", catalogs / "oof-baseline.fits"]
    step(
        "evaluate",
        directory / "evaluate" / "metrics.json",
        lambda: evaluate_catalogs(oof, output=directory / "evaluate", console=console),
    )
    step(
        "bootstrap",
        directory / "bootstrap" / "bootstrap.json",
        lambda: run_bootstrap(oof[1], oof[0], output=directory / "bootstrap", console=console),
    )
    _say(
        console,
        f"\n[green]demo complete[/] in {sum(timings.values()):.0f} s (this run)\n"
        f"  survey catalogue   {survey}\n"
        f"  out-of-fold        {catalogs}/oof-early.fits, oof-baseline.fits\n"
        f"  metrics and plots  {directory / 'evaluate'}/ (metrics.json, *.png)\n"
        f"  significance       {directory / 'bootstrap'}/ (bootstrap.json, bootstrap.png)\n"
        f"CPU-sized networks (width {DEMO_WIDTH}, fold {DEMO_FOLD} only, {DEMO_EPOCHS} epochs): "
        f"these numbers show the tool working, not the method's accuracy.",
    )
    return timings


def _say(console, text: str) -> None:
    if console is not None:
        console.print(text)
