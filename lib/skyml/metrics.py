"""Metric functions shared by the analyses.

Every function takes plain numbers or numpy arrays and returns numpy values,
so the notebooks can apply them to the outputs of any method (networks or
classical baselines) in the same way. Angles are in degrees.

Failed estimates (NaN) are never dropped silently: :func:`containment`,
:func:`tail_fraction` and :func:`relative_error_percentile` raise a
``ValueError`` on NaN input, so a notebook has to remove failures explicitly
and report their fraction next to the metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sized

import astropy.units as u
import numpy as np
from astropy.coordinates import angular_separation

__all__ = [
    "angular_separation_deg",
    "containment",
    "tail_fraction",
    "relative_error",
    "relative_error_percentile",
    "lima_significance",
    "throughput",
    "bootstrap_ci",
]


def angular_separation_deg(lon1, lat1, lon2, lat2):
    """Great-circle separation between (lon1, lat1) and (lon2, lat2), all in degrees.

    Vectorised with numpy broadcasting (astropy's Vincenty formula, accurate
    at all separations). Returns degrees, a float for scalar input.
    """
    sep = angular_separation(
        np.asarray(lon1, dtype=float) * u.deg,
        np.asarray(lat1, dtype=float) * u.deg,
        np.asarray(lon2, dtype=float) * u.deg,
        np.asarray(lat2, dtype=float) * u.deg,
    )
    sep = sep.to_value(u.deg)
    return float(sep) if np.ndim(sep) == 0 else sep


def _finite_1d(values, name: str, func: str) -> np.ndarray:
    values = np.asarray(values, dtype=float).ravel()
    if values.size == 0:
        raise ValueError(f"{func}: {name} is empty")
    n_nan = int(np.count_nonzero(np.isnan(values)))
    if n_nan:
        raise ValueError(
            f"{func}: {n_nan} of {values.size} {name} are NaN; drop the failed estimates "
            "explicitly (and report their fraction) before computing this metric"
        )
    return values


def containment(errors, fraction=0.68):
    """The ``fraction`` quantile of ``errors`` (e.g. the 68% containment radius
    of angular errors, same unit as ``errors``).

    Uses numpy's default (linear-interpolation) quantile. Raises ``ValueError``
    on NaN or empty input, or a fraction outside (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"containment fraction must be in (0, 1], got {fraction}")
    errors = _finite_1d(errors, "errors", "containment")
    return float(np.quantile(errors, fraction))


def tail_fraction(errors, threshold):
    """Fraction of ``errors`` strictly above ``threshold`` (same unit).

    Raises ``ValueError`` on NaN or empty input.
    """
    errors = _finite_1d(errors, "errors", "tail_fraction")
    return float(np.mean(errors > threshold))


def relative_error(estimate, truth):
    """``|estimate - truth| / truth`` elementwise (dimensionless).

    Raises ``ValueError`` if any ``truth`` is not strictly positive (a relative
    error of a non-positive quantity such as zero counts is undefined here).
    NaN estimates give NaN.
    """
    estimate = np.asarray(estimate, dtype=float)
    truth = np.asarray(truth, dtype=float)
    if np.any(~(truth > 0)):
        n_bad = int(np.count_nonzero(~(truth > 0)))
        raise ValueError(f"relative_error: {n_bad} truth value(s) are <= 0 or NaN")
    out = np.abs(estimate - truth) / truth
    return float(out) if out.ndim == 0 else out


def relative_error_percentile(estimate, truth, q=68):
    """The ``q``-th percentile (0-100) of :func:`relative_error`.

    Raises ``ValueError`` on NaN estimates or non-positive truths.
    """
    rel = _finite_1d(relative_error(estimate, truth), "relative errors", "relative_error_percentile")
    return float(np.percentile(rel, q))


def lima_significance(n_on, n_off, alpha):
    """Signed Li & Ma (1983, eq. 17) significance of an on/off measurement.

    ``n_on``, ``n_off``: counts in the on and off regions; ``alpha``: ratio of
    on to off exposure (acceptance). Computed by gammapy as
    ``WStatCountsStatistic(n_on, n_off, alpha).sqrt_ts``, negative for a
    deficit. Vectorised with numpy broadcasting; a float for scalar input.
    """
    from gammapy.stats import WStatCountsStatistic

    n_on, n_off, alpha = np.broadcast_arrays(
        np.asarray(n_on, dtype=float), np.asarray(n_off, dtype=float), np.asarray(alpha, dtype=float)
    )
    sig = np.asarray(WStatCountsStatistic(n_on, n_off, alpha).sqrt_ts, dtype=float)
    return float(sig) if sig.ndim == 0 else sig


def throughput(fn: Callable, batch: Sized, repeats: int = 3) -> float:
    """Items per second of ``fn(batch)``, ``len(batch)`` items per call.

    One untimed warm-up call (compilation, caches), then the best (shortest)
    of ``repeats`` timed calls with ``time.perf_counter``.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    n_items = len(batch)
    if n_items == 0:
        raise ValueError("throughput: empty batch")
    fn(batch)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(batch)
        best = min(best, time.perf_counter() - t0)
    return n_items / best


def match_sky(det_lon, det_lat, true_lon, true_lat, radius_deg):
    """Iterative nearest-neighbour association of detections with true sources
    on the sky (Galactic lon/lat in deg): all pairs closer than ``radius_deg``
    (a scalar, or one radius per true source) are taken in order of increasing
    separation, each detection and each source used once.

    Returns ``(det_to_true, true_to_det, separation_deg)``: for each detection
    the index of its source (-1 if none), for each source the index of its
    detection (-1 if missed), and for each source the separation to its
    detection (NaN if missed).
    """
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    det_lon, det_lat = np.atleast_1d(det_lon).astype(float), np.atleast_1d(det_lat).astype(float)
    true_lon, true_lat = np.atleast_1d(true_lon).astype(float), np.atleast_1d(true_lat).astype(float)
    radius = np.broadcast_to(np.asarray(radius_deg, float), true_lon.shape)
    det_to_true = np.full(len(det_lon), -1)
    true_to_det = np.full(len(true_lon), -1)
    sep = np.full(len(true_lon), np.nan)
    if len(det_lon) == 0 or len(true_lon) == 0:
        return det_to_true, true_to_det, sep
    dets = SkyCoord(det_lon, det_lat, unit="deg", frame="galactic")
    truth = SkyCoord(true_lon, true_lat, unit="deg", frame="galactic")
    # astropy: self.search_around_sky(around, r) -> (index into around, index into self, sep, dist)
    idx_det, idx_true, sep2d, _ = truth.search_around_sky(dets, radius.max() * u.deg)
    s = sep2d.to_value(u.deg)
    ok = s <= radius[idx_true]
    idx_det, idx_true, s = idx_det[ok], idx_true[ok], s[ok]
    for j in np.argsort(s, kind="stable"):
        a, b = idx_det[j], idx_true[j]
        if det_to_true[a] < 0 and true_to_det[b] < 0:
            det_to_true[a], true_to_det[b], sep[b] = b, a, s[j]
    return det_to_true, true_to_det, sep



def bootstrap_ci(statistic: Callable, *samples, n_resamples: int = 1000, level: float = 0.68,
                 seed: int = 0, vectorized: bool = False, paired: bool = True) -> list[float]:
    """Percentile bootstrap interval ``[low, high]`` of ``statistic(*samples)``.

    ``samples`` are arrays of equal length whose rows belong together (one row
    per test map, patch or field); they are resampled together
    (``scipy.stats.bootstrap`` with ``paired=True``), so the interval reflects
    the spread over test items. ``seed`` fixes the resampling, so the same
    inputs give the same interval. ``level`` is the central coverage (0.68:
    the 16th and 84th percentiles of the bootstrap distribution).
    ``vectorized=True`` tells scipy that ``statistic`` takes an ``axis``
    keyword and reduces along it (all resamples in one call): the same
    resamples, the same interval, much faster for a cheap statistic.
    ``paired=False`` is for a statistic of independent test sets (e.g. the
    ratio of one method's score on two sets of fields): each sample, of any
    length >= 2, is then resampled on its own.
    """
    from scipy.stats import bootstrap

    arrays = [np.asarray(s) for s in samples]
    if not arrays or min(len(a) for a in arrays) < 2 or (paired and len({len(a) for a in arrays}) != 1):
        raise ValueError("bootstrap_ci: give one or more samples of length >= 2 (of equal length when paired)")
    res = bootstrap(tuple(arrays), statistic, paired=bool(paired), vectorized=bool(vectorized),
                    n_resamples=int(n_resamples), confidence_level=float(level), method="percentile", rng=np.random.default_rng(seed))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]
