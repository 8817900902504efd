"""Differential radio source counts n(s) = dN/dS [Jy⁻¹ sr⁻¹] at an EMU-like
frequency, their modifications, and sampling from them.

Baseline population (T-RECS, used by the seed, is not installable here):

* **Hopkins et al. 2003 (AJ 125, 465)** 1.4 GHz fit of the Euclidean-normalised
  counts, log10(S^2.5 dN/dS / Jy^1.5 sr⁻¹) = Σ a_i (log10 S/mJy)^i with
  a = (0.859, 0.508, 0.376, −0.049, −0.121, 0.057, −0.008), valid ≈0.05–1000 mJy.
* **Faint-end extension** (our assumption, documented): below
  ``S_BREAK_1P4_JY`` = 0.05 mJy the polynomial is not used (extrapolated it
  falls by orders of magnitude); the Euclidean-normalised counts continue as
  S^2.5 n ∝ S^κ with κ = ``FAINT_SLOPE`` = 0.5, i.e. n ∝ S⁻², the sub-Euclidean
  flattening of deep 1.4 GHz counts (P(D) of Condon et al. 2012; MeerKAT DEEP2,
  Matthews et al. 2021), continuous at 0.05 mJy. It gives S^2.5 n ≈ 1 Jy^1.5 sr⁻¹
  at 10 µJy and ≈ 0.3 at 1 µJy (1.4 GHz).
* **Frequency**: S_ν = S_1.4 (ν / 1.4 GHz)^−0.7 (``SPECTRAL_INDEX``, the usual
  synchrotron index of both populations), so at ν = 0.943 GHz (EMU band centre)
  every source is 1.319× brighter and n_ν(S) = n_1.4(S / k) / k with k = 1.319.
* **Star-forming / AGN split** (our assumption): the star-forming fraction is
  f_SFG(S_1.4) = 1 / (1 + (S_1.4 / 0.2 mJy)^1.2): SFGs dominate below
  ≈0.1 mJy (99 % at 1 µJy), AGN above ≈1 mJy (as in T-RECS and VLA-COSMOS).

Modifications (``family``, ``p1``, ``p2``), factors multiplying n_base:

* ``"alpha_s0"`` — the seed's (1 + s0/s)^α: p1 = α, p2 = s0 [Jy];
* ``"broken"`` — a power-law break: (s/s_b)^β below s_b, 1 above: p1 = β, p2 = s_b;
* ``"tanh"`` — the seed's "what we'll try next", 1 + A tanh(s1/s)^4: p1 = A,
  p2 = s1 (A = 1, s1 = 1e-5 Jy is the shape named in the seed's repository).

Fluxes are tabulated on a fine logarithmic grid (``GRID_PER_DEX`` points per
decade) between ``s_min`` and ``s_max``; integrals use the trapezoid rule in
ln S, sampling inverts the tabulated cumulative counts.
"""

from __future__ import annotations

import numpy as np

HOPKINS_A = (0.859, 0.508, 0.376, -0.049, -0.121, 0.057, -0.008)
S_BREAK_1P4_JY = 5e-5
FAINT_SLOPE = 0.5
SPECTRAL_INDEX = -0.7
NU_REF_GHZ = 1.4
SFG_CROSS_1P4_JY = 2e-4
SFG_CROSS_SLOPE = 1.2
FAMILIES = ("alpha_s0", "broken", "tanh")
GRID_PER_DEX = 400
SR_PER_DEG2 = (np.pi / 180.0) ** 2


def euclidean_1p4(s_jy) -> np.ndarray:
    """S^2.5 dN/dS [Jy^1.5 sr⁻¹] at 1.4 GHz: Hopkins et al. (2003) above
    0.05 mJy, the S^0.5 extension below."""
    s = np.asarray(s_jy, dtype=np.float64)
    poly = np.polynomial.polynomial.polyval
    at_break = 10.0 ** poly(np.log10(S_BREAK_1P4_JY * 1e3), HOPKINS_A)
    bright = 10.0 ** poly(np.log10(np.maximum(s, S_BREAK_1P4_JY) * 1e3), HOPKINS_A)
    faint = at_break * (np.minimum(s, S_BREAK_1P4_JY) / S_BREAK_1P4_JY) ** FAINT_SLOPE
    return np.where(s >= S_BREAK_1P4_JY, bright, faint)


def flux_scale(freq_ghz: float) -> float:
    """k = S_ν / S_1.4 for the spectral index of the population."""
    return (float(freq_ghz) / NU_REF_GHZ) ** SPECTRAL_INDEX


def sfg_fraction(s_jy, freq_ghz: float) -> np.ndarray:
    """Fraction of star-forming galaxies among the sources of flux ``s_jy`` at ``freq_ghz``."""
    s14 = np.asarray(s_jy, dtype=np.float64) / flux_scale(freq_ghz)
    return 1.0 / (1.0 + (s14 / SFG_CROSS_1P4_JY) ** SFG_CROSS_SLOPE)


def n_base(s_jy, freq_ghz: float) -> np.ndarray:
    """Baseline differential counts dN/dS [Jy⁻¹ sr⁻¹] at ``freq_ghz``."""
    k = flux_scale(freq_ghz)
    s14 = np.asarray(s_jy, dtype=np.float64) / k
    return euclidean_1p4(s14) * s14 ** -2.5 / k


def modification(s_jy, family: str, p1: float, p2: float) -> np.ndarray:
    """The factor n(s) / n_base(s) of a modification family (module docstring)."""
    s = np.asarray(s_jy, dtype=np.float64)
    if family == "alpha_s0":
        return (1.0 + p2 / s) ** p1
    if family == "broken":
        return np.where(s < p2, (s / p2) ** p1, 1.0)
    if family == "tanh":
        return 1.0 + p1 * np.tanh(p2 / s) ** 4
    raise ValueError(f"unknown modification family {family!r}; expected one of {FAMILIES}")


def n_model(s_jy, freq_ghz: float, family: str = "alpha_s0", p1: float = 0.0, p2: float = 1e-5) -> np.ndarray:
    """Modified differential counts dN/dS [Jy⁻¹ sr⁻¹]."""
    return n_base(s_jy, freq_ghz) * modification(s_jy, family, p1, p2)


def flux_grid(s_min: float, s_max: float) -> np.ndarray:
    n = int(np.ceil(np.log10(s_max / s_min) * GRID_PER_DEX)) + 1
    return np.geomspace(s_min, s_max, n)


def cumulative(grid: np.ndarray, n: np.ndarray) -> np.ndarray:
    """N(< S) on ``grid`` [sr⁻¹] from dN/dS on the same grid (trapezoid in ln S)."""
    f = n * grid
    dln = np.diff(np.log(grid))
    return np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * dln)])


def counts_in_bins(edges_jy, area_sr: float, freq_ghz: float, family: str = "alpha_s0", p1: float = 0.0,
                   p2: float = 1e-5) -> np.ndarray:
    """Expected number of sources per flux bin over ``area_sr`` (each bin
    integrated on its own fine grid)."""
    edges = np.asarray(edges_jy, dtype=np.float64)
    out = np.empty(len(edges) - 1)
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        g = flux_grid(lo, hi)
        out[i] = cumulative(g, n_model(g, freq_ghz, family, p1, p2))[-1]
    return out * float(area_sr)


class CountLaw:
    """A tabulated count law between ``s_min`` and ``s_max``: expected numbers
    and sampling of fluxes."""

    def __init__(self, freq_ghz: float, s_min: float, s_max: float, family: str = "alpha_s0",
                 p1: float = 0.0, p2: float = 1e-5):
        if not 0 < s_min < s_max:
            raise ValueError(f"need 0 < s_min < s_max, got {s_min}, {s_max}")
        self.freq_ghz, self.family, self.p1, self.p2 = float(freq_ghz), family, float(p1), float(p2)
        self.grid = flux_grid(s_min, s_max)
        self.n = n_model(self.grid, freq_ghz, family, p1, p2)
        if not np.all(np.isfinite(self.n)) or np.any(self.n < 0):
            raise ValueError(f"modification {family}({p1}, {p2}) gives negative or infinite counts")
        self.cum = cumulative(self.grid, self.n)

    def total_per_sr(self) -> float:
        return float(self.cum[-1])

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` fluxes [Jy] drawn from the law (inverse of the cumulative,
        linear in ln S between grid points)."""
        u = rng.random(int(size)) * self.cum[-1]
        return np.exp(np.interp(u, self.cum, np.log(self.grid)))


def bin_edges(s_lo: float, s_hi: float, n_bins: int) -> np.ndarray:
    """Logarithmic flux-bin edges [Jy]."""
    return np.geomspace(float(s_lo), float(s_hi), int(n_bins) + 1)
