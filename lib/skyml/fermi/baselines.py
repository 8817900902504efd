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

**Iterative find–fit–add** (``max_iterations``, default 3), as 4FGL-style
pipelines detect faint sources next to bright ones: after each TS map, the
new peaks join the source list, the amplitudes of all listed sources (point
sources of index 2.2 at their peak positions, rendered through the dataset's
PSF and exposure by gammapy) are fitted jointly by maximum Poisson likelihood
on top of the true background (:func:`fit_amplitudes`), and the next TS map is
computed with the fitted sources added to the background, so that a faint
source in a bright one's wing stands out. The loop stops when a TS map finds
nothing new. Each listed source's final TS is then that of the joint fit
(twice the log-likelihood gain of the model with it over the refit model
without it), and sources below ``sqrt_ts_min`` in the joint fit are dropped:
the score of a detection is its joint-fit sqrt(TS), not the single-source TS
of the map that found it. ``max_iterations=1`` is the single pass of earlier
versions (the peaks of one TS map, scored by it).
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

    s = p.psf_scale  # a PSF of widths x s: profile(r / s) / s^2 (sr^-1)
    r_max = 3.0 * float(irf.bin_psf_containment_deg(p.event_types, 2.2, 0.95).max()) * max(s, 1.0)
    rad = MapAxis.from_nodes(np.concatenate([[0.0], np.geomspace(1e-3, r_max, 400)]) * u.deg, name="rad")
    geom = WcsGeom.create(npix=(2, 1), proj="CAR", binsz=180).to_cube([rad, energy_axis_true])
    profile = irf.bin_psf_profile(rad.center.to_value("deg") / s, p.event_types) / s**2  # (6, n_rad) sr^-1
    data = np.broadcast_to(profile[:, :, None, None], geom.data_shape).copy()
    exposure = Map.from_geom(geom.squash(axis_name="rad"), unit="m2 s", data=1.0)
    return PSFMap(psf_map=Map.from_geom(geom, data=data, unit="sr-1"), exposure_map=exposure)


def default_kernel_width_deg(p: FermiSimParams) -> float:
    """Full width of the TS kernel: twice the 95 % radius of the widest bin's PSF plus a pixel."""
    return float(2.0 * irf.bin_psf_containment_deg(p.event_types, 2.2, 0.95).max() * p.psf_scale + p.binsz_deg)


def make_dataset(counts: np.ndarray, background: np.ndarray, glon: float, glat: float, p: FermiSimParams):
    """gammapy ``MapDataset`` of one patch (counts, true background, exposure, PSF)."""
    from gammapy.datasets import MapDataset
    from gammapy.irf import EDispKernelMap
    from gammapy.maps import Map

    e, et = _axes()
    geom = patch_geom(glon, glat, p, e)
    centres = np.sqrt(irf.ENERGY_EDGES_MEV[:-1] * irf.ENERGY_EDGES_MEV[1:])
    expo = irf.exposure_cm2s(centres, p.event_types) * p.exposure_scale
    exposure = Map.from_geom(geom.to_image().to_cube([et]),
                             data=np.broadcast_to(expo[:, None, None], (irf.N_BINS, p.npix, p.npix)).copy(),
                             unit="cm2 s")
    psf = psf_map(p, et)
    return MapDataset(counts=Map.from_geom(geom, data=np.asarray(counts, float)),
                      background=Map.from_geom(geom, data=np.asarray(background, float)),
                      exposure=exposure, psf=psf, edisp=EDispKernelMap.from_diagonal_response(e, et),
                      name="patch")


def _nll(mu: np.ndarray, counts: np.ndarray) -> float:
    """Poisson negative log-likelihood (without the log n! term)."""
    return float(np.sum(mu - counts * np.log(mu)))


def fit_amplitudes(counts: np.ndarray, background: np.ndarray, templates: np.ndarray,
                   start: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Non-negative amplitudes ``a`` of ``templates`` (k, …) maximising the
    Poisson likelihood of ``counts`` given ``background + Σ a_k templates_k``
    (L-BFGS-B with the analytic gradient); returns (a, negative log-likelihood)."""
    from scipy.optimize import minimize

    n = np.asarray(counts, np.float64).ravel()
    b = np.asarray(background, np.float64).ravel()
    if not len(templates):
        return np.empty(0), _nll(b, n)
    t = np.asarray(templates, np.float64).reshape(len(templates), -1)

    # einsum, not BLAS: a BLAS product sums in an order that depends on its thread count, and the
    # detections must be the same bit for bit in this process and on one-thread dask workers
    def fun(a):
        mu = b + np.einsum("k,kn->n", a, t)
        return _nll(mu, n), np.einsum("kn,n->k", t, 1.0 - n / mu)

    x0 = np.ones(len(t)) if start is None else np.maximum(np.asarray(start, np.float64), 0.0)
    res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * len(t),
                   options={"maxiter": 500, "ftol": 1e-12, "gtol": 1e-8})
    return res.x, float(res.fun)


def joint_ts(counts: np.ndarray, background: np.ndarray, templates: np.ndarray,
             amplitudes: np.ndarray, nll: float) -> np.ndarray:
    """TS of each source in the joint fit: 2 × (NLL of the refit without it − NLL with all)."""
    ts = np.empty(len(templates))
    for k in range(len(templates)):
        keep = np.arange(len(templates)) != k
        _, nll_without = fit_amplitudes(counts, background, templates[keep], amplitudes[keep])
        ts[k] = 2.0 * (nll_without - nll)
    return np.maximum(ts, 0.0)


def point_templates(ds, xs, ys) -> np.ndarray:
    """(k, n_energy, ny, nx) expected counts of unit point sources (power law
    of index 2.2, 1e-12 cm⁻² s⁻¹ TeV⁻¹ at 1 TeV) at pixel positions (xs, ys) of
    the dataset's geometry, through its exposure and PSF (gammapy)."""
    import astropy.units as u
    from gammapy.modeling.models import Models, PointSpatialModel, PowerLawSpectralModel, SkyModel

    if not len(xs):
        return np.empty((0, *ds.counts.data.shape))
    lons, lats = ds.counts.geom.to_image().pix_to_coord((np.asarray(xs, float), np.asarray(ys, float)))
    out = []
    for lon, lat in zip(np.atleast_1d(u.Quantity(lons, "deg").value), np.atleast_1d(u.Quantity(lats, "deg").value)):
        model = SkyModel(spatial_model=PointSpatialModel(lon_0=float(lon) * u.deg, lat_0=float(lat) * u.deg,
                                                         frame="galactic"),
                         spectral_model=PowerLawSpectralModel(index=2.2), name="probe")
        ds.models = Models([model])
        out.append(ds.npred_signal().data.copy())
    ds.models = None
    return np.asarray(out)


def tsmap_detect(counts, background, glon, glat, p: FermiSimParams, sqrt_ts_min: float = 5.0,
                 min_distance_px: int = 2, kernel_width_deg: float | None = None, downsampling_factor: int = 2,
                 max_iterations: int = 3):
    """Detections (x, y, sqrt_ts) of one patch and the sqrt(TS) map of the
    last iteration (module text: the iterative find–fit–add loop)."""
    import astropy.units as u
    from gammapy.estimators import TSMapEstimator
    from gammapy.estimators.utils import find_peaks
    from gammapy.maps import Map
    from gammapy.modeling.models import PointSpatialModel, PowerLawSpectralModel, SkyModel

    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, not {max_iterations}")
    kernel_width_deg = default_kernel_width_deg(p) if kernel_width_deg is None else kernel_width_deg
    counts = np.asarray(counts, float)
    background = np.asarray(background, float)
    ds = make_dataset(counts, background, glon, glat, p)
    model = SkyModel(spatial_model=PointSpatialModel(), spectral_model=PowerLawSpectralModel(index=2.2))
    est = TSMapEstimator(kernel_model=model, kernel_width=kernel_width_deg * u.deg, selection_optional=[],
                         sum_over_energy_groups=False, downsampling_factor=downsampling_factor)
    xs, ys, first_ts = np.empty(0), np.empty(0), np.empty(0)
    templates, amplitudes, nll = np.empty((0, *counts.shape)), np.empty(0), None
    for iteration in range(int(max_iterations)):
        model_counts = np.einsum("k,k...->...", amplitudes, templates) if len(amplitudes) else 0.0
        ds.background = Map.from_geom(ds.counts.geom, data=background + model_counts)
        result = est.run(ds)
        sqrt_ts = result["sqrt_ts"].reduce_over_axes()
        sqrt_ts.data = np.nan_to_num(sqrt_ts.data)
        peaks = find_peaks(sqrt_ts, threshold=sqrt_ts_min, min_distance=min_distance_px)
        px = np.asarray(peaks["x"], float) if len(peaks) else np.empty(0)
        py = np.asarray(peaks["y"], float) if len(peaks) else np.empty(0)
        pv = np.asarray(peaks["value"], float) if len(peaks) else np.empty(0)
        if len(xs) and len(px):  # a peak at a listed source is that source's residual, not a new one
            d = np.hypot(px[:, None] - xs[None, :], py[:, None] - ys[None, :]).min(1)
            px, py, pv = px[d >= min_distance_px], py[d >= min_distance_px], pv[d >= min_distance_px]
        if not len(px):
            break
        xs, ys, first_ts = np.concatenate([xs, px]), np.concatenate([ys, py]), np.concatenate([first_ts, pv])
        if max_iterations == 1:
            break
        templates = np.concatenate([templates, point_templates(ds, px, py)])
        amplitudes, nll = fit_amplitudes(counts, background, templates,
                                         np.concatenate([amplitudes, np.ones(len(px))]))
    if max_iterations == 1 or not len(xs):
        return xs, ys, first_ts, sqrt_ts.data
    ts = joint_ts(counts, background, templates, amplitudes, nll)
    keep = ts >= sqrt_ts_min**2
    return xs[keep], ys[keep], np.sqrt(ts[keep]), sqrt_ts.data


def _tsmap_item(item, p: FermiSimParams, kwargs: dict):
    """Detections and seconds of one patch ``item = (counts, background, glon, glat)``."""
    import time
    import warnings

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        x, y, v, _ = tsmap_detect(*item, p, **kwargs)
    return x, y, v, time.perf_counter() - t0


#: version of the cached TS-map detections (:func:`tsmap_detect_cached`): raise it when the method changes
TSMAP_CACHE_VERSION = 3
#: patches per cache entry of :func:`tsmap_detect_cached`: a run stopped part way keeps what it finished
TSMAP_CHUNK = 32


def data_fingerprint(data: dict, keys=("counts", "background", "centre_glon", "centre_glat")) -> str:
    """SHA-256 of the arrays the TS map reads (their bytes, dtype and shape)."""
    import hashlib

    h = hashlib.sha256()
    for k in keys:
        a = np.ascontiguousarray(data[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def tsmap_detect_cached(data: dict, p: FermiSimParams, index=None, progress=None, **kwargs) -> dict:
    """:func:`tsmap_detect_all`, cached in ``data/cache/fermi_tsmap/``: a
    notebook run again, or checked by nbval, does not recompute the TS maps.

    The patches ``index`` (default all) go in chunks of :data:`TSMAP_CHUNK`,
    each its own cache entry, keyed by the fingerprint of its patches, their
    indices, the simulation parameters and the keyword arguments (and
    :data:`TSMAP_CACHE_VERSION`); a run stopped part way (a full-profile run
    longer than a session) resumes at the first chunk not yet done. The
    detections are those of one :func:`tsmap_detect_all` call over all the
    patches, bit for bit; ``seconds`` (per patch) are those of the run that
    computed each chunk, and ``chunk_wall_s`` and ``chunk_workers`` (per
    chunk) its wall time and the worker processes it ran on."""
    import time

    from .. import cache, parallel

    def build(chunk):
        t0 = time.perf_counter()
        res = tsmap_detect_all(data, p, chunk, False, **kwargs)
        res["chunk_wall_s"] = np.array([time.perf_counter() - t0])
        res["chunk_workers"] = np.array([parallel.n_workers()])
        return res

    index = np.arange(len(data["counts"])) if index is None else np.asarray(index)
    keys = ("counts", "background", "centre_glon", "centre_glat")
    parts = []
    bar = parallel._bar(len(index), "Fermi-LAT TS maps", progress)
    for start in range(0, len(index), TSMAP_CHUNK):
        chunk = index[start:start + TSMAP_CHUNK]
        key = {"data": data_fingerprint({k: np.asarray(data[k])[chunk] for k in keys}), "sim": p.to_dict(),
               "index": [int(i) for i in chunk], "kwargs": {k: kwargs[k] for k in sorted(kwargs)},
               "version": TSMAP_CACHE_VERSION}
        parts.append(cache.cached_arrays("fermi_tsmap", key, lambda chunk=chunk: build(chunk), verbose=False))
        bar.update(len(chunk))
    bar.close()
    if not parts:
        return {k: np.empty(0) for k in ("patch", "x_pix", "y_pix", "sqrt_ts", "seconds", "chunk_wall_s",
                                         "chunk_workers")}
    return {k: np.concatenate([q[k] for q in parts]) for k in parts[0]}


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
