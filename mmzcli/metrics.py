"""Photo-z quality metrics of the paper (§5.1) on normalised residuals dz = (z_phot - z_spec)/(1 + z_spec)."""

from __future__ import annotations

import numpy as np


def delta_z(z_phot: np.ndarray, z_spec: np.ndarray) -> np.ndarray:
    return (np.asarray(z_phot) - np.asarray(z_spec)) / (1.0 + np.asarray(z_spec))


def sigma_mad(dz: np.ndarray) -> float:
    """1.4826 x median(|dz - median(dz)|): the robust scatter."""
    dz = np.asarray(dz)
    return float(1.4826 * np.median(np.abs(dz - np.median(dz))))


def outlier_fraction(dz: np.ndarray, threshold: float) -> float:
    """eta: the fraction of |dz| >= threshold (0.05 for SDSS, 0.15 otherwise)."""
    return float(np.mean(np.abs(np.asarray(dz)) >= threshold))


def bias(dz: np.ndarray) -> float:
    return float(np.mean(dz))


def summary(z_phot: np.ndarray, z_spec: np.ndarray, threshold: float) -> dict[str, float]:
    dz = delta_z(z_phot, z_spec)
    return {"n": int(dz.size), "sigma_mad": sigma_mad(dz), "eta": outlier_fraction(dz, threshold),
            "bias": bias(dz)}
