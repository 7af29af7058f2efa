"""Galaxy and star populations for ``mmz simulate``: who is in the sky, and who got a spectrum.

One universe for every survey; only the selection differs.  Red (quiescent) and blue
(star-forming) galaxies follow Schechter luminosity functions in rest-frame r
(Blanton et al. 2003 at z≈0.1, split by colour as in Baldry et al. 2004), with the
redshift evolution of M* and φ* measured by Faber et al. (2007) up to z≈1 and held
to the z≈2-3.5 values of Marchesini et al. (2007) beyond.  Each galaxy is a bulge plus
a disk with their own SEDs (sim.sed): a luminosity-dependent red sequence (luminous
quiescent galaxies are the reddest and the tightest in colour) and type- and
luminosity-dependent internal dust.  Sizes follow Shen et al. (2003) with the
(1+z) evolution of van der Wel et al. (2014); angles use the Planck18 angular-diameter
distance.  Stars are black bodies with a power-law number-magnitude relation.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from mmzcli.sim.sed import BASIS, TEMPLATES, PhotometryGrid, distance_modulus, kpc_per_arcsec

# Schechter parameters, rest-frame r, h = 0.7, AB: (M*, alpha, phi* [Mpc^-3], Q [mag/z], P [dex/z])
LUMINOSITY_FUNCTIONS = {
    "red": {"m_star": -21.3, "alpha": -0.6, "phi_star": 2.5e-3, "q": 1.0, "p": -0.40},
    "blue": {"m_star": -20.9, "alpha": -1.3, "phi_star": 3.5e-3, "q": 1.3, "p": -0.15},
}
Z_EVOLUTION_STOP = 2.0  # M* and phi* stop evolving here (Marchesini+07 values beyond)
Z_MAX = 6.0
M_BRIGHT = -25.5


class Kind(IntEnum):
    """The KIND column of the truth table (int16): what an object is."""

    RED = 0  # quiescent galaxy
    BLUE = 1  # star-forming galaxy
    STAR = 2


@dataclass
class Galaxies:
    """Columns of a drawn galaxy sample (one row per galaxy)."""

    kind: np.ndarray  # Kind.RED or Kind.BLUE
    z: np.ndarray
    abs_mag: np.ndarray  # rest-frame r, internal dust included
    bulge_frac: np.ndarray  # B/T in rest-frame r light
    t_bulge: np.ndarray  # template index along sed.TEMPLATES
    t_disk: np.ndarray
    burst: np.ndarray  # fraction of the disk's rest-frame r light from a young burst (the SB template)
    basis_bulge: np.ndarray  # [N, len(sed.BASIS)]: shares of the bulge's r light from kcorrect's basis spectra
    basis_disk: np.ndarray
    ebv_bulge: np.ndarray
    ebv_disk: np.ndarray
    r_bulge: np.ndarray  # half-light radius, arcsec
    r_disk: np.ndarray
    q_bulge: np.ndarray  # axis ratios
    q_disk: np.ndarray
    angle: np.ndarray  # position angle, radians

    def __len__(self) -> int:
        return self.z.size

    def take(self, index: np.ndarray | slice) -> Galaxies:
        return Galaxies(**{k: v[index] for k, v in self.__dict__.items()})

    @staticmethod
    def concat(parts: list[Galaxies]) -> Galaxies:
        return Galaxies(**{k: np.concatenate([getattr(p, k) for p in parts]) for k in parts[0].__dict__})

    def fluxes(self, grid: PhotometryGrid, ebv_mw: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """AB maggies (flux in units of 3631 Jy) of bulge, disk and the disk's young burst (part of the
        disk, drawn as clumps) in every band, [N, B] each."""
        scale = 10 ** (-0.4 * (self.abs_mag + distance_modulus(self.z)))[:, None]
        bulge = grid.relative_fluxes(self.t_bulge, self.z, self.ebv_bulge, ebv_mw, self.basis_bulge)
        disk = grid.relative_fluxes(self.t_disk, self.z, self.ebv_disk, ebv_mw, self.basis_disk)
        young = grid.relative_fluxes(np.full(self.z.size, len(TEMPLATES) - 1.0), self.z, self.ebv_disk, ebv_mw)
        in_disk = scale * (1 - self.bulge_frac[:, None])
        burst = in_disk * self.burst[:, None] * young
        return scale * self.bulge_frac[:, None] * bulge, in_disk * (1 - self.burst[:, None]) * disk + burst, burst


# The colour model; these numbers set the colour-redshift scatter (tuned once against the
# SDSS random-forest figures of docs/design.md §9 and kept for every survey).  A profile's
# ``simulation: sed:`` overrides any of them.
@dataclass(frozen=True)
class SedParams:
    """How templates, dust and bursts follow luminosity and redshift, for red and blue galaxies."""

    red_t0: float = 0.05  # template index of an L* red bulge (0 = E, 1 = Sbc)
    red_t_slope: float = 0.10  # fainter red galaxies are younger/bluer
    red_t_scatter: float = 0.03
    red_t_evolution: float = 0.10  # per unit z (to z = 2): red galaxies were younger
    red_disk_t: float = 0.6  # the disk of a red galaxy: between E and Sbc
    red_dust: float = 0.03
    blue_t0: float = 2.0  # an L* blue disk is Scd-like
    blue_t_slope: float = 0.35  # fainter blue disks are later types
    blue_t_scatter: float = 0.20
    blue_t_max: float = 3.6
    blue_t_evolution: float = 0.45  # per unit z (to z = 2): an L* disk at z = 2 is Im-like (UV-bright)
    blue_dust: float = 0.12  # Calzetti E(B-V) of an L* blue disk
    blue_dust_slope: float = 0.03  # brighter disks are dustier
    blue_dust_scatter: float = 0.02
    burst_mean: float = 0.10  # mean fraction of a blue disk's r light from a young burst (exponential)
    # SED variety off the type axis: each bulge and disk takes a share, uniform in [0, variety], of its
    # r light from a random mix of kcorrect's basis spectra (sed.BASIS: ages and metallicities).
    # 0 (the default) keeps the one-parameter template sequence.
    variety: float = 0.0


def _schechter_params(kind: str, z: np.ndarray, lfs: dict) -> tuple[np.ndarray, float, np.ndarray]:
    lf = lfs[kind]
    ze = np.minimum(z, Z_EVOLUTION_STOP)
    return lf["m_star"] - lf["q"] * ze, lf["alpha"], lf["phi_star"] * 10 ** (lf["p"] * ze)


class PopulationSampler:
    """Draws galaxies with a reference-band apparent magnitude in [m_bright, m_faint].

    The joint density of (z, M) is φ(M, z) dV/dz; the magnitude window is turned into an
    absolute-magnitude window with a typical K-correction plus a margin, and galaxies
    falling outside the window once their own SED is known are rejected.
    """

    def __init__(
        self,
        grid: PhotometryGrid,
        ref_index: int,
        *,
        z_max: float = Z_MAX,
        lfs: dict | None = None,
        sed: SedParams | None = None,
    ):
        from astropy.cosmology import Planck18

        self.grid, self.ref, self.lfs = grid, ref_index, lfs or LUMINOSITY_FUNCTIONS
        self.sed = sed or SedParams()
        self.z = np.linspace(0.002, z_max, 1500)
        dvdz = Planck18.differential_comoving_volume(self.z).to_value("Mpc3 / sr")
        self.dvdz_deg2 = dvdz * (np.pi / 180) ** 2  # Mpc^3 per deg^2 per unit z
        self.m = np.arange(M_BRIGHT, -8.0, 0.05)

    def _typical_kcorr(self, kind: str) -> np.ndarray:
        t = np.full(self.z.size, 0.2 if kind == "red" else 2.2)
        e = np.full(self.z.size, 0.0 if kind == "red" else 0.12)
        return -2.5 * np.log10(self.grid.relative_fluxes(t, self.z, e)[:, self.ref])

    def density(self, kind: str, m_bright: float, m_faint: float, margin: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
        """dN/dz per deg^2 on the z grid and the M window, for one galaxy kind."""
        dm = distance_modulus(self.z) + self._typical_kcorr(kind)
        lo, hi = m_bright - dm - margin, m_faint - dm + margin
        m_star, alpha, phi_star = _schechter_params(kind, self.z, self.lfs)
        x = 10 ** (-0.4 * (self.m[None, :] - m_star[:, None]))
        phi = 0.4 * np.log(10) * phi_star[:, None] * x ** (alpha + 1) * np.exp(-x)  # per mag
        phi = np.where((self.m[None, :] >= lo[:, None]) & (self.m[None, :] <= hi[:, None]), phi, 0.0)
        return phi, phi.sum(axis=1) * 0.05 * self.dvdz_deg2

    def draw(
        self, rng: np.random.Generator, n: int, m_bright: float, m_faint: float, z_max: float | None = None
    ) -> tuple[Galaxies, float]:
        """``n`` galaxies in the window (dereddened reference magnitude), and their number per deg^2."""
        parts, total_density = [], 0.0
        zcut = self.z <= (z_max if z_max is not None else self.z[-1])
        tables = {}
        for kind in ("red", "blue"):
            phi, nz = self.density(kind, m_bright, m_faint)
            nz = np.where(zcut, nz, 0.0)
            tables[kind] = (phi, nz)
            total_density += np.trapezoid(nz, self.z)
        frac_red = np.trapezoid(tables["red"][1], self.z) / total_density
        have, attempts, kept = 0, 0, 0
        while have < n:
            batch = max(2 * (n - have), 256)
            n_red = rng.binomial(batch, frac_red)
            for kind, count in (("red", n_red), ("blue", batch - n_red)):
                gal = self._draw_kind(rng, kind, count, *tables[kind])
                bulge, disk, _ = gal.fluxes(self.grid, None)
                mag = -2.5 * np.log10((bulge + disk)[:, self.ref])
                ok = (mag >= m_bright) & (mag <= m_faint)
                attempts, kept = attempts + count, kept + ok.sum()
                parts.append(gal.take(ok))
                have += ok.sum()
        galaxies = Galaxies.concat(parts)
        order = rng.permutation(len(galaxies))[:n]
        return galaxies.take(order), total_density * kept / max(attempts, 1)

    def _draw_kind(self, rng, kind: str, n: int, phi: np.ndarray, nz: np.ndarray) -> Galaxies:
        cdf = np.cumsum(nz)
        iz = np.searchsorted(cdf, rng.uniform(0, cdf[-1], n))
        iz = np.clip(iz, 0, self.z.size - 1)
        z = np.clip(self.z[iz] + rng.uniform(-0.5, 0.5, n) * (self.z[1] - self.z[0]), 1e-3, None)
        u = rng.uniform(0, 1, n)
        im = np.empty(n, dtype=int)
        for start in range(0, n, 4096):  # inverse CDF of M at each z, in blocks to bound memory
            mcdf = np.cumsum(phi[iz[start : start + 4096]], axis=1)
            im[start : start + 4096] = (mcdf < (u[start : start + 4096] * mcdf[:, -1])[:, None]).sum(axis=1)
        abs_mag = self.m[np.clip(im, 0, self.m.size - 1)] + rng.uniform(-0.025, 0.025, n)
        return self._attributes(rng, kind, z, abs_mag)

    def _attributes(self, rng, kind: str, z: np.ndarray, abs_mag: np.ndarray) -> Galaxies:
        """SEDs, dust, bulge fraction and shapes: the physics of §'Populations' in docs/simulation.md."""
        p = self.sed
        n = z.size
        m_star, _, _ = _schechter_params(kind, z, self.lfs)
        dl = abs_mag - m_star  # luminosity relative to L*: < 0 brighter
        young = np.minimum(z, Z_EVOLUTION_STOP)  # younger stellar populations at higher z
        if kind == "red":
            bt = rng.uniform(0.55, 0.95, n)
            t_bulge = np.clip(
                p.red_t0 + p.red_t_slope * dl + p.red_t_evolution * young + rng.normal(0, p.red_t_scatter, n), 0, 1.2
            )
            t_disk = np.clip(p.red_disk_t + rng.normal(0, 0.1, n), 0.2, 1.2)  # an S0's old disk
            ebv_b = np.abs(rng.normal(0, 0.02, n))
            ebv_d = np.abs(rng.normal(0, p.red_dust, n))
            burst = np.zeros(n)
        else:
            bt = np.clip(rng.beta(1.2, 4.0, n) * 0.8, 0, 0.6)
            t_bulge = np.clip(0.4 + rng.normal(0, 0.15, n), 0, 1.2)
            t_disk = np.clip(
                p.blue_t0 + p.blue_t_slope * dl + p.blue_t_evolution * young + rng.normal(0, p.blue_t_scatter, n),
                1.0,
                p.blue_t_max,
            )
            ebv_b = np.abs(rng.normal(0, 0.03, n))
            ebv_d = np.clip(rng.normal(p.blue_dust - p.blue_dust_slope * dl, p.blue_dust_scatter, n), 0, 0.6)
            # a recent burst on top of the smooth history: emission lines and UV vary independently
            burst = np.clip(rng.exponential(p.burst_mean, n), 0, 0.5)
        basis_bulge, basis_disk = _basis_shares(rng, n, p.variety), _basis_shares(rng, n, p.variety)
        r_bulge, r_disk = _sizes(rng, kind, abs_mag, z, self.lfs)
        inclination = np.arccos(rng.uniform(0, 1, n))
        q_disk = np.sqrt(np.cos(inclination) ** 2 * (1 - 0.2**2) + 0.2**2)
        q_bulge = np.clip(rng.normal(0.75, 0.15, n), 0.4, 1.0)
        return Galaxies(
            kind=np.full(n, Kind.RED if kind == "red" else Kind.BLUE, dtype=np.int16),
            z=z,
            abs_mag=abs_mag,
            bulge_frac=bt,
            t_bulge=t_bulge,
            t_disk=t_disk,
            burst=burst,
            basis_bulge=basis_bulge,
            basis_disk=basis_disk,
            ebv_bulge=ebv_b,
            ebv_disk=ebv_d,
            r_bulge=r_bulge,
            r_disk=r_disk,
            q_bulge=q_bulge,
            q_disk=q_disk,
            angle=rng.uniform(0, np.pi, n),
        )


def _basis_shares(rng: np.random.Generator, n: int, variety: float) -> np.ndarray:
    """[n, len(BASIS)] shares of r light from the basis spectra: a total uniform in [0, variety],
    split by a flat Dirichlet.  No draws at 0, so that surveys without variety stay as they were."""
    if variety <= 0:
        return np.zeros((n, len(BASIS)))
    return rng.uniform(0, variety, n)[:, None] * rng.dirichlet(np.ones(len(BASIS)), n)


def _sizes(rng, kind: str, abs_mag, z, lfs) -> tuple[np.ndarray, np.ndarray]:
    """Half-light radii [arcsec] of bulge and disk (Shen+03 at z=0, (1+z)^-β after vdW+14)."""
    m_star, _, _ = _schechter_params(kind, z, lfs)
    m0 = abs_mag - (m_star - lfs[kind]["m_star"])  # the same L/L* today
    if kind == "red":
        log_r = -0.4 * 0.65 * m0 - 5.06 + rng.normal(0, 0.13, z.size)  # early types
        r_total = 10**log_r * (1 + z) ** -1.1
        r_bulge, r_disk = r_total * 0.8, r_total * 1.6
    else:
        log_r = (
            -0.4 * 0.21 * m0
            + (0.53 - 0.21) * np.log10(1 + 10 ** (-0.4 * (m0 + 20.52)))
            - 1.31
            + rng.normal(0, 0.17, z.size)
        )
        r_disk = 10**log_r * (1 + z) ** -0.75
        r_bulge = 0.25 * r_disk
    scale = kpc_per_arcsec(z)
    return np.clip(r_bulge / scale, 0.03, 20), np.clip(r_disk / scale, 0.05, 30)


# ----------------------------------------------------------------------------- stars

STAR_TEMPERATURES = np.linspace(3000.0, 9000.0, 61)


def star_fluxes(
    filters: tuple[str, ...], temperature: np.ndarray, ref_index: int, ref_mag: np.ndarray, ebv_mw: np.ndarray
) -> np.ndarray:
    """AB maggies [N, B] of black-body stars normalised to ``ref_mag`` (observed, reddened)."""
    import extinction

    from mmzcli.sim.sed import R_V_MW, SFD_SCALE, ab_flux, load_filter

    wave = np.geomspace(1000, 60000, 3000)
    planck = 1 / wave[None, :] ** 5 / np.expm1(1.4388e8 / (wave[None, :] * STAR_TEMPERATURES[:, None]))
    table = np.stack([ab_flux(wave, planck, f) for f in filters], axis=1)  # [T, B]
    table = table / table[:, ref_index : ref_index + 1]
    r_eff = np.array(
        [extinction.fitzpatrick99(np.array([load_filter(f)[0].mean()]), R_V_MW, R_V_MW)[0] for f in filters]
    )
    colours = np.stack([np.interp(temperature, STAR_TEMPERATURES, table[:, b]) for b in range(len(filters))], 1)
    reddening = 10 ** (-0.4 * (r_eff[None, :] - r_eff[ref_index]) * SFD_SCALE * ebv_mw[:, None])
    return 10 ** (-0.4 * ref_mag)[:, None] * colours * reddening


def draw_stars(
    rng: np.random.Generator, n: int, m_bright: float, m_faint: float, slope: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Magnitudes (dN/dm ∝ 10^(slope m)) and temperatures of ``n`` field stars."""
    u = rng.uniform(0, 1, n)
    a, b = 10 ** (slope * m_bright), 10 ** (slope * m_faint)
    mags = np.log10(a + u * (b - a)) / slope
    temps = np.clip(rng.lognormal(np.log(5200), 0.22, n), 3000, 9000)
    return mags, temps


def star_density(m_faint: float, density_at_20: float, slope: float = 0.25, m_bright: float = 14.0) -> float:
    """Stars per deg^2 brighter than ``m_faint`` given the number brighter than 20."""
    brighter = 10 ** (slope * m_bright)
    return density_at_20 * (10 ** (slope * m_faint) - brighter) / (10 ** (slope * 20) - brighter)
