"""Simulated 10-year LAT counts cubes of 10°×10° sky patches.

**Geometry.** A patch is a 64×64-pixel, 10°×10° gnomonic (TAN) image in
Galactic coordinates (AutoSourceID's geometry, 0.156°/px) centred on a sky
position: the 768 HEALPix NSIDE=8 pixel centres (healpy) for the test skies,
random positions uniform on the sphere for training. Instead of cutting
patches out of all-sky HEALPix maps, each patch is simulated directly in its
own tangent-plane WCS — the same expected counts without the resampling of a
HEALPix map, at the price that the patches of neighbouring centres are
independent Poisson draws where they overlap. A sky position is *owned* by
the patch of the HEALPix pixel that contains it (:func:`owner_pixel`): the
all-sky catalogue keeps each detection only from its owner patch. An NSIDE=8
pixel reaches up to 7.5° from its centre, so small corners of some pixels fall
outside their square patch; :mod:`skyml.fermi.evaluation` counts the sources
there as not covered and reports the covered fraction. All-sky HEALPix maps
of the same model, and patches cut out of them (for ``skyml fermi-detect`` on
HEALPix input), are in :mod:`skyml.fermi.healpix`.

**Multi-input.** Each energy bin is simulated at 64×64 and then summed over
blocks of ``downsample[k]`` × ``downsample[k]`` pixels, so the inputs are
exact Poisson counts at a resolution matched to the PSF: 16×16 (0.625°/px) at
0.3–1 GeV, 32×32 (0.31°/px) at 1–3 GeV and 64×64 (0.156°/px) above 3 GeV
(:func:`network_inputs`). The classical baseline sees the full 64×64 cube.

**Expected counts.** Sources: the exposure-weighted spectrum at the energy
nodes of :func:`skyml.fermi.irf.node_grid`, each node the pixel-integrated
P8R3 King PSF of FRONT (or FRONT and BACK) events, as its Gaussian mixture
(:func:`skyml.fermi.irf.psf_components`); sources up to
``source_margin_deg`` (5°, about the 95 % radius of the 0.3–1 GeV PSF)
outside the patch spill their PSF tails into it. Diffuse: the Galactic model
of :mod:`skyml.fermi.diffuse` at the pixel centres times exposure and pixel
solid angle, convolved with the bin's PSF (:func:`skyml.fermi.irf.bin_psf_mixture`
for a spectral index 2.5; the image edge continued by its edge values),
plus the isotropic background.

**Determinism.** Patch ``i`` of a set uses the random stream
``SeedSequence([seed, split, i])``; mock catalogue ``j`` (one per
``patches_per_sky`` training patches) uses ``[seed, split, 1000 + j]``; the
same parameters give the same arrays bit for bit.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import erf

from .. import cache, parallel
from . import catalog, diffuse, irf

NSIDE = 8
SPLITS = {"train": 0, "val": 1, "test": 2, "demo": 3}
SKIES = ("mock", "dr2")


@dataclass(frozen=True)
class FermiSimParams:
    """Instrument, geometry and sky parameters of a set of patches (hashed into cache keys)."""

    npix: int = 64
    patch_deg: float = 10.0
    event_types: str = "front+back"
    downsample: tuple = (4, 2, 1, 1, 1, 1)
    source_margin_deg: float = 5.0
    diffuse_variant: int = 1
    density_factor: float = 1.0
    faint_fraction: float = 1.0
    faint_min_factor: float = 0.2
    patches_per_sky: int = 64
    label_radius_px: float = 2.5
    label_flux_min: float = 1.0e-10
    psf_scale: float = 1.0       # PSF widths x this (an instrument off the nominal one; 1: the P8R3 PSF)
    exposure_scale: float = 1.0  # exposure (sources and background) x this

    def __post_init__(self):
        irf.check_event_types(self.event_types)
        if not (self.psf_scale > 0 and self.exposure_scale > 0):
            raise ValueError("psf_scale and exposure_scale must be > 0")
        diffuse.get_variant(self.diffuse_variant)
        if len(self.downsample) != irf.N_BINS:
            raise ValueError(f"downsample needs one factor per energy bin ({irf.N_BINS})")
        for f in self.downsample:
            if f < 1 or self.npix % f:
                raise ValueError(f"downsample factor {f} does not divide npix={self.npix}")

    @property
    def binsz_deg(self) -> float:
        return self.patch_deg / self.npix

    @property
    def nominal_instrument(self) -> bool:
        """Whether the PSF and exposure are the nominal ones (no instrument shift)."""
        return self.psf_scale == 1.0 and self.exposure_scale == 1.0

    def mock_params(self) -> catalog.MockParams:
        return catalog.MockParams(density_factor=self.density_factor, faint_fraction=self.faint_fraction,
                                  faint_min_factor=self.faint_min_factor)

    def to_dict(self) -> dict:
        """The parameters, and the name of the PSF model (:data:`skyml.fermi.irf.PSF_MODEL`),
        so that every cache key built from them changes with the PSF."""
        d = asdict(self)
        d["downsample"] = list(self.downsample)
        d["psf_model"] = irf.PSF_MODEL
        for k in ("psf_scale", "exposure_scale"):  # the nominal instrument keeps the keys it always had
            if d[k] == 1.0:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FermiSimParams":
        d = dict(d)
        d.pop("psf_model", None)
        d["downsample"] = tuple(d["downsample"])
        return cls(**d)


# --------------------------------------------------------------------------- geometry
def healpix_centres(nside: int = NSIDE) -> tuple[np.ndarray, np.ndarray]:
    """(glon, glat) [deg] of the HEALPix pixel centres (RING order)."""
    import healpy as hp

    return hp.pix2ang(nside, np.arange(hp.nside2npix(nside)), lonlat=True)


def owner_pixel(glon, glat, nside: int = NSIDE) -> np.ndarray:
    """HEALPix NSIDE=8 pixel (RING) that contains each position: the patch that owns it."""
    import healpy as hp

    return hp.ang2pix(nside, np.asarray(glon, float), np.asarray(glat, float), lonlat=True)


def patch_geom(glon: float, glat: float, p: FermiSimParams, energy_axis=None, downsample: int = 1):
    """gammapy ``WcsGeom`` of a patch (TAN, Galactic), optionally with an energy axis.

    ``downsample`` > 1 gives the same 10°×10° patch in ``npix / downsample``
    pixels of ``downsample`` × the size: the grid of :func:`downsample_counts`."""
    from astropy.coordinates import SkyCoord
    from gammapy.maps import WcsGeom

    if downsample < 1 or p.npix % downsample:
        raise ValueError(f"downsample factor {downsample} does not divide npix={p.npix}")
    return WcsGeom.create(skydir=SkyCoord(glon, glat, unit="deg", frame="galactic"), npix=p.npix // downsample,
                          binsz=p.binsz_deg * downsample, frame="galactic", proj="TAN",
                          axes=[energy_axis] if energy_axis is not None else None)


@functools.lru_cache(maxsize=4096)
def _patch_wcs(glon, glat, npix, binsz):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["GLON-TAN", "GLAT-TAN"]
    w.wcs.crval = [glon, glat]
    w.wcs.crpix = [(npix + 1) / 2.0, (npix + 1) / 2.0]
    w.wcs.cdelt = [-binsz, binsz]
    return w


def patch_wcs(glon: float, glat: float, p: FermiSimParams):
    """astropy WCS of a patch; the same grid as :func:`patch_geom` (0-based
    pixel centres at integers, x = column, y = row, l increasing to the left)."""
    return _patch_wcs(float(glon), float(glat), int(p.npix), float(p.binsz_deg))


def world_to_pix(wcs, glon, glat):
    x, y = wcs.wcs_world2pix(np.asarray(glon, float), np.asarray(glat, float), 0)
    return np.asarray(x, float), np.asarray(y, float)


def pix_to_world(wcs, x, y):
    lon, lat = wcs.wcs_pix2world(np.asarray(x, float), np.asarray(y, float), 0)
    return np.mod(np.asarray(lon, float), 360.0), np.asarray(lat, float)


def in_patch(x, y, npix: int) -> np.ndarray:
    x, y = np.asarray(x), np.asarray(y)
    return (x >= -0.5) & (x < npix - 0.5) & (y >= -0.5) & (y < npix - 0.5)


def _unit(glon, glat):
    lon, lat = np.deg2rad(glon), np.deg2rad(glat)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


@functools.lru_cache(maxsize=8)
def _solid_angle(npix, binsz):
    """Solid angle [sr] of each pixel of a TAN patch (independent of its centre)."""
    w = _patch_wcs(0.0, 0.0, npix, binsz)
    edges = np.arange(npix + 1) - 0.5
    ex, ey = np.meshgrid(edges, edges)
    lon, lat = w.wcs_pix2world(ex, ey, 0)
    v = _unit(lon, lat)
    # two spherical triangles per pixel (exact for great-circle edges)
    def tri(a, b, c):
        num = np.abs(np.einsum("...i,...i", a, np.cross(b, c)))
        den = 1 + np.einsum("...i,...i", a, b) + np.einsum("...i,...i", b, c) + np.einsum("...i,...i", c, a)
        return 2 * np.arctan2(num, den)
    a, b, c, d = v[:-1, :-1], v[:-1, 1:], v[1:, 1:], v[1:, :-1]
    return tri(a, b, c) + tri(a, c, d)


# --------------------------------------------------------------------------- expected counts
def node_counts(spectra: dict, event_types: str) -> np.ndarray:
    """Expected counts of each source at each energy node: (n_src, n_nodes)."""
    energy, weight, _ = irf.node_grid()
    k = catalog.dnde_normalisation(spectra)
    return k[:, None] * catalog.dnde_shape(energy, spectra) * (weight * irf.exposure_cm2s(energy, event_types))[None]


def expected_bin_counts(spectra: dict, event_types: str = "front+back") -> np.ndarray:
    """Expected counts per energy bin of each source (n_src, 6), PSF not applied."""
    _, _, bins = irf.node_grid()
    nc = node_counts(spectra, event_types)
    return np.stack([nc[:, bins == k].sum(axis=1) for k in range(irf.N_BINS)], axis=1)


def _pixel_fractions(centre, sigma, n):
    """(n_src, n_comp, n): fraction of a 1-D Gaussian in each pixel [i-0.5, i+0.5]."""
    edges = np.arange(n + 1, dtype=float) - 0.5
    z = (edges[None, None, :] - centre[:, None, None]) / (np.sqrt(2.0) * sigma[None, :, None])
    return np.diff(0.5 * erf(z), axis=-1)


def render_sources(x_pix, y_pix, counts_nodes, p: FermiSimParams) -> np.ndarray:
    """Expected source counts (6, npix, npix) of point sources at pixel
    positions ``(x_pix, y_pix)`` with node counts ``counts_nodes`` (n_src, n_nodes)."""
    from threadpoolctl import threadpool_limits

    sig_deg, cbins, weights = irf.psf_components(p.event_types)
    sig_deg = sig_deg * p.psf_scale
    out = np.zeros((irf.N_BINS, p.npix, p.npix))
    x_pix, y_pix = np.atleast_1d(x_pix).astype(float), np.atleast_1d(y_pix).astype(float)
    if x_pix.size == 0:
        return out
    sig_pix = sig_deg / p.binsz_deg
    px = _pixel_fractions(x_pix, sig_pix, p.npix)
    py = _pixel_fractions(y_pix, sig_pix, p.npix)
    amp = np.atleast_2d(counts_nodes) @ weights
    # small matrix products: multi-threaded BLAS is many times slower here on a busy machine
    with threadpool_limits(1, user_api="blas"):
        for k in range(irf.N_BINS):
            m = cbins == k
            wy = (py[:, m] * amp[:, m, None]).reshape(-1, p.npix)
            out[k] = wy.T @ px[:, m].reshape(-1, p.npix)
    return out


@functools.lru_cache(maxsize=8)
def _diffuse_bin_factors(variant: int, event_types: str):
    """Counts per sr per bin for unit spatial template of each component and
    for the isotropic background."""
    energy, weight, bins = irf.node_grid()
    ew = weight * irf.exposure_cm2s(energy, event_types)
    spectra = diffuse.component_spectra(variant)
    out = {name: np.array([np.sum((f(energy) * ew)[bins == k]) for k in range(irf.N_BINS)])
           for name, f in spectra.items()}
    out["iso"] = np.array([np.sum((diffuse.isotropic_intensity(energy) * ew)[bins == k])
                           for k in range(irf.N_BINS)])
    return out


def diffuse_counts_per_sr(glon, glat, p: FermiSimParams, variant: int | None = None):
    """The per-direction part of :func:`background_model`: ``(galactic, iso)``
    where ``galactic`` (6, *shape of glon) is the expected Galactic diffuse
    counts per sr in each energy bin at (glon, glat) before PSF smoothing, and
    ``iso`` (6,) the isotropic counts per sr. Used by :func:`background_model`
    (WCS patches) and :mod:`skyml.fermi.healpix` (all-sky HEALPix maps)."""
    variant = p.diffuse_variant if variant is None else variant
    templates = diffuse.spatial_templates(glon, glat, variant)
    factors = _diffuse_bin_factors(variant, p.event_types)
    galactic = np.stack([sum(factors[n][k] * templates[n] for n in templates) for k in range(irf.N_BINS)])
    if p.exposure_scale != 1.0:
        return galactic * p.exposure_scale, factors["iso"] * p.exposure_scale
    return galactic, factors["iso"]


def diffuse_psf_mixture(p: FermiSimParams):
    """Per energy bin, the (widths [deg], weights) of the PSF by which the Galactic
    diffuse emission is smoothed: the bin's PSF for a spectral index 2.5
    (widths x ``p.psf_scale``)."""
    mixture = irf.bin_psf_mixture(p.event_types, 2.5)
    if p.psf_scale == 1.0:
        return mixture
    return [(np.asarray(sig) * p.psf_scale, w) for sig, w in mixture]


def psf_kernel(sigmas_px, weights, radius_px: int) -> np.ndarray:
    """Normalised image (2 radius + 1)^2 of a mixture of circular Gaussians sampled at pixel
    centres, each Gaussian normalised on the kernel (as ``scipy.ndimage.gaussian_filter``)."""
    r = np.arange(-radius_px, radius_px + 1, dtype=float)
    rr = r[:, None] ** 2 + r[None] ** 2
    out = np.zeros_like(rr)
    for s, w in zip(np.maximum(np.asarray(sigmas_px, float), 0.3), weights):
        g = np.exp(-0.5 * rr / s**2)
        out += w * g / g.sum()
    return out / out.sum()


def smooth_psf(image: np.ndarray, sigmas_px, weights) -> np.ndarray:
    """``image`` convolved with the Gaussian mixture (kernel out to 4 of its widest sigma, at
    most the image size), the image continued beyond its edge by its edge values."""
    from scipy.signal import fftconvolve

    radius = int(min(np.ceil(4.0 * np.max(sigmas_px)), max(image.shape)))
    padded = np.pad(image, radius, mode="edge")
    return fftconvolve(padded, psf_kernel(sigmas_px, weights, radius), mode="valid")


def background_model(glon: float, glat: float, p: FermiSimParams, variant: int | None = None) -> np.ndarray:
    """Expected diffuse + isotropic counts (6, npix, npix) of a patch."""
    wcs = patch_wcs(glon, glat, p)
    yy, xx = np.mgrid[: p.npix, : p.npix]
    lon, lat = pix_to_world(wcs, xx, yy)
    omega = _solid_angle(p.npix, p.binsz_deg)
    galactic, iso = diffuse_counts_per_sr(lon, lat, p, variant)
    out = np.empty((irf.N_BINS, p.npix, p.npix))
    for k, (sig, w) in enumerate(diffuse_psf_mixture(p)):  # smoothing is linear: smooth the weighted sum per bin
        out[k] = np.maximum(smooth_psf(galactic[k] * omega, sig / p.binsz_deg, w), 0.0) + iso[k] * omega
    return out


def background_models(data: dict, p: FermiSimParams) -> np.ndarray:
    """:func:`background_model` of every patch of ``data`` (its ``centre_glon``, ``centre_glat``), float32
    (n, 6, npix, npix): the background that the instrument and diffuse model ``p`` predict, e.g. an
    analyst's model of patches that another instrument or sky produced."""
    return np.stack([background_model(float(lon), float(lat), p).astype(np.float32)
                     for lon, lat in zip(data["centre_glon"], data["centre_glat"])])


# --------------------------------------------------------------------------- skies and patches
@functools.lru_cache(maxsize=2)
def _sky_cached(kind: str, seed_seq: tuple, p: FermiSimParams) -> dict:
    """:func:`_sky`, kept for the next chunk of patches of the same sky (a
    worker draws a shared sky once)."""
    return _sky(kind, list(seed_seq), p)


def _sky(kind: str, seed_seq: list, p: FermiSimParams) -> dict:
    seed = int(np.random.SeedSequence(seed_seq).generate_state(1)[0])
    if kind == "mock":
        sky = catalog.mock_catalogue(seed, p.mock_params())
        sky["dr2_index"] = np.full(len(sky["glon"]), -1)
    elif kind == "dr2":
        sky = catalog.dr2_sky(seed, p.mock_params())
    else:
        raise ValueError(f"unknown sky {kind!r}; choose from {SKIES}")
    sky["unit"] = _unit(sky["glon"], sky["glat"])
    sky["node_counts"] = node_counts({k: sky[k] for k in catalog.SPECTRUM_FIELDS}, p.event_types)
    if p.exposure_scale != 1.0:
        sky["node_counts"] = sky["node_counts"] * p.exposure_scale
    return sky


def simulate_patch(sky: dict, glon: float, glat: float, p: FermiSimParams, rng: np.random.Generator,
                   background: np.ndarray | None = None):
    """Counts (6, npix, npix) int32, expected background (6, npix, npix) and
    the indices into ``sky`` and pixel positions of the sources near the patch."""
    wcs = patch_wcs(glon, glat, p)
    radius = np.deg2rad(p.patch_deg / np.sqrt(2.0) + p.source_margin_deg)
    near = np.flatnonzero(sky["unit"] @ _unit(glon, glat) > np.cos(radius))
    x, y = world_to_pix(wcs, sky["glon"][near], sky["glat"][near])
    mu_src = render_sources(x, y, sky["node_counts"][near], p)
    bkg = background_model(glon, glat, p) if background is None else background
    counts = rng.poisson(mu_src + bkg).astype(np.int32)
    return counts, bkg, near, x, y


def patch_centres(split: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (glon, glat) and HEALPix pixel (-1 for random ones) of ``n`` patches.

    ``train``/``val``: uniform on the sphere. ``test``/``demo``: HEALPix
    NSIDE=8 pixel centres, every ``768 // n``-th pixel in RING order (all
    latitudes), all 768 when ``n >= 768``.
    """
    if split in ("train", "val"):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], 999]))
        glon = rng.uniform(0.0, 360.0, n)
        glat = np.rad2deg(np.arcsin(rng.uniform(-1.0, 1.0, n)))
        return glon, glat, np.full(n, -1)
    lon, lat = healpix_centres()
    n = min(n, len(lon))
    pix = np.arange(0, len(lon), len(lon) // n)[:n]
    return lon[pix], lat[pix], pix


SOURCE_FIELDS = ("patch", "x_pix", "y_pix", "glon", "glat", "flux1000", "in_patch", "sky_index",
                 "dr2_index", "faint")


def _simulate_range(bounds: tuple, base_seed: int, p: "FermiSimParams", split: str, sky: str,
                    glon: np.ndarray, glat: np.ndarray) -> dict:
    """Patches ``start`` … ``stop - 1`` (``bounds``) of :func:`simulate_patches`.
    Each patch draws from its own seed sequence ``[base_seed, split, i]`` and
    each sky from ``[base_seed, split, 1000 + j]``, so any split of the range
    gives the same arrays."""
    start, stop = bounds
    n = stop - start
    counts = np.empty((n, irf.N_BINS, p.npix, p.npix), np.int32)
    bkg = np.empty((n, irf.N_BINS, p.npix, p.npix), np.float32)
    src = {k: [] for k in SOURCE_FIELDS}
    current, sky_id = None, -1
    for i in range(start, stop):
        j = 0 if sky == "dr2" or split in ("test", "demo") else i // p.patches_per_sky
        if j != sky_id:
            current, sky_id = _sky_cached(sky, (int(base_seed), SPLITS[split], 1000 + j), p), j
        rng = np.random.default_rng(np.random.SeedSequence([int(base_seed), SPLITS[split], i]))
        c, b, near, x, y = simulate_patch(current, glon[i], glat[i], p, rng)
        counts[i - start], bkg[i - start] = c, b
        src["patch"].append(np.full(len(near), i))
        src["x_pix"].append(x)
        src["y_pix"].append(y)
        src["glon"].append(current["glon"][near])
        src["glat"].append(current["glat"][near])
        src["flux1000"].append(current["flux1000"][near])
        src["in_patch"].append(in_patch(x, y, p.npix))
        src["sky_index"].append(near + 1000000 * j)
        src["dr2_index"].append(current["dr2_index"][near])
        src["faint"].append(current["faint"][near])
    return {"counts": counts, "background": bkg, **{k: np.concatenate(v) for k, v in src.items()}}


#: patches per task of the test and demo sets (one shared sky); the training
#: and validation sets go one mock sky (``patches_per_sky`` patches) per task
CHUNK_PATCHES = 32


def simulate_patches(n: int, seed: int, p: FermiSimParams | None = None, split: str = "train",
                     sky: str = "mock", progress: bool = False) -> dict:
    """Simulate ``n`` patches; returns a dict of arrays.

    ``counts`` (n, 6, npix, npix) int32; ``background`` (n, 6, npix, npix)
    float32, the true expected diffuse + isotropic counts; ``centre_glon``,
    ``centre_glat``, ``centre_pixel`` (n,); the true sources near each patch as
    flat arrays ``src_<field>`` for :data:`SOURCE_FIELDS` (``src_patch`` is
    the patch index, ``src_in_patch`` whether the source lies on the patch).
    The DR2 sky adds ``dr2_*`` arrays of the catalogue (name, signif_avg,
    c_source, class1, glon, glat, flags).

    The chunks of patches (one mock sky, or :data:`CHUNK_PATCHES` patches of
    a shared sky) run through :func:`skyml.parallel.map_items`, in this
    process or on dask workers; the arrays are the same bit for bit either way.
    """
    p = p or FermiSimParams()
    if n < 1:
        raise ValueError("n must be >= 1")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {tuple(SPLITS)}")
    glon, glat, pix = patch_centres(split, n, seed)
    n = len(glon)
    step = CHUNK_PATCHES if sky == "dr2" or split in ("test", "demo") else p.patches_per_sky
    bounds = [(a, min(a + step, n)) for a in range(0, n, step)]
    parts = parallel.map_items(_simulate_range, bounds, progress=progress,
                               desc=f"simulating LAT patches ({sky}, {split})", base_seed=seed, p=p,
                               split=split, sky=sky, glon=glon, glat=glat)
    out = {"counts": np.concatenate([q["counts"] for q in parts]),
           "background": np.concatenate([q["background"] for q in parts]),
           "centre_glon": glon, "centre_glat": glat, "centre_pixel": pix}
    for k in SOURCE_FIELDS:
        out[f"src_{k}"] = np.concatenate([q[k] for q in parts])
    if sky == "dr2":
        cat = catalog.load_dr2()
        out.update({
            "dr2_name": cat["name"], "dr2_signif_avg": cat["signif_avg"], "dr2_c_source": cat["c_source"],
            "dr2_class1": cat["class1"], "dr2_glon": cat["glon"], "dr2_glat": cat["glat"],
            "dr2_flux1000": cat["flux1000"], "dr2_flags": cat["flags"],
        })
    return out


def load_patches(n: int, seed: int, p: FermiSimParams | None = None, split: str = "train",
                 sky: str = "mock", progress: bool = False) -> dict:
    """:func:`simulate_patches`, cached in ``data/cache/fermi_patches/<hash>/``."""
    p = p or FermiSimParams()
    key = {"n": int(n), "seed": int(seed), "split": split, "sky": sky, **p.to_dict(), "version": 2}
    return cache.cached_arrays("fermi_patches", key, lambda: simulate_patches(n, seed, p, split, sky, progress))


# --------------------------------------------------------------------------- network inputs and labels
def downsample_counts(counts: np.ndarray, factor: int) -> np.ndarray:
    """Sum (..., ny, nx) over ``factor`` × ``factor`` blocks."""
    if factor == 1:
        return counts
    *lead, ny, nx = counts.shape
    return counts.reshape(*lead, ny // factor, factor, nx // factor, factor).sum(axis=(-3, -1))


def resolution_groups(p: FermiSimParams) -> list[tuple[int, list[int]]]:
    """(downsample factor, energy bins) of each network input, finest first."""
    factors = sorted(set(p.downsample))
    return [(f, [k for k in range(irf.N_BINS) if p.downsample[k] == f]) for f in factors]


def network_inputs(counts: np.ndarray, p: FermiSimParams) -> list[np.ndarray]:
    """The multi-input of the U-Net: per resolution group, log(1 + counts) of
    its energy bins as channels, (n, npix/f, npix/f, n_bins) float32, finest first."""
    counts = np.asarray(counts)
    if counts.ndim == 3:
        counts = counts[None]
    out = []
    for f, bins in resolution_groups(p):
        c = downsample_counts(counts[:, bins], f)
        out.append(np.log1p(np.moveaxis(c, 1, -1).astype(np.float32)))
    return out


def disk_masks(data: dict, p: FermiSimParams, flux_min: float | None = None) -> np.ndarray:
    """Per-pixel labels (n, npix, npix, 1): 1 within ``label_radius_px`` of a
    true source with F(1–100 GeV) ≥ ``flux_min`` (default ``label_flux_min``)."""
    flux_min = p.label_flux_min if flux_min is None else flux_min
    n = len(data["counts"])
    masks = np.zeros((n, p.npix, p.npix, 1), np.float32)
    yy, xx = np.mgrid[: p.npix, : p.npix]
    r = p.label_radius_px
    sel = (data["src_flux1000"] >= flux_min) & (data["src_x_pix"] > -r) & (data["src_x_pix"] < p.npix - 1 + r) \
        & (data["src_y_pix"] > -r) & (data["src_y_pix"] < p.npix - 1 + r)
    for i, x, y in zip(data["src_patch"][sel], data["src_x_pix"][sel], data["src_y_pix"][sel]):
        masks[int(i), ..., 0][(xx - x) ** 2 + (yy - y) ** 2 <= r * r] = 1.0
    return masks
