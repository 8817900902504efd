"""Yearly LAT cut-outs around sources and around false detections (Bhattacharyya et al., Fermi-LAT catalog meeting 2022).

A cut-out is ``npix`` × ``npix`` pixels of the detector's pixel size
(10°/64 = 0.156°; 16 px = 2.5° by default) in the six energy bins of
:mod:`skyml.fermi.irf`, for each of the ten years: an int32 array
(10, 6, npix, npix), year first. Three classes, as in AutoSourceID:

- ``AGN`` (0) and ``PSR`` (1): sources of mock catalogues
  (:func:`skyml.fermi.catalog.mock_catalogue`, the ``agn`` and ``psr``
  groups) with F(1–100 GeV) ≥ ``flux_min``. The cut-out is centred on the
  source position displaced by a Gaussian localisation error of
  ``loc_jitter_deg`` per axis (the detector's positions are not exact) and
  simulated directly in its own TAN geometry: every catalogue source within
  ``source_margin_deg`` of the cut-out contributes (each with its own yearly
  light curve of :mod:`skyml.fermi.variability`: AGN vary, pulsars and the
  rest are steady), plus a tenth of the diffuse + isotropic background per
  year; the counts of each year are Poisson.
- ``FAKE`` (2): false detections of notebook 04's detector. Source-free
  10-year patches (diffuse + isotropic only, random centres uniform on the
  sphere) are given to the U-Net + k-means of :mod:`skyml.fermi.pipeline`;
  every detection is false. The cut-out around a detection is cropped from
  the patch (detections closer than ``npix / 2`` to its edge are skipped)
  and its 10-year counts are split into years multinomially with equal
  probabilities — exactly the yearly Poisson draws of steady emission with
  equal yearly exposure.

Each cut-out also keeps its expected 10-year background (the "known
background" of the likelihood baseline and of the tree features: diffuse,
isotropic and, for a source cut-out, every other catalogue source), its centre (glon, glat), the true
F(1–100 GeV) (0 for FAKE), the target source's CLASS1, σ and yearly flux
factors, and its pixel position in the cut-out.

**Determinism.** Cut-out ``i`` of class ``c`` in a split uses the random
stream ``SeedSequence([seed, split, 100 + c, i])``; mock catalogue ``j`` of a
split ``[seed, split, 2000 + j]``; the background patches of the FAKE class
``[seed, split, 3000 + k]``.

**Shifted sets.** ``psf_scale``, ``exposure_scale``, ``diffuse_variant``,
``density_factor``, ``variability_scale`` and ``index_shift`` of
:class:`CutoutParams` draw cut-outs unlike the training ones: PSF widths and
exposure scaled (sources and background), another Galactic diffuse model,
denser mock skies, AGN yearly variability widths scaled and every spectral
index shifted (softer for ``index_shift > 0``). The FAKE cut-outs of a shifted
set come from the detector run on source-free patches of the shifted
instrument and diffuse model (``detector_params``). At their defaults these
parameters leave the cache keys and the arrays of the nominal sets unchanged.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from .. import cache
from . import catalog, irf, variability
from .simulate import (SPLITS, FermiSimParams, _pixel_fractions, _unit, background_model, node_counts,
                       patch_centres, patch_wcs, pix_to_world, world_to_pix)

CLASSES = ("AGN", "PSR", "FAKE")
AGN, PSR, FAKE = 0, 1, 2
GROUP_OF_CLASS = {AGN: "agn", PSR: "psr"}


@dataclass(frozen=True)
class CutoutParams:
    """Geometry and selection of the cut-outs (hashed into cache keys)."""

    npix: int = 16
    binsz_deg: float = 10.0 / 64
    event_types: str = "front+back"
    diffuse_variant: int = 1
    flux_min: float = 1.0e-10
    loc_jitter_deg: float = 0.08
    source_margin_deg: float = 3.0
    fake_threshold: float = 0.5
    fake_patches_per_batch: int = 64
    psf_scale: float = 1.0          # PSF widths x this (1: the P8R3 PSF)
    exposure_scale: float = 1.0     # exposure (sources and background) x this
    density_factor: float = 1.0     # mock-sky source density relative to the DR2 distributions
    variability_scale: float = 1.0  # AGN log-normal yearly variability widths x this
    index_shift: float = 0.0        # added to every source's spectral index

    def __post_init__(self):
        irf.check_event_types(self.event_types)
        if self.npix < 4 or self.npix % 2:
            raise ValueError(f"npix must be even and >= 4, got {self.npix}")
        if not (self.psf_scale > 0 and self.exposure_scale > 0 and self.density_factor > 0
                and self.variability_scale >= 0 and np.isfinite(self.index_shift)):
            raise ValueError("psf_scale, exposure_scale and density_factor must be > 0, variability_scale >= 0 "
                             "and index_shift finite")

    def sim_params(self) -> FermiSimParams:
        """The :class:`FermiSimParams` of a cut-out (one resolution for all bins)."""
        return FermiSimParams(npix=self.npix, patch_deg=self.npix * self.binsz_deg, event_types=self.event_types,
                              downsample=(1,) * irf.N_BINS, source_margin_deg=self.source_margin_deg,
                              diffuse_variant=self.diffuse_variant, density_factor=self.density_factor,
                              psf_scale=self.psf_scale, exposure_scale=self.exposure_scale)

    def to_dict(self) -> dict:
        """The parameters; those of :data:`SHIFT_DEFAULTS` only where they differ from their
        default, so that the nominal sets keep the cache keys they always had."""
        d = asdict(self)
        for k, default in SHIFT_DEFAULTS.items():
            if d[k] == default:
                del d[k]
        return d


#: the shift parameters of :class:`CutoutParams` and their nominal values
SHIFT_DEFAULTS = {"psf_scale": 1.0, "exposure_scale": 1.0, "density_factor": 1.0, "variability_scale": 1.0,
                  "index_shift": 0.0}


def shifted_params(cp: CutoutParams, detector_params: FermiSimParams, *, psf_scale: float, exposure_scale: float,
                   diffuse_variant: int, density_factor: float, variability_scale: float, index_shift: float):
    """The parameters of a shifted test set: ``(cut-outs, detector patches, likelihood fit)``.

    The cut-outs get every shift; the source-free patches on which the detector makes the FAKE class get the
    shifted instrument and diffuse model; the likelihood fit models the sources with the shifted exposure, which
    an analyst knows, and the nominal PSF, as every method here assumes it (the fit's forward model reads only
    the geometry, exposure and PSF of its parameters)."""
    from dataclasses import replace

    instrument = {"psf_scale": psf_scale, "exposure_scale": exposure_scale, "diffuse_variant": diffuse_variant}
    shifted = replace(cp, **instrument, density_factor=density_factor, variability_scale=variability_scale,
                      index_shift=index_shift)
    return shifted, replace(detector_params, **instrument), replace(shifted, psf_scale=1.0)


@functools.lru_cache(maxsize=4)
def _mock_sky(seed: int, split: str, j: int, cp: "CutoutParams") -> dict:
    s = int(np.random.SeedSequence([int(seed), SPLITS[split], 2000 + j]).generate_state(1)[0])
    sky = catalog.mock_catalogue(s, cp.sim_params().mock_params())
    sky["index"] = sky["index"] + cp.index_shift
    sky["unit"] = _unit(sky["glon"], sky["glat"])
    sky["node_counts"] = node_counts({k: sky[k] for k in catalog.SPECTRUM_FIELDS}, cp.event_types) * cp.exposure_scale
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], 2500 + j]))
    sky["sigma"] = variability.draw_sigma(sky["class1"], rng) * cp.variability_scale
    sky["yearly"] = variability.yearly_factors(sky["sigma"], rng)
    return sky


def render_each_source(x_pix, y_pix, counts_nodes, p: FermiSimParams) -> np.ndarray:
    """Expected counts (n_src, 6, npix, npix) of each point source separately
    (the per-source terms of :func:`skyml.fermi.simulate.render_sources`)."""
    sig_deg, cbins, weights = irf.psf_components(p.event_types)
    sig_deg = sig_deg * p.psf_scale
    x_pix, y_pix = np.atleast_1d(x_pix).astype(float), np.atleast_1d(y_pix).astype(float)
    out = np.zeros((len(x_pix), irf.N_BINS, p.npix, p.npix))
    if x_pix.size == 0:
        return out
    sig_pix = sig_deg / p.binsz_deg
    px = _pixel_fractions(x_pix, sig_pix, p.npix)
    py = _pixel_fractions(y_pix, sig_pix, p.npix)
    amp = np.atleast_2d(counts_nodes) @ weights
    for k in range(irf.N_BINS):
        m = cbins == k
        out[:, k] = np.einsum("sc,scy,scx->syx", amp[:, m], py[:, m], px[:, m], optimize=True)
    return out


def simulate_source_cutout(sky: dict, index: int, cp: CutoutParams, rng: np.random.Generator,
                           noise_free: bool = False):
    """One yearly cut-out around source ``index`` of ``sky``.

    Returns ``(counts (10, 6, n, n) int32, background (6, n, n), centre glon,
    centre glat, x_pix, y_pix)``: the background is the 10-year expected
    counts of everything but the target (diffuse, isotropic and the other
    sources at their mean flux), and (x_pix, y_pix)
    is the source position in the cut-out (0-based, centres at integers).
    ``noise_free=True`` returns the expected yearly counts (float) instead of
    their Poisson draw (the same random centre), for tests of unbiasedness.
    """
    p = cp.sim_params()
    glon0, glat0 = float(sky["glon"][index]), float(sky["glat"][index])
    dx, dy = rng.normal(0.0, cp.loc_jitter_deg / cp.binsz_deg, 2)
    centre = (cp.npix - 1) / 2.0
    glon, glat = pix_to_world(patch_wcs(glon0, glat0, p), centre + dx, centre + dy)
    glon, glat = float(glon), float(glat)
    wcs = patch_wcs(glon, glat, p)
    radius = np.deg2rad(p.patch_deg / np.sqrt(2.0) + cp.source_margin_deg)
    near = np.flatnonzero(sky["unit"] @ _unit(glon, glat) > np.cos(radius))
    x, y = world_to_pix(wcs, sky["glon"][near], sky["glat"][near])
    bkg = background_model(glon, glat, p)
    per_source = render_each_source(x, y, sky["node_counts"][near], p)
    mu = np.einsum("sy,skij->ykij", sky["yearly"][near] / variability.N_YEARS, per_source)
    expected = mu + bkg[None] / variability.N_YEARS
    counts = expected if noise_free else rng.poisson(expected).astype(np.int32)
    k = int(np.flatnonzero(near == index)[0])
    # the known background of the target: diffuse + isotropic + every other source (10-year means)
    others = per_source.sum(axis=0) - per_source[k]
    return counts, bkg + others, glon, glat, float(x[k]), float(y[k])


def _empty_arrays(n: int, cp: CutoutParams) -> dict:
    return {
        "counts": np.zeros((n, variability.N_YEARS, irf.N_BINS, cp.npix, cp.npix), np.int32),
        "background": np.zeros((n, irf.N_BINS, cp.npix, cp.npix), np.float32),
        "label": np.zeros(n, np.int64), "glon": np.zeros(n), "glat": np.zeros(n), "flux1000": np.zeros(n),
        "x_pix": np.zeros(n), "y_pix": np.zeros(n), "sigma": np.zeros(n),
        "yearly": np.ones((n, variability.N_YEARS)), "class1": np.full(n, "", dtype="<U8"),
    }


def simulate_source_cutouts(label: int, n: int, seed: int, split: str, cp: CutoutParams) -> dict:
    """``n`` cut-outs of class ``AGN`` or ``PSR`` (see the module docstring)."""
    if label not in GROUP_OF_CLASS:
        raise ValueError(f"label {label} is not a source class ({AGN}=AGN, {PSR}=PSR)")
    out = _empty_arrays(n, cp)
    i, j = 0, 0
    while i < n:
        sky = _mock_sky(seed, split, j, cp)
        rows = np.flatnonzero((sky["group"] == GROUP_OF_CLASS[label]) & (sky["flux1000"] >= cp.flux_min))
        rng_pick = np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], 2700 + j, label]))
        rows = rng_pick.permutation(rows)
        for r in rows[: n - i]:
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], 100 + label, i]))
            c, b, glon, glat, x, y = simulate_source_cutout(sky, int(r), cp, rng)
            out["counts"][i], out["background"][i] = c, b
            out["glon"][i], out["glat"][i], out["x_pix"][i], out["y_pix"][i] = glon, glat, x, y
            out["label"][i], out["flux1000"][i] = label, sky["flux1000"][r]
            out["sigma"][i], out["yearly"][i], out["class1"][i] = sky["sigma"][r], sky["yearly"][r], sky["class1"][r]
            i += 1
        j += 1
    return out


def crop(cube: np.ndarray, x: float, y: float, npix: int):
    """Crop ``npix`` × ``npix`` (last two axes) so that (x, y) lies within
    half a pixel of the crop centre; returns (crop, x0, y0) or None if the
    crop leaves the cube."""
    half = (npix - 1) / 2.0
    x0, y0 = int(np.round(x - half)), int(np.round(y - half))
    ny, nx = cube.shape[-2:]
    if x0 < 0 or y0 < 0 or x0 + npix > nx or y0 + npix > ny:
        return None
    return cube[..., y0:y0 + npix, x0:x0 + npix], x0, y0


def split_years(counts: np.ndarray, rng: np.random.Generator, n_years: int = variability.N_YEARS) -> np.ndarray:
    """Multinomial split of 10-year counts (...) into ``n_years`` equal years: (n_years, ...)."""
    counts = np.asarray(counts)
    if np.any(counts < 0):
        raise ValueError("counts must be non-negative")
    flat = counts.reshape(-1).astype(np.int64)
    years = rng.multinomial(flat, np.full(n_years, 1.0 / n_years))
    return np.moveaxis(years, -1, 0).reshape((n_years,) + counts.shape).astype(np.int32)


def simulate_fake_cutouts(n: int, seed: int, split: str, cp: CutoutParams, detector, detector_params) -> dict:
    """``n`` cut-outs around false detections of ``detector`` (notebook 04's
    U-Net, applied with :func:`skyml.fermi.detect.detect_all`, k-means) on
    source-free patches of ``detector_params`` geometry."""
    from . import detect
    from .pipeline import predict_maps

    out = _empty_arrays(n, cp)
    i, k = 0, 0
    dp = detector_params
    while i < n:
        glon_c, glat_c, _ = patch_centres("train", cp.fake_patches_per_batch, seed * 7919 + 31 * SPLITS[split] + k)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], 3000 + k]))
        bkgs = np.stack([background_model(lo, la, dp) for lo, la in zip(glon_c, glat_c)])
        counts = rng.poisson(bkgs).astype(np.int32)
        prob, _ = predict_maps(detector, counts, dp)
        det = detect.detect_all(prob, "unet_kmeans", cp.fake_threshold)
        for q in rng.permutation(len(det["x_pix"])):
            if i >= n:
                break
            pi, x, y = int(det["patch"][q]), float(det["x_pix"][q]), float(det["y_pix"][q])
            cut = crop(counts[pi], x, y, cp.npix)
            if cut is None:
                continue
            c10, x0, y0 = cut
            wcs = patch_wcs(glon_c[pi], glat_c[pi], dp)
            centre = (cp.npix - 1) / 2.0
            glon, glat = pix_to_world(wcs, x0 + centre, y0 + centre)
            out["counts"][i] = split_years(c10, rng)
            out["background"][i] = bkgs[pi][:, y0:y0 + cp.npix, x0:x0 + cp.npix]
            out["glon"][i], out["glat"][i] = float(glon), float(glat)
            out["x_pix"][i], out["y_pix"][i] = x - x0, y - y0
            out["label"][i], out["class1"][i] = FAKE, "fake"
            i += 1
        k += 1
    return out


def simulate_cutouts(n_per_class: dict, seed: int, split: str, cp: CutoutParams, detector=None,
                     detector_params=None) -> dict:
    """Cut-outs of several classes, concatenated in class order:
    ``n_per_class`` maps a class name of :data:`CLASSES` to a count."""
    parts = []
    for name, n in n_per_class.items():
        if name not in CLASSES:
            raise ValueError(f"unknown class {name!r}; choose from {CLASSES}")
        if n < 1:
            continue
        label = CLASSES.index(name)
        if label == FAKE:
            if detector is None:
                raise ValueError("FAKE cut-outs need the detector (notebook 04's U-Net)")
            parts.append(simulate_fake_cutouts(int(n), seed, split, cp, detector, detector_params))
        else:
            parts.append(simulate_source_cutouts(label, int(n), seed, split, cp))
    if not parts:
        raise ValueError("no cut-outs requested")
    return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}


def load_cutouts(n_per_class: dict, seed: int, split: str, cp: CutoutParams | None = None, detector=None,
                 detector_params=None, detector_key: dict | None = None) -> dict:
    """:func:`simulate_cutouts`, cached in ``data/cache/fermi_cutouts/<hash>/``.
    ``detector_key`` (the U-Net's cache key) enters the hash of a set with FAKE cut-outs."""
    cp = cp or CutoutParams()
    key = {"n_per_class": {k: int(v) for k, v in n_per_class.items()}, "seed": int(seed), "split": split,
           **cp.to_dict(), "detector": detector_key if n_per_class.get("FAKE", 0) else None,
           "detector_params": detector_params.to_dict() if detector_params is not None else None, "version": 1}
    return cache.cached_arrays("fermi_cutouts", key, lambda: simulate_cutouts(
        n_per_class, seed, split, cp, detector, detector_params))


#: fields of :class:`CutoutParams` that a training variant of :func:`randomised_cutouts` may set
RANDOMISABLE = ("psf_scale", "exposure_scale", "density_factor", "index_shift", "flux_min")


def randomised_cutouts(n_per_class: dict, seed: int, split: str, cp: CutoutParams, variants) -> dict:
    """Source cut-outs of several instruments and populations, for domain
    randomisation: one set of ``n_per_class`` (AGN and PSR only) per entry of
    ``variants``, each a dict of :data:`RANDOMISABLE` fields that replace
    those of ``cp`` (for example ``{"psf_scale": 1.15, "exposure_scale": 0.85}``),
    the k-th (k = 1, 2, ...) drawn with seed ``seed + 100 k`` and cached as by
    :func:`load_cutouts`. Returns the sets concatenated, with
    ``exposure_scale`` (n,), each cut-out's exposure relative to ``cp``'s."""
    from dataclasses import replace

    if n_per_class.get("FAKE", 0):
        raise ValueError("randomised_cutouts draws source cut-outs only (no FAKE class)")
    variants = [dict(v) for v in variants]
    if not variants:
        raise ValueError("randomised_cutouts needs at least one variant")
    sets = []
    for k, v in enumerate(variants, start=1):
        unknown = sorted(set(v) - set(RANDOMISABLE))
        if unknown:
            raise ValueError(f"variant {k}: {unknown} cannot be randomised; choose from {RANDOMISABLE}")
        vcp = replace(cp, **v)
        d = dict(load_cutouts(n_per_class, int(seed) + 100 * k, split, vcp))
        d["exposure_scale"] = np.full(len(d["label"]), vcp.exposure_scale / cp.exposure_scale)
        sets.append(d)
    return {key: np.concatenate([s[key] for s in sets]) for key in sets[0]}


def concatenate_sets(*sets: dict) -> dict:
    """Cut-out sets joined along the first axis (the keys of the first set,
    and ``exposure_scale`` if any set has it); a set without
    ``exposure_scale`` (one of :func:`load_cutouts`) has the nominal exposure, 1."""
    if not sets:
        raise ValueError("concatenate_sets needs at least one set")
    keys = list(sets[0])
    if "exposure_scale" not in keys and any("exposure_scale" in s for s in sets):
        keys.append("exposure_scale")
    missing = [k for s in sets for k in keys if k not in s and k != "exposure_scale"]
    if missing:
        raise ValueError(f"concatenate_sets: the sets do not share the keys {sorted(set(missing))}")

    def column(s, key):
        if key == "exposure_scale" and key not in s:
            return np.ones(len(s["label"]))
        return s[key]

    return {key: np.concatenate([column(s, key) for s in sets]) for key in keys}


def ten_year_counts(cutouts: dict) -> np.ndarray:
    """10-year counts (n, 6, npix, npix): the yearly cut-outs summed over years."""
    return np.asarray(cutouts["counts"]).sum(axis=1)


def diffuse_background(glon, glat, cp: CutoutParams) -> np.ndarray:
    """Expected 10-year diffuse + isotropic counts (n, 6, npix, npix) of
    cut-outs centred on (glon, glat) in their own TAN geometry: the background
    model a flux estimator can know for any sky position (the other sources
    are not in it), given to the flux network and the classifier's features."""
    glon, glat = np.atleast_1d(np.asarray(glon, float)), np.atleast_1d(np.asarray(glat, float))
    if glon.shape != glat.shape or np.any(~np.isfinite(glon)) or np.any(~np.isfinite(glat)):
        raise ValueError("glon and glat must be finite arrays of the same shape")
    p = cp.sim_params()
    out = np.empty((len(glon), irf.N_BINS, cp.npix, cp.npix), np.float32)
    for i, (lo, la) in enumerate(zip(glon, glat)):
        out[i] = background_model(float(lo), float(la), p)
    return out

