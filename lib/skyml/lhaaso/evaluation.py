"""Image-quality, resolution and flux metrics of notebook 08.

All maps are compared in the normalised units of
:func:`skyml.lhaaso.simulate.normalise` (per-map mean observed counts per
pixel). PSNR, SSIM and NRMSE are scikit-image's, with the data range of the
true map; NRMSE is the Euclidean one (‖x − y‖ / ‖y‖).

MS-SSIM: scikit-image has none, so :func:`ms_ssim` follows Wang, Simoncelli &
Bovik (2003) on a pyramid of 2×2 block means (64, 32, 16 px): the
contrast-structure term at every scale and the full SSIM at the coarsest,
combined as a weighted geometric mean with the first three of their five
weights, (0.0448, 0.2856, 0.3001), renormalised to unit sum; negative terms
are clipped at 0 before the product. The contrast-structure term is obtained
from scikit-image's full SSIM map divided by its luminance map.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import curve_fit
from skimage.metrics import normalized_root_mse, peak_signal_noise_ratio, structural_similarity

from ..metrics import bootstrap_ci

LHAI_BATCH = 32
MS_SSIM_WEIGHTS = np.array([0.0448, 0.2856, 0.3001]) / np.sum([0.0448, 0.2856, 0.3001])
K1, K2 = 0.01, 0.03


def _range(truth):
    r = float(truth.max() - truth.min())
    return r if r > 0 else 1.0


def _luminance(a, b, data_range, win_size=7):
    from scipy.ndimage import uniform_filter

    mu_a, mu_b = uniform_filter(a, win_size), uniform_filter(b, win_size)
    c1 = (K1 * data_range) ** 2
    return (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)


def ms_ssim(truth: np.ndarray, estimate: np.ndarray, data_range: float | None = None) -> float:
    """Multi-scale SSIM of two 2-D maps (three scales, weights above)."""
    a, b = np.asarray(truth, np.float64), np.asarray(estimate, np.float64)
    data_range = _range(a) if data_range is None else data_range
    values = []
    for level, weight in enumerate(MS_SSIM_WEIGHTS):
        _, smap = structural_similarity(a, b, data_range=data_range, full=True)
        pad = 3  # skimage's crop of the 7×7 window border
        if level == len(MS_SSIM_WEIGHTS) - 1:
            value = float(smap[pad:-pad, pad:-pad].mean())
        else:
            lum = _luminance(a, b, data_range)
            value = float((smap / lum)[pad:-pad, pad:-pad].mean())
            ny, nx = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
            a = a[:ny, :nx].reshape(ny // 2, 2, nx // 2, 2).mean(axis=(1, 3))
            b = b[:ny, :nx].reshape(ny // 2, 2, nx // 2, 2).mean(axis=(1, 3))
        values.append(max(value, 0.0) ** weight)
    return float(np.prod(values))


def image_metrics(truth: np.ndarray, estimate: np.ndarray) -> dict[str, np.ndarray]:
    """Per-map PSNR [dB], SSIM, MS-SSIM, NRMSE and MAE of (n, ny, nx) stacks."""
    truth, estimate = np.asarray(truth, np.float64), np.asarray(estimate, np.float64)
    out = {k: [] for k in ("psnr", "ssim", "ms_ssim", "nrmse", "mae")}
    for t, e in zip(truth, estimate):
        r = _range(t)
        out["psnr"].append(peak_signal_noise_ratio(t, e, data_range=r))
        out["ssim"].append(structural_similarity(t, e, data_range=r))
        out["ms_ssim"].append(ms_ssim(t, e, r))
        out["nrmse"].append(normalized_root_mse(t, e))
        out["mae"].append(np.mean(np.abs(t - e)))
    return {k: np.asarray(v) for k, v in out.items()}


def _gauss2d(xy, amp, x0, y0, sigma, offset):
    x, y = xy
    return amp * np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2)) + offset


def fwhm_px(image: np.ndarray, x: float, y: float, half: int = 6) -> float:
    """FWHM [px] of a circular Gaussian plus constant fitted to the
    (2 half + 1)² box around (x, y); NaN when the fit fails."""
    xi, yi = int(round(x)), int(round(y))
    box = np.asarray(image, np.float64)[yi - half:yi + half + 1, xi - half:xi + half + 1]
    yy, xx = np.mgrid[yi - half:yi + half + 1, xi - half:xi + half + 1]
    p0 = (float(box.max() - np.median(box)), float(x), float(y), 2.0, float(np.median(box)))
    try:
        popt, _ = curve_fit(_gauss2d, (xx.ravel(), yy.ravel()), box.ravel(), p0=p0, maxfev=4000,
                            bounds=([0, x - 3, y - 3, 0.2, -np.inf], [np.inf, x + 3, y + 3, 3.0 * half, np.inf]))
    except (RuntimeError, ValueError):
        return float("nan")
    return float(2 * np.sqrt(2 * np.log(2)) * abs(popt[3]))


def aperture_sum(image: np.ndarray, x: float, y: float, radius_px: float) -> float:
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    return float(np.asarray(image, np.float64)[np.hypot(xx - x, yy - y) <= radius_px].sum())


def point_source_table(counts, x0, y0, truth: np.ndarray, images: dict, fwhm_psf_px, aperture_px: float = 10.0):
    """Resolution and flux of isolated point sources: one row per map and method (maps outer, methods in the
    order of ``images``), with the source's ``counts``, the FWHM of :func:`fwhm_px` at (x0, y0) over the FWHM of
    the PSF that blurred that map (``fwhm_psf_px``: one value, or one per map), and the counts within
    ``aperture_px`` over the truth's, minus 1. ``images``: {method: (n, ny, nx)}; ``truth``: (n, ny, nx)."""
    from astropy.table import Table

    n = len(counts)
    fwhm_psf_px = np.broadcast_to(np.asarray(fwhm_psf_px, np.float64), (n,))
    rows = []
    for j in range(n):
        true_in = aperture_sum(truth[j], x0[j], y0[j], aperture_px)
        for method, imgs in images.items():
            rows.append((counts[j], method, fwhm_px(imgs[j], x0[j], y0[j]) / fwhm_psf_px[j],
                         aperture_sum(imgs[j], x0[j], y0[j], aperture_px) / true_in - 1))
    return Table(rows=rows, names=("counts", "method", "fwhm_ratio", "aperture_flux_err"))


def point_source_summary(table):
    """Per method and counts level of :func:`point_source_table`: the median FWHM ratio (failed fits left
    out) and the median aperture flux error."""
    from astropy.table import Table

    groups = table.group_by(["method", "counts"]).groups
    return Table({"method": groups.keys["method"], "counts": groups.keys["counts"],
                  "fwhm_ratio_median": [float(np.nanmedian(g["fwhm_ratio"])) for g in groups],
                  "flux_err_median": [float(np.median(g["aperture_flux_err"])) for g in groups]})


def resolved(profile_line: np.ndarray, i1: int, i2: int, dip: float = 0.8) -> bool:
    """Two peaks at indices i1 < i2 of a 1-D profile are resolved when the
    minimum between them is below ``dip`` × the smaller of the two maxima
    near them (±1 px) — a Rayleigh-like criterion (0.81 for Airy disks)."""
    p = np.asarray(profile_line, np.float64)
    if i2 - i1 < 2:
        return False
    m1, m2 = p[max(i1 - 1, 0):i1 + 2].max(), p[i2 - 1:i2 + 2].max()
    return bool(p[i1 + 1:i2].min() < dip * min(m1, m2)) and min(m1, m2) > 0


def flux_error(truth: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Per-map relative error of the total flux, sum(estimate)/sum(truth) − 1."""
    t = np.asarray(truth, np.float64).reshape(len(truth), -1).sum(1)
    e = np.asarray(estimate, np.float64).reshape(len(estimate), -1).sum(1)
    return e / t - 1


# ---------------------------------------------------------------------------
# LHAI protocol
# ---------------------------------------------------------------------------


def minmax(maps: np.ndarray) -> np.ndarray:
    """Each map of a (n, ny, nx) stack (or one 2-D map) scaled to [0, 1]:
    (x − min) / (max − min); a constant map becomes zeros."""
    a = np.asarray(maps, np.float64)
    flat = a.reshape((-1,) + a.shape[-2:])
    lo = flat.min(axis=(1, 2), keepdims=True)
    span = flat.max(axis=(1, 2), keepdims=True) - lo
    out = np.where(span > 0, (flat - lo) / np.where(span > 0, span, 1.0), 0.0)
    return out.reshape(a.shape)


def lhai_ssim(truth: np.ndarray, estimate: np.ndarray) -> float:
    """SSIM of two maps on the [0, 1] scale, with the Gaussian window of Wang et al. (2004)."""
    return float(structural_similarity(truth, estimate, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def lhai_mse(truth: np.ndarray, estimate: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-map squared error of (n, ny, nx) stacks after :func:`minmax` of
    each map; with a boolean ``mask`` (ny, nx), over the masked pixels only."""
    sq = (minmax(truth) - minmax(estimate)) ** 2
    return sq[:, mask].mean(axis=1) if mask is not None else sq.reshape(len(sq), -1).mean(axis=1)


def lhai_per_map(truth: np.ndarray, estimate: np.ndarray, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-map squared error (``mse``, :func:`lhai_mse`) and ``ssim`` of
    (n, ny, nx) stacks after :func:`minmax` of each map; with a boolean
    ``mask`` (ny, nx) the squared error is averaged over the masked pixels
    only (SSIM stays the full map's)."""
    t, e = minmax(truth), minmax(estimate)
    return {"mse": lhai_mse(truth, estimate, mask), "ssim": np.array([lhai_ssim(a, b) for a, b in zip(t, e)])}


def lhai_psnr_difference(truth: np.ndarray, estimate_a: np.ndarray, estimate_b: np.ndarray,
                         seed: int = 0) -> tuple[float, list[float]]:
    """PSNR of LHAI's protocol (:func:`lhai_from_per_map`) of ``estimate_a``
    minus that of ``estimate_b`` on the same maps, and its 68 % bootstrap
    interval with the maps resampled together for both (each resample batched
    in its order): the spread of the difference itself, which the two PSNRs'
    intervals side by side overstate when both methods err most on the same maps."""
    def difference(mse_a, mse_b):
        return lhai_from_per_map(mse_a)["psnr"] - lhai_from_per_map(mse_b)["psnr"]

    mse_a, mse_b = lhai_mse(truth, estimate_a), lhai_mse(truth, estimate_b)
    return difference(mse_a, mse_b), bootstrap_ci(difference, mse_a, mse_b, seed=seed)


def lhai_from_per_map(mse: np.ndarray, ssim: np.ndarray | None = None,
                      batch_size: int = LHAI_BATCH) -> dict[str, float]:
    """Batch means of the LHAI protocol from per-map squared errors (and SSIMs),
    maps taken in their order in consecutive batches of ``batch_size``: PSNR
    = mean over batches of 10 log10(1 / mean MSE of the batch), NRMSE = mean of
    the batch RMSEs (the truth's range is 1), SSIM = mean of the batch means."""
    mse = np.asarray(mse, np.float64)
    starts = range(0, len(mse), int(batch_size))
    batch_mse = np.array([mse[i:i + batch_size].mean() for i in starts])
    out = {"psnr": float(np.mean(10 * np.log10(1.0 / batch_mse))), "nrmse": float(np.mean(np.sqrt(batch_mse)))}
    if ssim is not None:
        ssim = np.asarray(ssim, np.float64)
        out["ssim"] = float(np.mean([ssim[i:i + batch_size].mean() for i in starts]))
    return out


def lhai_metrics(truth: np.ndarray, estimate: np.ndarray, batch_size: int = LHAI_BATCH) -> dict[str, float]:
    """PSNR [dB], SSIM and NRMSE of the LHAI protocol (module docstring) of
    (n, ny, nx) stacks, with scikit-image's metrics on each batch."""
    t, e = minmax(truth), minmax(estimate)
    psnr, ssim, nrmse = [], [], []
    for i in range(0, len(t), int(batch_size)):
        tb, eb = t[i:i + batch_size], e[i:i + batch_size]
        with np.errstate(divide="ignore"):  # an exact estimate has an infinite PSNR, not a warning
            psnr.append(peak_signal_noise_ratio(tb, eb, data_range=1.0))
        ssim.append(np.mean([lhai_ssim(a, b) for a, b in zip(tb, eb)]))
        nrmse.append(normalized_root_mse(tb, eb, normalization="min-max"))
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim)), "nrmse": float(np.mean(nrmse))}


def edge_mask(shape: tuple[int, int], width: int = 4) -> np.ndarray:
    """Boolean (ny, nx) mask of the band of ``width`` pixels along the map edges."""
    m = np.zeros(shape, bool)
    m[:width], m[-width:], m[:, :width], m[:, -width:] = True, True, True, True
    return m
