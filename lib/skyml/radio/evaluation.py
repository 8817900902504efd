"""Residuals of reconstructed counts per flux bin (notebook 07).

The seed's reconstruction residual is Δy_i = (y_pred − y_true) / ⟨y_true⟩
with the mean over the labels; with counts as labels that mean is set by the
faintest (most populated) bins, which would make every brighter bin's
residual look small. We therefore use the **relative residual per bin**,
Δ_i = (N_pred,i − N_true,i) / N_true,i, and evaluate it **per field** (a
whole test image, the quantity a survey measures: counts summed over its
sub-images), against the true counts of the sources actually placed in the
field. The per-bin score is the RMS of Δ_i over the test fields, so that
errors of opposite sign on different fields do not cancel.

The depth (:func:`depth_below_threshold`) is the flux, in multiples below the
5σ threshold, down to which every bin from the threshold downwards has
|Δ| ≤ 10 %: threshold / (lower edge of the faintest such bin); 0 when the
brightest bin already fails.
"""

from __future__ import annotations

import numpy as np


def per_field(counts_sub: np.ndarray, n_fields: int) -> np.ndarray:
    """(n_fields · n_sub, n_bins) per-sub-image counts -> (n_fields, n_bins) sums."""
    c = np.asarray(counts_sub, np.float64)
    return c.reshape(int(n_fields), -1, c.shape[-1]).sum(1)


def relative_residual(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(pred − true) / true, NaN where the truth is 0."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(true > 0, (pred - true) / np.where(true > 0, true, 1.0), np.nan)


def rms_over_fields(rel: np.ndarray) -> np.ndarray:
    """Per-bin RMS of the relative residuals over fields (NaNs ignored)."""
    return np.sqrt(np.nanmean(np.asarray(rel, np.float64) ** 2, axis=0))


def depth_below_threshold(abs_resid: np.ndarray, edges_jy: np.ndarray, threshold_jy: float,
                          tolerance: float = 0.1) -> float:
    """threshold / lower edge of the faintest bin such that all bins from it up
    to the threshold have |residual| ≤ ``tolerance`` (0 if the top bin fails)."""
    r = np.asarray(abs_resid, np.float64)
    edges = np.asarray(edges_jy, np.float64)
    if len(edges) != len(r) + 1:
        raise ValueError(f"{len(r)} residuals for {len(edges) - 1} bins")
    lowest = None
    for i in range(len(r) - 1, -1, -1):
        if not (np.isfinite(r[i]) and r[i] <= tolerance):
            break
        lowest = edges[i]
    return 0.0 if lowest is None else float(threshold_jy / lowest)


def residual_correlation(rel: np.ndarray) -> tuple[np.ndarray, float]:
    """(bin-to-bin correlation matrix of residuals (samples × bins), mean |off-diagonal|)."""
    r = np.asarray(rel, np.float64)
    r = r[np.all(np.isfinite(r), axis=1)]
    corr = np.corrcoef(r, rowvar=False)
    off = ~np.eye(corr.shape[0], dtype=bool)
    return corr, float(np.nanmean(np.abs(corr[off])))
