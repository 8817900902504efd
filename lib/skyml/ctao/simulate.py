"""Toy CTAO Galactic-plane-survey patches, after the "preliminary toy
simulations" of Pérez-Romero et al. (EuCAIFCon 2025).

**Geometry.** One fixed region of interest, as the seed ("always same patch"):
512×512 pixels of 0.02° (10.24°×10.24°), Galactic CAR projection centred on
(l, b) = (15.12°, 0°), three reconstructed-energy bins 0.07–0.788–8.88–100 TeV.

**Instrument.** CTAO South, 20° zenith, prod3b-v2 public performance curves
installed by ``ctaplot``, turned into gammapy IRFs by :mod:`skyml.cta.irf`
(Gaussian PSF per energy, Gaussian energy dispersion, background per deg²,
Gaussian field-of-view fall-off); the effective area is replaced by the 50 h
curve (:func:`survey_irf`), so all curves are the 50 h ones. The background
curve ends at 31.6 TeV (last node 25 TeV): above it the IRF background, here
and in gammapy, is zero, so the 8.88–100 TeV bin holds the background of
8.88–25 TeV only. The prod5
South_z20_50h IRFs of the seed are not installable from a package registry.

**Survey exposure.** A double row of pointings (rows at b = ``rows_glat_deg``,
``spacing_deg`` apart in longitude, the second row shifted by half a spacing,
the non-equilateral pattern of the CTAO GPS paper, arXiv 2310.02828 in
spirit), ``livetime_h`` each (30 min). For every pointing the effective area
and background rate at each pixel's offset are summed:
exposure(E_true, pixel) and background(E_reco bin, pixel) [counts].
The PSF is, per true energy, a Gaussian with the 68 % containment radius of
the exposure-weighted mixture of the pointings' PSFs at the patch centre
(about 10 % wider than the PSF at 1° offset); the energy dispersion is offset
independent (evaluated at ``psf_offset_deg``).
The background is the rate integrated over each reconstructed-energy bin
(64 log-spaced nodes); gammapy's ``MapDatasetMaker`` integrates log-log between
the bin edges only, which for these factor-11 bins is ~20 % low in the first
bin and zero in the last (its upper edge lies beyond the background curve)
unless ``background_oversampling`` is set. ``tests/test_ctao_simulate.py``
checks exposure, background (gammapy with ``background_oversampling=16``),
PSF and point-source npred per energy bin against ``MapDatasetMaker`` +
``MapDataset.npred`` on the same pointings.

**Sources** (per patch, random stream ``SeedSequence([seed, split, i])``):

- number uniform in [``n_src_min``, ``n_src_max``], l uniform over the patch
  (10° < l < 20.24°), b ~ N(0, ``glat_sigma_deg``) truncated to |b| < 5.12°;
- power law dN/dE = K0 (E / 1 TeV)^-Γ with Γ ~ N(2.2, ``index_sigma``)
  (the seed's "variance 0.05": sigma = sqrt(0.05));
- integral flux above 1 TeV drawn from dN/dF ∝ F^-``flux_slope`` between
  ``flux_min_mcrab`` and ``flux_max_mcrab`` (1 mCrab = 2.26e-14 cm⁻² s⁻¹
  above 1 TeV, HESS Crab). The seed tuned 10^x so that the cumulative flux
  distribution follows the GPS model sources and dropped sources below 1/3 of
  the target sensitivity; a slope of 1.8 (N(>F) ∝ F^-0.8, the logN–logS
  slope of Galactic TeV populations around the CTAO sensitivity) from
  1 mCrab (about 1/3 of the survey sensitivity here) to 1 Crab is this
  module's documented stand-in;
- a fraction ``ext_fraction`` is extended: a Gaussian (sigma) or a uniform
  disk (radius), half each, of size log-uniform in
  [``ext_min_deg``, ``ext_max_deg``];
- a fraction ``pair_fraction`` is placed as a companion of another source at a
  separation uniform in [``pair_sep_min_deg``, ``pair_sep_max_deg``]
  (overlapping pairs, the seed's hard case).

**Labels** per source: position (l, b, x, y), F(>1 TeV), index, size, kind
(0 point, 1 Gaussian, 2 disk), its companion (or -1), the expected counts per
bin, and the survey sensitivity at its position (:func:`sensitivity_map`):
the F(>1 TeV) of a Γ = 2.2 point source detected at TS = 25 (Asimov, counts
in the 68 % containment circle of each bin, background from the IRF).

**Shifted sky and domain randomisation** (fields after ``sens_ts``; at their
defaults they leave the nominal survey, its arrays and its cache keys unchanged,
as :meth:`SurveyParams.to_dict` leaves them out):

- ``psf_scale`` widens the PSF of every true energy; ``psf_tail_fraction`` of
  each source's counts goes into a Gaussian ``psf_tail_scale`` times wider (a
  PSF with another tail shape); ``bkg_scale`` multiplies the IRF background
  (another instrument response and a residual cosmic-ray background);
- ``diffuse_mcrab_deg2``: Galactic diffuse emission, an analytic profile
  I(l, b) = I0 exp(-b²/2σ_b²) (1 + 0.3 cos(2π(l - 12°)/8°)) of integral flux
  above 1 TeV per deg² (``diffuse_glat_sigma_deg`` = σ_b, power law of index
  ``diffuse_index``) folded with the exposure and the energy dispersion (not
  with the PSF: it is smooth on the PSF scale); it is part of the background
  that the sensitivity map (and so the labels) uses;
- ``ext_gauss_fraction``: the fraction of extended sources that are Gaussian
  (the rest disks);
- ``randomise``: every patch draws its own ``bkg_scale``, ``psf_scale``,
  ``diffuse_mcrab_deg2``, ``index_mean`` and ``ext_fraction`` uniformly in the
  ``rand_*`` ranges (from the patch's stream, before its sources), and its
  sources are labelled against the sensitivity of that realisation. Where
  ``rand_psf_tail_fraction`` is not its default (no tail), each patch then
  also draws a PSF tail, ``psf_tail_fraction`` and ``psf_tail_scale``, from
  ``rand_psf_tail_fraction`` and ``rand_psf_tail_scale`` (after the five
  draws above, so a survey randomised without tails keeps its arrays).

:func:`shifted_params` is the shifted test sky of notebook 06; the instrument
maps (:func:`irf_maps`) are those of the nominal survey for every value of
these fields (the shifts are applied on top).

Pixel convention: 0-based, pixel centres at integers, x = column (l
decreasing), y = row.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import asdict, dataclass

import numpy as np

from .. import cache

ENERGY_EDGES_TEV = np.array([0.07, 0.788, 8.88, 100.0])
N_BINS = 3
#: Crab integral flux above 1 TeV [cm⁻² s⁻¹] (HESS 2006, A&A 457, 899)
CRAB_F1TEV = 2.26e-11
MCRAB = 1e-3 * CRAB_F1TEV
SPLITS = {"train": 0, "val": 1, "test": 2, "demo": 3, "shifted": 4}
KINDS = ("point", "gauss", "disk")
#: the per-patch sky of a randomised survey (:func:`realise`)
REALISED = ("bkg_scale", "psf_scale", "diffuse_mcrab_deg2", "index_mean", "ext_fraction")
#: the PSF tail a patch also draws where the survey randomises it (:attr:`SurveyParams.randomises_tail`)
REALISED_TAIL = ("psf_tail_fraction", "psf_tail_scale")
SOURCE_FIELDS = ("patch", "glon", "glat", "x_pix", "y_pix", "flux_1tev", "index", "size_deg", "kind",
                 "companion", "npred", "sens_flux", "labelled")


@dataclass(frozen=True)
class SurveyParams:
    """Geometry, instrument, survey and source population (hashed into cache keys)."""

    npix: int = 512
    binsz_deg: float = 0.02
    centre_glon: float = 15.12
    centre_glat: float = 0.0
    irf_name: str = "prod3b-v2 South z20"
    fov_sigma_deg: float = 2.5
    psf_broadening: float = 0.1
    psf_offset_deg: float = 1.0
    rows_glat_deg: tuple = (-0.9, 0.9)
    spacing_deg: float = 1.8
    livetime_h: float = 0.5
    n_src_min: int = 20
    n_src_max: int = 40
    glat_sigma_deg: float = 1.4
    index_mean: float = 2.2
    index_sigma: float = float(np.sqrt(0.05))
    flux_min_mcrab: float = 1.0
    flux_max_mcrab: float = 1000.0
    flux_slope: float = 1.8
    ext_fraction: float = 0.25
    ext_min_deg: float = 0.05
    ext_max_deg: float = 1.0
    pair_fraction: float = 0.15
    pair_sep_min_deg: float = 0.06
    pair_sep_max_deg: float = 0.3
    label_radius_px: float = 2.0
    ext_label_factor: float = 0.5
    label_min_rel_sens: float = 1.0
    sens_ts: float = 25.0
    # shifted sky and domain randomisation (module docstring); left out of to_dict() at their defaults
    psf_scale: float = 1.0
    psf_tail_fraction: float = 0.0
    psf_tail_scale: float = 3.0
    bkg_scale: float = 1.0
    diffuse_mcrab_deg2: float = 0.0
    diffuse_index: float = 2.5
    diffuse_glat_sigma_deg: float = 0.4
    ext_gauss_fraction: float = 0.5
    randomise: bool = False
    rand_bkg_scale: tuple = (0.5, 2.0)
    rand_psf_scale: tuple = (0.8, 1.25)
    rand_diffuse_mcrab_deg2: tuple = (0.0, 12.0)
    rand_index_mean: tuple = (2.0, 2.8)
    rand_ext_fraction: tuple = (0.1, 0.5)
    rand_psf_tail_fraction: tuple = (0.0, 0.0)
    rand_psf_tail_scale: tuple = (3.0, 3.0)

    def __post_init__(self):
        from ..cta.irf import IRF_NAMES

        if self.irf_name not in IRF_NAMES:
            raise ValueError(f"unknown IRF {self.irf_name!r}; choose from {IRF_NAMES}")
        if not 0 < self.n_src_min <= self.n_src_max:
            raise ValueError("need 0 < n_src_min <= n_src_max")
        if not 0 < self.flux_min_mcrab < self.flux_max_mcrab:
            raise ValueError("need 0 < flux_min_mcrab < flux_max_mcrab")
        for name in ("ext_fraction", "pair_fraction", "psf_tail_fraction", "ext_gauss_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.psf_scale <= 0 or self.bkg_scale <= 0 or self.psf_tail_scale < 1 or self.diffuse_mcrab_deg2 < 0:
            raise ValueError("need psf_scale > 0, bkg_scale > 0, psf_tail_scale >= 1, diffuse_mcrab_deg2 >= 0")
        (f_lo, f_hi), (s_lo, s_hi) = self.rand_psf_tail_fraction, self.rand_psf_tail_scale
        if not (0 <= f_lo <= f_hi <= 1 and 1 <= s_lo <= s_hi):
            raise ValueError("need 0 <= rand_psf_tail_fraction[0] <= [1] <= 1 and 1 <= rand_psf_tail_scale[0] <= [1]")

    @property
    def randomises_tail(self) -> bool:
        """Whether a randomised patch draws its own PSF tail (``rand_psf_tail_fraction`` not its default)."""
        return self.randomise and tuple(self.rand_psf_tail_fraction) != (0.0, 0.0)

    @property
    def patch_deg(self) -> float:
        return self.npix * self.binsz_deg

    def to_dict(self) -> dict:
        """Parameters as a JSON-able dict; the shift and randomisation fields
        only when they differ from their defaults (so the nominal survey keeps its cache keys)."""
        d = asdict(self)
        defaults = {f.name: f.default for f in dataclasses.fields(SurveyParams) if f.name in SHIFT_FIELDS}
        for name in SHIFT_FIELDS:
            if d[name] == defaults[name]:
                del d[name]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> SurveyParams:
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in dict(d).items()}
        return cls(**d)

    def nominal(self) -> SurveyParams:
        """The same survey without shifts or randomisation."""
        defaults = {f.name: f.default for f in dataclasses.fields(SurveyParams) if f.name in SHIFT_FIELDS}
        return dataclasses.replace(self, **defaults)

    def instrument(self) -> SurveyParams:
        """The fields that make the instrument maps (:data:`INSTRUMENT_FIELDS`), the others at their defaults."""
        defaults = {f.name: f.default for f in dataclasses.fields(SurveyParams) if f.name not in INSTRUMENT_FIELDS}
        return dataclasses.replace(self, **defaults)


#: fields of :class:`SurveyParams` that :func:`irf_maps` depends on (its cache key)
INSTRUMENT_FIELDS = ("npix", "binsz_deg", "centre_glon", "centre_glat", "irf_name", "fov_sigma_deg", "psf_broadening",
                     "psf_offset_deg", "rows_glat_deg", "spacing_deg", "livetime_h")
#: fields of :class:`SurveyParams` that shift or randomise the sky (left out of ``to_dict`` at their defaults)
SHIFT_FIELDS = ("psf_scale", "psf_tail_fraction", "psf_tail_scale", "bkg_scale", "diffuse_mcrab_deg2",
                "diffuse_index", "diffuse_glat_sigma_deg", "ext_gauss_fraction", "randomise", "rand_bkg_scale",
                "rand_psf_scale", "rand_diffuse_mcrab_deg2", "rand_index_mean", "rand_ext_fraction",
                "rand_psf_tail_fraction", "rand_psf_tail_scale")


def shifted_params(p: SurveyParams | None = None) -> SurveyParams:
    """The shifted test sky of notebook 06: a PSF 20 % wider with 15 % of the
    counts in a tail three times wider, a background 1.8 times the IRF's
    (an instrument background 1.2 times higher and a residual cosmic-ray
    background 1.5 times that), Galactic diffuse emission of 8 mCrab/deg² at
    b = 0 (σ_b = 0.4°), a third of the sources Gaussians of sigma
    0.05-0.2°, and steeper spectra (mean index 2.5 instead of 2.2)."""
    p = SurveyParams() if p is None else p
    return dataclasses.replace(p, psf_scale=1.2, psf_tail_fraction=0.15, psf_tail_scale=3.0, bkg_scale=1.2 * 1.5,
                               diffuse_mcrab_deg2=8.0, index_mean=2.5, ext_fraction=1 / 3, ext_min_deg=0.05,
                               ext_max_deg=0.2, ext_gauss_fraction=1.0, randomise=False)


def edge_params(p: SurveyParams | None = None) -> SurveyParams:
    """A validation sky at the hard ends of the randomised ranges of
    :func:`randomised_params` (twice the IRF background, a PSF 1.25 times
    wider, 12 mCrab/deg² of diffuse emission, a steep mean index of 2.7,
    45 % of the sources extended) with a PSF tail that no training patch has
    (10 % of the counts in a Gaussian 2.5 times wider): outside the
    training distribution, and other than the shifted test sky."""
    p = SurveyParams() if p is None else p
    return dataclasses.replace(p, bkg_scale=2.0, psf_scale=1.25, diffuse_mcrab_deg2=12.0, index_mean=2.7,
                               ext_fraction=0.45, psf_tail_fraction=0.1, psf_tail_scale=2.5, randomise=False)


#: the PSF tails that :func:`randomised_params` draws with ``psf_tails=True``: up to a fifth of each
#: source's counts in a Gaussian 1.5-2.5 times wider than the core. The shifted test sky's tail
#: (15 % of the counts, 3 times wider) is wider than any of them
RAND_PSF_TAIL_FRACTION = (0.0, 0.2)
RAND_PSF_TAIL_SCALE = (1.5, 2.5)


def randomised_params(p: SurveyParams | None = None, psf_tails: bool = False) -> SurveyParams:
    """The domain-randomised training sky: ``p`` with ``randomise`` on (the ``rand_*`` ranges);
    with ``psf_tails`` every patch also draws a PSF tail (:data:`RAND_PSF_TAIL_FRACTION`,
    :data:`RAND_PSF_TAIL_SCALE`). Notebook 06's randomised U-Net trains with tails, starting
    from the nominal U-Net's weights (:func:`skyml.ctao.pipeline.train_model`); trained from
    random weights on skies with tails it lost to the TS map on the nominal sky
    (``docs/ctao_dr_sweep.md``)."""
    p = SurveyParams() if p is None else p
    if not psf_tails:
        return dataclasses.replace(p, randomise=True)
    return dataclasses.replace(p, randomise=True, rand_psf_tail_fraction=RAND_PSF_TAIL_FRACTION,
                               rand_psf_tail_scale=RAND_PSF_TAIL_SCALE)


def realise(p: SurveyParams, rng: np.random.Generator) -> SurveyParams:
    """One patch's sky of a randomised ``p`` (``randomise`` off, the drawn values set)."""
    u = rng.uniform(size=5)
    draw = [lo + f * (hi - lo) for f, (lo, hi) in zip(u, (p.rand_bkg_scale, p.rand_psf_scale,
                                                          p.rand_diffuse_mcrab_deg2, p.rand_index_mean,
                                                          p.rand_ext_fraction))]
    tail = {}
    if p.randomises_tail:
        u_f, u_s = rng.uniform(size=2)
        (f_lo, f_hi), (s_lo, s_hi) = p.rand_psf_tail_fraction, p.rand_psf_tail_scale
        tail = {"psf_tail_fraction": float(f_lo + u_f * (f_hi - f_lo)),
                "psf_tail_scale": float(s_lo + u_s * (s_hi - s_lo))}
    return dataclasses.replace(p, randomise=False, bkg_scale=float(draw[0]), psf_scale=float(draw[1]),
                               diffuse_mcrab_deg2=float(draw[2]), index_mean=float(draw[3]),
                               ext_fraction=float(draw[4]), **tail)


# --------------------------------------------------------------------------- geometry
def geom(p: SurveyParams, energy_axis=None):
    """gammapy ``WcsGeom`` of the patch (CAR, Galactic), optionally with an energy axis."""
    from astropy.coordinates import SkyCoord
    from gammapy.maps import WcsGeom

    return WcsGeom.create(skydir=SkyCoord(p.centre_glon, p.centre_glat, unit="deg", frame="galactic"),
                          npix=p.npix, binsz=p.binsz_deg, frame="galactic", proj="CAR",
                          axes=[energy_axis] if energy_axis is not None else None)


def wcs(p: SurveyParams):
    """astropy celestial WCS of the patch (the same grid as :func:`geom`)."""
    return geom(p).wcs


def energy_axes():
    """(reconstructed, true) gammapy energy axes."""
    import astropy.units as u
    from gammapy.maps import MapAxis

    from ..cta.irf import ENERGY_TRUE_EDGES_TEV

    e = MapAxis.from_energy_edges(ENERGY_EDGES_TEV * u.TeV, name="energy")
    et = MapAxis.from_energy_edges(ENERGY_TRUE_EDGES_TEV * u.TeV, name="energy_true")
    return e, et


def pointings(p: SurveyParams) -> tuple[np.ndarray, np.ndarray]:
    """(glon, glat) [deg] of the survey pointings that reach the patch."""
    half = p.patch_deg / 2 + 3 * p.fov_sigma_deg
    lons, lats = [], []
    for r, b in enumerate(p.rows_glat_deg):
        shift = 0.5 * p.spacing_deg * r
        n = int(np.ceil(half / p.spacing_deg)) + 1
        for k in range(-n, n + 1):
            lon = p.centre_glon + k * p.spacing_deg + shift
            if abs(lon - p.centre_glon) <= half:
                lons.append(lon)
                lats.append(b)
    return np.array(lons), np.array(lats)


@functools.lru_cache(maxsize=4)
def _survey_irf(irf_name: str, fov_sigma_deg: float, psf_broadening: float):
    import astropy.units as u
    from gammapy.irf import EffectiveAreaTable2D

    from ..cta import irf as cta_irf

    base = cta_irf.build_irf(irf_name, fov_sigma_deg, psf_broadening)
    version, site, zen = cta_irf._parse_name(irf_name)
    curve = cta_irf.read_performance_curve(cta_irf.performance_file(version, site, zen, "EffArea", "50h"))
    e_true, offset = base.aeff.axes["energy_true"], base.aeff.axes["offset"]
    fov = np.exp(-0.5 * (offset.center.to_value("deg") / fov_sigma_deg) ** 2)
    aeff0 = cta_irf._loglog_interp(e_true.center.to_value("TeV"), curve["energy"].to_value("TeV"),
                                   curve["value"], floor=1.0)
    aeff = EffectiveAreaTable2D(axes=[e_true, offset], data=aeff0[:, None] * fov[None, :], unit="m2",
                                meta=dict(base.aeff.meta))
    del u
    return dataclasses.replace(base, aeff=aeff)


def survey_irf(p: SurveyParams):
    """:class:`skyml.cta.irf.CTAIRF` of ``p.irf_name`` with the 50 h effective area."""
    return _survey_irf(p.irf_name, float(p.fov_sigma_deg), float(p.psf_broadening))


def _pixel_sky(p: SurveyParams):
    g = geom(p)
    coords = g.get_coord()
    return np.asarray(coords.lon.to_value("deg") if hasattr(coords.lon, "to_value") else coords.lon), \
        np.asarray(coords.lat.to_value("deg") if hasattr(coords.lat, "to_value") else coords.lat), \
        g.solid_angle().to_value("sr")


def _offsets_deg(lon, lat, plon, plat):
    from ..metrics import angular_separation_deg

    return angular_separation_deg(lon, lat, plon, plat)


def _stacked_psf_sigma_deg(irf, et, lon, lat, plon, plat, off_max) -> np.ndarray:
    """Gaussian sigma [deg] per true energy with the 68 % containment radius of
    the exposure-weighted mixture of the pointings' PSFs at the patch centre
    (the PSF that gammapy's stacked ``MapDataset`` has there; the pattern repeats
    along the plane, so the centre stands for the patch)."""
    import astropy.units as u

    from ..cta.irf import R68_PER_SIGMA

    cy, cx = (lon.shape[0] - 1) // 2, (lon.shape[1] - 1) // 2
    off = _offsets_deg(lon[cy, cx], lat[cy, cx], plon, plat)
    off = off[off <= off_max]
    w = irf.aeff.evaluate(energy_true=et[:, None] * u.TeV, offset=off[None, :] * u.deg).to_value("m2")
    w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
    sig = irf.psf_sigma_deg(et[:, None], off[None, :])
    r = np.linspace(0.0, 5.0 * sig.max(), 20001)
    out = np.empty(len(et))
    for j in range(len(et)):
        cdf = np.sum(w[j][:, None] * -np.expm1(-0.5 * (r[None, :] / sig[j][:, None]) ** 2), axis=0)
        out[j] = np.interp(0.68, cdf, r) / R68_PER_SIGMA
    return out


def _build_irf_maps(p: SurveyParams) -> dict:
    import astropy.units as u

    irf = survey_irf(p)
    e_reco, e_true = energy_axes()
    lon, lat, omega = _pixel_sky(p)
    # Offsets follow gammapy's MapDatasetMaker conventions for these IRFs: the effective area is
    # interpolated linearly in offset between the bin centres and extrapolated linearly to the axis
    # edges (0 and the last edge, zero beyond); the background is interpolated in log(rate) and,
    # as MapDatasetMaker pads the offset axis by one bin with edge values (background_pad_offset),
    # flat from the last centre to one bin beyond it.
    off_axis = irf.aeff.axes["offset"]
    off_nodes = off_axis.center.to_value("deg")
    off_edge = float(off_axis.edges[-1].to_value("deg"))
    off_a = np.concatenate([[0.0], off_nodes, [off_edge]])
    et = e_true.center.to_value("TeV")
    aeff_nodes = irf.aeff.evaluate(energy_true=et[:, None] * u.TeV,
                                   offset=off_a[None, :] * u.deg).to_value("cm2")
    # background rate integrated over each reconstructed-energy bin (log-spaced nodes, trapezoid in
    # ln E); like gammapy's IRF, the rate is zero above the last node of the background curve
    # (25 TeV for prod3b-v2: its table ends at 31.6 TeV)
    bkg_nodes = np.zeros((N_BINS, len(off_nodes)))
    for k in range(N_BINS):
        e = np.geomspace(ENERGY_EDGES_TEV[k], ENERGY_EDGES_TEV[k + 1], 64)
        rate = irf.bkg.evaluate(energy=e[:, None] * u.TeV, offset=off_nodes[None, :] * u.deg)
        rate = rate.to_value("s-1 TeV-1 sr-1") * e[:, None]
        bkg_nodes[k] = np.trapezoid(rate, np.log(e), axis=0)
    off_b = np.concatenate([off_nodes, [2 * off_nodes[-1] - off_nodes[-2]]])
    log_bkg = np.log(np.maximum(np.concatenate([bkg_nodes, bkg_nodes[:, -1:]], axis=1), 1e-300))
    livetime = p.livetime_h * 3600.0
    exposure = np.zeros((len(et), p.npix, p.npix))
    background = np.zeros((N_BINS, p.npix, p.npix))
    plon, plat = pointings(p)
    for lo, la in zip(plon, plat):
        off = _offsets_deg(lon, lat, lo, la)
        in_a, in_b = off <= off_a[-1], off <= off_b[-1]
        for j in range(len(et)):
            exposure[j] += np.where(in_a, np.interp(off, off_a, aeff_nodes[j]), 0.0) * livetime
        for k in range(N_BINS):
            background[k] += np.where(in_b, np.exp(np.interp(off, off_b, log_bkg[k])), 0.0) * livetime * omega
    kernel = irf.edisp.to_edisp_kernel(p.psf_offset_deg * u.deg, energy_axis_true=e_true, energy_axis=e_reco)
    psf_sigma = _stacked_psf_sigma_deg(irf, et, lon, lat, plon, plat, off_edge)
    return {"exposure_cm2s": exposure.astype(np.float32), "background": background.astype(np.float32),
            "edisp": np.asarray(kernel.pdf_matrix, float), "psf_sigma_deg": psf_sigma,
            "energy_true_edges_tev": e_true.edges.to_value("TeV"), "pointing_glon": plon,
            "pointing_glat": plat, "solid_angle_sr": omega.astype(np.float32)}


def irf_maps(p: SurveyParams) -> dict:
    """Exposure (n_true, npix, npix) [cm² s], background (3, npix, npix)
    [counts], edisp matrix (n_true, 3), PSF sigma per true energy [deg],
    true-energy edges, pointings and pixel solid angles; cached on disk and in memory,
    keyed by the instrument fields only (:meth:`SurveyParams.instrument`), so
    every sky on one survey shares them."""
    return _irf_maps_cached(tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                         for k, v in p.instrument().to_dict().items())))


@functools.lru_cache(maxsize=2)
def _irf_maps_cached(key: tuple) -> dict:
    p = SurveyParams(**dict(key))
    return cache.cached_arrays("ctao_irf_maps", {"sim": p.to_dict(), "version": 4}, lambda: _build_irf_maps(p),
                               verbose=False)


# --------------------------------------------------------------------------- spectra and counts
def true_bin_fraction(index, edges_tev) -> np.ndarray:
    """Photon flux in each true-energy bin of a power law (E0 = 1 TeV) per unit
    integral flux above 1 TeV: shape (n_src, n_true)."""
    g = np.atleast_1d(np.asarray(index, float))[:, None]
    lo, hi = np.asarray(edges_tev[:-1])[None], np.asarray(edges_tev[1:])[None]
    # ∫ E^-g dE over [lo, hi] / ∫_1^∞ E^-g dE  (g > 1)
    return (lo ** (1 - g) - hi ** (1 - g))


def npred_components(flux_1tev, index, x_pix, y_pix, p: SurveyParams) -> np.ndarray:
    """Expected counts (n_src, n_true, 3) of each source per true-energy
    component and reconstructed bin, with the exposure at the source pixel."""
    m = irf_maps(p)
    frac = true_bin_fraction(index, m["energy_true_edges_tev"]) * np.atleast_1d(flux_1tev)[:, None]
    xi = np.clip(np.rint(np.atleast_1d(x_pix)).astype(int), 0, p.npix - 1)
    yi = np.clip(np.rint(np.atleast_1d(y_pix)).astype(int), 0, p.npix - 1)
    expo = m["exposure_cm2s"][:, yi, xi].T.astype(float)  # (n_src, n_true)
    return (frac * expo)[:, :, None] * m["edisp"][None]


def bin_psf_sigma_deg(p: SurveyParams, index: float = 2.2) -> np.ndarray:
    """Counts-weighted rms PSF sigma [deg] of each reconstructed bin (pattern centre)."""
    m = irf_maps(p)
    c = npred_components(1.0, index, (p.npix - 1) / 2, (p.npix - 1) / 2, p)[0]
    w = c / c.sum(axis=0, keepdims=True)
    return p.psf_scale * np.sqrt(np.sum(w * m["psf_sigma_deg"][:, None] ** 2, axis=0))


def _pixel_fractions(centre, sigma, lo, n):
    from scipy.special import erf

    edges = np.arange(lo, lo + n + 1, dtype=float) - 0.5
    z = (edges[None, :] - centre) / (np.sqrt(2.0) * np.asarray(sigma, float)[:, None])
    return np.diff(0.5 * erf(z), axis=-1)


def render_source(x, y, comps, kind: int, size_px: float, p: SurveyParams, out: np.ndarray) -> None:
    """Add the expected counts of one source to ``out`` (3, npix, npix).

    ``comps`` (n_true, 3): expected counts per true-energy component and bin.
    Point and Gaussian sources: a pixel-integrated Gaussian per true-energy
    component (widths added in quadrature). Disks: the disk (5×5 sub-pixels)
    smoothed by the counts-weighted rms PSF width of each bin.
    """
    sig_pix = p.psf_scale * irf_maps(p)["psf_sigma_deg"] / p.binsz_deg
    if p.psf_tail_fraction > 0:
        _render_one(x, y, comps * (1 - p.psf_tail_fraction), kind, size_px, sig_pix, p, out)
        _render_one(x, y, comps * p.psf_tail_fraction, kind, size_px, sig_pix * p.psf_tail_scale, p, out)
    else:
        _render_one(x, y, comps, kind, size_px, sig_pix, p, out)


def _render_one(x, y, comps, kind: int, size_px: float, sig_pix: np.ndarray, p: SurveyParams, out: np.ndarray):
    from scipy import ndimage

    total = comps.sum(axis=0)
    for k in range(N_BINS):
        if total[k] <= 0:
            continue
        w = comps[:, k] / total[k]
        use = w > 1e-4
        if kind == 2:
            s_eff = float(np.sqrt(np.sum(w[use] * sig_pix[use] ** 2) / w[use].sum()))
            hw = int(np.ceil(size_px + 5 * s_eff)) + 1
            x0, y0 = int(np.floor(x)) - hw, int(np.floor(y)) - hw
            n = 2 * hw + 2
            sub = 5
            yy, xx = (np.mgrid[0:n * sub, 0:n * sub] + 0.5) / sub - 0.5
            disk = ((xx + x0 - x) ** 2 + (yy + y0 - y) ** 2 <= size_px**2).astype(float)
            disk = disk.reshape(n, sub, n, sub).mean(axis=(1, 3))
            if disk.sum() == 0:
                disk[int(round(y)) - y0, int(round(x)) - x0] = 1.0
            img = ndimage.gaussian_filter(disk / disk.sum(), s_eff, mode="constant") * total[k]
        else:
            s = np.sqrt(sig_pix[use] ** 2 + (size_px if kind == 1 else 0.0) ** 2)
            hw = int(np.ceil(6 * s.max())) + 1
            x0, y0 = int(np.floor(x)) - hw, int(np.floor(y)) - hw
            n = 2 * hw + 2
            fx = _pixel_fractions(x, s, x0, n)
            fy = _pixel_fractions(y, s, y0, n)
            img = (fy * (w[use] * total[k])[:, None]).T @ fx
        # paste the window into the patch
        ys, xs = slice(max(y0, 0), min(y0 + n, p.npix)), slice(max(x0, 0), min(x0 + n, p.npix))
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        out[k, ys, xs] += img[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]


# --------------------------------------------------------------------------- background and diffuse emission
def diffuse_npred(p: SurveyParams) -> np.ndarray:
    """Expected counts (3, npix, npix) of the Galactic diffuse emission (module docstring); zeros without it."""
    if p.diffuse_mcrab_deg2 <= 0:
        return np.zeros((N_BINS, p.npix, p.npix))
    m = irf_maps(p)
    lon, lat, _ = _pixel_sky(p)
    profile = np.exp(-0.5 * ((lat - p.centre_glat) / p.diffuse_glat_sigma_deg) ** 2) * \
        (1 + 0.3 * np.cos(2 * np.pi * (lon - 12.0) / 8.0))
    deg2 = m["solid_angle_sr"].astype(float) * (180 / np.pi) ** 2  # pixel area [deg²]
    flux = p.diffuse_mcrab_deg2 * MCRAB * profile * deg2  # F(>1 TeV) per pixel
    frac = true_bin_fraction(p.diffuse_index, m["energy_true_edges_tev"])[0]
    unit = np.einsum("j,jyx,jk->kyx", frac, m["exposure_cm2s"].astype(float), m["edisp"])
    return unit * flux[None]


def background_npred(p: SurveyParams) -> np.ndarray:
    """Expected background counts (3, npix, npix): the IRF background times
    ``bkg_scale`` plus the diffuse emission (the IRF background alone for the nominal survey)."""
    b = irf_maps(p)["background"].astype(float)
    if p.bkg_scale != 1.0:
        b = b * p.bkg_scale
    if p.diffuse_mcrab_deg2 > 0:
        b = b + diffuse_npred(p)
    return b


# --------------------------------------------------------------------------- sensitivity
def asimov_ts(s, b):
    """Test statistic of a source of expected counts ``s`` over a background ``b`` (per pixel or bin; sum them)
    on the expected counts themselves, the Asimov data set (Cowan, Cranmer, Gross & Vitells 2011, EPJC 71, 1554):
    the median TS of the likelihood-ratio test for the source."""
    b = np.maximum(b, 1e-12)
    return 2 * ((s + b) * np.log1p(s / b) - s)


def sensitivity_map(p: SurveyParams, index: float = 2.2) -> np.ndarray:
    """Survey sensitivity (npix, npix): F(>1 TeV) [cm⁻² s⁻¹] of a point source
    of index ``index`` reaching TS = ``sens_ts`` (Asimov) from the counts in
    the 68 % containment circle of each bin, all bins together."""
    return _sensitivity_cached(tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                                            for k, v in p.to_dict().items())), float(index))


@functools.lru_cache(maxsize=2)
def _sensitivity_cached(key: tuple, index: float) -> np.ndarray:
    from ..cta.psf import containment_radius

    p = SurveyParams(**dict(key))
    m = irf_maps(p)
    frac = true_bin_fraction(index, m["energy_true_edges_tev"])[0]  # (n_true,)
    # unit-flux expected counts per pixel position and bin: (3, npix, npix)
    unit = np.einsum("j,jyx,jk->kyx", frac, m["exposure_cm2s"].astype(float), m["edisp"])
    centre = npred_components(1.0, index, (p.npix - 1) / 2, (p.npix - 1) / 2, p)[0]
    r68 = np.empty(N_BINS)
    for k in range(N_BINS):
        w = centre[:, k] / centre[:, k].sum()
        keep = w > 1e-6
        r68[k] = containment_radius(p.psf_scale * m["psf_sigma_deg"][keep], w[keep] / w[keep].sum())
    area = np.pi * (r68 / p.binsz_deg) ** 2  # pixels
    bkg_ap = background_npred(p) * area[:, None, None]
    lo, hi = np.full(unit.shape[1:], np.log(1e-16)), np.full(unit.shape[1:], np.log(1e-8))
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        ts = asimov_ts(0.68 * np.exp(mid) * unit, bkg_ap).sum(axis=0)
        above = ts >= p.sens_ts
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    return np.exp(hi)


# --------------------------------------------------------------------------- sources and patches
def draw_sources(rng: np.random.Generator, p: SurveyParams) -> dict:
    """One patch's source population (see the module docstring)."""
    n = int(rng.integers(p.n_src_min, p.n_src_max + 1))
    half = p.patch_deg / 2
    glon = rng.uniform(p.centre_glon - half, p.centre_glon + half, n)
    glat = np.empty(n)
    for i in range(n):  # truncated Gaussian by rejection
        while True:
            b = rng.normal(p.centre_glat, p.glat_sigma_deg)
            if abs(b - p.centre_glat) < half:
                glat[i] = b
                break
    a = 1.0 - p.flux_slope
    u = rng.uniform(size=n)
    fmin, fmax = p.flux_min_mcrab, p.flux_max_mcrab
    flux_mcrab = (fmin**a + u * (fmax**a - fmin**a)) ** (1 / a)
    index = rng.normal(p.index_mean, p.index_sigma, n)
    extended = rng.uniform(size=n) < p.ext_fraction
    kind = np.where(extended, np.where(rng.uniform(size=n) < p.ext_gauss_fraction, 1, 2), 0)
    size = np.where(extended, np.exp(rng.uniform(np.log(p.ext_min_deg), np.log(p.ext_max_deg), n)), 0.0)
    companion = np.full(n, -1)
    n_pairs = int(round(p.pair_fraction * n))
    if n_pairs:
        movers = rng.choice(np.arange(1, n), size=min(n_pairs, n - 1), replace=False)
        for j in np.sort(movers):
            host = int(rng.integers(0, j))
            sep = rng.uniform(p.pair_sep_min_deg, p.pair_sep_max_deg)
            pa = rng.uniform(0, 2 * np.pi)
            glon[j] = glon[host] + sep * np.cos(pa) / np.cos(np.deg2rad(glat[host]))
            glat[j] = glat[host] + sep * np.sin(pa)
            companion[j], companion[host] = host, j
    return {"glon": glon, "glat": glat, "flux_1tev": flux_mcrab * MCRAB, "index": index,
            "size_deg": size, "kind": kind, "companion": companion}


def simulate_patch(rng: np.random.Generator, p: SurveyParams):
    """Counts (3, npix, npix) int32, the expected source counts and the sources of one patch
    (a randomised ``p`` first draws the patch's sky, :func:`realise`, whose parameters
    ``src["realised"]`` holds)."""
    realised = None
    if p.randomise:
        p = realised = realise(p, rng)
    src = draw_sources(rng, p)
    x, y = wcs(p).wcs_world2pix(src["glon"], src["glat"], 0)
    src["x_pix"], src["y_pix"] = np.asarray(x, float), np.asarray(y, float)
    comps = npred_components(src["flux_1tev"], src["index"], src["x_pix"], src["y_pix"], p)
    mu_src = np.zeros((N_BINS, p.npix, p.npix))
    for i in range(len(x)):
        render_source(src["x_pix"][i], src["y_pix"][i], comps[i], int(src["kind"][i]),
                      src["size_deg"][i] / p.binsz_deg, p, mu_src)
    src["npred"] = comps.sum(axis=1)
    sens = sensitivity_map(p)
    xi = np.clip(np.rint(src["x_pix"]).astype(int), 0, p.npix - 1)
    yi = np.clip(np.rint(src["y_pix"]).astype(int), 0, p.npix - 1)
    src["sens_flux"] = sens[yi, xi]
    inside = (src["x_pix"] > -0.5) & (src["x_pix"] < p.npix - 0.5) & (src["y_pix"] > -0.5) & \
        (src["y_pix"] < p.npix - 0.5)
    src["labelled"] = inside & (src["flux_1tev"] >= p.label_min_rel_sens * src["sens_flux"])
    counts = rng.poisson(mu_src + background_npred(p))
    if counts.max() > np.iinfo(np.int32).max:
        raise OverflowError("counts exceed int32")
    if realised is not None:
        src["realised"] = realised
    return counts.astype(np.int32), mu_src.astype(np.float32), src


def simulate_patches(n: int, seed: int, p: SurveyParams, split: str = "train", progress: bool = False) -> dict:
    """``n`` patches: ``counts`` (n, 3, npix, npix) int32, ``source_npred``
    (n, 3, npix, npix) float32, and the flat per-source arrays of
    :data:`SOURCE_FIELDS` (``patch`` is the patch index, ``npred`` (n_src, 3)).
    Patch ``i`` uses the stream ``SeedSequence([seed, split, i])``. A
    randomised ``p`` adds the drawn sky of every patch: ``patch_<name>``
    (n,) for each name in :data:`REALISED` (and :data:`REALISED_TAIL` where it
    randomises the tail)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {tuple(SPLITS)}")
    if n < 1:
        raise ValueError("n must be >= 1")
    counts = np.empty((n, N_BINS, p.npix, p.npix), np.int32)
    mu = np.empty((n, N_BINS, p.npix, p.npix), np.float32)
    rows = {k: [] for k in SOURCE_FIELDS}
    names = REALISED + (REALISED_TAIL if p.randomises_tail else ())
    realised = {k: [] for k in names}
    for i in range(n):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), SPLITS[split], i]))
        counts[i], mu[i], src = simulate_patch(rng, p)
        src["patch"] = np.full(len(src["glon"]), i)
        for k in SOURCE_FIELDS:
            rows[k].append(src[k])
        if p.randomise:
            for k in names:
                realised[k].append(getattr(src["realised"], k))
    out = {"counts": counts, "source_npred": mu}
    if p.randomise:
        out.update({f"patch_{k}": np.array(v, float) for k, v in realised.items()})
    for k in SOURCE_FIELDS:
        out[k] = np.concatenate(rows[k])
    # companion indices become global row indices
    offsets = np.cumsum([0] + [len(r) for r in rows["glon"]])[:-1]
    comp = out["companion"].copy()
    has = comp >= 0
    out["companion"] = np.where(has, comp + offsets[out["patch"]], -1)
    return out


def load_patches(n: int, seed: int, p: SurveyParams, split: str = "train") -> dict:
    """:func:`simulate_patches`, cached by its parameters."""
    key = {"n": int(n), "seed": int(seed), "split": split, "sim": p.to_dict(), "version": 2}
    return cache.cached_arrays("ctao_patches", key, lambda: simulate_patches(n, seed, p, split))


def patch_sources(data: dict, i: int) -> dict:
    """The per-source arrays of patch ``i``."""
    sel = data["patch"] == i
    return {k: data[k][sel] for k in SOURCE_FIELDS}


# --------------------------------------------------------------------------- labels
def label_radius_px(size_deg, p: SurveyParams) -> np.ndarray:
    """Mask disk radius [px]: ``label_radius_px``, or ``ext_label_factor`` × the size for extended sources."""
    return np.maximum(p.label_radius_px, p.ext_label_factor * np.asarray(size_deg, float) / p.binsz_deg)


def disk_mask(x, y, radius_px, shape) -> np.ndarray:
    """Binary mask (ny, nx) float32 with disks around (x, y)."""
    ny, nx = shape
    out = np.zeros(shape, np.float32)
    for xi, yi, r in zip(np.atleast_1d(x), np.atleast_1d(y), np.atleast_1d(radius_px)):
        r = float(r)
        x0, x1 = max(int(np.floor(xi - r)), 0), min(int(np.ceil(xi + r)) + 1, nx)
        y0, y1 = max(int(np.floor(yi - r)), 0), min(int(np.ceil(yi + r)) + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        out[y0:y1, x0:x1][(xx - xi) ** 2 + (yy - yi) ** 2 <= r * r] = 1.0
    return out


def direction_targets(x, y, shape, closeness_px: float = 3.0) -> np.ndarray:
    """CeDiRNet targets (ny, nx, 3): sin and cos of the direction from each
    pixel to its nearest centre (dy/d, dx/d; zero at the centre pixel) and the
    closeness exp(-d / ``closeness_px``); all zero without centres."""
    ny, nx = shape
    out = np.zeros((ny, nx, 3), np.float32)
    x, y = np.atleast_1d(x).astype(float), np.atleast_1d(y).astype(float)
    if len(x) == 0:
        return out
    yy, xx = np.mgrid[0:ny, 0:nx].astype(float)
    # nearest centre by brute force in chunks of sources (at most ~50 per patch)
    best = np.full(shape, np.inf)
    dx_best = np.zeros(shape)
    dy_best = np.zeros(shape)
    for xi, yi in zip(x, y):
        dx, dy = xi - xx, yi - yy
        d2 = dx * dx + dy * dy
        closer = d2 < best
        best = np.where(closer, d2, best)
        dx_best = np.where(closer, dx, dx_best)
        dy_best = np.where(closer, dy, dy_best)
    d = np.sqrt(best)
    safe = np.maximum(d, 1e-6)
    at_centre = d < 0.5
    out[..., 0] = np.where(at_centre, 0.0, dy_best / safe)
    out[..., 1] = np.where(at_centre, 0.0, dx_best / safe)
    out[..., 2] = np.exp(-d / closeness_px)
    return out


#: blocks (px) of :func:`local_background`, tried in turn until a block holds :data:`LOCAL_MIN_COUNTS`
LOCAL_BLOCKS_PX = (8, 16, 32, 64)
#: mean counts per block (over the cube) that :func:`local_background` asks of its blocks
LOCAL_MIN_COUNTS = 10.0
#: median filter (blocks) of :func:`local_background`
LOCAL_MEDIAN_BLOCKS = 5


def local_background(counts: np.ndarray) -> np.ndarray:
    """Local background estimate (n, 3, ny, nx) float32 of counts (n, 3, ny, nx):
    per energy bin, the mean counts per pixel of square blocks (the smallest of
    :data:`LOCAL_BLOCKS_PX` whose mean count over the cube reaches
    :data:`LOCAL_MIN_COUNTS`, at most the cube side), median filtered over
    :data:`LOCAL_MEDIAN_BLOCKS`² blocks (sources cover a minority of them)
    and interpolated back to pixels (bilinear); a floor of half a count per
    block keeps it positive in the sparse highest-energy bin."""
    from scipy import ndimage

    c = np.asarray(counts, np.float32)
    if c.ndim != 4:
        raise ValueError(f"counts must be (n, n_bins, ny, nx), got {c.shape}")
    n, nb, ny, nx = c.shape
    out = np.empty(c.shape, np.float32)
    for k in range(nb):
        rate = float(c[:, k].mean())
        block = next((b for b in LOCAL_BLOCKS_PX if rate * b * b >= LOCAL_MIN_COUNTS), LOCAL_BLOCKS_PX[-1])
        block = max(1, min(block, ny, nx))
        py, px = (-ny) % block, (-nx) % block
        ck = np.pad(c[:, k], ((0, 0), (0, py), (0, px)), mode="reflect" if min(ny, nx) > max(py, px) else "edge")
        by, bx = ck.shape[1] // block, ck.shape[2] // block
        means = ck.reshape(n, by, block, bx, block).mean(axis=(2, 4))
        size = min(LOCAL_MEDIAN_BLOCKS, by, bx)
        med = ndimage.median_filter(means, size=(1, size, size), mode="nearest")
        med = np.maximum(med, 0.5 / block**2)
        up = ndimage.zoom(med, (1, block, block), order=1, mode="nearest", grid_mode=True)
        out[:, k] = up[:, :ny, :nx]
    return out


def network_input(counts: np.ndarray, p: SurveyParams, scaling: str = "log", normalise: str = "mean",
                  background: np.ndarray | None = None) -> np.ndarray:
    """Channels-last network input of counts (n, 3, ny, nx), each bin divided
    by a background per pixel: ``normalise="mean"``: the mean IRF background
    per pixel of the bin b_k (one number per bin, the nominal survey);
    ``"local"``: :func:`local_background` of the counts themselves (or
    ``background``, (n, 3, ny, nx), when given), so that a sky with another
    background level gives the network the same inputs. ``scaling="log"``:
    log1p(counts / b) (the seed's image scaling, compressing the dynamic
    range); ``"linear"``: counts / b (no compression)."""
    c = np.asarray(counts, np.float32)
    if c.ndim != 4 or c.shape[1] != N_BINS:
        raise ValueError(f"counts must be (n, {N_BINS}, ny, nx), got {c.shape}")
    if scaling not in ("log", "linear"):
        raise ValueError(f"unknown scaling {scaling!r}; choose 'log' or 'linear'")
    if normalise == "mean":
        bkg = irf_maps(p)["background"].astype(np.float64).mean(axis=(1, 2))
        x = c / bkg[None, :, None, None].astype(np.float32)
    elif normalise == "local":
        b = local_background(c) if background is None else np.asarray(background, np.float32)
        x = c / b
    else:
        raise ValueError(f"unknown normalise {normalise!r}; choose 'mean' or 'local'")
    if scaling == "log":
        x = np.log1p(x)
    return np.moveaxis(x, 1, -1).astype(np.float32)


def training_crops(data: dict, p: SurveyParams, crop_px: int, per_patch: int, seed: int,
                   centred_fraction: float = 0.75, extra: np.ndarray | None = None):
    """Crops (counts (m, 3, c, c), mask (m, c, c, 1), directions (m, c, c, 3)),
    and with ``extra`` (n, k, npix, npix) its crops (m, k, c, c) as a fourth item.

    A fraction ``centred_fraction`` of the crops contains a labelled source
    (random offset), the rest are uniform over the patch. Targets are made on
    the full patch (nearest centres may lie outside the crop) and cut with it."""
    rng = np.random.default_rng(np.random.SeedSequence([*(int(s) for s in np.atleast_1d(seed)), 77]))
    counts, masks, dirs, extras = [], [], [], []
    hi = p.npix - crop_px
    for i in range(len(data["counts"])):
        s = patch_sources(data, i)
        lab = s["labelled"]
        mask = disk_mask(s["x_pix"][lab], s["y_pix"][lab], label_radius_px(s["size_deg"][lab], p),
                         (p.npix, p.npix))
        direc = direction_targets(s["x_pix"][lab], s["y_pix"][lab], (p.npix, p.npix))
        for _ in range(per_patch):
            if lab.any() and rng.uniform() < centred_fraction:
                j = rng.choice(np.flatnonzero(lab))
                x0 = int(np.clip(s["x_pix"][j] - rng.uniform(8, crop_px - 8), 0, hi))
                y0 = int(np.clip(s["y_pix"][j] - rng.uniform(8, crop_px - 8), 0, hi))
            else:
                x0, y0 = int(rng.integers(0, hi + 1)), int(rng.integers(0, hi + 1))
            sl = (slice(y0, y0 + crop_px), slice(x0, x0 + crop_px))
            counts.append(data["counts"][i][:, sl[0], sl[1]])
            masks.append(mask[sl])
            dirs.append(direc[sl])
            if extra is not None:
                extras.append(extra[i][:, sl[0], sl[1]])
    out = (np.stack(counts), np.stack(masks)[..., None], np.stack(dirs))
    return out + (np.stack(extras),) if extra is not None else out


def dihedral_crops(counts, mask, direc, seed, extra=None):
    """Each crop turned by its own random element of the square's symmetry
    group (a transpose, then flips of rows and columns: 8 elements), the same
    for its counts (m, k, c, c), mask (m, c, c, 1), direction targets (m, c,
    c, 3) and ``extra`` (m, k, c, c); the direction targets are turned with
    them (sin = dy/d, cos = dx/d: a transpose swaps them, a flip of rows
    negates sin, a flip of columns cos). The sky has no preferred
    orientation, so the network sees each training source in eight poses.
    Returns new arrays in the order given."""
    counts, mask, direc = np.array(counts), np.array(mask), np.array(direc)
    extra = None if extra is None else np.array(extra)
    bits = np.random.default_rng(np.random.SeedSequence([*(int(s) for s in np.atleast_1d(seed)), 91])).integers(
        0, 2, size=(len(counts), 3)).astype(bool)
    for i, (transpose, flip_rows, flip_cols) in enumerate(bits):
        imgs = [(counts, (1, 2)), (mask, (0, 1)), (direc, (0, 1))] + ([(extra, (1, 2))] if extra is not None else [])
        for arr, (ay, ax) in imgs:
            a = arr[i]
            if transpose:
                a = np.swapaxes(a, ay, ax)
            if flip_rows:
                a = np.flip(a, ay)
            if flip_cols:
                a = np.flip(a, ax)
            arr[i] = a
        if transpose:
            direc[i, ..., [0, 1]] = direc[i, ..., [1, 0]]
        if flip_rows:
            direc[i, ..., 0] *= -1
        if flip_cols:
            direc[i, ..., 1] *= -1
    return (counts, mask, direc) + ((extra,) if extra is not None else ())
