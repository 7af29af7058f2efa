"""Training speed that tells the truth: step, loop, utilisation, multimodal/baseline, models at once.

    .venv/bin/python bench/train.py [--widths 0.25] [--steps 20] [--jobs 1,2] [--no-amp] [--json bench.json]
    python3 bench/train.py --widths 1 --jobs 1,4,8 --json $OUT/bench.json        # a GPU

For the hsc9 baseline (one modality of 9 bands) and the 2-band first-order early-fusion model
(``mm2-early``), at each width, on this device:

- **peak**: a bf16 (and fp32) matmul measured here, the ceiling the utilisation is quoted against;
- **step**: samples/s of the bare training step (batch already on the device, Adam, loss CE + MAE);
- **loop**: samples/s through ``mmz train``'s own data path (a Zarr store, ``CubeSet`` held on the
  device in float16, gathering, augmentation, the deferred loss read-back), and loop/step;
- **utilisation**: training FLOP/s (3 x the forward's, counted by torch) over the measured peak;
- **mm/base**: the multimodal model's time per sample over the baseline's (paper: 1.2);
- **models at once**: the aggregate loop rate of J processes each training its own model on this
  device (``mmz train --jobs J``); on the CPU each gets 1/J of the threads;
- with ``--variants``: the step rate uncompiled in NCHW and in channels_last, and at batch 128, the
  measurements behind the per-device defaults of ``mmz train``;
- with ``--compile-mode reduce-overhead``: all of it with CUDA graphs, which replay a step's hundreds of
  small kernels in one launch (batch 32 of 64x64 stamps leaves a large GPU waiting on launches).

Memory format and compilation follow ``mmz train``'s defaults for the device unless given.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmzcli.cubeset import CubeSet  # noqa: E402
from mmzcli.model import PhotoZNet, variant_config  # noqa: E402
from mmzcli.profiles import RedshiftGrid  # noqa: E402
from mmzcli.train import EpochLosses, TrainConfig, train_step  # noqa: E402

MODELS = ("baseline", "mm2-early")
BANDS = 9
GRID = RedshiftGrid(0.0, 4.0, 400)  # hsc9's


def matmul_peak(device, dtype) -> float:
    """FLOP/s of a large square matmul in ``dtype`` on ``device``: the ceiling quoted for utilisation."""
    n = 8192 if device.type == "cuda" else 1024  # a CPU without native bf16 runs it at ~1 GFLOP/s
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = min(timed(lambda: a @ b, 5 if device.type == "cuda" else 1, device, warmup=1) for _ in range(3))
    return 2 * n**3 / best  # the best of three: a peak, not an average over interruptions


def timed(fn, steps: int, device, warmup: int = 2) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls (allocation, autotuning, compilation)."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    sync(device)
    return (time.perf_counter() - start) / steps


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def synthetic_store(root: Path, n: int):
    """A cubes store as ``mmz train`` reads it (the arrays CubeSet needs), filled with sky-like noise."""
    import zarr

    rng = np.random.default_rng(0)
    group = zarr.open_group(str(root / "cubes.zarr"), mode="w")
    cubes = (rng.standard_normal((n, BANDS, 64, 64), np.float32) * 3).astype(np.float32)
    group.create_array("cubes", data=cubes, chunks=(32, BANDS, 64, 64))
    group.create_array("band_ok", data=np.ones((n, BANDS), bool))
    group.create_array("ebv", data=rng.uniform(0, 0.1, n).astype(np.float32))
    group.create_array("z_spec", data=rng.uniform(GRID.z_min, GRID.z_max, n).astype(np.float32))
    return group


class Trainer:
    """One model with its optimiser, stepped by ``mmz train``'s own ``train_step``."""

    def __init__(self, name: str, width: float, device, config: TrainConfig, compile_mode: str = "default"):
        self.device, self.config = device, config
        self.model = PhotoZNet(variant_config(name, width=width, n_bins=GRID.n_bins)).to(device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.net = torch.compile(self.model, mode=compile_mode) if config.compile else self.model
        self.model.train()

    def step(self, x, ok, ebv, z):
        return train_step(self.net, self.optimizer, (x, ok, ebv, z), GRID, self.device, bool(self.config.amp))

    def flops_per_sample(self, bands: int) -> float:
        x = torch.randn(2, bands, 64, 64, device=self.device)
        ok = torch.ones(2, bands, dtype=torch.bool, device=self.device)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            self.model(x, torch.zeros(2, device=self.device), ok)
        return counter.get_total_flops() / 2


class NoReport:
    def step(self, *args, **kwargs) -> None:
        pass


def step_rate(trainer: Trainer, steps: int, batch: int) -> float:
    d = trainer.device
    x = torch.randn(batch, BANDS, 64, 64, device=d)
    if trainer.config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)  # as CubeSet serves it
    ok, ebv = torch.ones(batch, BANDS, dtype=torch.bool, device=d), torch.rand(batch, device=d) * 0.1
    z = torch.rand(batch, device=d) * GRID.z_max
    return batch / timed(lambda: trainer.step(x, ok, ebv, z), steps, d, warmup=3)


def loop_rate(trainer: Trainer, group, steps: int, batch: int) -> float:
    """Samples/s of ``steps`` batches through mmz train's data path (after 3 warm-up batches)."""
    rows = np.arange(group["cubes"].shape[0])
    cubes = CubeSet(group, rows, trainer.device, channels_last=bool(trainer.config.channels_last))
    losses = EpochLosses(0, 0, 0, 1e-4, NoReport())
    rng = np.random.default_rng(0)
    done, start = 0, 0.0
    while done < steps + 3:
        for x, ok, ebv, z in cubes.batches(rows, batch, rng):
            if done == 3:
                losses.read_back()
                sync(trainer.device)
                start = time.perf_counter()
            losses.add(trainer.step(x, ok, ebv, z), len(z))
            done += 1
            if done == steps + 3:
                break
    losses.read_back()
    sync(trainer.device)
    return steps * batch / (time.perf_counter() - start)


def _concurrent_worker(args, store_root, barrier, results, threads) -> None:
    import zarr

    torch.set_num_threads(threads)
    name, width, device, config, compile_mode, steps, batch = args
    trainer = Trainer(name, width, device, config, compile_mode)
    group = zarr.open_group(str(store_root / "cubes.zarr"), mode="r")
    loop_rate(trainer, group, 3, batch)  # warm-up (and compilation) before the common start
    barrier.wait()
    results.put(loop_rate(trainer, group, steps, batch))


def concurrent_rate(jobs: int, args, store_root: Path) -> float:
    """Aggregate samples/s of ``jobs`` processes each training its own model (as mmz train --jobs)."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(jobs), context.Queue()
    threads = max(1, torch.get_num_threads() // jobs)
    workers = [
        context.Process(target=_concurrent_worker, args=(args, store_root, barrier, results, threads))
        for _ in range(jobs)
    ]
    for w in workers:
        w.start()
    rates = [results.get() for _ in workers]
    for w in workers:
        w.join()
    return float(sum(rates))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="0.25", help="channel-width multipliers, e.g. 1 on a GPU [0.25]")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per figure [20]")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, help="bf16 autocast [where the device runs it fast]")
    p.add_argument("--memory-format", choices=("auto", "nchw", "channels-last"), default="auto")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto")
    p.add_argument("--compile-mode", default="default", help="torch.compile's mode, e.g. reduce-overhead [default]")
    p.add_argument("--jobs", default="1,2", help="models at once for the aggregate rate, 0: none [1,2]")
    p.add_argument("--store-size", type=int, help="objects in the synthetic store [GPU 4096, CPU 512]")
    p.add_argument("--only-concurrent", action="store_true", help="only the models-at-once figures")
    p.add_argument("--variants", action="store_true", help="also uncompiled NCHW / channels_last / batch 128 steps")
    p.add_argument("--json", type=Path, help="also write the figures here (after each one: a cut-off run keeps them)")
    args = p.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    kind = device.type
    config = TrainConfig(  # mmz train's choices for this device, unless given
        amp=args.amp,
        channels_last={"auto": None, "nchw": False, "channels-last": True}[args.memory_format],
        compile={"auto": None, "on": True, "off": False}[args.compile],
    ).for_device(device)
    channels_last, compile = config.channels_last, config.compile
    label = torch.cuda.get_device_name(device) if kind == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    peak = {"bf16": matmul_peak(device, torch.bfloat16), "fp32": matmul_peak(device, torch.float32)}
    precision = "bf16" if config.amp else "fp32"
    compiled = f"on ({args.compile_mode})" if compile else "off"
    print(
        f"device: {label}; torch {torch.__version__}; {precision}, batch {args.batch}, "
        f"{'channels_last' if channels_last else 'NCHW'}, compile {compiled}"
    )
    print(f"measured matmul peak: bf16 {peak['bf16'] / 1e9:.1f} GFLOP/s, fp32 {peak['fp32'] / 1e9:.1f} GFLOP/s")
    report = {"device": label, "torch": torch.__version__, "precision": precision, "batch": args.batch,
              "channels_last": channels_last, "compile": compile,
              "compile_mode": args.compile_mode if compile else None, "peak_flops": peak, "rows": []}  # fmt: skip
    save = (lambda: args.json.write_text(json.dumps(report, indent=1) + "\n")) if args.json else (lambda: None)
    n = args.store_size or (4096 if kind == "cuda" else 512)
    with tempfile.TemporaryDirectory() as tmp:
        group = synthetic_store(Path(tmp), n)
        for width in map(float, args.widths.split(",")):
            if not args.only_concurrent:
                one_model_figures(width, group, device, config, peak[precision], args, report, save)
                if compile and args.compile_mode == "reduce-overhead":  # a step it could not graph runs without
                    from torch._dynamo.utils import counters

                    report["cudagraph_skips"] = int(counters["inductor"]["cudagraph_skips"])
                    save()
            if args.variants:
                for name in MODELS:
                    for layout, batch in (("nchw", args.batch), ("channels_last", args.batch), ("nchw", 128)):
                        eager = replace(config, compile=False, channels_last=layout == "channels_last")
                        rate = step_rate(Trainer(name, width, device, eager), args.steps, batch)
                        print(f"  width {width:g}: {name}, uncompiled, {layout}, batch {batch}: step {rate:.1f}/s")
                        variant = {"model": name, "width": width, "layout": layout, "batch": batch, "step": rate}
                        report.setdefault("variants", []).append(variant)
                        save()
            for jobs in (j for j in map(int, args.jobs.split(",")) if j > 0):
                setup = ("mm2-early", width, device, config, args.compile_mode, args.steps, args.batch)
                aggregate = concurrent_rate(jobs, setup, Path(tmp))
                print(f"  width {width:g}: mm2-early, {jobs} model(s) at once: {aggregate:.1f} samples/s in all")
                report.setdefault("concurrent", []).append({"width": width, "jobs": jobs, "aggregate": aggregate})
                save()


def one_model_figures(width, group, device, config, peak, args, report, save) -> None:
    """Step, loop, utilisation of each model, and multimodal/baseline, at ``width``."""
    header = ("model", "width", "step/s", "loop/s", "loop/step", "TFLOP/s", "util")
    print("{:10s} {:>5s} {:>8s} {:>8s} {:>9s} {:>8s} {:>6s}".format(*header))
    rates = {}
    for name in MODELS:
        trainer = Trainer(name, width, device, config, args.compile_mode)
        step = step_rate(trainer, args.steps, args.batch)
        loop = loop_rate(trainer, group, args.steps, args.batch)
        flops = 3 * trainer.flops_per_sample(BANDS) * step
        rates[name] = step
        figures = f"{step:8.1f} {loop:8.1f} {loop / step:9.2f} {flops / 1e12:8.3f} {flops / peak:6.1%}"
        print(f"{name:10s} {width:5.2f} {figures}")
        report["rows"].append(
            {
                "model": name,
                "width": width,
                "step": step,
                "loop": loop,
                "loop_over_step": loop / step,
                "train_flops": flops,
                "utilisation": flops / peak,
            }  # fmt: skip
        )
        save()
    ratio = rates["baseline"] / rates["mm2-early"]
    print(f"  width {width:g}: multimodal/baseline time per sample {ratio:.2f} (paper 1.2; target <= 1.05)")
    report.setdefault("mm_over_base", {})[f"{width:g}"] = ratio
    save()


if __name__ == "__main__":
    main()
