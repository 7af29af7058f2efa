"""``mmz simulate``: a multi-band survey that ``build-cubes`` reads as if it were real.

Writes into the project directory:

- ``tiles/tile-NNNN-<band>.fits``: background-subtracted images, one per band per tile,
  TAN WCS, float32, with FILTER, MAGZERO, SEEING, GAIN, EXPTIME, BUNIT;
- ``specz.fits``: the spectroscopic sample (ID, RA, DEC, Z_SPEC, EBV, MAG_/MAGERR_<band>);
- ``truth.fits``: every rendered object with its true parameters;
- ``mmz.yaml``: the profile snapshot and the inputs, so ``mmz build-cubes`` needs no arguments.

The physics lives in ``sim.sed`` (templates, dust, IGM, filters), ``sim.population``
(luminosity functions, bulge+disk, sizes, stars) and ``sim.render`` (pixels, PSF,
noise); this module chooses who goes where and writes the files.  The survey-specific
knobs are the ``simulation:`` section of the profile (all optional; see
``sim.settings`` and docs/simulation.md).

Spectroscopic targets are packed more densely than in real surveys (one per
``target_spacing`` cutouts, so a few thousand fit on a few tiles), but their
neighbours, galaxy pairs and stars come at the real surface density of the survey:
every cutout sees the crowding it would see in the real survey.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmzcli.atomic import atomic_path
from mmzcli.errors import InputError
from mmzcli.profiles import Profile, load_profile
from mmzcli.sim.population import Kind
from mmzcli.sim.settings import FieldSettings, SimSettings, SpecSettings

if TYPE_CHECKING:
    from rich.console import Console

    from mmzcli.sim.render import BandImaging, PixelGrid, TileTask

# Dark-sky brightness, AB mag/arcsec^2, by wavelength [Å] (Mauna Kea/Paranal-like); only the
# Poisson noise of bright objects depends on it.
_SKY = (
    (3550, 22.4),
    (4700, 22.0),
    (6200, 21.1),
    (7500, 20.2),
    (8900, 19.3),
    (10000, 18.3),
    (12500, 16.8),
    (16500, 15.3),
    (21500, 15.1),
)
SIMPLE_SNR = 50.0  # neighbours fainter than this (PSF S/N, reference band) are drawn as one component
TRUTH_NAME, SPECZ_NAME, TILES_DIR = "truth.fits", "specz.fits", "tiles"


class Role(IntEnum):
    """The ROLE column of the truth table (int16): why an object is in the sky."""

    TARGET = 0  # in the spectroscopic sample
    COMPANION = 1  # a physical companion of a target, 1-4" away (HOST_ID)
    NEIGHBOUR = 2  # a field galaxy near a target
    STAR = 3


# ----------------------------------------------------------------------------- the sky


@dataclass
class Sky:
    """Every object of the simulation, in truth-table order, and the tile layout."""

    table: dict[str, np.ndarray]  # truth columns
    bulge: np.ndarray  # AB maggies [N, B], observed (Milky Way dust included)
    disk: np.ndarray
    n_tiles: int
    knots: np.ndarray | None = None  # the part of ``disk`` in star-forming clumps (the young burst)


def _imaging(profile: Profile, settings: SimSettings) -> list[BandImaging]:
    from mmzcli.sim.render import BandImaging

    imaging = settings.imaging
    waves, mags = zip(*_SKY)
    return [
        BandImaging(
            name=b.name,
            fwhm=b.psf_fwhm,
            zeropoint=b.zeropoint,
            depth=b.depth,
            sky_mag=float(imaging.sky.get(b.name, np.interp(b.wavelength, waves, mags))),
            exptime=imaging.exptime,
            beta=imaging.moffat_beta,
        )
        for b in profile.bands
    ]


def _band_grids(
    profile: Profile, settings: SimSettings, tile: int, tile_size: int, centre: tuple[float, float]
) -> dict[str | None, PixelGrid]:
    """The PixelGrid of every band on one tile: the profile's grid, or one of ``grids``.

    Key None holds the profile's own grid, in which object positions X, Y are given.
    """
    from mmzcli.sim.render import PixelGrid

    main = PixelGrid(
        crval=centre,
        crpix=((tile_size + 1) / 2, (tile_size + 1) / 2),
        scale=profile.pixel_scale,
        rotation=0.0,
        shape=(tile_size, tile_size),
    )
    grids: dict[str | None, PixelGrid] = {None: main, **dict.fromkeys(profile.band_names, main)}
    extent = tile_size * profile.pixel_scale  # arcsec
    for spec in settings.grids:
        sign = 1 if tile % 2 == 0 else -1  # alternate the uncovered side and the rotation
        cover, scale = spec.coverage, spec.pixel_scale
        nx, ny = math.ceil(cover * extent / scale), math.ceil(extent / scale)
        shift = sign * (1 - cover) / 2 * extent / 3600  # deg along RA, towards one side
        ra = centre[0] + shift / math.cos(math.radians(centre[1]))
        grid = PixelGrid(
            crval=(ra, centre[1]),
            crpix=((nx + 1) / 2, (ny + 1) / 2),
            scale=scale,
            rotation=sign * spec.rotation,
            shape=(ny, nx),
        )
        for band in spec.bands:
            grids[band] = grid
    return grids


def _tile_centres(n_tiles: int, tile_size: int, profile: Profile, field: FieldSettings) -> list[tuple[float, float]]:
    """Tiles side by side, 8 to a row, 20" apart, around the field centre."""
    side = (tile_size * profile.pixel_scale + 20) / 3600
    ra0, dec0 = field.ra, field.dec
    out = []
    for t in range(n_tiles):
        row, col = divmod(t, 8)
        dec = dec0 + row * side
        out.append((ra0 + col * side / math.cos(math.radians(dec)), dec))
    return out


def _draw_ebv(rng: np.random.Generator, n: int, settings: SimSettings) -> np.ndarray:
    return np.clip(settings.ebv.median * np.exp(rng.normal(0, settings.ebv.sigma_ln, n)), 0, 1.0)


def _near_targets(tiles, xs, ys, t_tile, tx, ty, reach: float) -> np.ndarray:
    """Which objects lie within ``reach`` pixels (box distance) of a target on their tile."""
    from scipy.spatial import cKDTree

    keep = np.zeros(tiles.size, bool)
    for k in np.unique(t_tile):
        here = tiles == k
        if here.any():
            tree = cKDTree(np.column_stack([tx[t_tile == k], ty[t_tile == k]]))
            dist, _ = tree.query(np.column_stack([xs[here], ys[here]]), p=np.inf)
            keep[here] = dist < reach
    return keep


def build_sky(profile: Profile, n: int, seed: int, tile_size: int, settings: SimSettings) -> Sky:
    """Draw targets, neighbours, pairs and stars and place them on tiles (no pixels yet)."""
    from mmzcli.sim.population import (
        Galaxies,
        PopulationSampler,
        draw_stars,
        star_density,
        star_fluxes,
    )
    from mmzcli.sim.sed import kpc_per_arcsec, photometry_grid

    rng = np.random.default_rng([seed, 1])
    filters = tuple(b.filter for b in profile.bands)
    ref = profile.band_index(profile.reference_band)
    grid = photometry_grid(filters)
    sampler = PopulationSampler(grid, ref, sed=settings.sed)
    spec = settings.spec

    # 1. the spectroscopic targets, stratified by magnitude where the profile asks for it
    bins = spec.mag_fractions or ((spec.mag_limit, 1.0),)
    counts = np.diff(np.round(np.cumsum([0] + [f for _, f in bins]) * n).astype(int))
    parts, lo = [], spec.mag_bright
    for (hi, _), count in zip(bins, counts):
        if count:
            parts.append(sampler.draw(rng, int(count), lo, min(hi, spec.mag_limit), z_max=spec.z_max)[0])
        lo = hi
    targets = Galaxies.concat(parts).take(rng.permutation(n))

    # 2. the layout: targets on a jittered grid, tiles as needed
    spacing = settings.layout.target_spacing * profile.cutout_size
    margin = profile.cutout_size / 2 + 2
    per_side = max(int((tile_size - 2 * margin) // spacing), 1)
    per_tile = per_side**2
    n_tiles = math.ceil(n / per_tile)
    slot = np.arange(n) % per_tile
    tx = margin + (slot % per_side + 0.5) * spacing + rng.uniform(-0.15, 0.15, n) * spacing
    ty = margin + (slot // per_side + 0.5) * spacing + rng.uniform(-0.15, 0.15, n) * spacing
    t_tile = np.arange(n) // per_tile

    # 3. neighbours at the survey's real surface density, pairs, stars
    area = n_tiles * (tile_size * profile.pixel_scale / 3600) ** 2  # deg^2
    m_faint = settings.neighbours.mag_limit
    _, density = sampler.draw(np.random.default_rng([seed, 2]), 64, 10.0, m_faint)
    n_nb = rng.poisson(density * area)
    neighbours, _ = sampler.draw(rng, max(n_nb, 1), 10.0, m_faint)
    neighbours = neighbours.take(slice(0, n_nb))
    nb_tile = rng.integers(0, n_tiles, n_nb)
    nx_, ny_ = rng.uniform(0, tile_size, n_nb), rng.uniform(0, tile_size, n_nb)
    has_pair = rng.uniform(0, 1, n) < settings.neighbours.pair_fraction
    n_pair = int(has_pair.sum())
    pairs, _ = sampler.draw(rng, max(n_pair, 1), spec.mag_bright, m_faint)
    pairs = pairs.take(slice(0, n_pair))
    host = np.flatnonzero(has_pair)
    z_new = targets.z[host] + rng.normal(0, 0.001, n_pair) * (1 + targets.z[host])
    moved = kpc_per_arcsec(pairs.z) / kpc_per_arcsec(z_new)  # same physical size at the host's z
    pairs.r_bulge, pairs.r_disk, pairs.z = pairs.r_bulge * moved, pairs.r_disk * moved, z_new
    pairs.abs_mag = targets.abs_mag[host] + rng.uniform(0.3, 2.5, n_pair)  # a fainter companion
    sep = rng.uniform(1.0, 4.0, n_pair) / profile.pixel_scale
    phi = rng.uniform(0, 2 * np.pi, n_pair)
    px, py = tx[host] + sep * np.cos(phi), ty[host] + sep * np.sin(phi)
    stars = settings.stars
    n_star = rng.poisson(star_density(m_faint, stars.density_at_20, m_bright=stars.mag_bright) * area)
    star_mag, star_temp = draw_stars(rng, n_star, stars.mag_bright, m_faint)

    # only what can fall in a target's cutout is kept: tiles with fewer targets cost less
    reach = profile.cutout_size / 2 + 16
    keep = _near_targets(nb_tile, nx_, ny_, t_tile, tx, ty, reach)
    neighbours, nb_tile, nx_, ny_ = neighbours.take(keep), nb_tile[keep], nx_[keep], ny_[keep]
    n_nb = int(keep.sum())
    star_tile = rng.integers(0, n_tiles, n_star)
    star_x, star_y = rng.uniform(0, tile_size, n_star), rng.uniform(0, tile_size, n_star)
    keep = _near_targets(star_tile, star_x, star_y, t_tile, tx, ty, reach)
    star_mag, star_temp, star_tile, star_x, star_y = (a[keep] for a in (star_mag, star_temp, star_tile, star_x, star_y))
    n_star = int(keep.sum())

    # 4. one table, targets first (their row index + 1 is their ID)
    galaxies = Galaxies.concat([targets, pairs, neighbours])
    n_gal = len(galaxies)
    ebv = _draw_ebv(rng, n_gal + n_star, settings)
    bulge, disk, knots = galaxies.fluxes(grid, ebv[:n_gal])
    star_flux = star_fluxes(filters, star_temp, ref, star_mag, ebv[n_gal:])
    bulge = np.vstack([bulge, star_flux])
    disk = np.vstack([disk, np.zeros_like(star_flux)])
    knots = np.vstack([knots, np.zeros_like(star_flux)])
    x = np.concatenate([tx, px, nx_, star_x])
    y = np.concatenate([ty, py, ny_, star_y])
    tile = np.concatenate([t_tile, t_tile[host], nb_tile, star_tile])
    kind = np.concatenate([galaxies.kind, np.full(n_star, Kind.STAR, np.int16)])
    role = np.concatenate(
        [
            np.full(n, Role.TARGET),
            np.full(n_pair, Role.COMPANION),
            np.full(n_nb, Role.NEIGHBOUR),
            np.full(n_star, Role.STAR),
        ]
    ).astype(np.int16)
    pad = np.zeros(n_star)
    table: dict[str, np.ndarray] = {
        "ID": np.arange(1, n_gal + n_star + 1, dtype=np.int64),
        "ROLE": role,  # Role
        "KIND": kind,  # population.Kind
        "HOST_ID": np.concatenate([np.zeros(n, np.int64), host + 1, np.zeros(n_nb + n_star, np.int64)]),
        "TILE": tile.astype(np.int32),
        "X": x,
        "Y": y,
        "Z": np.concatenate([galaxies.z, pad]),
        "ABS_MAG_R": np.concatenate([galaxies.abs_mag, pad]),
        "BULGE_FRAC": np.concatenate([galaxies.bulge_frac, np.ones(n_star)]),
        "T_BULGE": np.concatenate([galaxies.t_bulge, pad]),
        "T_DISK": np.concatenate([galaxies.t_disk, pad]),
        "BURST": np.concatenate([galaxies.burst, pad]),
        "BASIS_BULGE": np.concatenate([galaxies.basis_bulge.sum(axis=1), pad]),
        "BASIS_DISK": np.concatenate([galaxies.basis_disk.sum(axis=1), pad]),
        "EBV_BULGE": np.concatenate([galaxies.ebv_bulge, pad]),
        "EBV_DISK": np.concatenate([galaxies.ebv_disk, pad]),
        "R_BULGE": np.concatenate([galaxies.r_bulge, pad]),
        "R_DISK": np.concatenate([galaxies.r_disk, pad]),
        "Q_BULGE": np.concatenate([galaxies.q_bulge, np.ones(n_star)]),
        "Q_DISK": np.concatenate([galaxies.q_disk, np.ones(n_star)]),
        "ANGLE": np.concatenate([galaxies.angle, pad]),
        "TEMPERATURE": np.concatenate([np.zeros(n_gal), star_temp]),
        "EBV": ebv,
    }
    return Sky(table=table, bulge=bulge, disk=disk, n_tiles=n_tiles, knots=knots)


# ----------------------------------------------------------------------------- injection


def injected_sky(
    profile: Profile, table: dict[str, np.ndarray], seed: int, tile_size: int, settings: SimSettings
) -> Sky:
    """Objects of a user catalogue, each given the template mix and dust that best fit its colours.

    Needs Z and MAG_<band> for every band (observed AB, Milky Way dust included);
    optional: RA/DEC (one tile around them, see ``centred_on_catalog``; placed by the
    targets' layout otherwise), R_HALF [arcsec],
    BULGE_FRAC, EBV; shapes and sizes not given come from galaxies of the population.
    The bulge gets an older SED than the fitted one, and both components are rescaled
    so that, as in DES Balrog, the rendered object has the catalogue's fluxes exactly,
    with a physically plausible colour gradient.
    """
    from mmzcli.sim.population import PopulationSampler
    from mmzcli.sim.sed import BASIS, TEMPLATES, photometry_grid

    n = len(table["Z"])
    rng = np.random.default_rng([seed, 3])
    filters = tuple(b.filter for b in profile.bands)
    grid = photometry_grid(filters)
    ebv = table["EBV"] if "EBV" in table else _draw_ebv(rng, n, settings)
    mags = np.stack([table[f"MAG_{b}"] for b in profile.band_names], axis=1)
    # a grid search over (template index, dust): a handful of array operations for all objects
    t_axis = np.linspace(0, len(TEMPLATES) - 1, 33)
    e_axis = np.linspace(0, 0.5, 11)
    best, best_chi = np.zeros((n, 2)), np.full(n, np.inf)
    for t in t_axis:
        for e in e_axis:
            rel = grid.relative_fluxes(np.full(n, t), table["Z"], np.full(n, e), ebv)
            model = -2.5 * np.log10(rel)
            resid = mags - model
            resid = resid - np.nanmedian(resid, axis=1, keepdims=True)
            chi = np.nansum(resid**2, axis=1)
            better = chi < best_chi
            best[better], best_chi[better] = (t, e), chi[better]
    ref = profile.band_index(profile.reference_band)
    sampler = PopulationSampler(grid, ref, sed=settings.sed)
    # shapes from the population at the catalogue's magnitudes: draw, then overwrite the SED
    shapes, _ = sampler.draw(rng, n, 10.0, max(float(np.nanmax(mags[:, ref])), 12.0) + 3)
    gal = shapes.take(rng.permutation(n))
    gal.z = np.asarray(table["Z"], float)
    gal.bulge_frac = np.clip(np.asarray(table.get("BULGE_FRAC", gal.bulge_frac), float), 0, 1)
    gal.t_disk, gal.ebv_disk, gal.burst = best[:, 0], best[:, 1], np.zeros(n)
    gal.t_bulge, gal.ebv_bulge = np.minimum(best[:, 0], 0.4), np.zeros(n)
    gal.basis_bulge = gal.basis_disk = np.zeros((n, len(BASIS)))
    if "R_HALF" in table:
        gal.r_disk = np.asarray(table["R_HALF"], float)
        gal.r_bulge = 0.5 * gal.r_disk
    bulge, disk, _ = gal.fluxes(grid, ebv)  # no burst, so no clumps
    # rescale both components so that the total matches the catalogue's magnitudes exactly
    total = bulge + disk
    want = 10 ** (-0.4 * mags)
    factor = np.where(np.isfinite(want), want / total, 0.0)
    bulge, disk = bulge * factor, disk * factor
    centred = centred_on_catalog(profile, table, tile_size, settings)
    sky = _layout_given(profile, table, n, tile_size, centred, bulge, disk)
    sky.table.update(
        {
            "Z": gal.z,
            "ABS_MAG_R": np.full(n, np.nan),
            "BULGE_FRAC": gal.bulge_frac,
            "T_BULGE": gal.t_bulge,
            "T_DISK": gal.t_disk,
            "BURST": gal.burst,
            "BASIS_BULGE": gal.basis_bulge.sum(axis=1),
            "BASIS_DISK": gal.basis_disk.sum(axis=1),
            "EBV_BULGE": gal.ebv_bulge,
            "EBV_DISK": gal.ebv_disk,
            "R_BULGE": gal.r_bulge,
            "R_DISK": gal.r_disk,
            "Q_BULGE": gal.q_bulge,
            "Q_DISK": gal.q_disk,
            "ANGLE": gal.angle,
            "TEMPERATURE": np.zeros(n),
            "EBV": np.asarray(ebv, float),
            "KIND": np.full(n, Kind.BLUE, np.int16),
        }
    )
    return sky


def _read_catalog(path: Path, profile: Profile) -> dict[str, np.ndarray]:
    from astropy.table import Table

    path = Path(path)
    try:
        data = Table.read(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the injection catalogue ({exc}); give a FITS table") from None
    cols = {c.upper(): c for c in data.colnames}
    needed = ["Z"] + [f"MAG_{b}".upper() for b in profile.band_names]
    missing = [c for c in needed if c not in cols]
    if missing:
        raise InputError(
            f"{path}: injection catalogue lacks column '{missing[0]}' "
            f"(needs Z and MAG_<band> for bands {', '.join(profile.band_names)})"
        )
    if len(data) == 0:
        raise InputError(f"{path}: the injection catalogue has no rows")
    out = {}
    for name in ["Z", "RA", "DEC", "R_HALF", "BULGE_FRAC", "EBV"] + [f"MAG_{b}" for b in profile.band_names]:
        if name.upper() in cols:
            out[name] = np.asarray(data[cols[name.upper()]], dtype=float)
    if not np.all(np.isfinite(out["Z"]) & (out["Z"] >= 0)):
        raise InputError(f"{path}: column Z must be finite and >= 0")
    if ("RA" in out) != ("DEC" in out):
        raise InputError(f"{path}: give both RA and DEC, or neither")
    return out


def centred_on_catalog(
    profile: Profile, table: dict[str, np.ndarray], tile_size: int, settings: SimSettings
) -> SimSettings:
    """The settings with the field centred on an injection catalogue's RA/DEC (unchanged without them).

    Raises
    ------
    InputError
        The catalogue spans more than one tile.
    """
    if "RA" not in table:
        return settings
    ra, dec = table["RA"], table["DEC"]
    margin = profile.cutout_size / 2 + 2
    extent = (np.ptp(ra) * math.cos(math.radians(float(np.mean(dec)))) * 3600, np.ptp(dec) * 3600)
    if max(extent) / profile.pixel_scale > tile_size - 2 * margin:
        raise InputError(
            f'the injection catalogue spans {max(extent):.0f}", more than one tile of '
            f"{tile_size} px: use a larger --tile-size or inject in parts"
        )
    centre = FieldSettings(ra=float((ra.min() + ra.max()) / 2), dec=float((dec.min() + dec.max()) / 2))
    return dataclasses.replace(settings, field=centre)


def _layout_given(
    profile: Profile,
    table: dict[str, np.ndarray],
    n: int,
    tile_size: int,
    settings: SimSettings,
    bulge: np.ndarray,
    disk: np.ndarray,
) -> Sky:
    """Injected objects: at their RA/DEC on a single tile around the field centre, or on the target layout."""
    if "RA" in table:
        centre = _tile_centres(1, tile_size, profile, settings.field)[0]
        grid = _band_grids(profile, settings, 0, tile_size, centre)[None]
        x, y = grid.to_pixel(table["RA"], table["DEC"])
        tile = np.zeros(n, np.int32)
    else:
        spacing = settings.layout.target_spacing * profile.cutout_size
        margin = profile.cutout_size / 2 + 2
        per_side = max(int((tile_size - 2 * margin) // spacing), 1)
        slot = np.arange(n) % (per_side**2)
        x = margin + (slot % per_side + 0.5) * spacing
        y = margin + (slot // per_side + 0.5) * spacing
        tile = (np.arange(n) // per_side**2).astype(np.int32)
    t: dict[str, np.ndarray] = {
        "ID": np.arange(1, n + 1, dtype=np.int64),
        "ROLE": np.full(n, Role.TARGET, np.int16),
        "HOST_ID": np.zeros(n, np.int64),
        "TILE": tile,
        "X": np.asarray(x, float),
        "Y": np.asarray(y, float),
    }
    return Sky(table=t, bulge=bulge, disk=disk, n_tiles=int(tile.max()) + 1)


# ----------------------------------------------------------------------------- catalogues


def observe(
    profile: Profile,
    sky: Sky,
    imaging: list,
    rows: np.ndarray,
    covered: np.ndarray,
    rng: np.random.Generator,
    blend_leak: float = 0.0,
) -> dict[str, np.ndarray]:
    """Catalogue photometry of ``rows``: noisy AB magnitudes and errors from the image noise model.

    The flux error of an object of half-light radius r seen through a PSF of width
    σ_psf is the point-source one scaled by sqrt(1 + (r/1.18)^2/σ_psf^2) (Gaussian
    approximation of model-fit photometry), plus the object's Poisson noise.  A fraction
    ``blend_leak`` of the light that neighbours put under the object's profile is wrongly
    added to it, as by an imperfect deblender.  Fluxes under 1σ are reported at 1σ (an
    upper limit); bands not covered are NaN.
    """
    out = {}
    t = sky.table
    total = sky.bulge + sky.disk
    r_half = np.where(
        total > 0,
        (sky.bulge * t["R_BULGE"][:, None] + sky.disk * t["R_DISK"][:, None]) / np.maximum(total, 1e-300),
        0.0,
    )  # [N, B], arcsec
    leak = _blend_light(profile, t, rows, total, r_half, blend_leak)
    for b, (band, img) in enumerate(zip(profile.bands, imaging)):
        sigma, gain, neff = img.noise(profile.pixel_scale)
        to_img = 10 ** (0.4 * band.zeropoint)
        f = (total[rows, b] + leak[:, b]) * to_img
        s_psf = band.psf_fwhm / 2.3548
        err = np.sqrt(sigma**2 * neff * (1 + (r_half[rows, b] / 1.18) ** 2 / s_psf**2) + np.clip(f, 0, None) / gain)
        obs = np.maximum(f + rng.standard_normal(f.size) * err, err)
        mag = band.zeropoint - 2.5 * np.log10(obs)
        magerr = 1.0857 * err / obs
        ok = covered[rows, b]
        out[f"MAG_{band.name}"] = np.where(ok, mag, np.nan).astype(np.float32)
        out[f"MAGERR_{band.name}"] = np.where(ok, magerr, np.nan).astype(np.float32)
    return out


def _blend_light(
    profile: Profile, t: dict, rows: np.ndarray, total: np.ndarray, r_half: np.ndarray, leak: float
) -> np.ndarray:
    """Neighbour light [maggies, rows x bands] that profile-weighted photometry picks up.

    For Gaussian profiles of widths σ_t, σ_n at distance d the overlap is
    2σ_t²/(σ_t²+σ_n²) exp(-d²/(2(σ_t²+σ_n²))) of the neighbour's flux.
    """
    from scipy.spatial import cKDTree

    out = np.zeros((rows.size, total.shape[1]))
    if leak <= 0 or rows.size == 0:
        return out
    fwhm = np.array([b.psf_fwhm for b in profile.bands])
    sig2 = (fwhm / 2.3548) ** 2 + (r_half / 1.18) ** 2  # [N, B], arcsec^2
    pos = np.column_stack([t["X"], t["Y"], t["TILE"] * 1e6]) * profile.pixel_scale
    tree = cKDTree(pos)
    reach = 4 * float(fwhm.max()) + 10.0
    for i, row in enumerate(rows):
        for j in tree.query_ball_point(pos[row], reach):
            if j == row:
                continue
            d2 = np.sum((pos[row] - pos[j]) ** 2)
            s2 = sig2[row] + sig2[j]
            out[i] += leak * total[j] * 2 * sig2[row] / s2 * np.exp(-d2 / (2 * s2))
    return out


def spec_redshifts(
    z_true: np.ndarray, spec: SpecSettings, rng: np.random.Generator, wrong: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Measured redshifts: small Gaussian errors, and a fraction replaced by another galaxy's z.

    A wrong redshift in a real survey is a misidentified line or a blended spectrum: a
    plausible redshift of the sample, not a uniform draw.
    """
    z_spec = z_true + rng.normal(0, spec.z_error, z_true.size) * (1 + z_true)
    bad = rng.uniform(0, 1, z_true.size) < (spec.wrong_fraction if wrong else 0.0)
    z_spec[bad] = rng.permutation(z_true)[: int(bad.sum())]
    return np.clip(z_spec, 0, None), bad


def spectroscopic_catalog(
    profile: str | Profile, n: int, seed: int = 0, tile_size: int = 2048
) -> dict[str, np.ndarray]:
    """The spectroscopic sample's catalogue (with Z_TRUE) without rendering any pixel.

    The same population, layout and noise model as ``simulate_survey``, every band
    covered: for validation of the colour-redshift relation on large samples.  Besides
    the noisy ``MAG_<b>``, ``TRUE_MAG_<b>`` holds each target's noiseless total magnitude
    (Milky Way dust included; ``MAG_<b>`` of truth.fits).
    """
    prof = load_profile(profile) if isinstance(profile, str) else profile
    settings = SimSettings.from_profile(prof)
    sky = build_sky(prof, n, seed, tile_size, settings)
    targets = np.flatnonzero(sky.table["ROLE"] == Role.TARGET)
    covered = np.ones((len(sky.table["ID"]), len(prof.bands)), bool)
    rng = np.random.default_rng([seed, 5])
    z_spec, _ = spec_redshifts(sky.table["Z"][targets], settings.spec, rng)
    out = observe(prof, sky, _imaging(prof, settings), targets, covered, rng, settings.neighbours.blend_leak)
    out.update(
        Z_SPEC=z_spec, Z_TRUE=sky.table["Z"][targets], EBV=sky.table["EBV"][targets], KIND=sky.table["KIND"][targets]
    )
    true_mag = -2.5 * np.log10(np.clip(sky.bulge[targets] + sky.disk[targets], 1e-300, None))
    out.update({f"TRUE_MAG_{band.name}": true_mag[:, b] for b, band in enumerate(prof.bands)})
    return out


def _write_table(path: Path, columns: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """A FITS binary table without a date (reproducible bytes); ``path`` is an ``atomic_path``."""
    from astropy.io import fits

    cols = []
    for name, values in columns.items():
        values = np.asarray(values)
        fmt = {
            "i": "K" if values.dtype.itemsize == 8 else ("J" if values.dtype.itemsize == 4 else "I"),
            "f": "D" if values.dtype.itemsize == 8 else "E",
            "b": "L",
        }[values.dtype.kind]
        cols.append(fits.Column(name=name, format=fmt, array=values))
    hdu = fits.BinTableHDU.from_columns(cols)
    for key, value in meta.items():
        hdu.header[key] = value
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)


# ----------------------------------------------------------------------------- entry point


def _check_project(project: Path, overwrite: bool) -> None:
    project = Path(project)
    existing = [p for p in (project / SPECZ_NAME, project / TRUTH_NAME, project / TILES_DIR) if p.exists()]
    if existing and not overwrite:
        raise InputError(
            f"{project}: already holds a simulation ({existing[0].name}); "
            f"pass --overwrite to replace it, or choose another --project"
        )
    try:
        project.mkdir(parents=True, exist_ok=True)
        # left by a killed run: the tiles' folder, and the tables' atomic_path (.NAME.PID.tmpSUFFIX)
        leftovers = [f".{TILES_DIR}.*.tmp", *(f".{name}.*.tmp{Path(name).suffix}" for name in (SPECZ_NAME, TRUTH_NAME))]
        for stale in [path for pattern in leftovers for path in project.glob(pattern)]:
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink()
        probe = project / f".mmz-write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(
            f"{project}: cannot write the project directory ({exc.strerror}); choose a writable --project"
        ) from None


def simulate_survey(
    profile: str,
    n: int,
    project: Path,
    *,
    seed: int = 0,
    tile_size: int = 2048,
    jobs: int = 1,
    catalog: Path | None = None,
    overwrite: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Simulate a survey into ``project``; returns a summary (counts, tiles, timings).

    Raises
    ------
    ConfigError
        The profile or its ``simulation:`` section is malformed.
    InputError
        N <= 0, an unwritable or already simulated project, or a bad injection catalogue.
    """
    import time

    from mmzcli.project import write_config
    from mmzcli.sim.render import render_tile

    start = time.perf_counter()
    prof = load_profile(profile)
    if catalog is None and (not isinstance(n, (int, np.integer)) or n <= 0):
        raise InputError(f"-n {n}: the number of galaxies must be a positive integer")
    if tile_size < 2 * prof.cutout_size:
        raise InputError(
            f"--tile-size {tile_size}: tiles must be at least two cutouts ({2 * prof.cutout_size} px) wide"
        )
    if jobs < 1:
        raise InputError(f"-j {jobs}: the number of processes must be at least 1")
    settings = SimSettings.from_profile(prof)
    injected = _read_catalog(catalog, prof) if catalog is not None else None
    if injected is not None:
        settings = centred_on_catalog(prof, injected, tile_size, settings)
    project = Path(project)
    _check_project(project, overwrite)

    sky = (
        injected_sky(prof, injected, seed, tile_size, settings)
        if injected is not None
        else build_sky(prof, n, seed, tile_size, settings)
    )
    n_targets = int(np.sum(sky.table["ROLE"] == Role.TARGET))
    imaging = _imaging(prof, settings)
    t = sky.table
    centres = _tile_centres(sky.n_tiles, tile_size, prof, settings.field)
    main_grid = [_band_grids(prof, settings, k, tile_size, c)[None] for k, c in enumerate(centres)]
    ra, dec = np.zeros(len(t["ID"])), np.zeros(len(t["ID"]))
    for k, grid in enumerate(main_grid):
        sel = t["TILE"] == k
        ra[sel], dec[sel] = grid.wcs().all_pix2world(t["X"][sel], t["Y"][sel], 0)
    t["RA"], t["DEC"] = ra, dec

    # faint neighbours are drawn as one component (their colour gradient is invisible)
    ref = prof.band_index(prof.reference_band)
    sigma, _, neff = imaging[ref].noise(prof.pixel_scale)
    snr_ref = (sky.bulge[:, ref] + sky.disk[:, ref]) * 10 ** (0.4 * prof.bands[ref].zeropoint) / (sigma * np.sqrt(neff))
    simple = (t["ROLE"] == Role.NEIGHBOUR) & (snr_ref < SIMPLE_SNR)

    tiles_tmp = project / f".{TILES_DIR}.{os.getpid()}.tmp"
    shutil.rmtree(tiles_tmp, ignore_errors=True)
    tiles_tmp.mkdir(parents=True)
    tasks, covered = _tile_tasks(prof, settings, sky, imaging, centres, tile_size, seed, simple, tiles_tmp)

    render_start = time.perf_counter()
    drawn = _run_tasks(tasks, render_tile, jobs, console)
    render_s = time.perf_counter() - render_start

    # catalogues: truth for every object, the spectroscopic sample for the targets
    rng = np.random.default_rng([seed, 5])
    truth = dict(t)
    for b, band in enumerate(prof.bands):
        total = sky.bulge[:, b] + sky.disk[:, b]
        truth[f"MAG_{band.name}"] = np.where(total > 0, -2.5 * np.log10(np.maximum(total, 1e-300)), np.inf)
        truth[f"BULGE_MAG_{band.name}"] = -2.5 * np.log10(np.maximum(sky.bulge[:, b], 1e-300))
        truth[f"IN_{band.name}"] = covered[:, b]
    targets = np.flatnonzero(t["ROLE"] == Role.TARGET)
    z_spec, wrong = spec_redshifts(t["Z"][targets], settings.spec, rng, wrong=catalog is None)
    truth["Z_SPEC"] = np.full(len(ra), np.nan)
    truth["Z_SPEC"][targets] = z_spec
    truth["WRONG_Z"] = np.zeros(len(ra), bool)
    truth["WRONG_Z"][targets] = wrong
    specz = {
        "ID": t["ID"][targets],
        "RA": ra[targets],
        "DEC": dec[targets],
        "Z_SPEC": z_spec.astype(np.float32),
        "EBV": t["EBV"][targets].astype(np.float32),
        **observe(prof, sky, imaging, targets, covered, rng, settings.neighbours.blend_leak),
    }
    meta = {"SURVEY": prof.name, "SIMSEED": seed, "ORIGIN": "mmz simulate"}
    with atomic_path(project / SPECZ_NAME) as specz_tmp, atomic_path(project / TRUTH_NAME) as truth_tmp:
        _write_table(specz_tmp, specz, meta)
        _write_table(truth_tmp, truth, meta)
        # commit: the old catalogues go first and specz.fits comes last (the outer block ends
        # after the inner one), so that a run killed in between never leaves a spectroscopic
        # sample beside tiles it does not describe
        for name in (SPECZ_NAME, TRUTH_NAME):
            (project / name).unlink(missing_ok=True)
        final_tiles = project / TILES_DIR
        if final_tiles.exists():
            shutil.rmtree(final_tiles)
        os.replace(tiles_tmp, final_tiles)
    write_config(
        project,
        prof,
        tiles=f"{TILES_DIR}/*.fits",
        catalog=SPECZ_NAME,
        columns={
            "id": "ID",
            "ra": "RA",
            "dec": "DEC",
            "z_spec": "Z_SPEC",
            "ebv": "EBV",
            "mag_ref": f"MAG_{prof.reference_band}",
        },
    )
    elapsed = time.perf_counter() - start
    summary = {
        "profile": prof.name,
        "targets": n_targets,
        "objects": len(ra),
        "tiles": sky.n_tiles,
        "images": len(tasks),
        "stamps_drawn": drawn,
        "seconds": round(elapsed, 2),
        "render_seconds": round(render_s, 2),
        "galaxies_per_s": round(n_targets / max(elapsed, 1e-9), 1),
        "project": str(project),
    }
    if console is not None:
        console.print(
            f"simulated {n_targets} spectroscopic targets ({len(ra)} objects with neighbours "
            f"and stars) on {sky.n_tiles} tile(s) x {len(prof.bands)} bands in {elapsed:.1f} s "
            f"-> {project}"
        )
    return summary


def _tile_tasks(
    prof: Profile,
    settings: SimSettings,
    sky: Sky,
    imaging: list[BandImaging],
    centres: list[tuple[float, float]],
    tile_size: int,
    seed: int,
    simple: np.ndarray,
    folder: Path,
) -> tuple[list[TileTask], np.ndarray]:
    """One rendering task per tile and band, and which band covers which object [N, B].

    The coverage matters where a band has its own, smaller grid (hsc9's NIR: ~70% of a tile).
    """
    from mmzcli.sim.render import TileTask

    t = sky.table
    covered = np.ones((len(t["ID"]), len(prof.bands)), dtype=bool)
    n_knots = settings.morphology.knots
    tasks = []
    for k, centre in enumerate(centres):
        grids = _band_grids(prof, settings, k, tile_size, centre)
        sel = np.flatnonzero(t["TILE"] == k)
        for b, (band, img) in enumerate(zip(prof.bands, imaging)):
            grid = grids[band.name]
            x, y = grid.to_pixel(t["RA"][sel], t["DEC"][sel])
            ny, nx = grid.shape
            covered[sel, b] = (x >= 0) & (x <= nx - 1) & (y >= 0) & (y <= ny - 1)
            pad = 64  # objects just outside the image still spill light into it
            near = (x > -pad) & (x < nx + pad) & (y > -pad) & (y < ny + pad)
            rows = sel[near]
            to_img = 10 ** (0.4 * band.zeropoint)
            header = {
                "FILTER": (band.name, "band name in the mmz profile"),
                "FILTID": (band.filter, "filter curve: sedpy id or speclite:<name>"),
                "MAGZERO": (band.zeropoint, "AB mag of 1 image unit"),
                "SEEING": (band.psf_fwhm, "PSF FWHM, arcsec (Moffat)"),
                "PSFBETA": (img.beta, "Moffat beta"),
                "EXPTIME": (img.exptime, "s, nominal"),
                "BUNIT": (
                    "nanomaggy" if abs(band.zeropoint - 22.5) < 1e-9 else "count",
                    "mag = MAGZERO - 2.5 log10(value)",
                ),
                "DEPTH5": (band.depth, "5-sigma PSF depth, AB"),
                "SKYSUB": (True, "background subtracted"),
                "TILE": (k, "tile number"),
                "SURVEY": (prof.name, "mmz profile"),
                "ORIGIN": ("mmz simulate", "simulated image"),
                "SIMSEED": (seed, ""),
            }
            tasks.append(
                TileTask(
                    path=folder / f"tile-{k:04d}-{band.name}.fits",
                    band=img,
                    grid=grid,
                    seed=int(np.random.SeedSequence([seed, 4, k, b]).generate_state(1)[0]),
                    x=x[near],
                    y=y[near],
                    flux_bulge=sky.bulge[rows, b] * to_img,
                    flux_disk=sky.disk[rows, b] * to_img,
                    flux_knots=(0 if sky.knots is None or not n_knots else sky.knots[rows, b]) * to_img,
                    n_knots=n_knots,
                    knot_seeds=(t["ID"][rows] * 1_000_003 + seed) % 2**31,
                    r_bulge=t["R_BULGE"][rows],
                    r_disk=t["R_DISK"][rows],
                    q_bulge=t["Q_BULGE"][rows],
                    q_disk=t["Q_DISK"][rows],
                    angle=t["ANGLE"][rows],
                    is_star=t["KIND"][rows] == Kind.STAR,
                    simple=simple[rows],
                    header=header,
                )
            )
    return tasks, covered


def _run_tasks(
    tasks: list[TileTask], fn: Callable[[TileTask], tuple[str, int]], jobs: int, console: Console | None
) -> int:
    """Run the tile tasks, in a process pool when jobs > 1, with a progress bar on ``console``."""
    from mmzcli.progress import progress_bar

    drawn = 0
    with progress_bar(console, "images") as progress:
        bar = progress.add_task("rendering", total=len(tasks))
        results: Iterator[tuple[str, int]]
        if jobs == 1 or len(tasks) == 1:
            results = map(fn, tasks)
            pool = None
        else:
            import multiprocessing as mp

            pool = mp.get_context("fork" if os.name == "posix" else "spawn").Pool(min(jobs, len(tasks)))
            # the heaviest images first, so that the pool stays busy to the end
            order = sorted(range(len(tasks)), key=lambda i: -tasks[i].x.size)
            results = pool.imap_unordered(fn, [tasks[i] for i in order])
        try:
            for _, count in results:
                drawn += count
                progress.advance(bar)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    return drawn
