"""``mmz demo``: the longest end-to-end path mmz has, on a small simulated HSC-like survey.

Each step is skipped when its output is already complete, so an interrupted
demo continues where it stopped.  Today: simulate -> cutout -> build-cubes.
"""

from __future__ import annotations

import time
from pathlib import Path

DEMO_PROFILE = "hsc6"
DEMO_GALAXIES = 2000


def run_demo(directory: Path, *, jobs: int = 2, console=None) -> dict:
    from mmzcli import store
    from mmzcli.cubes import build_cubes
    from mmzcli.cutout import run_cutout
    from mmzcli.project import read_config
    from mmzcli.simulate import simulate_survey

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
    _say(console, f"\n[green]demo complete[/] in {sum(timings.values()):.0f} s: "
                  f"tiles in {directory / 'tiles'}, stamps in {stamps}, cubes in {directory / 'cubes.zarr'}")
    return timings


def _say(console, text: str) -> None:
    if console is not None:
        console.print(text)
