"""The classical baseline of notebook 07: a P(D) analysis of restored images.

P(D) is the probability distribution of pixel intensities D produced by a
population of sources seen through the beam (Scheuer 1957; Condon 1974; used
below the detection threshold by e.g. Condon et al. 2012, Vernstrom et al.
2014, Matthews et al. 2021). For a Poisson population the characteristic
function of D is

    ln φ(ω) = Σ_j μ_j Σ_k (exp(i ω S_j b_k) − 1),

where μ_j is the expected number of sources per pixel in the flux bin around
S_j (from the count law) and b_k runs over the beam values of the pixels.
Our restored images (:mod:`skyml.radio.simulate`) see sources fainter than the
CLEAN limit through the dirty beam (side lobes, negative values) and brighter
ones through the restoring beam, so b_k is taken from the beam of each S_j.
The noise adds a Gaussian of rms σ: φ → φ exp(−σ² ω² / 2). The distribution
is obtained by FFT on a grid of ``grid_size`` intensities spaced by σ/4
(±20 mJy for σ = 20 µJy; nothing brighter is simulated).

:class:`PDModel` precomputes, for each of ``n_flux`` logarithmic flux bins,
the transform of the intensities S_j b_k (cloud-in-cell on the grid), so that
a model evaluation is one matrix–vector product and one inverse FFT. The
transforms are exact sums of exp(−iωS_j b) over the beam values grouped in
narrow logarithmic bins of |b| (:func:`beam_histogram`); depositing the many
intensities far below the grid spacing on the grid instead would add a
spurious variance.
:func:`fit_field` fits (α, s0) of the seed's (1 + s0/s)^α modification, for
the known noise σ, to the pixel histogram of a field by Poisson maximum
likelihood (a grid in (α, log s0) over the simulations' prior range, then
Nelder–Mead), and turns the fit into
expected counts per flux bin. Neighbouring pixels are correlated (the beam
covers ≈26 pixels), which the likelihood ignores: the best fit is still a
consistent estimate, its formal errors would not be, and none are reported.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from . import counts as cl
from . import simulate as sim

#: starting grid of the fit: points per axis over the (α, log10 s0) search box
N_GRID = (7, 5)
HIST_RANGE_SIGMA = (-6.0, 20.0)


class PDModel:
    """P(D) of restored images of ``npix``² fields of a :class:`RadioSimParams`."""

    def __init__(self, params: sim.RadioSimParams, npix: int, n_flux: int = 150, grid_size: int = 8192,
                 beam_floor: float = 1e-3):
        self.params = params
        self.dx = params.noise_rms_jy / 4.0
        self.m = int(grid_size)
        edges = np.geomspace(params.s_min_jy, params.s_max_jy, n_flux + 1)
        self.s = np.sqrt(edges[1:] * edges[:-1])
        self.dln = np.log(edges[1:] / edges[:-1])
        s_clean = params.clean_nsigma * params.noise_rms_jy
        dirty = sim.fold_kernel(sim.dirty_beam(params), npix).ravel()
        clean = sim.fold_kernel(sim.clean_beam(params), npix).ravel()
        dirty, clean = dirty[np.abs(dirty) > beam_floor], clean[np.abs(clean) > beam_floor]
        omega = 2 * np.pi * np.fft.rfftfreq(self.m, d=self.dx)
        self.omega2 = omega**2
        beams = {False: beam_histogram(dirty), True: beam_histogram(clean)}
        self.h = np.empty((n_flux, self.m // 2 + 1), dtype=np.complex128)
        for j, s in enumerate(self.s):
            b, w = beams[bool(s > s_clean)]
            self.h[j] = np.exp(-1j * np.outer(omega, s * b)) @ w - w.sum()

    def mu(self, alpha: float, s0: float) -> np.ndarray:
        """Expected sources per pixel in each flux bin."""
        n = cl.n_model(self.s, self.params.freq_ghz, "alpha_s0", alpha, s0)
        return n * self.s * self.dln * self.params.pixel_sr

    def pmf(self, alpha: float, s0: float, sigma: float) -> np.ndarray:
        """P(D) on the grid, intensities ascending from −m/2·dx (:meth:`intensities`)."""
        log_phi = self.mu(alpha, s0) @ self.h - 0.5 * sigma**2 * self.omega2
        p = np.fft.irfft(np.exp(log_phi), n=self.m)
        return np.clip(np.fft.fftshift(p), 0.0, None)

    def intensities(self) -> np.ndarray:
        return (np.arange(self.m) - self.m // 2) * self.dx

    def hist_edges(self) -> np.ndarray:
        """Edges [Jy/beam] of the histogram bins (σ/2 wide), grid-aligned."""
        sig = self.params.noise_rms_jy
        lo, hi = (int(round(v * sig / self.dx)) for v in HIST_RANGE_SIGMA)
        return (np.arange(lo, hi + 1, 2) - 0.5) * self.dx

    def binned(self, pmf: np.ndarray) -> np.ndarray:
        """Model probabilities of [underflow, histogram bins, overflow]."""
        edges = self.hist_edges()
        idx = np.rint(edges / self.dx + 0.5).astype(int) + self.m // 2
        c = np.concatenate([[0.0], np.cumsum(pmf)])
        inner = np.diff(c[idx])
        return np.concatenate([[c[idx[0]]], inner, [c[-1] - c[idx[-1]]]])

    def observed(self, image: np.ndarray) -> np.ndarray:
        edges = self.hist_edges()
        x = np.asarray(image, np.float64).ravel()
        inner = np.histogram(x, edges)[0]
        return np.concatenate([[np.sum(x < edges[0])], inner, [np.sum(x >= edges[-1])]]).astype(np.float64)

    def neg_log_like(self, observed: np.ndarray, alpha: float, s0: float, sigma: float) -> float:
        expected = np.maximum(self.binned(self.pmf(alpha, s0, sigma)), 1e-300) * observed.sum()
        return float(np.sum(expected - observed * np.log(expected)))


def beam_histogram(values: np.ndarray, per_sign: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """(mean value, number of pixels) of the beam values in ``per_sign``
    logarithmic bins of |b| for each sign: the beam as P(D) needs it."""
    v = np.asarray(values, np.float64)
    v = v[v != 0]
    lo, hi = np.abs(v).min(), np.abs(v).max() * (1 + 1e-9)
    edges = np.geomspace(lo, hi, per_sign + 1)
    means, counts = [], []
    for sign in (-1.0, 1.0):
        part = np.abs(v[np.sign(v) == sign])
        idx = np.clip(np.searchsorted(edges, part, side="right") - 1, 0, per_sign - 1)
        n = np.bincount(idx, minlength=per_sign)
        total = np.bincount(idx, weights=part, minlength=per_sign)
        keep = n > 0
        means.append(sign * total[keep] / n[keep])
        counts.append(n[keep].astype(np.float64))
    return np.concatenate(means), np.concatenate(counts)


def fit_field(model: PDModel, image: np.ndarray, sigma_jy: float | None = None, alpha_range=None,
              s0_range=None) -> dict:
    """Best (α, s0) of the P(D) of ``image`` (a restored field, Jy/beam) for
    the noise rms ``sigma_jy`` (default: the simulated one). The noise is
    fixed, as when it is measured independently (Stokes V or a noise map):
    left free, it is degenerate with the faint counts, whose P(D) signal is
    nearly Gaussian too (the fit then drives α to the edge of its range).

    The search box is ``alpha_range`` × ``s0_range``, by default the prior the
    simulations are drawn from (``RadioSimParams.alpha_range``/``s0_range``),
    which is also what the network's training set spans: both methods know
    the same range. On a wider box (α in [−1.5, 1], s0 down to 1e-7 Jy) most
    fits ran into a flat valley at s0 below 1e-6 Jy, where the modification
    only touches the faintest bin and α is unconstrained, and stopped at the
    α bound. The valley is a property of P(D), not of the optimiser: on
    pixels drawn from the model itself, (α, s0) pairs whose counts differ by
    tens of per cent in the bins below ~2e-6 Jy differ by about one unit of
    log-likelihood, so inside the box too the best fit often lies on an edge
    (``at_bound``: whether it does)."""
    p = model.params
    a_lo, a_hi = p.alpha_range if alpha_range is None else alpha_range
    s_lo, s_hi = p.s0_range if s0_range is None else s0_range
    ls_lo, ls_hi = np.log10(s_lo), np.log10(s_hi)
    obs = model.observed(image)
    sig = p.noise_rms_jy if sigma_jy is None else float(sigma_jy)
    grid = [(model.neg_log_like(obs, a, 10.0**ls, sig), a, ls)
            for a in np.linspace(a_lo, a_hi, N_GRID[0]) for ls in np.linspace(ls_lo, ls_hi, N_GRID[1])]
    _, a0, ls0 = min(grid)

    def cost(q):
        a, ls = q
        if not (a_lo <= a <= a_hi and ls_lo <= ls <= ls_hi):
            return 1e30
        return model.neg_log_like(obs, a, 10.0**ls, sig)

    step_a, step_ls = 0.1 * (a_hi - a_lo), 0.1 * (ls_hi - ls_lo)
    simplex = [[a0, ls0], [a0 + step_a if a0 + step_a <= a_hi else a0 - step_a, ls0],
               [a0, ls0 + step_ls if ls0 + step_ls <= ls_hi else ls0 - step_ls]]
    res = minimize(cost, [a0, ls0], method="Nelder-Mead",
                   options={"xatol": 1e-3, "fatol": 1e-2, "initial_simplex": simplex})
    a, ls = res.x
    tol_a, tol_ls = 1e-2 * (a_hi - a_lo), 1e-2 * (ls_hi - ls_lo)
    at_bound = bool(min(a - a_lo, a_hi - a) < tol_a or min(ls - ls_lo, ls_hi - ls) < tol_ls)
    return {"alpha": float(a), "s0": float(10.0**ls), "sigma_jy": sig, "nll": float(res.fun),
            "n_eval": int(res.nfev) + len(grid), "at_bound": at_bound}


def _fit_item(image, model: PDModel, kwargs: dict) -> dict:
    return fit_field(model, image, **kwargs)


def fit_fields(model: PDModel, images, progress=None, **kwargs) -> list[dict]:
    """:func:`fit_field` of every image, through :func:`skyml.parallel.map_items`
    (in this process or on dask workers, the same fits; the model is sent to
    each worker once)."""
    from .. import parallel

    return parallel.map_items(_fit_item, list(images), progress=progress, desc="P(D) fits", model=model,
                              kwargs=kwargs)


def counts_from_fit(fit: dict, params: sim.RadioSimParams, area_sr: float) -> np.ndarray:
    """Expected counts per label bin over ``area_sr`` of a P(D) fit."""
    return cl.counts_in_bins(params.edges_jy, area_sr, params.freq_ghz, "alpha_s0", fit["alpha"], fit["s0"])
