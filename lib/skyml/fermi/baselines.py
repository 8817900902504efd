"""Classical baseline on the same patches: gammapy ``TSMapEstimator`` + ``find_peaks``.

Each 64×64×6 counts cube becomes a gammapy ``MapDataset`` with the **true
expected background** of the simulation (diffuse + isotropic: an advantage
over the network, which never sees it), the model's uniform exposure per
energy bin, a diagonal energy dispersion, and a Gaussian ``PSFMap`` whose
width per bin is the counts-weighted rms width of the simulation's PSF
mixture (:func:`skyml.fermi.irf.bin_psf_sigma_eff_deg`). The TS map of a
point source with a power-law spectrum (index 2.2) is computed over all
energies together, and the local maxima of sqrt(TS) above ``sqrt_ts_min``
(default 5, TS = 25, the 4FGL threshold) at least ``min_distance_px`` apart
are the detections; sqrt(TS) is their score.
"""

from __future__ import annotations

import numpy as np

from . import irf
from .simulate import FermiSimParams, patch_geom


def _axes():
    import astropy.units as u
    from gammapy.maps import MapAxis

    e = MapAxis.from_energy_edges(irf.ENERGY_EDGES_MEV * u.MeV, name="energy")
    et = MapAxis.from_energy_edges(irf.ENERGY_EDGES_MEV * u.MeV, name="energy_true")
    return e, et


def make_dataset(counts: np.ndarray, background: np.ndarray, glon: float, glat: float, p: FermiSimParams):
    """gammapy ``MapDataset`` of one patch (counts, true background, exposure, PSF)."""
    import astropy.units as u
    from gammapy.datasets import MapDataset
    from gammapy.irf import EDispKernelMap, PSFMap
    from gammapy.maps import Map

    e, et = _axes()
    geom = patch_geom(glon, glat, p, e)
    centres = np.sqrt(irf.ENERGY_EDGES_MEV[:-1] * irf.ENERGY_EDGES_MEV[1:])
    expo = irf.exposure_cm2s(centres, p.event_types)
    exposure = Map.from_geom(geom.to_image().to_cube([et]),
                             data=np.broadcast_to(expo[:, None, None], (irf.N_BINS, p.npix, p.npix)).copy(),
                             unit="cm2 s")
    psf = PSFMap.from_gauss(et, sigma=irf.bin_psf_sigma_eff_deg(p.event_types) * u.deg)
    return MapDataset(counts=Map.from_geom(geom, data=np.asarray(counts, float)),
                      background=Map.from_geom(geom, data=np.asarray(background, float)),
                      exposure=exposure, psf=psf, edisp=EDispKernelMap.from_diagonal_response(e, et),
                      name="patch")


def tsmap_detect(counts, background, glon, glat, p: FermiSimParams, sqrt_ts_min: float = 5.0,
                 min_distance_px: int = 2, kernel_width_deg: float = 3.0):
    """Detections (x, y, sqrt_ts) of one patch and its sqrt(TS) map."""
    import astropy.units as u
    from gammapy.estimators import TSMapEstimator
    from gammapy.estimators.utils import find_peaks
    from gammapy.modeling.models import PointSpatialModel, PowerLawSpectralModel, SkyModel

    ds = make_dataset(counts, background, glon, glat, p)
    model = SkyModel(spatial_model=PointSpatialModel(), spectral_model=PowerLawSpectralModel(index=2.2))
    est = TSMapEstimator(kernel_model=model, kernel_width=kernel_width_deg * u.deg, selection_optional=[],
                         sum_over_energy_groups=False)
    result = est.run(ds)
    sqrt_ts = result["sqrt_ts"].reduce_over_axes()
    sqrt_ts.data = np.nan_to_num(sqrt_ts.data)
    peaks = find_peaks(sqrt_ts, threshold=sqrt_ts_min, min_distance=min_distance_px)
    if len(peaks) == 0:
        return np.empty(0), np.empty(0), np.empty(0), sqrt_ts.data
    return (np.asarray(peaks["x"], float), np.asarray(peaks["y"], float), np.asarray(peaks["value"], float),
            sqrt_ts.data)


def _tsmap_item(item, p: FermiSimParams, kwargs: dict):
    """Detections and seconds of one patch ``item = (counts, background, glon, glat)``."""
    import time
    import warnings

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        x, y, v, _ = tsmap_detect(*item, p, **kwargs)
    return x, y, v, time.perf_counter() - t0


def tsmap_detect_all(data: dict, p: FermiSimParams, index=None, progress=None, **kwargs) -> dict:
    """Baseline detections of the patches ``index`` (default all), flat arrays
    ``patch``, ``x_pix``, ``y_pix``, ``sqrt_ts`` plus ``seconds`` per patch.
    The patches run through :func:`skyml.parallel.map_items` (in this process
    or on dask workers, the same detections)."""
    from .. import parallel

    index = np.arange(len(data["counts"])) if index is None else np.asarray(index)
    items = [(data["counts"][i], data["background"][i], data["centre_glon"][i], data["centre_glat"][i])
             for i in index]
    found = parallel.map_items(_tsmap_item, items, progress=progress, desc="Fermi-LAT TS maps", p=p, kwargs=kwargs)
    out = {"patch": [], "x_pix": [], "y_pix": [], "sqrt_ts": []}
    for i, (x, y, v, _) in zip(index, found):
        out["patch"].append(np.full(len(x), i))
        out["x_pix"].append(x)
        out["y_pix"].append(y)
        out["sqrt_ts"].append(v)
    res = {k: np.concatenate(v) if v else np.empty(0) for k, v in out.items()}
    res["seconds"] = np.array([f[3] for f in found])
    return res
