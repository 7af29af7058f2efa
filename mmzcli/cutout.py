"""Image tiles with a WCS -> one S x S stamp per band and source, on the source's own sky grid.

Geometry.  Every stamp samples a gnomonic (TAN) grid centred on the source,
north up and east left, at the profile's pixel scale; the source sits at the
geometric centre, pixel coordinate ((S-1)/2, (S-1)/2) counted from 0, so that
flips and 90-degree rotations about the stamp centre keep it in place.

Two paths.  Where a tile's pixel grid already matches the stamp grid around
the source (the tile's pixels, mapped back, land within ``ALIGN_TOL`` pixel of
a shifted stamp grid) the stamp is sliced straight out of the memory-mapped
tile: no resampling smear, and the source lies within half a pixel of the
centre.  Otherwise the tile is resampled with a Lanczos-3 kernel (weights
normalised to unit sum) and multiplied by the pixel-area ratio, which
conserves flux; when the stamp pixels are coarser than the tile's, the tile is
first smoothed by a Gaussian of the variance of the extra pixel width (an
anti-aliasing filter).  Each tile's constant sky (``tiles.background``) is
subtracted.  Stamps carry the bits of ``mmzcli.flags.Flag``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmzcli.errors import InputError
from mmzcli.flags import Flag
from mmzcli.outputs import claim_store, releases_locks
from mmzcli.profiles import Profile
from mmzcli.progress import progress_bar
from mmzcli.tiles import TileImage, assign_images, background, expand_tiles, index_tiles, sky_to_pixel, tile_pixels

ALIGN_TOL = 0.05  # pixels: largest misplacement accepted on the slicing path
BLOCK_ROWS = 256  # sources per unit of work: a multiple of the store's chunk rows
ARCSEC = math.pi / 180 / 3600


# ----------------------------------------------------------------------------- geometry


def tangent_grid(ra0: np.ndarray, dec0: np.ndarray, size: int, scale: float, offsets: np.ndarray | None = None):
    """RA, Dec (deg) of stamp pixels on the gnomonic grid centred on each source.

    ``offsets`` are stamp pixel coordinates (x, y) as an array (..., 2); by default
    the whole S x S grid.  Returns arrays of shape (n_sources, *offsets.shape[:-1]).
    """
    centre = (size - 1) / 2
    if offsets is None:
        y, x = np.mgrid[0:size, 0:size].astype(np.float64)
        offsets = np.stack([x, y], axis=-1)
    xi = -(offsets[..., 0] - centre) * scale * ARCSEC  # east left: x grows westwards
    eta = (offsets[..., 1] - centre) * scale * ARCSEC  # north up
    ra0 = np.radians(ra0).reshape((-1,) + (1,) * (offsets.ndim - 1))
    dec0 = np.radians(dec0).reshape(ra0.shape)
    denom = np.cos(dec0) - eta * np.sin(dec0)
    ra = ra0 + np.arctan2(xi, denom)
    dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


# ----------------------------------------------------------------------------- stamps


def cut_image(image: TileImage, ra: np.ndarray, dec: np.ndarray, size: int, scale: float):
    """Stamps of ``image`` for sources at (ra, dec): returns (stamps [n,S,S] f4, ok [n], flags [n])."""
    n = len(ra)
    stamps = np.zeros((n, size, size), dtype=np.float32)
    flags = np.zeros(n, dtype=np.int32)
    ok = np.ones(n, dtype=bool)
    data = tile_pixels(image)
    sky = background(image)
    centre = (size - 1) / 2
    probe = np.array([[centre, centre], [0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], float)
    px, py = sky_to_pixel(image, *tangent_grid(ra, dec, size, scale, probe))
    dx = (px[:, 1:] - px[:, :1]) - (probe[1:, 0] - centre)
    dy = (py[:, 1:] - py[:, :1]) - (probe[1:, 1] - centre)
    aligned = np.max(np.hypot(dx, dy), axis=1) <= ALIGN_TOL
    for i in range(n):
        if not _covered(data, px[i, 0], py[i, 0]):
            ok[i] = False
            continue
        if aligned[i]:
            x0 = int(math.floor(px[i, 0] - centre + 0.5))
            y0 = int(math.floor(py[i, 0] - centre + 0.5))
            flags[i] |= _slice_into(stamps[i], data, x0, y0, sky)
            bad = ~np.isfinite(stamps[i])
            if bad.any():
                stamps[i][bad] = 0.0
                flags[i] |= Flag.NAN_PIXELS
        else:
            flags[i] |= _resample_into(stamps[i], image, data, sky, ra[i], dec[i], size, scale) | Flag.RESAMPLED
    return stamps, ok, flags


def _covered(data: np.ndarray, x: float, y: float) -> bool:
    """Whether the tile has real data (finite, non-zero) at the source: mosaics mark holes with 0 or NaN."""
    ny, nx = data.shape
    ix, iy = int(round(x)), int(round(y))
    if not (0 <= ix < nx and 0 <= iy < ny):
        return False
    patch = np.asarray(data[max(iy - 1, 0) : iy + 2, max(ix - 1, 0) : ix + 2])
    return bool(np.any(np.isfinite(patch) & (patch != 0)))


def _slice_into(out: np.ndarray, data: np.ndarray, x0: int, y0: int, sky: float = 0.0) -> int:
    """Copy the tile window at (x0, y0) of out's shape, minus sky, into ``out``; zero-pad what falls off."""
    height, width = out.shape
    ny, nx = data.shape
    ys, ye, xs, xe = max(y0, 0), min(y0 + height, ny), max(x0, 0), min(x0 + width, nx)
    if ys < ye and xs < xe:
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = data[ys:ye, xs:xe] - sky
    inside = x0 >= 0 and y0 >= 0 and x0 + width <= nx and y0 + height <= ny
    return 0 if inside else int(Flag.EDGE)


def _lanczos3_table(steps: int = 1024) -> np.ndarray:
    """Lanczos-3 weights of the 6 taps for each fractional offset (steps+1 rows), each row summing to 1."""
    frac = np.linspace(0.0, 1.0, steps + 1)[:, None]
    t = frac + 2 - np.arange(6)  # offsets of taps floor(x)-2 ... floor(x)+3 from x
    weights = np.where(np.abs(t) < 3, np.sinc(t) * np.sinc(t / 3), 0.0)
    return weights / weights.sum(axis=1, keepdims=True)


_LANCZOS3 = _lanczos3_table()


def _stamp_to_tile(image: TileImage, ra: float, dec: float, size: int, scale: float):
    """Tile pixel coordinates of every stamp pixel.

    The map is computed exactly at 3 x 3 nodes and fitted by an affine
    transform; where that is off by more than 1e-3 pixel (strong distortion),
    every pixel is mapped exactly instead.
    """
    nodes = np.array([[x, y] for y in (0, (size - 1) / 2, size - 1) for x in (0, (size - 1) / 2, size - 1)])
    nx_, ny_ = sky_to_pixel(image, *tangent_grid(np.array([ra]), np.array([dec]), size, scale, nodes))
    design = np.column_stack([nodes, np.ones(len(nodes))])
    coef, *_ = np.linalg.lstsq(design, np.column_stack([nx_[0], ny_[0]]), rcond=None)
    if np.abs(design @ coef - np.column_stack([nx_[0], ny_[0]])).max() > 1e-3:
        gx, gy = sky_to_pixel(image, *tangent_grid(np.array([ra]), np.array([dec]), size, scale))
        return gx[0], gy[0], coef[:2]
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    gx = coef[0, 0] * x + coef[1, 0] * y + coef[2, 0]
    gy = coef[0, 1] * x + coef[1, 1] * y + coef[2, 1]
    return gx, gy, coef[:2]


def _resample_into(
    out: np.ndarray, image: TileImage, data: np.ndarray, sky: float, ra: float, dec: float, size: int, scale: float
) -> int:
    """Lanczos-3 resampling of the tile onto the source's stamp grid, flux-conserving."""
    from scipy.ndimage import gaussian_filter

    gx, gy, linear = _stamp_to_tile(image, ra, dec, size, scale)
    jacobian = abs(np.linalg.det(linear))  # tile pixel area per stamp pixel
    stretch = math.sqrt(jacobian)
    sigma = math.sqrt((stretch**2 - 1) / 12) if stretch > 1.05 else 0.0
    pad = 4 + int(math.ceil(3 * sigma))
    x_lo, y_lo = int(math.floor(gx.min())) - pad, int(math.floor(gy.min())) - pad
    x_hi, y_hi = int(math.ceil(gx.max())) + pad + 1, int(math.ceil(gy.max())) + pad + 1
    patch = np.zeros((y_hi - y_lo, x_hi - x_lo), dtype=np.float32)
    _slice_into(patch, data, x_lo, y_lo, sky)
    ny, nx = data.shape
    edge = (gx.min() < -0.5) | (gx.max() > nx - 0.5) | (gy.min() < -0.5) | (gy.max() > ny - 0.5)
    flags = int(Flag.EDGE) if edge else 0
    bad = ~np.isfinite(patch)
    if bad.any():
        patch[bad] = 0.0
        flags |= Flag.NAN_PIXELS
    if sigma > 0:
        patch = gaussian_filter(patch, sigma, mode="constant")
    fx, fy = gx.ravel() - x_lo, gy.ravel() - y_lo
    ix, iy = np.floor(fx), np.floor(fy)
    steps = len(_LANCZOS3) - 1
    wx = _LANCZOS3[np.rint((fx - ix) * steps).astype(np.int64)]
    wy = _LANCZOS3[np.rint((fy - iy) * steps).astype(np.int64)]
    taps = np.arange(-2, 4)
    gathered = patch[
        (iy.astype(np.int64)[:, None] + taps)[:, :, None], (ix.astype(np.int64)[:, None] + taps)[:, None, :]
    ]
    values = np.einsum("pk,pkl,pl->p", wy, gathered, wx)
    out[:] = (values * jacobian).reshape(size, size)
    return flags


def cut_block(
    images: list[TileImage], assignment: np.ndarray, ra: np.ndarray, dec: np.ndarray, size: int, scale: float
):
    """All bands of a block of sources: returns (stamps [n,B,S,S], band_ok [n,B], flags [n])."""
    n, nb = assignment.shape
    stamps = np.zeros((n, nb, size, size), dtype=np.float32)
    band_ok = np.zeros((n, nb), dtype=bool)
    flags = np.zeros(n, dtype=np.int32)
    for k in np.unique(assignment[assignment >= 0]):
        rows, bands = np.nonzero(assignment == k)
        s, ok, f = cut_image(images[k], ra[rows], dec[rows], size, scale)
        stamps[rows, bands] = s
        band_ok[rows, bands] = ok
        flags[rows] |= f
    flags[~band_ok.all(axis=1)] |= Flag.MISSING_BAND
    flags[~band_ok.any(axis=1)] |= Flag.OUTSIDE
    return stamps, band_ok, flags


# ----------------------------------------------------------------------------- the pipeline


@dataclass(frozen=True)
class BlockTask:
    """One block of sources to cut: rows ``start`` .. ``start + len(ra)`` of the caller's table."""

    start: int
    assignment: np.ndarray  # [n, bands] image index per source and band (-1: none)
    ra: np.ndarray
    dec: np.ndarray
    size: int
    scale: float


Block = tuple[np.ndarray, np.ndarray, np.ndarray]  # stamps [n,B,S,S], band_ok [n,B], flags [n]

_worker_images: list[TileImage] = []  # the images of this worker process, set once by its initializer


def _init_worker(images: list[TileImage]) -> None:
    global _worker_images
    _worker_images = images


def _cut_task(task: BlockTask) -> tuple[int, Block]:
    return task.start, cut_block(_worker_images, task.assignment, task.ra, task.dec, task.size, task.scale)


def cut_blocks(
    images: list[TileImage], tasks: Iterable[BlockTask], jobs: int, record: Callable[[int, Block], None]
) -> None:
    """Cut every block, in ``jobs`` worker processes when > 1; ``record(start, block)`` runs here, in completion order.

    At most 2 x jobs blocks are in flight, so memory does not grow with the number of blocks.
    """
    if jobs == 1:
        _init_worker(images)
        for task in tasks:
            record(*_cut_task(task))
        return
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(images,)) as pool:
        pending: set = set()
        for task in tasks:
            pending.add(pool.submit(_cut_task, task))
            if len(pending) >= 2 * jobs:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    record(*future.result())
        for future in pending:
            record(*future.result())


def cut_to_store(
    path: Path,
    images: list[TileImage],
    profile,
    table: dict[str, np.ndarray],
    *,
    image_name: str,
    size: int,
    key: str,
    jobs: int = 1,
    overwrite: bool = False,
    attrs: dict | None = None,
    norm_groups: np.ndarray | None = None,
    n_norm_groups: int = 0,
    console=None,
):
    """Cut every source of ``table`` (id, ra, dec, ...) into a Zarr store at ``path``.

    Resumes a partial store built from the same inputs; parallel over blocks of
    sources with ``jobs`` processes, one writer.  Where ``norm_groups`` is given
    (a group 0 .. n_norm_groups-1 per row, -1 for none), per-group and per-band
    sums of compressed pixels of the rows with data are accumulated for the
    normalisation statistics.  Returns (group, summary dict).
    """
    from mmzcli import store

    bands = profile.band_names
    n = len(table["id"])
    group = store.open_for_writing(
        path,
        key=key,
        n=n,
        bands=bands,
        size=size,
        image_name=image_name,
        columns=table,
        overwrite=overwrite,
        attrs={"profile": profile.name, "pixel_scale": profile.pixel_scale, **(attrs or {})},
    )
    done = set(group.attrs["blocks_done"])
    todo = [s for s in range(0, n, BLOCK_ROWS) if s not in done]
    remaining = sum(min(BLOCK_ROWS, n - s) for s in todo)
    sums = np.array(group.attrs.get("norm_sums", np.zeros((n_norm_groups, 3, len(bands))).tolist()))
    if norm_groups is not None and sums.shape != (n_norm_groups, 3, len(bands)):
        raise InputError(
            f"{store.partial_path(path)}: an unfinished build of an older mmz (normalisation sums "
            f"{list(sums.shape)}) is in the way; rerun with --overwrite to start afresh"
        )
    # nothing left to cut: skip assigning (what assign_images gives for no sources)
    assignment = (
        assign_images(images, table["ra"], table["dec"], bands) if todo else np.empty((0, len(bands)), np.int32)
    )
    started = time.perf_counter()

    tasks = (
        BlockTask(
            s,
            assignment[s : s + BLOCK_ROWS],
            table["ra"][s : s + BLOCK_ROWS],
            table["dec"][s : s + BLOCK_ROWS],
            size,
            profile.pixel_scale,
        )
        for s in todo
    )

    def record(start, result):
        nonlocal sums
        stamps, band_ok, flags = result
        progress = {}
        if norm_groups is not None:
            sums = sums + _compressed_sums(stamps, band_ok, norm_groups[start : start + len(stamps)], n_norm_groups)
            progress["norm_sums"] = sums.tolist()
        store.write_block(group, image_name, start, stamps, band_ok, flags, progress)
        bar.advance(task, len(stamps))

    with progress_bar(console) as bar:
        task = bar.add_task(f"cutting {n} sources x {len(bands)} bands", total=n, completed=n - remaining)
        cut_blocks(images, tasks, jobs if len(todo) > 1 else 1, record)
    elapsed = time.perf_counter() - started
    flags = group["flags"][:]
    band_ok = group["band_ok"][:]
    summary: dict[str, Any] = {
        "sources": n,
        "bands": len(bands),
        "all_bands": int(band_ok.all(axis=1).sum()),
        **{
            str(f.name).lower(): int(((flags & f) != 0).sum())  # str: the name of one flag is never None
            for f in (Flag.EDGE, Flag.NAN_PIXELS, Flag.MISSING_BAND, Flag.OUTSIDE, Flag.RESAMPLED)
        },
        "seconds": elapsed,
        "cut_now": remaining,
    }
    if norm_groups is not None:
        summary["norm_sums"] = sums
    return group, summary


def compress(x: np.ndarray) -> np.ndarray:
    """The paper's dynamic-range compression, sign(x) (sqrt(|x| + 1) - 1)."""
    return np.sign(x) * (np.sqrt(np.abs(x) + 1.0) - 1.0)


def _compressed_sums(stamps: np.ndarray, band_ok: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Per group and band: pixel count, sum and sum of squares of the compressed pixels of rows with data."""
    out = np.zeros((n_groups, 3, stamps.shape[1]))
    for g in range(n_groups):
        for b in range(stamps.shape[1]):
            rows = (groups == g) & band_ok[:, b]
            if rows.any():
                c = compress(stamps[rows, b].astype(np.float64))
                out[g, :, b] = c.size, c.sum(), np.square(c).sum()
    return out


def summary_table(summary: dict, title: str):
    from rich.table import Table

    table = Table(title=title, show_header=False)
    rows = [
        ("sources", summary["sources"]),
        ("with all bands", summary["all_bands"]),
        ("EDGE", summary["edge"]),
        ("NAN_PIXELS", summary["nan_pixels"]),
        ("MISSING_BAND", summary["missing_band"]),
        ("OUTSIDE (no tile)", summary["outside"]),
        ("RESAMPLED", summary["resampled"]),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    if summary["cut_now"]:
        rate = summary["cut_now"] * summary["bands"] / max(summary["seconds"], 1e-9)
        table.add_row("stamp-bands / s", f"{rate:,.0f}")
    return table


# ----------------------------------------------------------------------------- mmz cutout


@releases_locks
def run_cutout(
    tiles: list[Path],
    catalog: Path,
    profile: Profile,
    output: Path,
    *,
    size: int | None,
    columns: dict[str, str],
    jobs: int = 1,
    overwrite: bool = False,
    console=None,
) -> dict:
    """``mmz cutout``: stamps of every catalogue source into a Zarr store (see module docstring)."""
    from mmzcli import store
    from mmzcli.catalog import read_table

    size = size or profile.cutout_size
    if size < 4:
        raise InputError(f"--size {size}: stamps need at least 4 pixels a side")
    output = Path(output)
    claim_store(output, "stamps", {"tile": expand_tiles(tiles), "catalogue": [catalog]})  # no input, one writer
    if store.is_complete(output) and not overwrite:
        raise InputError(f"{output}: a complete store is already there; use --overwrite to replace it")
    table = read_table(catalog, columns)
    images = index_tiles(expand_tiles(tiles), profile)
    key = store.inputs_key("cutout", images, catalog, columns, profile.to_dict(), size)
    group, summary = cut_to_store(
        output,
        images,
        profile,
        table,
        image_name="stamps",
        size=size,
        key=key,
        jobs=jobs,
        overwrite=overwrite,
        console=console,
    )
    store.finish(group, output)
    if console is not None:
        console.print(summary_table(summary, f"mmz cutout -> {output}"))
    return summary
