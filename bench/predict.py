"""Throughput and memory of ``mmz predict`` from tiles to catalogue.

    .venv/bin/python bench/predict.py [--profile hsc6] [-n 1000] [--widths 1,0.25] [--jobs 1]
                                      [--memory-n 200]

Simulates a survey (``mmz simulate``), writes a run of one untrained model per
width (the weights do not change the cost), then times ``mmz predict TILES
--catalog specz.fits`` and reports galaxies/s and the share of the wall time
spent in the network (Ensemble.predict) — stamp extraction and I/O should
leave the model >= 75 %.  The memory check predicts a survey of N and of 10 N
galaxies (10x the tiles) in fresh processes and compares their peak RSS
(target: within 1.2x).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import yaml


def simulate(profile: str, n: int, where: Path, tile_size: int) -> Path:
    project = where / f"{profile}-{n}-{tile_size}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mmzcli",
            "-q",
            "simulate",
            "--profile",
            profile,
            "-n",
            str(n),
            "--tile-size",
            str(tile_size),
            "--project",
            str(project),
            "-j",
            "2",
        ],
        check=True,
    )
    return project


def write_run(project: Path, width: float) -> str:
    """A run directory holding one freshly initialised model of the profile's early-fusion network."""
    import torch

    from mmzcli.model import PhotoZNet
    from mmzcli.project import project_profile
    from mmzcli.runs import MODEL_FORMAT, checkpoint_of
    from mmzcli.train import RunSpec, model_config

    profile = project_profile(project, None)
    config = model_config(RunSpec(width=width), profile)
    name = f"bench-w{width:g}"
    run = project / "runs" / name
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"profile": profile.name}))
    (run / "profile.yaml").write_text(yaml.safe_dump(profile.to_dict(), sort_keys=False))
    torch.save(
        checkpoint_of(MODEL_FORMAT, {"model": PhotoZNet(config).state_dict(), "config": asdict(config), "metrics": {}}),
        run / "fold0_seed0.pt",
    )
    return name


def timed_predict(project: Path, run: str, jobs: int) -> dict:
    """One in-process prediction with the time inside the network counted."""
    from mmzcli import predict, runs

    inside = 0.0
    original = runs.Ensemble.predict

    def counting(self, *args, **kwargs):
        nonlocal inside
        start = time.perf_counter()
        result = original(self, *args, **kwargs)
        inside += time.perf_counter() - start
        return result

    runs.Ensemble.predict = counting
    out = project / f"{run}.fits"
    start = time.perf_counter()
    options = predict.PredictOptions(
        project=project, run=run, catalog=project / "specz.fits", jobs=jobs, overwrite=True
    )
    summary = predict.predict_tiles(sorted((project / "tiles").glob("*.fits")), out, options)
    wall = time.perf_counter() - start
    runs.Ensemble.predict = original
    return {
        "galaxies": summary["rows"],
        "wall_s": wall,
        "galaxies_per_s": summary["rows"] / wall,
        "model_share": inside / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="hsc6")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--widths", default="1,0.25")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--tile-size", type=int, default=2048)
    parser.add_argument("--memory-n", type=int, default=200, help="galaxies of the small memory survey (0: skip)")
    args = parser.parse_args()

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory() as tmp:
        project = simulate(args.profile, args.n, Path(tmp), args.tile_size)
        n_tiles = len(list((project / "tiles").glob("*.fits")))
        print(f"{args.profile}: {args.n} galaxies on {n_tiles} tile files")
        for width in map(float, args.widths.split(",")):
            run = write_run(project, width)
            timed_predict(project, run, args.jobs)  # warm-up: caches, thread pools
            result = timed_predict(project, run, args.jobs)
            print(json.dumps({"width": width, "jobs": args.jobs, **{k: round(v, 3) for k, v in result.items()}}))
        if args.memory_n:
            rss = []
            for n in (args.memory_n, 10 * args.memory_n):
                small = simulate(args.profile, n, Path(tmp), 1024)
                run = write_run(small, 0.25)
                rss.append(measure_rss(small, run))
                tiles = len(list((small / "tiles").glob("*.fits")))
                print(json.dumps({"memory_galaxies": n, "tile_files": tiles, "peak_rss_mib": round(rss[-1], 1)}))
            print(json.dumps({"peak_rss_ratio_10x": round(rss[1] / rss[0], 3), "target": 1.2}))


def measure_rss(project: Path, run: str) -> float:
    """Peak resident memory of a fresh ``mmz predict`` process (MiB): its VmHWM.

    (Not ru_maxrss: Linux carries the parent's resident size at fork over into it.)
    """
    out = project / "memory.fits"
    code = (
        "import sys\nfrom mmzcli.cli import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit as exc:\n    assert exc.code in (0, None)\n"
        "print('RSS', [x.split()[1] for x in open('/proc/self/status') if x.startswith('VmHWM')][0])"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "-q",
            "predict",
            *map(str, sorted((project / "tiles").glob("*.fits"))),
            "--catalog",
            str(project / "specz.fits"),
            "-o",
            str(out),
            "--project",
            str(project),
            "--run",
            run,
            "--overwrite",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    line = [x for x in result.stdout.splitlines() if x.startswith("RSS")][-1]
    return int(line.split()[1]) / 1024


if __name__ == "__main__":
    main()
