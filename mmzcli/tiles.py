"""Survey image tiles: which band and WCS each image has, its pixels, its sky level, and what it covers.

A tile is a FITS file with one band (``FILTER``, else the profile's file-name
pattern), or one band per image HDU (``EXTNAME``), or one band in an IMAGE/SCI
plane beside mask and variance planes.  Its celestial WCS may be in any frame
astropy knows; positions are always handled as ICRS RA/Dec.

Background.  A constant per tile and band: the 3-sigma-clipped median of the
tile's finite, non-zero pixels (on a subsample of at most 10^6 of them), so
that stamps from already sky-subtracted stacks keep their zero level and stamps
from raw-ish tiles lose their pedestal.  Varying backgrounds are the user's to
remove beforehand (SWarp, sep).
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from mmzcli.errors import InputError

SCIENCE_EXTNAMES = ("IMAGE", "SCI")  # the pixels of files that carry mask and variance planes too


@dataclass(frozen=True)
class TileImage:
    """One band's image in one file (an HDU), with what is needed to reopen it in a worker."""

    path: str
    hdu: int
    band: str
    shape: tuple[int, int]  # (ny, nx)
    header: str  # the HDU header as a string: small, picklable, rebuilt into a WCS on demand


def expand_tiles(patterns: Sequence[str | Path], base: Path | None = None) -> list[Path]:
    """Tile paths from file names and glob patterns (relative to ``base``), sorted and unique."""
    paths: list[Path] = []
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
                hdus = [
                    (i, hdu.header) for i, hdu in enumerate(hdul) if hdu.is_image and hdu.header.get("NAXIS", 0) == 2
                ]
                primary = hdul[0].header
                size = os.path.getsize(path)
                short = [i for i, _ in hdus if hdul[i].fileinfo()["datLoc"] + hdul[i].fileinfo()["datSpan"] > size]
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable FITS file ({exc})") from None
        if not hdus:
            raise InputError(f"{path}: no 2-d image HDU in this FITS file")
        if short:
            raise InputError(
                f"{path}[{short[0]}]: the file is truncated ({size} bytes, shorter than its header says); copy it again"
            )
        science = [(i, h) for i, h in hdus if str(h.get("EXTNAME", "")).upper() in SCIENCE_EXTNAMES]
        if len(hdus) > 1 and science:  # one band with mask/variance planes (HSC calexp, DES coadds)
            hdus = [(science[0][0], _with_primary_filter(science[0][1], primary))]
        multi = len(hdus) > 1
        for i, header in hdus:
            band = _band_of(path, i, header, multi, profile)
            _check_wcs(path, i, header)
            images.append(TileImage(str(path), i, band, (header["NAXIS2"], header["NAXIS1"]), header.tostring()))
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
            raise InputError(
                f"{where}: {key} = '{label}' is not a band of profile {profile.name} "
                f"({', '.join(profile.band_names)}); fix the header or add an alias to the profile"
            )
        return band
    band = profile.band_from_filename(path.name)
    if band is None:
        key = "EXTNAME" if multi else "FILTER"
        raise InputError(
            f"{where}: cannot tell the band: no {key} keyword and the file name does not match "
            f"the profile's band_pattern ({profile.band_pattern}); add {key} = '<band>' to the header"
        )
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
        raise InputError(
            f"{path}[{hdu}]: no celestial WCS in the header (need CTYPE1/2 such as RA---TAN/DEC--TAN "
            f"with CRVAL, CRPIX and CD or CDELT); astrometrically calibrate the tile first"
        )
    from astropy.wcs.utils import wcs_to_celestial_frame

    try:
        wcs_to_celestial_frame(wcs.celestial)
    except ValueError:
        raise InputError(
            f"{path}[{hdu}]: celestial frame of CTYPE {wcs.celestial.wcs.ctype[0]!r} "
            f"(RADESYS {wcs.celestial.wcs.radesys!r}) is not one astropy knows; give the tile an "
            f"ICRS, FK5, FK4, Galactic or ecliptic WCS"
        ) from None


@cache
def tile_wcs(image: TileImage):
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(fits.Header.fromstring(image.header)).celestial


@lru_cache(maxsize=64)
def tile_pixels(image: TileImage) -> np.ndarray:
    """The memory-mapped pixel array (copied in memory only when the file is compressed or scaled)."""
    from astropy.io import fits

    hdul = fits.open(image.path, memmap=True)  # kept open by the cache: the memmap needs it
    return hdul[image.hdu].data


@lru_cache(maxsize=64)
def background(image: TileImage) -> float:
    """Sigma-clipped median of the tile's finite, non-zero pixels (a strided subsample)."""
    from astropy.stats import sigma_clipped_stats

    data = tile_pixels(image)
    step = max(1, int(math.sqrt(data.size / 1e6)))
    sample = np.asarray(data[::step, ::step], dtype=np.float64)
    sample = sample[np.isfinite(sample) & (sample != 0)]
    if sample.size < 100:
        return 0.0
    _, median, _ = sigma_clipped_stats(sample, sigma=3.0, maxiters=5)
    return float(median)


@cache
def _frame(image: TileImage):
    """The tile's celestial frame when it is not ICRS (Galactic, FK5, ecliptic ...), else None."""
    from astropy.coordinates import ICRS
    from astropy.wcs.utils import wcs_to_celestial_frame

    frame = wcs_to_celestial_frame(tile_wcs(image))
    return None if isinstance(frame, ICRS) else frame


def sky_to_pixel(image: TileImage, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel coordinates on ``image`` of ICRS positions (deg), whatever the tile's celestial frame."""
    ra, dec = np.asarray(ra, dtype=np.float64), np.asarray(dec, dtype=np.float64)
    lon, lat = ra.ravel(), dec.ravel()
    frame = _frame(image)
    if frame is not None:
        import astropy.units as u
        from astropy.coordinates import SkyCoord

        native = SkyCoord(lon * u.deg, lat * u.deg, frame="icrs").transform_to(frame).spherical
        lon, lat = native.lon.deg, native.lat.deg
    x, y = tile_wcs(image).all_world2pix(lon, lat, 0)
    return x.reshape(ra.shape), y.reshape(ra.shape)


def pixel_to_sky(image: TileImage, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ICRS RA, Dec (deg, RA in [0, 360)) of 0-based pixel coordinates on ``image``."""
    lon, lat = tile_wcs(image).all_pix2world(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), 0)
    frame = _frame(image)
    if frame is not None:
        import astropy.units as u
        from astropy.coordinates import SkyCoord

        icrs = SkyCoord(np.asarray(lon) * u.deg, np.asarray(lat) * u.deg, frame=frame).icrs
        lon, lat = icrs.ra.deg, icrs.dec.deg
    return np.asarray(lon) % 360.0, np.asarray(lat)


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
        x, y = sky_to_pixel(image, ra[near], dec[near])
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
    corners = np.array(
        [[-0.5, -0.5], [nx - 0.5, -0.5], [-0.5, ny - 0.5], [nx - 0.5, ny - 0.5], [(nx - 1) / 2, (ny - 1) / 2]]
    )
    ra, dec = pixel_to_sky(image, corners[:, 0], corners[:, 1])
    v = _unit_vectors(ra, dec)
    centre = v[4] / np.linalg.norm(v[4])
    cos_radius = np.min(v[:4] @ centre)
    radius = np.arccos(np.clip(cos_radius, -1, 1)) * 1.01 + 1e-9
    return xyz @ centre >= np.cos(radius)
