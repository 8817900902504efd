"""Classical baseline: gammapy ``TSMapEstimator`` + ``find_peaks`` on the same patches.

Each patch becomes a gammapy ``MapDataset`` with its counts, the **true
expected background** of the simulation (the IRF background of the survey; an
advantage over the networks, which never see it), the survey exposure per true
energy, the Gaussian ``PSFMap`` per true energy and the energy-dispersion
matrix of :mod:`skyml.ctao.simulate`. The TS map of a point source with a
power law of index 2.2 is computed with the norm fitted on the full energy cube (all three bins jointly), on a grid
downsampled by ``downsampling_factor`` (gammapy's option; the 512×512 map at
full resolution takes minutes per patch on a CPU) and upsampled back; the local
maxima of sqrt(TS) above ``sqrt_ts_min`` (5, i.e. TS = 25) at least
``min_distance_deg`` apart are the detections (gammapy detection tutorial),
sqrt(TS) their score.

On the shifted test sky of notebook 06 the TS map is not given the truth: its
background is the nominal IRF background with a normalisation per energy bin
fitted on the patch outside an exclusion mask (:func:`fitted_background`), as
an analyst fits a field-of-view background; it knows neither the diffuse
emission nor the changed PSF (the networks do not either).
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from . import simulate
from .simulate import SurveyParams


def fitted_background(counts: np.ndarray, p: SurveyParams, exclusion_radius_deg: float = 0.3,
                      exclusion_sigma: float = 3.0) -> np.ndarray:
    """Background model (3, npix, npix) of one patch as an analyst makes it:
    the nominal IRF background template times a normalisation per energy bin,
    the ratio of counts to template summed outside an exclusion mask. The mask
    holds the pixels whose excess over the template (all bins summed, counts
    and template correlated in a disk of ``exclusion_radius_deg``) exceeds
    ``exclusion_sigma`` (simple significance (N - B)/sqrt(B), B renormalised
    on the whole patch first), dilated by the disk radius."""
    from scipy import ndimage

    c = np.asarray(counts, float)
    template = simulate.irf_maps(p)["background"].astype(float)
    r = max(exclusion_radius_deg / p.binsz_deg, 1.0)
    yy, xx = np.mgrid[-int(r):int(r) + 1, -int(r):int(r) + 1]
    disk = (xx**2 + yy**2 <= r * r).astype(float)
    norm0 = c.sum() / template.sum()
    n_disk = ndimage.correlate(c.sum(0), disk, mode="constant")
    b_disk = ndimage.correlate(template.sum(0), disk, mode="constant") * norm0
    excess = (n_disk - b_disk) / np.sqrt(np.maximum(b_disk, 1e-9))
    mask = ndimage.binary_dilation(excess > exclusion_sigma, structure=disk > 0)
    keep = ~mask if (~mask).sum() > 0.1 * mask.size else np.ones_like(mask)
    norm = c[:, keep].sum(axis=1) / np.maximum(template[:, keep].sum(axis=1), 1e-12)
    norm = np.where(norm > 0, norm, norm0)
    return template * norm[:, None, None]


def make_dataset(counts: np.ndarray, p: SurveyParams, background: np.ndarray | None = None):
    """gammapy ``MapDataset`` of one patch (counts (3, npix, npix)); its
    background the IRF background (default) or ``background`` (3, npix, npix)."""
    import astropy.units as u
    from gammapy.datasets import MapDataset
    from gammapy.irf import EDispKernel, EDispKernelMap, PSFMap
    from gammapy.maps import Map

    m = simulate.irf_maps(p)
    e, et = simulate.energy_axes()
    g = simulate.geom(p, e)
    exposure = Map.from_geom(g.to_image().to_cube([et]), data=m["exposure_cm2s"].astype(float), unit="cm2 s")
    psf = PSFMap.from_gauss(et, sigma=m["psf_sigma_deg"] * u.deg)
    edisp = EDispKernelMap.from_edisp_kernel(EDispKernel(axes=[et, e], data=m["edisp"]))
    return MapDataset(counts=Map.from_geom(g, data=np.asarray(counts, float)),
                      background=Map.from_geom(g, data=(m["background"] if background is None
                                                        else np.asarray(background)).astype(float)),
                      exposure=exposure, psf=psf, edisp=edisp, name="patch")


def tsmap_detect(counts, p: SurveyParams, sqrt_ts_min: float = 5.0, min_distance_deg: float = 0.1,
                 kernel_width_deg: float = 0.5, downsampling_factor: int = 4, n_jobs: int | None = None,
                 background: str = "irf"):
    """Detections (x, y, sqrt_ts) of one patch and its sqrt(TS) map. ``n_jobs``:
    gammapy's processes within the patch (None: gammapy's default); the patches
    themselves fan out in :func:`tsmap_detect_all`. ``background``: ``"irf"``
    (the true IRF background of the nominal survey) or ``"fitted"``
    (:func:`fitted_background`)."""
    import astropy.units as u
    from gammapy.estimators import TSMapEstimator
    from gammapy.estimators.utils import find_peaks
    from gammapy.modeling.models import PointSpatialModel, PowerLawSpectralModel, SkyModel

    if background not in ("irf", "fitted"):
        raise ValueError(f"unknown background {background!r}; choose 'irf' or 'fitted'")
    ds = make_dataset(counts, p, fitted_background(counts, p) if background == "fitted" else None)
    model = SkyModel(spatial_model=PointSpatialModel(), spectral_model=PowerLawSpectralModel(index=2.2))
    est = TSMapEstimator(kernel_model=model, kernel_width=kernel_width_deg * u.deg, selection_optional=[],
                         downsampling_factor=int(downsampling_factor), sum_over_energy_groups=False,
                         n_jobs=None if n_jobs is None else int(n_jobs))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = est.run(ds)
    sqrt_ts = result["sqrt_ts"].reduce_over_axes()  # one energy group: the sum is the map
    sqrt_ts.data = np.nan_to_num(sqrt_ts.data)
    min_px = max(int(round(min_distance_deg / p.binsz_deg)), 1)
    peaks = find_peaks(sqrt_ts, threshold=sqrt_ts_min, min_distance=min_px)
    if len(peaks) == 0:
        return np.empty(0), np.empty(0), np.empty(0), sqrt_ts.data
    return (np.asarray(peaks["x"], float), np.asarray(peaks["y"], float), np.asarray(peaks["value"], float),
            sqrt_ts.data)


def _tsmap_item(counts, p: SurveyParams, kwargs: dict):
    """Detections and seconds of one patch."""
    t0 = time.perf_counter()
    x, y, v, _ = tsmap_detect(counts, p, **kwargs)
    return x, y, v, time.perf_counter() - t0


#: version of the cached TS-map detections (:func:`tsmap_detect_all`): raise it when the method changes
TSMAP_CACHE_VERSION = 1


def tsmap_detect_all(counts: np.ndarray, p: SurveyParams, progress=None, **kwargs) -> dict:
    """Baseline detections of patches (n, 3, npix, npix): flat arrays
    ``patch``, ``x_pix``, ``y_pix``, ``score`` (sqrt TS) and ``seconds`` per patch.
    The patches run through :func:`skyml.parallel.map_items` (in this process
    or on dask workers, the same detections). The detections are cached in
    ``data/cache/ctao_tsmap/`` by the SHA-256 of the patches, the survey
    parameters, the keyword arguments (``n_jobs`` aside: it changes no
    detection) and gammapy's version: a second run of notebook 06, or a
    workshop room after ``make workshop-unpack``, loads them. ``seconds`` are
    then those measured when the detections were computed."""
    import gammapy

    from .. import cache

    a = np.ascontiguousarray(counts)
    key = {"counts": cache.array_digest(a), "params": p.to_dict(),
           "kwargs": {k: v for k, v in kwargs.items() if k != "n_jobs"},
           "gammapy": gammapy.__version__, "version": TSMAP_CACHE_VERSION}
    return cache.cached_arrays("ctao_tsmap", key, lambda: _tsmap_detect_all(a, p, progress, **kwargs),
                               verbose=False)


def _tsmap_detect_all(counts: np.ndarray, p: SurveyParams, progress=None, **kwargs) -> dict:
    from .. import parallel

    found = parallel.map_items(_tsmap_item, list(counts), progress=progress, desc="CTAO TS maps", p=p, kwargs=kwargs)
    out = {"patch": [], "x_pix": [], "y_pix": [], "score": []}
    for i, (x, y, v, _) in enumerate(found):
        out["patch"].append(np.full(len(x), i))
        out["x_pix"].append(x)
        out["y_pix"].append(y)
        out["score"].append(v)
    res = {k: np.concatenate(v) if v else np.empty(0) for k, v in out.items()}
    res["seconds"] = np.array([f[3] for f in found])
    return res
