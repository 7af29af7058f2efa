"""Simulation speed: spectroscopic galaxies per second (and objects, stamps) for mmz simulate.

    .venv/bin/python bench/simulate.py                  # hsc9 1000 and hsc6 2000 galaxies, -j 2
    .venv/bin/python bench/simulate.py --validate       # then the validation figures (sim_validation.py)

Targets (issue 3), on a 2-core machine: >= 50 galaxies/s for hsc9 (9 bands) with -j 2, and a
demo-size survey (2,000 galaxies, hsc6) in under a minute.  "Galaxies" are spectroscopic
targets; each comes with its neighbours, companions and stars at the survey's real density
(columns 'objects' and 'stamps'), all of which are rendered.  'gal/cpu-s' (galaxies per
CPU-second, workers included) does not depend on what else runs on the machine: on n free
cores, -j n gives about n times that.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmzcli.sim.survey import simulate_survey


def _cpu_seconds() -> float:
    """CPU time of this process and its finished worker processes: immune to other load."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", "-j", type=int, default=2)
    parser.add_argument("--tile-size", type=int, default=2048)
    parser.add_argument("--profiles", default="hsc9:1000,hsc6:2000,sdss:2000", help="comma-separated profile:N pairs")
    parser.add_argument("--validate", action="store_true", help="also run bench/sim_validation.py --quick")
    args = parser.parse_args(argv)
    print(
        f"{'profile':8s} {'N':>5s} {'jobs':>4s} {'tiles':>5s} {'objects':>7s} {'stamps':>7s} "
        f"{'total s':>7s} {'render s':>8s} {'galaxies/s':>10s} {'stamps/s':>8s} {'cpu s':>6s} {'gal/cpu-s':>9s}"
    )
    for item in args.profiles.split(","):
        profile, n = item.split(":")[0], int(item.split(":")[1])
        with tempfile.TemporaryDirectory() as tmp:
            cpu0 = _cpu_seconds()
            start = time.perf_counter()
            r = simulate_survey(profile, n, Path(tmp) / "p", seed=1, tile_size=args.tile_size, jobs=args.jobs)
            total = time.perf_counter() - start
            cpu = _cpu_seconds() - cpu0
        print(
            f"{profile:8s} {n:5d} {args.jobs:4d} {r['tiles']:5d} {r['objects']:7d} {r['stamps_drawn']:7d} "
            f"{total:7.1f} {r['render_seconds']:8.1f} {n / total:10.1f} {r['stamps_drawn'] / total:8.0f} "
            f"{cpu:6.1f} {n / cpu:9.1f}"
        )
    if args.validate:
        from sim_validation import main as validate

        validate(["--quick"])


if __name__ == "__main__":
    main()
