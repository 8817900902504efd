"""Source positions from a U-Net probability map: k-means and LoG.

**k-means with a penalised k** (AutoSourceID's step 2): the pixels above
``threshold`` are split into 8-connected regions; in each region k-means
(scikit-learn) clusters the pixel positions, weighted by probability, for
k = 1 … k_max, and the k minimising ``inertia(k) + penalty_px2 * k`` is kept
(a further cluster must lower the probability-weighted sum of squared pixel
distances by more than ``penalty_px2``). Cluster centres are the positions;
the probability of a source is the highest pixel probability of its cluster.
k_max of a region is the number of local maxima of the probability map in it
(``skimage.feature.peak_local_max``, at least ``min_peak_distance_px``
apart), at most the number of label disks (radius ``disk_radius_px``) its
area could hold plus one: a bright source's large, single-peaked region
stays one source however much k-means could lower its inertia by splitting it.

**Laplacian of Gaussian** (scikit-image ``blob_log``) on the probability map
is the alternative; the probability of a blob is the map value at its centre
and blobs below ``threshold`` are dropped.

Pixel convention: 0-based, pixel centres at integers, x = column, y = row.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def choose_k(points: np.ndarray, weights: np.ndarray, k_max: int, penalty_px2: float, seed: int = 0):
    """(k, centres (k, 2), labels) minimising weighted inertia + penalty * k."""
    from sklearn.cluster import KMeans

    best = None
    k_max = max(1, min(int(k_max), len(points)))
    for k in range(1, k_max + 1):
        if k == 1:
            c = np.average(points, axis=0, weights=weights)[None]
            labels = np.zeros(len(points), int)
            inertia = float(np.sum(weights * np.sum((points - c) ** 2, axis=1)))
        else:
            km = KMeans(n_clusters=k, n_init=2, random_state=seed).fit(points, sample_weight=weights)
            c, labels, inertia = km.cluster_centers_, km.labels_, float(km.inertia_)
        score = inertia + penalty_px2 * k
        if best is None or score < best[0]:
            best = (score, k, c, labels)
    return best[1], best[2], best[3]


#: the k-means step's default setting (notebook 05's FAKE cut-outs and the command line use it;
#: notebook 04 tunes both on its validation patches)
PENALTY_PX2 = 30.0
MIN_PEAK_DISTANCE_PX = 2


def kmeans_positions(prob: np.ndarray, threshold: float = 0.5, penalty_px2: float = PENALTY_PX2,
                     disk_radius_px: float = 2.5, k_max: int = 6, min_peak_distance_px: int = MIN_PEAK_DISTANCE_PX,
                     seed: int = 0):
    """Positions (x, y) and probabilities of the sources in one probability map."""
    from skimage.feature import peak_local_max

    mask = prob > threshold
    regions, n = ndimage.label(mask, structure=np.ones((3, 3)))
    xs, ys, ps = [], [], []
    disk_area = np.pi * disk_radius_px**2
    for r in range(1, n + 1):
        yy, xx = np.nonzero(regions == r)
        pts = np.stack([xx, yy], axis=1).astype(float)
        w = prob[yy, xx].astype(float)
        n_peaks = len(peak_local_max(np.where(regions == r, prob, 0.0), min_distance=min_peak_distance_px,
                                     threshold_abs=threshold, exclude_border=False))
        kmax_r = max(1, min(k_max, n_peaks, int(len(pts) / disk_area) + 1))
        k, centres, labels = choose_k(pts, w, kmax_r, penalty_px2, seed)
        for j in range(k):
            xs.append(centres[j, 0])
            ys.append(centres[j, 1])
            ps.append(float(w[labels == j].max()))
    return np.array(xs, float), np.array(ys, float), np.array(ps, float)


def log_positions(prob: np.ndarray, threshold: float = 0.5, min_sigma: float = 1.0, max_sigma: float = 4.0,
                  num_sigma: int = 7, log_threshold: float = 0.05):
    """Positions (x, y) and probabilities of LoG blobs of one probability map."""
    from skimage.feature import blob_log

    blobs = blob_log(prob.astype(float), min_sigma=min_sigma, max_sigma=max_sigma, num_sigma=num_sigma,
                     threshold=log_threshold, exclude_border=False)
    if len(blobs) == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    y, x = blobs[:, 0].astype(float), blobs[:, 1].astype(float)
    p = prob[blobs[:, 0].astype(int), blobs[:, 1].astype(int)].astype(float)
    keep = p >= threshold
    return x[keep], y[keep], p[keep]


METHODS = {"unet_kmeans": kmeans_positions, "unet_log": log_positions}


def detect_all(prob_maps: np.ndarray, method: str, threshold: float, **kwargs) -> dict:
    """Detections of every map: flat arrays ``patch``, ``x_pix``, ``y_pix``, ``probability``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {tuple(METHODS)}")
    out = {"patch": [], "x_pix": [], "y_pix": [], "probability": []}
    for i, prob in enumerate(prob_maps):
        x, y, p = METHODS[method](prob, threshold=threshold, **kwargs)
        out["patch"].append(np.full(len(x), i))
        out["x_pix"].append(x)
        out["y_pix"].append(y)
        out["probability"].append(p)
    return {k: np.concatenate(v) if v else np.empty(0) for k, v in out.items()}
