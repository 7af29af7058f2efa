"""Spectral energy distributions for ``mmz simulate``: templates, dust, IGM, synthetic magnitudes.

Sources, all shipped inside wheels (no downloads):

- templates: the Coleman, Wu & Weedman (1980) E, Sbc, Scd and Im spectra as extended to
  91 Å - 2.2 µm by Bolzonella et al. (2000) (shipped with GalSim), and the young
  star-burst component of the Blanton & Roweis (2007) ``kcorrect`` basis (emission lines
  included), shipped with ``kcorrect``, whose four other basis spectra (``BASIS``) can be
  mixed in for SED variety;
- internal dust: Calzetti et al. (2000), R_V = 4.05 (from the ``extinction`` package),
  continued below 1500 Å by the starburst curve of Leitherer et al. (2002); Milky Way dust:
  Fitzpatrick (1999), R_V = 3.1 (``extinction``);
- intergalactic absorption: Inoue et al. (2014), written here from the paper's equations
  and its Table 2 coefficients;
- filter curves: ``astro-sedpy`` (its VISTA curves are in percent: only ratios are used), or
  ``speclite`` for ids written ``speclite:<group>-<band>`` (CLAUDS' MegaCam u, u.MP9302, is
  ``speclite:cfht_megacam-u``: sedpy has no curve for it).

Magnitudes are AB, for photon-counting detectors.  A galaxy's SED is a mixture of
templates weighted by their light in the rest-frame SDSS r band, the band of the
luminosity functions; everything is tabulated once on a (template, z, E(B-V)) grid, so a
million galaxies cost a few array look-ups.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

from mmzcli.errors import ConfigError

TEMPLATES = ("E", "Sbc", "Scd", "Im", "SB")  # red to blue: the 'type' axis of the population
# kcorrect's other basis spectra (Blanton & Roweis 2007: non-negative fits of stellar-population models
# to SDSS spectra), by index in its file: old metal-rich, intermediate age, old solar, metal-poor.
# Off the one-parameter type axis, they give SEDs of the same colour different breaks and UV (`SedParams.variety`).
BASIS = (0, 2, 3, 4)
LF_FILTER = "sdss_r0"  # the rest-frame band of the luminosity functions
R_V_MW = 3.1
SFD_SCALE = 0.86  # E(B-V)_true = 0.86 E(B-V)_SFD (Schlafly & Finkbeiner 2011); catalogues carry SFD values
R_V_CALZETTI = 4.05

# Inoue et al. (2014) Table 2: Lyman series j = 2..40, lambda_j [Å], LAF A1 A2 A3, DLA A1 A2.
_INOUE14 = """
1215.670 1.68976E-02 2.35379E-03 1.02611E-04 1.61698E-04 5.38995E-05
1025.720 4.69229E-03 6.53625E-04 2.84940E-05 1.54539E-04 5.15129E-05
972.537 2.23898E-03 3.11884E-04 1.35962E-05 1.49767E-04 4.99222E-05
949.743 1.31901E-03 1.83735E-04 8.00974E-06 1.46031E-04 4.86769E-05
937.803 8.70656E-04 1.21280E-04 5.28707E-06 1.42893E-04 4.76312E-05
930.748 6.17843E-04 8.60640E-05 3.75186E-06 1.40159E-04 4.67196E-05
926.226 4.60924E-04 6.42055E-05 2.79897E-06 1.37714E-04 4.59048E-05
923.150 3.56887E-04 4.97135E-05 2.16720E-06 1.35495E-04 4.51650E-05
920.963 2.84278E-04 3.95992E-05 1.72628E-06 1.33452E-04 4.44841E-05
919.352 2.31771E-04 3.22851E-05 1.40743E-06 1.31561E-04 4.38536E-05
918.129 1.92348E-04 2.67936E-05 1.16804E-06 1.29785E-04 4.32617E-05
917.181 1.62155E-04 2.25878E-05 9.84689E-07 1.28117E-04 4.27056E-05
916.429 1.38498E-04 1.92925E-05 8.41033E-07 1.26540E-04 4.21799E-05
915.824 1.19611E-04 1.66615E-05 7.26340E-07 1.25041E-04 4.16804E-05
915.329 1.04314E-04 1.45306E-05 6.33446E-07 1.23614E-04 4.12046E-05
914.919 9.17397E-05 1.27791E-05 5.57091E-07 1.22248E-04 4.07494E-05
914.576 8.12784E-05 1.13219E-05 4.93564E-07 1.20938E-04 4.03127E-05
914.286 7.25069E-05 1.01000E-05 4.40299E-07 1.19681E-04 3.98938E-05
914.039 6.50549E-05 9.06198E-06 3.95047E-07 1.18469E-04 3.94896E-05
913.826 5.86816E-05 8.17421E-06 3.56345E-07 1.17298E-04 3.90995E-05
913.641 5.31918E-05 7.40949E-06 3.23008E-07 1.16167E-04 3.87225E-05
913.480 4.84263E-05 6.74567E-06 2.94068E-07 1.15071E-04 3.83572E-05
913.339 4.42566E-05 6.16485E-06 2.68748E-07 1.14011E-04 3.80037E-05
913.215 4.05867E-05 5.65363E-06 2.46462E-07 1.12983E-04 3.76609E-05
913.104 3.73359E-05 5.20082E-06 2.26722E-07 1.11985E-04 3.73285E-05
913.006 3.44412E-05 4.79759E-06 2.09143E-07 1.11016E-04 3.70053E-05
912.918 3.18521E-05 4.43692E-06 1.93420E-07 1.10074E-04 3.66914E-05
912.839 2.95266E-05 4.11300E-06 1.79299E-07 1.09158E-04 3.63859E-05
912.768 2.74301E-05 3.82097E-06 1.66568E-07 1.08266E-04 3.60887E-05
912.703 2.55335E-05 3.55677E-06 1.55051E-07 1.07397E-04 3.57990E-05
912.645 2.38126E-05 3.31705E-06 1.44600E-07 1.06550E-04 3.55167E-05
912.592 2.22465E-05 3.09890E-06 1.35090E-07 1.05725E-04 3.52416E-05
912.543 2.08176E-05 2.89986E-06 1.26413E-07 1.04919E-04 3.49730E-05
912.499 1.95108E-05 2.71783E-06 1.18478E-07 1.04133E-04 3.47110E-05
912.458 1.83133E-05 2.55101E-06 1.11206E-07 1.03365E-04 3.44551E-05
912.420 1.72137E-05 2.39784E-06 1.04529E-07 1.02615E-04 3.42050E-05
912.385 1.62024E-05 2.25697E-06 9.83880E-08 1.01882E-04 3.39607E-05
912.353 1.52709E-05 2.12722E-06 9.27317E-08 1.01166E-04 3.37220E-05
912.324 1.44115E-05 2.00750E-06 8.75130E-08 1.00465E-04 3.34883E-05
"""
LYMAN_LIMIT = 911.8
LYC_ESCAPE = 0.05  # escape fraction of Lyman-continuum photons (e.g. Steidel et al. 2018: ~0.05-0.1)


def internal_attenuation(wave_rest: np.ndarray) -> np.ndarray:
    """A(λ)/E(B-V) of a galaxy's own dust at rest-frame wavelengths [Å], any shape.

    Calzetti et al. (2000), R_V = 4.05, is defined at 1200 Å - 2.2 µm.  Below 1500 Å the
    far-UV curve of Leitherer et al. (2002, ApJS 140, 303, eq. 14), measured on local
    starbursts down to 970 Å and equal to Calzetti's to 0.02 at 1500-1800 Å, takes over,
    continued to the Lyman limit (as in CIGALE); beyond 2.2 µm the curve is held flat.
    The attenuation keeps rising into the far UV (k = 14.6 at 950 Å, 11.9 at 1200 Å):
    a curve held flat below 1200 Å leaves the rest-frame 900-1100 Å light that the
    u band sees at z ≈ 3 too bright by ~2.5 E(B-V) mag relative to g.
    """
    import extinction

    wave = np.asarray(wave_rest, dtype=float)
    lam = np.clip(wave.ravel(), LYMAN_LIMIT, 22000.0)
    k = extinction.calzetti00(np.maximum(lam, 1500.0), R_V_CALZETTI, R_V_CALZETTI)
    x = 1e4 / lam  # inverse microns
    far_uv = 5.472 + 0.671 * x - 9.218e-3 * x**2 + 2.620e-3 * x**3
    return np.where(lam < 1500.0, far_uv, k).reshape(wave.shape)


def igm_transmission(wave_obs: np.ndarray, z: float | np.ndarray) -> np.ndarray:
    """Mean IGM transmission exp(-tau) at observed wavelengths [Å] for sources at z (Inoue+14).

    ``z`` may be an array: the result is then [len(z), len(wave_obs)].
    """
    lam_all = np.asarray(wave_obs, dtype=float)[None, :]
    zp_all = 1 + np.atleast_1d(np.asarray(z, dtype=float))[:, None]
    lam_all, zp_all = np.broadcast_arrays(lam_all, zp_all)
    absorbed = lam_all < 1215.67 * zp_all  # only blueward of Lyman alpha is there anything to do
    lam, zp = lam_all[absorbed], zp_all[absorbed]
    tau = np.zeros(lam.shape)
    for lam_j, a1, a2, a3, d1, d2 in _IGM_COEFF:  # Lyman series, eqs. 21-22
        x = lam / lam_j
        laf = np.where(x < 2.2, a1 * x**1.2, np.where(x < 5.7, a2 * x**3.7, a3 * x**5.5))
        dla = np.where(x < 3.0, d1 * x**2, d2 * x**3)
        tau += np.where((x > 1) & (x < zp), laf + dla, 0.0)
    x = lam / LYMAN_LIMIT  # Lyman continuum, eqs. 25-29
    laf_low = 0.325 * (x**1.2 - zp**-0.9 * x**2.1)
    laf_mid = np.where(
        x < 2.2, 2.55e-2 * zp**1.6 * x**2.1 + 0.325 * x**1.2 - 0.250 * x**2.1, 2.55e-2 * (zp**1.6 * x**2.1 - x**3.7)
    )
    laf_high = np.where(
        x < 2.2,
        5.22e-4 * zp**3.4 * x**2.1 + 0.325 * x**1.2 - 3.14e-2 * x**2.1,
        np.where(
            x < 5.7,
            5.22e-4 * zp**3.4 * x**2.1 + 0.218 * x**2.1 - 2.55e-2 * x**3.7,
            5.22e-4 * (zp**3.4 * x**2.1 - x**5.5),
        ),
    )
    laf = np.where(zp < 2.2, laf_low, np.where(zp < 5.7, laf_mid, laf_high))
    dla_low = 0.211 * zp**2 - 7.66e-2 * zp**2.3 * x**-0.3 - 0.135 * x**2
    dla_high = np.where(
        x < 3.0,
        0.634 + 4.70e-2 * zp**3 - 1.78e-2 * zp**3.3 * x**-0.3 - 0.135 * x**2 - 0.291 * x**-0.3,
        4.70e-2 * zp**3 - 1.78e-2 * zp**3.3 * x**-0.3 - 2.92e-2 * x**3,
    )
    dla = np.where(zp < 3.0, dla_low, dla_high)
    tau += np.where(x < zp, np.clip(laf, 0, None) + np.clip(dla, 0, None), 0.0)
    out = np.ones(lam_all.shape)
    out[absorbed] = np.exp(-tau)
    return out[0] if np.ndim(z) == 0 else out


_IGM_COEFF = np.array(_INOUE14.split(), dtype=float).reshape(-1, 6)


# ----------------------------------------------------------------------------- data files


def package_dir(name: str) -> Path:
    """Where an installed package's data files are (GalSim's SEDs, kcorrect's templates and test sample)."""
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ConfigError(f"mmz simulate needs the package '{name}': pip install 'mmz[sim]'")
    return Path(spec.origin).parent


@lru_cache(maxsize=2)
def load_templates(lyc_escape: float = LYC_ESCAPE) -> tuple[np.ndarray, np.ndarray]:
    """Rest-frame templates on one log-spaced grid: (wave [Å], f_lambda [K, n]), unit mean in r:
    TEMPLATES, then the BASIS spectra.

    ``lyc_escape`` scales their light below the Lyman limit.
    """
    wave = np.geomspace(91.0, 60000.0, 6000)
    sed_dir = package_dir("galsim") / "share" / "SEDs"
    fluxes = []
    for name in TEMPLATES[:4]:
        w, f = np.loadtxt(sed_dir / f"CWW_{name}_ext.sed", unpack=True)
        fluxes.append(_extend(w, f, wave))
    from astropy.io import fits

    with fits.open(package_dir("kcorrect") / "data" / "templates" / "kcorrect-default-v4.fits") as hdul:
        w = np.asarray(hdul["FLUX"].data["wave"][0], dtype=float)
        f = np.asarray(hdul["FLUX"].data["flux"][0], dtype=float)
    fluxes += [_extend(w, f[k], wave) for k in (1, *BASIS)]  # 1: the youngest component, the SB template
    flux = np.array(fluxes)
    flux[:, wave < LYMAN_LIMIT] *= lyc_escape  # the galaxy's own neutral gas absorbs its ionising light
    norm = (wave > 5500) & (wave < 6500)
    return wave, flux / flux[:, norm].mean(axis=1, keepdims=True)


def _extend(w: np.ndarray, f: np.ndarray, wave: np.ndarray) -> np.ndarray:
    """Resample onto ``wave``; beyond the reddest point continue the 1.5-2.2 µm power law."""
    out = np.interp(wave, w, f, left=0.0)
    red = wave > w[-1]
    if red.any():
        fit = (w > 15000) & (w <= 22100)
        slope = np.polyfit(np.log(w[fit]), np.log(np.clip(f[fit], 1e-30, None)), 1)[0]
        out[red] = f[-1] * (wave[red] / w[-1]) ** slope
    return out


SPECLITE = "speclite:"  # prefix of the filter ids that name a speclite curve


@cache
def filter_curve(filter_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The tabulated curve of a filter: (wave [Å], transmission), as its package ships it.

    ``filter_id`` is an astro-sedpy name (``hsc_g``) or ``speclite:`` and a speclite name
    (``speclite:cfht_megacam-u``).  Both packages drop the runs of zeros at either end.

    Raises
    ------
    ConfigError
        If the package has no curve by that name, or speclite is not installed.

    Examples
    --------
    >>> wave, trans = filter_curve("speclite:cfht_megacam-u")  # MegaCam u.MP9302
    >>> round(float(wave[trans.argmax()]))
    3930
    """
    if filter_id.startswith(SPECLITE):
        name = filter_id[len(SPECLITE) :]
        if importlib.util.find_spec("speclite") is None:
            raise ConfigError(f"filter curve '{filter_id}' needs the package 'speclite': pip install 'mmz[sim]'")
        import speclite.filters

        try:
            flt = speclite.filters.load_filter(name)
        except ValueError as exc:  # speclite: bad name, unknown group or band, missing .ecsv file
            raise ConfigError(f"unknown filter curve '{filter_id}' (speclite has none by that name: {exc})") from None
        return np.asarray(flt.wavelength, float), np.asarray(flt.response, float)  # wavelength in Å
    from sedpy.observate import Filter

    try:
        flt = Filter(filter_id)
    except (ValueError, OSError) as exc:  # sedpy: ValueError (0.4), a file error in older versions
        raise ConfigError(
            f"unknown filter curve '{filter_id}' (astro-sedpy has none by that name: {exc}); "
            f"a speclite curve is written '{SPECLITE}<group>-<band>'"
        ) from None
    return np.asarray(flt.wavelength, float), np.asarray(flt.transmission, float)


@cache
def load_filter(filter_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(wave [Å], transmission) of a filter (see `filter_curve`), resampled to 160 points."""
    w, t = filter_curve(filter_id)
    keep = t > 1e-4 * t.max()
    lo, hi = w[keep].min(), w[keep].max()
    grid = np.linspace(lo, hi, 160)
    return grid, np.interp(grid, w, t)


def ab_flux(wave: np.ndarray, f_lambda: np.ndarray, filter_id: str) -> np.ndarray:
    """Mean f_nu through a filter (photon counting), in units of the f_lambda * lambda^2 scale.

    ``f_lambda`` may carry leading axes; the last is wavelength.
    """
    fw, ft = load_filter(filter_id)
    f = (
        np.interp(fw, wave, f_lambda)
        if f_lambda.ndim == 1
        else np.stack([np.interp(fw, wave, row) for row in f_lambda.reshape(-1, wave.size)]).reshape(
            f_lambda.shape[:-1] + fw.shape
        )
    )
    return np.trapezoid(f * fw * ft, fw, axis=-1) / np.trapezoid(ft / fw, fw)


# ----------------------------------------------------------------------------- the grid


@dataclass
class PhotometryGrid:
    """Tabulated K-corrections: m_b = M_r + DM(z) + kcorr[k, z, ebv, b] for template k.

    M_r is the rest-frame SDSS r absolute magnitude (with internal dust), so luminosity
    functions in r apply directly.  ``mw[k, z, b]`` is A_b / E(B-V)_SFD through the filter
    for that SED (F99 at the true reddening 0.86 E(B-V)_SFD, Schlafly & Finkbeiner 2011):
    Galactic reddening depends on the galaxy's colour and redshift.
    """

    filters: tuple[str, ...]
    z: np.ndarray
    ebv: np.ndarray
    kcorr: np.ndarray  # [K, nz, ne, B]
    mw: np.ndarray  # [K, nz, B]

    @classmethod
    def build(
        cls, filters: tuple[str, ...], z_max: float = 6.0, dz: float = 0.005, lyc_escape: float = LYC_ESCAPE
    ) -> PhotometryGrid:
        import extinction

        wave, templates = load_templates(lyc_escape)
        z = np.arange(0.0, z_max + dz, dz)
        ebv = np.linspace(0.0, 0.8, 9)
        calz = internal_attenuation(wave)  # A / E(B-V)
        dust = 10 ** (-0.4 * np.outer(ebv, calz))  # [ne, nw]
        rest_ref = ab_flux(wave, templates[:, None, :] * dust[None], LF_FILTER)  # [K, ne]
        kcorr = np.empty((len(templates), z.size, ebv.size, len(filters)))
        mw = np.empty((len(templates), z.size, len(filters)))
        for b, fid in enumerate(filters):
            fw, ft = load_filter(fid)
            weight = np.gradient(fw) * ft / fw / np.trapezoid(ft / fw, fw)  # quadrature weights
            rest = fw[None, :] / (1 + z[:, None])  # [nz, nfw]
            calz_rest = internal_attenuation(rest)
            att = 10 ** (-0.4 * ebv[:, None, None] * calz_rest[None])  # [ne, nz, nfw]
            mw_att = 10 ** (-0.4 * 0.1 * extinction.fitzpatrick99(fw, R_V_MW, R_V_MW))  # E(B-V)_MW = 0.1
            igm = igm_transmission(fw, z)  # [nz, nfw]
            for k in range(len(templates)):
                # observed f_nu at the filter's wavelengths, up to the constant shared with rest_ref
                f_nu = np.interp(rest, wave, templates[k]) * igm * rest**2 * weight
                obs = np.einsum("zl,ezl->ze", f_nu, att)
                kcorr[k, :, :, b] = -2.5 * np.log10(np.clip((1 + z)[:, None] * obs / rest_ref[k], 1e-30, None))
                plain = np.clip(f_nu.sum(axis=1), 1e-300, None)
                mw[k, :, b] = -2.5 * np.log10(np.clip((f_nu * mw_att).sum(axis=1), 1e-300, None) / plain) / 0.1
        mw *= SFD_SCALE
        mw = np.where(np.isfinite(mw), mw, 0.0)
        return cls(tuple(filters), z, ebv, kcorr, mw)

    def _locate(self, values: np.ndarray, axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.clip((values - axis[0]) / (axis[1] - axis[0]), 0, axis.size - 1 - 1e-9)
        i = pos.astype(int)
        return i, pos - i

    def relative_fluxes(
        self,
        template: np.ndarray,
        z: np.ndarray,
        ebv: np.ndarray,
        ebv_mw: np.ndarray | None = None,
        basis: np.ndarray | None = None,
    ) -> np.ndarray:
        """Observed flux per band for 1 unit of rest-frame r light, [N, B] (10^(-0.4 kcorr)).

        ``template`` is a continuous index along TEMPLATES: 1.3 mixes 70% Sbc and 30% Scd
        (by r-band light).  ``basis`` [N, len(BASIS)] takes those shares of the r light from
        the BASIS spectra instead (the rest from the template mix).
        """
        template = np.clip(np.asarray(template, float), 0, len(TEMPLATES) - 1)
        k0 = np.minimum(template.astype(int), len(TEMPLATES) - 2)
        a = (template - k0)[:, None]
        at = self._locate(np.asarray(z, float), self.z), self._locate(np.asarray(ebv, float), self.ebv)
        mixes = [(k0, 1 - a), (k0 + 1, a)]
        if basis is not None:
            rest = 1 - basis.sum(axis=1, keepdims=True)
            mixes = [(k, w * rest) for k, w in mixes]
            mixes += [(np.full(k0.shape, len(TEMPLATES) + j), basis[:, j : j + 1]) for j in range(len(BASIS))]
        out: np.ndarray | float = 0.0
        for k, w in mixes:
            out = out + w * self._template_flux(k, *at, ebv_mw)
        assert isinstance(out, np.ndarray)  # a sum of arrays
        return out

    def _template_flux(self, k: np.ndarray, z_at: tuple, ebv_at: tuple, ebv_mw: np.ndarray | None) -> np.ndarray:
        """10^(-0.4 kcorr) of template k, interpolated in z and E(B-V), Milky Way dust applied."""
        (iz, fz), (ie, fe) = z_at, ebv_at
        fz, fe = fz[:, None], fe[:, None]
        kc = (
            (1 - fz) * (1 - fe) * self.kcorr[k, iz, ie]
            + fz * (1 - fe) * self.kcorr[k, iz + 1, ie]
            + (1 - fz) * fe * self.kcorr[k, iz, ie + 1]
            + fz * fe * self.kcorr[k, iz + 1, ie + 1]
        )
        flux = 10 ** (-0.4 * kc)
        if ebv_mw is not None:
            r_eff = (1 - fz) * self.mw[k, iz] + fz * self.mw[k, iz + 1]
            flux = flux * 10 ** (-0.4 * r_eff * np.asarray(ebv_mw, float)[:, None])
        return flux


@lru_cache(maxsize=4)
def photometry_grid(filters: tuple[str, ...], z_max: float = 6.0) -> PhotometryGrid:
    return PhotometryGrid.build(filters, z_max=z_max)


@lru_cache(maxsize=1)
def distance_modulus_table(z_max: float = 6.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(z, distance modulus, angular-diameter distance [kpc]) for Planck18, tabulated for speed."""
    from astropy.cosmology import Planck18

    z = np.linspace(1e-3, z_max, 3000)
    dm = Planck18.distmod(z).value
    da = Planck18.angular_diameter_distance(z).to_value("kpc")
    return z, dm, da


def distance_modulus(z: np.ndarray) -> np.ndarray:
    zt, dm, _ = distance_modulus_table()
    return np.interp(np.maximum(z, zt[0]), zt, dm)


def kpc_per_arcsec(z: np.ndarray) -> np.ndarray:
    zt, _, da = distance_modulus_table()
    return np.interp(np.maximum(z, zt[0]), zt, da) * np.pi / (180 * 3600)
