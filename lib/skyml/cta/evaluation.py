"""Per-map evaluation of the CTA cleaner and localisers against the truth.

Small functions that turn predictions of any method (networks or classical
baselines) into per-map tables; the notebooks compute metrics from these
tables and write them next to the metrics files, and the results-figures
notebook draws from them.
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table

from .. import metrics
from . import baselines
from .simulate import background_for, map_wcs

#: error assigned to a method that returns no position for a map (a miss)
MISS_ERROR_DEG = 180.0


def aperture_masks(maps: dict, on_radius_deg=0.2, ring_inner_deg=0.5, ring_outer_deg=0.9):
    """On-region and ring masks around each map's true source, (n, ny, nx) bool."""
    n, ny, nx = maps["counts"].shape
    on = np.empty((n, ny, nx), dtype=bool)
    off = np.empty_like(on)
    for i in range(n):
        wcs = map_wcs(maps["pnt_ra_deg"][i], maps["pnt_dec_deg"][i], ny)
        centre = (maps["src_ra_deg"][i], maps["src_dec_deg"][i])
        on[i] = baselines.on_region_mask(wcs, centre, on_radius_deg, shape=(ny, nx))
        off[i] = baselines.ring_mask(wcs, centre, ring_inner_deg, ring_outer_deg, shape=(ny, nx))
    return on, off


def cleaner_photometry(maps: dict, cleaned_counts: np.ndarray, on: np.ndarray, off: np.ndarray,
                       background_norms: dict[str, np.ndarray] | None = None) -> Table:
    """On-region excess of the truth, the CNN-Cleaner, IRF-template subtraction,
    the ring background and, for each entry ``name: norms`` of
    ``background_norms``, the template scaled by a fitted normalisation per map
    (column ``excess_<name>``). ``sig_lima`` is the Li & Ma significance of the
    raw map (on region against the ring); a cleaned map is not Poisson
    distributed, so no significance is computed on it.
    """
    counts = maps["counts"].astype(float)
    background = background_for(maps).astype(float)
    truth = np.sum(np.where(on, maps["source_counts"], 0), axis=(1, 2)).astype(float)
    _, _, excess_irf = baselines.excess_irf(counts, background, on)
    n_on, n_off, alpha, excess_ring = baselines.excess_ring(counts, background, on, off)
    columns = {
        "excess_true": truth,
        "excess_cnn": np.sum(np.where(on, cleaned_counts, 0.0), axis=(1, 2)),
        "excess_irf": excess_irf, "excess_ring": excess_ring,
    }
    for name, norms in (background_norms or {}).items():
        scaled = np.asarray(norms, dtype=float)[:, None, None] * background
        columns[f"excess_{name}"] = baselines.excess_irf(counts, scaled, on)[2]
    columns.update({"sig_lima": metrics.lima_significance(n_on, n_off, alpha),
                    "npred_source": maps["npred_source"], "bkg_norm": maps["bkg_norm"], "irf_id": maps["irf_id"]})
    return Table(columns)


def talk_metric_excesses(maps: dict, cleaned_smooth: np.ndarray, on: np.ndarray, smooth_sigma_px: float):
    """On-region excesses of the talk's cleaner metric (astroAI ``cnn-cleaner``
    notebook): the cleaner's output on maps smoothed with a Gaussian of
    ``smooth_sigma_px`` against "STD", the same smoothed counts map minus the
    same smoothed IRF background template. Returns ``(excess_cnn, excess_std)``
    per map; the metric is the 68th percentile of ``|cnn - std| / std`` over
    maps with ``std > 0``.
    """
    from . import models

    counts = models.smooth(maps["counts"], smooth_sigma_px).astype(float)
    template = models.smooth(background_for(maps), smooth_sigma_px).astype(float)
    excess_std = np.sum(np.where(on, counts - template, 0.0), axis=(1, 2))
    excess_cnn = np.sum(np.where(on, cleaned_smooth, 0.0), axis=(1, 2))
    return excess_cnn, excess_std


def angular_errors(maps: dict, ra_deg, dec_deg) -> np.ndarray:
    """Angular distance [deg] of predicted positions from the true ones; a
    NaN prediction (no detection) counts as a miss of :data:`MISS_ERROR_DEG`."""
    ra_deg, dec_deg = np.asarray(ra_deg, float), np.asarray(dec_deg, float)
    err = np.full(len(ra_deg), MISS_ERROR_DEG)
    ok = np.isfinite(ra_deg) & np.isfinite(dec_deg)
    err[ok] = metrics.angular_separation_deg(ra_deg[ok], dec_deg[ok], maps["src_ra_deg"][: len(ra_deg)][ok],
                                             maps["src_dec_deg"][: len(ra_deg)][ok])
    return err


def crlb_errors(maps: dict, binsz_deg: float, rng: np.random.Generator, n: int | None = None):
    """Per-map Cramér–Rao bound: the 68 % radius [deg] of each map's position
    covariance, and one draw of the radial error [deg] of an ideal unbiased
    estimator per map (for ensemble containment)."""
    covs = crlb_covariances(maps, binsz_deg, n)
    radius68 = np.empty(len(covs))
    draws = np.empty(len(covs))
    for i, cov in enumerate(covs):
        radius68[i] = baselines.crlb_radius68(cov) * binsz_deg
        draws[i] = baselines.crlb_error_samples(cov, rng)[0] * binsz_deg
    return radius68, draws


def crlb_covariances(maps: dict, binsz_deg: float, n: int | None = None) -> np.ndarray:
    """Cramér–Rao covariance of the source position of each of the first ``n``
    maps, pixel² (n, 2, 2), from :func:`baselines.crlb_position_cov` with the
    map's true background, source counts and PSF. Cached in
    ``data/cache/cta_crlb/`` by the SHA-256 of those inputs (a second run, or a
    workshop room after ``make workshop-unpack``, loads them)."""
    from .. import cache

    n = len(maps["counts"]) if n is None else int(n)
    fields = [np.asarray(maps[k])[:n] for k in ("src_x_pix", "src_y_pix", "npred_source", "bkg_norm",
                                                 "psf_sigmas_deg", "psf_weights", "irf_id")]
    key = {"inputs": cache.array_digest(*fields, np.asarray(maps["background_templates"])),
           "binsz_deg": float(binsz_deg), "version": 1}

    def build():
        covs = np.empty((n, 2, 2))
        for i in range(n):
            mu_bkg = maps["bkg_norm"][i] * background_for(maps, i).astype(float)
            covs[i] = baselines.crlb_position_cov(
                maps["src_x_pix"][i], maps["src_y_pix"][i], maps["npred_source"][i], mu_bkg,
                maps["psf_sigmas_deg"][i] / binsz_deg, maps["psf_weights"][i])
        return {"covs": covs}

    return cache.cached_arrays("cta_crlb", key, build, verbose=False)["covs"]


def tune_fov_threshold(maps: dict, thresholds, on_radius_deg: float = 0.2) -> dict:
    """Choose the exclusion threshold of :func:`baselines.fov_background_norm`
    on (validation) maps: the one with the smallest 68th percentile of the
    on-region excess's relative error against the true source counts.

    Returns ``{"threshold", "scores" (threshold -> score), "interior"}``;
    ``interior`` is True when the chosen value is strictly inside the grid
    (not its smallest or largest value), as a tuned baseline must be.
    """
    grid = sorted(float(t) for t in thresholds)
    if len(grid) < 3:
        raise ValueError("tune_fov_threshold: give at least three thresholds")
    on, _ = aperture_masks(maps, on_radius_deg)
    counts = maps["counts"].astype(float)
    template = background_for(maps).astype(float)
    truth = np.sum(np.where(on, maps["source_counts"], 0), axis=(1, 2)).astype(float)
    usable = truth > 0
    scores = {}
    all_norms = baselines.fov_background_norms(maps["counts"], template, grid)
    for thr, norms in zip(grid, all_norms):
        excess = baselines.excess_irf(counts, norms[:, None, None] * template, on)[2]
        scores[thr] = metrics.relative_error_percentile(excess[usable], truth[usable])
    best = min(grid, key=scores.get)
    return {"threshold": best, "scores": scores, "interior": grid[0] < best < grid[-1]}


#: Methods of the cleaner comparison: column suffix -> label.
CLEANER_METHODS = {"cnn": "CNN-Cleaner", "bgnet": "learned FoV fit", "fov": "FoV fit (classical)",
                   "irf": "IRF template", "ring": "ring background (needs position)"}


def compare_cleaners(maps: dict, cleaned: np.ndarray, cleaned_talk: np.ndarray, norms: dict,
                     on_radius_deg: float, talk_smooth_sigma_px: float, n_boot: int = 1000, seed: int = 0):
    """Both cleaner metrics for every method of :data:`CLEANER_METHODS` on one test set.

    ``cleaned``: the CNN-Cleaner's maps in counts (unsmoothed training);
    ``cleaned_talk``: the talk-preprocessed cleaner's maps (trained on maps
    smoothed with ``talk_smooth_sigma_px``); ``norms``: background
    normalisations per map for ``"bgnet"`` and ``"fov"``. Returns the per-map
    table and a summary: for each method ``relerr68`` (true-count metric),
    its bootstrap ``ci68`` and the median ``bias``; ``talk_metric`` with its
    ``ci68`` and the number of maps it uses (those with a positive STD excess).
    """
    on, off = aperture_masks(maps, on_radius_deg)
    table = cleaner_photometry(maps, cleaned, on, off, background_norms=norms)
    t = table[table["excess_true"] > 0]
    true = np.asarray(t["excess_true"])
    summary = {"n_maps": len(t)}
    for m in CLEANER_METHODS:
        est = np.asarray(t[f"excess_{m}"])
        summary[m] = {"relerr68": metrics.relative_error_percentile(est, true),
                      "ci68": metrics.bootstrap_ci(metrics.relative_error_percentile, est, true,
                                                   n_resamples=n_boot, seed=seed),
                      "bias": float(np.median((est - true) / true))}
    talk_cnn, talk_std = talk_metric_excesses(maps, cleaned_talk, on, talk_smooth_sigma_px)
    ok = talk_std > 0
    summary["talk_metric"] = metrics.relative_error_percentile(talk_cnn[ok], talk_std[ok])
    summary["talk_metric_ci68"] = metrics.bootstrap_ci(metrics.relative_error_percentile, talk_cnn[ok], talk_std[ok],
                                                       n_resamples=n_boot, seed=seed)
    summary["n_maps_talk_metric"] = int(ok.sum())
    return table, summary


# --------------------------------------------------------------------------- shifted test set
def r68(errors) -> float:
    """68 % containment radius of angular errors."""
    return metrics.containment(np.asarray(errors, dtype=float), 0.68)


def flux_bin_index(flux, edges) -> np.ndarray:
    """Bin of each flux among ``edges`` (values outside go to the first or last bin)."""
    edges = np.asarray(edges, dtype=float)
    return np.clip(np.searchsorted(edges, np.asarray(flux, dtype=float), side="right") - 1, 0, len(edges) - 2)


def per_flux_bin_r68(errors: dict, flux, edges) -> dict:
    """68 % error of each method in each flux bin: ``{method: [r68 per bin]}``
    (NaN for a bin with fewer than two maps)."""
    b = flux_bin_index(flux, edges)
    out = {}
    for m, e in errors.items():
        e = np.asarray(e, dtype=float)
        out[m] = [r68(e[b == k]) if np.sum(b == k) >= 2 else float("nan") for k in range(len(edges) - 1)]
    return out


def localisation_metrics(errors: dict, suffix: str, crlb_key: str = "crlb", n_boot: int = 1000,
                         seed: int = 0) -> dict:
    """Headline localisation metrics of one test set, with keys ending in ``suffix``.

    ``errors``: ``{method: per-map angular errors [deg]}`` on the same maps,
    ``errors[crlb_key]`` the per-map draws of the Cramér–Rao bound. For each
    method: ``loc_err68_deg_<method><suffix>`` and its bootstrap ``_ci68``;
    for each method other than the bound, ``crlb_ratio_<method><suffix>``
    (its 68 % error over the bound's) and the paired bootstrap ``_ci68`` of
    the ratio (maps resampled together for both), and the tail of its errors:
    ``frac_err_gt_0p1deg_<method><suffix>`` (fraction of maps with an error
    above 0.1 deg, with its bootstrap ``_ci68``), ``loc_err_median_deg_<method><suffix>``
    and ``loc_tail_frac_0p2deg_<method><suffix>`` (above 0.2 deg), the same
    quantities as those of the in-distribution test maps.
    """
    if crlb_key not in errors:
        raise KeyError(f"localisation_metrics: no {crlb_key!r} errors")
    n = {len(e) for e in errors.values()}
    if len(n) != 1:
        raise ValueError("localisation_metrics: every method needs errors on the same maps")
    crlb = np.asarray(errors[crlb_key], dtype=float)

    # the statistics of the intervals, on all resamples at once (the point values check for NaN)
    def r68_along(a, axis=-1):
        return np.quantile(a, 0.68, axis=axis)

    def ratio_along(a, c, axis=-1):
        return np.quantile(a, 0.68, axis=axis) / np.quantile(c, 0.68, axis=axis)

    def tail_along(a, axis=-1):
        return np.mean(a > 0.1, axis=axis)

    boot = dict(n_resamples=n_boot, seed=seed, vectorized=True)
    out = {}
    for m, e in errors.items():
        e = np.asarray(e, dtype=float)
        out[f"loc_err68_deg_{m}{suffix}"] = r68(e)
        out[f"loc_err68_deg_{m}{suffix}_ci68"] = metrics.bootstrap_ci(r68_along, e, **boot)
        if m != crlb_key:
            out[f"crlb_ratio_{m}{suffix}"] = r68(e) / r68(crlb)
            out[f"crlb_ratio_{m}{suffix}_ci68"] = metrics.bootstrap_ci(ratio_along, e, crlb, **boot)
            out[f"frac_err_gt_0p1deg_{m}{suffix}"] = metrics.tail_fraction(e, 0.1)
            out[f"frac_err_gt_0p1deg_{m}{suffix}_ci68"] = metrics.bootstrap_ci(tail_along, e, **boot)
            out[f"loc_err_median_deg_{m}{suffix}"] = float(np.median(e))
            out[f"loc_tail_frac_0p2deg_{m}{suffix}"] = metrics.tail_fraction(e, 0.2)
    return out
