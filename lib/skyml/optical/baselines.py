"""Classical optical baselines, tuned on validation tiles as an expert would tune them.

1. photutils ``DAOStarFinder`` on the background-subtracted tile (sigma-clipped
   median and standard deviation) with the tile's FWHM: threshold (in background
   sigma), FWHM scale, sharpness and roundness limits and the minimum separation
   of stars (photutils 3 made 2.5 FWHM its default) are chosen by
   :func:`tune` on validation tiles (maximum F1). Score: the fitted peak over
   the background sigma.
2. Image segmentation (photutils ``detect_sources`` + ``deblend_sources`` on
   the image convolved with a Gaussian of the tile's FWHM, positions from
   ``SourceCatalog``): threshold and minimum area tuned the same way. Score:
   the peak of the convolved image over the background sigma.
"""

from __future__ import annotations

import numpy as np


#: DAOStarFinder settings of :func:`daofind` (photutils 3.0 defaults, threshold 5 sigma)
DAOFIND_DEFAULTS = {"nsigma": 5.0, "fwhm_scale": 1.0, "sharpness_min": 0.2, "roundness_max": 1.0,
                    "min_separation_fwhm": 2.5}


def daofind(image: np.ndarray, fwhm_px: float, nsigma: float = 5.0, *, fwhm_scale: float = 1.0,
            sharpness_min: float = 0.2, roundness_max: float = 1.0, min_separation_fwhm: float = 2.5):
    """(x, y, score) of the stars found in one image by ``DAOStarFinder`` with
    FWHM ``fwhm_scale * fwhm_px``, threshold ``nsigma`` background sigma,
    sharpness in ``[sharpness_min, 1]``, roundness in ``[-roundness_max,
    roundness_max]`` and stars at least ``min_separation_fwhm`` FWHM apart."""
    import warnings

    from astropy.stats import sigma_clipped_stats
    from photutils.detection import DAOStarFinder
    from photutils.utils.exceptions import NoDetectionsWarning

    _, median, std = sigma_clipped_stats(image, sigma=3.0)
    fwhm = float(fwhm_px) * float(fwhm_scale)
    finder = DAOStarFinder(fwhm=fwhm, threshold=nsigma * std, sharpness_range=(float(sharpness_min), 1.0),
                           roundness_range=(-float(roundness_max), float(roundness_max)),
                           min_separation=float(min_separation_fwhm) * fwhm)
    with warnings.catch_warnings():
        # no star above the threshold is a valid outcome (an empty catalogue), not a problem
        warnings.simplefilter("ignore", NoDetectionsWarning)
        found = finder(np.asarray(image, float) - median)
    if found is None or len(found) == 0:
        return np.empty(0), np.empty(0), np.empty(0)
    x = np.asarray(found["x_centroid"], float)
    y = np.asarray(found["y_centroid"], float)
    return x, y, np.asarray(found["peak"], float) / std


def segment_find(image: np.ndarray, fwhm_px: float, nsigma: float = 2.0, npixels: int = 5):
    """(x, y, score) of the sources found by image segmentation: the
    background-subtracted image convolved with a Gaussian of ``fwhm_px``,
    pixels above ``nsigma`` background sigma (of the convolved image) in groups
    of at least ``npixels``, deblended; centroids from ``SourceCatalog``."""
    import warnings

    from astropy.convolution import convolve
    from astropy.stats import sigma_clipped_stats
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources, make_2dgaussian_kernel
    from photutils.utils.exceptions import NoDetectionsWarning

    _, median, _ = sigma_clipped_stats(image, sigma=3.0)
    data = np.asarray(image, float) - median
    size = 2 * int(np.ceil(1.5 * fwhm_px)) + 1
    conv = convolve(data, make_2dgaussian_kernel(float(fwhm_px), size=size))
    _, _, std = sigma_clipped_stats(conv, sigma=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)
        segm = detect_sources(conv, nsigma * std, n_pixels=int(npixels))
        if segm is None:
            return np.empty(0), np.empty(0), np.empty(0)
        segm = deblend_sources(conv, segm, n_pixels=int(npixels), progress_bar=False)
    cat = SourceCatalog(data, segm, convolved_data=conv)
    x = np.asarray(cat.x_centroid, float)
    y = np.asarray(cat.y_centroid, float)
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok], np.asarray(cat.max_value, float)[ok] / std


def _segment_item(item, **kwargs):
    return segment_find(*item, **kwargs)


def _daofind_item(item, nsigma: float, **settings):
    return daofind(*item, nsigma, **settings)


def daofind_all(images: np.ndarray, fwhm_px, nsigma: float = 5.0, progress=None, **settings) -> dict:
    """:func:`daofind` of every image (``fwhm_px`` one or one per image; the
    other settings of :func:`daofind` as keywords), through
    :func:`skyml.parallel.map_items` (in this process or on dask workers, the
    same stars): flat arrays ``patch``, ``x_pix``, ``y_pix``, ``score``."""
    items = list(zip(images, np.broadcast_to(fwhm_px, (len(images),))))
    return _collect(_map(_daofind_item, items, progress, "DAOStarFinder", nsigma=nsigma, **settings))


def segment_all(images: np.ndarray, fwhm_px, progress=None, **settings) -> dict:
    """:func:`segment_find` of every image, as :func:`daofind_all`."""
    items = list(zip(images, np.broadcast_to(fwhm_px, (len(images),))))
    return _collect(_map(_segment_item, items, progress, "segmentation", **settings))


def _map(func, items, progress, desc, **kwargs):
    from .. import parallel

    return parallel.map_items(func, items, progress=progress, desc=desc, **kwargs)


def _collect(found) -> dict:
    out = {"patch": [np.empty(0, int)], "x_pix": [np.empty(0)], "y_pix": [np.empty(0)], "score": [np.empty(0)]}
    for i, (x, y, s) in enumerate(found):
        out["patch"].append(np.full(len(x), i))
        out["x_pix"].append(x)
        out["y_pix"].append(y)
        out["score"].append(s)
    return {k: np.concatenate(v) for k, v in out.items()}


#: Search grids of :func:`tune`; the defaults of photutils 3 lie inside them.
DAOFIND_GRID = {
    "nsigma": (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0),
    "fwhm_scale": (0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0),
    "sharpness_min": (-2.0, -1.0, -0.5, 0.0, 0.1, 0.2, 0.35, 0.5),
    "roundness_max": (0.25, 0.5, 1.0, 2.0, 4.0, 8.0),
    "min_separation_fwhm": (0.0, 0.1, 0.25, 0.5, 1.0, 1.5, 2.5, 4.0),
}
SEGMENT_GRID = {"nsigma": (0.5, 1.0, 1.5, 2.0, 3.0, 5.0), "npixels": (2, 3, 5, 8, 12)}
SEGMENT_DEFAULTS = {"nsigma": 2.0, "npixels": 5}
METHODS = {"daofinder": (daofind_all, DAOFIND_GRID, DAOFIND_DEFAULTS),
           "segmentation": (segment_all, SEGMENT_GRID, SEGMENT_DEFAULTS)}


def tune(method: str, n_val: int, seed: int, p, rounds: int = 2) -> dict:
    """Settings of a classical detector (``"daofinder"`` or ``"segmentation"``)
    that maximise F1 on ``n_val`` validation tiles of every density (stars
    above S/N = 5, as for the U-Net's threshold), by coordinate ascent over its
    grid (:data:`DAOFIND_GRID`, :data:`SEGMENT_GRID`): each setting in turn is
    set to its best value with the others fixed, ``rounds`` times.

    Returns ``{"settings", "f1" (validation F1 of the settings), "interior"
    (setting -> chosen value strictly inside its grid), "evaluations"}``.
    The result is cached in ``data/cache/optical_tune/`` by the method, its
    grid, the validation tiles' parameters and photutils' version (a second
    run, or a workshop room after ``make workshop-unpack``, loads it).
    """
    import json

    import photutils

    from .. import cache

    key = {"method": method, "n_val": int(n_val), "seed": int(seed), "params": p.to_dict(), "rounds": int(rounds),
           "grid": METHODS[method][1], "defaults": METHODS[method][2], "photutils": photutils.__version__,
           "version": 1}

    def build(folder):
        (folder / "tune.json").write_text(json.dumps(_tune(method, n_val, seed, p, rounds), indent=1))

    return json.loads((cache.cached_dir("optical_tune", key, build, verbose=False) / "tune.json").read_text())


def _tune(method: str, n_val: int, seed: int, p, rounds: int) -> dict:
    from astropy.table import vstack

    from ..ctao import evaluation
    from .pipeline import evaluate
    from .simulate import DENSITIES, load_tiles

    run, grid, defaults = METHODS[method]
    tiles = [load_tiles(n_val, seed, d, p, "val") for d in DENSITIES]
    scores: dict[tuple, float] = {}

    def f1(settings: dict) -> float:
        key = tuple(sorted(settings.items()))
        if key not in scores:
            ev = [evaluate(t, run(t["image"], t["fwhm_px"], progress=False, **settings)) for t in tiles]
            r = evaluation.prf(vstack([e[0] for e in ev]), vstack([e[1] for e in ev]))
            scores[key] = float(np.nan_to_num(r["f1"]))
        return scores[key]

    best = dict(defaults)
    for _ in range(int(rounds)):
        for name, values in grid.items():
            best[name] = max(values, key=lambda v: (f1({**best, name: v}), -abs(values.index(v) - len(values) // 2)))
    interior = {name: grid[name][0] < best[name] < grid[name][-1] for name in grid}
    return {"settings": best, "f1": f1(best), "interior": interior, "evaluations": len(scores)}


def run(method: str, images: np.ndarray, fwhm_px, settings: dict, progress=None) -> dict:
    """Detections of a classical method with given settings (from :func:`tune`)."""
    return METHODS[method][0](images, fwhm_px, progress=progress, **settings)
