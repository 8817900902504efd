"""Simulated short CTA observations, as in the real-time analysis talk (Di Piano et al.).

Each observation: a 200×200 counts map at 0.025°/px (TAN, ICRS) centred on the
telescope pointing, 100 s of livetime, one Crab-like point source (power law of
index 2.48) at an offset uniform over the disc of radius 2° around the
pointing, and an IRF drawn at random per map from :data:`skyml.cta.irf.IRF_NAMES`
(real CTA prod3b performance curves, see :mod:`skyml.cta.irf`).

Two products per observation, as in the talk:

- ``counts``: the raw ("noisy") counts map;
- ``source_counts``: the "clean" map, the **true source counts** of the same
  realisation (the part of ``counts`` that came from the source).

The background of each map is the IRF background times a per-map
normalisation drawn from ``[1 - bkg_norm_spread, 1 + bkg_norm_spread]`` (night
sky background and weather vary; the IRF template does not know it).

How the expected counts are computed. For each IRF, gammapy's
``MapDatasetMaker`` builds the background template of the map from the IRF
(``background_templates``), and the source response is computed from the same
gammapy IRF objects on a grid of offsets: for each true-energy bin the
predicted counts inside the reconstructed-energy range (effective area ×
flux × livetime × energy-dispersion fraction) and the Gaussian PSF width. The
expected source map is then the pixel-integrated mixture of those Gaussians
(:func:`skyml.cta.psf.source_npred_map`), so that sampling thousands of maps
takes milliseconds each. ``tests/test_cta_simulate.py`` checks this fast path
against gammapy's own ``MapDataset.npred()`` and against event lists sampled
by gammapy's ``MapDatasetEventSampler`` (the DL3 path of :func:`simulate_dl3`).

Determinism: map ``i`` of split ``s`` (train 0, val 1, test 2) with ``seed`` uses
the random stream ``numpy.random.SeedSequence([seed, s]).spawn(n_maps)[i]``
(:func:`skyml.parallel.item_seeds`), so the same seed gives the same arrays bit
for bit, in this process or on any number of dask workers, and a larger set
starts with the maps of a smaller one.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from .. import cache, parallel
from .irf import ALL_IRF_NAMES, ENERGY_TRUE_EDGES_TEV, IRF_NAMES, build_irf
from .psf import source_npred_map

#: ctools/astroRT "Crab" model used by the talk's simulations: power law with
#: index 2.48 and 5.7e-16 cm⁻² s⁻¹ MeV⁻¹ at 0.3 TeV.
CRAB_INDEX = 2.48
CRAB_AMPLITUDE = 5.7e-16 * u.Unit("cm-2 s-1 MeV-1")
CRAB_REFERENCE = 0.3 * u.TeV

#: offsets [deg] at which the source response is tabulated: every 0.1° up to
#: the map corners (the nodes up to 2.6° are those of the first version, so maps
#: with sources inside 2.6° are unchanged)
OFFSET_GRID_DEG = np.concatenate([np.linspace(0.0, 2.6, 27), np.linspace(2.7, 3.6, 10)])
N_TRUE_ENERGY = 48


@dataclass(frozen=True)
class CTASimParams:
    """Parameters of a set of simulated observations (all hashed into the cache key)."""

    npix: int = 200
    binsz_deg: float = 0.025
    livetime_s: float = 100.0
    energy_min_tev: float = 0.05
    energy_max_tev: float = 30.0
    offset_max_deg: float = 2.0
    flux_min_crab: float = 0.1
    flux_max_crab: float = 1.0
    bkg_norm_spread: float = 0.2
    fov_sigma_deg: float = 2.5
    psf_broadening: float = 0.1
    irfs: tuple = IRF_NAMES

    def __post_init__(self):
        for name in IRF_NAMES if not self.irfs else self.irfs:
            if name not in ALL_IRF_NAMES:
                raise ValueError(f"unknown IRF {name!r}; choose from {ALL_IRF_NAMES}")
        if not 0 < self.flux_min_crab <= self.flux_max_crab:
            raise ValueError("need 0 < flux_min_crab <= flux_max_crab")
        if not 0 <= self.offset_max_deg <= OFFSET_GRID_DEG[-1]:
            raise ValueError(f"offset_max_deg must be within [0, {OFFSET_GRID_DEG[-1]}]")
        if not 0 <= self.bkg_norm_spread < 1:
            raise ValueError("bkg_norm_spread must be in [0, 1)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["irfs"] = list(self.irfs)
        return d


def crab_spectrum(flux_crab: float = 1.0):
    """gammapy power law of the talk's Crab-like source, scaled by ``flux_crab``."""
    from gammapy.modeling.models import PowerLawSpectralModel

    return PowerLawSpectralModel(
        index=CRAB_INDEX, amplitude=flux_crab * CRAB_AMPLITUDE, reference=CRAB_REFERENCE
    )


def map_wcs(pnt_ra_deg: float, pnt_dec_deg: float, npix: int = 200, binsz_deg: float = 0.025) -> WCS:
    """Celestial WCS of a map centred on the pointing (TAN, ICRS): the WCS of
    :func:`map_geom`, built from a copy of one reference WCS per map shape
    with the reference point moved (the same header, at a twentieth of the
    cost of a new ``WcsGeom``; at the north celestial pole, where the default
    native longitude of the pole changes, through ``WcsGeom`` itself)."""
    if not float(pnt_dec_deg) < 90.0:
        return map_geom(pnt_ra_deg, pnt_dec_deg, npix, binsz_deg).wcs
    wcs = _reference_wcs(int(npix), float(binsz_deg)).deepcopy()
    wcs.wcs.crval = [float(pnt_ra_deg), float(pnt_dec_deg)]
    wcs.wcs.set()
    return wcs


@functools.lru_cache(maxsize=16)
def _reference_wcs(npix: int, binsz_deg: float) -> WCS:
    return map_geom(0.0, 0.0, npix, binsz_deg).wcs


def map_geom(pnt_ra_deg, pnt_dec_deg, npix=200, binsz_deg=0.025, energy_axis=None):
    """gammapy ``WcsGeom`` of a map centred on the pointing (TAN, ICRS)."""
    from gammapy.maps import WcsGeom

    axes = [energy_axis] if energy_axis is not None else None
    return WcsGeom.create(
        skydir=SkyCoord(pnt_ra_deg, pnt_dec_deg, unit="deg", frame="icrs"),
        npix=npix, binsz=binsz_deg, frame="icrs", proj="TAN", axes=axes,
    )


def _energy_axes(p: CTASimParams):
    from gammapy.maps import MapAxis

    e_reco = MapAxis.from_energy_bounds(p.energy_min_tev, p.energy_max_tev, 8, unit="TeV", name="energy")
    e_true = MapAxis.from_energy_edges(ENERGY_TRUE_EDGES_TEV * u.TeV, name="energy_true")
    return e_reco, e_true


def make_observation(irf_name: str, pnt: SkyCoord, p: CTASimParams, obs_id: int = 0):
    """gammapy ``Observation`` of ``livetime_s`` with the IRFs of ``irf_name``."""
    from gammapy.data import FixedPointingInfo, Observation

    irf = build_irf(irf_name, p.fov_sigma_deg, p.psf_broadening)
    return Observation.create(
        pointing=FixedPointingInfo(fixed_icrs=pnt.icrs), livetime=p.livetime_s * u.s,
        irfs=irf.as_dict(), obs_id=obs_id,
    )


def make_dataset(irf_name: str, pnt: SkyCoord, p: CTASimParams, obs_id: int = 0):
    """gammapy ``MapDataset`` (counts geometry, exposure, background, PSF, edisp)
    for one observation, made with ``MapDatasetMaker``. Returns (dataset, observation)."""
    from gammapy.datasets import MapDataset
    from gammapy.makers import MapDatasetMaker
    from gammapy.maps import MapAxis

    e_reco, e_true = _energy_axes(p)
    geom = map_geom(pnt.icrs.ra.deg, pnt.icrs.dec.deg, p.npix, p.binsz_deg, e_reco)
    obs = make_observation(irf_name, pnt, p, obs_id)
    migra = MapAxis.from_edges(np.linspace(0.2, 5.0, 241), name="migra")
    # an EDispMap (with a migra axis) rather than a kernel map: the event sampler needs it
    empty = MapDataset.create(
        geom, energy_axis_true=e_true, migra_axis=migra, binsz_irf=0.25, name=f"obs-{obs_id}"
    )
    maker = MapDatasetMaker(selection=["exposure", "background", "psf", "edisp"])
    return maker.run(empty, obs), obs


_REFERENCE_POINTING = SkyCoord(0.0, 0.0, unit="deg", frame="icrs")


@functools.lru_cache(maxsize=None)
def _irf_response(irf_name: str, params_key: tuple):
    """Background template (npix×npix) and the source response on the offset grid.

    The template is made on a reference pointing; for a TAN projection centred
    on the pointing the pixel grid is the same for every pointing, so it
    applies to all maps of this IRF.
    """
    p = CTASimParams(**dict(params_key))
    dataset, _ = make_dataset(irf_name, _REFERENCE_POINTING, p)
    bkg_template = dataset.background.data.sum(axis=0)

    irf = build_irf(irf_name, p.fov_sigma_deg, p.psf_broadening)
    edges = np.geomspace(ENERGY_TRUE_EDGES_TEV[0], ENERGY_TRUE_EDGES_TEV[-1], N_TRUE_ENERGY + 1)
    centre = np.sqrt(edges[:-1] * edges[1:])
    spectrum = crab_spectrum(1.0)
    flux = spectrum.integral(edges[:-1] * u.TeV, edges[1:] * u.TeV).to_value("cm-2 s-1")

    from gammapy.maps import MapAxis

    e_true = MapAxis.from_energy_edges(edges * u.TeV, name="energy_true")
    e_range = MapAxis.from_energy_edges([p.energy_min_tev, p.energy_max_tev] * u.TeV, name="energy")
    npred = np.empty((len(OFFSET_GRID_DEG), N_TRUE_ENERGY))
    sigma = np.empty_like(npred)
    for i, off in enumerate(OFFSET_GRID_DEG):
        aeff = irf.aeff.evaluate(energy_true=centre * u.TeV, offset=off * u.deg).to_value("cm2")
        kernel = irf.edisp.to_edisp_kernel(off * u.deg, energy_axis_true=e_true, energy_axis=e_range)
        frac_in_range = kernel.pdf_matrix[:, 0]
        npred[i] = flux * aeff * p.livetime_s * frac_in_range
        sigma[i] = irf.psf_sigma_deg(centre, off)
    return bkg_template.astype(np.float64), npred, sigma


def irf_response(irf_name: str, p: CTASimParams):
    """(background template [counts/px], npred per true-energy component at 1 Crab
    on the offset grid, PSF sigma [deg] per component on the offset grid)."""
    key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in p.to_dict().items()))
    return _irf_response(irf_name, key)


def source_model_at(irf_name: str, offset_deg: float, flux_crab: float, p: CTASimParams):
    """Total expected source counts and the PSF mixture (sigmas [deg], weights)
    of a source at ``offset_deg`` from the pointing."""
    _, npred, sigma = irf_response(irf_name, p)
    comp_npred = np.array([np.interp(offset_deg, OFFSET_GRID_DEG, npred[:, k]) for k in range(N_TRUE_ENERGY)])
    comp_sigma = np.array([np.interp(offset_deg, OFFSET_GRID_DEG, sigma[:, k]) for k in range(N_TRUE_ENERGY)])
    total = comp_npred.sum()
    return flux_crab * total, comp_sigma, comp_npred / total


LABEL_FIELDS = (
    "irf_id", "pnt_ra_deg", "pnt_dec_deg", "src_ra_deg", "src_dec_deg", "src_x_pix", "src_y_pix",
    "offset_deg", "flux_crab", "npred_source", "bkg_norm", "npred_background", "n_source_counts",
    "n_background_counts",
)


def _simulate_one(rng: np.random.Generator, p: CTASimParams, irf_names: tuple):
    irf_id = int(rng.integers(len(irf_names)))
    name = irf_names[irf_id]
    # pointing: RA uniform, Dec uniform in sin(dec) over [-60°, +60°]
    pnt_ra = rng.uniform(0.0, 360.0)
    pnt_dec = np.rad2deg(np.arcsin(rng.uniform(-np.sin(np.pi / 3), np.sin(np.pi / 3))))
    offset = p.offset_max_deg * np.sqrt(rng.uniform())
    position_angle = rng.uniform(0.0, 360.0)
    flux = np.exp(rng.uniform(np.log(p.flux_min_crab), np.log(p.flux_max_crab)))
    bkg_norm = rng.uniform(1.0 - p.bkg_norm_spread, 1.0 + p.bkg_norm_spread)

    pnt = SkyCoord(pnt_ra, pnt_dec, unit="deg", frame="icrs")
    src = pnt.directional_offset_by(position_angle * u.deg, offset * u.deg)
    wcs = map_wcs(pnt_ra, pnt_dec, p.npix, p.binsz_deg)
    x_pix, y_pix = (float(v) for v in wcs.world_to_pixel(src))

    bkg_template, _, _ = irf_response(name, p)
    npred_src, sigmas_deg, weights = source_model_at(name, offset, flux, p)
    mu_src = source_npred_map(x_pix, y_pix, npred_src, sigmas_deg / p.binsz_deg, weights, (p.npix, p.npix))
    source_counts = rng.poisson(mu_src)
    background_counts = rng.poisson(bkg_norm * bkg_template)
    labels = dict(
        irf_id=irf_id, pnt_ra_deg=pnt_ra, pnt_dec_deg=pnt_dec, src_ra_deg=src.ra.deg,
        src_dec_deg=src.dec.deg, src_x_pix=x_pix, src_y_pix=y_pix, offset_deg=offset, flux_crab=flux,
        npred_source=npred_src, bkg_norm=bkg_norm, npred_background=bkg_norm * bkg_template.sum(),
        n_source_counts=int(source_counts.sum()), n_background_counts=int(background_counts.sum()),
    )
    return source_counts + background_counts, source_counts, labels, sigmas_deg, weights


SPLITS = {"train": 0, "val": 1, "test": 2, "demo": 3, "shifted": 4}

#: A test instrument and sky off the training values, for the robustness checks
#: of the networks: a narrower field-of-view acceptance (another background
#: template shape), a PSF that widens three times faster off axis, background
#: normalisations up to ±35 % from the template (training: ±20 %), and sources
#: from 0.05 to 3 Crab (training: 0.1–1) observed for twice the time.
SHIFTED = {"fov_sigma_deg": 2.0, "psf_broadening": 0.3, "bkg_norm_spread": 0.35,
           "flux_min_crab": 0.05, "flux_max_crab": 3.0, "livetime_s": 200.0}


def shifted_params(params: "CTASimParams | None" = None, **overrides) -> "CTASimParams":
    """``params`` with the :data:`SHIFTED` instrument and sky (or ``overrides``)."""
    from dataclasses import replace

    return replace(params or CTASimParams(), **(overrides or SHIFTED))


#: maps per task of :func:`simulate_maps`
CHUNK_MAPS = 250


def _simulate_chunk(bounds: tuple, base_seed: int, split: str, p: CTASimParams, irf_names: tuple) -> dict:
    """Maps ``start`` … ``stop - 1`` (``bounds``) of :func:`simulate_maps`, map
    ``i`` from its own stream ``SeedSequence([seed, split]).spawn(n_maps)[i]``."""
    return _collect_chunk(bounds, base_seed, split, p, N_TRUE_ENERGY, LABEL_FIELDS,
                          lambda rng: _simulate_one(rng, p, irf_names))


def _collect_chunk(bounds: tuple, base_seed: int, split: str, p: CTASimParams, n_psf: int, fields: tuple,
                   draw) -> dict:
    """The arrays of maps ``start`` … ``stop - 1``: ``draw(rng)`` simulates one
    map, ``(counts, source_counts, labels, psf_sigmas, psf_weights)``, from map
    ``i``'s own stream; ``n_psf`` PSF components per map, ``fields`` the labels kept."""
    start, stop = bounds
    streams = parallel.item_seeds([int(base_seed), SPLITS[split]], stop, start)
    n = stop - start
    out = {"counts": np.empty((n, p.npix, p.npix), dtype=np.uint16),
           "source_counts": np.empty((n, p.npix, p.npix), dtype=np.uint16),
           "psf_sigmas_deg": np.empty((n, n_psf), dtype=np.float64),
           "psf_weights": np.empty((n, n_psf), dtype=np.float64)}
    labels = {k: [] for k in fields}
    for i in range(n):
        c, src, lab, sigmas, weights = draw(np.random.default_rng(streams[i]))
        if c.max() > np.iinfo(np.uint16).max:
            raise OverflowError("a counts map exceeds uint16; lower flux_max_crab")
        for k, v in (("counts", c), ("source_counts", src), ("psf_sigmas_deg", sigmas), ("psf_weights", weights)):
            out[k][i] = v
        for k in fields:
            labels[k].append(lab[k])
    return {**out, **{f"label_{k}": np.asarray(v) for k, v in labels.items()}}


def simulate_maps(n_maps: int, seed: int, params: CTASimParams | None = None, progress: bool = True,
                  split: str = "train", start: int = 0) -> dict:
    """Simulate ``n_maps`` observations; returns a dict of arrays. With
    ``start`` > 0 only maps ``start`` … ``n_maps`` − 1, equal to those rows of
    the whole simulation (each map has its own random stream).

    Keys: ``counts`` and ``source_counts`` (n, npix, npix) uint16;
    ``background_templates`` (n_irf, npix, npix) float32, the nominal IRF
    background per IRF (index with ``irf_id``); ``psf_sigmas_deg`` and
    ``psf_weights`` (n, 48), the energy-integrated PSF mixture of each source;
    ``irf_names``; and one 1D array per :data:`LABEL_FIELDS` entry.
    """
    p = params or CTASimParams()
    if n_maps < 1:
        raise ValueError("n_maps must be >= 1")
    if not 0 <= start < n_maps:
        raise ValueError(f"start must be in [0, n_maps), got {start}")
    irf_names = tuple(p.irfs)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {tuple(SPLITS)}")
    bounds = [(a, min(a + CHUNK_MAPS, n_maps)) for a in range(int(start), n_maps, CHUNK_MAPS)]
    n_out = n_maps - int(start)
    out = {"counts": np.empty((n_out, p.npix, p.npix), dtype=np.uint16)}
    out["source_counts"] = np.empty_like(out["counts"])
    out["psf_sigmas_deg"] = np.empty((n_out, N_TRUE_ENERGY), dtype=np.float64)
    out["psf_weights"] = np.empty_like(out["psf_sigmas_deg"])
    labels = [None] * len(bounds)
    for j, chunk in parallel.imap_items(_simulate_chunk, bounds, progress=progress, desc="simulating CTA maps",
                                        base_seed=seed, split=split, p=p, irf_names=irf_names):
        a, b = (v - int(start) for v in bounds[j])
        for k in ("counts", "source_counts", "psf_sigmas_deg", "psf_weights"):
            out[k][a:b] = chunk[k]
        labels[j] = {k: chunk[f"label_{k}"] for k in LABEL_FIELDS}
    out["background_templates"] = np.stack([irf_response(n, p)[0] for n in irf_names]).astype(np.float32)
    out["irf_names"] = np.array(irf_names)
    for k in LABEL_FIELDS:
        out[k] = np.concatenate([q[k] for q in labels])
    return out


def load_maps(n_maps: int, seed: int, params: CTASimParams | None = None, progress: bool = True,
              split: str = "train") -> dict:
    """:func:`simulate_maps`, cached in ``data/cache/cta_maps/<hash>/`` by its
    parameters. A longer set starts from the largest cached shorter one of the
    same parameters (its first maps are the same) and simulates the rest."""
    p = params or CTASimParams()
    key = {"n_maps": int(n_maps), "seed": int(seed), "split": split, **p.to_dict(), "version": 1}

    def shorter(recorded: dict):  # the same set but for its length, and shorter: score its length
        n = recorded.get("n_maps")
        if not isinstance(n, int) or not 0 < n < n_maps:
            return None
        same = cache.param_hash("cta_maps", recorded) == cache.param_hash("cta_maps", {**key, "n_maps": n})
        return n if same else None

    def build():
        found = cache.best_cached_arrays("cta_maps", shorter, verbose=progress)
        if found is None:
            return simulate_maps(n_maps, seed, p, progress, split)
        n_have = int(found[0]["n_maps"])
        rest = simulate_maps(n_maps, seed, p, progress, split, start=n_have)
        head = found[1]
        return {k: v if k in ("background_templates", "irf_names") else np.concatenate([head[k], v])
                for k, v in rest.items()}

    return cache.cached_arrays("cta_maps", key, build)


def load_splits(n_train: int, n_val: int, n_test: int, seed: int, params: CTASimParams | None = None,
                progress: bool = True) -> dict:
    """Train, validation and test sets (independent random streams), cached."""
    return {
        name: load_maps(n, seed, params, progress, name)
        for name, n in (("train", n_train), ("val", n_val), ("test", n_test))
    }


# --------------------------------------------------------------------------- shifted instrument and sky
@dataclass(frozen=True)
class CTAShift:
    """An instrument and a sky off the training values, for judging a network on
    maps unlike its training set (all hashed into the cache key).

    Drawn per map, on top of a :class:`CTASimParams` (whose ``irfs``,
    ``flux_min_crab``/``flux_max_crab`` and ``bkg_norm_spread`` give the curve
    set, the flux range and the background spread):

    - PSF: the energy-integrated Gaussian mixture of the curve set, its widths
      scaled by ``psf_scale`` in ``[psf_scale_min, psf_scale_max]``, plus a
      second, wide component ``psf_tail_ratio`` times wider (or a ratio drawn
      in ``[psf_tail_ratio, psf_tail_ratio_max]`` where that is set) carrying a
      fraction in ``[tail_fraction_min, tail_fraction_max]`` of the source
      counts (the training PSF is one Gaussian per true energy);
    - effective area: the curve times ``aeff_scale`` in
      ``[1 - aeff_spread, 1 + aeff_spread]`` (training: the curve);
    - spectrum: a power law of index in ``[index_min, index_max]`` with the
      Crab model's amplitude at its reference energy (0.3 TeV) times
      ``flux_crab`` (training: index 2.48);
    - placement: a fraction ``edge_fraction`` of the sources within
      ``[edge_min_deg, edge_max_deg]`` of one map border and ``corner_fraction``
      within that band of two borders (a corner); the rest uniform over the
      disc of ``offset_max_deg`` as in training.
    """

    psf_scale_min: float = 0.8
    psf_scale_max: float = 1.2
    psf_tail_ratio: float = 3.0
    tail_fraction_min: float = 0.2
    tail_fraction_max: float = 0.3
    aeff_spread: float = 0.2
    index_min: float = 2.2
    index_max: float = 2.8
    edge_fraction: float = 0.2
    corner_fraction: float = 0.1
    edge_min_deg: float = 0.05
    edge_max_deg: float = 0.4
    psf_tail_ratio_max: float | None = None

    def __post_init__(self):
        if not 0 < self.psf_scale_min <= self.psf_scale_max:
            raise ValueError("need 0 < psf_scale_min <= psf_scale_max")
        if not self.psf_tail_ratio >= 1:
            raise ValueError("psf_tail_ratio must be >= 1")
        if self.psf_tail_ratio_max is not None and not self.psf_tail_ratio_max >= self.psf_tail_ratio:
            raise ValueError("psf_tail_ratio_max must be >= psf_tail_ratio")
        if not 0 <= self.tail_fraction_min <= self.tail_fraction_max < 1:
            raise ValueError("need 0 <= tail_fraction_min <= tail_fraction_max < 1")
        if not 0 <= self.aeff_spread < 1:
            raise ValueError("aeff_spread must be in [0, 1)")
        if not 1 < self.index_min <= self.index_max:
            raise ValueError("need 1 < index_min <= index_max")
        if not (self.edge_fraction >= 0 and self.corner_fraction >= 0
                and self.edge_fraction + self.corner_fraction <= 1):
            raise ValueError("edge_fraction and corner_fraction must be >= 0 and sum to <= 1")
        if not 0 <= self.edge_min_deg <= self.edge_max_deg:
            raise ValueError("need 0 <= edge_min_deg <= edge_max_deg")

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["psf_tail_ratio_max"] is None:  # a fixed ratio: the dictionary (and cache key) of before the range existed
            del d["psf_tail_ratio_max"]
        return d


#: placement codes of the ``placement`` label of the shifted maps
PLACEMENTS = {"disc": 0, "edge": 1, "corner": 2}


def shifted_sky_params(params: CTASimParams | None = None, irfs: tuple | None = None, flux_min_crab: float = 0.3,
                       flux_max_crab: float = 10.0, bkg_norm_spread: float = 0.3) -> CTASimParams:
    """``params`` with the held-out curve set (:data:`skyml.cta.irf.HELDOUT_IRF_NAMES`),
    the flux range and the background spread of the shifted test set."""
    from dataclasses import replace

    from .irf import HELDOUT_IRF_NAMES

    return replace(params or CTASimParams(), irfs=tuple(irfs or HELDOUT_IRF_NAMES), flux_min_crab=flux_min_crab,
                   flux_max_crab=flux_max_crab, bkg_norm_spread=bkg_norm_spread)


def _powerlaw_bin_integrals(edges: np.ndarray, index: float, reference: float) -> np.ndarray:
    """Integral of ``(E / reference) ** -index`` over each energy bin ``edges``."""
    a, b = edges[:-1] / reference, edges[1:] / reference
    if np.isclose(index, 1.0):
        return reference * np.log(b / a)
    return reference * (b ** (1.0 - index) - a ** (1.0 - index)) / (1.0 - index)


def spectral_reweight(index: float) -> np.ndarray:
    """Per true-energy component of :func:`irf_response`: the predicted counts of
    a power law of ``index`` over those of the Crab model (index 2.48), both with
    the Crab model's amplitude at its reference energy."""
    edges = np.geomspace(ENERGY_TRUE_EDGES_TEV[0], ENERGY_TRUE_EDGES_TEV[-1], N_TRUE_ENERGY + 1)
    ref = CRAB_REFERENCE.to_value("TeV")
    return _powerlaw_bin_integrals(edges, index, ref) / _powerlaw_bin_integrals(edges, CRAB_INDEX, ref)


def shifted_source_model(irf_name: str, offset_deg: float, flux_crab: float, p: CTASimParams, index: float,
                         aeff_scale: float, psf_scale: float, tail_fraction: float, tail_ratio: float):
    """Total expected source counts and the two-component PSF mixture (sigmas
    [deg], weights; 2 × 48 components: the core, then the wide tail) of a source
    of the shifted sky at ``offset_deg``."""
    _, npred, sigma = irf_response(irf_name, p)
    comp_npred = np.array([np.interp(offset_deg, OFFSET_GRID_DEG, npred[:, k]) for k in range(N_TRUE_ENERGY)])
    comp_sigma = np.array([np.interp(offset_deg, OFFSET_GRID_DEG, sigma[:, k]) for k in range(N_TRUE_ENERGY)])
    comp_npred = comp_npred * spectral_reweight(index)
    total = comp_npred.sum()
    w = comp_npred / total
    sigmas = np.concatenate([psf_scale * comp_sigma, tail_ratio * psf_scale * comp_sigma])
    weights = np.concatenate([(1.0 - tail_fraction) * w, tail_fraction * w])
    return flux_crab * aeff_scale * total, sigmas, weights / weights.sum()


SHIFT_LABEL_FIELDS = ("spectral_index", "aeff_scale", "psf_scale", "psf_tail_fraction", "placement")


def _shifted_position(rng: np.random.Generator, p: CTASimParams, s: CTAShift):
    """Placement code and the source's offset (dx, dy) [deg] from the map centre
    in the tangent plane, or ``None`` for the training's disc placement."""
    u_place = rng.uniform()
    half = 0.5 * p.npix * p.binsz_deg
    if u_place < s.edge_fraction:
        # within the band of one border (chosen at random), anywhere along it
        depth = rng.uniform(s.edge_min_deg, s.edge_max_deg)
        along = rng.uniform(-(half - s.edge_min_deg), half - s.edge_min_deg)
        side = int(rng.integers(4))
        edge = half - depth
        dx, dy = ((edge, along), (-edge, along), (along, edge), (along, -edge))[side]
        return PLACEMENTS["edge"], (dx, dy)
    if u_place < s.edge_fraction + s.corner_fraction:
        depth_x, depth_y = rng.uniform(s.edge_min_deg, s.edge_max_deg, size=2)
        sign_x, sign_y = rng.choice([-1.0, 1.0], size=2)
        return PLACEMENTS["corner"], (sign_x * (half - depth_x), sign_y * (half - depth_y))
    return PLACEMENTS["disc"], None


def _simulate_one_shifted(rng: np.random.Generator, p: CTASimParams, s: CTAShift, irf_names: tuple):
    irf_id = int(rng.integers(len(irf_names)))
    name = irf_names[irf_id]
    pnt_ra = rng.uniform(0.0, 360.0)
    pnt_dec = np.rad2deg(np.arcsin(rng.uniform(-np.sin(np.pi / 3), np.sin(np.pi / 3))))
    flux = np.exp(rng.uniform(np.log(p.flux_min_crab), np.log(p.flux_max_crab)))
    bkg_norm = rng.uniform(1.0 - p.bkg_norm_spread, 1.0 + p.bkg_norm_spread)
    index = rng.uniform(s.index_min, s.index_max)
    aeff_scale = rng.uniform(1.0 - s.aeff_spread, 1.0 + s.aeff_spread)
    psf_scale = rng.uniform(s.psf_scale_min, s.psf_scale_max)
    tail_fraction = rng.uniform(s.tail_fraction_min, s.tail_fraction_max)
    placement, delta = _shifted_position(rng, p, s)
    tail_ratio = s.psf_tail_ratio if s.psf_tail_ratio_max is None else rng.uniform(s.psf_tail_ratio, s.psf_tail_ratio_max)

    pnt = SkyCoord(pnt_ra, pnt_dec, unit="deg", frame="icrs")
    wcs = map_wcs(pnt_ra, pnt_dec, p.npix, p.binsz_deg)
    if delta is None:
        offset = p.offset_max_deg * np.sqrt(rng.uniform())
        src = pnt.directional_offset_by(rng.uniform(0.0, 360.0) * u.deg, offset * u.deg)
        x_pix, y_pix = (float(v) for v in wcs.world_to_pixel(src))
    else:
        centre = 0.5 * (p.npix - 1)
        x_pix, y_pix = centre + delta[0] / p.binsz_deg, centre + delta[1] / p.binsz_deg
        src = wcs.pixel_to_world(x_pix, y_pix)
        offset = float(pnt.separation(src).deg)
        if offset > OFFSET_GRID_DEG[-1]:
            raise ValueError(f"a source {offset:.2f} deg off axis is beyond the response grid")

    bkg_template, _, _ = irf_response(name, p)
    npred_src, sigmas_deg, weights = shifted_source_model(name, offset, flux, p, index, aeff_scale, psf_scale,
                                                          tail_fraction, tail_ratio)
    mu_src = source_npred_map(x_pix, y_pix, npred_src, sigmas_deg / p.binsz_deg, weights, (p.npix, p.npix))
    source_counts = rng.poisson(mu_src)
    background_counts = rng.poisson(bkg_norm * bkg_template)
    labels = {
        "irf_id": irf_id, "pnt_ra_deg": pnt_ra, "pnt_dec_deg": pnt_dec, "src_ra_deg": src.ra.deg,
        "src_dec_deg": src.dec.deg, "src_x_pix": x_pix, "src_y_pix": y_pix, "offset_deg": offset, "flux_crab": flux,
        "npred_source": npred_src, "bkg_norm": bkg_norm, "npred_background": bkg_norm * bkg_template.sum(),
        "n_source_counts": int(source_counts.sum()), "n_background_counts": int(background_counts.sum()),
        "spectral_index": index, "aeff_scale": aeff_scale, "psf_scale": psf_scale,
        "psf_tail_fraction": tail_fraction, "placement": placement,
    }
    return source_counts + background_counts, source_counts, labels, sigmas_deg, weights


def _simulate_shifted_chunk(bounds: tuple, base_seed: int, split: str, p: CTASimParams, s: CTAShift,
                            irf_names: tuple) -> dict:
    return _collect_chunk(bounds, base_seed, split, p, 2 * N_TRUE_ENERGY, LABEL_FIELDS + SHIFT_LABEL_FIELDS,
                          lambda rng: _simulate_one_shifted(rng, p, s, irf_names))


def simulate_shifted_maps(n_maps: int, seed: int, params: CTASimParams | None = None, shift: CTAShift | None = None,
                          progress: bool = True, split: str = "shifted") -> dict:
    """Simulate ``n_maps`` observations of the shifted instrument and sky.

    ``params``: the base simulation, normally :func:`shifted_sky_params` (curve
    set, flux range, background spread); ``shift``: the per-map draws of
    :class:`CTAShift`. Same keys as :func:`simulate_maps` (the PSF mixture
    has 2 × 48 components) plus one array per :data:`SHIFT_LABEL_FIELDS`
    entry. Map ``i`` uses the stream ``SeedSequence([seed, split]).spawn(n)[i]``.
    """
    p = params or shifted_sky_params()
    s = shift or CTAShift()
    if n_maps < 1:
        raise ValueError("n_maps must be >= 1")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {tuple(SPLITS)}")
    irf_names = tuple(p.irfs)
    bounds = [(a, min(a + CHUNK_MAPS, n_maps)) for a in range(0, n_maps, CHUNK_MAPS)]
    fields = LABEL_FIELDS + SHIFT_LABEL_FIELDS
    chunks = [None] * len(bounds)
    for j, chunk in parallel.imap_items(_simulate_shifted_chunk, bounds, progress=progress,
                                        desc="simulating shifted CTA maps", base_seed=seed, split=split, p=p, s=s,
                                        irf_names=irf_names):
        chunks[j] = chunk
    out = {k: np.concatenate([c[k] for c in chunks]) for k in ("counts", "source_counts", "psf_sigmas_deg",
                                                                "psf_weights")}
    out["background_templates"] = np.stack([irf_response(n, p)[0] for n in irf_names]).astype(np.float32)
    out["irf_names"] = np.array(irf_names)
    for k in fields:
        out[k] = np.concatenate([c[f"label_{k}"] for c in chunks])
    return out


def load_shifted_maps(n_maps: int, seed: int, params: CTASimParams | None = None, shift: CTAShift | None = None,
                      progress: bool = True, split: str = "shifted") -> dict:
    """:func:`simulate_shifted_maps`, cached in ``data/cache/cta_shifted_maps/<hash>/`` by its parameters."""
    p = params or shifted_sky_params()
    s = shift or CTAShift()
    key = {"n_maps": int(n_maps), "seed": int(seed), "split": split, **p.to_dict(), "shift": s.to_dict(),
           "version": 1}
    return cache.cached_arrays("cta_shifted_maps", key,
                               lambda: simulate_shifted_maps(n_maps, seed, p, s, progress, split))


def background_for(maps: dict, index=slice(None)) -> np.ndarray:
    """Nominal IRF background template of the maps selected by ``index``."""
    return maps["background_templates"][maps["irf_id"][index]]


def expected_counts(maps: dict, index: int, params: CTASimParams | None = None) -> np.ndarray:
    """Expected counts per pixel of map ``index`` (true background + source),
    the Poisson mean its ``counts`` were drawn from."""
    p = params or CTASimParams()
    npred, sigmas_deg, weights = maps["npred_source"][index], maps["psf_sigmas_deg"][index], maps["psf_weights"][index]
    source = source_npred_map(maps["src_x_pix"][index], maps["src_y_pix"][index], npred,
                              sigmas_deg / p.binsz_deg, weights, maps["counts"].shape[1:])
    return maps["bkg_norm"][index] * background_for(maps, index).astype(float) + source


# --------------------------------------------------------------------------- DL3
def simulate_dl3(index_seed: int, p: CTASimParams | None = None, irf_name: str | None = None,
                 pnt: SkyCoord | None = None, src: SkyCoord | None = None, flux_crab: float = 0.05,
                 bkg_norm: float = 1.0, obs_id: int = 1):
    """Simulate one observation as a GADF DL3 event list with gammapy's
    ``MapDatasetEventSampler``. Returns the gammapy ``Observation`` with its
    events (write it with ``observation.write(path)``)."""
    from gammapy.datasets import MapDatasetEventSampler
    from gammapy.modeling.models import FoVBackgroundModel, Models, PointSpatialModel, SkyModel

    p = p or CTASimParams()
    irf_name = irf_name or p.irfs[0]
    pnt = pnt or SkyCoord(83.63, 22.01, unit="deg")
    src = src or pnt.directional_offset_by(45 * u.deg, 1.0 * u.deg)
    dataset, obs = make_dataset(irf_name, pnt, p, obs_id)
    sky = SkyModel(
        spectral_model=crab_spectrum(flux_crab),
        spatial_model=PointSpatialModel(lon_0=src.icrs.ra, lat_0=src.icrs.dec, frame="icrs"),
        name="source",
    )
    bkg = FoVBackgroundModel(dataset_name=dataset.name)
    bkg.spectral_model.norm.value = bkg_norm
    dataset.models = Models([sky, bkg])
    sampler = MapDatasetEventSampler(random_state=index_seed)
    events = sampler.run(dataset, obs)
    obs_out = obs.copy(in_memory=True, events=events)
    return obs_out


def bin_events(events, pnt_ra_deg: float, pnt_dec_deg: float, p: CTASimParams | None = None) -> np.ndarray:
    """Bin a gammapy ``EventList`` into the npix×npix counts map of the pointing,
    keeping reconstructed energies within [energy_min_tev, energy_max_tev)."""
    from gammapy.maps import Map, MapAxis

    p = p or CTASimParams()
    e_axis = MapAxis.from_energy_edges([p.energy_min_tev, p.energy_max_tev] * u.TeV, name="energy")
    geom = map_geom(pnt_ra_deg, pnt_dec_deg, p.npix, p.binsz_deg, e_axis)
    counts = Map.from_geom(geom)
    counts.fill_events(events)
    return counts.data[0].astype(np.int64)
