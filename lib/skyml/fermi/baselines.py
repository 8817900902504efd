"""Classical baseline on the same patches: gammapy ``TSMapEstimator`` + ``find_peaks``.

Each 64×64×6 counts cube becomes a gammapy ``MapDataset`` with the **true
expected background** of the simulation (diffuse + isotropic: an advantage
over the network, which never sees it), the model's uniform exposure per
energy bin, a diagonal energy dispersion, and a ``PSFMap`` that holds the
simulation's own PSF per energy bin: the radial profile of the bin's
FRONT/BACK King mixture for a power law of index 2.2
(:func:`skyml.fermi.irf.bin_psf_profile`), not a single Gaussian. The TS map of
a point source with a power-law spectrum (index 2.2) is computed over all
energies together with a kernel of full width ``kernel_width_deg`` (default
:func:`default_kernel_width_deg`: twice the 95 % radius of the 0.3–1 GeV PSF
plus a pixel, so the kernel holds the PSF of the widest bin), and the local
maxima of sqrt(TS) above ``sqrt_ts_min`` (default 5, TS = 25, the 4FGL
threshold) at least ``min_distance_px`` apart are the detections; sqrt(TS) is
their score. The TS is fitted on a grid ``downsampling_factor`` (default 2,
0.31° pixels) coarser than the patch and interpolated back (gammapy's
``downsampling_factor``): with the 9° kernel a full-resolution map costs
about 15 s per patch on one core, the coarser one about 1.5 s, with TS values
within a few per cent; peak positions are correspondingly coarser (the
notebook reports the localisation error of every method). Sources near a patch edge are handled by the evaluation's margin
(:mod:`skyml.fermi.evaluation`), the same for every method. An earlier version
gave the TS map one Gaussian per bin of the rms width of the old Gaussian PSF
and a 3° kernel, narrower than the 0.3–1 GeV PSF.

Not done here: an iterative find-and-add loop (fit the found sources into the
model, recompute the TS map, find more), which 4FGL-style pipelines use to
detect faint sources next to bright ones.
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


def psf_map(p: FermiSimParams, energy_axis_true):
    """gammapy ``PSFMap`` of the simulation's PSF per energy bin (position independent)."""
    import astropy.units as u
    from gammapy.irf import PSFMap
    from gammapy.maps import Map, MapAxis, WcsGeom

    r_max = 3.0 * float(irf.bin_psf_containment_deg(p.event_types, 2.2, 0.95).max())
    rad = MapAxis.from_nodes(np.concatenate([[0.0], np.geomspace(1e-3, r_max, 400)]) * u.deg, name="rad")
    geom = WcsGeom.create(npix=(2, 1), proj="CAR", binsz=180).to_cube([rad, energy_axis_true])
    profile = irf.bin_psf_profile(rad.center.to_value("deg"), p.event_types)  # (6, n_rad) sr^-1
    data = np.broadcast_to(profile[:, :, None, None], geom.data_shape).copy()
    exposure = Map.from_geom(geom.squash(axis_name="rad"), unit="m2 s", data=1.0)
    return PSFMap(psf_map=Map.from_geom(geom, data=data, unit="sr-1"), exposure_map=exposure)


def default_kernel_width_deg(p: FermiSimParams) -> float:
    """Full width of the TS kernel: twice the 95 % radius of the widest bin's PSF plus a pixel."""
    return float(2.0 * irf.bin_psf_containment_deg(p.event_types, 2.2, 0.95).max() + p.binsz_deg)


def make_dataset(counts: np.ndarray, background: np.ndarray, glon: float, glat: float, p: FermiSimParams):
    """gammapy ``MapDataset`` of one patch (counts, true background, exposure, PSF)."""
    from gammapy.datasets import MapDataset
    from gammapy.irf import EDispKernelMap
    from gammapy.maps import Map

    e, et = _axes()
    geom = patch_geom(glon, glat, p, e)
    centres = np.sqrt(irf.ENERGY_EDGES_MEV[:-1] * irf.ENERGY_EDGES_MEV[1:])
    expo = irf.exposure_cm2s(centres, p.event_types)
    exposure = Map.from_geom(geom.to_image().to_cube([et]),
                             data=np.broadcast_to(expo[:, None, None], (irf.N_BINS, p.npix, p.npix)).copy(),
                             unit="cm2 s")
    psf = psf_map(p, et)
    return MapDataset(counts=Map.from_geom(geom, data=np.asarray(counts, float)),
                      background=Map.from_geom(geom, data=np.asarray(background, float)),
                      exposure=exposure, psf=psf, edisp=EDispKernelMap.from_diagonal_response(e, et),
                      name="patch")


def tsmap_detect(counts, background, glon, glat, p: FermiSimParams, sqrt_ts_min: float = 5.0,
                 min_distance_px: int = 2, kernel_width_deg: float | None = None, downsampling_factor: int = 2):
    """Detections (x, y, sqrt_ts) of one patch and its sqrt(TS) map."""
    import astropy.units as u
    from gammapy.estimators import TSMapEstimator
    from gammapy.estimators.utils import find_peaks
    from gammapy.modeling.models import PointSpatialModel, PowerLawSpectralModel, SkyModel

    kernel_width_deg = default_kernel_width_deg(p) if kernel_width_deg is None else kernel_width_deg
    ds = make_dataset(counts, background, glon, glat, p)
    model = SkyModel(spatial_model=PointSpatialModel(), spectral_model=PowerLawSpectralModel(index=2.2))
    est = TSMapEstimator(kernel_model=model, kernel_width=kernel_width_deg * u.deg, selection_optional=[],
                         sum_over_energy_groups=False, downsampling_factor=downsampling_factor)
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
