"""Summaries of binned redshift PDFs: the point estimates and intervals of the catalogue.

A PDF is a vector of probabilities over the bins of the profile's redshift grid
(uniform bins between ``edges``).  Quantiles interpolate the cumulative
distribution linearly inside a bin, as if the probability were spread evenly
over it.
"""

from __future__ import annotations

import numpy as np


def quantile(pdf: np.ndarray, edges: np.ndarray, q: float | np.ndarray) -> np.ndarray:
    """The q-quantile of each PDF (rows of ``pdf``; ``q`` one for all or one per row), interpolated
    within bins."""
    pdf = np.asarray(pdf, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    cdf = np.cumsum(pdf, axis=-1)
    cdf /= cdf[..., -1:]
    k = np.minimum((cdf < q[..., None]).sum(axis=-1), pdf.shape[-1] - 1)  # first bin where cdf >= q
    below = np.where(k > 0, np.take_along_axis(cdf, np.maximum(k - 1, 0)[..., None], -1)[..., 0], 0.0)
    mass = np.take_along_axis(pdf, k[..., None], -1)[..., 0] / np.sum(pdf, axis=-1)
    frac = np.clip((q - below) / np.where(mass > 0, mass, 1.0), 0.0, 1.0)
    return edges[k] + frac * (edges[k + 1] - edges[k])


def median(pdf: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The point estimate of the paper: the median of the PDF."""
    return quantile(pdf, edges, 0.5)


def mode(pdf: np.ndarray, edges: np.ndarray) -> np.ndarray:
    centres = 0.5 * (edges[1:] + edges[:-1])
    return centres[np.argmax(pdf, axis=-1)]


def mean(pdf: np.ndarray, edges: np.ndarray) -> np.ndarray:
    centres = 0.5 * (edges[1:] + edges[:-1])
    return (pdf @ centres) / pdf.sum(axis=-1)


def std(pdf: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Standard deviation of each PDF about its mean, the probability spread evenly inside a bin."""
    centres, widths = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
    p = pdf / pdf.sum(axis=-1, keepdims=True)
    spread = p @ (centres**2 + widths**2 / 12) - (p @ centres) ** 2
    return np.sqrt(np.maximum(spread, 0.0))


def risk_best(pdf: np.ndarray, edges: np.ndarray, gamma: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """(z_best, its risk): the redshift minimising the expected loss 1 - 1/(1 + (dz/gamma)^2),
    dz = (z_best - z)/(1 + z), over each PDF: the point estimate of the HSC photo-z papers (Tanaka
    et al. 2018, PASJ 70, S9, eq. 3), robust to the far tails that move a mean.  The minimum over
    the bin centres is refined by a parabola through it and its neighbours."""
    centres = 0.5 * (edges[1:] + edges[:-1])
    dz = (centres[None, :] - centres[:, None]) / (1 + centres[:, None])  # [true bin, candidate]
    risk = (pdf / pdf.sum(axis=-1, keepdims=True)) @ (1 - 1 / (1 + (dz / gamma) ** 2))
    j = np.argmin(risk, axis=-1)
    inner = (j > 0) & (j < len(centres) - 1)  # the grid's first and last bins keep their centres
    r0, r1, r2 = (
        np.take_along_axis(risk, np.clip(j + d, 0, len(centres) - 1)[..., None], -1)[..., 0] for d in (-1, 0, 1)
    )
    curvature = r0 - 2 * r1 + r2
    x = np.where(inner & (curvature > 0), 0.5 * (r0 - r2) / np.where(curvature > 0, curvature, 1), 0.0)
    x = np.clip(x, -0.5, 0.5)
    return centres[j] + x * (edges[1] - edges[0]), r1 + 0.5 * (r2 - r0) * x + 0.5 * curvature * x**2


def uniform_from_ids(ids: np.ndarray, salt: int = 0x6D6D7A) -> np.ndarray:
    """A number in [0, 1) per source, fixed by its ID (SplitMix64 of ID + salt): a draw that every
    run, machine and row order repeats."""
    x = np.asarray(ids).astype(np.uint64) + np.uint64(salt)
    with np.errstate(over="ignore"):
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & np.uint64(0xFFFFFFFFFFFFFFFF)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / 2.0**53


def cdf_at(pdf: np.ndarray, edges: np.ndarray, z: np.ndarray) -> np.ndarray:
    """P(< z) of each PDF at its own ``z``, linear inside the bin (0 below the grid, 1 above)."""
    pdf = np.asarray(pdf, dtype=np.float64)
    cdf = np.concatenate([np.zeros(pdf.shape[:-1] + (1,)), np.cumsum(pdf, axis=-1)], axis=-1)
    cdf /= np.where(cdf[..., -1:] > 0, cdf[..., -1:], 1.0)
    z = np.clip(np.asarray(z, dtype=np.float64), edges[0], edges[-1])
    k = np.clip(np.searchsorted(edges, z, side="right") - 1, 0, len(edges) - 2)
    lo = np.take_along_axis(cdf, k[..., None], -1)[..., 0]
    hi = np.take_along_axis(cdf, (k + 1)[..., None], -1)[..., 0]
    return lo + (z - edges[k]) / (edges[k + 1] - edges[k]) * (hi - lo)
