"""Summaries of binned redshift PDFs: the point estimates and intervals of the catalogue.

A PDF is a vector of probabilities over the bins of the profile's redshift grid
(uniform bins between ``edges``).  Quantiles interpolate the cumulative
distribution linearly inside a bin, as if the probability were spread evenly
over it.
"""

from __future__ import annotations

import numpy as np


def quantile(pdf: np.ndarray, edges: np.ndarray, q: float) -> np.ndarray:
    """The q-quantile of each PDF (rows of ``pdf``), interpolated within bins."""
    pdf = np.asarray(pdf, dtype=np.float64)
    cdf = np.cumsum(pdf, axis=-1)
    cdf /= cdf[..., -1:]
    k = np.minimum((cdf < q).sum(axis=-1), pdf.shape[-1] - 1)  # first bin where cdf >= q
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
