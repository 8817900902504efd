"""Classical baselines of the CTA real-time analysis, on the same counts maps
as the networks.

Each map is energy-integrated: ``counts`` (ny, nx) integers and ``background``
(ny, nx) the nominal IRF background template in expected counts per pixel
(the true background may differ from it by an unknown normalisation), with a
celestial WCS (astropy ``WCS`` or gammapy ``WcsGeom``) and the PSF as a
circular Gaussian mixture ``(sigmas_deg, weights)`` (:mod:`skyml.cta.psf`).
Pixel convention: 0-based, pixel centres at integers, x = column, y = row.

1. Aperture photometry (``regions`` masks): IRF-template background
   subtraction and the acceptance-corrected ring background, Li & Ma
   significance.
2. Blind search: gammapy ``ExcessMapEstimator`` correlated significance map
   and ``find_peaks`` (the "gammapy blind search" of the talk's public notebook).
3. Maximum-likelihood fit of a point source with gammapy (``Fit`` on a
   single-energy-bin ``MapDataset`` with a ``PSFMap`` built from the mixture).
4. Cramér–Rao bound of the source position for the same Poisson model.
5. Smoothed centroid: the peak of the Gaussian-smoothed, background-subtracted
   map refined by the centroid of the smoothed excess around it
   (:func:`smoothed_centroid`, tuned by :func:`tune_smoothed_centroid`).

Gammapy needs an energy axis even for energy-integrated maps: the datasets
here use one nominal bin, 1–10 TeV, for both reconstructed and true energy
(no energy dispersion), a spatially constant exposure :data:`EXPOSURE_CM2_S`
and a ``PowerLaw2SpectralModel`` over exactly that bin, so the fitted
``amplitude * EXPOSURE_CM2_S`` is the source's total expected counts
``npred`` (as in :func:`skyml.cta.psf.source_npred_map`). The energy values
carry no physics.
"""

from __future__ import annotations

import contextlib
import functools
import logging

import astropy.units as u
import numpy as np
from astropy.coordinates import Angle, SkyCoord
from astropy.wcs import WCS
from gammapy.maps import Map, MapAxis, WcsGeom
from regions import CircleAnnulusSkyRegion, CircleSkyRegion

from skyml import parallel
from skyml.cta.psf import containment_radius, source_npred_gradient
from skyml.metrics import lima_significance

__all__ = [
    "EXPOSURE_CM2_S",
    "on_region_mask",
    "ring_mask",
    "excess_irf",
    "excess_ring",
    "lima_on_ring",
    "blind_search",
    "blind_search_batch",
    "gaussian_mixture_psf_map",
    "fit_point_source",
    "fit_point_source_batch",
    "crlb_position_cov",
    "crlb_error_samples",
    "crlb_radius68",
    "smoothed_centroid",
    "tune_smoothed_centroid",
]

log = logging.getLogger(__name__)

#: Nominal, spatially constant exposure of the fit datasets (cm2 s); only the
#: product amplitude * exposure (= npred) is meaningful.
EXPOSURE_CM2_S = 1e12

_ENERGY_EDGES_TEV = (1.0, 10.0)


def _energy_axis(name="energy"):
    return MapAxis.from_energy_edges(list(_ENERGY_EDGES_TEV) * u.TeV, name=name)


# --------------------------------------------------------------------------
# geometry helpers
# --------------------------------------------------------------------------


def _wcs_and_shape(wcs, shape=None):
    """Celestial astropy WCS and image shape (ny, nx) from a WcsGeom or WCS."""
    if isinstance(wcs, WcsGeom):
        geom = wcs.to_image()
        geom_shape = tuple(int(n) for n in geom.data_shape)
        if shape is not None and tuple(shape) != geom_shape:
            raise ValueError(f"shape {tuple(shape)} differs from the geom's {geom_shape}")
        return geom.wcs, geom_shape
    if isinstance(wcs, WCS):
        celestial = wcs.celestial
        if shape is None:
            if celestial.array_shape is None:
                raise ValueError("an astropy WCS without array_shape needs an explicit shape=(ny, nx)")
            shape = celestial.array_shape
        return celestial, tuple(int(n) for n in shape)
    raise TypeError(f"expected an astropy WCS or a gammapy WcsGeom, got {type(wcs)}")


def _image_geom(geom, shape):
    """2D gammapy WcsGeom for a map of the given (ny, nx) shape."""
    wcs, shape = _wcs_and_shape(geom, shape)
    if isinstance(geom, WcsGeom):
        return geom.to_image()
    return WcsGeom(wcs=wcs, npix=(shape[1], shape[0]))


def _as_skycoord(center):
    if isinstance(center, SkyCoord):
        return center
    ra_deg, dec_deg = center
    return SkyCoord(float(ra_deg), float(dec_deg), unit="deg", frame="icrs")


def _sky_region_mask(region, wcs, shape):
    pixel_region = region.to_pixel(wcs)
    if not np.all(np.isfinite(pixel_region.center.xy)):
        # centre outside the projection's valid domain (e.g. > 90 deg from a TAN tangent point)
        return np.zeros(shape, dtype=bool)
    image = pixel_region.to_mask(mode="center").to_image(shape)
    if image is None:  # region entirely outside the map
        return np.zeros(shape, dtype=bool)
    return image.astype(bool)


# --------------------------------------------------------------------------
# 1. aperture photometry
# --------------------------------------------------------------------------


def on_region_mask(wcs, center, radius_deg=0.2, shape=None):
    """Boolean (ny, nx) mask of the pixels whose centre lies within
    ``radius_deg`` of ``center`` (``SkyCoord`` or ``(ra_deg, dec_deg)``).

    ``wcs``: gammapy ``WcsGeom`` or astropy ``WCS`` (then ``shape`` is taken
    from ``wcs.array_shape`` unless given). Built with
    ``regions.CircleSkyRegion(...).to_pixel(wcs).to_mask(mode="center")``
    (about 2 ms per mask for a 200x200 map).
    """
    wcs, shape = _wcs_and_shape(wcs, shape)
    region = CircleSkyRegion(_as_skycoord(center), Angle(radius_deg, "deg"))
    return _sky_region_mask(region, wcs, shape)


def ring_mask(wcs, center, r_in_deg=0.5, r_out_deg=0.9, shape=None):
    """Boolean (ny, nx) mask of the pixels whose centre lies in the annulus
    ``r_in_deg <= r < r_out_deg`` around ``center`` (same conventions as
    :func:`on_region_mask`; ``regions.CircleAnnulusSkyRegion``).

    The ring excludes nothing else: the maps hold a single source, which the
    ring surrounds.
    """
    if not 0 <= r_in_deg < r_out_deg:
        raise ValueError(f"need 0 <= r_in_deg < r_out_deg, got {r_in_deg}, {r_out_deg}")
    wcs, shape = _wcs_and_shape(wcs, shape)
    region = CircleAnnulusSkyRegion(
        _as_skycoord(center), Angle(r_in_deg, "deg"), Angle(r_out_deg, "deg")
    )
    return _sky_region_mask(region, wcs, shape)


def _masked_sum(values, mask):
    return np.sum(np.where(mask, values, 0.0), axis=(-2, -1))


def _scalar_or_array(x):
    x = np.asarray(x, dtype=float)
    return float(x) if x.ndim == 0 else x


def excess_irf(counts, background, on_mask):
    """Excess in the on region with the IRF background template.

    ``counts``, ``background`` (expected counts per pixel) and boolean
    ``on_mask``: arrays of shape (..., ny, nx) broadcast together, so a stack
    of maps is processed at once. Returns ``(n_on, background_on, excess)`` in
    counts, with ``excess = n_on - background_on``. Biased by
    ``(b - 1) * background_on`` when the true background is ``b`` times the
    template.
    """
    on_mask = np.asarray(on_mask, dtype=bool)
    n_on = _masked_sum(np.asarray(counts, dtype=float), on_mask)
    background_on = _masked_sum(np.asarray(background, dtype=float), on_mask)
    return _scalar_or_array(n_on), _scalar_or_array(background_on), _scalar_or_array(n_on - background_on)


def excess_ring(counts, background, on_mask, off_mask):
    """Excess in the on region with the acceptance-corrected ring background.

    ``alpha = sum(background[on]) / sum(background[off])`` (the background
    template serves as the acceptance, as in gammapy's ring background
    method), so the excess ``n_on - alpha * n_off`` does not depend on the
    background normalisation. Arrays of shape (..., ny, nx) broadcast
    together. Returns ``(n_on, n_off, alpha, excess)`` (counts, counts,
    dimensionless, counts). The on and off masks must not overlap.
    """
    on_mask = np.asarray(on_mask, dtype=bool)
    off_mask = np.asarray(off_mask, dtype=bool)
    if np.any(on_mask & off_mask):
        raise ValueError("the on and off (ring) masks overlap")
    counts = np.asarray(counts, dtype=float)
    background = np.asarray(background, dtype=float)
    n_on = _masked_sum(counts, on_mask)
    n_off = _masked_sum(counts, off_mask)
    background_off = _masked_sum(background, off_mask)
    if np.any(~(background_off > 0)):
        raise ValueError("the background template sums to <= 0 in the ring; alpha is undefined")
    alpha = _masked_sum(background, on_mask) / background_off
    excess = n_on - alpha * n_off
    return tuple(_scalar_or_array(v) for v in (n_on, n_off, alpha, excess))


def fov_background_norm(counts, background, threshold=3.0, radius_px=4, n_iter=4):
    """Background normalisation of each map fitted on the whole field of view,
    with the source pixels excluded: the classical blind alternative to a
    trusted IRF template (gammapy's ``FoVBackgroundMaker`` with an exclusion
    mask built from an ``ExcessMapEstimator`` significance map).

    ``counts`` and ``background`` (the nominal template, expected counts per
    pixel): arrays of shape (n, ny, nx) or (ny, nx). The template is scaled to
    the counts outside the exclusion region, ``norm = sum(counts) /
    sum(background)``; the exclusion region holds every pixel whose counts,
    summed in a disk of ``radius_px``, exceed ``norm`` times the template in
    the same disk by more than ``threshold`` (Li & Ma with a known
    background, ``(n - b) / sqrt(b)``), widened by the disk. Starting from no
    exclusion, ``n_iter`` rounds of fit-and-exclude. No source position is
    needed. Returns the normalisation per map (float or (n,) array).
    """
    norms = fov_background_norms(counts, background, [threshold], radius_px, n_iter)[0]
    return float(norms[0]) if np.ndim(counts) == 2 else norms


def fov_background_norms(counts, background, thresholds, radius_px=4, n_iter=4):
    """:func:`fov_background_norm` for several exclusion thresholds at once
    (a threshold scan shares the disk sums of counts and template). Returns an
    array (n_thresholds, n) of normalisations (n = 1 for a single map)."""
    from scipy import ndimage

    counts, background = np.asarray(counts), np.asarray(background)
    if counts.shape != background.shape or counts.ndim not in (2, 3):
        raise ValueError(f"fov_background_norm: counts {counts.shape} and background {background.shape} "
                         "must be equal (ny, nx) or (n, ny, nx) shapes")
    counts, background = (counts[None], background[None]) if counts.ndim == 2 else (counts, background)
    r = int(radius_px)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    disk = (xx ** 2 + yy ** 2 <= r ** 2)[None]
    thresholds = [float(t) for t in np.atleast_1d(thresholds)]
    norms = np.empty((len(thresholds), len(counts)))
    for start in range(0, len(counts), 128):  # bounded memory for large stacks
        c = counts[start:start + 128].astype(float)
        t = background[start:start + 128].astype(float)
        n_disk = ndimage.convolve(c, disk.astype(float), mode="constant")
        t_disk = ndimage.convolve(t, disk.astype(float), mode="constant")
        for k, threshold in enumerate(thresholds):
            keep = np.ones(c.shape, dtype=bool)
            for _ in range(int(n_iter)):
                norm = _masked_sum(c, keep) / np.maximum(_masked_sum(t, keep), 1e-12)
                b = norm[:, None, None] * t_disk
                signif = (n_disk - b) / np.sqrt(np.maximum(b, 1e-12))
                keep = ~_dilate_disk(signif > threshold, r)
                keep[~keep.reshape(len(keep), -1).any(axis=1)] = True  # never exclude a whole map
            norms[k, start:start + 128] = _masked_sum(c, keep) / np.maximum(_masked_sum(t, keep), 1e-12)
    return norms


def _dilate_disk(mask, r):
    """Binary dilation of a stack of masks (n, ny, nx) by the disk ``x² + y² <= r²``
    with nothing outside the map: ``scipy.ndimage.binary_dilation`` with that
    structure, computed as running maxima along the rows that hold a set pixel,
    shifted by each row offset of the disk (exactly equal, and much faster on
    the sparse masks of source exclusion)."""
    from scipy import ndimage

    out = np.zeros(mask.shape, dtype=bool)
    ny = mask.shape[-2]
    i_map, i_row = np.nonzero(mask.any(axis=-1))
    if len(i_map) == 0:
        return out
    rows = np.ascontiguousarray(mask[i_map, i_row]).view(np.uint8)
    for half in sorted({int(np.floor(np.sqrt(r * r - dy * dy))) for dy in range(-r, r + 1)}):
        widened = ndimage.maximum_filter1d(rows, 2 * half + 1, axis=-1, mode="constant", cval=0).view(bool)
        for dy in range(-r, r + 1):
            if int(np.floor(np.sqrt(r * r - dy * dy))) != half:
                continue
            target = i_row + dy
            inside = (target >= 0) & (target < ny)
            out[i_map[inside], target[inside]] |= widened[inside]
    return out


def smoothed_centroid(counts, background, sigma_px=2.0, radius_px=4.0, n_iter=3, norms=None, start=None):
    """Position of the brightest source of each map by a smoothed centroid.

    ``counts`` and ``background`` (nominal template, expected counts per
    pixel): arrays (n, ny, nx) or (ny, nx). The template is scaled by the
    field-of-view normalisation of each map (``norms``, default
    :func:`fov_background_norm`) and subtracted; the excess is smoothed with a
    Gaussian of ``sigma_px`` (``scipy.ndimage.gaussian_filter``, per map) and
    its maximum pixel is the first guess, unless ``start`` gives first guesses
    ``(x_pix, y_pix)`` (for instance a network's positions, which this then
    refines). The guess is then moved ``n_iter``
    times to the centroid of the positive smoothed excess within
    ``radius_px`` of it (``scipy.ndimage.center_of_mass``). Smoothing a
    symmetric source keeps its centre, and the positive part of a
    background-subtracted map has its centroid on the source when the source
    dominates the window.

    Returns ``(x_pix, y_pix)`` float arrays (or floats for one map), 0-based
    pixel coordinates (pixel centres at integers, x = column).
    """
    counts, background = np.asarray(counts, dtype=float), np.asarray(background, dtype=float)
    if counts.shape != background.shape or counts.ndim not in (2, 3):
        raise ValueError(f"smoothed_centroid: counts {counts.shape} and background {background.shape} "
                         "must be equal (ny, nx) or (n, ny, nx) shapes")
    if not (sigma_px >= 0 and radius_px > 0):
        raise ValueError("smoothed_centroid: need sigma_px >= 0 and radius_px > 0")
    single = counts.ndim == 2
    counts, background = (counts[None], background[None]) if single else (counts, background)
    if norms is None:
        norms = fov_background_norm(counts, background)
    smoothed = _smoothed_excess(counts, background, norms, sigma_px)
    x_out, y_out = _centroids(smoothed, radius_px, n_iter, start)
    return (float(x_out[0]), float(y_out[0])) if single else (x_out, y_out)


def _smoothed_excess(counts, background, norms, sigma_px):
    from scipy import ndimage

    norms = np.broadcast_to(np.asarray(norms, dtype=float), (len(counts),))
    excess = counts - norms[:, None, None] * background
    return ndimage.gaussian_filter(excess, sigma=(0.0, float(sigma_px), float(sigma_px)), mode="reflect")


def _centroids(smoothed, radius_px, n_iter, start=None):
    """The centroid iterations of :func:`smoothed_centroid` on smoothed excess maps
    (each window's centre of mass computed on the window's bounding box only)."""
    from scipy import ndimage

    n, ny, nx = smoothed.shape
    radius = float(radius_px)
    x_out, y_out = np.empty(n), np.empty(n)
    if start is not None:
        start = [np.broadcast_to(np.asarray(v, dtype=float), (n,)) for v in start]
    for i, img in enumerate(smoothed):
        if start is None:
            y0, x0 = np.unravel_index(int(np.argmax(img)), img.shape)
            x, y = float(x0), float(y0)
        else:
            x, y = float(start[0][i]), float(start[1][i])
        for _ in range(int(n_iter)):
            if not (np.isfinite(x) and np.isfinite(y)):
                break
            ya, yb = max(int(np.ceil(y - radius)), 0), min(int(np.floor(y + radius)) + 1, ny)
            xa, xb = max(int(np.ceil(x - radius)), 0), min(int(np.floor(x + radius)) + 1, nx)
            if ya >= yb or xa >= xb:  # the window lies outside the map
                break
            yy, xx = np.mgrid[ya:yb, xa:xb]
            window = (xx - x) ** 2 + (yy - y) ** 2 <= radius ** 2
            weights = np.where(window, np.maximum(img[ya:yb, xa:xb], 0.0), 0.0)
            if weights.sum() <= 0:
                break
            cy, cx = ndimage.center_of_mass(weights)
            y, x = float(cy) + ya, float(cx) + xa
        x_out[i], y_out[i] = x, y
    return x_out, y_out


def tune_smoothed_centroid(counts, background, x_true, y_true, sigmas_px=(0.5, 1.0, 1.5, 2.0, 3.0, 4.0),
                           radii_px=(1.5, 2.5, 4.0, 6.0, 9.0), fraction=0.68):
    """Grid search of :func:`smoothed_centroid` on (validation) maps with known
    positions: the ``(sigma_px, radius_px)`` of the smallest ``fraction``
    containment radius of the pixel error. Returns ``{"sigma_px",
    "radius_px", "scores" ({(sigma, radius): radius68_px}), "interior"}``;
    ``interior`` is True when both chosen values lie strictly inside their grid."""
    counts, background = np.asarray(counts, dtype=float), np.asarray(background, dtype=float)
    norms = fov_background_norm(counts, background)
    scores = {}
    for s in sigmas_px:
        smoothed = _smoothed_excess(counts, background, norms, s)  # once per smoothing width
        for r in radii_px:
            x, y = _centroids(smoothed, r, 3)
            scores[(float(s), float(r))] = float(np.quantile(np.hypot(x - x_true, y - y_true), fraction))
    (s_best, r_best) = min(scores, key=scores.get)
    interior = (min(sigmas_px) < s_best < max(sigmas_px)) and (min(radii_px) < r_best < max(radii_px))
    return {"sigma_px": s_best, "radius_px": r_best, "scores": scores, "interior": bool(interior)}


def lima_on_ring(counts, background, on_mask, off_mask):
    """Li & Ma significance of the on region against the ring background
    (:func:`excess_ring` counts and alpha, :func:`skyml.metrics.lima_significance`)."""
    n_on, n_off, alpha, _ = excess_ring(counts, background, on_mask, off_mask)
    return lima_significance(n_on, n_off, alpha)


# --------------------------------------------------------------------------
# 2. blind search
# --------------------------------------------------------------------------


def _check_maps(counts, background):
    counts = np.asarray(counts)
    background = np.asarray(background, dtype=float)
    if counts.ndim != 2 or counts.shape != background.shape:
        raise ValueError(f"counts {counts.shape} and background {background.shape} must be equal 2D shapes")
    return counts.astype(float), background


def _counts_background_maps(counts, background, geom):
    """Single-energy-bin gammapy counts and background maps."""
    counts, background = _check_maps(counts, background)
    geom_cube = _image_geom(geom, counts.shape).to_cube([_energy_axis()])
    return (
        Map.from_geom(geom_cube, data=counts[np.newaxis]),
        Map.from_geom(geom_cube, data=background[np.newaxis]),
    )


def blind_search(counts, background, geom, correlation_radius_deg=0.1, threshold=3.0, min_distance_deg=0.25):
    """Most significant peak of the gammapy correlated significance map.

    A single-energy-bin ``MapDataset(counts, background)`` goes through
    ``ExcessMapEstimator(correlation_radius)``: counts and background summed
    in a top-hat of radius ``correlation_radius_deg`` around each pixel and
    the Cash (known background) significance, ``sqrt_ts``, signed. Then
    ``gammapy.estimators.utils.find_peaks(sqrt_ts, threshold, min_distance)``;
    the highest peak is returned. ``min_distance_deg`` only separates the
    secondary peaks (kept for fidelity with the talk's public notebook).

    Returns ``(ra_deg, dec_deg, sqrt_ts)`` of the peak pixel's centre (the
    position is quantised to the pixel grid), or ``(nan, nan, nan)`` when no
    pixel exceeds ``threshold`` (a non-detection). The background template
    is taken at face value, so a background normalisation error biases
    ``sqrt_ts``. About 30 ms of CPU per 200x200 map.
    """
    from gammapy.datasets import MapDataset
    from gammapy.estimators import ExcessMapEstimator
    from gammapy.estimators.utils import find_peaks

    counts_map, background_map = _counts_background_maps(counts, background, geom)
    dataset = MapDataset(counts=counts_map, background=background_map)
    estimator = ExcessMapEstimator(
        correlation_radius=Angle(correlation_radius_deg, "deg"), selection_optional=[]
    )
    sqrt_ts = estimator.run(dataset)["sqrt_ts"]
    peaks = find_peaks(sqrt_ts, threshold=threshold, min_distance=Angle(min_distance_deg, "deg"))
    if len(peaks) == 0:
        return np.nan, np.nan, np.nan
    return (
        float(peaks["ra"].quantity[0].to_value("deg")),
        float(peaks["dec"].quantity[0].to_value("deg")),
        float(u.Quantity(peaks["value"][0]).value),
    )


def _per_map(values, n_maps, single_ndim, name):
    """Repeat a value shared by all maps, or check a per-map sequence."""
    if isinstance(values, (WcsGeom, WCS)):
        return [values] * n_maps
    if single_ndim is None:  # a sequence of geoms
        values = list(values)
    else:
        values = np.asarray(values, dtype=float)
        if values.ndim == single_ndim:
            return [values] * n_maps
    if len(values) != n_maps:
        raise ValueError(f"{name}: {len(values)} entries for {n_maps} maps")
    return values


def _blind_search_item(item, kwargs):
    return blind_search(*item, **kwargs)


#: version of the cached blind searches and fits (:func:`blind_search_batch`,
#: :func:`fit_point_source_batch`): raise it when either method changes
BATCH_CACHE_VERSION = 1


def _geoms_digest(geoms) -> str:
    """SHA-256 of the WCS headers and shapes of a sequence of WcsGeom/WCS."""
    import hashlib

    h = hashlib.sha256()
    for g in geoms:
        wcs = g.wcs if isinstance(g, WcsGeom) else g
        h.update(wcs.to_header_string(relax=True).encode())
        h.update(repr(tuple(int(n) for n in (g.data_shape if isinstance(g, WcsGeom) else wcs.pixel_shape or ())))
                 .encode())
    return h.hexdigest()


def _batch_key(method: str, counts_maps, background_maps, geoms, arrays=(), kwargs=None) -> dict:
    import gammapy

    from skyml import cache

    return {"method": method, "counts": cache.array_digest(counts_maps, *background_maps, *arrays),
            "geoms": _geoms_digest(geoms), "kwargs": dict(kwargs or {}), "gammapy": gammapy.__version__,
            "version": BATCH_CACHE_VERSION}


def blind_search_batch(counts_maps, background_maps, geoms, progress=True, cached=True, **kwargs):
    """:func:`blind_search` over a stack of maps.

    ``counts_maps``: (n, ny, nx); ``background_maps``: (ny, nx) shared or
    (n, ny, nx); ``geoms``: one WcsGeom/WCS shared by all maps or a sequence
    of n. Extra keyword arguments go to :func:`blind_search`. The maps run
    through :func:`skyml.parallel.map_items` (in this process or on dask
    workers, the same results). Returns a dict
    of (n,) float arrays ``ra_deg``, ``dec_deg``, ``sqrt_ts`` (NaN where
    nothing exceeded the threshold). The results are cached in
    ``data/cache/cta_blind_search/`` by the SHA-256 of the maps, their WCS,
    the keyword arguments and gammapy's version (a second run of notebook 03,
    or a workshop room after ``make workshop-unpack``, loads them).
    ``cached=False`` computes without reading or writing the cache (to time
    the method: a cached result takes the time of a file read).
    """
    from skyml import cache

    counts_maps = np.asarray(counts_maps)
    n_maps = len(counts_maps)
    background_maps = _per_map(background_maps, n_maps, 2, "background_maps")
    geoms = _per_map(geoms, n_maps, None, "geoms")
    if not cached:
        return _blind_search_batch(counts_maps, background_maps, geoms, progress, kwargs)
    key = _batch_key("blind_search", counts_maps, background_maps, geoms, kwargs=kwargs)
    return cache.cached_arrays(
        "cta_blind_search", key,
        lambda: _blind_search_batch(counts_maps, background_maps, geoms, progress, kwargs), verbose=False)


def _blind_search_batch(counts_maps, background_maps, geoms, progress, kwargs):
    n_maps = len(counts_maps)
    out = np.full((n_maps, 3), np.nan)
    items = [(counts_maps[i], background_maps[i], geoms[i]) for i in range(n_maps)]
    for i, peak in enumerate(parallel.map_items(_blind_search_item, items, progress=progress, desc="blind search",
                                                kwargs=kwargs)):
        out[i] = peak
    return {"ra_deg": out[:, 0], "dec_deg": out[:, 1], "sqrt_ts": out[:, 2]}


# --------------------------------------------------------------------------
# 3. gammapy maximum-likelihood fit
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _psf_map_cached(sigmas_deg: tuple, weights: tuple):
    from gammapy.irf import PSFMap

    sigmas_deg = np.asarray(sigmas_deg, dtype=float)
    weights = np.asarray(weights, dtype=float)
    r_max_deg = 8.0 * sigmas_deg.max()
    rad_axis = MapAxis.from_edges(np.linspace(0.0, r_max_deg, 401), name="rad", unit="deg")
    # a single spatial bin covering the whole sky: the PSF does not depend on
    # position, and for a single-bin PSFMap gammapy computes the kernel once per
    # fit instead of at every step of the source position (with the 2x1 bins
    # of PSFMap.from_gauss it is recomputed whenever the position moves)
    geom = WcsGeom.create(npix=(1, 1), proj="CAR", binsz=(360, 180)).to_cube(
        [rad_axis, _energy_axis("energy_true")]
    )
    rad_sr = np.deg2rad(rad_axis.center.to_value("deg"))
    sigmas_sr = np.deg2rad(sigmas_deg)
    profile = np.sum(
        weights[:, None] / (2 * np.pi * sigmas_sr[:, None] ** 2)
        * np.exp(-0.5 * (rad_sr[None, :] / sigmas_sr[:, None]) ** 2),
        axis=0,
    )  # dP/dOmega in sr^-1, small-angle approximation (sigma << 1 rad)
    data = np.broadcast_to(profile.reshape(1, -1, 1, 1), geom.data_shape).copy()
    psf_map = Map.from_geom(geom, data=data, unit="sr-1")
    exposure_map = Map.from_geom(geom.squash(axis_name="rad"), unit="m2 s", data=1.0)
    return PSFMap(psf_map=psf_map, exposure_map=exposure_map)


def gaussian_mixture_psf_map(sigmas_deg, weights):
    """gammapy ``PSFMap`` whose radial profile is the Gaussian mixture
    ``sum_k w_k N(sigma_k)`` (sigmas in degrees, weights summing to 1), on one
    nominal true-energy bin and one all-sky spatial bin (cached).

    Gammapy turns it into a ``PSFKernel`` on the counts grid by evaluating
    the profile on an oversampled grid and rebinning, i.e. approximately
    integrated over the pixels, like :func:`skyml.cta.psf.source_npred_map`.
    """
    sigmas_deg = np.atleast_1d(np.asarray(sigmas_deg, dtype=float))
    weights = np.atleast_1d(np.asarray(weights, dtype=float))
    if sigmas_deg.shape != weights.shape or np.any(sigmas_deg <= 0):
        raise ValueError("sigmas_deg must be positive and match weights in shape")
    if np.any(weights < 0) or not np.isclose(weights.sum(), 1.0, rtol=1e-6):
        raise ValueError(f"PSF weights must be non-negative and sum to 1 (sum={weights.sum()})")
    return _psf_map_cached(tuple(sigmas_deg.tolist()), tuple(weights.tolist()))


def _failed_fit(message):
    return {
        "ra_deg": np.nan,
        "dec_deg": np.nan,
        "npred": np.nan,
        "bkg_norm": np.nan,
        "success": False,
        "message": message,
    }


def fit_point_source(
    counts,
    background,
    geom,
    sigmas_deg,
    weights,
    init_radec,
    cutout_width_deg=2.0,
    max_shift_deg=0.5,
    init_npred=None,
):
    """Maximum-likelihood (Cash) fit of one point source with gammapy.

    Dataset: the ``cutout_width_deg`` square around ``init_radec`` of a
    single-energy-bin ``MapDataset`` with ``counts``, the ``background``
    template (expected counts per pixel, normalisation free through a
    ``FoVBackgroundModel``, tilt frozen), the constant exposure
    :data:`EXPOSURE_CM2_S` and the PSF as a ``PSFMap`` of the Gaussian
    mixture (:func:`gaussian_mixture_psf_map`). Model:
    ``SkyModel(PointSpatialModel, PowerLaw2SpectralModel)`` with free
    position and amplitude (index frozen; amplitude >= 0), started at
    ``init_radec`` (``(ra_deg, dec_deg)`` or ``SkyCoord``, e.g. the
    :func:`blind_search` peak) and at ``init_npred`` counts (default: the
    IRF-background excess within the PSF 80% containment radius, divided by
    0.8, at least 1). The position is bounded to ``max_shift_deg`` from the
    start (per axis): gammapy stops updating a model that has left the
    dataset geometry (``MapEvaluator.needs_update`` is False once
    ``contributes`` is False), so an unbounded MINUIT step off the cutout
    would freeze the source at zero flux. Optimised with
    ``gammapy.modeling.Fit().optimize`` (MINUIT migrad, initial steps
    0.01 deg in position; no covariance step).

    Returns a dict: ``ra_deg``, ``dec_deg`` (fitted position), ``npred``
    (total expected source counts, ``amplitude * EXPOSURE_CM2_S``),
    ``bkg_norm`` (fitted background normalisation), ``success`` and
    ``message``. A fit counts as failed, with NaN values and
    ``success=False``, when the start position is not finite (nothing to
    fit), MINUIT reports failure, an error is raised during the fit, the
    fitted amplitude sits at 0, or the fitted position is at the edge of the
    search box or outside the cutout; a start position off the map is a
    failed fit too.
    About 0.45 s of CPU per fit on a 2 deg cutout (~100 likelihood
    evaluations, dominated by gammapy's per-evaluation overhead).
    """
    from gammapy.datasets import MapDataset
    from gammapy.modeling import Fit
    from gammapy.modeling.models import (
        FoVBackgroundModel,
        Models,
        PointSpatialModel,
        PowerLaw2SpectralModel,
        SkyModel,
    )

    if not 0 < max_shift_deg < cutout_width_deg / 2:
        raise ValueError(f"need 0 < max_shift_deg < cutout_width_deg / 2, got {max_shift_deg}, {cutout_width_deg}")
    position = _as_skycoord(init_radec)
    if not (np.isfinite(position.ra.deg) and np.isfinite(position.dec.deg)):
        return _failed_fit("no finite start position (no blind-search detection)")

    psf = gaussian_mixture_psf_map(sigmas_deg, weights)
    counts_map, background_map = _counts_background_maps(counts, background, geom)
    width = Angle(cutout_width_deg, "deg")
    if not np.all(counts_map.geom.to_image().contains(position)):
        return _failed_fit("start position outside the map")
    counts_cut = counts_map.cutout(position, width)
    background_cut = background_map.cutout(position, width)
    geom_cut = counts_cut.geom
    exposure = Map.from_geom(
        geom_cut.to_image().to_cube([_energy_axis("energy_true")]), data=EXPOSURE_CM2_S, unit="cm2 s"
    )
    if init_npred is None:
        radius_deg = containment_radius(sigmas_deg, weights, 0.8)
        on_mask = on_region_mask(geom_cut, position, radius_deg)
        _, _, excess = excess_irf(counts_cut.data[0], background_cut.data[0], on_mask)
        init_npred = max(excess / 0.8, 1.0)

    dataset = MapDataset(
        counts=counts_cut, background=background_cut, exposure=exposure, psf=psf, name="map"
    )
    emin, emax = _ENERGY_EDGES_TEV * u.TeV
    spectral = PowerLaw2SpectralModel(
        amplitude=init_npred / EXPOSURE_CM2_S * u.Unit("cm-2 s-1"), index=2.0, emin=emin, emax=emax
    )
    spectral.index.frozen = True
    spectral.amplitude.min = 0.0
    spectral.amplitude.error = (np.sqrt(init_npred) + 1.0) / EXPOSURE_CM2_S
    ra0_deg, dec0_deg = position.ra.deg, position.dec.deg
    spatial = PointSpatialModel(lon_0=ra0_deg * u.deg, lat_0=dec0_deg * u.deg, frame="icrs")
    # MINUIT's first steps are the parameter errors (gammapy's default, one
    # unit of the internally scaled parameter, is ~10 deg for lon_0); start
    # with steps of 0.01 deg and keep the position in a box around the start
    cos_dec = max(np.cos(np.deg2rad(dec0_deg)), 1e-3)
    spatial.lon_0.error = 0.01 / cos_dec
    spatial.lat_0.error = 0.01
    spatial.lon_0.min, spatial.lon_0.max = ra0_deg - max_shift_deg / cos_dec, ra0_deg + max_shift_deg / cos_dec
    spatial.lat_0.min = max(dec0_deg - max_shift_deg, -90.0)
    spatial.lat_0.max = min(dec0_deg + max_shift_deg, 90.0)
    source = SkyModel(spatial_model=spatial, spectral_model=spectral, name="source")
    background_model = FoVBackgroundModel(dataset_name=dataset.name)
    background_model.spectral_model.tilt.frozen = True
    background_model.spectral_model.norm.error = 0.02
    try:
        with _quiet_edge_warnings():
            dataset.models = Models([source, background_model])
            result = Fit().optimize(dataset)
    except (ValueError, RuntimeError, FloatingPointError, np.linalg.LinAlgError) as err:
        log.debug("fit_point_source: fit raised %r", err)
        return _failed_fit(f"fit raised {type(err).__name__}: {err}")
    if not result.success:
        return _failed_fit(f"optimiser failed: {result.message}")

    ra_deg, dec_deg = float(spatial.lon_0.value), float(spatial.lat_0.value)
    npred = float(spectral.amplitude.value) * EXPOSURE_CM2_S
    bkg_norm = float(background_model.spectral_model.norm.value)
    if not np.all(np.isfinite([ra_deg, dec_deg, npred, bkg_norm])):
        return _failed_fit("non-finite fitted parameters")
    if not npred > 0:
        return _failed_fit("fitted npred at its lower bound 0 (position undefined)")
    at_bound = [
        np.isclose(par.value, limit, rtol=0.0, atol=1e-6)
        for par in (spatial.lon_0, spatial.lat_0)
        for limit in (par.min, par.max)
    ]
    if any(at_bound):
        return _failed_fit(f"fitted position at the edge of the +-{max_shift_deg} deg search box")
    fitted = SkyCoord(ra_deg, dec_deg, unit="deg", frame="icrs")
    if not np.all(geom_cut.to_image().contains(fitted)):
        return _failed_fit("fitted position outside the cutout")
    return {
        "ra_deg": ra_deg % 360.0,  # the bounded lon_0 may step across 0/360
        "dec_deg": dec_deg,
        "npred": npred,
        "bkg_norm": bkg_norm,
        "success": True,
        "message": str(result.message),
    }


class _DropOutsideGeomWarning(logging.Filter):
    """Drops gammapy's warning that a model outside the dataset geometry contributes through the PSF: logged
    on every evaluation while the fit of a source at a map edge steps across the trimmed cutout's border. The
    fit's own result says what matters (a position outside the cutout is a failed fit, with its reason)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is outside the target geom" not in record.getMessage()


@contextlib.contextmanager
def _quiet_edge_warnings():
    logger = logging.getLogger("gammapy.datasets.evaluator")
    drop = _DropOutsideGeomWarning()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def _fit_point_source_item(item, kwargs):
    return fit_point_source(*item, **kwargs)


def fit_point_source_batch(
    counts_maps, background_maps, geoms, sigmas_deg, weights, init_radecs, progress=True, cached=True, **kwargs
):
    """:func:`fit_point_source` over a stack of maps.

    ``counts_maps``: (n, ny, nx); ``background_maps``: (ny, nx) shared or
    (n, ny, nx); ``geoms``: one WcsGeom/WCS or a sequence of n;
    ``sigmas_deg``/``weights``: (k,) shared or (n, k); ``init_radecs``: (n, 2)
    ``(ra_deg, dec_deg)`` (NaN rows are non-detections, reported as failed
    fits). The fits run through :func:`skyml.parallel.map_items` (in this
    process or on dask workers, the same results). Returns a dict of (n,)
    arrays ``ra_deg``, ``dec_deg``, ``npred``, ``bkg_norm`` (NaN for failed
    fits), ``success`` (bool) and ``message`` (str). The fits are cached in
    ``data/cache/cta_fit/`` as :func:`blind_search_batch`'s searches are
    (``cached=False``: computed without the cache, as there).
    """
    from skyml import cache

    counts_maps = np.asarray(counts_maps)
    n_maps = len(counts_maps)
    background_maps = _per_map(background_maps, n_maps, 2, "background_maps")
    geoms = _per_map(geoms, n_maps, None, "geoms")
    sigmas_deg = _per_map(sigmas_deg, n_maps, 1, "sigmas_deg")
    weights = _per_map(weights, n_maps, 1, "weights")
    init_radecs = np.asarray(init_radecs, dtype=float).reshape(n_maps, 2)
    key = _batch_key("fit_point_source", counts_maps, background_maps, geoms,
                     (*sigmas_deg, *weights, init_radecs), kwargs)

    def build():
        out = _fit_point_source_batch(counts_maps, background_maps, geoms, sigmas_deg, weights, init_radecs,
                                      progress, kwargs)
        return {**out, "message": np.asarray([str(m) for m in out["message"]], dtype=str)}

    out = cache.cached_arrays("cta_fit", key, build, verbose=False) if cached else build()
    out["message"] = out["message"].astype(object)
    return out


def _fit_point_source_batch(counts_maps, background_maps, geoms, sigmas_deg, weights, init_radecs, progress,
                            kwargs):
    n_maps = len(counts_maps)
    keys = ("ra_deg", "dec_deg", "npred", "bkg_norm")
    out = {key: np.full(n_maps, np.nan) for key in keys}
    out["success"] = np.zeros(n_maps, dtype=bool)
    out["message"] = np.empty(n_maps, dtype=object)
    items = [(counts_maps[i], background_maps[i], geoms[i], sigmas_deg[i], weights[i], init_radecs[i])
             for i in range(n_maps)]
    fits = parallel.map_items(_fit_point_source_item, items, progress=progress, desc="gammapy fit", kwargs=kwargs)
    for i, fit in enumerate(fits):
        for key in keys:
            out[key][i] = fit[key]
        out["success"][i] = fit["success"]
        out["message"][i] = fit["message"]
    return out


# --------------------------------------------------------------------------
# 4. Cramér–Rao bound
# --------------------------------------------------------------------------


def crlb_position_cov(x_pix, y_pix, npred, background, sigmas_pix, weights):
    """Cramér–Rao bound on the covariance of the source position, pixel².

    Poisson model ``mu = b * background + source_npred_map(x, y, npred)``
    (``background``: (ny, nx) true expected background counts per pixel,
    which also sets the map shape; PSF Gaussian mixture with sigmas in
    pixels). Fisher information ``F_ij = sum_pix dmu/dtheta_i dmu/dtheta_j /
    mu`` for ``theta = (x, y, npred, b)`` at ``b = 1``, derivatives from
    :func:`skyml.cta.psf.source_npred_gradient`; the full matrix is
    inverted and the (x, y) block returned, i.e. npred and the background
    normalisation are nuisance parameters estimated jointly. With a
    background of zero everywhere, ``b`` is not identifiable and is left
    out. Pixels with ``mu = 0`` carry no information and are skipped.
    """
    background = np.asarray(background, dtype=float)
    if background.ndim != 2:
        raise ValueError(f"background must be a 2D (ny, nx) array, got shape {background.shape}")
    if np.any(background < 0):
        raise ValueError("background must be >= 0")
    if not npred > 0:
        raise ValueError(f"npred must be > 0, got {npred}")
    gradient = source_npred_gradient(x_pix, y_pix, npred, sigmas_pix, weights, shape=background.shape)
    mu = background + npred * gradient[2]
    derivatives = [gradient[0], gradient[1], gradient[2]]
    if np.any(background > 0):
        derivatives.append(background)
    used = mu > 0
    jacobian = np.stack(derivatives)[:, used]
    fisher = (jacobian / mu[used]) @ jacobian.T
    cov = np.linalg.inv(fisher)
    return cov[:2, :2]


def crlb_error_samples(covs, rng, n_draws=1):
    """Radial position errors (pixels) of an ideal unbiased estimator.

    ``covs``: (..., 2, 2) covariances (e.g. from :func:`crlb_position_cov`);
    ``rng``: ``numpy.random.Generator``. Draws ``n_draws`` errors per map from
    N(0, cov) and returns their lengths, shape ``covs.shape[:-2] +
    (n_draws,)``; pool them (``.ravel()``) to get the containment of the
    ideal estimator over an ensemble of maps. Uses the eigenvalues of each
    covariance: ``|e| = sqrt(l1 z1^2 + l2 z2^2)`` with standard normal z.
    """
    covs = np.asarray(covs, dtype=float)
    if covs.shape[-2:] != (2, 2):
        raise ValueError(f"covs must have shape (..., 2, 2), got {covs.shape}")
    eigenvalues = np.clip(np.linalg.eigvalsh(covs), 0.0, None)  # (..., 2)
    z = rng.standard_normal(covs.shape[:-2] + (n_draws, 2))
    return np.sqrt(np.sum(eigenvalues[..., np.newaxis, :] * z**2, axis=-1))


_N_ANGLES = 4096


def _radial_cdf(r, eigenvalues):
    """P(|e| <= r) for e ~ N(0, diag(eigenvalues)) (Hoyt distribution)."""
    theta = (np.arange(_N_ANGLES) + 0.5) * (np.pi / _N_ANGLES)
    g = eigenvalues[0] * np.cos(theta) ** 2 + eigenvalues[1] * np.sin(theta) ** 2
    with np.errstate(divide="ignore"):
        return float(np.mean(1.0 - np.exp(-0.5 * r**2 / g)))


def crlb_radius68(cov, fraction=0.68):
    """Radius (same unit as sqrt(cov)) containing ``fraction`` of a 2D
    Gaussian error N(0, cov): the quantile of the Hoyt distribution.

    Exact up to quadrature error (< 1e-10 for axis ratios up to ~100): with
    ``e = sqrt(l1) z1 u1 + sqrt(l2) z2 u2`` in polar coordinates of ``z``,
    ``P(|e| <= r) = mean over theta of 1 - exp(-r^2 / (2 g(theta)))``,
    ``g = l1 cos^2 theta + l2 sin^2 theta``, an integral of a smooth periodic
    function evaluated with the midpoint rule, then solved for ``r`` with
    ``scipy.optimize.brentq``. For a circular error (l1 = l2 = s^2) it is
    ``s * sqrt(-2 ln(1 - fraction))`` = 1.5096 s at 68%. ``cov`` of shape
    (..., 2, 2) gives an array of radii.
    """
    from scipy.optimize import brentq

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    cov = np.asarray(cov, dtype=float)
    if cov.shape[-2:] != (2, 2):
        raise ValueError(f"cov must have shape (..., 2, 2), got {cov.shape}")
    flat = cov.reshape(-1, 2, 2)
    radii = np.empty(len(flat))
    k = np.sqrt(-2.0 * np.log1p(-fraction))
    for i, c in enumerate(flat):
        eigenvalues = np.clip(np.linalg.eigvalsh(c), 0.0, None)
        if not np.all(np.isfinite(eigenvalues)) or eigenvalues.max() == 0:
            radii[i] = np.nan if not np.all(np.isfinite(eigenvalues)) else 0.0
            continue
        lo, hi = k * np.sqrt(eigenvalues.min()), k * np.sqrt(eigenvalues.max())
        if np.isclose(lo, hi, rtol=1e-12):
            radii[i] = hi
            continue
        radii[i] = brentq(lambda r: _radial_cdf(r, eigenvalues) - fraction, lo, hi, xtol=1e-12 * hi)
    return float(radii[0]) if cov.ndim == 2 else radii.reshape(cov.shape[:-2])
