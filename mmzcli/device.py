"""Where the network runs: device choice, bf16 autocast, batches moved to the device, torchrun ranks.

Training, prediction and the dropout scan all go through these, so that a
model runs the same way in every command.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any


def resolve_device(name: str) -> Any:
    """``auto`` (CUDA when visible, else CPU), ``cpu`` or ``cuda``; under torchrun, this rank's GPU."""
    import torch

    from mmzcli.errors import ConfigError

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name}: expected auto, cpu or cuda")
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(name)


@functools.cache
def fast_bf16(device_type: str) -> bool:
    """Whether bf16 autocast speeds this kind of device up, the default of ``--amp``.

    CUDA: when the GPU supports bf16.  CPU: when a bf16 matmul measures faster than a float32 one
    (about 2x with AVX-512 BF16 or AMX; without them bf16 is emulated, about 100x slower: measured
    on an AVX2-only EPYC, docs/benchmarks.md).  The measurement takes a few milliseconds.
    """
    import time

    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_bf16_supported())

    def seconds(dtype) -> float:
        a = torch.randn(256, 256).to(dtype)
        a @ a  # warm-up
        start = time.perf_counter()
        a @ a
        return time.perf_counter() - start

    return seconds(torch.bfloat16) < seconds(torch.float32)


def mps_running() -> bool:
    """Whether a CUDA MPS control daemon answers here: without one, processes sharing a GPU take
    turns on it (5 models at once ran no faster than one on an H200; 1.8x with MPS, docs/benchmarks.md)."""
    from pathlib import Path

    return (Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")) / "control").exists()


def autocast(device: Any, enabled: bool) -> Any:
    """bf16 autocast on ``device`` (CUDA and CPU alike), or nothing."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def torchrun_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) in a plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ["RANK"]), world) if world > 1 else (0, 1)


def init_distributed(backend: str) -> tuple[int, int, bool]:
    """(rank, world, distributed?): under torchrun, joins the process group (``backend``: nccl or gloo)."""
    rank, world = torchrun_rank()
    if world == 1:
        return 0, 1, False
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), True
