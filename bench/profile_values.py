"""Effective wavelengths and Galactic extinction coefficients of the shipped profiles' bands.

Run:  .venv/bin/python bench/profile_values.py

For every filter curve used by profiles/*.yaml (astro-sedpy ids, or speclite names written
``speclite:<group>-<band>``; both read by ``mmzcli.sim.sed.filter_curve``) this prints

* lam_eff   -- the Fukugita et al. (1996) effective wavelength
               exp(int T ln(lam) dln(lam) / int T dln(lam)), Angstrom, as sedpy's
               ``Filter.wave_effective``.  This is the value written in the profiles'
               ``wavelength`` field.
* lam_pivot -- the pivot wavelength sqrt(int T lam dlam / int T dlam/lam), for reference.
* R_b       -- A_b / E(B-V)_SFD, the coefficient that multiplies the SFD (Schlegel et al.
               1998) reddening, in the convention of Schlafly & Finkbeiner (2011, SF11),
               Table 6, R_V = 3.1:
                 - Fitzpatrick (1999) law, R_V = 3.1 (``extinction.fitzpatrick99``);
                 - source spectrum: 7000 K blackbody (SF11 use a 7000 K model atmosphere);
                 - photon-counting band integral, extinction in the linear regime
                   (E(B-V) = 0.01);
                 - E(B-V) is the *broadband* colour excess of that source through the Bessell
                   B and V curves (0.977 x the monochromatic E(44-55) of the law);
                 - SF11's recalibration of SFD: E(B-V)_true = 0.86 E(B-V)_SFD, i.e. the
                   coefficient is 0.86 x A_b / E(B-V)_true.

The script first reproduces SF11 Table 6 for SDSS ugriz (and, as a wider check, a few
other Table 6 bandpasses) and prints the relative differences.

Filter-curve notes: the sedpy VISTA curves (vista_vircam_*) are full system throughputs
(filter, mirrors, QE, atmosphere) tabulated in percent; the sedpy HSC curves include the
atmosphere at airmass 1.2.  Normalisation does not matter for wavelengths or R_b.  hsc6's u
is the MegaCam u.MP9302 curve shipped with speclite (cfht_megacam-u), which sedpy lacks;
speclite's u* (cfht_megacam-ustar, u.MP9301) is printed beside sedpy's for comparison.
"""

from __future__ import annotations

import sys
from pathlib import Path

import extinction
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmzcli.sim.sed import filter_curve

R_V = 3.1
SFD_RECALIBRATION = 0.86  # SF11: E(B-V)_true = 0.86 E(B-V)_SFD
SOURCE_TEMPERATURE = 7000.0  # K
EBV_MONO = 0.01  # monochromatic E(B-V) at which the band integrals are evaluated

# SF11 Table 6 (R_V = 3.1) values used to validate the method.
SF11_TABLE6 = {
    "sdss_u0": 4.239,
    "sdss_g0": 3.303,
    "sdss_r0": 2.285,
    "sdss_i0": 1.698,
    "sdss_z0": 1.263,
    "panstarrs_g": 3.172,
    "panstarrs_r": 2.271,
    "panstarrs_i": 1.682,
    "panstarrs_z": 1.322,
    "panstarrs_y": 1.087,
    "ukirt_wfcam_J": 0.709,
    "ukirt_wfcam_H": 0.449,
    "ukirt_wfcam_K": 0.302,
}

# Bands of the shipped profiles: (profile, band, filter id).
PROFILE_BANDS = [
    ("sdss", "u", "sdss_u0"),
    ("sdss", "g", "sdss_g0"),
    ("sdss", "r", "sdss_r0"),
    ("sdss", "i", "sdss_i0"),
    ("sdss", "z", "sdss_z0"),
    ("cfhtls", "u", "cfht_megacam_us_9301"),
    ("cfhtls", "g", "cfht_megacam_gs_9401"),
    ("cfhtls", "r", "cfht_megacam_rs_9601"),
    ("cfhtls", "i", "cfht_megacam_is_9701"),
    ("cfhtls", "z", "cfht_megacam_zs_9801"),
    ("hsc6", "u", "speclite:cfht_megacam-u"),
    ("hsc6", "g", "hsc_g"),
    ("hsc6", "r", "hsc_r"),
    ("hsc6", "i", "hsc_i"),
    ("hsc6", "z", "hsc_z"),
    ("hsc6", "y", "hsc_y"),
    ("hsc9", "J", "vista_vircam_J"),
    ("hsc9", "H", "vista_vircam_H"),
    ("hsc9", "Ks", "vista_vircam_Ks"),
]

# The same filter in both packages: MegaCam u* (u.MP9301).
CROSS_CHECK = [("u*", "cfht_megacam_us_9301"), ("u*", "speclite:cfht_megacam-ustar")]


def _blackbody(wave_aa: np.ndarray, temperature: float) -> np.ndarray:
    """B_lambda up to a constant (the constant cancels in every ratio below)."""
    hc_over_k = 1.4387769e8  # h c / k in Angstrom K
    return wave_aa**-5 / np.expm1(hc_over_k / (wave_aa * temperature))


def wavelengths(filter_id: str) -> tuple[float, float]:
    """(lam_eff, lam_pivot) in Angstrom, with sedpy's integrals (Fukugita et al. 1996)."""
    wave, trans = filter_curve(filter_id)
    log_wave = np.log(wave)
    norm = np.trapezoid(trans, log_wave)
    lam_eff = np.exp(np.trapezoid(trans * log_wave, log_wave) / norm)
    return float(lam_eff), float(np.sqrt(np.trapezoid(trans * wave, wave) / norm))


def band_extinction(filter_id: str, ebv_mono: float = EBV_MONO) -> float:
    """A_b in magnitudes for a monochromatic E(B-V) = ebv_mono of the F99 law."""
    wave, trans = filter_curve(filter_id)
    weight = _blackbody(wave, SOURCE_TEMPERATURE) * trans * wave
    a_lambda = extinction.fitzpatrick99(wave, R_V * ebv_mono, R_V)
    ratio = np.trapezoid(weight * 10 ** (-0.4 * a_lambda), wave) / np.trapezoid(weight, wave)
    return -2.5 * np.log10(ratio)


def broadband_ebv(ebv_mono: float = EBV_MONO) -> float:
    """E(B-V) of the source measured through the Bessell B and V curves."""
    return band_extinction("bessell_B", ebv_mono) - band_extinction("bessell_V", ebv_mono)


def r_coefficient(filter_id: str) -> float:
    """A_b / E(B-V)_SFD in the SF11 convention (see the module docstring)."""
    return SFD_RECALIBRATION * band_extinction(filter_id) / broadband_ebv()


def main() -> None:
    print(
        f"Broadband E(B-V) / monochromatic E(B-V) for a {SOURCE_TEMPERATURE:.0f} K source: "
        f"{broadband_ebv() / EBV_MONO:.4f}"
    )
    print("\nValidation against Schlafly & Finkbeiner (2011) Table 6, R_V = 3.1")
    print(f"{'filter':<16}{'SF11':>8}{'this':>8}{'diff':>9}")
    for filter_id, ref in SF11_TABLE6.items():
        value = r_coefficient(filter_id)
        print(f"{filter_id:<16}{ref:>8.3f}{value:>8.3f}{100 * (value / ref - 1):>8.2f}%")

    print("\nProfile bands")
    header = f"{'band':<5}{'filter':<30}{'lam_eff':>9}{'lam_pivot':>10}{'R_b':>8}"
    print(f"{'profile':<8}{header}{'SF11':>8}")
    for profile, name, filter_id in PROFILE_BANDS:
        ref = SF11_TABLE6.get(filter_id)
        print(f"{profile:<8}{_row(name, filter_id)}{(f'{ref:.3f}' if ref else '-'):>8}")

    print("\nCross-check: one filter, two packages' curves")
    print(header)
    for name, filter_id in CROSS_CHECK:
        print(_row(name, filter_id))


def _row(name: str, filter_id: str) -> str:
    lam_eff, lam_pivot = wavelengths(filter_id)
    return f"{name:<5}{filter_id:<30}{lam_eff:>9.0f}{lam_pivot:>10.0f}{r_coefficient(filter_id):>8.3f}"


if __name__ == "__main__":
    main()
