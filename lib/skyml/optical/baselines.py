"""Classical optical baseline: photutils ``DAOStarFinder`` on the
background-subtracted tile (sigma-clipped median and standard deviation), with
the tile's FWHM and a threshold of ``nsigma`` × the background sigma (chosen on
validation tiles by :func:`select_nsigma`). Score:
the fitted peak over the background sigma."""

from __future__ import annotations

import numpy as np


def daofind(image: np.ndarray, fwhm_px: float, nsigma: float = 5.0):
    """(x, y, score) of the stars found in one image."""
    import warnings

    from astropy.stats import sigma_clipped_stats
    from photutils.detection import DAOStarFinder
    from photutils.utils.exceptions import NoDetectionsWarning

    _, median, std = sigma_clipped_stats(image, sigma=3.0)
    finder = DAOStarFinder(fwhm=float(fwhm_px), threshold=nsigma * std)
    with warnings.catch_warnings():
        # no star above the threshold is a valid outcome (an empty catalogue), not a problem
        warnings.simplefilter("ignore", NoDetectionsWarning)
        found = finder(np.asarray(image, float) - median)
    if found is None or len(found) == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    x = np.asarray(found["x_centroid"], float)
    y = np.asarray(found["y_centroid"], float)
    return x, y, np.asarray(found["peak"], float) / std


def _daofind_item(item, nsigma: float):
    return daofind(*item, nsigma)


def daofind_all(images: np.ndarray, fwhm_px, nsigma: float = 5.0, progress=None) -> dict:
    """:func:`daofind` of every image (``fwhm_px`` one or one per image), through
    :func:`skyml.parallel.map_items` (in this process or on dask workers, the
    same stars): flat arrays ``patch``, ``x_pix``, ``y_pix``, ``score``."""
    from .. import parallel

    items = list(zip(images, np.broadcast_to(fwhm_px, (len(images),))))
    found = parallel.map_items(_daofind_item, items, progress=progress, desc="DAOStarFinder", nsigma=nsigma)
    out = {"patch": [], "x_pix": [], "y_pix": [], "score": []}
    for i, (x, y, s) in enumerate(found):
        out["patch"].append(np.full(len(x), i))
        out["x_pix"].append(x)
        out["y_pix"].append(y)
        out["score"].append(s)
    return {k: np.concatenate(v) for k, v in out.items()}


NSIGMA_GRID = (2.0, 3.0, 4.0, 5.0, 6.0)


def select_nsigma(n_val: int, seed: int, p, grid=NSIGMA_GRID) -> float:
    """DAOStarFinder threshold (in background sigma) maximising F1 on ``n_val``
    validation tiles of every density, as the U-Net's threshold is chosen. The
    threshold applies to the fitted peak amplitude: a star at the truth's
    integrated S/N = 5 peaks at about 1.5 sigma, so 5 sigma misses most of them."""
    from astropy.table import vstack

    from ..ctao import evaluation
    from .pipeline import evaluate
    from .simulate import DENSITIES, load_tiles

    tiles = [load_tiles(n_val, seed, d, p, "val") for d in DENSITIES]
    f1 = []
    for nsigma in grid:
        ev = [evaluate(t, daofind_all(t["image"], t["fwhm_px"], nsigma)) for t in tiles]
        f1.append(np.nan_to_num(evaluation.prf(vstack([e[0] for e in ev]), vstack([e[1] for e in ev]))["f1"]))
    return float(grid[int(np.argmax(f1))])
