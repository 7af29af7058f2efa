"""Image rendering for ``mmz simulate``: pixel grids, PSFs, noise, and one FITS file per band per tile.

Each object is drawn once per band into a small postage stamp with GalSim (bulge
Sérsic n=4 plus exponential disk, each with its own flux in that band, the disk's young
burst in star-forming clumps (RandomKnots, in the same places in every band), convolved
with a Moffat PSF and the pixel) and added into the tile.  Noise is sky-limited Gaussian
noise set by the band's 5σ depth plus the objects' Poisson noise.  A task is one
(tile, band) image: its objects are drawn in a fixed order and its noise comes from
a seed derived from (base seed, tile, band), so the files do not depend on how many
processes share the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmzcli.atomic import atomic_path

if TYPE_CHECKING:
    from astropy.wcs import WCS

MOFFAT_BETA = 3.5  # typical ground-based seeing wings (Trujillo et al. 2001)
# Accuracy is set by the folding threshold; GalSim's minimum FFT of 128 only costs time on
# small galaxies (32 gives the same images to 2e-6 of the peak, 25% faster).
_GSPARAMS = {"folding_threshold": 1e-2, "maxk_threshold": 2e-3, "kvalue_accuracy": 1e-4, "minimum_fft_size": 32}


@dataclass(frozen=True)
class PixelGrid:
    """The pixels of one band on one tile: a TAN WCS and an image size."""

    crval: tuple[float, float]  # deg
    crpix: tuple[float, float]  # FITS, 1-based
    scale: float  # arcsec / pixel
    rotation: float  # deg, east of north
    shape: tuple[int, int]  # (ny, nx)

    def cd(self) -> np.ndarray:
        theta = np.radians(self.rotation)
        s = self.scale / 3600.0
        return s * np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])

    def wcs(self) -> WCS:
        from astropy.wcs import WCS

        w = WCS(naxis=2)
        w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        w.wcs.crval = list(self.crval)
        w.wcs.crpix = list(self.crpix)
        w.wcs.cd = self.cd()
        return w

    def to_pixel(self, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """0-based (numpy) pixel coordinates of sky positions."""
        x, y = self.wcs().all_world2pix(ra, dec, 0)
        return x, y

    def jacobian(self) -> np.ndarray:
        """Local pixel -> sky Jacobian in arcsec, in GalSim's (u, v) = (west, north) convention."""
        cd = self.cd() * 3600.0
        return np.array([[-cd[0, 0], -cd[0, 1]], [cd[1, 0], cd[1, 1]]])


@dataclass(frozen=True)
class BandImaging:
    """What one band's images look like: PSF, zeropoint, noise, header values."""

    name: str
    fwhm: float  # arcsec
    zeropoint: float
    depth: float
    sky_mag: float  # mag / arcsec^2, for the gain and the Poisson term
    exptime: float
    beta: float = MOFFAT_BETA

    def noise(self, scale: float) -> tuple[float, float, float]:
        """(sky sigma per pixel, effective gain, N_eff of the PSF) at a pixel scale, in image units.

        5σ depth is for PSF-optimal photometry: SNR = F / (σ sqrt(N_eff)), N_eff = 1/Σψ².
        """
        neff = psf_neff(self.fwhm, scale, self.beta)
        f5 = 10 ** (0.4 * (self.zeropoint - self.depth))
        sigma = f5 / (5 * np.sqrt(neff))
        sky = 10 ** (0.4 * (self.zeropoint - self.sky_mag)) * scale**2
        return sigma, sky / sigma**2, neff


def psf_neff(fwhm: float, scale: float, beta: float = MOFFAT_BETA) -> float:
    import galsim

    psf = galsim.Moffat(beta=beta, fwhm=fwhm)
    n = int(2 * np.ceil(4 * fwhm / scale)) + 17
    img = psf.drawImage(nx=n, ny=n, scale=scale).array
    return float(1.0 / np.sum(img**2))


@dataclass
class TileTask:
    """Everything a worker needs to render one band of one tile."""

    path: Path
    band: BandImaging
    grid: PixelGrid
    seed: int
    x: np.ndarray  # 0-based pixel positions in this grid
    y: np.ndarray
    flux_bulge: np.ndarray  # image units; stars have all their flux in flux_bulge and is_star
    flux_disk: np.ndarray  # the knots' flux included
    flux_knots: np.ndarray | float  # the part of flux_disk drawn as n_knots clumps
    n_knots: int
    knot_seeds: np.ndarray  # per object, the same in every band: the clumps sit in the same places
    r_bulge: np.ndarray  # arcsec
    r_disk: np.ndarray
    q_bulge: np.ndarray
    q_disk: np.ndarray
    angle: np.ndarray  # rad
    is_star: np.ndarray
    simple: np.ndarray  # draw as one component (faint neighbours: half the cost, no visible loss)
    header: dict


def stamp_size(r_max: float, fwhm: float, scale: float) -> int:
    """Side of a postage stamp: ±(10 r_half + 3 FWHM), even, 16-512 px.

    Generous because Sérsic n=4 wings of bright galaxies are still above the sky noise at
    5 r_half: a smaller stamp leaves a visible square edge around them.
    """
    n = int(np.ceil(2 * (10 * r_max + 3 * fwhm) / scale))
    return int(np.clip(n + n % 2, 16, 512))


def render_tile(task: TileTask) -> tuple[str, int]:
    """Draw, add noise, and write one FITS image atomically.  Returns (file name, objects drawn)."""
    import galsim

    gsp = galsim.GSParams(**_GSPARAMS)
    ny, nx = task.grid.shape
    image = np.zeros((ny, nx))
    jac = task.grid.jacobian()
    wcs = galsim.JacobianWCS(jac[0, 0], jac[0, 1], jac[1, 0], jac[1, 1])
    psf = galsim.Moffat(beta=task.band.beta, fwhm=task.band.fwhm, gsparams=gsp)
    scale = task.grid.scale
    stamps: dict[int, Any] = {}  # one reusable galsim image per size
    drawn = 0
    for i in range(task.x.size):
        obj, r_max = galaxy_profile(task, i, psf, gsp)
        if obj is None:
            continue
        n = stamp_size(min(r_max, 12.0), task.band.fwhm, scale)
        ix, iy = int(np.floor(task.x[i] + 0.5)), int(np.floor(task.y[i] + 0.5))
        x0, y0 = ix - n // 2, iy - n // 2  # the stamp's first pixel in the tile
        xa, xb, ya, yb = max(x0, 0), min(x0 + n, nx), max(y0, 0), min(y0 + n, ny)
        if xa >= xb or ya >= yb:
            continue
        stamp = stamps.setdefault(n, galsim.ImageD(n, n, wcs=wcs, xmin=0, ymin=0))
        # with use_true_center=False the profile sits on pixel (n//2, n//2) plus the offset
        obj.drawImage(stamp, offset=(task.x[i] - ix, task.y[i] - iy), use_true_center=False)
        image[ya:yb, xa:xb] += stamp.array[ya - y0 : yb - y0, xa - x0 : xb - x0]
        drawn += 1
    sigma, gain, _ = task.band.noise(scale)
    rng = np.random.default_rng(task.seed)
    signal = image
    noisy = signal + rng.standard_normal(signal.shape) * np.sqrt(sigma**2 + np.clip(signal, 0, None) / gain)
    write_image(task.path, noisy.astype(np.float32), task.grid, {**task.header, "GAIN": (gain, "e-/ADU, effective")})
    return task.path.name, drawn


def galaxy_profile(task: TileTask, i: int, psf, gsp):
    """Object i of the task as a GalSim profile (PSF included) and its size [arcsec]; None if empty."""
    import galsim

    beta = float(task.angle[i]) * galsim.radians
    if task.is_star[i]:
        return psf.withFlux(float(task.flux_bulge[i])), 0.0
    fb, fd = float(task.flux_bulge[i]), float(task.flux_disk[i])
    rb, rd = float(task.r_bulge[i]), float(task.r_disk[i])
    if task.simple[i]:  # the brighter component carries all the light
        if fb + fd <= 0:
            return None, 0.0
        if fb > fd:
            gal = galsim.DeVaucouleurs(half_light_radius=rb, flux=fb + fd, trunc=8 * rb, gsparams=gsp)
            return galsim.Convolve(gal.shear(q=float(task.q_bulge[i]), beta=beta), psf, gsparams=gsp), 1.5 * rb
        gal = galsim.Exponential(half_light_radius=rd, flux=fb + fd, gsparams=gsp)
        return galsim.Convolve(gal.shear(q=float(task.q_disk[i]), beta=beta), psf, gsparams=gsp), rd
    parts = []
    if fb > 0:
        parts.append(
            galsim.DeVaucouleurs(half_light_radius=rb, flux=fb, trunc=8 * rb, gsparams=gsp).shear(
                q=float(task.q_bulge[i]), beta=beta
            )
        )
    fk = float(np.broadcast_to(task.flux_knots, task.x.shape)[i]) if task.n_knots else 0.0
    if fd - fk > 0:
        smooth = galsim.Exponential(half_light_radius=rd, flux=fd - fk, gsparams=gsp)
        parts.append(smooth.shear(q=float(task.q_disk[i]), beta=beta))
    if fk > 0:  # star-forming clumps, spread like the disk (GalSim's RandomKnots)
        rng = galsim.BaseDeviate(int(task.knot_seeds[i]))
        knots = galsim.RandomKnots(task.n_knots, half_light_radius=rd, flux=fk, rng=rng, gsparams=gsp)
        parts.append(knots.shear(q=float(task.q_disk[i]), beta=beta))
    if not parts:
        return None, 0.0
    gal = galsim.Add(parts) if len(parts) > 1 else parts[0]
    return galsim.Convolve(gal, psf, gsparams=gsp), max(1.5 * rb if fb > 0 else 0.0, rd if fd > 0 else 0.0)


def write_image(path: Path, data: np.ndarray, grid: PixelGrid, header: dict) -> None:
    """Write a FITS image with its WCS atomically, with no date or time keywords (reproducible)."""
    from astropy.io import fits

    hdr = grid.wcs().to_header()
    for key in ("DATE-OBS", "MJD-OBS", "DATEREF", "MJDREF"):
        hdr.remove(key, ignore_missing=True, remove_all=True)
    for key, value in header.items():
        hdr[key] = value
    with atomic_path(path) as tmp:
        fits.PrimaryHDU(data, header=hdr).writeto(tmp, overwrite=True, output_verify="silentfix")
