"""Where the network runs: device choice, bf16 autocast, batches moved to the device, torchrun ranks.

Training, prediction and the dropout scan all go through these, so that a
model sees its inputs the same way in every command.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np


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


def autocast(device: Any, enabled: bool) -> Any:
    """bf16 autocast on ``device`` (CUDA and CPU alike), or nothing."""
    import torch

    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def to_device(arrays: tuple[np.ndarray, ...], device: Any, channels_last: bool) -> tuple[Any, ...]:
    """A batch of numpy arrays as tensors on ``device``; the first (the cubes) in channels-last layout if asked.

    On CUDA the copies go through pinned memory and do not block the host.
    """
    import torch

    non_blocking = device.type == "cuda"

    def move(a: np.ndarray) -> Any:
        t = torch.from_numpy(np.ascontiguousarray(a))
        return (t.pin_memory() if non_blocking else t).to(device, non_blocking=non_blocking)

    first, *rest = (move(a) for a in arrays)
    if channels_last:
        first = first.contiguous(memory_format=torch.channels_last)
    return (first, *rest)


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
