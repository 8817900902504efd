"""Energy-integrated point-spread function of a counts map as a Gaussian mixture.

A CTA counts map summed over reconstructed energy sees the PSF of every true
energy weighted by the source's predicted counts at that energy. With the
Gaussian per-energy PSF of :mod:`skyml.cta.irf` this is a mixture of circular
Gaussians, ``sum_k w_k N(sigma_k)``, with ``sum_k w_k = 1``.

:func:`source_npred_map` integrates the mixture over each pixel exactly (error
functions), so the simulation, the likelihood fit and the Cramér–Rao bound all
use the same expected-counts model. Pixel convention: 0-based indices, pixel
centres at integers, ``x`` = column, ``y`` = row (numpy and astropy WCS).
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

__all__ = ["source_npred_map", "source_npred_gradient", "containment_radius"]


def _edges_integral(centre: float, sigma: float, n: int) -> np.ndarray:
    """Fraction of a 1D Gaussian N(centre, sigma) falling in each pixel [i-0.5, i+0.5]."""
    edges = np.arange(n + 1, dtype=float) - 0.5
    cdf = 0.5 * (1.0 + erf((edges - centre) / (np.sqrt(2.0) * sigma)))
    return np.diff(cdf)


def _edges_density(centre: float, sigma: float, n: int) -> np.ndarray:
    """d/d(centre) of :func:`_edges_integral` (minus the Gaussian density at the edges)."""
    edges = np.arange(n + 1, dtype=float) - 0.5
    pdf = np.exp(-0.5 * ((edges - centre) / sigma) ** 2) / (np.sqrt(2.0 * np.pi) * sigma)
    return -np.diff(pdf)


def _check(sigmas_pix, weights):
    sigmas_pix = np.atleast_1d(np.asarray(sigmas_pix, dtype=float))
    weights = np.atleast_1d(np.asarray(weights, dtype=float))
    if sigmas_pix.shape != weights.shape:
        raise ValueError(f"sigmas {sigmas_pix.shape} and weights {weights.shape} differ in shape")
    if np.any(sigmas_pix <= 0) or not np.all(np.isfinite(sigmas_pix)):
        raise ValueError("PSF sigmas must be finite and positive")
    if np.any(weights < 0) or not np.isclose(weights.sum(), 1.0, rtol=1e-6):
        raise ValueError(f"PSF weights must be non-negative and sum to 1 (sum={weights.sum()})")
    return sigmas_pix, weights


def source_npred_map(x_pix, y_pix, npred, sigmas_pix, weights, shape=(200, 200)):
    """Expected source counts per pixel of a point source at ``(x_pix, y_pix)``.

    ``npred`` is the source's total expected counts (on an infinite map; the
    part outside the map is lost, as in a real observation).
    """
    sigmas_pix, weights = _check(sigmas_pix, weights)
    ny, nx = shape
    out = np.zeros(shape, dtype=float)
    for s, w in zip(sigmas_pix, weights):
        if w == 0:
            continue
        out += w * np.outer(_edges_integral(y_pix, s, ny), _edges_integral(x_pix, s, nx))
    return npred * out


def source_npred_gradient(x_pix, y_pix, npred, sigmas_pix, weights, shape=(200, 200)):
    """Derivatives of :func:`source_npred_map` with respect to
    ``(x_pix, y_pix, npred)``, as an array of shape ``(3, ny, nx)``."""
    sigmas_pix, weights = _check(sigmas_pix, weights)
    ny, nx = shape
    d_x = np.zeros(shape)
    d_y = np.zeros(shape)
    shape_map = np.zeros(shape)
    for s, w in zip(sigmas_pix, weights):
        if w == 0:
            continue
        fx, fy = _edges_integral(x_pix, s, nx), _edges_integral(y_pix, s, ny)
        dx, dy = _edges_density(x_pix, s, nx), _edges_density(y_pix, s, ny)
        shape_map += w * np.outer(fy, fx)
        d_x += w * np.outer(fy, dx)
        d_y += w * np.outer(dy, fx)
    return np.stack([npred * d_x, npred * d_y, shape_map])


def containment_radius(sigmas, weights, fraction=0.68):
    """Radius containing ``fraction`` of a circular Gaussian mixture (same units as sigmas)."""
    from scipy.optimize import brentq

    sigmas, weights = _check(sigmas, weights)

    def frac(r):
        return np.sum(weights * (1.0 - np.exp(-0.5 * (r / sigmas) ** 2))) - fraction

    return brentq(frac, 0.0, 50.0 * sigmas.max())
