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


def cleaner_photometry(maps: dict, cleaned_counts: np.ndarray, on: np.ndarray, off: np.ndarray) -> Table:
    """On-region excess of the truth, the CNN-Cleaner, IRF-template subtraction
    and the ring background; Li&Ma significance before and after cleaning.

    The significance "after" applies the same on/ring Li&Ma formula to the
    cleaned map (in counts); a cleaned map is not Poisson distributed, so it
    is the talk's heuristic measure of how much the cleaning isolates the
    source, not a calibrated significance.
    """
    counts = maps["counts"].astype(float)
    background = background_for(maps).astype(float)
    truth = np.sum(np.where(on, maps["source_counts"], 0), axis=(1, 2)).astype(float)
    _, _, excess_irf = baselines.excess_irf(counts, background, on)
    n_on, n_off, alpha, excess_ring = baselines.excess_ring(counts, background, on, off)
    excess_cnn = np.sum(np.where(on, cleaned_counts, 0.0), axis=(1, 2))
    sig_before = metrics.lima_significance(n_on, n_off, alpha)
    c_on = np.sum(np.where(on, cleaned_counts, 0.0), axis=(1, 2))
    c_off = np.sum(np.where(off, np.clip(cleaned_counts, 0, None), 0.0), axis=(1, 2))
    sig_after = metrics.lima_significance(c_on, c_off, alpha)
    return Table({
        "excess_true": truth, "excess_cnn": excess_cnn, "excess_irf": excess_irf, "excess_ring": excess_ring,
        "sig_lima_before": sig_before, "sig_lima_after": sig_after,
        "npred_source": maps["npred_source"], "bkg_norm": maps["bkg_norm"], "irf_id": maps["irf_id"],
    })


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
    n = len(maps["counts"]) if n is None else n
    radius68 = np.empty(n)
    draws = np.empty(n)
    for i in range(n):
        mu_bkg = maps["bkg_norm"][i] * background_for(maps, i).astype(float)
        cov = baselines.crlb_position_cov(
            maps["src_x_pix"][i], maps["src_y_pix"][i], maps["npred_source"][i], mu_bkg,
            maps["psf_sigmas_deg"][i] / binsz_deg, maps["psf_weights"][i])
        radius68[i] = baselines.crlb_radius68(cov) * binsz_deg
        draws[i] = baselines.crlb_error_samples(cov, rng)[0] * binsz_deg
    return radius68, draws
