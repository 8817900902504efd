"""Training data of notebook 08: intrinsic 64×64 maps at 0.1°/px and their
KM2A-like observations.

Recipe of one intrinsic map (a 96×96 canvas, of which the central 64×64 crop
— 6.4°×6.4° — is the truth; the margin lets emission outside the crop spill
into it through the PSF):

* **crop centre** on a Fibonacci lattice of the sphere (:func:`fibonacci_lattice`),
  restricted to the Galactic plane |b| < ``b_max_deg`` that LHAASO surveys;
* **diffuse emission**: a log-normal random field whose Gaussian part has an
  angular power spectrum P(k) ∝ k^-``diffuse_index`` (the slope of Galactic
  diffuse gamma-ray fluctuations, 2.5–3), amplitude falling as exp(-|b|/5°);
* **extended sources**: 0–3 real morphologies, the Fermi-LAT extended-source
  templates shipped by fermipy (``Extended_14years/Templates``: SNR shells,
  PWNe, the Magellanic Clouds, the Cygnus Loop, ...) resampled to 0.1° pixels
  (anti-aliased), rescaled in size by a random factor, rotated by a multiple of
  90°, flipped and placed at random;
* **point sources**: the 4FGL-DR2 sources (``gll_psc_v27.fit``) inside the
  crop, brightest in F(1–100 GeV) first, up to ``max_point_sources``; crops with
  fewer receive random positions up to a drawn number 0–``max_point_sources``;
  each is a delta in one pixel.

Count levels (LHAASO-like, 25–40 TeV, a few years of KM2A): each component's
expected counts are drawn log-uniformly — diffuse 100–1,000 per crop, each
extended source 100–1,500, each point source 30–1,000 — so a bright source
has ≈1,000 counts, the order of the Crab above 25 TeV in ~3 years of KM2A.
The residual cosmic-ray background is an optional flat level
(``background_per_px`` counts per pixel; 0 in the main study).

Forward model (:func:`observe`): convolution with the two-Gaussian KM2A
kernel (:mod:`skyml.lhaaso.psf`), cropping, the background added, Poisson
noise. Every array follows from the seed: same seed → same maps bit for bit.

Reconstruction target (:func:`target`): the intrinsic canvas at a finite
resolution, a Gaussian of σ = ``target_sigma_deg`` (0.1°, FWHM 0.24°: the
pixel scale, and about the resolution of the Fermi-LAT Galactic diffuse model
that the seed used as its intrinsic maps), cropped. A point source is then a
resolved 1-px-σ blob instead of one bright pixel, which makes the task a
well-posed resolution enhancement (KM2A FWHM 0.63° → 0.24° at 25 TeV) rather
than the recovery of single-pixel deltas, whose peak values would dominate
every image metric. ``target_sigma_deg = 0`` gives the pixel-integrated
intrinsic map itself. Classical deconvolutions are brought to the same
resolution (:func:`to_target`) before they are compared.
"""

from __future__ import annotations

import glob
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve

from .. import cache
from . import psf

NPIX = 64
PAD = 16
CANVAS = NPIX + 2 * PAD
SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_029}


@dataclass(frozen=True)
class LHAASOSimParams:
    npix: int = NPIX
    binsz_deg: float = psf.BINSZ_DEG
    sigma1_deg: float = psf.SIGMA1_DEG[25.0]  # 25 TeV, the main study
    n_lattice: int = 2000                        # Fibonacci lattice points on the sphere
    b_max_deg: float = 10.0
    diffuse_index: float = 2.75
    diffuse_counts: tuple = (100.0, 1000.0)
    max_extended: int = 3
    extended_counts: tuple = (100.0, 1500.0)
    extended_scale: tuple = (0.5, 1.5)
    max_point_sources: int = 4
    point_counts: tuple = (30.0, 1000.0)
    background_per_px: float = 0.0
    target_sigma_deg: float = 0.1                # resolution of the reconstruction target

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def replace(self, **changes) -> "LHAASOSimParams":
        return LHAASOSimParams(**{**asdict(self), **changes})


# ---------------------------------------------------------------------------
# Crop centres
# ---------------------------------------------------------------------------


def fibonacci_lattice(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) in degrees of ``n`` points of the spherical Fibonacci
    lattice: z_i = 1 - (2i + 1)/n, lon_i = i × golden angle (mod 360°)."""
    i = np.arange(int(n), dtype=float)
    z = 1.0 - (2.0 * i + 1.0) / n
    golden = np.pi * (3.0 - np.sqrt(5.0))
    lon = np.degrees(np.mod(i * golden, 2 * np.pi))
    lat = np.degrees(np.arcsin(z))
    return lon, lat


def plane_centres(params: LHAASOSimParams) -> tuple[np.ndarray, np.ndarray]:
    """Lattice points with |b| < b_max (Galactic l, b in degrees)."""
    lon, lat = fibonacci_lattice(params.n_lattice)
    keep = np.abs(lat) < params.b_max_deg
    return lon[keep], lat[keep]


# ---------------------------------------------------------------------------
# Real structure: fermipy templates and 4FGL-DR2
# ---------------------------------------------------------------------------


def _fermipy_catalogs() -> Path:
    from ..env import fermipy_dir

    return fermipy_dir() / "data" / "catalogs"


@lru_cache(maxsize=1)
def template_names() -> tuple[str, ...]:
    files = sorted(glob.glob(str(_fermipy_catalogs() / "Extended_14years" / "Templates" / "*.fits")))
    if not files:
        raise FileNotFoundError("no fermipy extended-source templates under Extended_14years/Templates")
    # the SNR mask of MSH 15-56 is a mask, not a morphology
    return tuple(f for f in files if "mask" not in Path(f).name.lower())


@lru_cache(maxsize=None)
def _template_native(path: str) -> tuple[np.ndarray, float]:
    """Template image (finite, >= 0, unit sum) and its pixel size [deg]."""
    import warnings

    from astropy.io import fits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path) as hdul:
            data = np.asarray(hdul[0].data, dtype=np.float64)
            cdelt = abs(float(hdul[0].header["CDELT1"]))
    data = np.squeeze(data)
    data = np.where(np.isfinite(data) & (data > 0), data, 0.0)
    return data / data.sum(), cdelt


def template_image(index: int, scale: float, binsz_deg: float = psf.BINSZ_DEG) -> np.ndarray:
    """Template ``index`` of :func:`template_names` resampled (anti-aliased) to
    ``binsz_deg`` pixels with its size multiplied by ``scale``; unit sum, at
    most the canvas size."""
    from skimage.transform import resize

    data, cdelt = _template_native(template_names()[index])
    factor = cdelt * scale / binsz_deg
    shape = tuple(max(1, min(CANVAS, int(round(n * factor)))) for n in data.shape)
    img = resize(data, shape, order=1, anti_aliasing=factor < 1, preserve_range=True)
    img = np.clip(img, 0, None)
    return img / img.sum()


@lru_cache(maxsize=1)
def dr2_sources() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(glon, glat, flux1000) of 4FGL-DR2 (fermipy's ``gll_psc_v27.fit``)."""
    from astropy.io import fits

    with fits.open(_fermipy_catalogs() / "gll_psc_v27.fit") as hdul:
        t = hdul[1].data
        return (np.asarray(t["GLON"], float), np.asarray(t["GLAT"], float),
                np.asarray(t["Flux1000"], float))


def _crop_offsets(glon, glat, l0, b0, binsz_deg):
    """Flat-sky pixel offsets (x along -l, y along b) from the crop centre."""
    dl = (np.asarray(glon) - l0 + 180.0) % 360.0 - 180.0
    return -dl * np.cos(np.radians(b0)) / binsz_deg, (np.asarray(glat) - b0) / binsz_deg


def map_wcs(glon: float, glat: float, params: LHAASOSimParams):
    """Galactic WCS of a crop centred on (``glon``, ``glat``), exactly the pixel grid of
    :func:`_crop_offsets`: x along −l scaled by cos(``glat``), y along b, ``params.binsz_deg``
    pixels, the crop centre between the two central pixels (a plate carrée with the
    longitude step 1/cos(``glat``) times the latitude step)."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["GLON-CAR", "GLAT-CAR"]
    w.wcs.crval = [float(glon), 0.0]
    w.wcs.crpix = [(params.npix + 1) / 2.0, (params.npix + 1) / 2.0 - float(glat) / params.binsz_deg]
    w.wcs.cdelt = [-params.binsz_deg / np.cos(np.radians(glat)), params.binsz_deg]
    w.wcs.cunit = ["deg", "deg"]
    return w


# ---------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------


def diffuse_field(rng: np.random.Generator, n: int, index: float) -> np.ndarray:
    """Log-normal field (unit sum) whose log has P(k) ∝ k^-index, unit variance."""
    ky = np.fft.fftfreq(n)[:, None]
    kx = np.fft.fftfreq(n)[None, :]
    k = np.hypot(kx, ky)
    k[0, 0] = np.inf
    amp = k ** (-index / 2)
    noise = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    g = np.real(np.fft.ifft2(noise * amp))
    g = (g - g.mean()) / g.std()
    field = np.exp(g)
    return field / field.sum()


def _loguniform(rng, lo_hi, size=None):
    lo, hi = lo_hi
    return np.exp(rng.uniform(np.log(lo), np.log(hi), size))


def intrinsic_canvas(rng: np.random.Generator, params: LHAASOSimParams, l0: float, b0: float) -> dict:
    """One intrinsic canvas (CANVAS×CANVAS, expected counts per pixel before
    the PSF) and its point sources (crop pixel coordinates, counts)."""
    crop_area = (params.npix / CANVAS) ** 2
    sky = diffuse_field(rng, CANVAS, params.diffuse_index)
    sky *= _loguniform(rng, params.diffuse_counts) * np.exp(-abs(b0) / 5.0) / crop_area

    n_ext = int(rng.integers(0, params.max_extended + 1))
    for _ in range(n_ext):
        img = template_image(int(rng.integers(len(template_names()))), float(rng.uniform(*params.extended_scale)),
                             params.binsz_deg)
        img = np.rot90(img, int(rng.integers(4)))
        if rng.random() < 0.5:
            img = img[:, ::-1]
        ny, nx = img.shape
        y0 = int(rng.integers(PAD - ny // 2, PAD + params.npix - ny // 2))
        x0 = int(rng.integers(PAD - nx // 2, PAD + params.npix - nx // 2))
        ys, xs = slice(max(y0, 0), min(y0 + ny, CANVAS)), slice(max(x0, 0), min(x0 + nx, CANVAS))
        sky[ys, xs] += _loguniform(rng, params.extended_counts) * img[ys.start - y0:ys.stop - y0,
                                                                      xs.start - x0:xs.stop - x0]

    glon, glat, flux = dr2_sources()
    dx, dy = _crop_offsets(glon, glat, l0, b0, params.binsz_deg)
    half = params.npix / 2
    inside = np.flatnonzero((np.abs(dx) < half - 0.5) & (np.abs(dy) < half - 0.5))
    inside = inside[np.argsort(-flux[inside], kind="stable")][: params.max_point_sources]
    xs = list(np.floor(dx[inside] + half).astype(int))
    ys = list(np.floor(dy[inside] + half).astype(int))
    n_pt = max(len(xs), int(rng.integers(0, params.max_point_sources + 1)))
    while len(xs) < n_pt:
        xs.append(int(rng.integers(2, params.npix - 2)))
        ys.append(int(rng.integers(2, params.npix - 2)))
    counts = _loguniform(rng, params.point_counts, n_pt) if n_pt else np.zeros(0)
    for x, y, c in zip(xs, ys, counts):
        sky[y + PAD, x + PAD] += c
    return {"canvas": sky, "src_x": np.array(xs, float), "src_y": np.array(ys, float), "src_counts": counts}


def crop(canvas: np.ndarray) -> np.ndarray:
    return canvas[..., PAD:PAD + NPIX, PAD:PAD + NPIX]


def to_target(maps: np.ndarray, target_sigma_deg: float, binsz_deg: float = psf.BINSZ_DEG) -> np.ndarray:
    """Maps (..., ny, nx) smoothed to the target resolution: a Gaussian of
    σ = ``target_sigma_deg`` over the last two axes (zero outside; identity for 0)."""
    maps = np.asarray(maps, dtype=np.float64)
    if target_sigma_deg <= 0:
        return maps
    sigma = (0,) * (maps.ndim - 2) + (target_sigma_deg / binsz_deg,) * 2
    return gaussian_filter(maps, sigma, mode="constant")


def target(canvas: np.ndarray, params: LHAASOSimParams) -> np.ndarray:
    """The reconstruction target of a canvas: smoothed to ``params.target_sigma_deg``, then cropped."""
    return crop(to_target(canvas, params.target_sigma_deg, params.binsz_deg))


def blur(canvas: np.ndarray, sigma1_deg: float, binsz_deg: float = psf.BINSZ_DEG,
         kernel: np.ndarray | None = None) -> np.ndarray:
    """The canvas convolved with the KM2A kernel, or with ``kernel`` when given (same shape)."""
    k = psf.kernel(sigma1_deg, binsz_deg) if kernel is None else kernel
    return np.clip(fftconvolve(canvas, k, mode="same"), 0, None)


def observe(rng: np.random.Generator, canvas: np.ndarray, sigma1_deg: float,
            background_per_px: float = 0.0, binsz_deg: float = psf.BINSZ_DEG,
            kernel: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Forward model: (expected counts, Poisson counts) of the central crop;
    ``kernel`` replaces the KM2A kernel of ``sigma1_deg`` when given."""
    npred = crop(blur(canvas, sigma1_deg, binsz_deg, kernel)) + background_per_px
    return npred, rng.poisson(npred).astype(np.float64)


def simulate(n: int, seed: int, params: LHAASOSimParams, split: str = "train",
             sigma1_choices=None) -> dict[str, np.ndarray]:
    """``n`` maps: ``truth`` (intrinsic expected counts per pixel at the
    target resolution, :func:`target`), ``npred``,
    ``counts``, ``sigma1_deg`` per map (drawn from ``sigma1_choices`` when
    given, else ``params.sigma1_deg``), crop centres and point sources (flat
    arrays with ``src_map``)."""
    rng = np.random.default_rng([int(seed), SPLIT_OFFSET[split]])
    l_c, b_c = plane_centres(params)
    out = {k: [] for k in ("truth", "npred", "counts", "sigma1_deg", "glon", "glat",
                           "src_map", "src_x", "src_y", "src_counts")}
    for i in range(int(n)):
        j = int(rng.integers(len(l_c)))
        comp = intrinsic_canvas(rng, params, l_c[j], b_c[j])
        sigma = float(params.sigma1_deg if sigma1_choices is None else rng.choice(sigma1_choices))
        npred, counts = observe(rng, comp["canvas"], sigma, params.background_per_px, params.binsz_deg)
        if counts.sum() == 0:
            counts[params.npix // 2, params.npix // 2] = 1.0  # never an empty map
        out["truth"].append(target(comp["canvas"], params))
        out["npred"].append(npred)
        out["counts"].append(counts)
        out["sigma1_deg"].append(sigma)
        out["glon"].append(l_c[j])
        out["glat"].append(b_c[j])
        out["src_map"] += [i] * len(comp["src_x"])
        for k in ("src_x", "src_y", "src_counts"):
            out[k] += list(comp[k])
    arrays = {k: np.asarray(v, dtype=np.int64 if k == "src_map" else np.float64) for k, v in out.items()}
    for k in ("truth", "npred", "counts"):
        arrays[k] = arrays[k].astype(np.float32)
    return arrays


def load_maps(n: int, seed: int, params: LHAASOSimParams, split: str = "train", sigma1_choices=None) -> dict:
    """:func:`simulate`, cached in ``data/cache/lhaaso_maps/``."""
    key = {"n": int(n), "seed": int(seed), "split": split, "sim": params.to_dict(), "version": 2,
           "sigma1_choices": None if sigma1_choices is None else [float(s) for s in sigma1_choices]}
    return cache.cached_arrays("lhaaso_maps", key,
                               lambda: simulate(n, seed, params, split, sigma1_choices))


# ---------------------------------------------------------------------------
# Shifted test maps: morphologies and a PSF the training never drew
# ---------------------------------------------------------------------------

#: scikit-image's bundled pictures used as intrinsic maps of the shifted test set
SHIFTED_IMAGES = ("hubble_deep_field", "moon", "cell", "coins", "camera")


@lru_cache(maxsize=len(SHIFTED_IMAGES))
def _gray_image(name: str) -> np.ndarray:
    from skimage import color, data

    img = np.asarray(getattr(data, name)(), np.float64)
    if img.ndim == 3:
        img = color.rgb2gray(img[..., :3] / 255.0)
    else:
        img = img / 255.0
    return img


def picture_canvas(rng: np.random.Generator, name: str, counts: float, npix: int = NPIX,
                   floor_percentile: float = 50.0, power: float = 2.0) -> np.ndarray:
    """A CANVAS×CANVAS intrinsic map cut from a bundled picture: a random
    square of 1–4 canvases in size (anti-aliased down to the canvas), rotated
    by a multiple of 90°, maybe flipped; the brightness above the cut's
    ``floor_percentile`` (median by default), raised to ``power``, is the
    emission — bright regions on a dark sky, as in the training maps, rather
    than a picture-wide pedestal — scaled to ``counts`` expected counts in the
    central ``npix``² crop."""
    from skimage.transform import resize

    img = _gray_image(name)
    side = int(min(CANVAS * np.exp(rng.uniform(0.0, np.log(4.0))), *img.shape))
    y0, x0 = (int(rng.integers(0, n - side + 1)) for n in img.shape)
    cut = resize(img[y0:y0 + side, x0:x0 + side], (CANVAS, CANVAS), anti_aliasing=side > CANVAS,
                 preserve_range=True)
    cut = np.rot90(cut, int(rng.integers(4)))
    if rng.random() < 0.5:
        cut = cut[:, ::-1]
    sky = np.clip(cut - np.percentile(cut, floor_percentile), 0, None) ** power
    pad = (CANVAS - npix) // 2
    inner = sky[pad:pad + npix, pad:pad + npix].sum()
    return sky * (counts / inner) if inner > 0 else sky


#: the shifted test set's PSF: core width x one of these, a tail of SHIFT_TAIL_RATIO x the core at SHIFT_TAIL_WEIGHT
SHIFT_SIGMA_SCALES = (0.8, 1.2)
SHIFT_TAIL_RATIO = 3.0
SHIFT_TAIL_WEIGHT = 0.1


def simulate_shifted(n: int, seed: int, params: LHAASOSimParams, sigma_scales=SHIFT_SIGMA_SCALES,
                     tail_ratio: float = SHIFT_TAIL_RATIO, tail_weight: float = SHIFT_TAIL_WEIGHT,
                     counts=(500.0, 4000.0), images=SHIFTED_IMAGES) -> dict[str, np.ndarray]:
    """``n`` test maps outside the training distribution: intrinsic maps cut from
    scikit-image's bundled ``images`` (:func:`picture_canvas` with its defaults, crop counts
    log-uniform in ``counts``), observed through a PSF of core width
    ``params.sigma1_deg`` × a factor drawn from ``sigma_scales`` and a tail of
    ``tail_ratio`` × the core width with weight ``tail_weight`` (the training
    PSF: ratio 2, weight :func:`skyml.lhaaso.psf.tail_weight`). Arrays:
    ``truth`` (at the target resolution), ``truth_raw`` (unsmoothed crop),
    ``npred``, ``counts``, ``sigma1_deg``, ``image`` (index into ``images``)."""
    rng = np.random.default_rng([int(seed), 3_000_017])
    out = {k: [] for k in ("truth", "truth_raw", "npred", "counts", "sigma1_deg", "image")}
    for _ in range(int(n)):
        j = int(rng.integers(len(images)))
        sky = picture_canvas(rng, images[j], float(_loguniform(rng, counts)), params.npix)
        sigma = params.sigma1_deg * float(rng.choice(sigma_scales))
        k = psf.kernel(sigma, params.binsz_deg, tail_ratio=tail_ratio, weight=tail_weight)
        npred, obs = observe(rng, sky, sigma, params.background_per_px, params.binsz_deg, kernel=k)
        out["truth"].append(target(sky, params))
        out["truth_raw"].append(crop(sky))
        out["npred"].append(npred)
        out["counts"].append(obs)
        out["sigma1_deg"].append(sigma)
        out["image"].append(j)
    arrays = {k: np.asarray(v, dtype=np.int64 if k == "image" else np.float64) for k, v in out.items()}
    for k in ("truth", "truth_raw", "npred", "counts"):
        arrays[k] = arrays[k].astype(np.float32)
    return arrays


#: scikit-image's bundled pictures that randomised training maps may be cut from: none of :data:`SHIFTED_IMAGES`
TRAIN_IMAGES = ("astronaut", "brick", "chelsea", "clock", "coffee", "grass", "gravel", "immunohistochemistry",
                "page", "retina", "rocket", "text")
#: ranges of the randomised training instrument (uniform draws): core-width factor, tail width over core, tail weight
RANDOM_SIGMA_SCALE = (0.7, 1.3)
RANDOM_TAIL_RATIO = (1.5, 4.0)
RANDOM_TAIL_WEIGHT = (0.0, 0.2)
#: a picture cut is kept when at least this share of its emission lies in the central crop (else drawn again)
MIN_CROP_SHARE = 0.2
MAX_PICTURE_DRAWS = 10


def simulate_randomised(n: int, seed: int, params: LHAASOSimParams, split: str = "train",
                        picture_fraction: float = 0.5, sigma_scale=RANDOM_SIGMA_SCALE,
                        tail_ratio=RANDOM_TAIL_RATIO, tail_weight=RANDOM_TAIL_WEIGHT,
                        picture_counts=(300.0, 5000.0), images=TRAIN_IMAGES,
                        picture_point_sources: float = 0.5) -> dict[str, np.ndarray]:
    """``n`` training maps of a randomised sky and instrument (domain
    randomisation): each map is the sky of :func:`simulate` (diffuse field,
    extended templates, point sources); with probability ``picture_fraction``
    its diffuse field and templates are replaced by a cut of one of ``images``
    (:func:`picture_canvas`, expected counts log-uniform in ``picture_counts``;
    a cut with less than ``MIN_CROP_SHARE`` of its emission inside the crop is
    drawn again), its point sources kept with probability
    ``picture_point_sources`` (so that some maps' brightest pixels are extended
    emission, as in a picture with no point source). Every map is observed through its own
    two-Gaussian PSF: core width ``params.sigma1_deg`` × a factor uniform in
    ``sigma_scale``, tail width × a ratio uniform in ``tail_ratio``, tail weight
    uniform in ``tail_weight``. Arrays as :func:`simulate` (``truth`` at
    ``params.target_sigma_deg``), plus ``tail_ratio``, ``tail_weight`` and
    ``picture`` (index into ``images``, −1 for the plane sky)."""
    split_offset = {"train": 4_000_037, "val": 5_000_011}[split]
    rng = np.random.default_rng([int(seed), split_offset])
    l_c, b_c = plane_centres(params)
    out = {k: [] for k in ("truth", "npred", "counts", "sigma1_deg", "tail_ratio", "tail_weight", "picture")}
    for _ in range(int(n)):
        j = int(rng.integers(len(l_c)))
        comp = intrinsic_canvas(rng, params, l_c[j], b_c[j])
        sky, pic = comp["canvas"], -1
        if rng.random() < picture_fraction:
            for _ in range(MAX_PICTURE_DRAWS):  # a cut nearly empty inside the crop is drawn again
                pic = int(rng.integers(len(images)))
                cut = picture_canvas(rng, images[pic], float(_loguniform(rng, picture_counts)), params.npix)
                if crop(cut).sum() >= MIN_CROP_SHARE * cut.sum() > 0:
                    sky = cut
                    break
            else:
                pic = -1
            if pic >= 0 and rng.random() < picture_point_sources:
                for x, y, c in zip(comp["src_x"].astype(int), comp["src_y"].astype(int), comp["src_counts"]):
                    sky[y + PAD, x + PAD] += c
        sigma = params.sigma1_deg * float(rng.uniform(*sigma_scale))
        ratio, weight = float(rng.uniform(*tail_ratio)), float(rng.uniform(*tail_weight))
        k = psf.kernel(sigma, params.binsz_deg, tail_ratio=ratio, weight=weight)
        npred, counts = observe(rng, sky, sigma, params.background_per_px, params.binsz_deg, kernel=k)
        if counts.sum() == 0:
            counts[params.npix // 2, params.npix // 2] = 1.0  # never an empty map
        for key, v in (("truth", target(sky, params)), ("npred", npred), ("counts", counts), ("sigma1_deg", sigma),
                       ("tail_ratio", ratio), ("tail_weight", weight), ("picture", pic)):
            out[key].append(v)
    arrays = {k: np.asarray(v, dtype=np.int64 if k == "picture" else np.float64) for k, v in out.items()}
    for k in ("truth", "npred", "counts"):
        arrays[k] = arrays[k].astype(np.float32)
    return arrays


def load_randomised(n: int, seed: int, params: LHAASOSimParams, split: str = "train", **kwargs) -> dict:
    """:func:`simulate_randomised`, cached in ``data/cache/lhaaso_randomised/``."""
    key = {"n": int(n), "seed": int(seed), "split": split, "sim": params.to_dict(), "version": 2,
           **{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}}
    return cache.cached_arrays("lhaaso_randomised", key,
                               lambda: simulate_randomised(n, seed, params, split, **kwargs))


def load_shifted(n: int, seed: int, params: LHAASOSimParams, **kwargs) -> dict:
    """:func:`simulate_shifted`, cached in ``data/cache/lhaaso_shifted/``."""
    key = {"n": int(n), "seed": int(seed), "sim": params.to_dict(), "version": 2,
           **{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}}
    return cache.cached_arrays("lhaaso_shifted", key, lambda: simulate_shifted(n, seed, params, **kwargs))


# ---------------------------------------------------------------------------
# Normalisation shared by the networks and the baselines
# ---------------------------------------------------------------------------


def map_scale(counts: np.ndarray) -> np.ndarray:
    """Per-map scale: the mean counts per pixel (n,)."""
    counts = np.asarray(counts, dtype=np.float64)
    return np.maximum(counts.reshape(len(counts), -1).mean(axis=1), 1e-12)


def normalise(maps: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Maps divided by their per-map scale, float32 (n, ny, nx)."""
    return (np.asarray(maps, dtype=np.float64) / scale[:, None, None]).astype(np.float32)


def point_source_map(rng: np.random.Generator, sources, sigma1_deg: float, params: LHAASOSimParams,
                     diffuse_counts: float = 0.0, kernel: np.ndarray | None = None) -> dict:
    """A map of given point sources ``[(x, y, counts), ...]`` (crop pixels) on
    an optional faint diffuse field: for the resolution tests. ``kernel``
    replaces the KM2A kernel of ``sigma1_deg`` (a shifted PSF, as in
    :func:`simulate_shifted`)."""
    sky = np.zeros((CANVAS, CANVAS))
    if diffuse_counts > 0:
        sky += diffuse_field(rng, CANVAS, params.diffuse_index) * diffuse_counts * (CANVAS / params.npix) ** 2
    for x, y, c in sources:
        sky[int(y) + PAD, int(x) + PAD] += c
    npred, counts = observe(rng, sky, sigma1_deg, params.background_per_px, params.binsz_deg, kernel=kernel)
    return {"truth": target(sky, params), "npred": npred, "counts": counts}


#: the seed's figure: an LHAASO-like Galactic region of real morphologies
REGION_TEMPLATES = (("W44", 20, 40, 1.0, 1200.0), ("W51C", 46, 24, 1.0, 1000.0),
                    ("HESSJ1841-055", 18, 16, 1.0, 900.0), ("RXJ1713_2016_250GeV", 44, 48, 0.7, 1500.0))
REGION_POINTS = ((30, 30, 400.0), (34, 30, 400.0), (54, 10, 250.0))


def galactic_region(seed: int, params: LHAASOSimParams, sigma1_deg: float | None = None) -> dict:
    """A 64×64 region with four real templates (name, x, y, size scale,
    counts of :data:`REGION_TEMPLATES`), three point sources (two 0.4° apart)
    and the diffuse field of a crop at b = 0; truth, npred and counts."""
    rng = np.random.default_rng([int(seed), 7])
    sky = diffuse_field(rng, CANVAS, params.diffuse_index) * 500.0 * (CANVAS / params.npix) ** 2
    names = [Path(f).stem for f in template_names()]
    for name, x, y, scale, counts in REGION_TEMPLATES:
        img = template_image(names.index(name), scale, params.binsz_deg)
        ny, nx = img.shape
        y0, x0 = y + PAD - ny // 2, x + PAD - nx // 2
        ys, xs = slice(max(y0, 0), min(y0 + ny, CANVAS)), slice(max(x0, 0), min(x0 + nx, CANVAS))
        sky[ys, xs] += counts * img[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
    for x, y, c in REGION_POINTS:
        sky[y + PAD, x + PAD] += c
    npred, counts = observe(rng, sky, params.sigma1_deg if sigma1_deg is None else sigma1_deg,
                            params.background_per_px, params.binsz_deg)
    return {"truth": target(sky, params), "npred": npred, "counts": counts}
