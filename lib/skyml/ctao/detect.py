"""Source positions from network outputs.

- **U-Net + LoG** (AutoSourceID-Light): scikit-image ``blob_log`` on the
  predicted mask probability; a blob is kept if the probability at its centre
  is at least ``threshold``; its position is refined to the probability-weighted
  centroid of the 5×5 pixels around it. Score: the probability.
- **Dense centre-direction regression** (CeDiRNet): each pixel votes along its
  predicted unit vector with weight its predicted closeness. For a radius R
  of the kernel bank, the heat at p is
  sum over q with 0 < |p - q| <= R of closeness(q) v(q)·(p - q)/|p - q|
  divided by the number of pixels in the disk: two fixed convolution kernels
  (x and y components) per radius. The centre heat map is the maximum over the
  bank (``radii_px``); its local maxima above ``threshold`` (at least
  ``min_distance_px`` apart) are the sources, refined like the blobs. Count and
  positions come from the same output. Score: the heat.

Pixel convention: 0-based, pixel centres at integers, x = column, y = row.
"""

from __future__ import annotations

import numpy as np


def refine(img: np.ndarray, x, y, half: int = 2):
    """Weighted centroid of ``img`` in the (2 half + 1)² window around each (x, y) pixel."""
    ny, nx = img.shape
    xs, ys = [], []
    for xi, yi in zip(np.atleast_1d(x), np.atleast_1d(y)):
        xi, yi = int(round(xi)), int(round(yi))
        y0, y1, x0, x1 = max(yi - half, 0), min(yi + half + 1, ny), max(xi - half, 0), min(xi + half + 1, nx)
        w = np.clip(img[y0:y1, x0:x1].astype(float), 0, None)
        if w.sum() <= 0:
            xs.append(float(xi))
            ys.append(float(yi))
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        xs.append(float((w * xx).sum() / w.sum()))
        ys.append(float((w * yy).sum() / w.sum()))
    return np.array(xs), np.array(ys)


#: Maps of more pixels than this go through :func:`log_positions` in tiles.
TILE_ABOVE_PIXELS = 1024 * 1024
#: Inner side of those tiles (px).
TILE_PX = 512


def _blob_centres(prob: np.ndarray, tile: int | None, **kwargs) -> np.ndarray:
    """Integer (row, col) centres of ``blob_log`` on ``prob``; a large map in
    tiles of ``tile`` px with a halo of 7 ``max_sigma`` + 4 px, which holds the
    Laplacian-of-Gaussian kernels (4 σ), the 3×3×3 local maxima and the blobs
    that could overlap one at the edge of the inner part, so the centres are
    those of the one-pass run; a tile keeps the blobs centred in its inner part."""
    from skimage.feature import blob_log

    if tile is None and prob.size <= TILE_ABOVE_PIXELS:
        blobs = blob_log(prob, exclude_border=False, **kwargs)
        return blobs[:, :2].astype(int).reshape(-1, 2)
    tile = int(tile or TILE_PX)
    halo = int(np.ceil(7 * kwargs["max_sigma"])) + 4
    ny, nx = prob.shape
    found = []
    for y0 in range(0, ny, tile):
        for x0 in range(0, nx, tile):
            y1, x1 = min(y0 + tile, ny), min(x0 + tile, nx)
            ya, xa, yb, xb = max(0, y0 - halo), max(0, x0 - halo), min(ny, y1 + halo), min(nx, x1 + halo)
            blobs = blob_log(prob[ya:yb, xa:xb], exclude_border=False, **kwargs)
            rc = blobs[:, :2].astype(int).reshape(-1, 2) + [ya, xa]
            inner = (rc[:, 0] >= y0) & (rc[:, 0] < y1) & (rc[:, 1] >= x0) & (rc[:, 1] < x1)
            found.append(rc[inner])
    return np.concatenate(found) if found else np.empty((0, 2), int)


def log_positions(prob: np.ndarray, threshold: float = 0.5, min_sigma: float = 1.0, max_sigma: float = 12.0,
                  num_sigma: int = 8, log_threshold: float = 0.05, tile: int | None = None):
    """(x, y, probability) of the LoG blobs of a probability map (in tiles
    when it has more than :data:`TILE_ABOVE_PIXELS` pixels or ``tile`` is given)."""
    prob = np.asarray(prob)
    centres = _blob_centres(prob.astype(float), tile, min_sigma=min_sigma, max_sigma=max_sigma,
                            num_sigma=num_sigma, threshold=log_threshold)
    if len(centres) == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    centres = centres[np.lexsort((centres[:, 1], centres[:, 0]))]  # one order, tiled or not
    yi, xi = centres[:, 0], centres[:, 1]
    score = prob[yi, xi].astype(float)
    keep = score >= threshold
    x, y = refine(prob, xi[keep], yi[keep])
    return x, y, score[keep]


def _kernels(radius: float):
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r:r + 1, -r:r + 1].astype(float)
    d = np.hypot(dx, dy)
    inside = (d > 0) & (d <= radius)
    kx = np.where(inside, dx / np.maximum(d, 1e-9), 0.0)
    ky = np.where(inside, dy / np.maximum(d, 1e-9), 0.0)
    return kx, ky, max(int(inside.sum()), 1)


def centre_heatmap(field: np.ndarray, radii_px=(2.0, 4.0, 8.0, 16.0)) -> np.ndarray:
    """Centre heat map (ny, nx) of a vote field (ny, nx, 3) = (sin, cos, closeness)."""
    from scipy.signal import fftconvolve

    vy, vx, m = (np.asarray(field[..., k], float) for k in range(3))
    heat = np.full(vx.shape, -np.inf)
    for radius in radii_px:
        kx, ky, n = _kernels(radius)
        # heat(p) = sum_q m v(q)·(p - q)/|p - q|: a correlation with d = p - q, i.e. a
        # convolution with the kernel K(d) = d/|d| evaluated at d = p - q
        h = (fftconvolve(m * vx, kx, mode="same") + fftconvolve(m * vy, ky, mode="same")) / n
        heat = np.maximum(heat, h)
    return heat


def cedirnet_positions(field: np.ndarray, threshold: float = 0.2, min_distance_px: int = 2,
                       radii_px=(2.0, 4.0, 8.0, 16.0)):
    """(x, y, heat) of the centres found in a vote field."""
    from skimage.feature import peak_local_max

    heat = centre_heatmap(field, radii_px)
    peaks = peak_local_max(heat, min_distance=int(min_distance_px), threshold_abs=float(threshold),
                           exclude_border=False)
    if len(peaks) == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    yi, xi = peaks[:, 0], peaks[:, 1]
    score = heat[yi, xi]
    x, y = refine(np.clip(heat, 0, None), xi, yi, half=1)
    return x, y, score


def detect_all(outputs: np.ndarray, method: str, threshold: float, **kwargs) -> dict:
    """Detections of every map (flat arrays ``patch``, ``x_pix``, ``y_pix``, ``score``).

    ``method``: ``"log"`` (outputs (n, ny, nx) probabilities) or
    ``"cedirnet"`` (outputs (n, ny, nx, 3) vote fields)."""
    funcs = {"log": log_positions, "cedirnet": cedirnet_positions}
    if method not in funcs:
        raise ValueError(f"unknown method {method!r}; choose from {tuple(funcs)}")
    out = {"patch": [], "x_pix": [], "y_pix": [], "score": []}
    for i, o in enumerate(outputs):
        x, y, s = funcs[method](o, threshold=threshold, **kwargs)
        out["patch"].append(np.full(len(x), i))
        out["x_pix"].append(x)
        out["y_pix"].append(y)
        out["score"].append(s)
    return {k: np.concatenate(v) if v else np.empty(0) for k, v in out.items()}
