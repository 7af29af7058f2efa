"""The labelled cubes where training reads them: resident on the device in 16 bits, or streamed from Zarr.

The GPU must never wait for the host.  When the cubes fit in a share of the
device's free memory (``memory_fraction``; 30,000 x 9 x 64 x 64 in float16 is
2.2 GB), they are copied there once and every batch is gathered, converted and
augmented on the device: one index tensor per epoch crosses the bus, no
per-batch host work and no synchronisation.  Otherwise pools of Zarr chunks
stream in, the next one read by a thread while the current one trains (double
buffering through pinned memory).  Both modes hold the same values; only the
order of the shuffle differs.

The cubes are held compressed, sign(x)(sqrt(|x| + 1) - 1) as the network's first
step does, and expanded back as batches are gathered: float16 then covers raw
pixel values up to 4e9 (a bright star in ADU overflows float16 itself) with 11
bits of mantissa, far finer than the pixel noise (docs/benchmarks.md measures
that it changes no metric).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from mmzcli.cutout import compress
from mmzcli.errors import ConfigError
from mmzcli.flags import UNLABELLED

CUBE_DTYPES = ("float16", "float32")
FLOAT16_MAX = 65504.0


def labelled_rows(group) -> np.ndarray:
    """Rows with a usable spectroscopic redshift and image data."""
    flags = group["flags"][:]
    return np.flatnonzero(np.isfinite(group["z_spec"][:]) & ((flags & UNLABELLED) == 0))


def read_rows(array, rows: np.ndarray) -> np.ndarray:
    """``array[rows]`` for sorted ``rows``, read slab by slab of whole chunks (never all at once)."""
    out = np.empty((len(rows), *array.shape[1:]), array.dtype)
    slab = array.chunks[0] * 32
    i = 0
    while i < len(rows):
        lo = rows[i] // slab * slab
        j = int(np.searchsorted(rows, lo + slab))
        out[i:j] = array[lo : lo + slab][rows[i:j] - lo]
        i = j
    return out


def free_memory(device: Any) -> int:
    """Bytes free now on ``device``: the GPU's, or the host's available RAM."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def expand(c):
    """The inverse of the compression: raw pixel values from compressed ones (a tensor).

    sign(c) ((|c| + 1)^2 - 1) = c (|c| + 2).
    """
    return c * (c.abs() + 2)


def augment(x):
    """A random element of the square's symmetry group (flips and 90-degree rotations) per object.

    Three independent coin flips (transpose, flip rows, flip columns) draw the 8 elements with equal
    probability, as a flip and 0-3 quarter turns do; ``torch.where`` keeps it free of host
    synchronisation, so the GPU runs ahead of Python.  Drawn with the torch RNG of x's device.
    """
    import torch

    coins = torch.rand(3, x.shape[0], 1, 1, 1, device=x.device) < 0.5
    x = torch.where(coins[0], x.transpose(-2, -1), x)
    x = torch.where(coins[1], x.flip(-2), x)
    return torch.where(coins[2], x.flip(-1), x)


class CubeSet:
    """The cubes, band masks, E(B-V) and redshifts of ``rows`` of a store, served as batches on ``device``."""

    def __init__(
        self,
        group,
        rows: np.ndarray,
        device: Any,
        *,
        dtype: str = "float16",
        memory_fraction: float = 0.5,
        stream_chunks: int = 16,
        channels_last: bool = False,
    ):
        import torch

        if dtype not in CUBE_DTYPES:
            raise ConfigError(f"--cube-dtype {dtype}: expected {' or '.join(CUBE_DTYPES)}")
        self.array = group["cubes"]
        self.rows = np.sort(rows)
        self.device, self.channels_last, self.stream_chunks = device, channels_last, stream_chunks
        self.dtype = getattr(torch, dtype)
        self.bytes = len(self.rows) * int(np.prod(self.array.shape[1:])) * self.dtype.itemsize
        self.resident = self.bytes <= memory_fraction * free_memory(device)
        self.z = group["z_spec"][:].astype(np.float32)  # by store row, for callers
        self.ebv = group["ebv"][:].astype(np.float32)
        take = torch.from_numpy  # the per-object values of self.rows, on the device, by position
        self._ok = take(group["band_ok"][:][self.rows]).to(device)
        self._ebv = take(self.ebv[self.rows]).to(device)
        self._z = take(self.z[self.rows]).to(device)
        self._cubes = self._load() if self.resident else None

    def _load(self):
        """Every cube of the set on the device, read and converted slab by slab (host memory stays small)."""
        import torch

        cubes = torch.empty((len(self.rows), *self.array.shape[1:]), dtype=self.dtype, device=self.device)
        slab = self.array.chunks[0] * 32
        for start in range(0, len(self.rows), slab):
            cubes[start : start + slab] = self._to_device(read_rows(self.array, self.rows[start : start + slab]))
        return cubes

    def _to_device(self, cubes: np.ndarray, pin: bool = False):
        """Raw float32 cubes, compressed, as this set's tensor on the device (through pinned memory if asked)."""
        import torch

        cubes = compress(cubes)
        if self.dtype == torch.float16:
            peak = float(np.nanmax(np.abs(cubes), initial=0.0))
            if peak > FLOAT16_MAX:
                where = getattr(self.array, "store", "the store")
                raise ConfigError(
                    f"{where}: compressed pixel values reach {peak:g}, beyond float16's range "
                    f"({FLOAT16_MAX:g}); train with --cube-dtype float32"
                )
        t = torch.from_numpy(cubes).to(self.dtype)
        if pin and self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _pools(self, order: np.ndarray, rng: np.random.Generator | None) -> list[np.ndarray]:
        """Streaming: groups of rows read together; shuffled by chunk, then within a pool, when training."""
        if rng is None:
            size = self.array.chunks[0] * self.stream_chunks
            return [order[i : i + size] for i in range(0, len(order), size)]
        chunk = self.array.chunks[0]
        chunks = rng.permutation(np.unique(order // chunk))
        return [
            rng.permutation(order[np.isin(order // chunk, chunks[g : g + self.stream_chunks])])
            for g in range(0, len(chunks), self.stream_chunks)
        ]

    def _read_pool(self, pool: np.ndarray):
        """A pool's cubes on the device, in ``pool`` order (run in the prefetching thread)."""
        import torch

        sorted_rows = np.sort(pool)
        cubes = read_rows(self.array, sorted_rows)[np.searchsorted(sorted_rows, pool)]
        at = torch.from_numpy(np.searchsorted(self.rows, pool)).to(self.device)
        return self._to_device(np.ascontiguousarray(cubes), pin=True), at

    def batches(
        self, rows: np.ndarray, batch_size: int, rng: np.random.Generator | None = None, shard: tuple[int, int] = (0, 1)
    ) -> Iterator[tuple[Any, Any, Any, Any]]:
        """(cubes float32, band_ok, ebv, z) tensors on the device over ``rows``.

        With ``rng`` (training): shuffled and augmented, and with ``shard`` = (rank, world) every rank
        gets an equal share of each step and incomplete steps are dropped, as DDP needs.  Without
        ``rng``: every row once, in order, as it is.
        """
        import torch

        rank, world = shard
        step = batch_size * world
        if self.resident:
            order = rng.permutation(rows) if rng is not None else rows
            at = torch.from_numpy(np.searchsorted(self.rows, order)).to(self.device)  # once per epoch
            yield from self._slices(self._cubes, at, at, len(order), step, rank, world, rng is not None)
            return
        pools = self._pools(rows, rng)
        with ThreadPoolExecutor(1) as reader:  # double buffering: pool i + 1 is read while pool i trains
            coming = reader.submit(self._read_pool, pools[0]) if pools else None
            for i in range(len(pools)):
                assert coming is not None
                cubes, at = coming.result()
                coming = reader.submit(self._read_pool, pools[i + 1]) if i + 1 < len(pools) else None
                local = torch.arange(len(at), device=self.device)
                yield from self._slices(cubes, local, at, len(at), step, rank, world, rng is not None)

    def _slices(self, cubes, cube_at, value_at, n: int, step: int, rank: int, world: int, whole_steps: bool):
        """Batches of ``step`` (this rank's share) of ``cubes[cube_at]`` with the values at ``value_at``."""
        import torch

        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        end = n // step * step if whole_steps else n
        for start in range(0, end, step):
            pick = slice(start + rank, start + step, world)
            x = expand(cubes.index_select(0, cube_at[pick]).float())
            if whole_steps:  # training
                x = augment(x)
            x = x.contiguous(memory_format=layout)  # last: the flips leave strides of neither layout
            v = value_at[pick]
            yield x, self._ok.index_select(0, v), self._ebv.index_select(0, v), self._z.index_select(0, v)
