"""Simulated MeerLICHT-like optical tiles (the optical transfer of Pérez-Romero et al. 2025).

A tile is 256×256 pixels of 0.56″ (the MeerLICHT pixel scale), one band.
Stars have a circular Moffat PSF (beta ``moffat_beta``) whose FWHM is drawn
per tile uniformly in [``fwhm_min_arcsec``, ``fwhm_max_arcsec``] (2–3″, the
seed's MeerLICHT PSF), evaluated on 3×3 sub-pixels. Magnitudes follow
dN/dm ∝ 10^(``count_slope`` m) between ``mag_min`` and ``mag_max``; the
number of stars per tile is set by the field density:

- ``crowded``: a globular-cluster field (``n_crowded`` stars, e.g. Omega Cen),
- ``cluster``: a galaxy-cluster field (``n_cluster``),
- ``empty``: a nearly empty field (``n_empty``).

The image in electrons is Poisson(stars + sky) plus Gaussian read noise.
``mag_limit`` per tile is the magnitude at which a star reaches S/N = 5 with
PSF-optimal weighting (effective area 4π(FWHM/2.355)²); stars brighter than
it are the truth of the metrics ("rel_flux" = 10^(-0.4 (m - mag_limit)) ≥ 1)
and the labels of the U-Net (disks of ``label_radius_px``).

Determinism: tile ``i`` of density ``d`` and split ``s`` uses
``SeedSequence([seed, s, density index, i])``.

**Shifted fields and domain randomisation** (fields after
``label_radius_px``; at their defaults the tiles, and the cache keys, are
those of the nominal fields, as :meth:`OpticalParams.to_dict` leaves them out):
``fwhm_scale_choices`` multiplies each tile's FWHM by one of its values;
``sky_gradient_frac`` adds a linear sky gradient of that fraction of the sky
across the tile (random direction); ``n_cosmic`` cosmic-ray hits (1-4 pixels,
500-5000 e, not stars: a detection on one is false); ``saturation_e`` clips
the image at that level and adds one star of magnitude ``saturated_mag``
(bright enough to saturate; it is part of the truth). ``randomise``: every
tile draws its FWHM scale, sky, read noise, luminosity-function slope, sky
gradient and number of cosmic rays uniformly in the ``rand_*`` ranges, and
half of the tiles hold a saturated star. :func:`shifted_params` is the
shifted test set of notebook 06, :func:`randomised_params` its randomised
training set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from .. import cache

DENSITIES = ("crowded", "cluster", "empty")
SPLITS = {"train": 0, "val": 1, "test": 2, "shifted": 3}
STAR_FIELDS = ("tile", "x_pix", "y_pix", "mag", "flux_e", "rel_flux")


@dataclass(frozen=True)
class OpticalParams:
    npix: int = 256
    pixel_scale_arcsec: float = 0.56
    fwhm_min_arcsec: float = 2.0
    fwhm_max_arcsec: float = 3.0
    moffat_beta: float = 3.0
    zeropoint_mag: float = 26.0
    sky_e: float = 300.0
    read_noise_e: float = 10.0
    mag_min: float = 14.0
    mag_max: float = 22.5
    count_slope: float = 0.3
    n_crowded: int = 1500
    n_cluster: int = 250
    n_empty: int = 30
    label_radius_px: float = 2.0
    # shifted fields and domain randomisation (module docstring); left out of to_dict() at their defaults
    fwhm_scale_choices: tuple = ()
    sky_gradient_frac: float = 0.0
    n_cosmic: int = 0
    saturation_e: float = 0.0
    saturated_mag: float = 11.0
    randomise: bool = False
    rand_fwhm_scale: tuple = (0.6, 1.7)
    rand_sky_e: tuple = (150.0, 900.0)
    rand_read_noise_e: tuple = (5.0, 20.0)
    rand_count_slope: tuple = (0.2, 0.45)
    rand_sky_gradient_frac: tuple = (0.0, 0.06)
    rand_n_cosmic: tuple = (0, 12)
    rand_saturation_e: float = 20000.0

    def to_dict(self) -> dict:
        d = asdict(self)
        for f in fields(OpticalParams):
            if f.name in SHIFT_FIELDS and d[f.name] == f.default:
                del d[f.name]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def n_stars(self, density: str) -> int:
        if density not in DENSITIES:
            raise ValueError(f"unknown density {density!r}; choose from {DENSITIES}")
        return int(getattr(self, f"n_{density}"))


#: fields of :class:`OpticalParams` that shift or randomise the fields (left out of ``to_dict`` at their defaults)
SHIFT_FIELDS = ("fwhm_scale_choices", "sky_gradient_frac", "n_cosmic", "saturation_e", "saturated_mag", "randomise",
                "rand_fwhm_scale", "rand_sky_e", "rand_read_noise_e", "rand_count_slope", "rand_sky_gradient_frac",
                "rand_n_cosmic", "rand_saturation_e")


def shifted_params(p: OpticalParams | None = None) -> OpticalParams:
    """The shifted optical test set of notebook 06: a Moffat PSF of beta 2.5
    whose FWHM is 0.7 or 1.5 times the nominal draw, twice the sky (600 e) and
    1.5 times the read noise, a steeper luminosity function (slope 0.4), a sky
    gradient of 4 % across the tile, 8 cosmic-ray hits per tile and a
    saturated star (magnitude 10, full well 20000 e: saturated at every FWHM)."""
    p = OpticalParams() if p is None else p
    return replace(p, moffat_beta=2.5, fwhm_scale_choices=(0.7, 1.5), sky_e=600.0, read_noise_e=15.0,
                   count_slope=0.4, sky_gradient_frac=0.04, n_cosmic=8, saturation_e=20000.0, saturated_mag=10.0)


def randomised_params(p: OpticalParams | None = None) -> OpticalParams:
    """The domain-randomised training fields: ``p`` with ``randomise`` on (saturated stars of magnitude 10)."""
    return replace(OpticalParams() if p is None else p, randomise=True, saturated_mag=10.0)


def realise(p: OpticalParams, rng: np.random.Generator) -> OpticalParams:
    """One tile's field of a randomised ``p`` (``randomise`` off, the drawn values set)."""
    u = rng.uniform(size=7)

    def lin(f, r):
        return r[0] + f * (r[1] - r[0])

    return replace(p, randomise=False, fwhm_scale_choices=(float(lin(u[0], p.rand_fwhm_scale)),),
                   sky_e=float(lin(u[1], p.rand_sky_e)), read_noise_e=float(lin(u[2], p.rand_read_noise_e)),
                   count_slope=float(lin(u[3], p.rand_count_slope)),
                   sky_gradient_frac=float(lin(u[4], p.rand_sky_gradient_frac)),
                   n_cosmic=int(np.floor(lin(u[5], (p.rand_n_cosmic[0], p.rand_n_cosmic[1] + 1)))),
                   saturation_e=p.rand_saturation_e if u[6] < 0.5 else 0.0)


def moffat_alpha_px(fwhm_px: float, beta: float) -> float:
    return fwhm_px / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))


def render_stars(x, y, flux, fwhm_px: float, p: OpticalParams) -> np.ndarray:
    """Expected electrons (npix, npix) of stars with a Moffat PSF (3×3 sub-pixels per pixel)."""
    alpha = moffat_alpha_px(fwhm_px, p.moffat_beta)
    beta = p.moffat_beta
    norm = (beta - 1.0) / (np.pi * alpha**2)
    out = np.zeros((p.npix, p.npix))
    hw = int(np.ceil(6 * fwhm_px))
    sub = (np.arange(3) - 1) / 3.0
    for xi, yi, f in zip(np.atleast_1d(x), np.atleast_1d(y), np.atleast_1d(flux)):
        x0, x1 = max(int(xi) - hw, 0), min(int(xi) + hw + 1, p.npix)
        y0, y1 = max(int(yi) - hw, 0), min(int(yi) + hw + 1, p.npix)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
        acc = np.zeros(yy.shape)
        for dy in sub:
            for dx in sub:
                r2 = (xx + dx - xi) ** 2 + (yy + dy - yi) ** 2
                acc += (1.0 + r2 / alpha**2) ** (-beta)
        out[y0:y1, x0:x1] += f * norm * acc / 9.0
    return out


def mag_limit(fwhm_px: float, p: OpticalParams, snr: float = 5.0) -> float:
    """Magnitude of a star at S/N = ``snr`` with PSF-optimal weighting."""
    n_eff = 4 * np.pi * (fwhm_px / 2.355) ** 2
    noise2 = n_eff * (p.sky_e + p.read_noise_e**2)
    # F^2 = snr^2 (F + noise2)
    f = 0.5 * (snr**2 + np.sqrt(snr**4 + 4 * snr**2 * noise2))
    return p.zeropoint_mag - 2.5 * np.log10(f)


def simulate_tile(rng: np.random.Generator, density: str, p: OpticalParams):
    """(image (npix, npix) float32 electrons, FWHM [px], stars dict); a
    randomised ``p`` first draws the tile's field (:func:`realise`)."""
    if p.randomise:
        p = realise(p, rng)
    n = p.n_stars(density)
    fwhm_px = rng.uniform(p.fwhm_min_arcsec, p.fwhm_max_arcsec) / p.pixel_scale_arcsec
    if p.fwhm_scale_choices:
        fwhm_px *= float(rng.choice(np.asarray(p.fwhm_scale_choices, float)))
    a = p.count_slope * np.log(10)
    u = rng.uniform(size=n)
    lo, hi = np.exp(a * p.mag_min), np.exp(a * p.mag_max)
    mag = np.log(lo + u * (hi - lo)) / a
    margin = 10.0
    x = rng.uniform(-margin, p.npix - 1 + margin, n)
    y = rng.uniform(-margin, p.npix - 1 + margin, n)
    if p.saturation_e > 0:  # one saturated star, inside the tile
        x = np.append(x, rng.uniform(20, p.npix - 21))
        y = np.append(y, rng.uniform(20, p.npix - 21))
        mag = np.append(mag, p.saturated_mag)
    flux = 10 ** (-0.4 * (mag - p.zeropoint_mag))
    mu = render_stars(x, y, flux, fwhm_px, p) + p.sky_e
    if p.sky_gradient_frac > 0:
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:p.npix, 0:p.npix] / (p.npix - 1) - 0.5
        mu = mu + p.sky_e * p.sky_gradient_frac * (xx * np.cos(angle) + yy * np.sin(angle))
    image = rng.poisson(mu) + rng.normal(0.0, p.read_noise_e, mu.shape)
    for _ in range(int(p.n_cosmic)):  # a hit of 1-4 pixels along a random direction
        length = int(rng.integers(1, 5))
        cx, cy, angle = rng.uniform(0, p.npix - 1), rng.uniform(0, p.npix - 1), rng.uniform(0, np.pi)
        amp = rng.uniform(500.0, 5000.0)
        for t in range(length):
            xi, yi = round(cx + t * np.cos(angle)), round(cy + t * np.sin(angle))
            if 0 <= xi < p.npix and 0 <= yi < p.npix:
                image[yi, xi] += amp
    if p.saturation_e > 0:
        image = np.minimum(image, p.saturation_e)
    mlim = mag_limit(fwhm_px, p)
    stars = {"x_pix": x, "y_pix": y, "mag": mag, "flux_e": flux, "rel_flux": 10 ** (-0.4 * (mag - mlim))}
    return image.astype(np.float32), fwhm_px, stars


def simulate_tiles(n: int, seed: int, density: str, p: OpticalParams, split: str = "train") -> dict:
    """``n`` tiles: ``image`` (n, npix, npix), ``fwhm_px`` (n,), and the flat star arrays of :data:`STAR_FIELDS`."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {tuple(SPLITS)}")
    p.n_stars(density)  # validates the density name
    images = np.empty((n, p.npix, p.npix), np.float32)
    fwhm = np.empty(n)
    rows = {k: [] for k in STAR_FIELDS}
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], DENSITIES.index(density), i]))
        images[i], fwhm[i], stars = simulate_tile(rng, density, p)
        stars["tile"] = np.full(len(stars["x_pix"]), i)
        for k in STAR_FIELDS:
            rows[k].append(stars[k])
    out = {"image": images, "fwhm_px": fwhm}
    for k in STAR_FIELDS:
        out[k] = np.concatenate(rows[k])
    return out


def load_tiles(n: int, seed: int, density: str, p: OpticalParams, split: str = "train") -> dict:
    key = {"n": int(n), "seed": int(seed), "density": density, "split": split, "sim": p.to_dict(), "version": 1}
    return cache.cached_arrays("optical_tiles", key, lambda: simulate_tiles(n, seed, density, p, split),
                               verbose=False)


def network_input(image: np.ndarray, p: OpticalParams, normalise: str = "global") -> np.ndarray:
    """asinh of the sky-subtracted image in units of the sky noise, (n, ny, nx, 1).

    ``normalise="global"``: sky level and noise per image are the
    3-sigma-clipped median and standard deviation (astropy
    ``sigma_clipped_stats``, as the DAOStarFinder baseline); a plain
    median/MAD is pulled up by the stars of a crowded field, which would give
    the network differently scaled inputs per density. ``"local"``: a local
    sky and noise, photutils ``Background2D`` (32-px boxes, 3×3 median
    filter, 3-sigma clipping), which follows a sky gradient."""
    from astropy.stats import sigma_clipped_stats

    img = np.asarray(image, np.float64)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3:
        raise ValueError(f"images must be (n, ny, nx), got {img.shape}")
    if normalise not in ("global", "local"):
        raise ValueError(f"unknown normalise {normalise!r}; choose 'global' or 'local'")
    out = np.empty(img.shape + (1,), np.float32)
    for i, im in enumerate(img):
        if normalise == "local":
            sky, std = local_sky(im)
        else:
            _, sky, std = sigma_clipped_stats(im, sigma=3.0, maxiters=10)
        out[i, ..., 0] = np.arcsinh((im - sky) / np.maximum(std, 1e-6))
    return out


def local_sky(image: np.ndarray, box_px: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(sky, noise) maps of one image: photutils ``Background2D`` with boxes
    of ``box_px`` (at most the image side), a 3×3 median filter of the boxes and
    3-sigma-clipped median and standard deviation."""
    import warnings

    from astropy.stats import SigmaClip
    from photutils.background import Background2D, MedianBackground, StdBackgroundRMS

    im = np.asarray(image, np.float64)
    box = int(min(box_px, *im.shape))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bkg = Background2D(im, box, filter_size=3, sigma_clip=SigmaClip(sigma=3.0, maxiters=10),
                           bkg_estimator=MedianBackground(), bkgrms_estimator=StdBackgroundRMS())
    return bkg.background, bkg.background_rms


def masks(data: dict, p: OpticalParams) -> np.ndarray:
    """Label disks (n, npix, npix, 1) of the stars above the S/N = 5 limit."""
    from ..ctao.simulate import disk_mask

    out = []
    for i in range(len(data["image"])):
        s = (data["tile"] == i) & (data["rel_flux"] >= 1.0)
        out.append(disk_mask(data["x_pix"][s], data["y_pix"][s], np.full(s.sum(), p.label_radius_px),
                             (p.npix, p.npix)))
    return np.stack(out)[..., None]
