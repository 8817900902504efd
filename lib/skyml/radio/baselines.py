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
the transform of the intensities S_j b_k, so that a model evaluation is one
matrix–vector product and one inverse FFT. The beam values with
|b| > ``beam_floor`` enter exactly, as sums of exp(−iωS_j b) over narrow
logarithmic bins of |b| (:func:`beam_histogram`; depositing the many
intensities far below the grid spacing on the grid instead would add a
spurious variance). The many values below the floor (the far side lobes of
the dirty beam: ≈10⁴ pixels) enter through their first two cumulants,
−iωS_j Σb − ω²S_j² Σb²/2, which is exact to second order in ωS_j b ≤ 10⁻³.
Leaving them out, as an earlier version did, is not harmless: the dirty beam
integrates to zero (no zero spacing), its main lobe and near side lobes sum
to about +0.2 and the far side lobes to about −0.2, so without them every
source below the CLEAN limit got a spurious positive mean; fitted to the
pixel histogram, the model then asked for too few faint sources and every
fit ended on the edge of the prior box. :meth:`PDModel.beam_sums` returns
the first two moments of the beam as the model represents them.

Neighbouring pixels are correlated: the noise is white noise convolved with
the dirty beam, whose side lobes reach far. The pixel-histogram likelihood
of independent pixels overstates the information by the number of pixels
per independent sample; for a second-order (variance-like) statistic of a
Gaussian field that number is Σ_lag ρ(lag)², ρ the normalised
autocorrelation of the noise (the first-order term Σρ vanishes because the
dirty beam integrates to zero). :class:`PDModel` computes it on the field's
torus (``pixels_per_sample``) and :func:`fit_field` divides the
log-likelihood by it.

:func:`fit_field` returns a grid posterior over (α, log10 s0) of the seed's
(1 + s0/s)^α modification, for the known noise σ, with the prior the
simulations are drawn from (uniform in α and in log s0 over their box): the
posterior means, 68 % credible intervals, and the posterior weights, from
which :func:`counts_from_fit` gives the posterior mean counts per flux bin
and :func:`counts_interval_from_fit` their 68 % credible interval. A
posterior mean is not forced onto the edge of the box as a constrained
maximum is when the likelihood has a flat valley (the faint counts change
little along it); ``at_bound`` records whether the estimate lies within 1 %
of the box width of an edge, ``map_at_bound`` whether the most probable grid
cell is an edge cell.
"""

from __future__ import annotations

import numpy as np

from . import counts as cl
from . import simulate as sim

#: grid of the posterior: cell centres per axis over the (α, log10 s0) prior box
N_GRID = (31, 21)
#: a posterior whose 68 % interval spans fewer cells than this on an axis gets a finer grid
REFINE_CELLS = 6
HIST_RANGE_SIGMA = (-6.0, 20.0)
#: posterior weights below this fraction of the largest are left out of the counts
WEIGHT_FLOOR = 1e-9


def _split_beam(values: np.ndarray, floor: float):
    """(values with |b| > floor, sum and sum of squares of the others)."""
    v = np.asarray(values, np.float64).ravel()
    big = np.abs(v) > floor
    small = v[~big]
    return v[big], float(small.sum()), float(np.sum(small**2))


def pixels_per_sample(kernel: np.ndarray, npix: int) -> float:
    """Σ ρ² over all lags of the normalised autocorrelation ρ of white noise
    convolved with ``kernel`` on an ``npix``² torus: the number of correlated
    pixels per independent sample of a second-order statistic."""
    k = sim.fold_kernel(kernel, npix)
    ac = np.fft.irfft2(np.abs(np.fft.rfft2(k)) ** 2, s=(npix, npix))
    rho = ac / ac[0, 0]
    return float(np.sum(rho**2))


class PDModel:
    """P(D) of restored images of ``npix``² fields of a :class:`RadioSimParams`.

    By default the instrument of :mod:`skyml.radio.simulate` (dirty beam
    below the CLEAN limit, restoring beam above it, noise correlated by the
    dirty beam). ``kernels`` = (beam of the sources below the CLEAN limit,
    beam of those above it, kernel of the noise), each centred on a square
    grid, gives another instrument; ``zero_mean`` models images whose mean
    was removed (the model's mean intensity is subtracted: the first cumulant
    of the sources leaves the characteristic function)."""

    def __init__(self, params: sim.RadioSimParams, npix: int, n_flux: int = 150, grid_size: int = 8192,
                 beam_floor: float = 1e-3, kernels=None, zero_mean: bool = False):
        self.params = params
        self.npix = int(npix)
        self.dx = params.noise_rms_jy / 4.0
        self.m = int(grid_size)
        edges = np.geomspace(params.s_min_jy, params.s_max_jy, n_flux + 1)
        self.s = np.sqrt(edges[1:] * edges[:-1])
        self.dln = np.log(edges[1:] / edges[:-1])
        self.s_clean = params.clean_nsigma * params.noise_rms_jy
        omega = 2 * np.pi * np.fft.rfftfreq(self.m, d=self.dx)
        self.omega = omega
        self.omega2 = omega**2
        if kernels is None:
            kernels = (sim.dirty_beam(params), sim.clean_beam(params), sim.dirty_beam(params))
        faint_beam, bright_beam, noise_kernel = kernels
        self.zero_mean = bool(zero_mean)
        self.beams = {}
        for restored, kernel in ((False, faint_beam), (True, bright_beam)):
            big, r1, r2 = _split_beam(sim.fold_kernel(kernel, npix), beam_floor)
            self.beams[restored] = (*beam_histogram(big), r1, r2)
        self.h = np.empty((n_flux, self.m // 2 + 1), dtype=np.complex128)
        for j, s in enumerate(self.s):
            b, w, r1, r2 = self.beams[bool(s > self.s_clean)]
            self.h[j] = (np.exp(-1j * np.outer(omega, s * b)) @ w - w.sum()
                         - 1j * omega * s * r1 - 0.5 * self.omega2 * s**2 * r2)
            if self.zero_mean:
                self.h[j] += 1j * omega * s * (w @ b + r1)
        self.pixels_per_sample = pixels_per_sample(noise_kernel, self.npix)

    def beam_sums(self, restored: bool) -> tuple[float, float]:
        """(Σb, Σb²) of the dirty (``restored`` False) or restoring beam as the
        model represents it (its histogram plus the cumulants below the floor)."""
        b, w, r1, r2 = self.beams[bool(restored)]
        return float(w @ b + r1), float(w @ b**2 + r2)

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
        """Poisson −ln L of the histogram ``observed`` for independent pixels
        (:func:`fit_field` divides it by :attr:`pixels_per_sample`)."""
        expected = np.maximum(self.binned(self.pmf(alpha, s0, sigma)), 1e-300) * observed.sum()
        return float(np.sum(expected - observed * np.log(expected)))

    def neg_log_like_many(self, observed: np.ndarray, alphas, s0s, sigma: float, batch: int = 64) -> np.ndarray:
        """:meth:`neg_log_like` of many (α, s0) pairs, in batches of matrix products."""
        alphas, s0s = np.ravel(alphas), np.ravel(s0s)
        edges = self.hist_edges()
        idx = np.rint(edges / self.dx + 0.5).astype(int) + self.m // 2
        out = np.empty(len(alphas))
        for i in range(0, len(alphas), batch):
            mu = np.array([self.mu(a, s0) for a, s0 in zip(alphas[i:i + batch], s0s[i:i + batch])])
            log_phi = (mu @ self.h.real - 0.5 * sigma**2 * self.omega2) + 1j * (mu @ self.h.imag)
            p = np.clip(np.fft.fftshift(np.fft.irfft(np.exp(log_phi), n=self.m, axis=1), axes=1), 0.0, None)
            c = np.concatenate([np.zeros((len(p), 1)), np.cumsum(p, axis=1)], axis=1)
            binned = np.concatenate([c[:, idx[:1]], np.diff(c[:, idx], axis=1), c[:, -1:] - c[:, idx[-1:]]], axis=1)
            expected = np.maximum(binned, 1e-300) * observed.sum()
            out[i:i + batch] = np.sum(expected - observed * np.log(expected), axis=1)
        return out


def beam_histogram(values: np.ndarray, per_sign: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """(mean value, number of pixels) of the beam values in ``per_sign``
    logarithmic bins of |b| for each sign: the beam as P(D) needs it (the
    sum of the values is kept exactly)."""
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


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, q) -> np.ndarray:
    order = np.argsort(values)
    c = np.cumsum(weights[order])
    c = (c - 0.5 * weights[order]) / c[-1]
    return np.interp(q, c, values[order])


def _grid_posterior(model: PDModel, obs: np.ndarray, sig: float, a_box, ls_box, n_grid):
    """Cell centres (α, log10 s0) of ``n_grid`` equal cells of the box, −ln L, normalised weights."""
    (a_lo, a_hi), (ls_lo, ls_hi) = a_box, ls_box
    na, ns = (int(v) for v in n_grid)
    a_grid = a_lo + (np.arange(na) + 0.5) * (a_hi - a_lo) / na
    ls_grid = ls_lo + (np.arange(ns) + 0.5) * (ls_hi - ls_lo) / ns
    aa, ll = np.meshgrid(a_grid, ls_grid, indexing="ij")
    nll = model.neg_log_like_many(obs, aa.ravel(), 10.0 ** ll.ravel(), sig).reshape(aa.shape)
    w = np.exp(-(nll - nll.min()) / model.pixels_per_sample)
    return aa, ll, nll, w / w.sum()


def fit_field(model: PDModel, image: np.ndarray, sigma_jy: float | None = None, alpha_range=None,
              s0_range=None, n_grid=N_GRID) -> dict:
    """Grid posterior of (α, log10 s0) from the P(D) of ``image`` (a restored
    field, Jy/beam) for the noise rms ``sigma_jy`` (default: the simulated
    one). The noise is fixed, as when it is measured independently (Stokes V
    or a noise map): left free, it is degenerate with the faint counts, whose
    P(D) signal is nearly Gaussian too.

    The prior is uniform in α over ``alpha_range`` and in log10 s0 over
    ``s0_range``, by default the range the simulations are drawn from
    (``RadioSimParams.alpha_range``/``s0_range``), which is also what the
    network's training set spans: both methods know the same range. The
    likelihood is the Poisson likelihood of the pixel histogram divided by
    ``model.pixels_per_sample`` (module docstring), evaluated at the centres
    of ``n_grid`` equal cells; where the posterior is narrower than
    :data:`REFINE_CELLS` cells on an axis, the grid is laid again, with as
    many cells, over the part of the box that holds all but 10⁻⁴ of the
    mass on each side (plus two coarse cells). Returns the posterior means
    ``alpha`` and ``s0`` (10 to the mean of log10 s0), their 68 % credible
    intervals ``alpha_ci68``/``s0_ci68``, the grid and its normalised
    ``weights`` (for :func:`counts_from_fit`), ``at_bound`` (the estimate
    within 1 % of the box width of an edge of the prior box),
    ``map_at_bound`` (the most probable cell of the coarse grid on its edge)
    and ``nll`` (the smallest −ln L, unscaled)."""
    p = model.params
    a_lo, a_hi = p.alpha_range if alpha_range is None else alpha_range
    s_lo, s_hi = p.s0_range if s0_range is None else s0_range
    ls_lo, ls_hi = float(np.log10(s_lo)), float(np.log10(s_hi))
    obs = model.observed(image)
    sig = p.noise_rms_jy if sigma_jy is None else float(sigma_jy)
    aa, ll, nll, w = _grid_posterior(model, obs, sig, (a_lo, a_hi), (ls_lo, ls_hi), n_grid)
    na, ns = w.shape
    ia, il = np.unravel_index(int(np.argmax(w)), w.shape)
    map_at_bound = bool(ia in (0, na - 1) or il in (0, ns - 1))
    n_eval = w.size
    cell = ((a_hi - a_lo) / na, (ls_hi - ls_lo) / ns)
    boxes = []
    for vals, c, lo, hi in ((aa, cell[0], a_lo, a_hi), (ll, cell[1], ls_lo, ls_hi)):
        q = _weighted_quantiles(vals.ravel(), w.ravel(), [1e-4, 0.16, 0.84, 1 - 1e-4])
        narrow = (q[2] - q[1]) < REFINE_CELLS * c
        boxes.append((max(lo, q[0] - 2 * c), min(hi, q[3] + 2 * c)) if narrow else (lo, hi))
    if boxes != [(a_lo, a_hi), (ls_lo, ls_hi)]:
        aa, ll, nll2, w = _grid_posterior(model, obs, sig, boxes[0], boxes[1], n_grid)
        nll = np.minimum(nll.min(), nll2.min())
        n_eval += w.size
    a_mean, ls_mean = float(np.sum(w * aa)), float(np.sum(w * ll))
    a_ci = _weighted_quantiles(aa.ravel(), w.ravel(), [0.16, 0.84])
    ls_ci = _weighted_quantiles(ll.ravel(), w.ravel(), [0.16, 0.84])
    tol_a, tol_ls = 1e-2 * (a_hi - a_lo), 1e-2 * (ls_hi - ls_lo)
    at_bound = bool(min(a_mean - a_lo, a_hi - a_mean) < tol_a or min(ls_mean - ls_lo, ls_hi - ls_mean) < tol_ls)
    return {"alpha": a_mean, "s0": float(10.0**ls_mean), "alpha_ci68": [float(v) for v in a_ci],
            "s0_ci68": [float(10.0**v) for v in ls_ci], "sigma_jy": sig, "nll": float(np.min(nll)),
            "grid_alpha": aa.ravel(), "grid_s0": 10.0 ** ll.ravel(), "weights": w.ravel(),
            "pixels_per_sample": model.pixels_per_sample, "n_eval": int(n_eval), "at_bound": at_bound,
            "map_at_bound": map_at_bound}


def _fit_item(image, model: PDModel, kwargs: dict) -> dict:
    return fit_field(model, image, **kwargs)


def fit_fields(model: PDModel, images, progress=None, **kwargs) -> list[dict]:
    """:func:`fit_field` of every image, through :func:`skyml.parallel.map_items`
    (in this process or on dask workers, the same fits; the model is sent to
    each worker once)."""
    from .. import parallel

    return parallel.map_items(_fit_item, list(images), progress=progress, desc="P(D) fits", model=model,
                              kwargs=kwargs)


def grid_counts(params: sim.RadioSimParams, alphas, s0s) -> np.ndarray:
    """(n, n_bins) expected counts per sr in the label bins of the (α, s0)
    modification for each pair: :func:`skyml.radio.counts.counts_in_bins`
    (the same fine grids and trapezoid rule), for many pairs at once."""
    alphas, s0s = np.ravel(alphas)[:, None], np.ravel(s0s)[:, None]
    edges = params.edges_jy
    out = np.empty((len(alphas), len(edges) - 1))
    for i in range(len(edges) - 1):
        g = cl.flux_grid(edges[i], edges[i + 1])
        f = cl.n_base(g, params.freq_ghz) * (1.0 + s0s / g) ** alphas * g
        out[:, i] = np.sum(0.5 * (f[:, 1:] + f[:, :-1]) * np.diff(np.log(g)), axis=1)
    return out


def _posterior_counts(fit: dict, params: sim.RadioSimParams) -> tuple[np.ndarray, np.ndarray]:
    """(counts per label bin per sr of the grid cells that carry weight, their weights)."""
    w = np.asarray(fit["weights"], np.float64)
    keep = w > WEIGHT_FLOOR * w.max()
    per_sr = grid_counts(params, np.asarray(fit["grid_alpha"])[keep], np.asarray(fit["grid_s0"])[keep])
    return per_sr, w[keep] / w[keep].sum()


def counts_from_fit(fit: dict, params: sim.RadioSimParams, area_sr: float) -> np.ndarray:
    """Posterior mean of the expected counts per label bin over ``area_sr``
    of a P(D) fit (:func:`fit_field`)."""
    per_sr, w = _posterior_counts(fit, params)
    return (w @ per_sr) * float(area_sr)


def counts_interval_from_fit(fit: dict, params: sim.RadioSimParams, area_sr: float,
                             level: float = 0.68) -> np.ndarray:
    """(n_bins, 2) central credible interval of the expected counts per label
    bin over ``area_sr`` of a P(D) fit."""
    per_sr, w = _posterior_counts(fit, params)
    q = [0.5 - level / 2, 0.5 + level / 2]
    return np.array([_weighted_quantiles(per_sr[:, b], w, q) for b in range(per_sr.shape[1])]) * float(area_sr)
