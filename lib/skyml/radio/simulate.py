"""Simulated EMU-like radio fields (notebook 07): sky model, interferometric
point-spread function from a simulated uv-coverage, correlated noise, and the
restored image; true counts per flux bin of every sub-image.

Instrument (``RadioSimParams``; our choices, documented):

* **Frequency** 0.943 GHz (the EMU band centre), **pixels** of 7.03125″
  (the seed's 25 deg² in 2560×2560 pixels).
* **uv-coverage** of a 36-antenna array (ASKAP-like: 36 dishes; positions
  drawn once, with a fixed seed, uniformly in a disc of radius 2 km: baselines
  up to 4 km), Earth-rotation
  synthesis over 8 h of hour angle at declination −30° from latitude −26.7°
  (the ASKAP site). Visibilities are gridded on the 256×256 uv grid of the
  PSF (natural weighting, a Gaussian taper of ``taper_klambda``; baselines
  beyond the grid's Nyquist limit are dropped and the uv origin, the zero
  spacing an interferometer does not measure, has no weight). The **dirty
  beam** is the Fourier transform of the weights, peak 1: it has side lobes
  and integrates to zero. The **restoring (clean) beam** is an elliptical
  Gaussian fitted to the main lobe (astropy ``Gaussian2D``): ≈23″×19″ FWHM
  (EMU: 15–18″), i.e. ≈3 pixels.
* **Noise**: white noise convolved with the dirty beam (so it is correlated on
  the beam scale, as the thermal noise of an interferometric image), scaled
  to the rms ``noise_rms_jy`` = 20 µJy/beam (EMU-like: the EMU pilot survey
  reached 25–30 µJy/beam, the EMU design 10–20). The 5σ detection threshold
  is 100 µJy.
* **Restored image** (an idealised CLEAN): every source brighter than
  ``clean_nsigma`` × σ = 60 µJy is a perfectly recovered CLEAN component,
  restored with the clean beam; all fainter sources and the noise stay in the
  residual with the dirty-beam response (side lobes included). Units Jy/beam.
* **Sky-model image**: the true sky, Jy per pixel, no telescope.

Sources (fluxes from :class:`skyml.radio.counts.CountLaw`, positions uniform;
periodic fields, so every pixel sees the side lobes of all sources):

* star-forming galaxies: elliptical Gaussians with FWHM 2″ (S_1.4 / 1 mJy)^0.3
  (the Windhorst et al. 1990 size–flux relation), 0.2 dex scatter, axis ratio
  0.3–1;
* AGN: 70 % cores (points), 30 % doubles: a core with 5–50 % of the flux and
  two lobes on opposite sides at a largest angular size 15″ (S_1.4 / 10 mJy)^0.3
  (0.3 dex scatter), each lobe an elongated Gaussian of 0.3 × that size.

Sources fainter than 10 µJy (median sizes below 1″, the pixel is 7″) are
deposited as points; so are components smaller than 0.7 pixel. The true count
of a sub-image is the number of sources whose centre lies in it.

**Thinned fields** (``thinning=True``, the training and validation sets of
notebook 07): for every :data:`THIN_PERIOD` fields (rounded up) two fields are
added after them, one without sources (noise only) and one with its source
density scaled by a factor drawn log-uniformly in :data:`THIN_RANGE`; the
first ``n_fields`` fields are those drawn without thinning, bit for bit. A network trained
only on full skies has never seen an image without sources and answers one
with the counts it learned; these fields teach it that an empty sky has zero
counts and give the validation set the network's answer on source-free noise
(the absolute error the counting command states).

**Randomised instrument** (``randomise=True``, the training and validation
sets of the restored-image network, domain randomisation): every field gets
its own instrument, drawn from a stream of its own (:func:`instrument_draw`):
the dirty beam stretched by a factor log-uniform in :data:`DR_BEAM_RANGE`
(the geometric mean of the two axes) with an axis stretch log-uniform in
:data:`DR_STRETCH_RANGE` (x over y: circular to more elliptical beams than
the training one), its restoring beam the Gaussian fitted to that main lobe,
the noise at an rms log-uniform in :data:`DR_NOISE_RANGE` times
``noise_rms_jy``, and the image mean removed with probability
:data:`DR_MEAN_REMOVED_FRACTION`. The imaging is drawn too: the CLEAN limit
at a factor log-uniform in :data:`DR_CLEAN_DEPTH_RANGE` times the nominal
one (a deeper CLEAN restores more of the faint sources with the restoring
beam; the rest keep the dirty-beam response), or, with probability
:data:`DR_FULL_RESTORE_FRACTION`, a CLEAN limit of zero: the whole sky model
restored with the restoring beam, as a CLEAN run to the noise or a simulated
sky convolved with a Gaussian beam gives it, and the noise correlated by a
kernel that mixes the dirty and the restoring beam with a restoring-beam
weight uniform in :data:`DR_NOISE_RESTORED_RANGE` (0: the residual noise of
a CLEAN image, 1: noise smoothed by the restoring beam, as in images from
other imagers). The sky, the counts and the white noise are those of the
field without randomisation, bit for bit (the instrument's draw does not
touch the field's generator).

**Shifted instrument** (:func:`simulate_shifted_fields`, the shifted test set
of notebook 07): restored images from an independent, simpler instrument
model that shares only the sky with the one above: no uv-coverage and no
CLEAN model, the whole sky convolved with a circular Gaussian restoring beam
of FWHM :data:`SHIFT_BEAM_SCALE` × the training beam's (geometric mean of its
axes), white noise convolved with that beam at :data:`SHIFT_NOISE_SCALE` ×
the training rms, and the image mean removed; the count laws are power-law
breaks (:data:`SHIFT_FAMILIES`) with parameters from the training prior.
Counts are labelled in the training instrument's flux bins, the bins the
network predicts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from .. import cache, parallel
from . import counts as cl

SPLIT_OFFSET = {"train": 0, "val": 1_000_003, "test": 2_000_029, "test_unseen": 3_000_017, "null": 4_000_037,
                "test_shifted": 5_000_011, "calib": 6_000_023}
#: with thinning, ceil(n_fields / THIN_PERIOD) fields without sources and as many with a density
#: scaled by 10**U(log10 THIN_RANGE) follow the n_fields fields of full density
THIN_PERIOD = 8
THIN_RANGE = (0.01, 1.0)
#: the random stream of the thinning factors (apart from the fields' own streams)
THIN_STREAM = 7_000_001
ARRAY_SEED = 36
CHUNK = 1_000_000
S_EXTENDED_JY = 1e-5
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class RadioSimParams:
    freq_ghz: float = 0.943
    pixel_arcsec: float = 7.03125
    sub_npix: int = 64
    noise_rms_jy: float = 20e-6
    s_min_jy: float = 1e-7
    s_max_jy: float = 1e-2
    n_antennas: int = 36
    array_radius_m: float = 2000.0
    latitude_deg: float = -26.7
    dec_deg: float = -30.0
    hour_angle_h: float = 8.0
    n_times: int = 48
    taper_klambda: float = 8.0
    psf_npix: int = 256
    clean_nsigma: float = 3.0
    n_bins: int = 12
    bin_lo_jy: float = 1e-7
    alpha_range: tuple = (-0.6, 0.3)
    s0_range: tuple = (5e-6, 5e-5)
    beta_range: tuple = (-0.5, 0.5)
    sb_range: tuple = (3e-6, 5e-5)
    tanh_a_range: tuple = (-0.6, 1.5)
    tanh_s1_range: tuple = (3e-6, 3e-5)

    @property
    def threshold_jy(self) -> float:
        """The 5σ detection threshold [Jy]."""
        return 5.0 * self.noise_rms_jy

    @property
    def edges_jy(self) -> np.ndarray:
        """Flux-bin edges of the labels: ``n_bins`` log bins up to the 5σ threshold."""
        return cl.bin_edges(self.bin_lo_jy, self.threshold_jy, self.n_bins)

    @property
    def pixel_sr(self) -> float:
        return (self.pixel_arcsec / 3600.0) ** 2 * cl.SR_PER_DEG2

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "RadioSimParams":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def replace(self, **changes) -> "RadioSimParams":
        return RadioSimParams(**{**asdict(self), **changes})


# ---------------------------------------------------------------------------
# uv-coverage, dirty beam, clean beam
# ---------------------------------------------------------------------------


def antenna_positions(params: RadioSimParams) -> np.ndarray:
    """(n, 2) east/north antenna positions [m], fixed by ``ARRAY_SEED``."""
    rng = np.random.default_rng(ARRAY_SEED)
    r = params.array_radius_m * np.sqrt(rng.random(params.n_antennas))  # uniform in the disc
    phi = rng.uniform(0, 2 * np.pi, params.n_antennas)
    return np.column_stack([r * np.cos(phi), r * np.sin(phi)])


def uv_coverage(params: RadioSimParams) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) [wavelengths] of all baselines and hour angles, both signs."""
    pos = antenna_positions(params)
    i, j = np.triu_indices(len(pos), k=1)
    east, north = pos[i, 0] - pos[j, 0], pos[i, 1] - pos[j, 1]
    lat, dec = np.radians(params.latitude_deg), np.radians(params.dec_deg)
    x, y, z = -np.sin(lat) * north, east, np.cos(lat) * north  # equatorial (up = 0)
    ha = np.radians(15.0 * np.linspace(-params.hour_angle_h / 2, params.hour_angle_h / 2, params.n_times))
    h = ha[:, None]
    lam = 299_792_458.0 / (params.freq_ghz * 1e9)
    u = (np.sin(h) * x + np.cos(h) * y) / lam
    v = (-np.sin(dec) * np.cos(h) * x + np.sin(dec) * np.sin(h) * y + np.cos(dec) * z) / lam
    u, v = u.ravel(), v.ravel()
    return np.concatenate([u, -u]), np.concatenate([v, -v])


@lru_cache(maxsize=8)
def _beams(params: RadioSimParams) -> tuple[np.ndarray, np.ndarray, tuple]:
    n = params.psf_npix
    dtheta = np.radians(params.pixel_arcsec / 3600.0)
    du = 1.0 / (n * dtheta)
    u, v = uv_coverage(params)
    keep = (np.abs(u) < (n // 2 - 1) * du) & (np.abs(v) < (n // 2 - 1) * du)
    u, v = u[keep], v[keep]
    weights = np.exp(-(u**2 + v**2) / (2 * (params.taper_klambda * 1e3) ** 2))
    grid = np.zeros((n, n))
    np.add.at(grid, (np.rint(v / du).astype(int) % n, np.rint(u / du).astype(int) % n), weights)
    grid[0, 0] = 0.0  # no zero spacing
    psf = np.fft.fftshift(np.real(np.fft.ifft2(grid)))
    psf /= psf[n // 2, n // 2]
    beam = fit_clean_beam(psf)
    return psf, clean_beam_image(beam, n), beam


def dirty_beam(params: RadioSimParams) -> np.ndarray:
    """The dirty beam (``psf_npix``², peak 1 at index (n//2, n//2), sum 0)."""
    return _beams(params)[0].copy()


def clean_beam(params: RadioSimParams) -> np.ndarray:
    """The restoring beam on the PSF grid (peak 1)."""
    return _beams(params)[1].copy()


def beam_params(params: RadioSimParams) -> dict:
    """Restoring beam: FWHM major/minor [px and deg], position angle BPA [deg,
    north through east, for an image with east to the left], solid angle [px]."""
    fmaj, fmin, theta = _beams(params)[2]
    deg = params.pixel_arcsec / 3600.0
    bpa = bpa_of_theta(theta)
    return {"fwhm_major_px": fmaj, "fwhm_minor_px": fmin, "theta_rad": theta, "bmaj_deg": fmaj * deg,
            "bmin_deg": fmin * deg, "bpa_deg": float(bpa),
            "area_px": float(np.pi / (4 * np.log(2)) * fmaj * fmin)}


def bpa_of_theta(theta: float) -> float:
    """Position angle [deg, north through east, image with east to the left]
    of a major axis at ``theta`` [rad] from +x."""
    return float(np.degrees(np.arctan2(-np.cos(theta), np.sin(theta))) % 180.0)


def fit_clean_beam(psf: np.ndarray, half: int = 5) -> tuple[float, float, float]:
    """(FWHM major, FWHM minor [px], angle of the major axis from +x [rad]) of
    an elliptical Gaussian fitted to the main lobe (pixels above 0.25 within
    ±``half`` pixels of the peak)."""
    from astropy.modeling import fitting, models

    c = psf.shape[0] // 2
    win = psf[c - half:c + half + 1, c - half:c + half + 1]
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    sel = win > 0.25
    g0 = models.Gaussian2D(1.0, 0.0, 0.0, 1.0, 1.0, 0.0, fixed={"amplitude": True, "x_mean": True, "y_mean": True})
    g = fitting.LevMarLSQFitter()(g0, xx[sel], yy[sel], win[sel])
    sx, sy, theta = abs(float(g.x_stddev.value)), abs(float(g.y_stddev.value)), float(g.theta.value)
    if sy > sx:
        sx, sy, theta = sy, sx, theta + np.pi / 2
    return sx * FWHM_PER_SIGMA, sy * FWHM_PER_SIGMA, float(np.mod(theta, np.pi))


def clean_beam_image(beam: tuple[float, float, float], n: int) -> np.ndarray:
    fmaj, fmin, theta = beam
    yy, xx = np.mgrid[:n, :n] - n // 2
    a = xx * np.cos(theta) + yy * np.sin(theta)
    b = -xx * np.sin(theta) + yy * np.cos(theta)
    return np.exp(-0.5 * ((a / (fmaj / FWHM_PER_SIGMA)) ** 2 + (b / (fmin / FWHM_PER_SIGMA)) ** 2))


def fold_kernel(kernel: np.ndarray, npix: int) -> np.ndarray:
    """A centred kernel wrapped onto an ``npix``² torus with its centre at
    index (0, 0): periodic convolution by FFT multiplies by its transform."""
    k = np.asarray(kernel, np.float64)
    c = k.shape[0] // 2
    iy, ix = np.mgrid[:k.shape[0], :k.shape[1]] - c
    out = np.zeros((npix, npix))
    np.add.at(out, (iy % npix, ix % npix), k)
    return out


@lru_cache(maxsize=8)
def _kernel_fts(params: RadioSimParams, npix: int):
    db = fold_kernel(_beams(params)[0], npix)
    cb = fold_kernel(_beams(params)[1], npix)
    noise_scale = params.noise_rms_jy / np.sqrt(np.sum(db**2))
    return np.fft.rfft2(db), np.fft.rfft2(cb), float(noise_scale)


def convolve_periodic(image: np.ndarray, kernel_ft: np.ndarray) -> np.ndarray:
    return np.fft.irfft2(np.fft.rfft2(image) * kernel_ft, s=image.shape)


def correlated_noise(rng: np.random.Generator, params: RadioSimParams, npix: int) -> np.ndarray:
    """White noise convolved with the dirty beam, rms ``noise_rms_jy`` [Jy/beam]."""
    db_ft, _, scale = _kernel_fts(params, npix)
    return convolve_periodic(rng.standard_normal((npix, npix)), db_ft) * scale


# ---------------------------------------------------------------------------
# Sky
# ---------------------------------------------------------------------------


def _deposit(sky: np.ndarray, x, y, flux) -> None:
    """Add point fluxes to their pixels (periodic). One source is added in
    place: the same sum as the histogram of many, without its cost of one
    pass over the whole image."""
    n = sky.shape[0]
    if np.ndim(x) == 0:
        sky[int(np.floor(y)) % n, int(np.floor(x)) % n] += flux
        return
    ix = np.floor(x).astype(np.int64) % n
    iy = np.floor(y).astype(np.int64) % n
    sky += np.bincount((iy * n + ix).ravel(), weights=np.ravel(flux), minlength=n * n).reshape(n, n)


def _stamp(sky: np.ndarray, x, y, flux, fmaj_px, fmin_px, theta) -> None:
    n = sky.shape[0]
    half = int(np.ceil(1.5 * fmaj_px)) + 1
    ix0, iy0 = int(np.floor(x)), int(np.floor(y))
    yy, xx = np.mgrid[iy0 - half:iy0 + half + 1, ix0 - half:ix0 + half + 1]
    dx, dy = xx + 0.5 - x, yy + 0.5 - y
    a = dx * np.cos(theta) + dy * np.sin(theta)
    b = -dx * np.sin(theta) + dy * np.cos(theta)
    g = np.exp(-0.5 * ((a * FWHM_PER_SIGMA / fmaj_px) ** 2 + (b * FWHM_PER_SIGMA / fmin_px) ** 2))
    np.add.at(sky, (yy % n, xx % n), flux * g / g.sum())


def _render_extended(rng, sky_of, s, x, y, is_sfg, params: RadioSimParams) -> None:
    """Morphologies of the sources brighter than ``S_EXTENDED_JY``."""
    m = len(s)
    k = cl.flux_scale(params.freq_ghz)
    s14 = s / k
    px = params.pixel_arcsec
    theta = rng.uniform(0, np.pi, m)
    # star-forming galaxies
    fwhm = 2.0 * (s14 / 1e-3) ** 0.3 * 10 ** (0.2 * rng.standard_normal(m)) / px
    q = rng.uniform(0.3, 1.0, m)
    # AGN
    double = rng.random(m) < 0.3
    las = 15.0 * (s14 / 1e-2) ** 0.3 * 10 ** (0.3 * rng.standard_normal(m)) / px
    f_core = rng.uniform(0.05, 0.5, m)
    for i in range(m):
        sky = sky_of(s[i])
        if is_sfg[i]:
            if fwhm[i] < 0.7:
                _deposit(sky, x[i], y[i], s[i])
            else:
                _stamp(sky, x[i], y[i], s[i], fwhm[i], max(q[i] * fwhm[i], 0.5), theta[i])
        elif not double[i] or las[i] < 1.0:
            _deposit(sky, x[i], y[i], s[i])
        else:
            _deposit(sky, x[i], y[i], f_core[i] * s[i])
            lobe = 0.5 * (1 - f_core[i]) * s[i]
            size = 0.3 * las[i]
            for sign in (-1.0, 1.0):
                lx = x[i] + sign * 0.5 * las[i] * np.cos(theta[i])
                ly = y[i] + sign * 0.5 * las[i] * np.sin(theta[i])
                if size < 0.7:
                    _deposit(sky, lx, ly, lobe)
                else:
                    _stamp(sky, lx, ly, lobe, size, max(0.5 * size, 0.5), theta[i])


def render_sky(rng: np.random.Generator, params: RadioSimParams, npix: int, family: str, p1: float, p2: float,
               density: float = 1.0, s_clean_jy: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The sources of one periodic field of ``npix``² pixels: (sky of the
    sources brighter than the CLEAN limit [Jy/px], sky of the fainter ones,
    true counts per sub-image (row-major) and label bin, number of sources).
    ``density`` scales the count law's number of sources (0: none);
    ``s_clean_jy`` is the CLEAN limit (default: ``clean_nsigma`` × the noise
    rms). The limit only splits the sky: the generator's draws do not depend on it."""
    sub = params.sub_npix
    if npix % sub:
        raise ValueError(f"field of {npix} px is not a multiple of the {sub}-px sub-images")
    if not density >= 0.0:
        raise ValueError(f"density factor {density} must be >= 0")
    law = cl.CountLaw(params.freq_ghz, params.s_min_jy, params.s_max_jy, family, p1, p2)
    area = npix**2 * params.pixel_sr
    n_src = int(rng.poisson(density * law.total_per_sr() * area)) if density > 0 else 0
    s_clean = params.clean_nsigma * params.noise_rms_jy if s_clean_jy is None else float(s_clean_jy)
    bright, faint = np.zeros((npix, npix)), np.zeros((npix, npix))
    edges = params.edges_jy
    nsx = npix // sub
    counts = np.zeros((nsx * nsx, params.n_bins), dtype=np.int64)
    for start in range(0, n_src, CHUNK):
        m = min(CHUNK, n_src - start)
        s = law.sample(rng, m)
        x, y = rng.random(m) * npix, rng.random(m) * npix
        is_sfg = rng.random(m) < cl.sfg_fraction(s, params.freq_ghz)
        b = np.digitize(s, edges) - 1
        ok = (b >= 0) & (b < params.n_bins)
        isub = (np.floor(y[ok]).astype(np.int64) // sub) * nsx + np.floor(x[ok]).astype(np.int64) // sub
        counts += np.bincount(isub * params.n_bins + b[ok], minlength=counts.size).reshape(counts.shape)
        ext = s > S_EXTENDED_JY
        pts = ~ext
        hi = s > s_clean
        _deposit(faint, x[pts & ~hi], y[pts & ~hi], s[pts & ~hi])
        _deposit(bright, x[pts & hi], y[pts & hi], s[pts & hi])
        _render_extended(rng, lambda flux: bright if flux > s_clean else faint, s[ext], x[ext], y[ext],
                         is_sfg[ext], params)
    return bright, faint, counts, n_src


def simulate_field(rng: np.random.Generator, params: RadioSimParams, npix: int, family: str,
                   p1: float, p2: float, density: float = 1.0, instrument: dict | None = None) -> dict[str, np.ndarray]:
    """One periodic field of ``npix``² pixels: ``skymodel`` [Jy/px],
    ``restored`` [Jy/beam], the true ``counts`` per sub-image and flux bin
    (sub-images in row-major order), and ``n_sources``. ``density`` scales
    the count law's number of sources (0: noise only). ``instrument`` (a
    draw of :func:`instrument_draw`) stretches the beams, scales the noise
    and removes the image mean; the field then also holds the restoring
    beam's ``beam_fwhm_major_px``, ``beam_fwhm_minor_px`` and
    ``beam_area_px``. The sky and the white noise are the same either way."""
    s_clean = None if instrument is None else (
        float(instrument.get("clean_depth", 1.0)) * params.clean_nsigma * params.noise_rms_jy)
    bright, faint, counts, n_src = render_sky(rng, params, npix, family, p1, p2, density, s_clean)
    if instrument is None:
        db_ft, cb_ft, _ = _kernel_fts(params, npix)
        restored = np.fft.irfft2(np.fft.rfft2(bright) * cb_ft + np.fft.rfft2(faint) * db_ft, s=(npix, npix))
        restored += correlated_noise(rng, params, npix)
        return {"skymodel": bright + faint, "restored": restored, "counts": counts, "n_sources": n_src}
    psf, clean, (fmaj, fmin, theta) = stretched_beams(params, instrument["beam_scale"], instrument["stretch"])
    db, cb = fold_kernel(psf, npix), fold_kernel(clean, npix)
    db_ft, cb_ft = np.fft.rfft2(db), np.fft.rfft2(cb)
    restored = np.fft.irfft2(np.fft.rfft2(bright) * cb_ft + np.fft.rfft2(faint) * db_ft, s=(npix, npix))
    w = float(instrument.get("noise_restored", 0.0))
    kernel = (1.0 - w) * db / np.sqrt(np.sum(db**2)) + w * cb / np.sqrt(np.sum(cb**2))
    noise_scale = float(instrument["noise_scale"]) * params.noise_rms_jy / np.sqrt(np.sum(kernel**2))
    restored += convolve_periodic(rng.standard_normal((npix, npix)), np.fft.rfft2(kernel)) * noise_scale
    if instrument["mean_removed"]:
        restored -= restored.mean()
    return {"skymodel": bright + faint, "restored": restored, "counts": counts, "n_sources": n_src,
            "beam_fwhm_major_px": fmaj, "beam_fwhm_minor_px": fmin, "beam_bpa_deg": bpa_of_theta(theta),
            "beam_area_px": float(np.pi / (4 * np.log(2)) * fmaj * fmin)}


# ---------------------------------------------------------------------------
# Domain randomisation of the instrument (module text)
# ---------------------------------------------------------------------------

#: restoring-beam FWHM scale (geometric mean of the axes), log-uniform
DR_BEAM_RANGE = (0.75, 1.35)
#: axis stretch of the beam, x over y, log-uniform (the training beam's major axis lies near x)
DR_STRETCH_RANGE = (0.8, 1.25)
#: noise rms over ``noise_rms_jy``, log-uniform
DR_NOISE_RANGE = (0.75, 1.35)
#: probability that a field's image mean is removed
DR_MEAN_REMOVED_FRACTION = 0.5
#: CLEAN limit over the nominal ``clean_nsigma`` x noise rms, log-uniform (deeper CLEAN restores fainter sources)
DR_CLEAN_DEPTH_RANGE = (0.1, 1.0)
#: probability that the CLEAN limit is zero (the whole sky model restored with the restoring beam)
DR_FULL_RESTORE_FRACTION = 0.25
#: weight of the restoring beam in the noise's correlation kernel (the rest: the dirty beam), uniform
DR_NOISE_RESTORED_RANGE = (0.0, 1.0)
#: per-field keys of a randomised field's instrument (restoring beam and the draws of :func:`instrument_draw`)
INSTRUMENT_KEYS = ("beam_fwhm_major_px", "beam_fwhm_minor_px", "beam_bpa_deg", "beam_area_px",
                   "instrument_beam_scale", "instrument_stretch", "instrument_noise_scale", "instrument_mean_removed",
                   "instrument_clean_depth", "instrument_noise_restored")
#: the random stream of the instrument draws (apart from the fields' own streams)
DR_STREAM = 7_000_003


def instrument_draw(seed: int, split: str, i: int) -> dict:
    """The instrument of field ``i`` of a randomised split: ``beam_scale``,
    ``stretch``, ``noise_scale`` and ``mean_removed``, from a generator of
    its own (the same for a seed, whatever the number of fields), and the
    imaging's ``clean_depth`` (CLEAN limit over the nominal; 0: the whole sky
    model restored) and ``noise_restored``."""
    rng = np.random.default_rng([int(seed), SPLIT_OFFSET[split], DR_STREAM, int(i)])
    lu = [float(np.exp(rng.uniform(*np.log(r)))) for r in (DR_BEAM_RANGE, DR_STRETCH_RANGE, DR_NOISE_RANGE)]
    mean_removed = bool(rng.random() < DR_MEAN_REMOVED_FRACTION)
    depth = float(np.exp(rng.uniform(*np.log(DR_CLEAN_DEPTH_RANGE))))
    noise_restored = float(rng.uniform(*DR_NOISE_RESTORED_RANGE))
    full_restore = bool(rng.random() < DR_FULL_RESTORE_FRACTION)  # drawn last: the draws above keep their values
    return {"beam_scale": lu[0], "stretch": lu[1], "noise_scale": lu[2], "mean_removed": mean_removed,
            "clean_depth": 0.0 if full_restore else depth, "noise_restored": noise_restored}


def stretched_beams(params: RadioSimParams, beam_scale: float, stretch: float = 1.0):
    """(dirty beam, restoring beam on the PSF grid, (FWHM major, FWHM minor
    [px], angle [rad])) of the training instrument with its dirty beam
    stretched by ``beam_scale`` · √``stretch`` along x and ``beam_scale`` /
    √``stretch`` along y (cubic-spline resampling of the periodic PSF; the
    result keeps peak 1 and sum 0); the restoring beam is the Gaussian fitted
    to the stretched main lobe."""
    from scipy import ndimage

    psf0 = _beams(params)[0]
    n = psf0.shape[0]
    c = n // 2
    fx, fy = float(beam_scale) * np.sqrt(float(stretch)), float(beam_scale) / np.sqrt(float(stretch))
    yy, xx = np.mgrid[:n, :n] - c
    psf = ndimage.map_coordinates(psf0, [c + yy / fy, c + xx / fx], order=3, mode="grid-wrap")
    psf -= psf.mean()  # no zero spacing
    psf /= psf[c, c]
    beam = fit_clean_beam(psf)
    return psf, clean_beam_image(beam, n), beam


def draw_parameters(rng: np.random.Generator, params: RadioSimParams, family: str) -> tuple[float, float]:
    """(p1, p2) of a modification family, uniform in p1 and log-uniform in p2."""
    ranges = {"alpha_s0": (params.alpha_range, params.s0_range), "broken": (params.beta_range, params.sb_range),
              "tanh": (params.tanh_a_range, params.tanh_s1_range)}
    if family not in ranges:
        raise ValueError(f"unknown modification family {family!r}; expected one of {cl.FAMILIES}")
    r1, r2 = ranges[family]
    return float(rng.uniform(*r1)), float(np.exp(rng.uniform(np.log(r2[0]), np.log(r2[1]))))


def _simulate_item(item, base_seed: int, params: RadioSimParams, split: str, npix: int,
                   randomise: bool = False) -> dict:
    """Field ``item = (i, family, p1, p2, density)`` of :func:`simulate_fields`, from its own generator."""
    i, family, p1, p2, density = item
    instrument = instrument_draw(base_seed, split, i) if randomise else None
    out = simulate_field(np.random.default_rng([int(base_seed), SPLIT_OFFSET[split], i]), params, npix, family, p1,
                         p2, density, instrument)
    if instrument is not None:
        out.update({f"instrument_{k}": v for k, v in instrument.items()})
    return out


def noise_fields(n_fields: int, seed: int, params: RadioSimParams, npix: int,
                 randomise: bool = False) -> dict[str, np.ndarray]:
    """``restored``: (n_fields, npix, npix) restored images without sources,
    the beam-correlated noise alone [Jy/beam], field ``i`` from its own
    generator (split ``null``), and the ``beam_area_px`` and
    ``instrument_noise_scale`` of each; with
    ``randomise`` each has its own instrument (:func:`instrument_draw`).
    They calibrate a counting network's answer on empty sky."""
    out = [simulate_field(np.random.default_rng([int(seed), SPLIT_OFFSET["null"], i]), params, npix, "alpha_s0",
                          0.0, 1e-5, 0.0, instrument_draw(seed, "null", i) if randomise else None)
           for i in range(int(n_fields))]
    area = beam_params(params)["area_px"]
    return {"restored": np.asarray([f["restored"] for f in out], np.float32),
            "beam_area_px": np.asarray([f.get("beam_area_px", area) for f in out]),
            "instrument_noise_scale": np.asarray([instrument_draw(seed, "null", i)["noise_scale"] if randomise else 1.0
                                                  for i in range(int(n_fields))])}


def thinning_factors(n_fields: int, seed: int, split: str) -> np.ndarray:
    """Source-density factors of ``n_fields`` fields with thinning (module
    text): 1 for the ``n_fields``, then 0 for ``ceil(n_fields / THIN_PERIOD)``
    added fields and log-uniform in :data:`THIN_RANGE` for as many more,
    drawn from a stream of their own."""
    n_extra = -(-int(n_fields) // THIN_PERIOD)
    lo, hi = np.log10(THIN_RANGE)
    sparse = 10.0 ** np.random.default_rng([int(seed), SPLIT_OFFSET[split], THIN_STREAM]).uniform(lo, hi, n_extra)
    return np.concatenate([np.ones(int(n_fields)), np.zeros(n_extra), sparse])


def simulate_fields(n_fields: int, seed: int, params: RadioSimParams, split: str, npix: int,
                    families=("alpha_s0",), thinning: bool = False, randomise: bool = False,
                    start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
    """``n_fields`` fields (and with ``thinning`` the thinned fields after
    them: see the module text), each with its own modification: ``family``
    (index into :data:`skyml.radio.counts.FAMILIES`, cycling through
    ``families``), ``p1``, ``p2``, ``density`` (the source-density factor),
    images, true counts and ``expected`` counts per bin. ``start``/``stop``:
    only the fields ``start`` to ``stop`` (exclusive) of that list, the same
    arrays as the slice of the whole set (for sets too large to hold at once).

    The fields run through :func:`skyml.parallel.map_items`, in this process
    or on dask workers; every field has its own random generator, so the
    arrays are the same bit for bit either way."""
    rng = np.random.default_rng([int(seed), SPLIT_OFFSET[split]])
    density = thinning_factors(n_fields, seed, split) if thinning else np.ones(int(n_fields))
    items = []
    for i in range(len(density)):
        family = families[i % len(families)]
        items.append((i, family, *draw_parameters(rng, params, family), float(density[i])))
    items = items[int(start):None if stop is None else int(stop)]
    if not items:
        raise ValueError(f"no fields in [{start}, {stop}) of {len(density)}")
    fields = parallel.map_items(_simulate_item, items, desc=f"simulating radio fields ({split})",
                                base_seed=seed, params=params, split=split, npix=npix, randomise=bool(randomise))
    area = npix**2 * params.pixel_sr
    per_field = ["skymodel", "restored", "counts", "n_sources"]
    if randomise:
        per_field += list(INSTRUMENT_KEYS)
    out = {k: [] for k in per_field + ["expected", "family", "p1", "p2", "density"]}
    for (_, family, p1, p2, d), field in zip(items, fields):
        for k in per_field:
            out[k].append(field[k])
        out["expected"].append(d * cl.counts_in_bins(params.edges_jy, area, params.freq_ghz, family, p1, p2))
        out["family"].append(cl.FAMILIES.index(family))
        out["p1"].append(p1)
        out["p2"].append(p2)
        out["density"].append(d)
    arrays = {k: np.asarray(v) for k, v in out.items()}
    for k in ("skymodel", "restored"):
        arrays[k] = arrays[k].astype(np.float32)
    return arrays


def randomisation() -> dict:
    """The ranges of the instrument's domain randomisation (module text)."""
    return {"beam_scale": list(DR_BEAM_RANGE), "stretch": list(DR_STRETCH_RANGE), "noise_scale": list(DR_NOISE_RANGE),
            "mean_removed_fraction": DR_MEAN_REMOVED_FRACTION, "clean_depth": list(DR_CLEAN_DEPTH_RANGE),
            "full_restore_fraction": DR_FULL_RESTORE_FRACTION,
            "noise_restored": list(DR_NOISE_RESTORED_RANGE)}


def load_fields(n_fields: int, seed: int, params: RadioSimParams, split: str, npix: int,
                families=("alpha_s0",), thinning: bool = False, randomise: bool = False) -> dict[str, np.ndarray]:
    """:func:`simulate_fields`, cached in ``data/cache/radio_fields/``."""
    key = {"n": int(n_fields), "seed": int(seed), "split": split, "npix": int(npix),
           "families": list(families), "sim": params.to_dict(), "version": 2}
    if thinning:
        key["thinning"] = {"period": THIN_PERIOD, "range": list(THIN_RANGE), "layout": "added"}
    if randomise:
        key["randomise"] = randomisation()
    return cache.cached_arrays("radio_fields", key, lambda: simulate_fields(n_fields, seed, params, split, npix,
                                                                            families, thinning, randomise))


# ---------------------------------------------------------------------------
# A shifted test set: an independent, simpler instrument
# ---------------------------------------------------------------------------

#: the shifted instrument's restoring-beam FWHM and noise rms over the training ones, and its count laws
SHIFT_BEAM_SCALE = 1.2
SHIFT_NOISE_SCALE = 1.2
SHIFT_FAMILIES = ("broken",)


def shifted_beam_params(params: RadioSimParams, beam_scale: float = SHIFT_BEAM_SCALE) -> dict:
    """The restoring beam of the shifted instrument: circular Gaussian of
    FWHM ``beam_scale`` × the geometric mean of the training restoring
    beam's axes (the keys of :func:`beam_params`)."""
    b = beam_params(params)
    fwhm = float(beam_scale) * float(np.sqrt(b["fwhm_major_px"] * b["fwhm_minor_px"]))
    deg = params.pixel_arcsec / 3600.0
    return {"fwhm_major_px": fwhm, "fwhm_minor_px": fwhm, "theta_rad": 0.0, "bmaj_deg": fwhm * deg,
            "bmin_deg": fwhm * deg, "bpa_deg": 0.0, "area_px": float(np.pi / (4 * np.log(2)) * fwhm**2)}


def shifted_beam(params: RadioSimParams, beam_scale: float = SHIFT_BEAM_SCALE) -> np.ndarray:
    """The shifted instrument's restoring beam on the PSF grid (peak 1, centre (n//2, n//2))."""
    fwhm = shifted_beam_params(params, beam_scale)["fwhm_major_px"]
    return clean_beam_image((fwhm, fwhm, 0.0), params.psf_npix)


def simulate_shifted_field(rng: np.random.Generator, params: RadioSimParams, npix: int, family: str, p1: float,
                           p2: float, beam_scale: float = SHIFT_BEAM_SCALE,
                           noise_scale: float = SHIFT_NOISE_SCALE, density: float = 1.0) -> dict:
    """One restored field [Jy/beam] of the shifted instrument, independent
    of the training instrument's uv-coverage and CLEAN model: the whole sky
    (every source, faint or bright) convolved with the circular Gaussian
    restoring beam of :func:`shifted_beam`, plus white noise convolved with
    the same beam and scaled to rms ``noise_scale`` × ``noise_rms_jy``; the
    image mean is then removed (an interferometer does not measure the zero
    spacing). ``counts`` are the true counts in the label bins of ``params``
    (the network's bins), per sub-image; ``density`` scales the number of
    sources (0: noise only). The sky is :func:`render_sky`'s: the same
    generator state gives the sky of :func:`simulate_field`."""
    bright, faint, counts, n_src = render_sky(rng, params, npix, family, p1, p2, density)
    beam_ft = np.fft.rfft2(fold_kernel(shifted_beam(params, beam_scale), npix))
    noise = convolve_periodic(rng.standard_normal((npix, npix)), beam_ft)
    noise *= float(noise_scale) * params.noise_rms_jy / noise.std()
    restored = convolve_periodic(bright + faint, beam_ft) + noise
    restored -= restored.mean()
    return {"restored": restored, "counts": counts, "n_sources": n_src}


def _simulate_shifted_item(item, base_seed: int, params: RadioSimParams, npix: int, beam_scale: float,
                           noise_scale: float) -> dict:
    i, family, p1, p2 = item
    return simulate_shifted_field(np.random.default_rng([int(base_seed), SPLIT_OFFSET["test_shifted"], i]), params,
                                  npix, family, p1, p2, beam_scale, noise_scale)


def simulate_shifted_fields(n_fields: int, seed: int, params: RadioSimParams, npix: int,
                            beam_scale: float = SHIFT_BEAM_SCALE, noise_scale: float = SHIFT_NOISE_SCALE,
                            families=SHIFT_FAMILIES) -> dict[str, np.ndarray]:
    """``n_fields`` fields of the shifted instrument
    (:func:`simulate_shifted_field`), each with count-law parameters drawn
    from the training prior of its family (cycling through ``families``):
    ``restored``, ``counts``, ``expected``, ``family``, ``p1``, ``p2``,
    ``n_sources``, and the instrument's ``beam_fwhm_px`` and ``noise_rms_jy``.
    Field ``i`` has its own generator (split ``test_shifted``)."""
    rng = np.random.default_rng([int(seed), SPLIT_OFFSET["test_shifted"]])
    items = []
    for i in range(int(n_fields)):
        family = families[i % len(families)]
        items.append((i, family, *draw_parameters(rng, params, family)))
    fields = parallel.map_items(_simulate_shifted_item, items, desc="simulating radio fields (shifted instrument)",
                                base_seed=seed, params=params, npix=npix, beam_scale=float(beam_scale),
                                noise_scale=float(noise_scale))
    area = npix**2 * params.pixel_sr
    return {"restored": np.asarray([f["restored"] for f in fields], np.float32),
            "counts": np.asarray([f["counts"] for f in fields]),
            "expected": np.asarray([cl.counts_in_bins(params.edges_jy, area, params.freq_ghz, fam, p1, p2)
                                    for _, fam, p1, p2 in items]),
            "family": np.asarray([cl.FAMILIES.index(it[1]) for it in items]),
            "p1": np.asarray([it[2] for it in items]), "p2": np.asarray([it[3] for it in items]),
            "n_sources": np.asarray([f["n_sources"] for f in fields]),
            "beam_fwhm_px": np.asarray(shifted_beam_params(params, beam_scale)["fwhm_major_px"]),
            "noise_rms_jy": np.asarray(float(noise_scale) * params.noise_rms_jy)}


def load_shifted_fields(n_fields: int, seed: int, params: RadioSimParams, npix: int,
                        beam_scale: float = SHIFT_BEAM_SCALE, noise_scale: float = SHIFT_NOISE_SCALE,
                        families=SHIFT_FAMILIES) -> dict[str, np.ndarray]:
    """:func:`simulate_shifted_fields`, cached in ``data/cache/radio_shifted_fields/``."""
    key = {"n": int(n_fields), "seed": int(seed), "npix": int(npix), "beam_scale": float(beam_scale),
           "noise_scale": float(noise_scale), "families": list(families), "sim": params.to_dict(), "version": 1}
    return cache.cached_arrays("radio_shifted_fields", key, lambda: simulate_shifted_fields(
        n_fields, seed, params, npix, beam_scale, noise_scale, families))


def sub_images(fields: np.ndarray, sub: int) -> np.ndarray:
    """(n_fields, N, N) -> (n_fields · (N/sub)², sub, sub), row-major within
    each field (the order of ``counts``)."""
    f = np.asarray(fields)
    n, ny, nx = f.shape
    return (f.reshape(n, ny // sub, sub, nx // sub, sub).transpose(0, 1, 3, 2, 4)
            .reshape(-1, sub, sub))
