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
anti-aliasing filter).

Background.  A constant per tile and band: the 3-sigma-clipped median of the
tile's finite, non-zero pixels (on a subsample of at most 10^6 of them), so
that stamps from already sky-subtracted stacks keep their zero level and stamps
from raw-ish tiles lose their pedestal.  Varying backgrounds are the user's to
remove beforehand (SWarp, sep).

Flags (int32 bits, per source, OR-ed over bands):
    EDGE          the stamp runs off the tile in some band; missing pixels are 0
    NAN_PIXELS    some pixels were NaN/inf; they are 0
    MISSING_BAND  some band has no tile covering the source (its stamp is 0, band_ok False)
    OUTSIDE       no tile of any band covers the source: all stamps are 0
    RESAMPLED     some band was resampled rather than sliced
    NO_ZSPEC, ZSPEC_OUT_OF_GRID   set by build-cubes for unusable redshifts
"""

from __future__ import annotations

import enum
import glob
import math
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from mmzcli.errors import InputError

ALIGN_TOL = 0.05  # pixels: largest misplacement accepted on the slicing path
BLOCK_ROWS = 256  # sources per unit of work: a multiple of the store's chunk rows
ARCSEC = math.pi / 180 / 3600
SCIENCE_EXTNAMES = ("IMAGE", "SCI")  # the pixels of files that carry mask and variance planes too


class Flag(enum.IntFlag):
    EDGE = 1
    NAN_PIXELS = 2
    MISSING_BAND = 4
    OUTSIDE = 8
    RESAMPLED = 16
    NO_ZSPEC = 32
    ZSPEC_OUT_OF_GRID = 64
    EBV_DEFAULT = 128  # predict: no E(B-V) was given for the source; the training sample's median was used


# ----------------------------------------------------------------------------- tiles

@dataclass(frozen=True)
class TileImage:
    """One band's image in one file (an HDU), with what is needed to reopen it in a worker."""

    path: str
    hdu: int
    band: str
    shape: tuple[int, int]  # (ny, nx)
    header: str  # the HDU header as a string: small, picklable, rebuilt into a WCS on demand


def expand_tiles(patterns: list[str | Path], base: Path | None = None) -> list[Path]:
    """Tile paths from file names and glob patterns (relative to ``base``), sorted and unique."""
    paths = []
    for pattern in patterns:
        text = str(pattern)
        if base is not None and not os.path.isabs(text):
            text = str(base / text)
        if any(ch in text for ch in "*?["):
            matches = sorted(glob.glob(text))
            if not matches:
                raise InputError(f"{pattern}: no tile matches this pattern")
            paths.extend(Path(m) for m in matches)
        else:
            paths.append(Path(text))
    return sorted(set(paths), key=str)


def index_tiles(paths: list[Path], profile) -> list[TileImage]:
    """Open every tile and find its band(s) and celestial WCS, refusing anything unusable.

    A file holds one band (``FILTER`` keyword, else the profile's file-name
    pattern) or one band per image HDU (``EXTNAME`` = band); a file whose
    image planes include one named IMAGE or SCI holds one band in that plane.
    """
    import warnings

    from astropy.io import fits
    from astropy.utils.exceptions import AstropyUserWarning

    images = []
    for path in paths:
        if not path.exists():
            raise InputError(f"{path}: no such tile file")
        try:
            with warnings.catch_warnings():  # a truncated file is reported below, in one line
                warnings.simplefilter("ignore", AstropyUserWarning)
                hdul = fits.open(path, memmap=True, lazy_load_hdus=False)
            with hdul:
                hdus = [(i, hdu.header) for i, hdu in enumerate(hdul)
                        if hdu.is_image and hdu.header.get("NAXIS", 0) == 2]
                primary = hdul[0].header
                size = os.path.getsize(path)
                short = [i for i, _ in hdus if hdul[i].fileinfo()["datLoc"] + hdul[i].fileinfo()["datSpan"] > size]
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable FITS file ({exc})") from None
        if not hdus:
            raise InputError(f"{path}: no 2-d image HDU in this FITS file")
        if short:
            raise InputError(f"{path}[{short[0]}]: the file is truncated ({size} bytes, shorter than its header "
                             f"says); copy it again")
        science = [(i, h) for i, h in hdus if str(h.get("EXTNAME", "")).upper() in SCIENCE_EXTNAMES]
        if len(hdus) > 1 and science:  # one band with mask/variance planes (HSC calexp, DES coadds)
            hdus = [(science[0][0], _with_primary_filter(science[0][1], primary))]
        multi = len(hdus) > 1
        for i, header in hdus:
            band = _band_of(path, i, header, multi, profile)
            _check_wcs(path, i, header)
            images.append(TileImage(str(path), i, band, (header["NAXIS2"], header["NAXIS1"]),
                                    header.tostring()))
    return images


def _with_primary_filter(header, primary):
    if "FILTER" not in header and "FILTER" in primary:
        header = header.copy()
        header["FILTER"] = primary["FILTER"]
    return header


def _band_of(path: Path, hdu: int, header, multi: bool, profile) -> str:
    label = header.get("EXTNAME") if multi else header.get("FILTER")
    where = f"{path}[{hdu}]"
    if label is not None:
        band = profile.resolve_band(str(label))
        if band is None:
            key = "EXTNAME" if multi else "FILTER"
            raise InputError(f"{where}: {key} = '{label}' is not a band of profile {profile.name} "
                             f"({', '.join(profile.band_names)}); fix the header or add an alias to the profile")
        return band
    band = profile.band_from_filename(path.name)
    if band is None:
        key = "EXTNAME" if multi else "FILTER"
        raise InputError(f"{where}: cannot tell the band: no {key} keyword and the file name does not match "
                         f"the profile's band_pattern ({profile.band_pattern}); add {key} = '<band>' to the header")
    return band


def _check_wcs(path: Path, hdu: int, header) -> None:
    import warnings

    from astropy.wcs import WCS, FITSFixedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(header)
    except Exception as exc:
        raise InputError(f"{path}[{hdu}]: unreadable WCS ({exc})") from None
    if not wcs.has_celestial or wcs.celestial.naxis != 2:
        raise InputError(f"{path}[{hdu}]: no celestial WCS in the header (need CTYPE1/2 such as RA---TAN/DEC--TAN "
                         f"with CRVAL, CRPIX and CD or CDELT); astrometrically calibrate the tile first")


@lru_cache(maxsize=None)
def _wcs(image: TileImage):
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(fits.Header.fromstring(image.header)).celestial


@lru_cache(maxsize=64)
def _pixels(image: TileImage) -> np.ndarray:
    """The memory-mapped pixel array (copied in memory only when the file is compressed or scaled)."""
    from astropy.io import fits

    hdul = fits.open(image.path, memmap=True)  # kept open by the cache: the memmap needs it
    return hdul[image.hdu].data


@lru_cache(maxsize=64)
def background(image: TileImage) -> float:
    """Sigma-clipped median of the tile's finite, non-zero pixels (a strided subsample)."""
    from astropy.stats import sigma_clipped_stats

    data = _pixels(image)
    step = max(1, int(math.sqrt(data.size / 1e6)))
    sample = np.asarray(data[::step, ::step], dtype=np.float64)
    sample = sample[np.isfinite(sample) & (sample != 0)]
    if sample.size < 100:
        return 0.0
    _, median, _ = sigma_clipped_stats(sample, sigma=3.0, maxiters=5)
    return float(median)


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


def _sky_to_pixel(image: TileImage, ra: np.ndarray, dec: np.ndarray):
    x, y = _wcs(image).all_world2pix(ra.ravel(), dec.ravel(), 0)
    return x.reshape(ra.shape), y.reshape(ra.shape)


def assign_images(images: list[TileImage], ra: np.ndarray, dec: np.ndarray, bands: list[str]) -> np.ndarray:
    """For each source and band, the index of the image that covers it best (farthest from an edge), or -1."""
    n = len(ra)
    best = np.full((n, len(bands)), -1, dtype=np.int32)
    margin = np.full((n, len(bands)), -np.inf)
    xyz = _unit_vectors(ra, dec)
    for k, image in enumerate(images):
        b = bands.index(image.band)
        near = np.flatnonzero(_within_footprint_circle(image, xyz))
        if near.size == 0:
            continue
        x, y = _sky_to_pixel(image, ra[near], dec[near])
        ny, nx = image.shape
        inside = np.minimum.reduce([x + 0.5, nx - 0.5 - x, y + 0.5, ny - 0.5 - y])
        better = np.isfinite(inside) & (inside > 0) & (inside > margin[near, b])
        best[near[better], b] = k
        margin[near[better], b] = inside[better]
    return best


def _unit_vectors(ra, dec):
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def _within_footprint_circle(image: TileImage, xyz: np.ndarray) -> np.ndarray:
    """A cheap prefilter: sources within the circle through the tile's corners (plus 1%)."""
    ny, nx = image.shape
    corners = np.array([[-0.5, -0.5], [nx - 0.5, -0.5], [-0.5, ny - 0.5], [nx - 0.5, ny - 0.5],
                        [(nx - 1) / 2, (ny - 1) / 2]])
    ra, dec = _wcs(image).all_pix2world(corners[:, 0], corners[:, 1], 0)
    v = _unit_vectors(ra, dec)
    centre = v[4] / np.linalg.norm(v[4])
    cos_radius = np.min(v[:4] @ centre)
    radius = np.arccos(np.clip(cos_radius, -1, 1)) * 1.01 + 1e-9
    return xyz @ centre >= np.cos(radius)


# ----------------------------------------------------------------------------- stamps

def cut_image(image: TileImage, ra: np.ndarray, dec: np.ndarray, size: int, scale: float):
    """Stamps of ``image`` for sources at (ra, dec): returns (stamps [n,S,S] f4, ok [n], flags [n])."""
    n = len(ra)
    stamps = np.zeros((n, size, size), dtype=np.float32)
    flags = np.zeros(n, dtype=np.int32)
    ok = np.ones(n, dtype=bool)
    data = _pixels(image)
    sky = background(image)
    centre = (size - 1) / 2
    probe = np.array([[centre, centre], [0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], float)
    px, py = _sky_to_pixel(image, *tangent_grid(ra, dec, size, scale, probe))
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
    patch = np.asarray(data[max(iy - 1, 0):iy + 2, max(ix - 1, 0):ix + 2])
    return bool(np.any(np.isfinite(patch) & (patch != 0)))


def _slice_into(out: np.ndarray, data: np.ndarray, x0: int, y0: int, sky: float = 0.0) -> int:
    """Copy the tile window at (x0, y0) of out's shape, minus sky, into ``out``; zero-pad what falls off."""
    height, width = out.shape
    ny, nx = data.shape
    ys, ye, xs, xe = max(y0, 0), min(y0 + height, ny), max(x0, 0), min(x0 + width, nx)
    if ys < ye and xs < xe:
        out[ys - y0:ye - y0, xs - x0:xe - x0] = data[ys:ye, xs:xe] - sky
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
    nx_, ny_ = _sky_to_pixel(image, *tangent_grid(np.array([ra]), np.array([dec]), size, scale, nodes))
    design = np.column_stack([nodes, np.ones(len(nodes))])
    coef, *_ = np.linalg.lstsq(design, np.column_stack([nx_[0], ny_[0]]), rcond=None)
    if np.abs(design @ coef - np.column_stack([nx_[0], ny_[0]])).max() > 1e-3:
        gx, gy = _sky_to_pixel(image, *tangent_grid(np.array([ra]), np.array([dec]), size, scale))
        return gx[0], gy[0], coef[:2]
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    gx = coef[0, 0] * x + coef[1, 0] * y + coef[2, 0]
    gy = coef[0, 1] * x + coef[1, 1] * y + coef[2, 1]
    return gx, gy, coef[:2]


def _resample_into(out: np.ndarray, image: TileImage, data: np.ndarray, sky: float, ra: float, dec: float,
                   size: int, scale: float) -> int:
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
    gathered = patch[(iy.astype(np.int64)[:, None] + taps)[:, :, None], (ix.astype(np.int64)[:, None] + taps)[:, None, :]]
    values = np.einsum("pk,pkl,pl->p", wy, gathered, wx)
    out[:] = (values * jacobian).reshape(size, size)
    return flags


def cut_block(images: list[TileImage], assignment: np.ndarray, ra: np.ndarray, dec: np.ndarray,
              size: int, scale: float):
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

_worker_images: list[TileImage] = []


def _init_worker(images: list[TileImage]) -> None:
    global _worker_images
    _worker_images = images


def _cut_block_task(start, assignment, ra, dec, size, scale):
    return start, cut_block(_worker_images, assignment, ra, dec, size, scale)


def cut_to_store(path: Path, images: list[TileImage], profile, table: dict[str, np.ndarray], *,
                 image_name: str, size: int, key: str, jobs: int = 1, overwrite: bool = False,
                 attrs: dict | None = None, labelled: np.ndarray | None = None, console=None):
    """Cut every source of ``table`` (id, ra, dec, ...) into a Zarr store at ``path``.

    Resumes a partial store built from the same inputs; parallel over blocks of
    sources with ``jobs`` processes, one writer.  Where ``labelled`` is given,
    per-band sums of compressed pixels of those rows with data are accumulated
    for the normalisation statistics.  Returns (group, summary dict).
    """
    from mmzcli import store

    bands = profile.band_names
    n = len(table["id"])
    group = store.open_for_writing(path, key=key, n=n, bands=bands, size=size, image_name=image_name,
                                   columns=table, overwrite=overwrite,
                                   attrs={"profile": profile.name, "pixel_scale": profile.pixel_scale,
                                          **(attrs or {})})
    done = set(group.attrs["blocks_done"])
    todo = [s for s in range(0, n, BLOCK_ROWS) if s not in done]
    remaining = sum(min(BLOCK_ROWS, n - s) for s in todo)
    sums = np.array(group.attrs.get("norm_sums", np.zeros((3, len(bands))).tolist()))
    assignment = assign_images(images, table["ra"], table["dec"], bands) if todo else None
    started = time.perf_counter()

    def tasks():
        for s in todo:
            e = min(s + BLOCK_ROWS, n)
            yield s, assignment[s:e], table["ra"][s:e], table["dec"][s:e], size, profile.pixel_scale

    def record(start, result):
        nonlocal sums
        stamps, band_ok, flags = result
        progress = {}
        if labelled is not None:
            sums = sums + _compressed_sums(stamps, band_ok, labelled[start:start + len(stamps)])
            progress["norm_sums"] = sums.tolist()
        store.write_block(group, image_name, start, stamps, band_ok, flags, progress)

    with _progress(console) as bar:
        task = bar.add_task(f"cutting {n} sources x {len(bands)} bands", total=n,
                            completed=n - remaining)
        if jobs == 1 or len(todo) <= 1:
            _init_worker(images)
            for args in tasks():
                start, result = _cut_block_task(*args)
                record(start, result)
                bar.advance(task, len(result[0]))
        else:
            _run_parallel(images, tasks(), jobs, record, lambda k: bar.advance(task, k))
    elapsed = time.perf_counter() - started
    flags = group["flags"][:]
    band_ok = group["band_ok"][:]
    summary = {
        "sources": n, "bands": len(bands), "all_bands": int(band_ok.all(axis=1).sum()),
        **{f.name.lower(): int(((flags & f) != 0).sum()) for f in
           (Flag.EDGE, Flag.NAN_PIXELS, Flag.MISSING_BAND, Flag.OUTSIDE, Flag.RESAMPLED)},
        "seconds": elapsed, "cut_now": remaining,
    }
    if labelled is not None:
        summary["norm_sums"] = sums
    return group, summary


def _run_parallel(images, tasks, jobs, record, advance):
    """A bounded number of blocks in flight; results written by this (the only writing) process."""
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init_worker, initargs=(images,)) as pool:
        pending = set()
        for args in tasks:
            pending.add(pool.submit(_cut_block_task, *args))
            if len(pending) >= 2 * jobs:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    start, result = future.result()
                    record(start, result)
                    advance(len(result[0]))
        for future in pending:
            start, result = future.result()
            record(start, result)
            advance(len(result[0]))


def compress(x: np.ndarray) -> np.ndarray:
    """The paper's dynamic-range compression, sign(x) (sqrt(|x| + 1) - 1)."""
    return np.sign(x) * (np.sqrt(np.abs(x) + 1.0) - 1.0)


def _compressed_sums(stamps: np.ndarray, band_ok: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Per band: pixel count, sum and sum of squares of compressed pixels of labelled rows with data."""
    out = np.zeros((3, stamps.shape[1]))
    for b in range(stamps.shape[1]):
        rows = labelled & band_ok[:, b]
        if rows.any():
            c = compress(stamps[rows, b].astype(np.float64))
            out[:, b] = c.size, c.sum(), np.square(c).sum()
    return out


def _progress(console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=console, disable=console is None or console.quiet,
                    transient=False)


def summary_table(summary: dict, title: str):
    from rich.table import Table

    table = Table(title=title, show_header=False)
    rows = [("sources", summary["sources"]), ("with all bands", summary["all_bands"]),
            ("EDGE", summary["edge"]), ("NAN_PIXELS", summary["nan_pixels"]),
            ("MISSING_BAND", summary["missing_band"]), ("OUTSIDE (no tile)", summary["outside"]),
            ("RESAMPLED", summary["resampled"])]
    for name, value in rows:
        table.add_row(name, str(value))
    if summary["cut_now"]:
        rate = summary["cut_now"] * summary["bands"] / max(summary["seconds"], 1e-9)
        table.add_row("stamp-bands / s", f"{rate:,.0f}")
    return table


# ----------------------------------------------------------------------------- mmz cutout

def run_cutout(tiles: list[Path], catalog: Path, profile_name: str, output: Path, *, size: int | None,
               columns: dict[str, str], jobs: int = 1, overwrite: bool = False, console=None) -> dict:
    """``mmz cutout``: stamps of every catalogue source into a Zarr store (see module docstring)."""
    from mmzcli import store
    from mmzcli.catalog import read_table
    from mmzcli.profiles import load_profile

    profile = load_profile(profile_name)
    size = size or profile.cutout_size
    if size < 4:
        raise InputError(f"--size {size}: stamps need at least 4 pixels a side")
    output = Path(output)
    if store.is_complete(output) and not overwrite:
        raise InputError(f"{output}: a complete store is already there; use --overwrite to replace it")
    table = read_table(catalog, columns)
    images = index_tiles(expand_tiles(tiles), profile)
    key = store.inputs_key("cutout", images, catalog, columns, profile.to_dict(), size)
    group, summary = cut_to_store(output, images, profile, table, image_name="stamps", size=size,
                                  key=key, jobs=jobs, overwrite=overwrite, console=console)
    store.finish(group, output)
    if console is not None:
        console.print(summary_table(summary, f"mmz cutout -> {output}"))
    return summary
